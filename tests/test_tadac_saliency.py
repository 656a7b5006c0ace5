"""Spectral-residual saliency and the maximum-saliency crop."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sliq_cli.tadac.appearance import luma
from sliq_cli.tadac.saliency import max_window, saliency_box, spectral_residual


def _brute_force(sal, size):
    h, w = sal.shape
    best, arg = -1.0, None
    for y in range(h - size + 1):
        for x in range(w - size + 1):
            s = sal[y : y + size, x : x + size].sum()
            if s > best + 1e-9:
                best, arg = s, (x, y)
    return arg


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_integral_image_window_matches_brute_force(seed):
    sal = np.random.default_rng(seed).random((23, 31))
    x, y, w, h = max_window(sal, size=7)
    assert (w, h) == (7, 7) and (x, y) == _brute_force(sal, 7)


def test_window_clipped_to_small_maps():
    assert max_window(np.ones((100, 150)), size=224) == (0, 0, 150, 100)


def test_box_covers_the_salient_object():
    # A smooth grey field with one textured square: the crop must contain the square.
    rng = np.random.default_rng(0)
    img = np.full((384, 512, 3), 0.5)
    img[250:330, 380:460] = rng.random((80, 80, 1))
    x, y, w, h = saliency_box(img)
    assert (w, h) == (224, 224) and 0 <= x <= 512 - 224 and 0 <= y <= 384 - 224
    assert x <= 380 and x + w >= 460 and y <= 250 and y + h >= 330
    sal = spectral_residual(img.mean(axis=2))
    assert sal.shape == (384, 512) and sal.min() >= 0 and sal.max() == pytest.approx(1.0, abs=0.01)
    assert sal[250:330, 380:460].mean() > 5 * sal[:150, :200].mean()


@pytest.mark.parametrize("top, left", [(10, 10), (300, 20), (20, 600), (200, 300), (400, 620)])
def test_box_follows_a_bright_textured_square(top, left):
    # wherever the square lies (corners included), the crop moves to contain it
    img = np.full((480, 720, 3), 0.2)
    img[top : top + 60, left : left + 60] = 0.6 + 0.4 * np.random.default_rng(top).random((60, 60, 1))
    x, y, w, h = saliency_box(img)
    assert (w, h) == (224, 224) and x <= left and x + w >= left + 60 and y <= top and y + h >= top + 60


def test_box_inside_a_real_photo(example_photos):
    rgb = np.asarray(Image.open(example_photos[1]).convert("RGB").resize((341, 256)), dtype=np.float64) / 255.0
    x, y, w, h = saliency_box(rgb)
    assert (w, h) == (224, 224) and 0 <= x <= 341 - 224 and 0 <= y <= 256 - 224
    # the box holds at least as much saliency as any other window (a coarse grid of them), and more than average
    sal = spectral_residual(luma(rgb))
    best = sal[y : y + h, x : x + w].sum()
    others = [sal[j : j + h, i : i + w].sum() for j in range(0, 256 - h + 1, 4) for i in range(0, 341 - w + 1, 4)]
    assert best >= max(others) - 1e-6 and best > 1.05 * np.mean(others)
