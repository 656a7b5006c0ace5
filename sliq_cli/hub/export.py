"""`sliq export`: turn a pretraining run or any model folder into a Hub-ready repository folder, optionally pushed.

OUT_DIR gets config.json, the weights (one file or index + shards), heads/, text/ (optional), and a generated
README.md model card. It is assembled in a temporary folder beside OUT_DIR, validated as `sliq pull` would
validate it, and renamed into place, so OUT_DIR is either complete or absent.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sliq_cli.atomic import umask
from sliq_cli.errors import InputError, SliqError, UsageError
from sliq_cli.hub.cache import check_repo_id, hub_endpoint, hub_offline, network_errors
from sliq_cli.hub.card import RunInfo, render_model_card
from sliq_cli.hub.layout import check_layout, is_sliq_checkpoint
from sliq_cli.model.checkpoint import INDEX, WEIGHTS, read_config, weight_files
from sliq_cli.paths import user_heads_dir


@dataclass
class ExportResult:
    out_dir: Path
    checkpoint: Path
    run: Path | None
    heads: list[str]
    text: bool
    files: list[str]
    pushed_to: str | None = None  # the commit URL on the Hub after --push

    def to_dict(self) -> dict:
        return {
            "out_dir": str(self.out_dir),
            "checkpoint": str(self.checkpoint),
            "run": str(self.run) if self.run else None,
            "heads": self.heads,
            "text": self.text,
            "files": self.files,
            "pushed_to": self.pushed_to,
        }


def _is_run(folder: Path) -> bool:
    """A pretraining run folder: RUN/log.jsonl, or a RUN/config.json that is not a checkpoint's."""
    return (folder / "log.jsonl").is_file() or ((folder / "config.json").is_file() and not is_sliq_checkpoint(folder))


def find_checkpoint(source: str) -> tuple[Path, Path | None]:
    """(checkpoint folder, run folder or None) for a run folder, a checkpoint folder, any folder holding exactly one
    checkpoint, or a model spec (`--model` syntax: a Hub repo id or "default")."""
    path = Path(source).expanduser()
    if not path.exists():
        from sliq_cli.loading import find_model

        return find_model(source), None
    if not path.is_dir():
        raise InputError(path, "not a folder (expected a pretraining run or a model folder)")
    if is_sliq_checkpoint(path):
        return path, path.parent if _is_run(path.parent) else None
    run = path if _is_run(path) else None
    if is_sliq_checkpoint(path / "export"):
        return path / "export", run
    found = sorted({c.parent for c in path.rglob("config.json") if is_sliq_checkpoint(c.parent)})
    if not found:
        raise InputError(path, "holds no sliq checkpoint (a config.json with format sliq-encoder)")
    if len(found) > 1:
        listing = ", ".join(str(f.relative_to(path)) for f in found)
        raise InputError(path, f"holds several checkpoints ({listing}); give the one to export")
    return found[0], run


def _select_heads(checkpoint: Path, fingerprint: str, names: list[str] | None) -> dict[str, Path]:
    """Heads to publish: the model's own heads/, plus those `names` picks (a user's fitted head by name, or a file).
    Never every head in the user's cache: those may be experiments, or fitted on data that must not be shared."""
    chosen = {p.stem: p for p in sorted((checkpoint / "heads").glob("*.safetensors"))}
    user = user_heads_dir(fingerprint) if fingerprint else None
    for name in names or []:
        as_file = Path(name).expanduser()
        if as_file.suffix == ".safetensors" and as_file.is_file():
            chosen[as_file.stem] = as_file
        elif user is not None and (user / f"{name}.safetensors").is_file():
            chosen[name] = user / f"{name}.safetensors"
        elif name not in chosen:
            mine = sorted(p.stem for p in user.glob("*.safetensors")) if user is not None else []
            known = ", ".join(sorted(set(chosen) | set(mine))) or "none"
            raise UsageError(f"no head {name!r} for this encoder (available: {known})")
    return chosen


def _text_tower(checkpoint: Path, run: Path | None) -> Path | None:
    for candidate in (checkpoint / "text", run / "text" if run else None):
        if candidate is not None and candidate.is_dir():
            return candidate
    return None


def export_model(
    source: str,
    out_dir: str | os.PathLike,
    include_text: bool | None = None,
    heads: list[str] | None = None,
    push: str | None = None,
    license: str = "mit",
) -> ExportResult:
    """Write a Hub-ready model folder from `source` (run folder, model folder or model spec) to `out_dir`.

    include_text: None = copy the text tower if there is one, True = require it, False = leave it out.
    heads: added to the model's own heads/: names of the user's heads for this encoder (`sliq fit-head`), or files.
    push: a repo id to upload the folder to (needs a token); also used in the card's usage section.
    """
    if push is not None:
        check_repo_id(push)
    checkpoint, run = find_checkpoint(source)
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out}: already exists and is not an empty folder; choose a new output folder")
    config = read_config(checkpoint)
    chosen = _select_heads(checkpoint, config.get("fingerprint", ""), heads)
    text = _text_tower(checkpoint, run) if include_text is not False else None
    if include_text and text is None:
        raise UsageError(f"{checkpoint}: no text tower (text/) to include; export with --no-text")

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        # mkdtemp makes 0700; copyfile (not copy2) gives new files the umask's mode, not a private source file's
        os.chmod(stage, 0o777 & ~umask())
        if not (checkpoint / WEIGHTS).is_file():
            shutil.copyfile(checkpoint / INDEX, stage / INDEX)
        for f in [checkpoint / "config.json", *weight_files(checkpoint)]:
            shutil.copyfile(f, stage / f.name)
        for name, path in chosen.items():
            (stage / "heads").mkdir(exist_ok=True)
            shutil.copyfile(path, stage / "heads" / f"{name}.safetensors")
        if text is not None:
            shutil.copytree(text, stage / "text", copy_function=shutil.copyfile)
        layout = check_layout(stage)
        run_info = RunInfo.read(run) if run is not None else None
        (stage / "README.md").write_text(render_model_card(layout, run_info, push, license), encoding="utf-8")
        if out.exists():
            out.rmdir()
        os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    result = ExportResult(out, checkpoint, run, sorted(chosen), text is not None, files)
    if push is not None:
        result.pushed_to = push_folder(out, push)
    return result


def push_folder(folder: Path, repo_id: str) -> str:
    """Upload an exported folder to the Hub (creating the repo if needed); returns the commit URL."""
    if hub_offline():
        raise SliqError(f"--push needs the network but HF_HUB_OFFLINE is set; the export in {folder} is complete")
    from huggingface_hub import HfApi, get_token

    token = get_token()
    if not token:
        raise SliqError(
            f"--push needs a Hugging Face token with write access (run `hf auth login` or set HF_TOKEN); "
            f"the export in {folder} is complete, upload it later with `hf upload {repo_id} {folder}`"
        )
    api = HfApi(endpoint=hub_endpoint(), token=token)
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message="Upload sliq model")
    except network_errors() as e:
        raise SliqError(
            f"pushing {folder} to {repo_id} on {hub_endpoint()} failed ({type(e).__name__}: {' '.join(str(e).split())})"
        ) from None
    return str(info.commit_url)
