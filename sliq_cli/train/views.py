"""Training views, batched on the device: OLA crop pairs, crops by index, flips and CONTRIQUE's colour spaces.

OLA (Re-IQA, paper III-D): the two image-image views are P x P crops of one image whose overlap
(P - |dx|) (P - |dy|) lies in [0.10, 0.30] P^2. Re-IQA draws dy first and derives the range of dx from it, inside a
(P + max(dx, dy))^2 square, which needs images of about 1.9 P. We generalise to any image of at least P x P:
candidate shifts (a, b) are drawn uniformly from those that keep both crops inside the image
(0 <= a <= min(P, w - P), 0 <= b <= min(P, h - P)); the first candidate whose overlap is in range is taken
(rejection sampling, 64 candidates per pair at once). Where no shift can reach the range (an image too small for an
overlap <= 30%, e.g. 256 x 256 at P = 224) the candidate nearest the range, the largest shift, is taken.
The union box (P + a) x (P + b) is placed uniformly in the image, and which view takes the shifted corner is
drawn independently per axis, so dx and dy take both signs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sliq_cli.colour import rgb_to_grey, rgb_to_hsv, rgb_to_lab
from sliq_cli.tensors import to_uint8

OVERLAP_RANGE = (0.10, 0.30)
N_CANDIDATES = 64
COLOUR_SPACES = ("rgb", "gray", "lab", "hsv", "mscn")
# Benign re-encodings (an extension of the paper, for robustness to how a file was stored): JPEG at these qualities
# is far above TADAC's JPEG levels (quality 43 to 4), and a mild downsampling is far from its blurs.
BENIGN_JPEG_QUALITIES = (85, 90, 95)
BENIGN_MAX_SCALE = 1.3


def ola_positions(sizes: np.ndarray, patch: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (x, y) of two overlapping patch x patch crops per image.

    sizes: (n, 2) int (h, w), each >= patch. Returns (xy1, xy2), each (n, 2) int64. Drawn on the CPU (a few
    thousand numbers per step), so the augmentation is the same on every device.
    """
    n, p = sizes.shape[0], patch
    h, w = sizes[:, 0:1].astype(np.float64), sizes[:, 1:2].astype(np.float64)  # (n, 1)
    a_max = np.clip(w - p, 0, p)
    b_max = np.clip(h - p, 0, p)
    a = np.minimum(np.floor(rng.random((n, N_CANDIDATES)) * (a_max + 1)), a_max)  # (n, K)
    b = np.minimum(np.floor(rng.random((n, N_CANDIDATES)) * (b_max + 1)), b_max)
    overlap = (p - a) * (p - b) / p**2
    lo, hi = OVERLAP_RANGE
    miss = np.clip(lo - overlap, 0, None) + np.clip(overlap - hi, 0, None)  # (n, K), 0 inside the range
    pick = miss.argmin(axis=1)[:, None]  # first candidate in range, else the nearest one
    a, b = np.take_along_axis(a, pick, 1)[:, 0], np.take_along_axis(b, pick, 1)[:, 0]  # (n,)
    r = rng.random((4, n))
    x0 = np.floor(r[0] * (w[:, 0] - p - a + 1))  # corner of the union box
    y0 = np.floor(r[1] * (h[:, 0] - p - b + 1))
    sx, sy = r[2] < 0.5, r[3] < 0.5  # which view takes the shift, per axis
    xy1 = np.stack([x0 + sx * a, y0 + sy * b], axis=1).astype(np.int64)
    xy2 = np.stack([x0 + ~sx * a, y0 + ~sy * b], axis=1).astype(np.int64)
    return xy1, xy2


def crop_flat(flat: torch.Tensor, base: torch.Tensor, size: torch.Tensor, xy: torch.Tensor, patch: int) -> torch.Tensor:
    """Crops of images packed back to back in a flat buffer (each image C-contiguous (3, h, w)).

    flat: (L,) any dtype; base: (n,) offset of each crop's image; size: (n, 2) its (h, w); xy: (n, 2) the crop's
    top-left (x, y). Returns (n, 3, patch, patch). Images of different shapes are cropped in one gather: rows of
    `patch` elements are read through an overlapping-window view of the buffer, so only (n, 3, patch) row
    offsets are materialised, not one index per pixel.
    """
    h, w = size[:, 0:1, None], size[:, 1:2, None]  # (n, 1, 1)
    chan = torch.arange(3, device=flat.device)[None, :, None]  # (1, 3, 1)
    row = torch.arange(patch, device=flat.device)[None, None, :]  # (1, 1, P)
    starts = base[:, None, None] + chan * h * w + (xy[:, 1:2, None] + row) * w + xy[:, 0:1, None]  # (n, 3, P)
    windows = flat.as_strided((flat.numel() - patch + 1, patch), (1, 1))  # row k = flat[k : k + P]
    return windows[starts]  # (n, 3, P, P)


