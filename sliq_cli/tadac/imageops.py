"""Image-processing building blocks of the 25 distortions, batched in torch: MATLAB-equivalent filters (fspecial's
kernels, imfilter with replicate borders, wiener2), tone curves, min-max stretch, k-means and 1-D Lloyd quantisers,
ordered dither and patch covers.

Apart from distortions.py so that it reads as the table and the 25 distortions, each a few lines over these.
"""

from __future__ import annotations

import math
from functools import cache, lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from scipy.interpolate import CubicSpline

from sliq_cli.tensors import axpb

# ---------------------------------------------------------------- filters

def gauss_taps(sigma: float, size: int | None = None) -> tuple[float, ...]:
    """1-D Gaussian of fspecial's default size 2*ceil(2*sigma)+1, normalised (its outer product is fspecial's)."""
    size = size or 2 * math.ceil(2 * sigma) + 1
    t = np.arange(size) - (size - 1) / 2
    g = np.exp(-(t**2) / (2 * sigma**2))
    return tuple(g / g.sum())


@lru_cache(maxsize=64)
def _band_matrix(taps: tuple[float, ...], n: int, device: torch.device) -> torch.Tensor:
    """(n, n) matrix M with (v @ M)[j] = sum_t taps[t] v[clamp(j + t - k//2)]: correlation, replicate borders."""
    k = len(taps)
    j = np.arange(n)
    rows = np.clip(j[None, :] + np.arange(k)[:, None] - k // 2, 0, n - 1)  # (k, n) source index of tap t
    m = np.zeros((n, n))
    np.add.at(m, (rows, np.broadcast_to(j, rows.shape)), np.broadcast_to(np.array(taps)[:, None], rows.shape))
    return torch.from_numpy(m).float().to(device)


def filter_separable(x: torch.Tensor, taps: tuple[float, ...]) -> torch.Tensor:
    """Same-size filtering of every channel with the separable kernel taps x taps, replicate borders.

    Two dense products with band matrices: on a GPU these beat depthwise convolutions by far, at any kernel size.
    """
    h, w = x.shape[-2:]
    y = x @ _band_matrix(taps, w, x.device)  # (B, C, H, W) rows
    return _band_matrix(taps, h, x.device).T @ y  # columns


def filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Same-size correlation with replicate borders; kernel (k, k) for all images or (B, k, k) one per image."""
    b, c, h, w = x.shape
    kernel = kernel.to(x.device, x.dtype)
    k = kernel.shape[-1]
    if kernel.ndim == 2:
        y = F.pad(x.reshape(b * c, 1, h, w), (k // 2,) * 4, mode="replicate")
        return F.conv2d(y, kernel.view(1, 1, k, k)).view(b, c, h, w)
    y = F.pad(x.reshape(1, b * c, h, w), (k // 2,) * 4, mode="replicate")
    weight = kernel.repeat_interleave(c, dim=0).unsqueeze(1)  # (B*C, 1, k, k)
    return F.conv2d(y, weight, groups=b * c).view(b, c, h, w)


def box_means(x: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Local means of x and of x * x over a size x size window, replicate borders.

    Off the CPU, row then column average pools of the padded image and of its square: each output reads `size`
    neighbours a direction, where the band matmuls of filter_separable spend a multiply-add per pixel of the
    whole row and column (several times the time on a GPU). A CPU runs the matmuls faster than its pooling.
    """
    if x.device.type == "cpu":
        taps = (1.0 / size,) * size
        return filter_separable(x, taps), filter_separable(x * x, taps)
    padded = F.pad(x, (size // 2,) * 4, mode="replicate")
    return _box_pool(padded, size), _box_pool(padded * padded, size)


def _box_pool(padded: torch.Tensor, size: int) -> torch.Tensor:
    """Means over the size x size windows of an image padded by size // 2 on every side: the unpadded size."""
    return F.avg_pool2d(F.avg_pool2d(padded, (1, size), stride=1), (size, 1), stride=1)


def wiener(x: torch.Tensor, noise_var: float, size: int) -> torch.Tensor:
    """MATLAB wiener2's adaptive filter with a known noise variance, per channel."""
    mean, mean_sq = box_means(x, size)
    # wiener2's mean + (var - noise) / var * (x - mean), and the mean where var < noise, is
    # x + noise / var * (mean - x) with the local variance floored at the noise.
    local_var = mean_sq.addcmul_(mean, mean, value=-1.0).clamp_(min=noise_var)
    return torch.addcdiv(x, mean.sub_(x), local_var, value=noise_var)


@cache
def disk_kernel(radius: int, device: torch.device) -> torch.Tensor:
    """fspecial('disk', radius): the pillbox's exact area coverage of each pixel, normalised.

    fspecial's extra correction for radii just above a half-integer cannot occur for integer radii (the table's).
    """
    rad = float(radius)
    crad = math.ceil(rad - 0.5)
    x, y = np.meshgrid(np.arange(-crad, crad + 1), np.arange(-crad, crad + 1))
    maxxy = np.maximum(abs(x), abs(y)).astype(np.float64)
    minxy = np.minimum(abs(x), abs(y)).astype(np.float64)
    r2 = rad**2
    m1 = np.where(r2 < (maxxy + 0.5) ** 2 + (minxy - 0.5) ** 2, minxy - 0.5,
                  np.sqrt(np.clip(r2 - (maxxy + 0.5) ** 2, 0, None)))
    m2 = np.where(r2 > (maxxy - 0.5) ** 2 + (minxy + 0.5) ** 2, minxy + 0.5,
                  np.sqrt(np.clip(r2 - (maxxy - 0.5) ** 2, 0, None)))
    a1, a2 = np.arcsin(np.clip(m1 / rad, -1, 1)), np.arcsin(np.clip(m2 / rad, -1, 1))
    area = r2 * (0.5 * (a2 - a1) + 0.25 * (np.sin(2 * a2) - np.sin(2 * a1))) - (maxxy - 0.5) * (m2 - m1) + (m1 - minxy + 0.5)
    on_edge = ((r2 < (maxxy + 0.5) ** 2 + (minxy + 0.5) ** 2) & (r2 > (maxxy - 0.5) ** 2 + (minxy - 0.5) ** 2)) | (
        (minxy == 0) & (maxxy - 0.5 < rad) & (maxxy + 0.5 >= rad)
    )
    grid = area * on_edge + ((maxxy + 0.5) ** 2 + (minxy + 0.5) ** 2 < r2)
    grid[crad, crad] = min(math.pi * r2, math.pi / 2, 1.0)
    return torch.from_numpy(grid / grid.sum()).float().to(device)


def motion_kernels(length: float, angles: torch.Tensor) -> torch.Tensor:
    """fspecial('motion', length, angle) for a batch of angles in degrees: (B,) -> (B, K, K).

    Each pixel weighs max(0, 1 - its distance to the segment of length-1 pixels centred on the origin).
    """
    half = (length - 1) / 2
    r = math.ceil(half) + 1
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=angles.device)
    row, col = torch.meshgrid(t, t, indexing="ij")  # (K, K)
    phi = torch.deg2rad(angles).view(-1, 1, 1)
    along = col * torch.cos(phi) - row * torch.sin(phi)  # rows grow downwards, angles counter-clockwise
    across = col * torch.sin(phi) + row * torch.cos(phi)
    dist = torch.sqrt(across**2 + (along.abs() - half).clamp(min=0) ** 2)
    kernel = (1.0 - dist).clamp(min=0)
    return kernel / kernel.sum(dim=(1, 2), keepdim=True)


# ---------------------------------------------------------------- tone curves

_LUT_SIZE = 4097


@lru_cache(maxsize=64)
def _curve_table(xs: tuple[float, ...], ys: tuple[float, ...], scale: float, device: torch.device) -> torch.Tensor:
    """MATLAB spline (not-a-knot) through the control points, tabulated on [0, 1], clamped and times `scale`:
    (1, 1, 1, _LUT_SIZE), a one-row image for grid_sample."""
    grid = np.linspace(0.0, 1.0, _LUT_SIZE)
    table = np.clip(CubicSpline(np.array(xs), np.array(ys), bc_type="not-a-knot")(grid), 0.0, 1.0) * scale
    return torch.from_numpy(table).float().view(1, 1, 1, -1).to(device)


def curve(x: torch.Tensor, xs: tuple[float, ...], ys: tuple[float, ...], scale: float = 1.0) -> torch.Tensor:
    """Tone curve through control points (xs, ys) on [0, 1], applied to x in [0, scale] (input clamped, output
    scaled alike), by linear interpolation in a 4097-entry table (error below 1e-6 for these smooth curves).

    grid_sample does the lookup and interpolation in one pass: its "border" padding is the clamp, and
    align_corners maps -1 and 1 to the table's ends.
    """
    b, w = x.shape[0], x.shape[-1]
    grid = x.new_zeros(b, x[0].numel() // w, w, 2)  # (x, y) sample points; y = 0 on the one-row table
    axpb(x.reshape(grid.shape[:-1]), 2.0 / scale, -1.0, out=grid[..., 0])
    table = _curve_table(tuple(xs), tuple(ys), scale, x.device).expand(b, -1, -1, -1)
    out = F.grid_sample(table, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(x.shape)


def bend(x: torch.Tensor, mid: float, scale: float = 1.0) -> torch.Tensor:
    """MATLAB curves(x, mid): the parabola through (0, 0), (0.5, mid), (1, 1), on [0, scale]."""
    return curve(x, (0.0, 0.5, 1.0), (0.0, mid, 1.0), scale)


# ---------------------------------------------------------------- sampling, clustering, dithering, patches

def minmax(x: torch.Tensor) -> torch.Tensor:
    """Per-image min-max stretch to [0, 1] (mapmm); constant images are left as they are."""
    flat = x.flatten(1)
    lo = flat.min(1).values.view(-1, *([1] * (x.ndim - 1)))
    hi = flat.max(1).values.view(-1, *([1] * (x.ndim - 1)))
    return torch.where(hi > lo, (x - lo) / (hi - lo).clamp(min=1e-12), x)


def strided(n: int, count: int, device: torch.device) -> torch.Tensor:
    """Indices of min(n, count) evenly spaced elements of range(n): a deterministic sample."""
    return torch.linspace(0, n - 1, min(n, count), device=device).long()


def kmeans(points: torch.Tensor, centres: torch.Tensor, steps: int) -> torch.Tensor:
    """Lloyd's k-means: points (B, N, 3), centres (B, K, 3) -> refined centres (B, K, 3); empty clusters stay.

    Cluster sums use a one-hot matmul rather than scatter_add so the result is deterministic on the GPU; a column
    of ones in the points gives each cluster's count in the same product. Assignment keeps torch.cdist: 8-bit
    colours are often exactly equidistant from two initial centres (themselves pixels), and another distance
    formula would break some of those ties the other way, moving the whole palette.
    """
    b, n, _ = points.shape
    k = centres.shape[1]
    augmented = torch.cat([points, points.new_ones(b, n, 1)], -1)  # (B, N, 4)
    for _ in range(steps):
        assign = torch.cdist(points, centres).argmin(-1)  # (B, N)
        onehot = points.new_zeros(b, k, n).scatter_(1, assign.unsqueeze(1), 1.0)  # (B, K, N)
        sums = onehot @ augmented  # (B, K, 4): coordinate sums, count
        count = sums[..., 3:]
        centres = torch.where(count > 0, sums[..., :3] / count, centres)
    return centres


def lloyd_1d(hist: torch.Tensor, k: int, steps: int) -> torch.Tensor:
    """Weighted k-means of the bins 0..255 with weights hist (B, 256) from k evenly spaced centres -> (B, K).

    In 1-D the nearest centre changes at the midpoints of neighbouring centres, which stay sorted (a cluster's mean
    lies within its own interval, and an empty cluster keeps its centre): bin v joins the centres up to j when
    2 v <= c_j + c_j+1. That test is exact in float64 (it holds the sum of two float32 exactly), so a bin goes to
    the lower centre only when truly equidistant, as an exact argmin with its first-index rule would do. A
    cluster's count and sum are then differences of prefix sums of hist and v * hist at the midpoints: a few small
    kernels a step instead of a distance matrix. The prefix sums are of integers below 2^24, so exact.
    """
    b = hist.shape[0]
    bins = torch.arange(256, dtype=hist.dtype, device=hist.device)
    twice = 2 * torch.arange(256, dtype=torch.float64, device=hist.device)
    prefix = F.pad(torch.stack([hist, hist * bins], 1).cumsum(2), (1, 0))  # (B, 2, 257): over the bins < index
    centres = ((torch.arange(k, device=hist.device) + 0.5) * 256 / k).expand(b, k)
    for _ in range(steps):
        edges = torch.searchsorted(twice, centres[:, 1:].double() + centres[:, :-1], right=True)  # (B, K-1): 0..256
        cumulative = prefix.gather(2, edges.unsqueeze(1).expand(-1, 2, -1))  # (B, 2, K-1)
        mass, sums = cumulative.diff(dim=2, prepend=prefix[..., :1], append=prefix[..., -1:]).unbind(1)
        centres = torch.where(mass > 0, sums / mass, centres)
    return centres


def last_cover(starts: torch.Tensor, patch: int, h: int, w: int) -> torch.Tensor:
    """Index of the last patch (in pasting order) covering each pixel, -1 where none: (B, K, 2) -> (B, H*W).

    starts are (row, col) top-left corners inside the image; amax makes overlaps resolve deterministically.
    """
    b, k, _ = starts.shape
    d = torch.arange(patch, device=starts.device)
    rows = starts[..., 0, None, None] + d.view(1, 1, patch, 1)  # (B, K, P, 1)
    cols = starts[..., 1, None, None] + d.view(1, 1, 1, patch)  # (B, K, 1, P)
    flat = (rows * w + cols).reshape(b, -1)  # (B, K*P*P)
    order = torch.arange(k, device=starts.device).repeat_interleave(patch * patch).expand(b, -1)
    winner = torch.full((b, h * w), -1, dtype=torch.long, device=starts.device)
    return winner.scatter_reduce(1, flat, order, reduce="amax")


@cache
def bayer(size: int, device: torch.device) -> torch.Tensor:
    """Ordered-dither thresholds in (-0.5, 0.5): the recursive Bayer matrix of side `size` (a power of two)."""
    m = torch.zeros(1, 1, device=device)
    while m.shape[0] < size:
        m = torch.cat([torch.cat([4 * m, 4 * m + 2], 1), torch.cat([4 * m + 3, 4 * m + 1], 1)], 0)
    return (m + 0.5) / m.numel() - 0.5
