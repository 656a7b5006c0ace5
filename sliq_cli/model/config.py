"""Encoder configuration: architecture and input preprocessing live together so training and scoring agree."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# Channels of each trunk stage whose output quality features may pool; the last stage feeds the projector.
# (tests/test_model_trunks.py checks these against the built modules; kept here so configs need no torch.)
_RESNET_SMALL = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}
_RESNET_LARGE = {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}
_LITE_0_1 = {"stage1": 16, "stage2": 24, "stage3": 40, "stage4": 80, "stage5": 112, "stage6": 192, "stage7": 320,
             "head": 1280}
STAGE_DIMS: dict[str, dict[str, int]] = {
    "resnet18": _RESNET_SMALL, "resnet34": _RESNET_SMALL, "resnet50": _RESNET_LARGE, "resnet101": _RESNET_LARGE,
    "efficientnet-lite0": _LITE_0_1, "efficientnet-lite1": _LITE_0_1,
    "efficientnet-lite2": {"stage1": 16, "stage2": 24, "stage3": 48, "stage4": 88, "stage5": 120, "stage6": 208,
                           "stage7": 352, "head": 1280},
}
TRUNKS = tuple(STAGE_DIMS)
POOLINGS = ("mean", "std")


def strict_from_dict(cls, data: dict, where: str):
    """Build dataclass `cls` from `data`; an unknown key is an error, not silently ignored."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    return cls(**data)


@dataclass(frozen=True)
class PreprocessConfig:
    """How a [0, 1] RGB image becomes encoder input, and which scales feed the quality features."""

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # Images above this many pixels are downscaled (antialiased) before scoring so memory stays bounded.
    max_pixels: int = 4096 * 4096

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "max_pixels": self.max_pixels}

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessConfig:
        cfg = strict_from_dict(cls, data, "preprocess")
        return dataclasses.replace(cfg, mean=tuple(cfg.mean), std=tuple(cfg.std))


@dataclass(frozen=True)
class FeatureSpec:
    """What the ridge head reads (timm's pretrained_cfg idea: it travels with the weights).

    For each scale (the image resized by that factor), for each named trunk stage, each pooling of its feature map
    over space ("mean", "std"): one block, L2-normalised when `normalize` is "block"; blocks concatenated in that
    order (scale, stage, pooling). The paper's (CONTRIQUE's) features are the last stage, mean, scales 1 and 1/2.
    """

    stages: tuple[str, ...] = ("layer4",)
    pooling: tuple[str, ...] = ("mean",)
    scales: tuple[float, ...] = (1.0, 0.5)
    normalize: str = "block"  # "block" or "none"

    def __post_init__(self):
        for name, value in (("stages", self.stages), ("pooling", self.pooling), ("scales", self.scales)):
            if not value:
                raise ValueError(f"features: {name} must not be empty")
        bad = sorted(set(self.pooling) - set(POOLINGS))
        if bad:
            raise ValueError(f"features: unknown pooling {', '.join(bad)} (known: {', '.join(POOLINGS)})")
        if self.normalize not in ("block", "none"):
            raise ValueError(f"features: normalize is 'block' or 'none', not {self.normalize!r}")
        if any(not 0 < s <= 1 for s in self.scales):
            raise ValueError(f"features: scales must lie in (0, 1], got {list(self.scales)}")

    def to_dict(self) -> dict:
        return {"stages": list(self.stages), "pooling": list(self.pooling), "scales": list(self.scales),
                "normalize": self.normalize}

    @classmethod
    def from_dict(cls, data: dict) -> FeatureSpec:
        cfg = strict_from_dict(cls, data, "features")
        return dataclasses.replace(cfg, stages=tuple(cfg.stages), pooling=tuple(cfg.pooling),
                                   scales=tuple(float(s) for s in cfg.scales))


@dataclass(frozen=True)
class EncoderConfig:
    """SLIQUE image encoder F (paper IV-A): trunk -> adaptive average pool -> 2-layer MLP -> embed_dim.

    The paper's trunk is ResNet-50; EfficientNet-Lite trunks are sliq's pretrained-start family.
    """

    name: str = "slique-resnet50"
    trunk: str = "resnet50"
    hidden_dim: int = 2048
    embed_dim: int = 512
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    features: FeatureSpec = field(default_factory=FeatureSpec)
    # Head used by `sliq score` when --head is not given (a name under the model's heads/ folder).
    default_head: str | None = None

    def __post_init__(self):
        if self.trunk not in TRUNKS:
            raise ValueError(f"unknown trunk {self.trunk!r} (choose from {', '.join(TRUNKS)})")
        bad = sorted(set(self.features.stages) - set(STAGE_DIMS[self.trunk]))
        if bad:
            raise ValueError(f"features: {self.trunk} has no stage {', '.join(bad)} "
                             f"(stages: {', '.join(STAGE_DIMS[self.trunk])})")

    @property
    def trunk_dim(self) -> int:
        """Channels of the last stage, which the projector reads."""
        return list(STAGE_DIMS[self.trunk].values())[-1]

    @property
    def feature_dim(self) -> int:
        spec = self.features
        per_scale = sum(STAGE_DIMS[self.trunk][s] for s in spec.stages) * len(spec.pooling)
        return per_scale * len(spec.scales)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["preprocess"] = self.preprocess.to_dict()
        d["features"] = self.features.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict) -> EncoderConfig:
        data = dict(data)
        pre = dict(data.pop("preprocess", {}))
        features = data.pop("features", None)
        if features is None:  # format 1: the paper's features, with their scales kept under preprocess
            features = {"stages": [list(STAGE_DIMS[data.get("trunk", cls.trunk)])[-1]], "pooling": ["mean"],
                        "scales": pre.pop("scales", list(FeatureSpec.scales)), "normalize": "block"}
        data.update(preprocess=PreprocessConfig.from_dict(pre), features=FeatureSpec.from_dict(features))
        return strict_from_dict(cls, data, "encoder config")
