"""Atomic file writes: write a temporary file in the target's folder, fsync, then rename over the target.

A reader never sees a half-written checkpoint, head or manifest, even if the writer is killed mid-way.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def umask() -> int:
    """The process umask, read without changing it where the OS allows (os.umask sets it, and a file another thread
    creates meanwhile would get the temporary mask)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


@contextmanager
def atomic_path(target: str | os.PathLike, partial: str | os.PathLike | None = None):
    """Yield a temporary path beside `target`; on success it replaces `target`. On error `target` is untouched and
    the temporary file is removed, or, with `partial`, renamed to `partial` (what was written before the error)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _publish(tmp, target)
    except BaseException:
        if partial is not None and Path(tmp).exists():
            _publish(tmp, partial)
        else:
            Path(tmp).unlink(missing_ok=True)
        raise


def _publish(tmp: str, dest: str | os.PathLike) -> None:
    # mkstemp makes 0600, and some writers (safetensors) replace the file with their own 0600 one: the result should
    # be like any file the user writes
    os.chmod(tmp, 0o666 & ~umask())
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dest)


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | os.PathLike, obj) -> None:
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_safetensors(target: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Save torch tensors with safetensors, atomically."""
    from safetensors.torch import save_file

    with atomic_path(target) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
