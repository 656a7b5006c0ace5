"""`sliq pull`: fetch a sliq model from the Hugging Face Hub into huggingface_hub's cache, verified, all or nothing.

1. Resolve the revision to a commit and list the repository tree (sizes, git blob sha1, LFS sha256).
2. Refuse pickle files among the selected ones before a single byte of them is fetched.
3. `snapshot_download` the selection at that commit: the client fetches what the cache lacks, and writes no ref.
4. Check every file against the listing ourselves (the client checks sizes, not hashes), then the layout (config,
   weights' headers, heads' metadata, text tower). Any failure deletes the commit's snapshot again, as
   `hf cache rm` would, so an offline run later never sees a half-installed model.
5. Only then point refs/<revision> at the commit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from sliq_cli.atomic import atomic_write_text
from sliq_cli.digest import sha256_file
from sliq_cli.errors import SliqError, UsageError
from sliq_cli.hub.cache import (
    cached_layout, check_repo_id, hub_cache_dir, hub_endpoint, hub_offline, network_errors, parse_repo_spec,
)
from sliq_cli.hub.layout import LayoutError, ModelLayout, check_layout
from sliq_cli.model.checkpoint import PICKLE_SUFFIXES

# Always fetched, whatever --include says: without them there is no model to load.
CORE_PATTERNS = ("config.json", "model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors", "README.md")
MISSING = "missing"


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
        return {**asdict(self), "path": str(self.path)}


def file_problem(local: str, remote) -> str:
    """Why `local` is not the file the Hub lists as `remote` (a RepoFile): size or hash; "" when it is."""
    from huggingface_hub.utils.sha import git_hash

    size = Path(local).stat().st_size
    if size != remote.size:
        return f"size {size} bytes, the Hub lists {remote.size}"
    if remote.lfs is not None:
        digest, listed, kind = sha256_file(local), remote.lfs.sha256, "sha256"
    else:  # not in LFS: a small file, hashed as git does
        digest, listed, kind = git_hash(Path(local).read_bytes()), remote.blob_id, "git blob sha1"
    return f"{kind} {digest[:12]}…, the Hub lists {listed[:12]}…" if digest != listed else ""


def _allow_patterns(include: list[str] | tuple[str, ...]) -> list[str] | None:
    """allow_patterns for huggingface_hub: None (every file), or the core files plus `include`'s globs, a folder
    name selecting the files under it."""
    return [*CORE_PATTERNS, *include, *(p.rstrip("/") + "/*" for p in include)] if include else None


def _remote_listing(repo_id: str, revision: str, timeout: float) -> tuple[str, dict]:
    """(commit sha, repo path -> RepoFile) at `revision`; Hub errors become SliqErrors that say what to do."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint)
    try:
        info = api.model_info(repo_id, revision=revision, timeout=timeout)
        tree = api.list_repo_tree(repo_id, revision=info.sha, recursive=True)
        files = {f.path: f for f in tree if isinstance(f, RepoFile)}
    except RevisionNotFoundError:
        raise SliqError(f"{repo_id}: revision {revision!r} not found on {endpoint}") from None
    except RepositoryNotFoundError:
        raise SliqError(
            f"{repo_id}: repository not found on {endpoint} (or it is private or gated and no valid token is set)"
        ) from None
    except HfHubHTTPError as e:
        raise SliqError(f"{repo_id}: the Hub at {endpoint} refused the request ({e})") from None
    except network_errors() as e:  # connection refused, DNS, timeouts
        raise SliqError(
            f"{repo_id}: cannot reach the Hub at {endpoint} ({type(e).__name__}: {e}). "
            "Without network, set HF_HUB_OFFLINE=1 to use models already in the cache."
        ) from None
    return info.sha, files


