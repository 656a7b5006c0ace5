"""Images of different sizes in one batch, with the features each would get alone.

On a GPU every new input shape costs cuDNN plan building (and, compiled, a CUDA-graph capture), so a folder of
hundreds of sizes batched size by size ran at ~1 % of the uniform-size speed. Here each image is pasted on a shared
zero canvas whose sides come from a short ladder, so a folder brings a handful of shapes. What keeps the features
those of the image alone:
- the canvas outside each image is zeroed before every spatial convolution and pooling window (the trunks'
  `forward_stages(..., region)`), as a convolution's own zero padding is at the image's border;
- each image sits at an offset that makes every stride-2 layer sample the grid it samples on the image alone
  (TensorFlow "same" padding depends on the parity of the input; symmetric padding needs even offsets);
- means and standard deviations pool over each image's own region.
So features equal the size-by-size ones up to floating-point rounding (tests/test_iqa_canvas.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

# A trunk's stride-2 layers, input to output: (kernel, padding), padding an int (symmetric) or "same" (TensorFlow's:
# computed from the input size, the extra row at the bottom). Every one maps n input rows to ceil(n / 2).
Downsampling = tuple[tuple[int, "int | str"], ...]


def resize_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Antialiased bilinear resize by `scale` (the 2x-downscaled view of CONTRIQUE/SLIQUE features). Here, not in
    model/encoder.py, so that a canvas rescales its images as the encoder rescales a lone one without importing it."""
    h, w = x.shape[-2:]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def top_pad(kernel: int, padding: int | str, size: int) -> int:
    """Rows of zero padding above the input of a stride-2 layer of this size."""
    if padding != "same":
        return padding
    return max((math.ceil(size / 2) - 1) * 2 + kernel - size, 0) // 2


@lru_cache(maxsize=4096)
def offset_levels(size: int, canvas: int, downsampling: Downsampling) -> tuple[tuple[int, int], ...] | None:
    """(offset, size) of an image side of `size` on a canvas side of `canvas`, at the input and after each stride-2
    layer, for the smallest offset that keeps every layer's sampling grid; None if the image does not fit."""
    for offset in range(2 ** len(downsampling)):  # the grid constraint fixes the offset modulo 2^levels
        levels, o, n, c = [(offset, size)], offset, size, canvas
        for kernel, padding in downsampling:
            # On the canvas, output j's window starts at 2j - pad(canvas); alone, output i's at 2i - pad(image), at
            # canvas row 2i - pad(image) + o. They coincide at j = i + (o + pad(canvas) - pad(image)) / 2.
            shift = o + top_pad(kernel, padding, c) - top_pad(kernel, padding, n)
            if shift < 0 or shift % 2:
                break
            o, n, c = shift // 2, math.ceil(n / 2), math.ceil(c / 2)
            levels.append((o, n))
        else:
            if offset + size <= canvas:
                return tuple(levels)
    return None


