"""The model card (README.md) `sliq export` writes: YAML front matter the Hub indexes, then what a user needs.

Everything in it comes from files: the checkpoint's config.json, the heads' metadata, and, for a pretraining run
folder, RUN/config.json (the resolved PretrainConfig), RUN/log.jsonl and the TADAC database's tadac.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from sliq_cli.hub.layout import ModelLayout

TAGS = ("image-quality-assessment", "blind-image-quality-assessment", "no-reference-iqa", "slique", "sliq")
PAPER = (
    "Fei Zhou, Zhicong Huang, Tianhao Gu, Guoping Qiu. Vision Language Modeling of Content, Distortion and "
    "Appearance for Image Quality Assessment."
)


@dataclass
class RunInfo:
    """What a pretraining run folder records about how the encoder was made."""

    path: Path
    config: dict = field(default_factory=dict)
    last_log: dict = field(default_factory=dict)
    n_log: int = 0
    database: dict = field(default_factory=dict)  # the TADAC database's tadac.json, when still readable

    @classmethod
    def read(cls, run_dir: Path) -> RunInfo:
        """Read RUN/config.json and RUN/log.jsonl (a bad line is skipped: a crashed run may leave a torn last line)."""
        info = cls(run_dir)
        cfg = run_dir / "config.json"
        if cfg.is_file():
            info.config = json.loads(cfg.read_text(encoding="utf-8"))
        log = run_dir / "log.jsonl"
        if log.is_file():
            for line in log.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict):
                    info.last_log, info.n_log = record, info.n_log + 1
        db = info.config.get("db")
        if db and (Path(db) / "tadac.json").is_file():
            info.database = json.loads((Path(db) / "tadac.json").read_text(encoding="utf-8"))
        return info


def _yaml_front_matter(license: str) -> str:
    return "\n".join(["---", "library_name: sliq", f"license: {license}", "tags:", *[f"- {t}" for t in TAGS], "---"])


def _fmt(value) -> str:
    if isinstance(value, str) and Path(value).is_absolute():
        return Path(value).name  # local paths (database, init checkpoint) mean nothing on the Hub and leak names
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def _table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(out)


def _training_data(run: RunInfo | None, layout: ModelLayout) -> str:
    parts = []
    if run is not None and run.config.get("db"):
        db = run.database
        parts.append(
            f"The image encoder was pretrained on a TADAC database (`{Path(run.config['db']).name}`): images annotated "
            "with texts on their content, distortion and appearance, built by `sliq tadac build`."
        )
        if db.get("counts"):
            parts.append(_table(["count", "value"], [[k, v] for k, v in db["counts"].items()]))
    else:
        parts.append(
            "The image encoder was pretrained with SLIQUE's joint vision-language and visual contrastive objective on "
            "a TADAC-style database; the pretraining run's records were not part of this export."
        )
    datasets = sorted({str(h.get("dataset")) for h in layout.heads.values() if h.get("dataset")})
    if datasets:
        parts.append("The quality heads were fitted (ridge regression on frozen features) on: " + ", ".join(datasets) + ".")
    return "\n\n".join(parts)


def _recipe(run: RunInfo | None, layout: ModelLayout) -> str:
    from sliq_cli.model.config import EncoderConfig

    enc = layout.config.get("config", {})
    feats = EncoderConfig.from_dict(enc).features if enc else None
    described = (f"{'+'.join(feats.pooling)}-pooled outputs of the trunk stages {', '.join(feats.stages)} at scales "
                 f"{', '.join(f'{s:g}' for s in feats.scales)}, each block L2-normalised") if feats else "?"
    parts = [
        f"Encoder `{enc.get('name', '?')}`: {enc.get('trunk', '?')} trunk, 2-layer MLP "
        f"({enc.get('hidden_dim', '?')} -> {enc.get('embed_dim', '?')}); quality features are the {described}. "
        f"Weights stored as {layout.config.get('dtype', 'float32')}; encoder fingerprint `{layout.fingerprint or '?'}`."
    ]
    if layout.config.get("licence"):
        parts.append(f"Starting point: {layout.config['licence']}")
    if run is not None and run.config:
        parts.append("Pretraining configuration (RUN/config.json, as resolved at the start of the run):")
        parts.append(_table(["option", "value"], [[k, v] for k, v in run.config.items() if k != "out"]))
    if run is not None and run.last_log:
        numeric = {k: v for k, v in run.last_log.items() if isinstance(v, (int, float))}
        parts.append(f"Last of {run.n_log} log records (RUN/log.jsonl):")
        parts.append(_table(["field", "value"], [[k, v] for k, v in numeric.items()]))
    return "\n\n".join(parts)


def _measured(layout: ModelLayout) -> str:
    if not layout.heads:
        return "No quality head is included; fit one on your own MOS data with `sliq fit-head`."
    rows = []
    for name, h in sorted(layout.heads.items()):
        protocol, fit = h.get("protocol") or {}, h.get("fit") or {}
        test = [f"{protocol[m]['mean']:.3f} ± {protocol[m]['std']:.3f}" if m in protocol else "-" for m in ("srocc", "plcc")]
        cv = [f"{fit[m]:.3f}" if isinstance(fit.get(m), (int, float)) else "-" for m in ("cv_srocc", "cv_plcc")]
        rows.append([name, h.get("dataset", "-"), h.get("n_train", "-"), *test, *cv])
    return (
        "Test SROCC/PLCC: the paper's protocol on the head's dataset (10 random 70/10/20 splits, ridge alpha chosen on "
        "validation, PLCC after the 4-parameter logistic), mean ± std. CV: k-fold cross-validation of the deployed "
        "head, which is fitted on all of the dataset.\n\n"
        + _table(["head", "dataset", "images", "test SROCC", "test PLCC", "CV SROCC", "CV PLCC"], rows)
    )


def _usage(repo_id: str | None, layout: ModelLayout) -> str:
    repo = repo_id or "OWNER/NAME"
    head = layout.config.get("config", {}).get("default_head") or next(iter(sorted(layout.heads)), "NAME")
    return (
        "```bash\n"
        "pip install sliq-iqa\n"
        f"sliq pull {repo}\n"
        f"sliq score --model {repo} --head {head} photos/        # works offline once pulled (HF_HUB_OFFLINE=1)\n"
        "```\n\n"
        "Files: `config.json` (encoder config and fingerprint), `model.safetensors` (image encoder), "
        "`heads/<name>.safetensors` (ridge heads; JSON metadata readable with any safetensors reader)"
        + (", `text/` (text tower and tokenizer from pretraining)" if layout.text else "")
        + ". No pickle files."
    )


def render_model_card(layout: ModelLayout, run: RunInfo | None = None, repo_id: str | None = None, license: str = "mit") -> str:
    title = repo_id or layout.config.get("config", {}).get("name", "sliq model")
    sections = [
        _yaml_front_matter(license),
        f"# {title}",
        "A blind (no-reference) image quality model in the SLIQUE style: an image encoder pretrained with joint "
        "vision-language and visual contrastive learning on images annotated with content, distortion and appearance "
        "texts, plus ridge-regression heads that map its frozen features to mean opinion scores. Exported by sliq.",
        "## Training data\n\n" + _training_data(run, layout),
        "## Training recipe\n\n" + _recipe(run, layout),
        "## Measured quality prediction\n\n" + _measured(layout),
        "## How to use\n\n" + _usage(repo_id, layout),
        "## Citation\n\n" + PAPER,
    ]
    return "\n\n".join(sections) + "\n"
