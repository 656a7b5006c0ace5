"""Ridge regression heads (paper III-B): frozen-encoder features -> mean opinion score.

A head is one safetensors file: tensors `weight (D,)`, `bias ()`, `feature_mean (D,)`, `feature_std (D,)`, and the
metadata {"format": "sliq-head", "head": "<JSON>"} whose JSON records the encoder fingerprint, the feature spec, the
MOS scale, the dataset, the ridge alpha and the fit statistics. Any safetensors reader can open it; sliq reads it
with sliq_cli.model.headfile.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sliq_cli.model.headfile import FORMAT, HeadError, read_head_file


@dataclass
class RidgeHead:
    weight: np.ndarray  # (D,)
    bias: float
    feature_mean: np.ndarray  # (D,)
    feature_std: np.ndarray  # (D,)
    meta: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, alpha: float, meta: dict | None = None) -> RidgeHead:
        """Ridge on standardised features (sklearn), stored as one affine map."""
        from sklearn.linear_model import Ridge

        X = np.asarray(X, dtype=np.float64)
        mean = X.mean(axis=0)
        std = X.std(axis=0)
        std[std < 1e-12] = 1.0  # constant features carry nothing; avoid dividing by zero
        ridge = Ridge(alpha=alpha).fit((X - mean) / std, np.asarray(y, dtype=np.float64))
        meta = dict(meta or {})
        meta.update(alpha=float(alpha), n_train=int(len(y)), feature_dim=int(X.shape[1]))
        return cls(ridge.coef_.astype(np.float64), float(ridge.intercept_), mean, std, meta)

    @property
    def feature_dim(self) -> int:
        return int(self.weight.shape[0])

    @property
    def name(self) -> str:
        return self.meta.get("name", "")

    @property
    def mos_scale(self) -> dict:
        return self.meta.get("mos_scale", {})

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.feature_dim:
            raise HeadError(f"head {self.name!r} expects {self.feature_dim}-d features, got shape {X.shape}")
        return (X - self.feature_mean) / self.feature_std @ self.weight + self.bias

    def check_encoder(self, fingerprint: str, source: str = "") -> None:
        """Refuse to apply the head to an encoder other than the one it was fitted on."""
        expected = self.meta.get("encoder_fingerprint")
        if expected and expected != fingerprint:
            raise HeadError(
                f"head {self.name!r} was fitted on encoder {expected[:12]}, but the model {source or ''} is "
                f"{fingerprint[:12]}; fit a head for this model with `sliq fit-head`"
            )

    def check_features(self, config) -> None:
        """Refuse an encoder whose quality features differ from those the head was fitted on (`config`: its
        EncoderConfig). The same trunk can feed several feature specs, so the fingerprint alone cannot tell."""
        if self.feature_dim != config.feature_dim:
            raise HeadError(f"head {self.name!r} expects {self.feature_dim}-d features; this model gives "
                            f"{config.feature_dim}")
        spec, model = self.meta.get("feature_spec", {}), config.features.to_dict()
        recorded = {k: spec[k] for k in model if k in spec}  # heads before feature specs record only "scales"
        if recorded != {k: model[k] for k in recorded}:
            raise HeadError(f"head {self.name!r} was fitted on features {recorded}; this model's config gives "
                            f"{ {k: model[k] for k in recorded} }: fit a head for it with `sliq fit-head`")

    def save(self, path) -> Path:
        import torch

        from sliq_cli.atomic import atomic_save_safetensors

        path = Path(path)
        meta = dict(self.meta)
        meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        tensors = {
            "weight": torch.from_numpy(self.weight.astype(np.float32)),
            "bias": torch.tensor(self.bias, dtype=torch.float32),
            "feature_mean": torch.from_numpy(self.feature_mean.astype(np.float32)),
            "feature_std": torch.from_numpy(self.feature_std.astype(np.float32)),
        }
        atomic_save_safetensors(path, tensors, metadata={"format": FORMAT, "head": json.dumps(meta)})
        return path

    @classmethod
    def load(cls, path) -> RidgeHead:
        t, meta = read_head_file(path)
        return cls(
            t["weight"].astype(np.float64),
            float(t["bias"]),
            t["feature_mean"].astype(np.float64),
            t["feature_std"].astype(np.float64),
            meta,
        )


def head_search_path(name: str, model_dir, fingerprint: str) -> list[Path]:
    """Where `--head NAME` is looked for, in order: the model's own heads/, then the user's heads for this encoder."""
    from sliq_cli.paths import user_heads_dir

    return [Path(model_dir) / "heads" / f"{name}.safetensors", user_heads_dir(fingerprint) / f"{name}.safetensors"]


def user_head_path(name: str, fingerprint: str) -> Path:
    """Where `sliq fit-head --name NAME` saves a head for the encoder with this fingerprint."""
    from sliq_cli.paths import user_heads_dir

    return user_heads_dir(fingerprint) / f"{name}.safetensors"


def resolve_head(spec: str | None, model_dir, fingerprint: str, default: str | None = None) -> RidgeHead:
    """Find and load the head for `--head SPEC` (a file or a name); checks it belongs to this encoder."""
    name = spec or default
    if name is None:
        raise HeadError(
            f"the model at {model_dir} has no default head; give --head NAME (fit one with "
            "`sliq fit-head --mos CSV --images DIR --name NAME`, or get one with `sliq pull REPO_ID`)"
        )
    as_path = Path(name)
    if as_path.suffix == ".safetensors" or as_path.is_file():
        if not as_path.is_file():
            raise HeadError(f"{as_path}: no such head file")
        head = RidgeHead.load(as_path)
    else:
        candidates = head_search_path(name, model_dir, fingerprint)
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise HeadError(
                f"no head named {name!r} for this model (looked in {', '.join(str(c.parent) for c in candidates)}). "
                f"Fit one with `sliq fit-head --mos CSV --images DIR --name {name}` or get one with `sliq pull REPO_ID`"
            )
        head = RidgeHead.load(found)
    head.check_encoder(fingerprint, str(model_dir))
    return head
