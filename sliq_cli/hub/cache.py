"""The local Hugging Face Hub cache, as sliq uses it: where it is, what it holds, and installing verified snapshots.

The layout is huggingface_hub's own (models--org--name/{blobs,snapshots/<commit>,refs/<revision>,trees}), so a
model pulled by sliq is also visible to `hf` tooling and vice versa. huggingface_hub reads HF_ENDPOINT, HF_HOME,
HF_HUB_CACHE and HF_HUB_OFFLINE once, when it is first imported; sliq reads them on every call and passes them
explicitly, so they can change within one process (tests, notebooks).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from sliq_cli.atomic import atomic_write_text
from sliq_cli.errors import UsageError
from sliq_cli.hub.layout import LayoutError, check_layout

# A repo id as the Hub accepts it (owner/name), optionally pinned to a revision with "@rev".
_REPO_SPEC = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+))?")
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


def parse_repo_spec(spec: str) -> tuple[str, str | None] | None:
    """"owner/name" or "owner/name@revision" -> (repo_id, revision or None); anything else -> None."""
    m = _REPO_SPEC.fullmatch(spec)
    if m is None or "--" in m["repo"] or ".." in m["repo"] or m["repo"].endswith("."):
        return None
    return m["repo"], m["rev"]


def check_repo_id(repo_id: str) -> None:
    if parse_repo_spec(repo_id) != (repo_id, None):
        raise UsageError(f"{repo_id!r} is not a Hub repository id (expected owner/name)")


def repo_storage(repo_id: str) -> Path:
    """models--owner--name inside the cache, as huggingface_hub names it."""
    return hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def cached_commit(repo_id: str, revision: str) -> str | None:
    """The commit `revision` (a branch, tag or commit sha) points at in the cache, or None if unknown here."""
    storage = repo_storage(repo_id)
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision if (storage / "snapshots" / revision).is_dir() else None
    ref = storage / "refs" / revision
    if not ref.is_file():
        return None
    commit = ref.read_text().strip()
    return commit if (storage / "snapshots" / commit).is_dir() else None


def cached_snapshot(repo_id: str, revision: str = "main") -> Path | None:
    """The cached snapshot folder of `repo_id` at `revision` if it holds a loadable sliq model, else None."""
    commit = cached_commit(repo_id, revision)
    if commit is None:
        return None
    snapshot = repo_storage(repo_id) / "snapshots" / commit
    try:
        check_layout(snapshot)
    except LayoutError:
        return None
    return snapshot


@dataclass
class CachedSnapshot:
    repo_id: str
    commit: str
    refs: list[str]
    path: Path


def iter_cached_snapshots() -> list[CachedSnapshot]:
    """Every model snapshot in the cache (sliq or not), with the refs that point at it."""
    root = hub_cache_dir()
    found = []
    for storage in sorted(root.glob("models--*--*")) if root.is_dir() else []:
        repo_id = storage.name[len("models--"):].replace("--", "/", 1)
        refs: dict[str, list[str]] = {}
        for ref in sorted((storage / "refs").rglob("*")) if (storage / "refs").is_dir() else []:
            if ref.is_file():
                refs.setdefault(ref.read_text().strip(), []).append(ref.relative_to(storage / "refs").as_posix())
        for snap in sorted((storage / "snapshots").iterdir()) if (storage / "snapshots").is_dir() else []:
            found.append(CachedSnapshot(repo_id, snap.name, refs.get(snap.name, []), snap))
    return found


def install_snapshot(staging_cache: Path, repo_id: str, revision: str, commit: str) -> Path:
    """Move a verified snapshot from a staging cache into the real one; returns the installed snapshot folder.

    Order matters for readers running meanwhile: blobs first, then the snapshot's links to them, then the tree
    listing, and the ref last, so following `refs/<revision>` never leads to a snapshot that is being filled.
    Snapshot links are relative (../../blobs/<etag>), so they stay valid after the move.
    """
    src = staging_cache / ("models--" + repo_id.replace("/", "--"))
    dst = repo_storage(repo_id)
    for sub in ("blobs", f"snapshots/{commit}", "trees"):
        if not (src / sub).is_dir():
            continue
        for item in sorted((src / sub).rglob("*")):
            if item.is_dir() and not item.is_symlink():
                continue
            target = dst / sub / item.relative_to(src / sub)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(item, target)
    if revision != commit:
        atomic_write_text(dst / "refs" / revision, commit)
    return dst / "snapshots" / commit
