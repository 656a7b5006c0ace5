"""Colour-space conversions of (B, 3, H, W) float [0, 1] RGB batches, with MATLAB's conventions (rgb2lab, rgb2hsv,
rgb2ycbcr, rgb2gray and their inverses).

Top-level because both the TADAC distortions (tadac/distortions.py) and the training views (train/views.py) use them.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from sliq_cli.tensors import axpb, const

_XYZ_FROM_RGB = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_D65 = (0.950456, 1.0, 1.088754)
_YCBCR_FROM_RGB = ((65.481, 128.553, 24.966), (-37.797, -74.203, 112.0), (112.0, -93.786, -18.214))
_YCBCR_OFFSET = (16.0, 128.0, 128.0)
# MATLAB rgb2gray's rounded 0.2989, as KADIS's MATLAB code: colour shift, palette order, training grey view.
GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)


def _affine(x: torch.Tensor, matrix, offset=None) -> torch.Tensor:
    """Per-pixel colour transform matrix @ pixel + offset: (B, 3, H, W) -> (B, K, H, W) for a K x 3 matrix.

    One broadcast multiply-add per input channel: three elementwise passes at memory speed, where a 1x1 convolution
    ran as a gemm taking as long as five passes (H100, 64 x 3 x 384 x 512).
    """
    k = len(matrix)
    w = const(tuple(zip(*matrix)), x.device, x.dtype).view(3, 1, k, 1, 1)  # w[j]: the weights of input channel j
    if offset is None:
        out = x[:, :1] * w[0]
    else:
        out = torch.addcmul(const(tuple(offset), x.device, x.dtype).view(1, k, 1, 1), x[:, :1], w[0])
    return out.addcmul_(x[:, 1:2], w[1]).addcmul_(x[:, 2:], w[2])


# sRGB decoding is computed times 12.92, so its linear segment is the input itself; the matrices below take the
# factor back (and lab_to_rgb's inverse matrix gives linear RGB times 12.92, which the encoding expects).
_DECODE_SCALE = 12.92 ** (1 / 2.4) / 1.055  # 12.92 * ((c + 0.055) / 1.055) ** 2.4 = ((c + 0.055) * this) ** 2.4
_ENCODE_SCALE = 1.055 / 12.92 ** (1 / 2.4)  # 1.055 * (l / 12.92) ** (1 / 2.4) = this * l ** (1 / 2.4)


@cache
def _lab_matrices() -> tuple:
    """(12.92 x linear RGB -> XYZ / white) and its inverse, as nested tuples of float64."""
    to_xyz = np.array(_XYZ_FROM_RGB) / np.array(_D65)[:, None] / 12.92
    return tuple(map(tuple, to_xyz)), tuple(map(tuple, np.linalg.inv(to_xyz)))


_YCBCR_SCALED = tuple(tuple(v / 255.0 for v in row) for row in _YCBCR_FROM_RGB)


@cache
def _ycbcr_inverse() -> tuple:
    """ycbcr_to_rgb as (matrix, offset) acting on YCbCr in [0, 1]."""
    inv = np.linalg.inv(np.array(_YCBCR_SCALED))
    return tuple(map(tuple, inv)), tuple(-inv @ (np.array(_YCBCR_OFFSET) / 255.0))


_DELTA = 6.0 / 29.0


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB [0, 1] -> CIE L*a*b* (D65), L in [0, 100]; MATLAB rgb2lab.

    Branches are selected with torch.where, which drops the NaN a power of a negative number gives in the branch
    not taken (this is a forward-only transform).
    """
    decoded = axpb(rgb, _DECODE_SCALE, 0.055 * _DECODE_SCALE).pow_(2.4)
    xyz = _affine(torch.where(rgb <= 0.04045, rgb, decoded), _lab_matrices()[0])
    f = torch.where(xyz > _DELTA**3, xyz.pow(1.0 / 3.0), axpb(xyz, 1 / (3 * _DELTA**2), 4.0 / 29.0))
    fx, fy, fz = f.unbind(1)
    lab = torch.empty_like(f)  # L = 116 fy - 16, a = 500 (fx - fy), b = 200 (fy - fz)
    axpb(fy, 116.0, -16.0, out=lab[:, 0])
    torch.sub(fx, fy, out=lab[:, 1]).mul_(500.0)
    torch.sub(fy, fz, out=lab[:, 2]).mul_(200.0)
    return lab


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE L*a*b* (D65) -> sRGB, not clamped (out-of-gamut values stay outside [0, 1]); MATLAB lab2rgb."""
    light, a, b = lab.unbind(1)
    f = torch.empty_like(lab)  # fy = (L + 16) / 116, fx = fy + a / 500, fz = fy - b / 200
    fy = axpb(light, 1 / 116.0, 16.0 / 116.0, out=f[:, 1])
    torch.add(fy, a, alpha=1 / 500.0, out=f[:, 0])
    torch.add(fy, b, alpha=-1 / 200.0, out=f[:, 2])
    xyz = torch.where(f > _DELTA, f**3, axpb(f, 3 * _DELTA**2, -3 * _DELTA**2 * 4.0 / 29.0))
    lin = _affine(xyz, _lab_matrices()[1])  # linear RGB times 12.92
    return torch.where(lin <= 12.92 * 0.0031308, lin, axpb(lin.pow(1.0 / 2.4), _ENCODE_SCALE, -0.055))


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """RGB [0, 1] -> HSV with H, S, V in [0, 1]; MATLAB rgb2hsv."""
    r, g, b = rgb.unbind(1)
    v, argmax = rgb.max(dim=1)
    chroma = v - rgb.min(dim=1).values
    safe = chroma.clamp(min=1e-12)
    h = torch.where(argmax == 0, ((g - b) / safe) % 6, torch.where(argmax == 1, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(chroma > 0, h / 6.0, 0.0)
    s = torch.where(v > 0, chroma / v.clamp(min=1e-12), 0.0)
    return torch.stack([h, s, v], dim=1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """HSV -> RGB; linear in S, so S outside [0, 1] extrapolates exactly as MATLAB hsv2rgb does."""
    h, s, v = hsv[:, :1], hsv[:, 1:2], hsv[:, 2:]
    n = const((5.0, 3.0, 1.0), hsv.device, hsv.dtype).view(1, 3, 1, 1)
    k = torch.add(n, h, alpha=6.0).remainder_(6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0, 1)
    return torch.addcmul(v, v * s, ramp, value=-1.0)  # v * (1 - s * ramp)


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """RGB [0, 1] -> BT.601 studio-range YCbCr scaled to [0, 1] (Y in [16, 235]/255); MATLAB rgb2ycbcr."""
    return _affine(rgb, _YCBCR_SCALED, tuple(v / 255.0 for v in _YCBCR_OFFSET))


def ycbcr_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """Inverse of rgb_to_ycbcr; MATLAB ycbcr2rgb."""
    return _affine(ycc, *_ycbcr_inverse())


def rgb_to_grey(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma, MATLAB rgb2gray weights."""
    return _affine(x, (GREY_WEIGHTS,))
