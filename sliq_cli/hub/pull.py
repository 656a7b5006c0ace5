"""`sliq pull`: fetch a sliq model from the Hugging Face Hub into huggingface_hub's cache, verified, all or nothing.

1. Resolve the revision to a commit and list the repository tree (sizes, git blob sha1, LFS sha256).
2. Refuse pickle files among the selected ones before a single byte of them is fetched.
3. Download with `snapshot_download` into a staging cache beside the real one (same filesystem).
4. Check every file against the listing ourselves (the client does not hash what it downloads), then the layout
   (config, weights' headers, heads' metadata, text tower).
5. Move the verified snapshot into the cache, the ref last. Any failure removes the staging cache, so an offline
   run later never sees a half-installed model.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sliq_cli.atomic import atomic_write_text
from sliq_cli.digest import sha256_file
from sliq_cli.errors import SliqError, UsageError
from sliq_cli.hub.cache import (
    cached_snapshot,
    check_repo_id,
    hub_cache_dir,
    hub_endpoint,
    hub_offline,
    install_snapshot,
    parse_repo_spec,
    repo_storage,
)
from sliq_cli.hub.layout import LayoutError, check_layout, is_pickle

# Always fetched, whatever --include says: without them there is no model to load.
CORE_PATTERNS = ("config.json", "model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors", "README.md")
_CHUNK = 1 << 20


@dataclass
class RemoteFile:
    """One file of the repository tree, as the Hub reports it."""

    path: str
    size: int
    blob_sha1: str
    lfs_sha256: str | None = None


@dataclass
class PullResult:
    repo_id: str
    revision: str
    commit: str
    path: Path
    files: list[str]
    heads: list[str]
    downloaded: bool  # False: the cache already held this snapshot intact

    def to_dict(self) -> dict:
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "path": str(self.path),
            "files": self.files,
            "heads": self.heads,
            "downloaded": self.downloaded,
        }


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file: sha1 over "blob <size>\\0" + contents (what the Hub lists for non-LFS files)."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_problem(local: Path, remote: RemoteFile) -> str | None:
    """Why `local` is not the file the Hub lists (missing, size, hash), or None when it is."""
    if not local.is_file():
        return "missing after download"
    size = local.stat().st_size
    if size != remote.size:
        return f"size {size} bytes, the Hub lists {remote.size}"
    if remote.lfs_sha256 is not None:
        digest = sha256_file(local)
        if digest != remote.lfs_sha256:
            return f"sha256 {digest[:12]}…, the Hub lists {remote.lfs_sha256[:12]}…"
    else:
        digest = git_blob_sha1(local)
        if digest != remote.blob_sha1:
            return f"git blob sha1 {digest[:12]}…, the Hub lists {remote.blob_sha1[:12]}…"
    return None


def select_files(paths: list[str], include: list[str] | tuple[str, ...] = ()) -> list[str]:
    """All files, or with `include` the core files plus those matching a pattern (a folder name selects its files)."""
    if not include:
        return sorted(paths)

    def wanted(path: str) -> bool:
        for pattern in (*CORE_PATTERNS, *include):
            folder = pattern.rstrip("/") + "/"
            if fnmatch.fnmatchcase(path, pattern) or path.startswith(folder):
                return True
        return False

    return sorted(p for p in paths if wanted(p))


def _remote_listing(repo_id: str, revision: str, timeout: float) -> tuple[str, dict[str, RemoteFile]]:
    """(commit sha, repo path -> RemoteFile) at `revision`; Hub errors become SliqErrors that say what to do."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint)
    try:
        info = api.model_info(repo_id, revision=revision, timeout=timeout)
        tree = api.list_repo_tree(repo_id, revision=info.sha, recursive=True)
        files = {
            f.path: RemoteFile(f.path, f.size, f.blob_id, f.lfs.sha256 if f.lfs else None)
            for f in tree
            if isinstance(f, RepoFile)
        }
    except RevisionNotFoundError:
        raise SliqError(f"{repo_id}: revision {revision!r} not found on {endpoint}") from None
    except RepositoryNotFoundError:
        raise SliqError(
            f"{repo_id}: repository not found on {endpoint} (or it is private or gated and no valid token is set)"
        ) from None
    except HfHubHTTPError as e:
        raise SliqError(f"{repo_id}: the Hub at {endpoint} refused the request ({e})") from None
    except Exception as e:  # connection refused, DNS, timeouts: the client's error types vary between versions
        raise SliqError(
            f"{repo_id}: cannot reach the Hub at {endpoint} ({type(e).__name__}: {e}). "
            "Without network, set HF_HUB_OFFLINE=1 to use models already in the cache."
        ) from None
    return info.sha, files


