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
def progress_bar(total: int | None, description: str):
    """A Rich progress bar on stderr; yields `advance(n=1)`. Silent when stderr is not a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = err_console()
    if not console.is_terminal:
        yield lambda n=1: None
        return
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)


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
