"""The one CSV reader behind every user CSV (TADAC label files, IQA dataset lists).

`open_csv(path)` opens a UTF-8 file (a BOM is tolerated) and yields a `CsvRows`: `.header()` is the first row with
its cells stripped (None for an empty file); iterating gives `(line number, row)` for each non-blank row; `.line_num`
is the reader's current line (for messages about malformed CSV). Callers turn problems into their own `InputError`s.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class CsvRows:
    """Header and non-blank rows of an open CSV file, with line numbers."""

    def __init__(self, f):
        self._reader = csv.reader(f)

    @property
    def line_num(self) -> int:
        return self._reader.line_num

    def header(self) -> list[str] | None:
        """The first row, cells stripped; None when the file is empty."""
        header = next(self._reader, None)
        return None if header is None else [h.strip() for h in header]

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        for row in self._reader:
            if any(cell.strip() for cell in row):
                yield self._reader.line_num, row


@contextmanager
def open_csv(path: str | Path) -> Iterator[CsvRows]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        yield CsvRows(f)
