"""Which decoded images share a batch: a planner fed image sizes one at a time, testable without images or a device.

On a CPU, images of equal size share a batch. On a GPU, where every new input shape costs cuDNN plan building, images
of different sizes share a zero canvas from a short ladder of sizes (model/canvas.py), and large photos run at their
own size once their size has come often enough to repay a new shape. FeatureExtractor (iqa/features.py) decodes,
asks the planner where each image goes, and pastes or stacks the batches it hands back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BatchPolicy:
    """The batching rules' constants, tuned on one H200 (bench/RESULTS.md, "Mixed-size folders on a GPU")."""

    # What one more batch shape costs (~40-50 ms: kernels loading, the stem's cuDNN plan, eager launches), in pixels
    # of compute.
    new_shape_pixels: int = 16 * 2**20
    # A canvas already in use takes an image whose own ladder canvas is smaller by at most this many pixels (well
    # below new_shape_pixels a batch); an 8 MP photo still gets its own canvas rather than a 12 MP one.
    canvas_reuse_pixels: int = 512 * 512
    # A batch holds at most batch_size images or batch_size x this many pixels: device memory follows pixels, not
    # images (12 MP phone photos x 64 would need tens of GB of activations).
    pixels_per_image: int = 512 * 512
    # A short canvas batch is padded to a full one when its filler costs less than a new batch shape and the full
    # shape is one already run or about to be (the first batch's canvas is the folder's commonest so far); else to a
    # multiple of row_multiple rows: a few batch shapes, little filler.
    row_multiple: int = 8
    # Images of which a batch holds at most large_rows are large (12 MP phone photos: one a batch); on a canvas they
    # cost about canvas_cost more than at their own size (padding to the ladder, masks, matrix-product 1x1 layers).
    large_rows: int = 2
    canvas_cost: float = 0.2
    first_batch: int = 16  # images in the first batch, which goes at once: the model starts while the rest is read
    window_batches: int = 8  # decoded pixels held at most, in full batches, before the fullest bucket goes
    cuda_batch_size: int = 64
    cpu_batch_size: int = 8


@dataclass(frozen=True)
class Batch:
    """Images planned to run together: indices[i] is the caller's index of images[i] (what it passed to add), of
    size sizes[i] = (h, w). canvas: None for a stack of equal sizes; else the (H, W) canvas they are pasted on, in a
    batch of `rows` rows (filler beyond len(indices))."""

    indices: tuple[int, ...]
    images: tuple[Any, ...]
    sizes: tuple[tuple[int, int], ...]
    canvas: tuple[int, int] | None
    rows: int


