"""`sliq score`: quality scores for image files."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from sliq_cli.cli.options import (BatchSizeOpt, Device, DeviceOpt, HeadOpt, MaxSideOpt, ModelOpt, RecursiveOpt,
                                  WorkersOpt)
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
    batch_size: BatchSizeOpt = None,
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
        typer.Option("--compile", help="torch.compile the encoder (CUDA) for the batch shapes whose images to come "
                                       "repay the ~40 s a shape costs (hundreds of thousands of images); the rest, "
                                       "and small folders, run eager: never slower than without."),
    ] = False,
    max_side: MaxSideOpt = None,
    explain: Annotated[
        bool,
        typer.Option("--explain", help="Add `sliq explain`'s fields: the 3 nearest distortion descriptions and the "
                                       "appearance attributes (needs the model's text tower)."),
    ] = False,
    ray: Annotated[
        bool,
        typer.Option("--ray", help="Score on a Ray cluster (needs the ray extra): decode in Ray tasks, one model per "
                                   "GPU (or CPU) in an actor pool. A local cluster unless --ray-address."),
    ] = False,
    ray_address: Annotated[
        Optional[str],
        typer.Option("--ray-address", help="With --ray: join this cluster, 'auto' (the one `ray start --head` "
                                           "started here) or ray://HOST:PORT. A separate option because an option "
                                           "cannot both stand alone and take a value."),
    ] = None,
    ray_pool: Annotated[
        Optional[str],
        typer.Option("--ray-pool", help="Score on the warm scorer pool of this name (`sliq ray-pool start`) on the "
                                        "running cluster (--ray-address, default auto) instead of starting actors "
                                        "for this run; its model and head score. Implies --ray."),
    ] = None,
):
    """Score images with a frozen SLIQUE encoder and a ridge head.

    Scores are on the head's MOS scale (the embedded model's head: CLIVE MOS, higher is better); a score outside the range
    of the head's training MOS is kept raw and flagged out_of_range. With -o FILE the results go to a temporary
    file renamed over FILE at the end; if interrupted, FILE is left as it was and the results so far are in
    FILE.partial. Exit code 0 when every image scored, 1 when some failed (the others are still scored), 2 for
    usage errors (a PATH that does not exist, a bad option).

    Examples:

    \b
      sliq score examples/               # a table; JSON lines in a pipe
      sliq score photos/ -r --sort -o scores.csv
      sliq score photos/ --max-side 1024  # on a CPU: big photos, fast
      sliq score photos/ --ray-pool sliq  # on a warm pool (sliq ray-pool start)
    """
    from sliq_cli.images import list_images

    files = list_images(paths, recursive=recursive, empty_folders=True)
    if not files:
        raise typer.BadParameter("no images found in the given paths", param_hint="PATHS")
    fmt = fmt or _default_format(output)
    options = dict(batch_size=batch_size, workers=workers, compile=compile_, max_side=max_side)
    ray = ray or ray_pool is not None
    if ray_address and not ray:
        raise typer.BadParameter("needs --ray", param_hint="--ray-address")
    if ray and compile_:
        raise typer.BadParameter("not with --ray", param_hint="--compile")
    if ray_pool is not None and (batch_size or workers or max_side or device is not Device.auto):
        raise typer.BadParameter("the pool's actors run as `sliq ray-pool start` set them up",
                                 param_hint="--batch-size, --workers, --max-side, --device")
    metric, records = _scorer(files, model, head, device.value, explain, options, ray, ray_address, ray_pool)
    failed = _write_results(records, files, fmt, sort, output, metric)
    if compile_ and metric.extractor.compiler is not None:  # --compile: what it compiled, and why the rest ran eager
        err_console().print(metric.extractor.compiler.report(), style="dim", highlight=False)
    if failed:
        err_console().print(f"{len(files) - failed} of {len(files)} images scored; {failed} failed")
        raise typer.Exit(1)


def _default_format(output: Path | None) -> Format:
    """The output file's suffix says it; else a table on a terminal, JSON lines in a pipe."""
    if output:
        return _SUFFIX_FORMATS.get(output.suffix.lower(), Format.jsonl)
    return Format.table if stdout_is_tty() else Format.jsonl


def _scorer(files: list[Path], model, head, device: str, explain: bool, options: dict, ray: bool,
            ray_address: str | None, ray_pool: str | None):
    """(the scorer, its records of `files` in completion order), with --explain's fields when asked for; on a Ray
    cluster with --ray, by a warm pool's actors with --ray-pool."""
    if ray_pool is not None:
        from sliq_cli.iqa.ray_pool import pool_score_records

        run = pool_score_records(files, ray_pool, ray_address, model, head, top=EXPLAIN_TOP if explain else 0)
        return run.scorer, run.records
    if ray:
        from sliq_cli.iqa.ray_score import score_records

        run = score_records(files, model, head, ray_address, device, batch_size=options["batch_size"],
                            max_side=options["max_side"], top=EXPLAIN_TOP if explain else 0)
        return run.scorer, run.records
    if explain:
        from sliq_cli.iqa.explain import explain_images

        run = explain_images(files, model, head, top=EXPLAIN_TOP, device=device, **options)
        return run.scorer, run.records
    from sliq_cli.api import load

    metric = load(model, head, device, **options)
    return metric, metric.records(files)


