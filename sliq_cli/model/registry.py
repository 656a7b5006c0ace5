"""Named encoder configurations and `create_model(name)`, in the manner of timm's registry."""

from __future__ import annotations

import dataclasses
from typing import Callable

from sliq_cli.model.config import EncoderConfig, PreprocessConfig

_REGISTRY: dict[str, Callable[[], EncoderConfig]] = {}


def register_model(fn: Callable[[], EncoderConfig]) -> Callable[[], EncoderConfig]:
    """Register a function returning an EncoderConfig under its function name (underscores become dashes)."""
    _REGISTRY[fn.__name__.replace("_", "-")] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_config(name: str, **overrides) -> EncoderConfig:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r} (registered: {', '.join(list_models())})")
    cfg = _REGISTRY[name]()
    known = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown option(s) for {name}: {', '.join(unknown)}")
    if isinstance(overrides.get("preprocess"), dict):
        overrides["preprocess"] = PreprocessConfig.from_dict(overrides["preprocess"])
    return dataclasses.replace(cfg, **overrides)


def create_model(name: str = "slique-resnet50", **overrides):
    """A randomly initialised image encoder of a registered configuration (the paper trains from scratch)."""
    from sliq_cli.model.encoder import ImageEncoder

    return ImageEncoder(model_config(name, **overrides))


@register_model
def slique_resnet50() -> EncoderConfig:
    """The paper's encoder: ResNet-50, 2-layer MLP (2048 -> 2048 -> 512)."""
    return EncoderConfig(name="slique-resnet50", trunk="resnet50", hidden_dim=2048, embed_dim=512)


@register_model
def slique_resnet18() -> EncoderConfig:
    """A small variant for quick experiments and tests (not in the paper)."""
    return EncoderConfig(name="slique-resnet18", trunk="resnet18", hidden_dim=512, embed_dim=512)