class BatchPlanner:
    """Buckets images by size (or canvas) as they come and hands back each batch as soon as it is due: a full bucket,
    the first batch (policy.first_batch images), or the fullest bucket when too many pixels wait. `finish()` hands
    back the rest, with leftover canvas buckets merged where that saves a batch shape.

    shapes_run: the (rows, H, W) canvas batch shapes run so far, which the planner extends; pass the same set to the
    planners of later runs in one process, whose shapes are then already planned by cuDNN.
    """

    def __init__(self, batch_size: int, downsampling, *, canvas: bool, policy: BatchPolicy | None = None,
                 shapes_run: set[tuple[int, int, int]] | None = None):
        self.policy = policy or BatchPolicy()
        self.batch_size = max(1, batch_size)
        self.batch_pixels = self.batch_size * self.policy.pixels_per_image
        self.downsampling = downsampling  # the trunk's stride-2 layers: where a canvas may hold an image
        self.canvas = canvas
        self.shapes_run = set() if shapes_run is None else shapes_run
        self.buckets: dict[tuple[int, int], list[tuple[int, Any, tuple[int, int]]]] = {}  # key -> [(i, image, size)]
        self.canvases: set[tuple[int, int]] = set()  # the canvas keys used so far
        self.large: dict[tuple[int, int], int] = {}  # size of large images -> how many so far
        self.pending = 0  # pixels in the buckets
        self.added = 0
        self.started = False  # a batch has been handed back
        self.first = min(self.policy.first_batch, self.batch_size)

    def rows(self, size) -> int:
        """Images per batch at this (H, W): batch_size, fewer for large images (at most batch_pixels in all)."""
        return max(1, min(self.batch_size, self.batch_pixels // (size[-2] * size[-1])))

    def add(self, index: int, size: tuple[int, int], image: Any = None) -> list[Batch]:
        """Plan one image of size (h, w); the batches now due (none or one)."""
        size = (int(size[0]), int(size[1]))
        key = self._key(size)
        bucket = self.buckets.setdefault(key, [])
        bucket.append((index, image, size))
        self.pending += size[0] * size[1]
        self.added += 1
        if len(bucket) >= self.rows(key):
            return [self._flush(key)]
        if self.pending >= self.policy.window_batches * self.batch_pixels or (
                not self.started and self.added >= self.first):
            return [self._flush(max(self.buckets, key=lambda k: len(self.buckets[k]) * k[0] * k[1]))]
        return []

    def finish(self) -> list[Batch]:
        """The batches left at the folder's end, in the order their buckets opened."""
        if self.canvas:
            self._merge_leftovers()
        return [self._flush(next(iter(self.buckets))) for _ in range(len(self.buckets))]

    def _key(self, size: tuple[int, int]) -> tuple[int, int]:
        if not self.canvas:
            return size
        if self.rows(size) <= self.policy.large_rows:
            # A large photo runs at its own size once its size has come often enough to repay a new batch shape with
            # what the canvas costs it (padding, masks): few-size folders of phone photos.
            self.large[size] = self.large.get(size, 0) + 1
            if self.large[size] * self.policy.canvas_cost * size[0] * size[1] > self.policy.new_shape_pixels:
                return size
        return self._canvas_for(size)

    def _canvas_for(self, size: tuple[int, int]) -> tuple[int, int]:
        """The smallest canvas in use that holds the image for at most canvas_reuse_pixels more than its own."""
        from sliq_cli.model.canvas import fitted_side

        own = (fitted_side(size[0], self.downsampling), fitted_side(size[1], self.downsampling))
        larger = [c for c in self.canvases if c[0] >= own[0] and c[1] >= own[1]
                  and c[0] * c[1] - own[0] * own[1] <= self.policy.canvas_reuse_pixels]
        key = min(larger, key=lambda c: c[0] * c[1]) if larger else own
        self.canvases.add(key)
        return key

    def _flush(self, key: tuple[int, int]) -> Batch:
        opening, self.started = not self.started, True  # the run's first batch
        indices, images, sizes = zip(*self.buckets.pop(key))
        self.pending -= sum(h * w for h, w in sizes)
        rows = self.rows(key)
        if not self.canvas or (len(indices) == rows and all(s == key for s in sizes)):
            return Batch(indices, images, sizes, None, len(indices))  # full, one size: no canvas, no masks
        filler = (rows - len(indices)) * key[0] * key[1]
        if filler > self.policy.new_shape_pixels or not (opening or (rows, *key) in self.shapes_run):
            rows = min(rows, -(-len(indices) // self.policy.row_multiple) * self.policy.row_multiple)
        self.shapes_run.add((rows, *key))
        return Batch(indices, images, sizes, key, rows)

    def _merge_leftovers(self) -> None:
        """At the folder's end, a bucket joins another whose canvas holds its images and whose batch has room, when
        that pads fewer than new_shape_pixels: cheaper than one more batch shape."""
        while True:
            keys = [k for k in self.buckets if k in self.canvases]  # not a large photo's own size
            for a in sorted(keys, key=lambda k: k[0] * k[1]):
                n = len(self.buckets[a])
                holders = [b for b in keys if b != a and b[0] >= a[0] and b[1] >= a[1]
                           and n + len(self.buckets[b]) <= self.rows(b)
                           and n * (b[0] * b[1] - a[0] * a[1]) <= self.policy.new_shape_pixels]
                if holders:
                    self.buckets[min(holders, key=lambda k: k[0] * k[1])].extend(self.buckets.pop(a))
                    break
            else:
                return
