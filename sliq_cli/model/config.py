"""Encoder configuration: architecture and input preprocessing live together so training and scoring agree."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

TRUNKS = ("resnet18", "resnet34", "resnet50", "resnet101")


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
    # Quality features: pooled trunk features of the image at each scale, concatenated (CONTRIQUE, SLIQUE release).
    scales: tuple[float, ...] = (1.0, 0.5)
    # Images above this many pixels are downscaled (antialiased) before scoring so memory stays bounded.
    max_pixels: int = 4096 * 4096

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "scales": list(self.scales), "max_pixels": self.max_pixels}

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessConfig:
        cfg = strict_from_dict(cls, data, "preprocess")
        return dataclasses.replace(
            cfg, mean=tuple(cfg.mean), std=tuple(cfg.std), scales=tuple(float(s) for s in cfg.scales)
        )


@dataclass(frozen=True)
class EncoderConfig:
    """SLIQUE image encoder F (paper IV-A): ResNet trunk -> adaptive average pool -> 2-layer MLP -> embed_dim."""

    name: str = "slique-resnet50"
    trunk: str = "resnet50"
    hidden_dim: int = 2048
    embed_dim: int = 512
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    # Head used by `sliq score` when --head is not given (a name under the model's heads/ folder).
    default_head: str | None = None

    def __post_init__(self):
        if self.trunk not in TRUNKS:
            raise ValueError(f"unknown trunk {self.trunk!r} (choose from {', '.join(TRUNKS)})")

    @property
    def trunk_dim(self) -> int:
        return 512 if self.trunk in ("resnet18", "resnet34") else 2048

    @property
    def feature_dim(self) -> int:
        return self.trunk_dim * len(self.preprocess.scales)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["preprocess"] = self.preprocess.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict) -> EncoderConfig:
        data = dict(data)
        pre = PreprocessConfig.from_dict(data.pop("preprocess", {}))
        return dataclasses.replace(strict_from_dict(cls, data, "encoder config"), preprocess=pre)