def half_scale_boxes(xy: np.ndarray, sizes: np.ndarray, patch: int, scale: float | np.ndarray = 2.0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Squares to be resized to P x P for views at a coarser scale: CONTRIQUE's half-scale view (scale 2), or the
    mild resampling of a benign view (scale 1..1.3). The square of side s = min(scale P, h, w) centred on a view's
    centre (clamped into the image).

    xy: (n, 2) top-left (x, y) of the P x P views; sizes: (n, 2) (h, w); scale: a number or (n,). Returns
    (top-left (n, 2), side (n,)).
    """
    side = np.minimum(np.floor(np.asarray(scale, dtype=np.float64) * patch), sizes.min(axis=1))  # (n,)
    centre = xy + patch / 2
    top_left = np.floor(centre - side[:, None] / 2)
    top_left = np.clip(top_left, 0, sizes[:, ::-1] - side[:, None])  # (n, 2) x in [0, w - s], y in [0, h - s]
    return top_left.astype(np.int64), side.astype(np.int64)


def benign_scales(b: int, prob: float, patch: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Which second views are stored again in a way viewers cannot see (a benign re-encoding), and how.

    Returns (jpeg quality (b,), 0 where the view is not re-encoded; resampling scale (b,), 0 where it is not
    resampled). Each benign view is JPEG-encoded at a quality in BENIGN_JPEG_QUALITIES; half of them are first taken
    from a square up to BENIGN_MAX_SCALE x P across, resized down to P (a mildly downsampled file), its side a
    multiple of 8 so that a batch needs few resizes.
    """
    benign = rng.random(b) < prob
    quality = np.where(benign, rng.choice(BENIGN_JPEG_QUALITIES, b), 0)
    side = patch + 8 * rng.integers(0, int((BENIGN_MAX_SCALE - 1) * patch) // 8 + 1, b)  # (b,) P .. 1.3 P
    scale = np.where(benign & (rng.random(b) < 0.5), side / patch, 0.0)
    return quality, scale


def reencode_jpeg(crops: torch.Tensor, quality: np.ndarray) -> torch.Tensor:
    """The crops (k, 3, P, P) uint8 with those of quality[i] > 0 JPEG-encoded at that quality and decoded again
    (nvJPEG on CUDA, libjpeg on the CPU: sliq_cli.tadac.codecs); one codec call per quality."""
    from sliq_cli.tadac.codecs import jpeg_roundtrip

    out = crops.clone()
    for q in np.unique(quality[quality > 0]):
        sel = to_device_async(torch.from_numpy(np.flatnonzero(quality == q)), crops.device)
        out[sel] = to_uint8(jpeg_roundtrip(crops[sel].float().div_(255), int(q)))
    return out


def to_device_async(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor on `device` without stalling the host: a copy from pageable memory waits for the stream
    to drain first, one from pinned memory is queued like a kernel."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def random_flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of the images where `flip` (n,) bool is set. (n, 3, H, W) -> (n, 3, H, W)."""
    return torch.where(to_device_async(flip, x.device)[:, None, None, None], x.flip(-1), x)


def _lab01(x: torch.Tensor) -> torch.Tensor:
    """CIELAB scaled to about [0, 1]: L/100, (a + 128)/255, (b + 128)/255."""
    lab = rgb_to_lab(x)
    return torch.stack([lab[:, 0] / 100, (lab[:, 1] + 128) / 255, (lab[:, 2] + 128) / 255], dim=1)


def _gaussian_window(device, dtype, size: int = 7, sigma: float = 7 / 6) -> torch.Tensor:
    t = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # (1, 1, k, k)


def _mscn(x: torch.Tensor) -> torch.Tensor:
    """Mean-subtracted contrast-normalised coefficients per channel (BRISQUE's 7x7 Gaussian, sigma 7/6, on the
    0..255 scale, C = 1), mapped to [0, 1] as 0.5 + mscn / 6 (MSCN values lie almost entirely within +-3)."""
    n, c, h, w = x.shape
    y = (x * 255).reshape(n * c, 1, h, w)
    k = _gaussian_window(x.device, x.dtype)
    pad = k.shape[-1] // 2
    mu = F.conv2d(F.pad(y, [pad] * 4, mode="replicate"), k)
    var = F.conv2d(F.pad(y * y, [pad] * 4, mode="replicate"), k) - mu * mu
    m = (y - mu) / (var.clamp(min=0).sqrt() + 1)
    return (0.5 + m / 6).clamp(0, 1).reshape(n, c, h, w)


def to_colour_space(x: torch.Tensor, space: str) -> torch.Tensor:
    """(n, 3, H, W) RGB [0, 1] -> (n, 3, H, W) in `space` (grey is replicated to 3 channels)."""
    if space == "rgb":
        return x
    if space == "gray":
        return rgb_to_grey(x).expand(-1, 3, -1, -1)
    if space == "lab":
        return _lab01(x)
    if space == "hsv":
        return rgb_to_hsv(x)
    if space == "mscn":
        return _mscn(x)
    raise ValueError(f"unknown colour space {space!r}")


def random_colour_space(x: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
    """Image i to COLOUR_SPACES[choice[i]] (CONTRIQUE's augmentation). choice: (n,) int on the CPU, drawn by the
    caller, so selecting the images of each space needs no device synchronisation."""
    out = x.clone()
    for i, space in enumerate(COLOUR_SPACES[1:], start=1):
        sel = (choice == i).nonzero().squeeze(1)
        if sel.numel():
            sel = to_device_async(sel, x.device)
            out[sel] = to_colour_space(x[sel], space)
    return out
