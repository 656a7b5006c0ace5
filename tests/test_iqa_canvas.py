"""Images of different sizes on one canvas get the features each gets alone (sliq_cli/model/canvas.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sliq_cli.model.canvas import CanvasLayout, canvas_side, fitted_side, offset_levels, top_pad
from sliq_cli.model.registry import create_model

SIZES = [(37, 53), (64, 64), (45, 90), (33, 31), (70, 41), (96, 65)]  # odd, even, every residue mod 32 differs


def _encoder(name: str):
    """An encoder whose BatchNorms have random statistics and shifts, so the canvas outside an image is far from
    zero after every layer (a missing mask shows)."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.fuse_for_inference()


@pytest.mark.parametrize("name", ["slique-efficientnet-lite0", "slique-resnet18", "slique-resnet50"])
def test_canvas_features_equal_features_alone(name):
    """Lite0: TensorFlow "same" padding (offsets matter); ResNet-18: basic blocks and the paper's two scales;
    ResNet-50: bottlenecks. Rows beyond the images are filler."""
    model = _encoder(name)
    images = [torch.rand(3, h, w) for h, w in SIZES]
    alone = torch.cat([model.quality_features(im[None]) for im in images])  # (6, D)
    layout = CanvasLayout.fitting(SIZES, model.trunk.downsampling, rows=8)
    x = layout.paste(images, "cpu")  # (8, 3, H, W)
    together = model.quality_features(x, layout)[: len(SIZES)]
    assert torch.allclose(together, alone, atol=2e-5), (together - alone).abs().max()
    # without the masks the canvas's content leaks in: the test can tell
    unmasked = model.quality_features(x)[: len(SIZES)]
    assert (unmasked - alone).abs().max() > 1e-2


def test_region_table_masks_and_counts_are_each_images_own():
    """ValidRegion's mask at every level is 1 exactly on the image's rows and columns there (offset_levels), and its
    pixel count is the image's; filler rows cover the whole canvas."""
    from sliq_cli.model.canvas import ValidRegion

    downsampling = create_model("slique-efficientnet-lite0").trunk.downsampling
    layout = CanvasLayout.fitting(SIZES, downsampling, rows=8)
    region = ValidRegion(layout.region_table("cpu"), layout.canvas, len(downsampling) + 1)
    h, w = layout.canvas
    for level in range(len(downsampling) + 1):
        x = torch.zeros(8, 2, h, w, dtype=torch.bfloat16)
        mask = region.mask(x)
        assert mask.shape == (8, 1, h, w) and mask.dtype == torch.bfloat16
        for i, size in enumerate(layout.sizes):
            (top, rows), (left, cols) = (offset_levels(n, c, downsampling)[level] for n, c in zip(size, layout.canvas))
            expected = torch.zeros(h, w)
            expected[top:top + rows, left:left + cols] = 1
            assert torch.equal(mask[i, 0].float(), expected), (level, i)
            mean, std = region.mean_std(x + 1)  # a constant map inside: mean 1, deviation 0, whatever the count
            assert torch.allclose(mean, torch.ones(8, 2)) and torch.allclose(std, torch.zeros(8, 2))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    count = region.table[:, region.counts:]  # (8, levels)
    assert count[0, 0] == SIZES[0][0] * SIZES[0][1] and count[7, 0] == layout.canvas[0] * layout.canvas[1]


def test_offsets_keep_the_sampling_grid():
    """On the canvas, each stride-2 layer's output j of the image region starts its window where the lone image's
    output i = j - offset does, for every size; the region stays inside the canvas at every level."""
    downsampling = create_model("slique-efficientnet-lite0").trunk.downsampling
    for n in range(1, 200):
        c = fitted_side(n, downsampling)
        assert c % 32 == 0 and c >= n and c <= canvas_side(n + 31)
        levels = offset_levels(n, c, downsampling)
        canvas = c
        for (o, m), (o_next, m_next), (k, pad) in zip(levels, levels[1:], downsampling):
            assert m_next == math.ceil(m / 2) and o + m <= canvas
            assert 2 * o_next - top_pad(k, pad, canvas) == o - top_pad(k, pad, m)  # first windows coincide
            canvas = math.ceil(canvas / 2)
        assert levels[-1][0] + levels[-1][1] <= canvas


def test_same_padding_rule_matches_the_convolution():
    """top_pad is what SameConv2d pads: for kernels 3 and 5, odd and even sizes."""
    from sliq_cli.model.efficientnet import SameConv2d

    for k in (3, 5):
        conv = SameConv2d(1, 1, k, 2)
        torch.nn.init.zeros_(conv.weight)
        conv.weight.data[0, 0, 0, k // 2] = 1.0  # picks row (2j - pad) of the input, column 2j' centre
        for n in (9, 10):
            rows = torch.arange(n, dtype=torch.float32).view(1, 1, n, 1).expand(1, 1, n, n).contiguous()
            out = conv(rows)[0, 0, :, 0]
            first = -top_pad(k, "same", n)  # the first output's window starts here
            expected = torch.tensor([float(2 * j + first) if 2 * j + first >= 0 else 0.0 for j in range(len(out))])
            assert torch.equal(out, expected), (k, n, out)


def test_ladder_is_short():
    """The canvas sides: multiples of 32, steps of about an eighth above 256 — few shapes for real folders."""
    assert [canvas_side(n) for n in (1, 32, 33, 256, 257, 500, 512, 513, 1000, 3000)] == \
        [32, 32, 64, 256, 320, 512, 512, 640, 1024, 3072]
    assert len({canvas_side(n) for n in range(1, 4097)}) < 45


def test_rescaled_canvas_equals_rescaled_images():
    """The half scale of a canvas batch: each image resized alone, on a new canvas."""
    downsampling = create_model("slique-resnet18").trunk.downsampling
    images = [torch.rand(3, h, w) for h, w in SIZES]
    layout = CanvasLayout.fitting(SIZES, downsampling)
    half, half_layout = layout.rescale(layout.paste(images, "cpu"), 0.5)
    for i, (im, (top, left, h, w)) in enumerate(zip(images, half_layout.boxes())):
        alone = F.interpolate(im[None], size=(round(im.shape[1] / 2), round(im.shape[2] / 2)), mode="bilinear",
                              antialias=True)[0]
        assert torch.allclose(half[i, :, top:top + h, left:left + w], alone, atol=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
def test_pointwise_equals_the_1x1_convolution(channels_last):
    """The matrix product that canvas batches use on CUDA for 1x1 layers (no cuDNN plan per shape) computes the
    convolution, in either memory layout, with and without bias, and keeps the input's layout."""
    import torch.nn.functional as F

    from sliq_cli.model.efficientnet import pointwise

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 24, 7, 9, generator=gen)
    w, b = torch.randn(40, 24, 1, 1, generator=gen), torch.randn(40, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for bias in (b, None):
        y = pointwise(x, w, bias)
        torch.testing.assert_close(y, F.conv2d(x, w, bias), rtol=1e-5, atol=1e-5)
        assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
