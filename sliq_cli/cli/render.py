"""Shared output: decoration goes to stderr, data to stdout; tables on a terminal, machine formats in a pipe."""

from __future__ import annotations

import csv
import io
import json
import sys
from contextlib import contextmanager
from typing import Iterable

from rich.console import Console
from rich.markup import escape


def err_console() -> Console:
    return Console(stderr=True, highlight=False)


def out_console(file=None) -> Console:
    return Console(file=file, highlight=False)


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def error(message: str) -> None:
    err_console().print(f"[bold red]error:[/] {escape(str(message))}", soft_wrap=True)


def warn(message: str) -> None:
    err_console().print(f"[yellow]warning:[/] {escape(str(message))}", soft_wrap=True)


@contextmanager
def progress_bars(console: Console | None = None, compact: bool = False):
    """Rich progress bars on `console` (default: stderr), one per task name; yields
    `update(name, completed=None, total=None, advance=None, **fields)`, which draws nothing when the console is not a
    terminal (a caller may print plain lines there instead). Print other lines through the same console.

    Default: a full-width bar, the count, elapsed and remaining time; the bars are cleared at the end. compact: a
    16-cell bar, the count, the remaining time (the elapsed time once finished) and the task's `stats` field, which
    fits 80 columns; the bars stay on screen.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = console or err_console()
    if not console.is_terminal:
        yield lambda name, completed=None, total=None, advance=None, **fields: None
        return
    if compact:
        columns = [TextColumn("{task.description}"), BarColumn(bar_width=16), MofNCompleteColumn(),
                   TimeRemainingColumn(compact=True, elapsed_when_finished=True), TextColumn("{task.fields[stats]}")]
    else:
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn()]
    tasks: dict[str, int] = {}
    with Progress(*columns, console=console, transient=not compact) as progress:

        def update(name: str, completed: float | None = None, total: float | None = None, advance: float | None = None,
                   **fields) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total, completed=completed or 0, **fields)
            progress.update(tasks[name], completed=completed, total=total, advance=advance, **fields)

        yield update


@contextmanager
def progress_bar(total: int | None, description: str):
    """One bar of `total` items on stderr (the library's ProgressFactory); yields `advance(n=1)`. Silent when stderr
    is not a terminal."""
    with progress_bars() as update:
        update(description, 0, total)
        yield lambda n=1: update(description, advance=n)


def jsonl_line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False)


def csv_text(records: Iterable[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


def fmt_mean_std(mean: float, std: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