def canvas_side(need: int) -> int:
    """The ladder of canvas sides: multiples of 32 (so one offset serves every canvas of a side), with steps of about
    an eighth of the side above 256: few shapes, at most ~1/4 wasted."""
    step = max(32, 2 ** (math.ceil(math.log2(max(need, 1))) - 3))
    return -(-need // step) * step


def fitted_side(size: int, downsampling: Downsampling) -> int:
    """The smallest ladder side that holds an image side of `size` at its aligned offset."""
    c = canvas_side(size)
    while offset_levels(size, c, downsampling) is None:
        c = canvas_side(c + 1)
    return c


@dataclass(frozen=True)
class CanvasLayout:
    """Where each image of a batch lies on the canvas: `sizes[i]` = (h, w) of image i (rows beyond the images' are
    filler: the whole canvas), canvas = (H, W)."""

    canvas: tuple[int, int]
    sizes: tuple[tuple[int, int], ...]
    downsampling: Downsampling

    @classmethod
    def fitting(cls, sizes, downsampling: Downsampling, rows: int | None = None,
                canvas: tuple[int, int] | None = None) -> CanvasLayout:
        """`rows` rows (filler beyond len(sizes)) on `canvas` (sides from the ladder, holding every size), by default
        the smallest ladder canvas that holds them."""
        sizes = tuple((int(h), int(w)) for h, w in sizes)
        canvas = canvas or (max(fitted_side(h, downsampling) for h, _ in sizes),
                            max(fitted_side(w, downsampling) for _, w in sizes))
        return cls(canvas, sizes + (canvas,) * ((rows or len(sizes)) - len(sizes)), downsampling)

    def boxes(self) -> list[tuple[int, int, int, int]]:
        """(top, left, h, w) of each row's image on the canvas."""
        out = []
        for h, w in self.sizes:
            (top, _), *_ = offset_levels(h, self.canvas[0], self.downsampling)
            (left, _), *_ = offset_levels(w, self.canvas[1], self.downsampling)
            out.append((top, left, h, w))
        return out

    def region_table(self, device) -> torch.Tensor:
        """(B, P) float32, what ValidRegion reads: for each row, at the input and after each stride-2 layer, 0/1
        indicators of the canvas rows its image covers, then of the columns; then its pixel count at each level.
        Built on the host and uploaded in one copy, so the masks cost the model's thread one product a level."""
        # (offset, size) of each image's rows and columns at every level: (B, L + 1, 2) each
        rows = np.array([offset_levels(h, self.canvas[0], self.downsampling) for h, _ in self.sizes])
        cols = np.array([offset_levels(w, self.canvas[1], self.downsampling) for _, w in self.sizes])
        parts, n = [], self.canvas
        for level in range(rows.shape[1]):
            for (start, size), length in ((rows[:, level].T, n[0]), (cols[:, level].T, n[1])):
                line = np.arange(length)
                parts.append((line >= start[:, None]) & (line < (start + size)[:, None]))  # (B, length)
            n = (math.ceil(n[0] / 2), math.ceil(n[1] / 2))
        parts.append(rows[:, :, 1] * cols[:, :, 1])  # (B, L + 1) pixels
        table = torch.from_numpy(np.concatenate(parts, axis=1).astype(np.float32))
        if torch.device(device).type == "cuda":  # from pageable memory the copy would wait for the whole stream
            table = table.pin_memory()
        return table.to(device, non_blocking=True)

    def paste(self, images, device) -> torch.Tensor:
        """(rows, C, H, W) zero canvas with images[i] (C, h, w) at its place; filler rows stay zero."""
        first = images[0]
        out = torch.zeros(len(self.sizes), first.shape[0], *self.canvas, dtype=first.dtype, device=device)
        for i, ((top, left, h, w), image) in enumerate(zip(self.boxes(), images)):
            out[i, :, top:top + h, left:left + w] = image.to(device, non_blocking=True)
        return out

    def rescale(self, x: torch.Tensor, scale: float) -> tuple[torch.Tensor, CanvasLayout]:
        """Each image of canvas batch x resized by `scale` as `resize_scale` resizes a lone image, on a new canvas.
        Eager (one resize per image): only the multi-scale feature specs need it."""
        images = [resize_scale(x[i:i + 1, :, top:top + h, left:left + w], scale)[0]
                  for i, (top, left, h, w) in enumerate(self.boxes())]
        layout = CanvasLayout.fitting([im.shape[-2:] for im in images], self.downsampling)
        return layout.paste(images, x.device), layout


class ValidRegion:
    """Masks and pooling over each image's own region of a canvas batch, at every level of the trunk.

    `table`: CanvasLayout.region_table(); `canvas`: (H, W) of the input; `levels`: 1 + the trunk's stride-2 layers. A
    feature map's level is known from its spatial size (each stride-2 layer maps a side n to ceil(n / 2), so levels
    have distinct sizes)."""

    def __init__(self, table: torch.Tensor, canvas, levels: int):
        self.table = table
        self.spans = {}  # (h, w) of a level -> (its rows' and columns' first columns in the table, the level)
        (h, w), at = canvas, 0
        for level in range(levels):
            self.spans[(h, w)] = (at, at + h, level)
            at += h + w
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        self.counts = at  # the pixel counts' first column
        self._tables = {table.dtype: table}
        self._masks: dict = {}

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) of x's dtype: 1 inside each image, 0 outside. x: (B, C, h, w) at one of the trunk's levels."""
        h, w = x.shape[-2:]
        key = (h, w, x.dtype)
        if key not in self._masks:
            if x.dtype not in self._tables:
                self._tables[x.dtype] = self.table.to(x.dtype)  # 0/1 is exact in any float type
            table, (rows, cols, _) = self._tables[x.dtype], self.spans[(h, w)]
            b = table.shape[0]
            self._masks[key] = table[:, rows:rows + h].view(b, 1, h, 1) * table[:, cols:cols + w].view(b, 1, 1, w)
        return self._masks[key]

    def zero_outside(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask(x)

    def relu6_inside(self, x: torch.Tensor) -> torch.Tensor:
        """zero_outside(relu6(x)) as one clamp: to [0, 6] inside each image, to [0, 0] outside."""
        key = (*x.shape[-2:], x.dtype, "bounds")
        if key not in self._masks:
            self._masks[key] = x.new_zeros(()), self.mask(x) * 6
        low, high = self._masks[key]
        return torch.clamp(x, min=low, max=high)

    def mean_std(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image mean and population standard deviation over its region, in float32 whatever x's dtype (a bf16
        map times its 0/1 mask is exact; sums accumulate in float32). x: (B, C, h, w) -> 2 x (B, C)."""
        m = self.mask(x)  # (B, 1, h, w)
        level = self.spans[tuple(x.shape[-2:])][2]
        count = self.table[:, self.counts + level:self.counts + level + 1]  # (B, 1)
        mean = (x * m).sum((2, 3), dtype=torch.float32) / count  # (B, C)
        var = ((x - mean[:, :, None, None]) * m).square().sum((2, 3)) / count  # x - mean: float32
        return mean, var.sqrt()