def _check_remote_layout(repo_id: str, revision: str, files: dict, selected: list[str]) -> None:
    """Refuse before downloading: pickle files, or a repository that cannot hold a sliq model."""
    pickles = [p for p in selected if p.lower().endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise SliqError(
            f"{repo_id}@{revision}: refusing pickle file(s) {', '.join(pickles)} (sliq reads safetensors only); "
            "nothing was downloaded. Use --include to select the safetensors files."
        )
    if "config.json" not in files:
        raise SliqError(f"{repo_id}@{revision}: no config.json in the repository; it is not a sliq model")
    if "model.safetensors" not in files and "model.safetensors.index.json" not in files:
        raise SliqError(f"{repo_id}@{revision}: no model.safetensors or model.safetensors.index.json in the repository")


def _cache_state(repo_id: str, commit: str, files: dict, selected: list[str]) -> tuple[Path | None, dict[str, str]]:
    """(the cache's snapshot folder at `commit` or None, repo path -> why the cache's copy of a selected file is not
    the listed one, MISSING when it has none)."""
    from huggingface_hub import try_to_load_from_cache

    cache = hub_cache_dir()
    cached = {p: try_to_load_from_cache(repo_id, p, cache_dir=cache, revision=commit) for p in selected}
    problems = {p: file_problem(c, files[p]) if isinstance(c, str) else MISSING for p, c in cached.items()}
    config = cached["config.json"]
    return Path(config).parent if isinstance(config, str) else None, {p: why for p, why in problems.items() if why}


def _remove_snapshot(repo_id: str, commit: str) -> None:
    """Delete `repo_id`'s snapshot at `commit`, its refs and the blobs no other snapshot uses (scan_cache_dir's
    delete strategy, as `hf cache rm` does); nothing when the cache holds none."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(hub_cache_dir())
    except CacheNotFound:
        return
    repo = frozenset(r for r in info.repos if r.repo_type == "model" and r.repo_id == repo_id)
    if any(rev.commit_hash == commit for r in repo for rev in r.revisions):
        replace(info, repos=repo).delete_revisions(commit).execute()


def _download(repo_id: str, commit: str, include: list[str] | tuple[str, ...], timeout: float, force: bool) -> Path:
    """snapshot_download of the selection at `commit` into the cache; returns the snapshot folder."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(
            repo_id,
            revision=commit,
            cache_dir=hub_cache_dir(),
            endpoint=hub_endpoint(),
            allow_patterns=_allow_patterns(include),
            etag_timeout=timeout,
            force_download=force,
        ))
    except network_errors() as e:  # network drops, HTTP errors, short reads
        raise SliqError(
            f"{repo_id}@{commit[:12]}: download failed ({type(e).__name__}: {' '.join(str(e).split())}); "
            "nothing was installed, run the command again to retry"
        ) from None


def _pull_snapshot(repo_id: str, revision: str, commit: str, files: dict, selected: list[str],
                   include: list[str] | tuple[str, ...], timeout: float) -> tuple[ModelLayout, bool]:
    """(layout, downloaded) of the verified snapshot at `commit`, fetching what the cache lacks (and, afresh, what it
    holds damaged). When this fetched anything, any failure removes the snapshot again."""
    snapshot, problems = _cache_state(repo_id, commit, files, selected)
    try:
        if problems:
            snapshot = _download(repo_id, commit, include, timeout, force=any(w != MISSING for w in problems.values()))
            left = _cache_state(repo_id, commit, files, selected)[1]
            if left:
                raise SliqError(
                    f"{repo_id}@{revision}: downloaded file(s) do not match the Hub's listing, nothing was installed:"
                    + "".join(f"\n  {p}: {why}" for p, why in sorted(left.items()))
                )
        try:
            return check_layout(snapshot), bool(problems)
        except LayoutError as e:
            raise LayoutError(f"{repo_id}@{revision}: " + str(e).replace(str(snapshot) + "/", "")) from None
    except BaseException:
        if problems:
            _remove_snapshot(repo_id, commit)
        raise


def pull_model(
    repo_id: str, revision: str | None = None, include: list[str] | tuple[str, ...] = (), timeout: float = 10.0
) -> PullResult:
    """Download `repo_id` at `revision` (default main) into the Hub cache, verified; returns where it lies.

    With HF_HUB_OFFLINE set, answers from the cache or fails at once (no request is made).
    """
    check_repo_id(repo_id)
    revision = revision or "main"
    if hub_offline():
        layout = cached_layout(repo_id, revision)
        if layout is None:
            raise SliqError(
                f"{repo_id}@{revision} is not in the local Hub cache ({hub_cache_dir()}) and HF_HUB_OFFLINE is set; "
                "unset HF_HUB_OFFLINE and run `sliq pull` with network access first"
            )
        files = sorted(p.relative_to(layout.path).as_posix() for p in layout.path.rglob("*") if p.is_file())
        return PullResult(repo_id, revision, layout.path.name, layout.path, files, sorted(layout.heads), False)

    from huggingface_hub.utils import filter_repo_objects

    commit, files = _remote_listing(repo_id, revision, timeout)
    selected = sorted(filter_repo_objects(files, allow_patterns=_allow_patterns(include)))
    _check_remote_layout(repo_id, revision, files, selected)
    layout, downloaded = _pull_snapshot(repo_id, revision, commit, files, selected, include, timeout)
    if revision != commit:  # the ref last: following it never leads to a snapshot being filled or checked
        atomic_write_text(layout.path.parents[1] / "refs" / revision, commit)
    return PullResult(repo_id, revision, commit, layout.path, selected, sorted(layout.heads), downloaded)


def resolve_hub_model(spec: str) -> Path:
    """The Hub steps of `--model` resolution for "owner/name[@revision]": the local cache, then the Hub.

    A cached snapshot is used as is (no request). Otherwise the model is pulled (verified as by `sliq pull`); with
    HF_HUB_OFFLINE set that fails at once with a message saying what to do.
    """
    parsed = parse_repo_spec(spec)
    if parsed is None:
        raise UsageError(f"{spec!r} is not a Hub repository id (expected owner/name or owner/name@revision)")
    repo_id, revision = parsed
    layout = cached_layout(repo_id, revision or "main")
    return layout.path if layout is not None else pull_model(repo_id, revision).path