def _check_remote_layout(repo_id: str, revision: str, files: dict[str, RemoteFile], selected: list[str]) -> None:
    """Refuse before downloading: pickle files, or a repository that cannot hold a sliq model."""
    pickles = [p for p in selected if is_pickle(p)]
    if pickles:
        raise SliqError(
            f"{repo_id}@{revision}: refusing pickle file(s) {', '.join(pickles)} (sliq reads safetensors only); "
            "nothing was downloaded. Use --include to select the safetensors files."
        )
    if "config.json" not in files:
        raise SliqError(f"{repo_id}@{revision}: no config.json in the repository; it is not a sliq model")
    if "model.safetensors" not in files and "model.safetensors.index.json" not in files:
        raise SliqError(f"{repo_id}@{revision}: no model.safetensors or model.safetensors.index.json in the repository")


def _verified(folder: Path, files: dict[str, RemoteFile], selected: list[str]) -> bool:
    return folder.is_dir() and all(file_problem(folder / p, files[p]) is None for p in selected)


def pull_model(
    repo_id: str, revision: str | None = None, include: list[str] | tuple[str, ...] = (), timeout: float = 10.0
) -> PullResult:
    """Download `repo_id` at `revision` (default main) into the Hub cache, verified; returns where it lies.

    With HF_HUB_OFFLINE set, answers from the cache or fails at once (no request is made).
    """
    check_repo_id(repo_id)
    revision = revision or "main"
    if hub_offline():
        snapshot = cached_snapshot(repo_id, revision)
        if snapshot is None:
            raise SliqError(
                f"{repo_id}@{revision} is not in the local Hub cache ({hub_cache_dir()}) and HF_HUB_OFFLINE is set; "
                "unset HF_HUB_OFFLINE and run `sliq pull` with network access first"
            )
        layout = check_layout(snapshot)
        files = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
        return PullResult(repo_id, revision, snapshot.name, snapshot, files, sorted(layout.heads), downloaded=False)

    commit, files = _remote_listing(repo_id, revision, timeout)
    selected = select_files(list(files), include)
    _check_remote_layout(repo_id, revision, files, selected)

    installed = repo_storage(repo_id) / "snapshots" / commit
    if _verified(installed, files, selected):
        layout = check_layout(installed)
        if revision != commit:
            atomic_write_text(repo_storage(repo_id) / "refs" / revision, commit)
        return PullResult(repo_id, revision, commit, installed, selected, sorted(layout.heads), downloaded=False)

    cache = hub_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".sliq-pull-", dir=cache))
    try:
        snapshot = _download(repo_id, commit, staging, selected, timeout)
        problems = [f"{p}: {why}" for p in selected if (why := file_problem(snapshot / p, files[p]))]
        if problems:
            raise SliqError(
                f"{repo_id}@{revision}: downloaded file(s) do not match the Hub's listing, nothing was installed:\n  "
                + "\n  ".join(problems)
            )
        try:
            layout = check_layout(snapshot)
        except LayoutError as e:
            raise LayoutError(f"{repo_id}@{revision}: " + str(e).replace(str(snapshot) + "/", "")) from None
        installed = install_snapshot(staging, repo_id, revision, commit)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PullResult(repo_id, revision, commit, installed, selected, sorted(layout.heads), downloaded=True)


def _download(repo_id: str, commit: str, staging: Path, selected: list[str], timeout: float) -> Path:
    """snapshot_download of exactly `selected` at `commit` into the staging cache; returns the snapshot folder."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(
            repo_id,
            revision=commit,
            cache_dir=staging,
            endpoint=hub_endpoint(),
            allow_patterns=[glob.escape(p) for p in selected],
            etag_timeout=timeout,
        )
    except Exception as e:  # network drops, HTTP errors, short reads: the client's error types vary between versions
        raise SliqError(
            f"{repo_id}@{commit[:12]}: download failed ({type(e).__name__}: {' '.join(str(e).split())}); "
            "nothing was installed, run the command again to retry"
        ) from None
    return Path(path)


def resolve_hub_model(spec: str) -> Path:
    """The Hub steps of `--model` resolution for "owner/name[@revision]": the local cache, then the Hub.

    A cached snapshot is used as is (no request). Otherwise the model is pulled (verified as by `sliq pull`); with
    HF_HUB_OFFLINE set that fails at once with a message saying what to do.
    """
    parsed = parse_repo_spec(spec)
    if parsed is None:
        raise UsageError(f"{spec!r} is not a Hub repository id (expected owner/name or owner/name@revision)")
    repo_id, revision = parsed
    snapshot = cached_snapshot(repo_id, revision or "main")
    if snapshot is not None:
        return snapshot
    return pull_model(repo_id, revision).path
