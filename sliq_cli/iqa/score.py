"""The scoring engine behind `sliq score` and the Python API (`sliq_cli.api.load`): an encoder and a ridge head
loaded once; image files, PIL images and tensors -> scores on the head's MOS scale."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from sliq_cli import trace


class Scorer:
    """A frozen encoder and a ridge head. Build it with `Scorer.load` (or `sliq_cli.api.load`)."""

    def __init__(self, encoder, head, model_dir: Path, device: str, **options):
        """options: FeatureExtractor's (batch_size, workers, compile, max_side, canvas, channels_last, policy)."""
        from sliq_cli.iqa.features import FeatureExtractor

        self.head, self.model_dir, self.device = head, Path(model_dir), device
        # a head fitted under a rescaling protocol (SPAQ) must see images rescaled the same way
        resize_shorter = head.meta.get("feature_spec", {}).get("resize_shorter")
        self.extractor = FeatureExtractor(encoder, device=device, resize_shorter=resize_shorter, **options)
        self.encoder = self.extractor.encoder  # its fused copy: the same features and embedding, one copy in memory

    @classmethod
    def load(cls, model: str | None = None, head: str | None = None, device: str = "auto", **options) -> Scorer:
        """Resolve the model and the head, then load the weights. The head is found from config.json's fingerprint
        before any tensor is read, so a wrong `--head` fails at once instead of after the model has loaded."""
        from sliq_cli.iqa.features import resolve_device
        from sliq_cli.iqa.head import resolve_head
        from sliq_cli.model.checkpoint import load_encoder, read_config
        from sliq_cli.loading import find_model

        model_dir = find_model(model)
        config = read_config(model_dir)
        fingerprint = config.get("fingerprint")
        encoder = None if fingerprint else load_encoder(model_dir, device=resolve_device(device))  # an old config
        ridge = resolve_head(head, model_dir, fingerprint or encoder.fingerprint,
                             default=config.get("config", {}).get("default_head"))
        device = resolve_device(device)  # imports torch: after the checks that need none
        trace.mark("import")
        if device.startswith("cuda"):
            import torch

            torch.zeros(1, device=device)  # the CUDA context, apart from the model load in the trace
        trace.mark("cuda context")
        encoder = encoder or load_encoder(model_dir, device=device)  # checks the weights match the fingerprint
        ridge.check_features(encoder.config)
        scorer = cls(encoder, ridge, model_dir, device, **options)
        trace.mark("model loaded")
        return scorer

    @property
    def mos_scale(self) -> dict:
        """The head's MOS scale: {"min", "max", "higher_is_better"} of the scores it was fitted on."""
        return self.head.mos_scale

    def info(self) -> dict:
        """What scores mean, as `sliq score --format json` puts above its results."""
        return {"model": str(self.model_dir), "encoder_fingerprint": self.encoder.fingerprint, "head": self.head.name,
                "dataset": self.head.meta.get("dataset"), "mos_scale": self.mos_scale}

    def record(self, path, score: float) -> dict:
        """{"path", "score"}, plus "out_of_range": true when the score lies outside the head's MOS range (an
        extrapolation; the raw score is kept, never clamped)."""
        rec = {"path": str(path), "score": score}
        lo, hi = self.mos_scale.get("min"), self.mos_scale.get("max")
        if lo is not None and hi is not None and not lo <= score <= hi:
            rec["out_of_range"] = True
        return rec

    def records(self, paths: Iterable) -> Iterator[dict]:
        """JSON-ready results, one per path, in completion order (equal image sizes batch together):
        {"path", "score"} (+ "out_of_range": true), or {"path", "score": None, "error": reason}."""
        paths = [Path(p) for p in paths]
        for i, feat, err in self.extractor.iter(paths):
            if err is not None:
                yield {"path": str(paths[i]), "score": None, "error": err}
            else:
                yield self.record(paths[i], float(self.head.predict(feat[None])[0]))

    def score(self, x):
        """Scores on the head's MOS scale. x: a path, a PIL image or a (3, H, W) float tensor in [0, 1] -> float;
        a list of those or a (B, 3, H, W) tensor -> list of floats, in order. An unreadable file raises InputError."""
        import torch
        from PIL import Image

        from sliq_cli.images import pil_to_float, prepare_pil

        if isinstance(x, torch.Tensor):
            if x.ndim == 3:
                return self.score(x[None])[0]
            if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
                raise ValueError(f"expected a float (B, 3, H, W) or (3, H, W) tensor in [0, 1], got {x.dtype} {tuple(x.shape)}")
            return [float(s) for s in self.head.predict(self.extractor.features(x))]
        if isinstance(x, Image.Image):
            ex = self.extractor
            return self.score(pil_to_float(prepare_pil(x, ex.max_pixels, ex.max_side)))
        if isinstance(x, (str, os.PathLike)):
            return self.score([x])[0]
        items = list(x)  # once: a generator can be read only once
        if all(isinstance(p, (str, os.PathLike)) for p in items):
            return self._score_files(items)
        return [self.score(item) for item in items]

    __call__ = score  # metric(img), as pyiqa's metrics are called

    def _score_files(self, paths: list) -> list[float]:
        from sliq_cli.errors import InputError

        scores: dict[int, float] = {}
        for i, feat, err in self.extractor.iter([Path(p) for p in paths]):
            if err is not None:
                raise InputError(paths[i], err)
            scores[i] = float(self.head.predict(feat[None])[0])
        return [scores[i] for i in range(len(paths))]
