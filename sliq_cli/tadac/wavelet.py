"""The CDF 9/7 biorthogonal wavelet transform by lifting (Daubechies & Sweldens 1998), in numpy.

Used by FISH sharpness (appearance.py). The four lifting steps and the scaling reproduce the CDF 9/7 analysis filters
normalised as MATLAB's / PyWavelets' `bior4.4` (lowpass taps sum to sqrt(2)); the JPEG 2000 irreversible filters are
the same taps with the lowpass divided and the highpass multiplied by sqrt(2).

Borders use whole-sample symmetric extension (x[-1] = x[1], x[n] = x[n-2]), the extension under which a symmetric
odd-length biorthogonal filter bank is perfectly invertible for any signal length: a length-n signal gives ceil(n/2)
approximation and floor(n/2) detail coefficients. Only the analysis (forward) transform is implemented: FISH needs
no inverse.
"""

from __future__ import annotations

import numpy as np

# Lifting coefficients of CDF 9/7 (predict, update, predict, update) and the final scaling.
ALPHA = -1.586134342059924
BETA = -0.052980118572961
GAMMA = 0.882911075530934
DELTA = 0.443506852043971
ZETA = 1.149604398860241  # lowpass gain: K / sqrt(2) with K = 1.230174104914001 (so the lowpass sums to sqrt(2))

_STEPS = (("predict", ALPHA), ("update", BETA), ("predict", GAMMA), ("update", DELTA))


def _neighbours_for_detail(s: np.ndarray, n_detail: int) -> np.ndarray:
    """s[i + 1] for each detail position i; past the right end the mirror gives s[i] again."""
    if s.shape[-1] > n_detail:  # odd length: every detail sample has a right-hand even neighbour
        return s[..., 1 : n_detail + 1]
    return np.concatenate([s[..., 1:], s[..., -1:]], axis=-1)


def _neighbours_for_approx(d: np.ndarray, n_approx: int) -> tuple[np.ndarray, np.ndarray]:
    """(d[i - 1], d[i]) for each approximation position i, mirrored at both ends."""
    left = np.concatenate([d[..., :1], d], axis=-1)[..., :n_approx]
    right = d if d.shape[-1] == n_approx else np.concatenate([d, d[..., -1:]], axis=-1)
    return left, right


def _lift(s: np.ndarray, d: np.ndarray, step: str, coef: float) -> None:
    """One lifting step, in place."""
    if step == "predict":
        d += coef * (s[..., : d.shape[-1]] + _neighbours_for_detail(s, d.shape[-1]))
    else:
        left, right = _neighbours_for_approx(d, s.shape[-1])
        s += coef * (left + right)


def dwt1(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One level along the last axis: (approximation, detail)."""
    if x.shape[-1] < 2:
        raise ValueError(f"a wavelet level needs at least 2 samples along the axis, got {x.shape[-1]}")
    x = np.asarray(x, dtype=np.float64)
    s = x[..., 0::2].copy()  # (..., ceil(n/2))
    d = x[..., 1::2].copy()  # (..., floor(n/2))
    for step, coef in _STEPS:
        _lift(s, d, step, coef)
    return s * ZETA, d / ZETA


def dwt2(x: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One 2-D level of an (H, W) array: (LL, (LH, HL, HH)).

    LH is lowpass along rows and highpass down columns (horizontal edges); HL the transpose; HH diagonal detail.
    """
    lo, hi = dwt1(x)  # along W
    ll, lh = dwt1(lo.swapaxes(-1, -2))  # along H
    hl, hh = dwt1(hi.swapaxes(-1, -2))
    return ll.swapaxes(-1, -2), (lh.swapaxes(-1, -2), hl.swapaxes(-1, -2), hh.swapaxes(-1, -2))  # (H/2, W/2) each


def wavedec2(x: np.ndarray, levels: int) -> list:
    """Multi-level 2-D transform: [LL_levels, details_levels (coarsest), ..., details_1 (finest)], as pywt orders it."""
    out = []
    ll = np.asarray(x, dtype=np.float64)
    for _ in range(levels):
        ll, details = dwt2(ll)
        out.append(details)
    return [ll] + out[::-1]
