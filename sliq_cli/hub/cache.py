"""The local Hugging Face Hub cache as sliq uses it: where it is, and the sliq model a repo's revision has in it.

The cache is huggingface_hub's own, kept by huggingface_hub (snapshot_download, scan_cache_dir), so a model pulled
by sliq is also visible to `hf` tooling and vice versa. huggingface_hub reads HF_ENDPOINT, HF_HOME, HF_HUB_CACHE
and HF_HUB_OFFLINE once, when it is first imported; sliq reads them on every call and passes them explicitly, so
they can change within one process (tests, notebooks).
"""

from __future__ import annotations

import os
from pathlib import Path

from sliq_cli.errors import UsageError
from sliq_cli.hub.layout import LayoutError, ModelLayout, check_layout

_TRUE = {"1", "ON", "YES", "TRUE"}


def hub_endpoint() -> str:
    """$HF_ENDPOINT, else the endpoint huggingface_hub was configured with."""
    if os.environ.get("HF_ENDPOINT"):
        return os.environ["HF_ENDPOINT"].rstrip("/")
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_cache_dir() -> Path:
    """$HF_HUB_CACHE, else $HF_HOME/hub, else huggingface_hub's default (~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """True when $HF_HUB_OFFLINE (or $TRANSFORMERS_OFFLINE) is set: no request may leave the machine."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in _TRUE


def network_errors() -> tuple[type[BaseException], ...]:
    """What a failed exchange with the Hub raises: OSError (sockets, timeouts, huggingface_hub's HTTP, offline and
    not-in-cache errors), the HTTP library's own base error (httpx before huggingface_hub 2, httpx2 since: read off
    HfHubHTTPError's bases, not imported by name) and the Xet transfer error. Anything else is a bug or an API
    change, and must not be reported as the network."""
    from huggingface_hub.errors import HfHubHTTPError, XetDownloadError

    return (OSError, XetDownloadError, *(b for b in HfHubHTTPError.__bases__ if b is not OSError))


def parse_repo_spec(spec: str) -> tuple[str, str | None] | None:
    """"owner/name" or "owner/name@revision" -> (repo_id, revision or None); anything else -> None."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo_id, at, revision = spec.partition("@")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return None
    return (repo_id, revision or None) if "/" in repo_id and (revision or not at) else None


def check_repo_id(repo_id: str) -> None:
    if parse_repo_spec(repo_id) != (repo_id, None):
        raise UsageError(f"{repo_id!r} is not a Hub repository id (expected owner/name)")


def cached_layout(repo_id: str, revision: str = "main") -> ModelLayout | None:
    """The sliq model of `repo_id` at `revision` (branch, tag or commit) in the cache, without a request; None when
    the cache has no snapshot for it or the snapshot is not a loadable sliq model."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError

    try:
        snapshot = snapshot_download(repo_id, revision=revision, cache_dir=hub_cache_dir(), local_files_only=True)
    except IncompleteSnapshotError as e:  # pulled with --include: whether it is a usable model is check_layout's call
        snapshot = e.snapshot_path
    except LocalEntryNotFoundError:
        return None
    try:
        return check_layout(Path(snapshot))
    except LayoutError:
        return None
