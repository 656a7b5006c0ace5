"""process_map: a function over items in worker processes, results in order; the one process pool of the package.

Work that imports torch spawns its workers: a process forked after torch started its OpenMP threads can deadlock,
and a parent that holds a CUDA context or NCCL threads cannot be forked safely. Spawn needs the caller's main module
to be import-safe, as `sliq` and `python -m sliq_cli` are. Other work (numpy, Pillow) forks where the platform can,
so it also runs from a notebook, stdin or an unguarded script.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator


def _one_torch_thread() -> None:
    """Worker initializer for torch work: one process per core already, so one thread per process."""
    import torch

    torch.set_num_threads(1)


def process_map(fn: Callable, items: list, workers: int, uses_torch: bool = False) -> Iterator:
    """fn(item) for every item, yielded in order as they arrive; inline for one worker or one item."""
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    method = "spawn" if uses_torch or "fork" not in multiprocessing.get_all_start_methods() else "fork"
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                               initializer=_one_torch_thread if uses_torch else None)
    with pool:
        yield from pool.map(fn, items, chunksize=max(1, min(16, len(items) // (workers * 8))))
