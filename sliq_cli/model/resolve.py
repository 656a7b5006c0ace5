"""Which model folder `--model SPEC` means: a local folder, the embedded default, a registered encoder with its
ImageNet trunk, or a Hub repository, which the caller's `hub` step fetches (sliq_cli.hub.pull.resolve_hub_model:
the local Hub cache, then the Hub), so that model/ needs nothing from hub/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sliq_cli.errors import SliqError
from sliq_cli.paths import embedded_weights_dir

DEFAULT = "default"


class ModelNotFoundError(SliqError):
    """`--model SPEC` names no model: no such folder, not a model folder, or no default installed."""


ModelNotFound = ModelNotFoundError  # the name before #29, still imported by code written against it


def embedded_model_dir() -> Path | None:
    """The default model shipped in weights/, if one is there (it arrives with a trained release)."""
    d = embedded_weights_dir()
    return d if d is not None and (d / "config.json").is_file() else None


def resolve_model(spec: str | None, hub: Callable[[str], Path] | None = None) -> Path:
    """Return the folder of the model named by `spec` (None or "default" = the embedded default; "NAME@imagenet" =
    registered encoder NAME with its ImageNet trunk; "ORG/NAME[@REVISION]" = what `hub` returns for it)."""
    if spec in (None, "", DEFAULT):
        d = embedded_model_dir()
        if d is None:
            raise ModelNotFoundError(
                "no default model is installed with this copy of sliq. Give --model with a model folder "
                "(`sliq pretrain` exports one to RUN/export), or a Hub repository (`sliq pull ORG/NAME`)"
            )
        return d
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    from sliq_cli.model.imagenet import SUFFIX, imagenet_model_dir

    if spec.endswith(SUFFIX):  # a registered encoder with its ImageNet trunk, frozen (no SLIQUE training)
        return imagenet_model_dir(spec[: -len(SUFFIX)])
    if path.exists():
        raise ModelNotFoundError(f"{spec}: not a model folder (expected a folder with config.json and model.safetensors)")
    if _looks_like_repo_id(spec) and hub is not None:
        return hub(spec)
    raise ModelNotFoundError(f"{spec}: no such model folder" + (", and not a Hub repository id (ORG/NAME)" if hub else ""))


def _looks_like_repo_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~"))
