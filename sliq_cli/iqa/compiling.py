"""`sliq score --compile`: compile a batch shape only once the images still to come repay it.

torch.compile (Inductor kernels, CUDA graphs) runs a shape faster than eager, but each new shape costs a compilation
of tens of seconds (bench/RESULTS.md): a folder of a thousand photos never repays it, a million-photo one does. So
every shape first runs eager, timed on the GPU with CUDA events that are read once they have completed (no extra
synchronisation); a shape is compiled when the images still to come, at that shape's share of the batches so far,
would save more time than compiling costs. The first compilation's measured time replaces the estimate.
"""

from __future__ import annotations

import time

# Measured on one H200 (bench/RESULTS.md): compiled / eager images per second at one shape, and the wall time of a
# first compilation + CUDA-graph capture. The decision only needs their order of magnitude.
SPEEDUP = 1.3
COMPILE_SECONDS = 40.0
MAX_SHAPES = 8  # torch._dynamo's default recompile limit: shapes beyond it would run eager anyway


class CompileWhenItPays:
    """A drop-in for `fn(x, region_table)` (ImageEncoder.scale_features) that routes each input shape to the eager or
    the compiled function. The caller reports finished images with `done()`; `total` is the folder's size."""

    def __init__(self, fn, total: int):
        self.eager = fn
        self._compiled = None  # made when a first shape pays: importing Inductor alone takes seconds
        self.total, self.finished = total, 0
        self.calls: dict[tuple, int] = {}  # shape -> calls so far
        self.timed: dict[tuple, list[float]] = {}  # shape -> GPU seconds of its eager calls (first call excluded)
        self.pending: list = []  # (shape, start event, end event) not yet read
        self.compiled_shapes: set[tuple] = set()
        self.compile_seconds = COMPILE_SECONDS
        self.measured = False

    @property
    def compiled(self):
        import torch

        if self._compiled is None:
            self._compiled = torch.compile(self.eager, mode="reduce-overhead", dynamic=False)
        return self._compiled

    def done(self, n: int = 1) -> None:
        self.finished += n

    def __call__(self, x, region_table=None):
        import torch

        shape = (tuple(x.shape), region_table is None)
        self.calls[shape] = self.calls.get(shape, 0) + 1
        if shape not in self.compiled_shapes and self._pays(shape):
            self.compiled_shapes.add(shape)
        if shape in self.compiled_shapes:
            t0 = time.perf_counter()
            out = self.compiled(x, region_table).clone()  # a CUDA graph's output is overwritten by its next replay
            if not self.measured:  # the first compilation, timed to the end (one synchronisation per run)
                if x.is_cuda:
                    torch.cuda.synchronize(x.device)
                self.compile_seconds, self.measured = time.perf_counter() - t0, True
            return out
        first = self.calls[shape] == 1  # a shape's first call also builds its cuDNN plans: not timed
        if not x.is_cuda:  # synchronous: the wall clock is the device's time
            t0 = time.perf_counter()
            out = self.eager(x, region_table)
            if not first:
                self.timed.setdefault(shape, []).append(time.perf_counter() - t0)
            return out
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = self.eager(x, region_table)
        end.record()
        if not first:
            self.pending.append((shape, start, end))
        return out

    def _pays(self, shape) -> bool:
        still = []
        for item in self.pending:
            s, start, end = item
            if end.query():
                self.timed.setdefault(s, []).append(start.elapsed_time(end) / 1000)
            else:
                still.append(item)
        self.pending = still
        times = self.timed.get(shape)
        if not times or len(self.compiled_shapes) >= MAX_SHAPES or not self.finished:
            return False
        calls_to_come = self.calls[shape] * (self.total - self.finished) / self.finished
        saving = calls_to_come * (sum(times) / len(times)) * (1 - 1 / SPEEDUP)
        return saving > self.compile_seconds

    def report(self) -> str:
        n, k = len(self.calls), len(self.compiled_shapes)
        if not k:
            return (f"--compile: no batch shape compiled ({n} shapes): the images to come never repaid a compilation "
                    f"(~{self.compile_seconds:.0f} s a shape), so all ran eager")
        return (f"--compile: {k} of {n} batch shapes compiled (~{self.compile_seconds:.0f} s each); the others' images "
                f"would not repay a compilation and ran eager")