def _write_results(records, files: list[Path], fmt: Format, sort: bool, output: Path | None, metric) -> int:
    """Writes the records as they come (JSON lines, unsorted) or all at the end, to stdout or atomically to
    `output`; warns of each failed image. The number of failed images."""
    stream = fmt is Format.jsonl and not sort  # a pipeline sees each score as it is computed
    results, done, failed = [], 0, 0
    try:
        with _open_output(output) as out, progress_bar(len(files), f"scoring on {metric.device}") as advance:
            try:
                for record in records:
                    advance()
                    done += 1
                    if record.get("error"):
                        failed += 1
                        warn(f"{record['path']}: {record['error']}")
                    if stream:
                        out.write(jsonl_line(record) + "\n")
                        out.flush()
                    else:
                        results.append(record)
            finally:  # also when interrupted: what was scored is written (to FILE.partial with -o)
                if not stream:
                    _write(_ordered(results, files, sort, metric.mos_scale), fmt, out, metric)
    except BaseException:
        if output:
            warn(f"stopped after {done} of {len(files)} images: {output} is unchanged; the results so far are in "
                 f"{_partial(output)}")
        raise
    return failed


def _partial(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


@contextmanager
def _open_output(output: Path | None):
    """stdout, or a temporary file beside `output` renamed over it at the end: an interrupted or failed run never
    truncates an existing file; its results so far are kept as OUTPUT.partial instead."""
    if output is None:
        yield sys.stdout
        return
    from sliq_cli.atomic import atomic_path

    with atomic_path(output, partial=_partial(output)) as tmp, open(tmp, "w", encoding="utf-8") as out:
        yield out


def _ordered(results: list[dict], files: list[Path], sort: bool, scale: dict) -> list[dict]:
    """Input order, or best first with --sort (failures last)."""
    if sort:
        sign = -1.0 if scale.get("higher_is_better", True) else 1.0
        return sorted(results, key=lambda r: (r["score"] is None, sign * (r["score"] or 0.0)))
    order = {str(p): i for i, p in enumerate(files)}
    return sorted(results, key=lambda r: order.get(r["path"], 0))


def _write(results: list[dict], fmt: Format, out, metric) -> None:
    if fmt is Format.jsonl:
        out.writelines(jsonl_line(r) + "\n" for r in results)
    elif fmt is Format.csv:
        rows = [{**r, "explanation": _why(r)} if "descriptions" in r else r for r in results]
        columns = ["path", "score", "out_of_range", *(["explanation"] if _explained(results) else []), "error"]
        out.write(csv_text(rows, columns))
    elif fmt is Format.json:
        out.write(json.dumps({**metric.info(), "results": results}, indent=2, ensure_ascii=False) + "\n")
    else:
        from rich.table import Table

        from sliq_cli.cli.render import out_console

        scale = metric.mos_scale
        lo, hi = (f"{scale[k]:.4g}" if isinstance(scale.get(k), (int, float)) else "?" for k in ("min", "max"))
        rng = f"MOS {lo}–{hi}, {'higher' if scale.get('higher_is_better', True) else 'lower'} is better"
        table = Table(title=f"sliq · head {metric.head.name or '?'} ({rng})", title_justify="left",
                      caption="* outside the head's MOS range (an extrapolation)"
                      if any(r.get("out_of_range") for r in results) else None, caption_justify="left")
        table.add_column("image", overflow="fold")
        table.add_column("score", justify="right")
        explained = _explained(results)
        if explained:
            table.add_column("nearest descriptions; appearance", overflow="fold")
        for r in results:
            score = f"{r['score']:.2f}{'*' if r.get('out_of_range') else ''}" if r["score"] is not None else None
            why = [escape(_why(r)) if "descriptions" in r else ""] if explained else []
            table.add_row(r["path"], score or f"[red]{escape(r['error'])}[/]", *why)
        out_console(out).print(table)


EXPLAIN_TOP = 3


def _explained(results: list[dict]) -> bool:
    return any("descriptions" in r for r in results)


def _why(record: dict) -> str:
    """One line of `--explain`: the nearest descriptions, then the appearance bins."""
    texts = "; ".join(d["text"] for d in record["descriptions"])
    looks = ", ".join(a["phrase"] for a in record["appearance"].values())
    return f"{texts} | {looks}"
