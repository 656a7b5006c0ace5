"""`sliq score`: quality scores for image files."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from sliq_cli.cli.options import BatchSizeOpt, Device, DeviceOpt, HeadOpt, ModelOpt, RecursiveOpt, WorkersOpt
from sliq_cli.cli.render import csv_text, err_console, jsonl_line, progress_bar, stdout_is_tty, warn


class Format(str, Enum):
    table = "table"
    jsonl = "jsonl"
    csv = "csv"
    json = "json"


_SUFFIX_FORMATS = {".csv": Format.csv, ".json": Format.json, ".jsonl": Format.jsonl, ".txt": Format.table}


def score(
    paths: Annotated[list[str], typer.Argument(help="Image files and folders; '-' reads paths from standard input.")],
    model: ModelOpt = None,
    head: HeadOpt = None,
    recursive: RecursiveOpt = False,
    batch_size: BatchSizeOpt = 8,
    device: DeviceOpt = Device.auto,
    fmt: Annotated[
        Optional[Format],
        typer.Option("--format", "-f", help="Output format. Default: table on a terminal, jsonl in a pipe."),
    ] = None,
    sort: Annotated[bool, typer.Option("--sort", help="Sort by score, best first.")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write results here instead of stdout.")] = None,
    workers: WorkersOpt = None,
    compile_: Annotated[
        bool,
        typer.Option("--compile", help="torch.compile the encoder (CUDA): ~30 s once, then ~1.5x the images/s; "
                                       "for large folders of a few image sizes (the first 4 sizes compile)."),
    ] = False,
):
    """Score images with a frozen SLIQUE encoder and a ridge head.

    Exit code 0 when every image scored, 1 when some failed (the others are still scored), 2 for usage errors.
    """
    from sliq_cli.images import list_images
    from sliq_cli.iqa.score import score_images

    files = list_images(paths, recursive=recursive)
    if not files:
        raise typer.BadParameter("no images found in the given paths", param_hint="PATHS")
    if fmt is None:
        fmt = _SUFFIX_FORMATS.get(output.suffix.lower(), Format.jsonl) if output else (
            Format.table if stdout_is_tty() else Format.jsonl
        )
    run = score_images(files, model=model, head=head, device=device.value, batch_size=batch_size, workers=workers,
                       compile=compile_)
    scale = run.head.mos_scale
    out = open(output, "w", encoding="utf-8") if output else sys.stdout
    results, failed = [], 0
    try:
        with progress_bar(len(files), f"scoring on {run.device}") as advance:
            for r in run.results:
                advance()
                if r.error:
                    failed += 1
                    warn(f"{r.path}: {r.error}")
                record = {"path": r.path, "score": r.score, "error": r.error} if r.error else {"path": r.path, "score": r.score}
                if fmt is Format.jsonl and not sort:
                    out.write(jsonl_line(record) + "\n")  # stream: a pipeline sees each score as it is computed
                    out.flush()
                else:
                    results.append(record)
        if fmt is not Format.jsonl or sort:
            order = {str(p): i for i, p in enumerate(files)}
            results.sort(key=(lambda r: (r["score"] is None, -(r["score"] or 0.0) if scale.get("higher_is_better", True)
                                         else (r["score"] or 0.0))) if sort else (lambda r: order.get(r["path"], 0)))
            _write(results, fmt, out, run, scale)
    finally:
        if output:
            out.close()
    if failed:
        err_console().print(f"{len(files) - failed} of {len(files)} images scored; {failed} failed")
        raise typer.Exit(1)


def _write(results: list[dict], fmt: Format, out, run, scale: dict) -> None:
    if fmt is Format.jsonl:
        out.writelines(jsonl_line(r) + "\n" for r in results)
    elif fmt is Format.csv:
        out.write(csv_text(results, ["path", "score", "error"]))
    elif fmt is Format.json:
        doc = {"model": str(run.model_dir), "encoder_fingerprint": run.fingerprint, "head": run.head.name,
               "scale": scale, "results": results}
        out.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        from rich.table import Table

        from sliq_cli.cli.render import out_console

        lo, hi = (f"{scale[k]:.4g}" if isinstance(scale.get(k), (int, float)) else "?" for k in ("min", "max"))
        rng = f"{lo}–{hi}, {'higher' if scale.get('higher_is_better', True) else 'lower'} is better"
        table = Table(title=f"sliq · head {run.head.name or '?'} ({rng})", title_justify="left")
        table.add_column("image", overflow="fold")
        table.add_column("score", justify="right")
        for r in results:
            table.add_row(r["path"], f"{r['score']:.2f}" if r["score"] is not None else f"[red]{r['error']}[/]")
        out_console(out).print(table)
