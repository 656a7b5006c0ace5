"""The scoring engine behind `sliq score` and the Python API (`sliq_cli.api.load`): an encoder and a ridge head
loaded once; image files, PIL images and tensors -> scores on the head's MOS scale."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from sliq_cli import trace


class HeadRecords:
    """What scores mean and the records that carry them, from a head alone: a Scorer's, and that of a Ray run's
    driver, which holds no encoder (iqa/ray_score.py)."""

    def __init__(self, head, model_dir, fingerprint: str, device: str):
        self.head, self.model_dir, self.fingerprint, self.device = head, Path(model_dir), fingerprint, device

    @property
    def mos_scale(self) -> dict:
        """The head's MOS scale: {"min", "max", "higher_is_better"} of the scores it was fitted on."""
        return self.head.mos_scale

    def info(self) -> dict:
        """What scores mean, as `sliq score --format json` puts above its results."""
        return {"model": str(self.model_dir), "encoder_fingerprint": self.fingerprint, "head": self.head.name,
                "dataset": self.head.meta.get("dataset"), "mos_scale": self.mos_scale}

    def record(self, path, score: float) -> dict:
        """{"path", "score"}, plus "out_of_range": true when the score lies outside the head's MOS range (an
        extrapolation; the raw score is kept, never clamped)."""
        rec = {"path": str(path), "score": score}
        lo, hi = self.mos_scale.get("min"), self.mos_scale.get("max")
        if lo is not None and hi is not None and not lo <= score <= hi:
            rec["out_of_range"] = True
        return rec


def resolve_parts(model: str | None, head: str | None):
    """(model folder, config.json, head) for `--model` and `--head`, with no tensor of the encoder read: the head is
    found from config.json's fingerprint, so a wrong `--head` fails before the weights load. Old configs without a
    fingerprint give (folder, config, None): the head needs the loaded encoder's."""
    from sliq_cli.loading import find_model
    from sliq_cli.model.checkpoint import read_config

    model_dir = find_model(model)
    config = read_config(model_dir)
    fingerprint = config.get("fingerprint")
    return model_dir, config, _resolve_head(head, model_dir, config, fingerprint) if fingerprint else None


def _resolve_head(head: str | None, model_dir, config: dict, fingerprint: str):
    from sliq_cli.iqa.head import resolve_head

    return resolve_head(head, model_dir, fingerprint, default=config.get("config", {}).get("default_head"))


def load_parts(model: str | None = None, head: str | None = None, explain: bool = False) -> dict:
    """What a worker without the model's files needs to build its Scorer (Scorer.from_parts): config.json's dict,
    the weight files' bytes (checked against the fingerprint) and the head's arrays and metadata; plain data for
    Ray's object store, read without importing torch (a Ray driver never runs the model). With `explain`, also the
    text tower's files as bytes ({"text/NAME": bytes}; NoTextTowerError without one)."""
    import dataclasses

    from sliq_cli.iqa.explain import text_dir
    from sliq_cli.model.checkpoint import encoder_config, read_weight_files

    model_dir, config, ridge = resolve_parts(model, head)
    text = text_dir(model_dir) if explain else None  # the missing-tower error before any weights load
    weights, fingerprint = read_weight_files(model_dir)  # checked against config.json's fingerprint
    ridge = ridge or _resolve_head(head, model_dir, config, fingerprint)  # an old config without one
    ridge.check_features(encoder_config(config, model_dir))
    parts = {"source": str(model_dir), "config": config, "fingerprint": fingerprint, "weights": weights,
             "head": dataclasses.asdict(ridge)}
    if text is not None:
        parts["text"] = {f"{text.name}/{f.name}": f.read_bytes() for f in sorted(text.iterdir()) if f.is_file()}
    return parts


class Scorer(HeadRecords):
    """A frozen encoder and a ridge head. Build it with `Scorer.load` (or `sliq_cli.api.load`)."""

    def __init__(self, encoder, head, model_dir: Path, device: str, **options):
        """options: FeatureExtractor's (batch_size, workers, compile, max_side, canvas, channels_last, policy,
        run_size)."""
        from sliq_cli.iqa.features import FeatureExtractor

        super().__init__(head, model_dir, encoder.fingerprint, device)
        # a head fitted under a rescaling protocol (SPAQ) must see images rescaled the same way
        resize_shorter = head.meta.get("feature_spec", {}).get("resize_shorter")
        self.extractor = FeatureExtractor(encoder, device=device, resize_shorter=resize_shorter, **options)
        self.encoder = self.extractor.encoder  # its fused copy: the same features and embedding, one copy in memory

    @classmethod
    def load(cls, model: str | None = None, head: str | None = None, device: str = "auto", **options) -> Scorer:
        """Resolve the model and the head, then load the weights. The head is found from config.json's fingerprint
        before any tensor is read, so a wrong `--head` fails at once instead of after the model has loaded."""
        from sliq_cli.iqa.features import resolve_device
        from sliq_cli.model.checkpoint import load_encoder

        model_dir, config, ridge = resolve_parts(model, head)
        encoder = None if ridge else load_encoder(model_dir, device=resolve_device(device))  # an old config
        ridge = ridge or _resolve_head(head, model_dir, config, encoder.fingerprint)
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

    @classmethod
    def from_parts(cls, parts: dict, device: str = "auto", **options) -> Scorer:
        """The Scorer that `load_parts` describes, built from memory (a Ray worker): no file of the model is read."""
        from sliq_cli.iqa.features import resolve_device
        from sliq_cli.iqa.head import RidgeHead
        from sliq_cli.model.checkpoint import build_encoder, state_from_weight_files

        device = resolve_device(device)
        state = state_from_weight_files(parts["weights"], parts["source"])
        encoder = build_encoder(parts["config"], state, parts["source"], device)
        return cls(encoder, RidgeHead(**parts["head"]), Path(parts["source"]), device, **options)

    def records(self, paths: Iterable) -> Iterator[dict]:
        """JSON-ready results, one per path, in completion order (equal image sizes batch together):
        {"path", "score"} (+ "out_of_range": true), or {"path", "score": None, "error": reason}."""
        paths = [Path(p) for p in paths]
        for i, feat, err in self.extractor.iter(paths):
            if err is not None:
                yield {"path": str(paths[i]), "score": None, "error": err}
            else:
                yield self.record(paths[i], float(self.head.predict(feat[None])[0]))

    def score_decoded(self, images: list) -> list[tuple[float | None, str | None]]:
        """(score, None) or (None, reason) for each decoded (H, W, 3) uint8 image, in order, for images decoded
        elsewhere (Ray tasks): batched as files are (FeatureExtractor.decoded)."""
        out: list = [None] * len(images)
        for i, feat, err in self.extractor.decoded(images):
            out[i] = (None, err) if err is not None else (float(self.head.predict(feat[None])[0]), None)
        return out

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
