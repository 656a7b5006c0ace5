"""Quality features of image files at full resolution, batched, streamed.

Images are not resized to a fixed size (resizing changes perceived quality). On a CPU, images of equal size share a
batch. On a GPU, where every new input shape costs cuDNN plan building, images of different sizes share a batch on a
zero canvas from a short ladder of sizes, each pooled over its own region with the features it gets alone
(model/canvas.py), so a folder of hundreds of sizes runs at nearly the uniform-size speed; large photos (one or two
a batch) run at their own size once their size has come often enough to repay a new shape. A producer thread reads
files (a thread pool), decodes them (on CUDA: JPEGs on the GPU with nvJPEG, on a side stream) and assembles batches,
while the calling thread runs the model (on CUDA: bf16 autocast, in the trunk's memory layout) with one batch in
flight. So on a GPU, reading, decoding and the model overlap, and nothing the producer waits for (file system,
decoder) stalls the model. A file that fails to load yields an error for that file only.
"""

from __future__ import annotations

import io
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sliq_cli.background import Background
from sliq_cli.images import ImageLoadError, is_jpeg, jpeg_size, load_image, pil_to_tensor
from sliq_cli.iqa.compiling import CompileWhenItPays


@dataclass
class FeatureResult:
    paths: list[Path]
    features: np.ndarray  # (N, D) float32; rows of failed images are NaN
    failed: dict[str, str] = field(default_factory=dict)  # path -> reason

    @property
    def ok(self) -> np.ndarray:
        return ~np.isnan(self.features).any(axis=1)


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        from sliq_cli.errors import UsageError

        raise UsageError("--device cuda was asked for, but no CUDA GPU is available")
    return device


def jpeg_size_error(data, path) -> ImageLoadError | None:
    """Pillow's decompression-bomb guard for JPEG bytes that go to nvJPEG, which has none: the error load_image
    gives on the CPU when the header's size is above twice PIL.Image.MAX_IMAGE_PIXELS, else None.

    The size comes from the frame header (images.jpeg_size, microseconds); Pillow parses the header only when that
    size is refused or cannot be read, so the error is Pillow's word for word. A header Pillow cannot parse either
    is left to the decoders, whose CPU fallback reports it precisely.
    """
    from PIL import Image

    size = jpeg_size(data)
    limit = Image.MAX_IMAGE_PIXELS
    if size is not None and (limit is None or max(1, size[0]) * max(1, size[1]) <= 2 * limit):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # below 2x the limit: downscaled later
            Image.open(io.BytesIO(data)).close()
    except Image.DecompressionBombError as e:
        return ImageLoadError(str(path), f"refused as a possible decompression bomb ({e})")
    except (OSError, SyntaxError, ValueError):
        pass
    return None


# What one more batch shape costs on an H200 (~40-50 ms: kernels loading, the stem's cuDNN plan, eager launches), in
# pixels of compute (bench/RESULTS.md).
NEW_SHAPE_PIXELS = 16 * 2**20
# A canvas already in use takes an image whose own ladder canvas is smaller by at most this many pixels (well below
# NEW_SHAPE_PIXELS a batch); an 8 MP photo still gets its own canvas rather than a 12 MP one.
CANVAS_REUSE_PIXELS = 512 * 512
BATCH_PIXELS_PER_IMAGE = 512 * 512  # a batch holds at most batch_size images or batch_size x this many pixels
# A short canvas batch is padded to a full one when its filler costs less than a new batch shape and the full shape
# is one already run or about to be (the first batch's canvas is the folder's commonest so far); else to a multiple
# of ROW_MULTIPLE rows: a few batch shapes, little filler.
ROW_MULTIPLE = 8
# Images of which a batch holds at most LARGE_ROWS are large (12 MP phone photos: one a batch); on a canvas they cost
# about CANVAS_COST more than at their own size (padding to the ladder, masks, matrix-product 1x1 layers: 49.9 against
# 59.5 img/s on an H200, bench/RESULTS.md).
LARGE_ROWS = 2
CANVAS_COST = 0.2
FIRST_BATCH = 16  # images in the first batch, which goes at once


