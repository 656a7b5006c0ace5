"""`sliq models`: every model and head this machine can use without the network.

Models: the embedded default (the package's weights/) and each sliq snapshot in the Hub cache. Heads: those inside
each model folder, and the user's heads under $SLIQ_HOME/heads/<fingerprint[:16]>/ (from `sliq fit-head`), matched
to models by encoder fingerprint. Snapshots of other libraries in the Hub cache are not listed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from sliq_cli import __version__
from sliq_cli.hub.cache import hub_cache_dir
from sliq_cli.hub.layout import LayoutError, check_layout, is_sliq_checkpoint, read_head_meta
from sliq_cli.model.resolve import embedded_model_dir
from sliq_cli.paths import sliq_home


@dataclass
class HeadEntry:
    name: str
    source: str  # "model" (inside the model folder) or "user" ($SLIQ_HOME/heads)
    path: str
    dataset: str | None = None
    n_train: int | None = None
    # the paper protocol's test means (srocc, plcc, ...) when recorded, then the deployable fit's cross-validation (cv_*)
    metrics: dict = field(default_factory=dict)
    created: str | None = None
    problem: str | None = None

    @classmethod
    def read(cls, path: Path, source: str) -> HeadEntry:
        try:
            meta = read_head_meta(path)
        except LayoutError as e:
            return cls(path.stem, source, str(path), problem=str(e))
        return cls.from_meta(path, source, meta)

    @classmethod
    def from_meta(cls, path: Path, source: str, meta: dict) -> HeadEntry:
        protocol = {k: v["mean"] for k, v in (meta.get("protocol") or {}).items() if isinstance(v, dict) and "mean" in v}
        # the fit's cross-validation, never its in-sample numbers (a head scores its own training data too well)
        cv = {k: v for k, v in (meta.get("fit") or {}).items() if k.startswith("cv_") and isinstance(v, (int, float))}
        metrics = protocol | cv
        return cls(path.stem, source, str(path), meta.get("dataset"), meta.get("n_train"), metrics, meta.get("created"))


@dataclass
class ModelEntry:
    name: str
    source: str  # "embedded", "hub" or "user heads" (heads whose encoder is not installed)
    revision: str
    path: str | None
    fingerprint: str | None = None
    trunk: str | None = None
    heads: list[HeadEntry] = field(default_factory=list)
    problem: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _model_entry(folder: Path, name: str, source: str, revision: str) -> ModelEntry:
    try:
        layout = check_layout(folder)
    except LayoutError as e:
        return ModelEntry(name, source, revision, str(folder), problem=str(e))
    entry = ModelEntry(name, source, revision, str(folder), layout.fingerprint, layout.config.get("config", {}).get("trunk"))
    entry.heads = [HeadEntry.from_meta(layout.head_files[n], "model", meta) for n, meta in sorted(layout.heads.items())]
    return entry


def _cached_snapshots() -> list:
    """(repo id, CachedRevisionInfo) of every model snapshot in the Hub cache, sliq's or not, as scan_cache_dir finds
    them (a repo it finds damaged is left out), by repo id and commit."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        repos = scan_cache_dir(hub_cache_dir()).repos
    except CacheNotFound:
        return []
    found = [(r.repo_id, rev) for r in repos if r.repo_type == "model" for rev in r.revisions]
    return sorted(found, key=lambda item: (item[0], item[1].commit_hash))


def list_available_models() -> list[ModelEntry]:
    """Embedded default, Hub-cache snapshots, and an entry per set of user heads whose encoder is not installed."""
    models = []
    embedded = embedded_model_dir()
    if embedded is not None:
        models.append(_model_entry(embedded, "default", "embedded", f"sliq {__version__}"))
    for repo_id, snap in _cached_snapshots():
        if is_sliq_checkpoint(snap.snapshot_path):
            commit = snap.commit_hash[:12]
            revision = ",".join(sorted(snap.refs)) + f" ({commit})" if snap.refs else commit
            models.append(_model_entry(snap.snapshot_path, repo_id, "hub", revision))
    by_prefix: dict[str, list[ModelEntry]] = {}
    for m in models:
        if m.fingerprint:
            by_prefix.setdefault(m.fingerprint[:16], []).append(m)
    heads_root = sliq_home() / "heads"
    for folder in sorted(p for p in heads_root.iterdir() if p.is_dir()) if heads_root.is_dir() else []:
        heads = [HeadEntry.read(p, "user") for p in sorted(folder.glob("*.safetensors"))]
        if not heads:
            continue
        # A user head applies to every installed model with its encoder's fingerprint.
        owners = by_prefix.get(folder.name)
        if owners is None:
            owners = [ModelEntry(f"encoder {folder.name}", "user heads", "-", None, folder.name)]
            models.extend(owners)
        for owner in owners:
            owner.heads.extend(heads)
    return models
