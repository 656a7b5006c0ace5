"""`sliq pull`, `sliq models`, `sliq export`: models and heads from and for the Hugging Face Hub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from sliq_cli.cli.render import err_console, out_console, stdout_is_tty, warn

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")]


def pull(
    repo_id: Annotated[str, typer.Argument(help="Hub repository, owner/name.")],
    revision: Annotated[Optional[str], typer.Option("--revision", help="Branch, tag or commit (default: main).")] = None,
    include: Annotated[
        Optional[list[str]],
        typer.Option("--include", help="Only these files besides config, weights and card (glob; repeatable), e.g. 'heads/koniq*'."),
    ] = None,
    as_json: JsonFlag = False,
):
    """Download a sliq model into the Hugging Face cache, verified against the Hub's hashes; pickle files are refused.

    Afterwards `sliq score --model OWNER/NAME` works without network (HF_HUB_OFFLINE=1).

    Examples:

    \b
      sliq pull ORG/NAME
      sliq pull ORG/NAME --include 'heads/koniq*'
    """
    from sliq_cli.hub.pull import pull_model

    result = pull_model(repo_id, revision=revision, include=include or ())
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    state = "downloaded and verified" if result.downloaded else "already in the cache"
    console = err_console()
    console.print(f"[green]{result.repo_id}[/] @ {result.revision} ({result.commit[:12]}): {state}")
    console.print(f"  {result.path}")
    console.print(f"  heads: {', '.join(result.heads) or 'none'}")


def models(as_json: JsonFlag = False):
    """List the models and heads usable offline: embedded default, Hub cache, your fitted heads.

    A table on a terminal; JSON with --json or when stdout is a pipe.

    Examples:

    \b
      sliq models
      sliq models --json
    """
    from sliq_cli.hub.inventory import list_available_models

    entries = list_available_models()
    if as_json or not stdout_is_tty():
        typer.echo(json.dumps([m.to_dict() for m in entries], indent=2))
        return
    if not entries:
        warn("no models found: `sliq pull OWNER/NAME` fetches one, `sliq pretrain` makes one")
        return
    from rich.table import Table

    table = Table(title="sliq models", title_justify="left", caption="SROCC, PLCC: the protocol's test means "
                  "(cv: the head's cross-validation); `sliq models --json` has them all", caption_justify="left")
    for column, justify in (("model / head", "left"), ("source", "left"), ("fingerprint", "left"), ("dataset", "left"),
                            ("n", "right"), ("SROCC", "right"), ("PLCC", "right")):
        table.add_column(column, justify=justify, overflow="fold")
    for m in entries:
        source = escape(m.source + (f" {m.revision}" if m.revision not in ("", "-") else ""))
        table.add_row(f"[bold]{escape(m.name)}[/]", source, (m.fingerprint or "")[:12], _problem(m.problem))
        for h in m.heads:
            n = "" if h.n_train is None else str(h.n_train)
            table.add_row(f"  └ {escape(h.name)}", h.source, "", _problem(h.problem) or escape(h.dataset or ""), n,
                          _metric(h.metrics, "srocc"), _metric(h.metrics, "plcc"))
    out_console().print(table)


def _metric(metrics: dict, key: str) -> str:
    """The protocol's test mean, else the head's cross-validated value marked cv."""
    if key in metrics:
        return f"{metrics[key]:.3f}"
    return f"{metrics[f'cv_{key}']:.3f} cv" if f"cv_{key}" in metrics else ""


def _problem(message: str | None) -> str:
    return f"[red]{escape(message)}[/]" if message else ""


def export(
    source: Annotated[str, typer.Argument(help="Pretraining run folder, model folder, or model spec (OWNER/NAME, default).")],
    out_dir: Annotated[Path, typer.Argument(help="New folder for the Hub-ready model.")],
    push: Annotated[Optional[str], typer.Option("--push", help="Also upload to this Hub repo (needs a token).")] = None,
    include_text: Annotated[
        Optional[bool], typer.Option("--include-text/--no-text", help="Text tower: default copies it when present.")
    ] = None,
    heads: Annotated[
        Optional[list[str]],
        typer.Option("--head", help="Also include this head: one you fitted (by name) or a file (repeatable). "
                                    "The model's own heads/ are always included."),
    ] = None,
    license: Annotated[str, typer.Option("--license", help="License id for the model card.")] = "mit",
    as_json: JsonFlag = False,
):
    """Write a Hub-ready folder: config.json, model.safetensors, heads/, text/, and a generated README.md card.

    Examples:

    \b
      sliq export runs/slique hub-model/ --head clive
      sliq export runs/slique hub-model/ --push ORG/NAME
    """
    from sliq_cli.hub.export import export_model

    result = export_model(source, out_dir, include_text=include_text, heads=heads, push=push, license=license)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    console = err_console()
    console.print(f"[green]exported[/] {result.checkpoint} -> {result.out_dir}")
    console.print(f"  heads: {', '.join(result.heads) or 'none'}; text tower: {'yes' if result.text else 'no'}")
    console.print(f"  files: {', '.join(result.files)}")
    if result.pushed_to:
        console.print(f"  pushed: {result.pushed_to}")
