"""Where to crop the image-text view: spectral-residual saliency and the window of maximum summed saliency.

The paper predicts saliency with a deep network (its ref. [59]) whose weights are not public; sliq uses the
weight-free spectral residual of Hou & Zhang (CVPR 2007) instead, as opencv_contrib implements it:
grey image resized to 64x64; FFT; log amplitude minus its 3x3 box average (replicated borders); exp of that residual
with the original phase; squared magnitude of the inverse FFT; Gaussian blur (sigma 2.5 on the 64x64 map, Hou &
Zhang's 10x10 kernel); normalised to [0, 1]; resized back to the image size (bilinear).

The crop is the fixed-size window whose summed saliency is largest, found in one pass over an integral image.
"""

from __future__ import annotations

import math

import numpy as np

from sliq_cli.tadac.appearance import luma

SALIENCY_SIDE = 64
BLUR_SIGMA = 2.5
CROP = 224


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased bilinear resize of a 2-D float map to size = (width, height)."""
    from PIL import Image

    return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR))


def spectral_residual(grey: np.ndarray) -> np.ndarray:
    """(H, W) grey image -> (H, W) saliency map in [0, 1]."""
    from scipy.ndimage import gaussian_filter, uniform_filter

    h, w = grey.shape
    small = _resize(grey, (SALIENCY_SIDE, SALIENCY_SIDE)).astype(np.float64)  # (64, 64)
    spectrum = np.fft.fft2(small)
    log_amplitude = np.log(np.abs(spectrum) + 1e-12)
    residual = log_amplitude - uniform_filter(log_amplitude, size=3, mode="nearest")
    saliency = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    saliency = gaussian_filter(saliency, BLUR_SIGMA, mode="nearest")
    lo, hi = saliency.min(), saliency.max()
    saliency = (saliency - lo) / (hi - lo) if hi > lo else np.zeros_like(saliency)
    return np.clip(_resize(saliency, (w, h)), 0.0, 1.0)


def max_window(saliency: np.ndarray, size: int = CROP) -> tuple[int, int, int, int]:
    """[x, y, w, h] of the size x size window (clipped to the map) with the largest summed saliency; ties -> top-left."""
    h, w = saliency.shape
    bw, bh = min(size, w), min(size, h)
    integral = np.zeros((h + 1, w + 1), dtype=np.float64)
    integral[1:, 1:] = np.cumsum(np.cumsum(saliency, axis=0, dtype=np.float64), axis=1)
    sums = integral[bh:, bw:] - integral[:-bh, bw:] - integral[bh:, :-bw] + integral[:-bh, :-bw]  # (h-bh+1, w-bw+1)
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(x), int(y), bw, bh


def saliency_box(rgb: np.ndarray, size: int = CROP) -> list[int]:
    """[x, y, w, h] of the most salient size x size window of an (H, W, 3) [0, 1] image, in its own pixels."""
    return list(max_window(spectral_residual(luma(rgb)), size))


def centred_window(centre: tuple[float, float], size: tuple[int, int], width: int, height: int) -> tuple[int, int]:
    """(left, top) of a size = (w, h) window whose centre is `centre` = (x, y) (floored), shifted inside a
    width x height image. The one window rule of training's salient crops and the preview's tiles."""
    left = min(max(0, math.floor(centre[0] - size[0] / 2)), width - size[0])
    top = min(max(0, math.floor(centre[1] - size[1] / 2)), height - size[1])
    return left, top
