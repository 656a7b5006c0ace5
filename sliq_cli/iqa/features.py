"""Quality features of image files at full resolution, batched by size, streamed.

Images are not resized to a fixed size (resizing changes perceived quality); images of equal size share a batch,
odd sizes run alone. Files are read and decoded ahead of the model by a thread pool; on CUDA, JPEGs are decoded on
the GPU (nvJPEG) and the model runs in bf16 autocast with channels_last. A file that fails to load yields an error
for that file only.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

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


class FeatureExtractor:
    """Streams (index, feature | None, error | None) for a list of image paths, in completion order."""

    def __init__(self, encoder, device: str = "cpu", batch_size: int = 8, workers: int | None = None,
                 resize_shorter: int | None = None):
        self.encoder = encoder
        self.resize_shorter = resize_shorter  # a dataset protocol's fixed rescale (SPAQ: shorter side 512)
        self.device = device
        self.batch_size = max(1, batch_size)
        self.workers = workers or min(8, os.cpu_count() or 1)
        self.max_pixels = encoder.config.preprocess.max_pixels
        self.cuda = device.startswith("cuda")

    # -- loading ---------------------------------------------------------------------------------------------
    def _load_cpu(self, path):
        """(3, H, W) uint8 CPU tensor, or ImageLoadError."""
        try:
            return pil_to_tensor(load_image(path, self.max_pixels))
        except ImageLoadError as e:
            return e

    def _load(self, path):
        """On CUDA, JPEG bytes are handed to nvJPEG; everything else (and any JPEG it rejects) decodes on the CPU."""
        if self.cuda and is_jpeg(path):
            try:
                data = Path(path).read_bytes()
            except OSError:
                return self._load_cpu(path)  # gives the precise per-file error
            if data:
                return ("jpeg", path, data)
        return self._load_cpu(path)

    def _decode_gpu(self, items):
        """Decode a list of ("jpeg", path, bytes) on the GPU; per-file CPU fallback for what nvJPEG refuses."""
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        datas = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for _, _, d in items]
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

    # -- the model -------------------------------------------------------------------------------------------
    def _forward(self, batch: list):
        """Launch the model on a batch; returns the (B, D) features still on the device (no host sync here)."""
        import torch

        x = torch.stack([t.to(self.device, non_blocking=True) for t in batch]).float().div_(255.0)  # (B, 3, H, W)
        if self.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                feats = self.encoder.quality_features(x)
        else:
            feats = self.encoder.quality_features(x)
        return feats  # (B, D)

    def _fit(self, t):
        """Apply the protocol's shorter-side rescale, then bound the size by max_pixels (antialiased, on t's device)."""
        import torch.nn.functional as F

        h, w = t.shape[-2:]
        s = self.resize_shorter / min(h, w) if self.resize_shorter else 1.0
        s = min(s, (self.max_pixels / (h * w)) ** 0.5)
        if s == 1.0:
            return t
        x = F.interpolate(t[None].float(), size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear", antialias=True)
        return x[0].round().clamp(0, 255).byte()

    def iter(self, paths: list) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
        import torch

        self.encoder.to(self.device).eval()
        if self.cuda:
            self.encoder.to(memory_format=torch.channels_last)
        window = self.batch_size * 4  # decoded images held at most, before the fullest bucket is flushed
        buckets: OrderedDict[tuple, list] = OrderedDict()
        pending = 0
        jpegs: list = []  # (index, item) awaiting GPU decode
        in_flight = None  # (indices, device features) of the last batch launched: read back only after the next
        # launch, so that on a GPU the host decodes and batches while the device computes

        def read_back(batch):
            idx, feats = batch
            yield from zip(idx, feats.float().cpu().numpy(), [None] * len(idx))

        def run(key):
            nonlocal pending, in_flight
            idx, tensors = zip(*buckets.pop(key))
            pending -= len(idx)
            previous, in_flight = in_flight, (idx, self._forward(list(tensors)))
            if previous is not None:
                yield from read_back(previous)

        def add(i, t):
            nonlocal pending
            key = tuple(t.shape)
            buckets.setdefault(key, []).append((i, t))
            pending += 1
            if len(buckets[key]) >= self.batch_size:
                yield from run(key)
            elif pending >= window:
                yield from run(max(buckets, key=lambda k: len(buckets[k])))

        def decode_jpegs():
            decoded = self._decode_gpu([item for _, item in jpegs])
            done = [(i, t) for (i, _), t in zip(jpegs, decoded)]
            jpegs.clear()
            for i, t in done:
                if isinstance(t, ImageLoadError):
                    yield i, None, t.reason
                else:
                    yield from add(i, self._fit(t))

        with torch.inference_mode(), ThreadPoolExecutor(self.workers) as pool:
            for i, loaded in enumerate(_prefetch(pool, self._load, paths, depth=window + self.workers)):
                if isinstance(loaded, ImageLoadError):
                    yield i, None, loaded.reason
                elif isinstance(loaded, tuple):
                    jpegs.append((i, loaded))
                    if len(jpegs) >= self.batch_size:
                        yield from decode_jpegs()
                else:
                    yield from add(i, self._fit(loaded))
            if jpegs:
                yield from decode_jpegs()
            while buckets:
                yield from run(next(iter(buckets)))
            if in_flight is not None:
                yield from read_back(in_flight)


def _prefetch(pool: ThreadPoolExecutor, fn: Callable, items: Iterable, depth: int):
    """pool.map with bounded read-ahead, so a folder of a million files never sits decoded in memory."""
    from collections import deque

    queue: deque = deque()
    for item in items:
        queue.append(pool.submit(fn, item))
        if len(queue) >= depth:
            yield queue.popleft().result()
    while queue:
        yield queue.popleft().result()


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
