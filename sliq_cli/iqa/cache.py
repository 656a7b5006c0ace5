"""On-disk cache of quality features, so the protocol extracts each image once per encoder.

Layout under `sliq_cli.paths.features_cache_dir()`:

    <fingerprint[:16]>-<spec digest[:12]>/index.json      {"format": "sliq-feature-cache", "format_version": 1,
                                                            "fingerprint", "spec", "dim",
                                                            "entries": {sha256 of image bytes: [shard, row]}}
    <fingerprint[:16]>-<spec digest[:12]>/<shard>.safetensors   tensor "features" (n, dim) float32

Keys are the encoder fingerprint, the feature spec (everything else that changes the numbers: preprocessing,
scales, load-time resizing, precision) and the sha256 of each image file's bytes, so renamed or copied images hit
and edited ones miss. Shards and the index are written atomically; concurrent writers merge into the index they
re-read just before writing, so at worst a shard goes unreferenced, never a wrong feature.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Callable

import numpy as np

from sliq_cli.atomic import atomic_save_safetensors, atomic_write_json
from sliq_cli.digest import sha256_file
from sliq_cli.paths import features_cache_dir

FORMAT = "sliq-feature-cache"
FORMAT_VERSION = 1


def feature_spec(encoder, device: str = "cpu", resize_shorter: int | None = None) -> dict:
    """What besides the weights determines an image's features (CUDA runs the encoder in bf16)."""
    return {
        "kind": "quality_features",
        "preprocess": encoder.config.preprocess.to_dict(),
        "features": encoder.config.features.to_dict(),
        "dim": encoder.config.feature_dim,
        "precision": "bf16" if str(device).startswith("cuda") else "fp32",
        "resize_shorter": resize_shorter,
    }


class FeatureCache:
    def __init__(self, fingerprint: str, spec: dict, root: str | os.PathLike | None = None):
        self.fingerprint = fingerprint
        self.spec = spec
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        self.dir = Path(root or features_cache_dir()) / f"{fingerprint[:16]}-{digest[:12]}"
        self.index_path = self.dir / "index.json"

    def _entries(self) -> dict[str, list]:
        try:
            index = json.loads(self.index_path.read_text())
        except (OSError, ValueError):
            return {}  # absent or unreadable: a cache miss, never an error
        if index.get("format") != FORMAT or index.get("fingerprint") != self.fingerprint or index.get("spec") != self.spec:
            return {}
        return index.get("entries", {})

    def get(self, digests: list[str]) -> dict[str, np.ndarray]:
        """Cached features of the digests that have them: {digest: (dim,) float32}."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        entries = self._entries()
        by_shard: dict[str, list[tuple[str, int]]] = {}
        for d in set(digests):
            if d in entries:
                shard, row = entries[d]
                by_shard.setdefault(shard, []).append((d, row))
        out = {}
        for shard, wanted in by_shard.items():
            try:
                feats = load_file(str(self.dir / shard))["features"]  # (n, dim)
            except (OSError, KeyError, SafetensorError):
                continue
            out.update({d: feats[row] for d, row in wanted if row < len(feats)})
        return out

    def put(self, digests: list[str], features: np.ndarray) -> None:
        """Store features (N, dim) of images with these digests as one new shard."""
        import torch

        if not digests:
            return
        shard = f"shard-{uuid.uuid4().hex[:16]}.safetensors"
        atomic_save_safetensors(self.dir / shard, {"features": torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))})
        entries = self._entries()
        entries.update({d: [shard, i] for i, d in enumerate(digests)})
        atomic_write_json(self.index_path, {"format": FORMAT, "format_version": FORMAT_VERSION, "fingerprint": self.fingerprint,
                                            "spec": self.spec, "dim": int(features.shape[1]), "entries": entries})


def cached_features(encoder, paths, device: str = "cpu", batch_size: int | None = None, resize_shorter: int | None = None,
                    progress: Callable[[int], None] | None = None, use_cache: bool = True):
    """`extract_features` with the disk cache in front: only images not seen before go through the encoder.

    Returns a FeatureResult in the order of `paths`; files that cannot be read or decoded are in `.failed`.
    """
    from sliq_cli.iqa.features import FeatureResult

    paths = [Path(p) for p in paths]
    dim = encoder.config.feature_dim
    if not use_cache or not encoder.fingerprint:  # an encoder never saved has no identity to key a cache by
        return _extract(encoder, paths, device, batch_size, resize_shorter, progress)
    cache = FeatureCache(encoder.fingerprint, feature_spec(encoder, device, resize_shorter))
    feats = np.full((len(paths), dim), np.nan, dtype=np.float32)
    failed: dict[str, str] = {}
    digests: list[str | None] = []
    for p in paths:
        try:
            digests.append(sha256_file(p))  # an image's cache key: its bytes' sha256
        except OSError as err:
            digests.append(None)
            failed[str(p)] = f"cannot read: {err.strerror or err}"
    hits = cache.get([d for d in digests if d is not None])
    todo = []
    for i, d in enumerate(digests):
        if d in hits:
            feats[i] = hits[d]
        elif d is not None:
            todo.append(i)
    if progress is not None and len(paths) > len(todo):
        progress(len(paths) - len(todo))
    if todo:
        fresh = _extract(encoder, [paths[i] for i in todo], device, batch_size, resize_shorter, progress)
        feats[todo] = fresh.features
        failed.update(fresh.failed)
        ok = fresh.ok
        new = {digests[i]: row for i, row, good in zip(todo, fresh.features, ok) if good}
        cache.put(list(new), np.stack(list(new.values())) if new else np.empty((0, dim), np.float32))
    return FeatureResult(paths, feats, failed)


def _extract(encoder, paths, device, batch_size, resize_shorter, progress):
    from sliq_cli.iqa.features import extract_features

    return extract_features(encoder, paths, device=device, batch_size=batch_size, progress=progress,
                            resize_shorter=resize_shorter)
