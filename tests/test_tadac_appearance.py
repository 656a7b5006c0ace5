"""Appearance attributes and the CDF 9/7 wavelet behind FISH sharpness."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from sliq_cli.tadac.appearance import appearance, bin_value, colourfulness, fish, luma, tertiles
from sliq_cli.tadac.wavelet import dwt1, wavedec2

# CDF 9/7 analysis filters as MATLAB / PyWavelets `bior4.4` list them (centre tap first, then +-1, +-2, ...).
BIOR44_LOWPASS = [0.8526986790088938, 0.37740285561283066, -0.11062440441843718, -0.023849465019556843,
                  0.03782845550726404]
BIOR44_HIGHPASS = [-0.7884856164055829, 0.41809227322161724, 0.04068941760916406, -0.06453888262869706]
# JPEG 2000 irreversible 9/7 analysis lowpass (DC gain 1): bior4.4 / sqrt(2).
JPEG2000_LOWPASS = [0.602949018236, 0.266864118443, -0.078223266529, -0.016864118443, 0.026748757411]


def _taps(n=64, k=16):
    """Analysis filter taps recovered from the lifting implementation by feeding impulses."""
    low, high = {}, {}
    for p in range(n):
        x = np.zeros(n)
        x[p] = 1.0
        s, d = dwt1(x)
        low[2 * k - p] = s[k]
        high[2 * k + 1 - p] = d[k]
    return low, high


def test_lifting_reproduces_cdf97_filter_taps():
    low, high = _taps()
    for j, tap in enumerate(BIOR44_LOWPASS):
        assert low[j] == pytest.approx(tap, abs=1e-9) and low[-j] == pytest.approx(tap, abs=1e-9)
        assert low[j] / np.sqrt(2) == pytest.approx(JPEG2000_LOWPASS[j], abs=1e-9)
    for j, tap in enumerate(BIOR44_HIGHPASS):  # the opposite sign convention to pywt's dec_hi (FISH squares them)
        assert high[j] == pytest.approx(-tap, abs=1e-9) and high[-j] == pytest.approx(-tap, abs=1e-9)
    assert all(abs(v) < 1e-12 for j, v in low.items() if abs(j) > 4)
    assert all(abs(v) < 1e-12 for j, v in high.items() if abs(j) > 3)


@pytest.mark.parametrize("n", [2, 3, 8, 37, 64, 101])
def test_1d_coefficient_counts_any_length(n):
    s, d = dwt1(np.random.default_rng(n).normal(size=(3, n)))
    assert s.shape == (3, (n + 1) // 2) and d.shape == (3, n // 2)


@pytest.mark.parametrize("shape", [(64, 64), (37, 51), (384, 512)])
def test_2d_three_level_layout(shape):
    coeffs = wavedec2(np.random.default_rng(0).uniform(0, 255, size=shape), 3)
    assert len(coeffs) == 4
    h, w = shape
    for lh, hl, hh in reversed(coeffs[1:]):  # finest level first
        assert (lh.shape, hl.shape, hh.shape) == ((h // 2, (w + 1) // 2), ((h + 1) // 2, w // 2), (h // 2, w // 2))
        h, w = (h + 1) // 2, (w + 1) // 2
    assert coeffs[0].shape == (h, w)


def test_wavelet_kills_polynomials_in_detail_band():
    # CDF 9/7 analysis highpass has 4 vanishing moments: a cubic has no interior detail energy.
    t = np.arange(200, dtype=np.float64)
    _, d = dwt1(0.001 * t**3 - 0.2 * t**2 + 3 * t)
    assert np.abs(d[5:-5]).max() < 1e-6


def _photo(example_photos):
    return np.asarray(Image.open(example_photos[0]).convert("RGB").resize((384, 256)), dtype=np.float64) / 255.0


def test_fish_decreases_with_blur(example_photos):
    img = Image.open(example_photos[0]).convert("L").resize((384, 256))
    scores = [fish(np.asarray(img.filter(ImageFilter.GaussianBlur(r)), dtype=np.float64)) for r in (0, 1, 2, 4)]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1] + 3
    assert fish(np.full((64, 64), 128.0)) == pytest.approx(0.0, abs=1e-9)


def test_colourfulness_known_values():
    grey = np.full((32, 32, 3), 0.4)
    assert colourfulness(grey) == pytest.approx(0.0, abs=1e-9)
    red = np.zeros((32, 32, 3))
    red[..., 0] = 1.0
    # rg = 255, yb = 127.5, both constant: M3 = 0.3 * sqrt(255^2 + 127.5^2).
    assert colourfulness(red) == pytest.approx(0.3 * np.hypot(255.0, 127.5))


def test_brightness_and_contrast():
    half = np.zeros((10, 10, 3))
    half[:, :5] = 1.0
    a = appearance(np.tile(half, (4, 4, 1)))
    assert a["brightness"] == pytest.approx(0.5) and a["contrast"] == pytest.approx(0.5)
    flat = appearance(np.full((64, 64, 3), 0.25))
    assert flat["brightness"] == pytest.approx(0.25) and flat["contrast"] == pytest.approx(0.0, abs=1e-12)
    assert luma(np.array([[[1.0, 0.0, 0.0]]]))[0, 0] == pytest.approx(0.299)


def test_appearance_on_photo_ranks_edits(example_photos):
    rgb = _photo(example_photos)
    base = appearance(rgb)
    assert appearance(rgb * 0.5)["brightness"] < base["brightness"]
    assert appearance(0.5 + (rgb - 0.5) * 0.3)["contrast"] < base["contrast"]
    grey = np.repeat(luma(rgb)[..., None], 3, axis=2)
    assert appearance(grey)["colourfulness"] < 1e-6 < base["colourfulness"]


def test_tertile_bins():
    values = list(range(9))
    t = tertiles(values)
    assert [bin_value(v, t) for v in values] == ["low"] * 3 + ["medium"] * 3 + ["high"] * 3
    with pytest.raises(ValueError):
        tertiles([])
