"""The library function behind `sliq score`: image files -> quality scores with an encoder and a ridge head."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


@dataclass
class ScoreResult:
    path: str
    score: float | None
    error: str | None = None


@dataclass
class ScoreRun:
    """What is being scored with what; `results` streams ScoreResults in completion order."""

    model_dir: Path
    fingerprint: str
    head: object  # RidgeHead
    device: str
    results: Iterator[ScoreResult]


def score_images(paths: list, model: str | None = None, head: str | None = None, device: str = "auto",
                 batch_size: int = 8, workers: int | None = None, compile: bool = False) -> ScoreRun:
    """Resolve the model and head (errors raise before any image is read), then stream scores lazily."""
    from sliq_cli.iqa.features import FeatureExtractor, resolve_device
    from sliq_cli.iqa.head import resolve_head
    from sliq_cli.model.checkpoint import load_encoder
    from sliq_cli.model.resolve import resolve_model

    device = resolve_device(device)
    model_dir = resolve_model(model)
    encoder = load_encoder(model_dir, device=device)
    ridge = resolve_head(head, model_dir, encoder.fingerprint, default=encoder.config.default_head)
    if ridge.feature_dim != encoder.config.feature_dim:
        from sliq_cli.iqa.head import HeadError

        raise HeadError(f"head {ridge.name!r} expects {ridge.feature_dim}-d features; this model gives {encoder.config.feature_dim}")
    # a head fitted under a rescaling protocol (SPAQ) must see images rescaled the same way
    resize_shorter = ridge.meta.get("feature_spec", {}).get("resize_shorter")
    extractor = FeatureExtractor(encoder, device, batch_size, workers, resize_shorter, compile)
    paths = [Path(p) for p in paths]

    def results() -> Iterator[ScoreResult]:
        for i, feat, err in extractor.iter(paths):
            if err is not None:
                yield ScoreResult(str(paths[i]), None, err)
            else:
                yield ScoreResult(str(paths[i]), float(ridge.predict(feat[None])[0]))

    return ScoreRun(model_dir, encoder.fingerprint, ridge, device, results())
