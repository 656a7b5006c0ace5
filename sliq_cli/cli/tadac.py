"""`sliq tadac`: build, inspect and preview the TADAC pretraining database."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from sliq_cli.cli.options import SeedOpt
from sliq_cli.cli.render import err_console, out_console, progress_bars, stdout_is_tty, warn

app = typer.Typer(
    name="tadac",
    help="The TADAC database: images annotated with content, distortion and appearance texts (paper III-C).",
    no_args_is_help=True,
)

MAX_SKIPPED_SHOWN = 20


def _table(title: str, rows, columns=("", "count")):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row))
    return table


def _print(data: dict, tables) -> None:
    """Tables on a terminal, JSON in a pipe."""
    if stdout_is_tty():
        console = out_console()
        for t in tables:
            console.print(t)
    else:
        typer.echo(json.dumps(data, indent=2))


@app.command()
def build(
    sources: Annotated[list[Path], typer.Argument(help="Image folders (searched recursively) and files.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Database folder to write (tadac.json, manifest.jsonl...).")],
    labels: Annotated[Optional[Path], typer.Option("--labels", help="CSV with columns image,label (paths relative "
                                                    "to the source folder or to the CSV).")] = None,
    labels_from_folders: Annotated[bool, typer.Option("--labels-from-folders", help="Label an image without a CSV "
                                                      "label by its parent folder's name.")] = False,
    captions: Annotated[Optional[Path], typer.Option("--captions", help="CSV with columns image,caption; captions "
                                                     "are used verbatim as content texts.")] = None,
    pristine: Annotated[Optional[list[str]], typer.Option("--pristine", help="Glob (relative to the source folder) "
                                                          "of pristine images; repeatable.")] = None,
    authentic: Annotated[Optional[list[str]], typer.Option("--authentic", help="Glob of authentically distorted "
                                                           "images; repeatable.")] = None,
    heldout: Annotated[int, typer.Option("--heldout", min=0, help="Pristine images kept out of training.")] = 0,
    seed: SeedOpt = 0,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="Processes measuring images "
                                                   "(default: all cores).")] = None,
    materialize: Annotated[bool, typer.Option("--materialize", help="Also write every pristine image's 125 "
                                              "distorted versions as PNGs (DB/distorted/).")] = False,
):
    """Build a TADAC database: working sizes, appearance attributes, saliency crops and text labels.

    Examples:

    \b
      sliq tadac build photos/ --out tadac --labels photos/labels.csv \\
          --pristine 'kodak/*'
      sliq tadac build photos/ --out tadac --labels-from-folders
    """
    from sliq_cli.tadac.database import build_database

    with progress_bars() as progress:
        summary = build_database(
            [str(s) for s in sources], out, labels_csv=labels, captions_csv=captions, pristine_globs=pristine or (),
            authentic_globs=authentic or (), heldout=heldout, seed=seed, materialize=materialize,
            workers=workers or os.cpu_count() or 1, labels_from_folders=labels_from_folders, progress=progress,
        )
    for path, reason in summary.skipped[:MAX_SKIPPED_SHOWN]:
        warn(f"skipped {path}: {reason}")
    if len(summary.skipped) > MAX_SKIPPED_SHOWN:
        warn(f"... and {len(summary.skipped) - MAX_SKIPPED_SHOWN} more, see {summary.out / 'skipped.txt'}")
    counts = {k: v for k, v in summary.counts.items() if k != "sources"}
    rows = list(counts.items()) + [("seconds", f"{summary.seconds:.1f}")]
    if materialize:
        rows.append(("distorted files", summary.materialized))
    _print(summary.to_dict(), [_table(f"TADAC database {summary.out}", rows),
                               _table("records per source", summary.counts["sources"].items())])


@app.command()
def show(db: Annotated[Path, typer.Argument(help="A database folder built by `sliq tadac build`.")]):
    """Counts of a TADAC database: records and samples per kind, text type, level and appearance bin.

    Examples:

    \b
      sliq tadac show tadac
    """
    from sliq_cli.tadac.appearance import BINS
    from sliq_cli.tadac.database import database_counts, load_database

    counts = database_counts(load_database(db))
    tables = [
        _table("records and training samples", [(k, counts.records[k], counts.samples[k]) for k in counts.records],
               ("kind", "records", "samples")),
        _table("splits", counts.splits.items(), ("split", "records")),
        _table("sources", counts.sources.items(), ("source", "records")),
        _table("content texts", counts.content.items(), ("content", "records")),
        _table("distortion text types", counts.text_types.items(), ("text type", "samples")),
        _table("distortion levels", counts.levels.items(), ("level", "samples")),
        _table("appearance bins", [(a, *(bins[b] for b in BINS)) for a, bins in counts.appearance.items()],
               ("attribute", *BINS)),
    ]
    _print(dataclasses.asdict(counts), tables)


@app.command()
def preview(
    image: Annotated[Path, typer.Argument(help="The photo to distort.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")],
    size: Annotated[int, typer.Option("--size", min=32, help="Tile side in pixels (a 1:1 crop).")] = 128,
    seed: SeedOpt = 0,
):
    """A contact sheet of IMAGE under the 25 KADIS distortions at 5 levels (and the original).

    Examples:

    \b
      sliq tadac preview examples/kodim23.jpg --out sheet.png
    """
    from sliq_cli.tadac.preview import write_contact_sheet

    written = write_contact_sheet(image, out, size=size, seed=seed)
    err_console().print(f"wrote {written}")
