"""Quality features of image files at full resolution, batched by size, streamed.

Images are not resized to a fixed size (resizing changes perceived quality); images of equal size share a batch,
odd sizes run alone. A producer thread reads files (a thread pool), decodes them (on CUDA: JPEGs on the GPU with
nvJPEG, on a side stream) and assembles batches, while the calling thread runs the model (on CUDA: bf16 autocast,
channels_last) with one batch in flight. So on a GPU, reading, decoding and the model overlap, and nothing the
producer waits for (file system, decoder) stalls the model. A file that fails to load yields an error for that file
only.
"""

from __future__ import annotations

import io
import os
import queue
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sliq_cli.images import ImageLoadError, is_jpeg, load_image, pil_to_tensor


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

    Image.open parses only the header (no pixel decoding); a header Pillow cannot parse is left to the decoders,
    whose CPU fallback reports it precisely.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # below 2x the limit: downscaled later
            Image.open(io.BytesIO(data)).close()
    except Image.DecompressionBombError as e:
        return ImageLoadError(str(path), f"refused as a possible decompression bomb ({e})")
    except (OSError, SyntaxError, ValueError):
        pass
    return None


_DONE = object()  # end of the producer's stream
# With --compile, the first few image sizes are compiled and captured as CUDA graphs; any further size runs eager.
# Each new size costs a graph capture (and the second one a dynamic-shape recompilation): a folder of dozens of sizes
# compiled throughout spent minutes capturing (bench/RESULTS.md), which no throughput gain repays.
COMPILED_SIZES = 4


