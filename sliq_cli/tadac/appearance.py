"""Appearance attributes of an image (paper III-C): brightness, contrast, sharpness, colourfulness.

All four are computed on the TADAC working image (database.py), given as an (H, W, 3) float array in [0, 1]:
- brightness: mean luma Y' = 0.299 R' + 0.587 G' + 0.114 B' (Rec. 601, what Pillow's "L" computes), in [0, 1].
- contrast: RMS contrast of that luma, its standard deviation (Peli 1990), in [0, 0.5].
- sharpness: FISH (Vu & Chandler 2012) on the luma scaled to 0..255: a 3-level CDF 9/7 wavelet transform; per level
  n (1 finest) E_XY = log10(1 + mean(XY^2)) for XY in LH, HL, HH; E_n = 0.2 (E_LH + E_HL) / 2 + 0.8 E_HH;
  FISH = sum_n 2^(3 - n) E_n. The image is used at its own size (no resize, so none of the tiling bugs of ports
  that call np.resize).
- colourfulness: Hasler & Suesstrunk's M3 on 0..255 RGB: rg = R - G, yb = (R + G) / 2 - B,
  M3 = sqrt(var rg + var yb) + 0.3 sqrt(mean rg^2 + mean yb^2) (0 for grey, ~109 "extremely colourful").

The paper's Appendix B (its exact definitions of brightness and contrast) is not available; mean luma and RMS
contrast are the usual choices. Each attribute is binned low / medium / high by the database's tertiles (`bin_value`).
"""

from __future__ import annotations

import numpy as np

from sliq_cli.tadac.wavelet import wavedec2

ATTRIBUTES = ("brightness", "contrast", "sharpness", "colourfulness")
BINS = ("low", "medium", "high")
FISH_LEVELS = 3
FISH_ALPHA = 0.8  # weight of HH against the mean of LH and HL


def luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) in [0, 1] -> (H, W) Rec. 601 luma in [0, 1]."""
    rgb = np.asarray(rgb, dtype=np.float64)
    # Exact Rec. 601 (not colour.GREY_WEIGHTS' 0.2989): built databases' appearance values and bins were made with it.
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def fish(grey255: np.ndarray, levels: int = FISH_LEVELS, alpha: float = FISH_ALPHA) -> float:
    """FISH sharpness of an (H, W) grey image on a 0..255 scale; larger is sharper."""
    coeffs = wavedec2(grey255, levels)  # [LL, details level `levels` (coarsest), ..., details level 1 (finest)]
    total = 0.0
    for n in range(1, levels + 1):
        lh, hl, hh = coeffs[levels + 1 - n]
        e_lh, e_hl, e_hh = (float(np.log10(1.0 + np.mean(band**2))) for band in (lh, hl, hh))
        total += 2.0 ** (levels - n) * ((1.0 - alpha) * (e_lh + e_hl) / 2.0 + alpha * e_hh)
    return total


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk M3 of (H, W, 3) RGB in [0, 1]."""
    rgb = np.asarray(rgb, dtype=np.float64) * 255.0
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return float(np.sqrt(rg.var() + yb.var()) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2))


def appearance(rgb: np.ndarray) -> dict[str, float]:
    """All four attributes of an (H, W, 3) [0, 1] image, keyed as ATTRIBUTES."""
    y = luma(rgb)
    return {
        "brightness": float(y.mean()),
        "contrast": float(y.std()),
        "sharpness": fish(y * 255.0),
        "colourfulness": colourfulness(rgb),
    }


def tertiles(values) -> list[float]:
    """[t1, t2]: the 1/3 and 2/3 quantiles (linear interpolation) of a non-empty sequence."""
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        raise ValueError("tertiles of an empty set")
    t1, t2 = np.quantile(values, [1.0 / 3.0, 2.0 / 3.0])
    return [float(t1), float(t2)]


def bin_value(value: float, thresholds) -> str:
    """'low' below t1, 'high' at or above t2, else 'medium'."""
    t1, t2 = thresholds
    if value < t1:
        return "low"
    if value >= t2:
        return "high"
    return "medium"
