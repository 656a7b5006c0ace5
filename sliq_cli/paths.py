"""Where sliq keeps things. Nothing here touches the disk at import time."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def sliq_home() -> Path:
    """User data root: $SLIQ_HOME, else $XDG_CACHE_HOME/sliq, else ~/.cache/sliq."""
    if os.environ.get("SLIQ_HOME"):
        return Path(os.environ["SLIQ_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "sliq"


def user_heads_dir(fingerprint: str) -> Path:
    """Heads fitted by `sliq fit-head` for the encoder with this fingerprint."""
    return sliq_home() / "heads" / fingerprint[:16]


def features_cache_dir() -> Path:
    return sliq_home() / "features"


def embedded_weights_dir() -> Path | None:
    """The repository's weights/ folder, installed as the data package `sliq_cli.weights` (editable or not), or,
    running from a checkout without installing (PYTHONPATH=checkout), the checkout's own weights/."""
    spec = importlib.util.find_spec("sliq_cli.weights")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    checkout = Path(__file__).resolve().parents[1]
    return checkout / "weights" if (checkout / "pyproject.toml").is_file() else None


def data_root(explicit: str | os.PathLike | None = None) -> Path | None:
    """Root folder of IQA datasets: --data-root, else $SLIQ_DATA."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("SLIQ_DATA"):
        return Path(os.environ["SLIQ_DATA"]).expanduser()
    return None
