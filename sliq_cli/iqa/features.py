"""Quality features of image files at full resolution, batched, streamed.

Images are not resized to a fixed size (resizing changes perceived quality). On a CPU, images of equal size share a
batch. On a GPU, where every new input shape costs cuDNN plan building, images of different sizes share a batch on a
zero canvas from a short ladder of sizes, each pooled over its own region with the features it gets alone
(model/canvas.py), so a folder of hundreds of sizes runs at nearly the uniform-size speed; large photos (one or two
a batch) run at their own size once their size has come often enough to repay a new shape; which images share a
batch is iqa/batching.py's BatchPlanner. A producer thread reads files (a thread pool), decodes them (on CUDA: JPEGs
on the GPU with nvJPEG, on a side stream, unless the folder fits in one batch) and assembles the planned batches,
while the calling thread runs the model (on CUDA: bf16 autocast, in the trunk's memory layout; on a CPU:
channels_last) with one batch in flight. So on a GPU, reading, decoding and the model overlap, and nothing the
producer waits for (file system, decoder) stalls the model. A file that fails to load yields an error for that file
only.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from sliq_cli import trace
from sliq_cli.background import Background
from sliq_cli.images import (ImageLoadError, is_jpeg, jpeg_complete, jpeg_orientation, jpeg_size, load_image,
                             pil_to_tensor)
from sliq_cli.iqa.batching import Batch, BatchPlanner, BatchPolicy
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


class FeatureExtractor:
    """Streams (index, feature | None, error | None) for a list of image paths, in completion order."""

    def __init__(self, encoder, *, device: str = "cpu", batch_size: int | None = None, workers: int | None = None,
                 resize_shorter: int | None = None, compile: bool = False, max_side: int | None = None,
                 canvas: bool | None = None, channels_last: bool | None = None, policy: BatchPolicy | None = None,
                 run_size: int | None = None):
        """batch_size: default policy.cuda_batch_size (64) on CUDA, policy.cpu_batch_size (8) on a CPU. canvas: batch
        images of different sizes on shared canvases (default: on CUDA; on a CPU the padding would cost compute and
        new shapes cost little). channels_last: the trunk's memory layout (default: the trunk's preference on CUDA,
        channels_last on a CPU, where oneDNN's depthwise and 1x1 kernels run several times faster in it). run_size:
        the file count of the run that each iter() call is a part of (a Ray actor's batches), so JPEGs decode as in a
        local run of that many files (pillow_only), not by the part's own count (default). The caller's encoder is
        left as it was: the extractor runs a fused copy."""
        cuda = device.startswith("cuda")
        if compile and not cuda:
            from sliq_cli.errors import UsageError

            raise UsageError("--compile needs a CUDA device (torch.compile's CPU backend needs a C++ toolchain)")
        self.policy = policy or BatchPolicy()
        self.encoder = encoder.fuse_for_inference()
        self.resize_shorter = resize_shorter  # a dataset protocol's fixed rescale (SPAQ: shorter side 512)
        self.device = device
        self.cuda = cuda
        self.batch_size = max(1, batch_size or (self.policy.cuda_batch_size if cuda else self.policy.cpu_batch_size))
        self.canvas = cuda if canvas is None else canvas
        self.downsampling = encoder.trunk.downsampling
        # The trunk's total stride (32 for a ResNet): a smaller image leaves its last stage less than one cell, and
        # the score would be the head's reading of padding, not of the image.
        self.min_side = 2 ** len(self.downsampling)
        self.workers = workers or min(8, os.cpu_count() or 1)
        self.max_pixels = encoder.config.preprocess.max_pixels
        self.max_side = max_side  # a user's cap on the longer side (e.g. on a CPU, where full resolution is slow)
        self.compile = compile
        self.run_size = run_size
        self.compiler: CompileWhenItPays | None = None  # set by iter() under --compile
        self.shapes_run: set[tuple[int, int, int]] = set()  # (rows, H, W) of the canvas batches run so far
        self.channels_last = (encoder.trunk.channels_last if cuda else True) if channels_last is None else channels_last
        self.device_started = not cuda  # the device's one-time start (_start_device) is paid
        self.encoder.to(device, memory_format=self._memory_format())

    # -- loading (producer side) -----------------------------------------------------------------------------
    def _load_cpu(self, path):
        """(3, H, W) uint8 CPU tensor, or ImageLoadError."""
        try:
            return pil_to_tensor(load_image(path, self.max_pixels, self.max_side))
        except ImageLoadError as e:
            return e

    def _load(self, path, cpu: bool = False):
        """On CUDA, whole JPEG bytes are handed to nvJPEG unless `cpu`; everything else (a truncated JPEG, any JPEG
        nvJPEG rejects) decodes on the CPU."""
        if self.cuda and not cpu and is_jpeg(path):
            try:
                with open(path, "rb") as f:
                    data = bytearray(os.fstat(f.fileno()).st_size)  # writable, as torch.frombuffer wants
                    f.readinto(data)
            except OSError:
                return self._load_cpu(path)  # gives the precise per-file error
            if jpeg_complete(data):
                return jpeg_size_error(data, path) or ("jpeg", path, data, jpeg_orientation(data))
        return self._load_cpu(path)

    def _load_chunk(self, paths: list, cpu: bool = False) -> list:
        return [self._load(p, cpu=cpu) for p in paths]  # one pool task per chunk: less per-file scheduling overhead

    def pillow_only(self, count: int) -> bool:
        """Whether a run of `count` images decodes them all on the CPU: always on a CPU; on CUDA, a run that fits in
        the first batch (see _produce)."""
        return not self.cuda or count <= self.planner().first

    def _decode_gpu(self, items):
        """Decode a list of ("jpeg", path, bytes, EXIF orientation) on the GPU, upright; per-file CPU fallback for
        what nvJPEG refuses."""
        import torch

        from sliq_cli import nvjpeg

        datas = [torch.frombuffer(d, dtype=torch.uint8) for _, _, d, _ in items]
        # torchvision allocates the outputs on our current stream but nvJPEG writes them on a stream of its own,
        # which does not wait for ours: memory we freed while our last pastes were still queued would be
        # overwritten under them (a few corrupted images a folder, measured on an H200). Drain our stream first.
        torch.cuda.current_stream(self.device).synchronize()
        try:
            decoded = nvjpeg.decode(datas, self.device)
        except RuntimeError:
            decoded = []
            for (_, path, _, _), data in zip(items, datas):
                try:
                    decoded += nvjpeg.decode([data], self.device)
                except RuntimeError:
                    decoded.append(self._load_cpu(path))  # upright already (Pillow)
        return [nvjpeg.orient(t, o) if isinstance(t, torch.Tensor) else t
                for t, (_, _, _, o) in zip(decoded, items)]

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

    def planner(self) -> BatchPlanner:
        """A planner for one run under this extractor's batch size, canvas rule and policy; the batch shapes it
        plans add to those of earlier runs (self.shapes_run)."""
        return BatchPlanner(self.batch_size, self.downsampling, canvas=self.canvas, policy=self.policy,
                            shapes_run=self.shapes_run)

    def _produce(self, paths: list) -> Generator[tuple]:
        """Run on the producer thread: yields ("error", i, reason) and ("batch", indices, (B, 3, H, W) uint8 on the
        device, CanvasLayout | None, ready event | None). Its device work runs on a side stream."""
        import torch

        stream = torch.cuda.Stream(self.device) if self.cuda else None
        planner = self.planner()
        chunk = max(1, min(16, len(paths) // (4 * self.workers)))
        chunks = [paths[k : k + chunk] for k in range(0, len(paths), chunk)]
        depth = max(2 * self.workers, 4 * self.batch_size // chunk)  # chunks read ahead: bounded memory
        # A folder that fits in the first batch decodes on the CPU (Pillow: milliseconds an image): it never waits
        # for nvJPEG's start (~0.6 s on an H100). A larger one pays it once, on this thread while the device
        # starts; Pillow for its first batch too measured slower (bench/RESULTS.md, start-up).
        load = partial(self._load_chunk, cpu=self.pillow_only(self.run_size or len(paths)))
        with torch.cuda.stream(stream) if stream else nullcontext():  # the producer's device work
            pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sliq-images")
            try:
                jpegs: list = []  # (index, ("jpeg", path, bytes, orientation)) awaiting GPU decode
                loaded = (item for items in _prefetch(pool, load, chunks, depth=depth) for item in items)
                for i, item in enumerate(loaded):
                    if not isinstance(item, tuple):
                        yield from self._plan(planner, [(i, item)], stream)
                        continue
                    jpegs.append((i, item))
                    # the first batch's JPEGs decode as soon as they are read, so the model starts early
                    if len(jpegs) >= (self.batch_size if planner.started else planner.first):
                        yield from self._plan(planner, self._decode_jpegs(jpegs), stream)
                        jpegs = []
                if jpegs:
                    yield from self._plan(planner, self._decode_jpegs(jpegs), stream)
                for batch in planner.finish():
                    yield self._assemble(batch, stream)
            finally:  # also when the caller stops early: files not yet read are not read
                pool.shutdown(cancel_futures=True)

    def _decode_jpegs(self, jpegs: list) -> list:
        """[(index, (3, H, W) uint8 on the device, upright | ImageLoadError)] of [(index, ("jpeg", path, bytes,
        orientation))]."""
        return [(i, t) for (i, _), t in zip(jpegs, self._decode_gpu([item for _, item in jpegs]))]

    def _plan(self, planner: BatchPlanner, loaded, stream) -> Iterator[tuple]:
        """Hands (index, (3, H, W) uint8 | ImageLoadError) pairs to the planner: yields ("error", i, reason) for the
        images that cannot be scored and the batches they make due."""
        for i, t in loaded:
            if isinstance(t, ImageLoadError):
                yield "error", i, t.reason
                continue
            t = self._fit(t)
            if reason := self.too_small(*t.shape[-2:]):
                yield "error", i, reason
                continue
            for batch in planner.add(i, t.shape[-2:], t):
                yield self._assemble(batch, stream)

    def _assemble(self, batch: Batch, stream) -> tuple:
        """("batch", indices, (rows, 3, H, W) uint8 on the device, CanvasLayout | None, ready event | None)."""
        import torch

        from sliq_cli.model.canvas import CanvasLayout

        layout = None
        if batch.canvas is None:  # one size (a ladder side fits at offset 0): no canvas, no masks
            x = torch.stack([t.to(self.device, non_blocking=True) for t in batch.images])  # (B, 3, H, W) uint8
        else:
            layout = CanvasLayout.fitting(batch.sizes, self.downsampling, rows=batch.rows, canvas=batch.canvas)
            x = layout.paste(batch.images, self.device)  # (rows, 3, H, W) uint8
        ready = None
        if stream is not None:
            ready = torch.cuda.Event()
            ready.record(stream)
        return "batch", batch.indices, x, layout, ready

    # -- the model (consumer side) ---------------------------------------------------------------------------
    def _forward(self, scale_features, batch, layout, n: int):
        """Launch the model on a (B, 3, H, W) uint8 batch on the device (a canvas batch if `layout`, whose rows
        beyond the first n are filler): the (n, D) features, still on the device (no host sync here)."""
        x = batch.float().div_(255.0)  # (B, 3, H, W)
        return self._run(lambda t: self.encoder.quality_features(t, layout, scale_features), x)[:n]

    def _start_device(self) -> None:
        """What a fresh process pays once on CUDA before its first batch (cuDNN's and cuBLAS's start, the loading of
        the canvas kernels: ~1-2 s on an H200), paid on tiny inputs while the producer reads and decodes the first
        files. The folder's own batch shapes are planned when they first run, so no shape it will not use is."""
        import torch

        from sliq_cli.model.canvas import CanvasLayout

        x = torch.zeros(2, 3, 64, 64, device=self.device)  # (2, 3, 64, 64)
        with torch.inference_mode():
            self._run(self.encoder.quality_features, x)
            if self.canvas:
                layout = CanvasLayout.fitting([(64, 64), (48, 64)], self.downsampling)
                self._run(lambda t: self.encoder.quality_features(t, layout), x)
        torch.cuda.synchronize(self.device)
        self.device_started = True

    def _memory_format(self):
        import torch

        return torch.channels_last if self.channels_last else torch.contiguous_format

    def _run(self, features, x):
        import torch

        x = x.contiguous(memory_format=self._memory_format())
        if self.cuda:
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

    def decoded(self, images: list) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
        """iter()'s (index, features, error) for images decoded elsewhere (Ray tasks): (H, W, 3) uint8 arrays, under
        the same size rules, batching (canvases on CUDA) and precision as files get. All are planned first: the
        caller hands over one batch's worth at a time."""
        import torch

        planner, batches = self.planner(), []
        for i, img in enumerate(images):
            t = self._fit(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))  # (3, H, W) uint8
            if reason := self.too_small(*t.shape[-2:]):
                yield i, None, reason
            else:
                batches += planner.add(i, t.shape[-2:], t)
        if not self.device_started:
            self._start_device()
        with torch.inference_mode():
            for batch in batches + planner.finish():
                _, idx, x, layout, _ = self._assemble(batch, None)
                feats = self._forward(self.encoder.scale_features, x, layout, len(idx)).float().cpu().numpy()  # (n, D)
                yield from zip(idx, feats, [None] * len(idx))

    def iter(self, paths: list) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
        import torch

        paths = list(paths)
        self.compiler = CompileWhenItPays(self.encoder.scale_features, len(paths)) if self.compile else None
        scale_features = self.compiler or self.encoder.scale_features
        items = Background(self._produce(paths), depth=2, name="sliq-images")
        if not self.device_started:
            self._start_device()  # while the producer reads the first files
        trace.mark("warm-up")
        # On a GPU, the last batch launched is read back after the next launch, so the device always has work queued
        # (at once if no next batch is waiting: the first score comes early). Its features are copied to pinned
        # memory as it finishes, so reading it back waits for it alone, not for the batch launched after it.
        in_flight = None
        first = True  # the first batch read back is a trace mark

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
            nonlocal first
            idx, feats, done = launched
            if done is not None:
                done.synchronize()
            if self.compiler is not None:
                self.compiler.done(len(idx))
            if first:
                trace.mark("first batch", images=len(idx))
                first = False
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


def extract_features(encoder, paths, *, device: str = "cpu", batch_size: int | None = None,
                     progress: Callable | None = None, workers: int | None = None, resize_shorter: int | None = None,
                     canvas: bool | None = None) -> FeatureResult:
    """Quality features of every path; failed files are listed with their reason and get NaN rows. The options are
    FeatureExtractor's."""
    paths = [Path(p) for p in paths]
    dim = encoder.config.feature_dim
    feats = np.full((len(paths), dim), np.nan, dtype=np.float32)
    failed: dict[str, str] = {}
    extractor = FeatureExtractor(encoder, device=device, batch_size=batch_size, workers=workers,
                                 resize_shorter=resize_shorter, canvas=canvas)
    for i, f, err in extractor.iter(paths):
        if err is None:
            feats[i] = f
        else:
            failed[str(paths[i])] = err
        if progress is not None:
            progress(1)
    return FeatureResult(paths, feats, failed)