class FeatureExtractor:
    """Streams (index, feature | None, error | None) for a list of image paths, in completion order."""

    def __init__(self, encoder, device: str = "cpu", batch_size: int | None = None, workers: int | None = None,
                 resize_shorter: int | None = None, compile: bool = False, max_side: int | None = None,
                 canvas: bool | None = None):
        """batch_size: default 64 on CUDA, 8 on a CPU. canvas: batch images of different sizes on shared canvases
        (default: on CUDA; on a CPU the padding would cost compute and new shapes cost little)."""
        self.encoder = encoder.fuse_for_inference()
        self.resize_shorter = resize_shorter  # a dataset protocol's fixed rescale (SPAQ: shorter side 512)
        self.device = device
        cuda = device.startswith("cuda")
        self.batch_size = max(1, batch_size or (64 if cuda else 8))
        # Large images batch fewer at a time: GPU memory follows pixels, not images (12 MP phone photos x 64 would
        # need tens of GB of activations).
        self.batch_pixels = self.batch_size * BATCH_PIXELS_PER_IMAGE
        self.canvas = cuda if canvas is None else canvas
        self.downsampling = encoder.trunk.downsampling
        # The trunk's total stride (32 for a ResNet): a smaller image leaves its last stage less than one cell, and
        # the score would be the head's reading of padding, not of the image.
        self.min_side = 2 ** len(self.downsampling)
        self.workers = workers or min(8, os.cpu_count() or 1)
        self.max_pixels = encoder.config.preprocess.max_pixels
        self.max_side = max_side  # a user's cap on the longer side (e.g. on a CPU, where full resolution is slow)
        self.cuda = cuda
        if compile and not self.cuda:
            from sliq_cli.errors import UsageError

            raise UsageError("--compile needs a CUDA device (torch.compile's CPU backend needs a C++ toolchain)")
        self.compile = compile
        self.compiler: CompileWhenItPays | None = None  # set by iter() under --compile
        self.shapes_run: set[tuple[int, int, int]] = set()  # (rows, H, W) of the canvas batches run so far
        self.encoder.to(device).eval()
        if self.cuda:
            self.encoder.to(memory_format=self._memory_format())
            self._warm_up()

    # -- loading (producer side) -----------------------------------------------------------------------------
    def _rows(self, size) -> int:
        """Images per batch at this (H, W): batch_size, fewer for large images (at most batch_pixels in all)."""
        return max(1, min(self.batch_size, self.batch_pixels // (size[-2] * size[-1])))

    def _load_cpu(self, path):
        """(3, H, W) uint8 CPU tensor, or ImageLoadError."""
        try:
            return pil_to_tensor(load_image(path, self.max_pixels, self.max_side))
        except ImageLoadError as e:
            return e

    def _load(self, path):
        """On CUDA, JPEG bytes are handed to nvJPEG; everything else (and any JPEG it rejects) decodes on the CPU."""
        if self.cuda and is_jpeg(path):
            try:
                with open(path, "rb") as f:
                    data = bytearray(os.fstat(f.fileno()).st_size)  # writable, as torch.frombuffer wants
                    f.readinto(data)
            except OSError:
                return self._load_cpu(path)  # gives the precise per-file error
            if data:
                return jpeg_size_error(data, path) or ("jpeg", path, data)
        return self._load_cpu(path)

    def _load_chunk(self, paths: list) -> list:
        return [self._load(p) for p in paths]  # one pool task per chunk: less per-file scheduling overhead

    def _decode_gpu(self, items):
        """Decode a list of ("jpeg", path, bytes) on the GPU; per-file CPU fallback for what nvJPEG refuses."""
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        datas = [torch.frombuffer(d, dtype=torch.uint8) for _, _, d in items]
        # torchvision allocates the outputs on our current stream but nvJPEG writes them on a stream of its own,
        # which does not wait for ours: memory we freed while our last pastes were still queued would be
        # overwritten under them (a few corrupted images a folder, measured on an H200). Drain our stream first.
        torch.cuda.current_stream(self.device).synchronize()
        try:
            return decode_jpeg(datas, mode=ImageReadMode.RGB, device=self.device, apply_exif_orientation=True)
        except RuntimeError:
            out = []
            for (_, path, _), data in zip(items, datas):
                try:
                    out.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device, apply_exif_orientation=True))
                except RuntimeError:
                    out.append(self._load_cpu(path))
            return out

    def _fit(self, t):
        """Apply the protocol's shorter-side rescale, then bound the size by max_pixels and max_side (antialiased, on
        t's device). t: (3, H, W) or (B, 3, H, W), uint8 or float; the dtype is kept."""
        import torch
        import torch.nn.functional as F

        from sliq_cli.tensors import to_uint8

        h, w = t.shape[-2:]
        s = self.resize_shorter / min(h, w) if self.resize_shorter else 1.0
        s = min(s, (self.max_pixels / (h * w)) ** 0.5, self.max_side / max(h, w) if self.max_side else s)
        if s == 1.0:
            return t
        x = t.reshape(-1, *t.shape[-3:]).float()  # (B, 3, H, W)
        x = F.interpolate(x, size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear", antialias=True)
        x = x.reshape(*t.shape[:-2], *x.shape[-2:])
        return to_uint8(x, scale=1) if t.dtype == torch.uint8 else x.clamp(0, 1)

    def _produce(self, paths: list) -> Generator[tuple]:
        """Run on the producer thread: yields ("error", i, reason) and ("batch", indices, (B, 3, H, W) uint8 on the
        device, CanvasLayout | None, ready event | None). Its device work runs on a side stream."""
        import torch

        from sliq_cli.model.canvas import CanvasLayout, fitted_side

        stream = torch.cuda.Stream(self.device) if self.cuda else None
        window = 8 * self.batch_pixels  # decoded pixels held at most, before the fullest bucket is flushed
        buckets: OrderedDict[tuple, list] = OrderedDict()  # (H, W) of a size or a canvas -> [(index, image)]
        canvases: set[tuple[int, int]] = set()
        large: dict[tuple[int, int], int] = {}  # (H, W) of large images -> how many so far
        pending = added = 0
        flushed = False
        # The first batch is small and goes at once, so the model starts while the rest is still being read.
        first = min(FIRST_BATCH, self.batch_size)
        jpegs: list = []  # (index, item) awaiting GPU decode

        def flush(key) -> tuple:
            nonlocal pending, flushed
            opening, flushed = not flushed, True  # the first batch of the run
            idx, tensors = zip(*buckets.pop(key))
            pending -= sum(t.shape[-2] * t.shape[-1] for t in tensors)
            layout = None
            rows = self._rows(key)
            if self.canvas and (len(idx) < rows or any(tuple(t.shape[-2:]) != key for t in tensors)):
                full = (rows, *key)
                if (rows - len(idx)) * key[0] * key[1] > NEW_SHAPE_PIXELS or not (opening or full in self.shapes_run):
                    rows = min(rows, -(-len(idx) // ROW_MULTIPLE) * ROW_MULTIPLE)
                self.shapes_run.add((rows, *key))
                layout = CanvasLayout.fitting([t.shape[-2:] for t in tensors], self.downsampling, rows=rows,
                                              canvas=key)
                batch = layout.paste(tensors, self.device)  # (rows, 3, H, W) uint8
            else:  # full, one size (a ladder side fits at offset 0): no canvas, no masks
                batch = torch.stack([t.to(self.device, non_blocking=True) for t in tensors])  # (B, 3, H, W) uint8
            ready = None
            if stream is not None:
                ready = torch.cuda.Event()
                ready.record(stream)
            return "batch", idx, batch, layout, ready

        def canvas_for(h: int, w: int) -> tuple[int, int]:
            own = (fitted_side(h, self.downsampling), fitted_side(w, self.downsampling))
            larger = [c for c in canvases if c[0] >= own[0] and c[1] >= own[1]
                      and c[0] * c[1] - own[0] * own[1] <= CANVAS_REUSE_PIXELS]
            key = min(larger, key=lambda c: c[0] * c[1]) if larger else own
            canvases.add(key)
            return key

        def key_for(t) -> tuple:
            if not self.canvas:
                return tuple(t.shape)
            size = tuple(t.shape[-2:])
            if self._rows(size) <= LARGE_ROWS:
                # A large photo runs at its own size once its size has come often enough to repay a new batch shape
                # with what the canvas costs it (padding, masks): few-size folders of phone photos.
                large[size] = large.get(size, 0) + 1
                if large[size] * CANVAS_COST * size[0] * size[1] > NEW_SHAPE_PIXELS:
                    return size
            return canvas_for(*size)

        def add(i, t) -> Iterator[tuple]:
            nonlocal pending, added
            if reason := self.too_small(*t.shape[-2:]):
                yield "error", i, reason
                return
            key = key_for(t)
            buckets.setdefault(key, []).append((i, t))
            pending += t.shape[-2] * t.shape[-1]
            added += 1
            if len(buckets[key]) >= self._rows(key):
                yield flush(key)
            elif pending >= window or (not flushed and added >= first):
                yield flush(max(buckets, key=lambda k: len(buckets[k]) * k[-2] * k[-1]))

        def decode_jpegs() -> Iterator[tuple]:
            decoded = self._decode_gpu([item for _, item in jpegs])
            done = [(i, t) for (i, _), t in zip(jpegs, decoded)]
            jpegs.clear()
            for i, t in done:
                if isinstance(t, ImageLoadError):
                    yield "error", i, t.reason
                else:
                    yield from add(i, self._fit(t))

        def merge_leftovers() -> None:
            """At the folder's end, a bucket joins another whose canvas holds its images and whose batch has room,
            when that pads fewer than NEW_SHAPE_PIXELS: cheaper than one more batch shape."""
            while True:
                canvas_keys = [k for k in buckets if k in canvases]  # not a large photo's own size
                for a in sorted(canvas_keys, key=lambda k: k[0] * k[1]):
                    holders = [b for b in canvas_keys if b != a and b[0] >= a[0] and b[1] >= a[1]
                               and len(buckets[a]) + len(buckets[b]) <= self._rows(b)
                               and len(buckets[a]) * (b[0] * b[1] - a[0] * a[1]) <= NEW_SHAPE_PIXELS]
                    if holders:
                        buckets[min(holders, key=lambda k: k[0] * k[1])].extend(buckets.pop(a))
                        break
                else:
                    return

        chunk = max(1, min(16, len(paths) // (4 * self.workers)))
        chunks = [paths[k : k + chunk] for k in range(0, len(paths), chunk)]
        depth = max(2 * self.workers, 4 * self.batch_size // chunk)  # chunks read ahead: bounded memory
        with torch.cuda.stream(stream) if stream else nullcontext():  # the producer's device work
            pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sliq-images")
            try:
                i = 0
                for loaded_chunk in _prefetch(pool, self._load_chunk, chunks, depth=depth):
                    for loaded in loaded_chunk:
                        if isinstance(loaded, ImageLoadError):
                            yield "error", i, loaded.reason
                        elif isinstance(loaded, tuple):
                            jpegs.append((i, loaded))
                            if len(jpegs) >= (self.batch_size if flushed else first):
                                yield from decode_jpegs()
                        else:
                            yield from add(i, self._fit(loaded))
                        i += 1
                if jpegs:
                    yield from decode_jpegs()
                if self.canvas:
                    merge_leftovers()
                while buckets:
                    yield flush(next(iter(buckets)))
            finally:  # also when the caller stops early: files not yet read are not read
                pool.shutdown(cancel_futures=True)

    # -- the model (consumer side) ---------------------------------------------------------------------------
    def _forward(self, scale_features, batch, layout, n: int):
        """Launch the model on a (B, 3, H, W) uint8 batch on the device (a canvas batch if `layout`, whose rows
        beyond the first n are filler): the (n, D) features, still on the device (no host sync here)."""
        x = batch.float().div_(255.0)  # (B, 3, H, W)
        return self._run(lambda t: self.encoder.quality_features(t, layout, scale_features), x)[:n]

    def _warm_up(self) -> None:
        """What a fresh process pays once, paid while loading rather than on the first batch: torchvision's import,
        nvJPEG's start, cuDNN's, and the loading of the kernels a canvas batch of photos runs (~2 s on an H200,
        bench/score_mixed.py --cold)."""
        import torch
        from PIL import Image

        from sliq_cli.model.canvas import CanvasLayout

        jpeg = io.BytesIO()
        Image.new("RGB", (16, 16)).save(jpeg, format="JPEG")
        self._decode_gpu([("jpeg", "warm-up", bytearray(jpeg.getvalue()))])
        sizes = [(375, 500), (500, 375)]
        layout = CanvasLayout.fitting(sizes, self.downsampling, rows=ROW_MULTIPLE)
        photos = [torch.zeros(3, h, w, dtype=torch.uint8, device=self.device) for h, w in sizes]
        with torch.inference_mode():
            self._run(self.encoder.quality_features, torch.zeros(1, 3, 64, 64, device=self.device))
            self._forward(self.encoder.scale_features, layout.paste(photos, self.device), layout, len(sizes))
        torch.cuda.synchronize(self.device)

    def _memory_format(self):
        import torch

        return torch.channels_last if self.encoder.trunk.channels_last else torch.contiguous_format

    def _run(self, features, x):
        import torch

        if self.cuda:
            x = x.contiguous(memory_format=self._memory_format())
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return features(x)  # (B, D)
        return features(x)

    def too_small(self, h: int, w: int) -> str | None:
        """Why an image of h x w (after any --max-side) cannot be scored, or None."""
        if min(h, w) >= self.min_side:
            return None
        return (f"too small to score ({w}x{h} px): the encoder needs at least {self.min_side} px on each side "
                f"(its total stride)")

    def features(self, x) -> np.ndarray:
        """Features of images already in memory, (B, 3, H, W) float in [0, 1], under the same size rules and precision
        as files get: (B, D) float32. ValueError for images below min_side."""
        import torch

        x = self._fit(x.to(self.device))
        if reason := self.too_small(*x.shape[-2:]):
            raise ValueError(reason)
        with torch.inference_mode():
            return self._run(self.encoder.quality_features, x).float().cpu().numpy()

    def iter(self, paths: list) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
        import torch

        paths = list(paths)
        self.compiler = CompileWhenItPays(self.encoder.scale_features, len(paths)) if self.compile else None
        scale_features = self.compiler or self.encoder.scale_features
        items = Background(self._produce(paths), depth=2, name="sliq-images")
        # On a GPU, the last batch launched is read back after the next launch, so the device always has work queued
        # (at once if no next batch is waiting: the first score comes early). Its features are copied to pinned
        # memory as it finishes, so reading it back waits for it alone, not for the batch launched after it.
        in_flight = None

        def launch(idx, batch, layout) -> tuple:
            with torch.inference_mode():
                feats = self._forward(scale_features, batch, layout, len(idx)).float()  # (n, D)
                if not self.cuda:
                    return idx, feats, None
                host = torch.empty(feats.shape, dtype=feats.dtype, pin_memory=True)
                host.copy_(feats, non_blocking=True)
                done = torch.cuda.Event()
                done.record()
                return idx, host, done

        def read_back(launched):
            idx, feats, done = launched
            if done is not None:
                done.synchronize()
            if self.compiler is not None:
                self.compiler.done(len(idx))
            yield from zip(idx, feats.numpy(), [None] * len(idx))

        try:
            for item in items:
                if item[0] == "error":
                    yield item[1], None, item[2]
                    continue
                _, idx, batch, layout, ready = item
                if ready is not None:
                    current = torch.cuda.current_stream(self.device)
                    current.wait_event(ready)
                    batch.record_stream(current)  # made on the producer's stream, used on this one
                previous, in_flight = in_flight, launch(idx, batch, layout)
                if previous is not None:
                    yield from read_back(previous)
                if not self.cuda or items.queue.empty():  # computed already (CPU), or nothing to overlap with yet
                    finished, in_flight = in_flight, None
                    yield from read_back(finished)
            if in_flight is not None:
                yield from read_back(in_flight)
        finally:
            items.close()  # a consumer that stops early (an error, a closed generator) releases the producer


def _prefetch(pool: ThreadPoolExecutor, fn: Callable, items: Iterable, depth: int):
    """pool.map with bounded read-ahead, so a folder of a million files never sits decoded in memory."""
    from collections import deque

    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def extract_features(encoder, paths, device: str = "cpu", batch_size: int | None = None,
                     progress: Callable | None = None, workers: int | None = None, resize_shorter: int | None = None,
                     canvas: bool | None = None) -> FeatureResult:
    """Quality features of every path; failed files are listed with their reason and get NaN rows. The options are
    FeatureExtractor's."""
    paths = [Path(p) for p in paths]
    dim = encoder.config.feature_dim
    feats = np.full((len(paths), dim), np.nan, dtype=np.float32)
    failed: dict[str, str] = {}
    for i, f, err in FeatureExtractor(encoder, device, batch_size, workers, resize_shorter,
                                                    canvas=canvas).iter(paths):
        if err is None:
            feats[i] = f
        else:
            failed[str(paths[i])] = err
        if progress is not None:
            progress(1)
    return FeatureResult(paths, feats, failed)