class FeatureExtractor:
    """Streams (index, feature | None, error | None) for a list of image paths, in completion order."""

    def __init__(self, encoder, device: str = "cpu", batch_size: int = 8, workers: int | None = None,
                 resize_shorter: int | None = None, compile: bool = False, max_side: int | None = None):
        self.encoder = encoder.fuse_for_inference()
        self.resize_shorter = resize_shorter  # a dataset protocol's fixed rescale (SPAQ: shorter side 512)
        self.device = device
        self.batch_size = max(1, batch_size)
        self.workers = workers or min(8, os.cpu_count() or 1)
        self.max_pixels = encoder.config.preprocess.max_pixels
        self.max_side = max_side  # a user's cap on the longer side (e.g. on a CPU, where full resolution is slow)
        self.cuda = device.startswith("cuda")
        if compile and not self.cuda:
            from sliq_cli.errors import UsageError

            raise UsageError("--compile needs a CUDA device (torch.compile's CPU backend needs a C++ toolchain)")
        self.compile = compile

    # -- loading (producer side) -----------------------------------------------------------------------------
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

        h, w = t.shape[-2:]
        s = self.resize_shorter / min(h, w) if self.resize_shorter else 1.0
        s = min(s, (self.max_pixels / (h * w)) ** 0.5, self.max_side / max(h, w) if self.max_side else s)
        if s == 1.0:
            return t
        x = t.reshape(-1, *t.shape[-3:]).float()  # (B, 3, H, W)
        x = F.interpolate(x, size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear", antialias=True)
        x = x.reshape(*t.shape[:-2], *x.shape[-2:])
        return x.round().clamp(0, 255).byte() if t.dtype == torch.uint8 else x.clamp(0, 1)

    def _produce(self, paths: list, out: queue.Queue, stop: threading.Event) -> None:
        """Producer thread: puts ("error", i, reason) and ("batch", indices, (B, 3, H, W) uint8 on the device, ready
        event | None) on `out`, then _DONE; an exception is handed over as ("raise", exc)."""
        import torch

        def put(item) -> None:
            while not stop.is_set():
                try:
                    return out.put(item, timeout=0.1)
                except queue.Full:
                    continue

        stream = torch.cuda.Stream(self.device) if self.cuda else None
        window = self.batch_size * 4  # decoded images held at most, before the fullest bucket is flushed
        buckets: OrderedDict[tuple, list] = OrderedDict()
        pending = 0
        jpegs: list = []  # (index, item) awaiting GPU decode

        def flush(key) -> None:
            nonlocal pending
            idx, tensors = zip(*buckets.pop(key))
            pending -= len(idx)
            batch = torch.stack([t.to(self.device, non_blocking=True) for t in tensors])  # (B, 3, H, W) uint8
            ready = None
            if stream is not None:
                ready = torch.cuda.Event()
                ready.record(stream)
            put(("batch", idx, batch, ready))

        def add(i, t) -> None:
            nonlocal pending
            key = tuple(t.shape)
            buckets.setdefault(key, []).append((i, t))
            pending += 1
            if len(buckets[key]) >= self.batch_size:
                flush(key)
            elif pending >= window:
                flush(max(buckets, key=lambda k: len(buckets[k])))

        def decode_jpegs() -> None:
            decoded = self._decode_gpu([item for _, item in jpegs])
            done = [(i, t) for (i, _), t in zip(jpegs, decoded)]
            jpegs.clear()
            for i, t in done:
                if isinstance(t, ImageLoadError):
                    put(("error", i, t.reason))
                else:
                    add(i, self._fit(t))

        try:
            chunk = max(1, min(16, len(paths) // (4 * self.workers)))
            chunks = [paths[k : k + chunk] for k in range(0, len(paths), chunk)]
            with ThreadPoolExecutor(self.workers) as pool, torch.cuda.stream(stream) if stream else nullcontext():
                depth = (window + self.workers) // chunk + 1
                i = 0
                for loaded_chunk in _prefetch(pool, self._load_chunk, chunks, depth=depth):
                    for loaded in loaded_chunk:
                        if stop.is_set():
                            return
                        if isinstance(loaded, ImageLoadError):
                            put(("error", i, loaded.reason))
                        elif isinstance(loaded, tuple):
                            jpegs.append((i, loaded))
                            if len(jpegs) >= self.batch_size:
                                decode_jpegs()
                        else:
                            add(i, self._fit(loaded))
                        i += 1
                if jpegs:
                    decode_jpegs()
                while buckets:
                    flush(next(iter(buckets)))
            put(_DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(("raise", e))

    # -- the model (consumer side) ---------------------------------------------------------------------------
    def _forward(self, eager, compiled, batch):
        """Launch the model on a (B, 3, H, W) uint8 batch on the device: `compiled` (if any) for the first
        COMPILED_SIZES image sizes, `eager` otherwise. Returns the (B, D) features still on the device (no host
        sync here)."""
        import torch

        n = len(batch)
        x = batch.float().div_(255.0)  # (B, 3, H, W)
        size = tuple(x.shape[-2:])
        if compiled is not None and (size in self._compiled_sizes or len(self._compiled_sizes) < COMPILED_SIZES):
            self._compiled_sizes.add(size)
            if n < self.batch_size:
                # A short batch (the last of a size) is padded with copies of its last image, so a new batch size
                # never costs another compilation; the copies' features are dropped.
                x = torch.cat([x, x[-1:].expand(self.batch_size - n, -1, -1, -1)])
            # A CUDA graph's output is overwritten by its next replay: copy out what stays in flight.
            return self._run(compiled, x)[:n].clone()
        return self._run(eager, x)

    def _run(self, features, x):
        import torch

        if self.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return features(x)  # (B, D)
        return features(x)

    def features(self, x) -> np.ndarray:
        """Features of images already in memory, (B, 3, H, W) float in [0, 1], under the same size rules and precision
        as files get: (B, D) float32."""
        import torch

        with torch.inference_mode():
            return self._run(self.encoder.quality_features, self._fit(x.to(self.device))).float().cpu().numpy()

    def iter(self, paths: list) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
        import torch

        self.encoder.to(self.device).eval()
        if self.cuda:
            self.encoder.to(memory_format=torch.channels_last)
        # Compiled: ~30 s on the first batch and once more when a second image size makes the shapes dynamic; then
        # Inductor's fused kernels run the two-scale forward ~1.6x faster than eager on an H100, and CUDA graphs
        # ("reduce-overhead") replay each batch with one launch, so the host threads reading and decoding files
        # never hold up the model's kernel launches (bench/RESULTS.md).
        eager = self.encoder.quality_features
        compiled = torch.compile(eager, mode="reduce-overhead") if self.compile else None
        self._compiled_sizes: set[tuple[int, int]] = set()
        out: queue.Queue = queue.Queue(maxsize=2)
        stop = threading.Event()
        producer = threading.Thread(target=self._produce, args=(list(paths), out, stop), daemon=True,
                                    name="sliq-images")
        producer.start()
        # On a GPU, the last batch launched is read back only after the next launch, so the device always has work
        # queued.
        in_flight = None

        def read_back(batch):
            idx, feats = batch
            yield from zip(idx, feats.float().cpu().numpy(), [None] * len(idx))

        try:
            with torch.inference_mode():
                while (item := out.get()) is not _DONE:
                    if item[0] == "raise":
                        raise item[1]
                    if item[0] == "error":
                        yield item[1], None, item[2]
                        continue
                    _, idx, batch, ready = item
                    if ready is not None:
                        current = torch.cuda.current_stream(self.device)
                        current.wait_event(ready)
                        batch.record_stream(current)  # made on the producer's stream, used on this one
                    previous, in_flight = in_flight, (idx, self._forward(eager, compiled, batch))
                    if not self.cuda:  # computed already: nothing to overlap with
                        previous, in_flight = in_flight, None
                    if previous is not None:
                        yield from read_back(previous)
                if in_flight is not None:
                    yield from read_back(in_flight)
        finally:
            stop.set()  # a consumer that stops early (an error, a closed generator) releases the producer
            producer.join()


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


def extract_features(encoder, paths, device: str = "cpu", batch_size: int = 8, progress: Callable | None = None,
                     workers: int | None = None, resize_shorter: int | None = None) -> FeatureResult:
    """Quality features of every path; failed files are listed with their reason and get NaN rows."""
    paths = [Path(p) for p in paths]
    dim = encoder.config.feature_dim
    feats = np.full((len(paths), dim), np.nan, dtype=np.float32)
    failed: dict[str, str] = {}
    for i, f, err in FeatureExtractor(encoder, device, batch_size, workers, resize_shorter).iter(paths):
        if err is None:
            feats[i] = f
        else:
            failed[str(paths[i])] = err
        if progress is not None:
            progress(1)
    return FeatureResult(paths, feats, failed)
