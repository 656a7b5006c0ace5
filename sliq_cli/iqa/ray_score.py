"""`sliq score --ray`: the scoring engine on a Ray cluster, through Ray Data.

The driver lists the files (as a local run does: the same per-path errors), resolves model and head, and puts the
weight files' bytes, config and head arrays into the object store once (`load_parts`): workers need no copy of the
model folder, and the driver never imports torch (on a GPU machine its import costs seconds before the actors,
which import it again, can start). The image files must be readable by the workers at the paths given (one
machine, or a shared file system). Ray Data streams the paths to `RayScorer` actors, one model each (a GPU each,
or one CPU each), which score each batch of paths with a local run's own pipeline (`Scorer.records`): the same
reading and decoding (on CUDA, JPEGs by nvJPEG on the actor's GPU; else Pillow: EXIF rotation, size caps),
batching, precision and per-file errors, so scores match a local run on the same device, and only paths and scores
cross the object store. Records stream back to the driver in completion order. A worker that dies is restarted and
its batch retried (Ray Data's actor pool: max_restarts and max_task_retries -1 by default), and a batch's rows come
back only once it is done, so no image is lost and none is scored twice.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sliq_cli import trace

# Paths a GPU actor scores in one call, at most. Each call is one local run (Scorer.records), whose canvases are
# planned and whose reads are pipelined within the call only, so a call should be long; a dead actor's call is
# retried whole, so this also bounds the work redone. (1,000 photos on an H100: 17.2 s in one call against 19.8 s
# in calls of 64, on two machines; bench/RESULTS.md.)
GPU_PATHS_PER_CALL = 1024


def _reason(error) -> str | None:
    """A record's error as a caller's "error" column or RayScorer set it: Ray Data stores a column of None only as
    nulls, which come back as NaN (measured: every image of a GPU run reported "nan")."""
    return error if isinstance(error, str) else None


def driver_record(info, path: str, score, error, explanation) -> dict:
    """A local run's record of one row an actor gave back (RayScorer's columns): the error, or the score on the
    head's scale with --explain's fields (a JSON string) when the row has them. info: the run's HeadRecords."""
    import json

    if (reason := _reason(error)) is not None:
        return {"path": path, "score": None, "error": reason}
    return {**info.record(path, float(score)), **json.loads(explanation or "{}")}


class RayScorer:
    """A scorer for Ray Data's `map_batches`: one model an actor, built from `parts` (`ray_parts()` or `load_parts`)
    in the object store. A batch holds "path" and either "image" ((H, W, 3) uint8 arrays, as
    `ray.data.read_images(..., mode="RGB", include_paths=True)` gives; an optional "error" column skips rows) or
    nothing more (the actor reads and decodes the files as `sliq score` does, on CUDA with nvJPEG). It comes back as
    {"path", "score" (NaN for a failure), "error" (None, or why)}.

        ds.map_batches(RayScorer, fn_constructor_kwargs={"parts": ray_parts()}, batch_size=16,
                       compute=ray.data.ActorPoolStrategy(size=4), num_gpus=1)
    """

    def __init__(self, parts, device: str = "auto", batch_size: int | None = None, max_side: int | None = None,
                 top: int = 0, run_size: int | None = None):
        """top: with parts that hold the text tower (load_parts(..., explain=True)), add `sliq explain`'s fields for
        the `top` nearest descriptions, as a JSON string in "explanation". run_size: the number of files of the whole
        run, whose batches of paths then decode as a local run of that many files does (on CUDA: with Pillow only if
        they fit in the first batch); by default each batch decodes as a run of its own."""
        import ray
        import torch

        from sliq_cli.iqa.explain import Explainer
        from sliq_cli.iqa.score import Scorer

        if isinstance(parts, ray.ObjectRef):
            parts = ray.get(parts)
        workers = None  # on a GPU, a local run's file readers
        if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
            # An actor holds the CPUs Ray gave it, not the machine's: more threads would fight the other actors.
            workers = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
            torch.set_num_threads(workers)
        self.scorer = Scorer.from_parts(parts, device, batch_size=batch_size, max_side=max_side, workers=workers,
                                        run_size=run_size)
        self.top, self.explainer = top, None
        if top:
            self.folder = _model_folder(parts)  # removed with the actor
            self.explainer = Explainer(self.scorer.encoder, self.folder.name, self.scorer.device)

    def __call__(self, batch: dict) -> dict:
        scores, errors = (self._score_images if "image" in batch else self._score_files)(batch)
        out = {"path": batch["path"], "score": scores, "error": errors}
        if self.explainer is not None:
            out["explanation"] = [None if errors[i] else self._explain(path, errors, i)
                                  for i, path in enumerate(batch["path"])]
        return out

    def _score_images(self, batch: dict) -> tuple:
        """(scores, errors) of a batch of decoded images, rows with an "error" skipped."""
        import numpy as np

        errors = [_reason(e) for e in batch.get("error", [None] * len(batch["path"]))]
        todo = [i for i, e in enumerate(errors) if e is None]
        scores = np.full(len(errors), np.nan)
        for i, (score, error) in zip(todo, self.scorer.score_decoded([batch["image"][i] for i in todo])):
            if error is None:
                scores[i] = score
            else:
                errors[i] = error
        return scores, errors

    def _score_files(self, batch: dict) -> tuple:
        """(scores, errors) of a batch of paths, from the records a local run gives for them (Scorer.records)."""
        import numpy as np

        rows: dict[str, list[int]] = {}  # a record's path (as Path writes it) -> the batch rows that name the file
        for i, path in enumerate(batch["path"]):
            rows.setdefault(str(Path(path)), []).append(i)
        scores, errors = np.full(len(batch["path"]), np.nan), [None] * len(batch["path"])
        for rec in self.scorer.records(batch["path"]):
            i = rows[rec["path"]].pop()  # a file listed twice has a record per listing
            if rec["score"] is None:
                errors[i] = rec["error"]
            else:
                scores[i] = rec["score"]
        return scores, errors

    def _explain(self, path: str, errors: list, i: int) -> str | None:
        """`sliq explain`'s fields of one scored file as JSON, from its working image (as explain_images reads it);
        a file that fails to load that way gets its error instead."""
        import json

        import numpy as np

        from sliq_cli.images import ImageLoadError
        from sliq_cli.tadac.database import load_work_pil

        try:
            rgb = np.asarray(load_work_pil(path), dtype=np.float32) / 255.0  # (h, w, 3)
        except ImageLoadError as e:
            errors[i] = e.reason
            return None
        return json.dumps(self.explainer.describe(rgb, self.top))


def _model_folder(parts: dict):
    """The model folder rebuilt from `parts` in a temporary directory on this worker (config.json, the weight files,
    text/): the Explainer reads its text tower, and an interpolated model's text-aligned trunk, from files."""
    import json
    import tempfile

    folder = tempfile.TemporaryDirectory(prefix="sliq-model-")
    root = Path(folder.name)
    (root / "config.json").write_text(json.dumps(parts["config"]), encoding="utf-8")
    for name, data in {**parts["weights"], **parts["text"]}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return folder


def ray_parts(model: str | None = None, head: str | None = None, explain: bool = False):
    """An ObjectRef to what RayScorer actors build their model from: the weight files, config and head (with
    `explain`, the text tower's files too), put once."""
    import ray

    from sliq_cli.iqa.score import load_parts

    return ray.put(load_parts(model, head, explain))


@dataclass
class RayRun:
    """What scores mean (`scorer`: the head's records and info, no encoder) and the records, streamed."""

    scorer: object  # sliq_cli.iqa.score.HeadRecords
    records: Iterator[dict]


@contextmanager
def ray_cluster(address: str | None = None):
    """Ray, started for this run (address None: a local cluster, shut down at the end) or joined ("auto",
    "ray://HOST:PORT"). A Ray already initialised in this process is used as it is. The signal handlers ray.init
    sets are put back at the end, so Ctrl-C keeps meaning what it meant before."""
    import ray
    import ray.data

    if ray.is_initialized():
        yield ray
        return
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    # Ray Data's own lines on stderr say what sliq's progress already says ("execution finished"), or warn that its
    # progress bars are off, which sliq asks for: quiet while sliq runs, warnings and errors still shown.
    quiet = {"ray.data": logging.WARNING, "ray.data._internal.progress": logging.ERROR}
    levels = {name: logging.getLogger(name).level for name in quiet}
    try:
        with _ctrl_c_deferred():  # a Ctrl-C inside ray.init would leave its half-started processes running
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = context.print_on_execution_start = False  # sliq draws its own, on stderr
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)
        yield ray
    finally:
        ray.shutdown()
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@contextmanager
def _ctrl_c_deferred():
    """SIGINT held back until the block ends, then raised as KeyboardInterrupt (main thread only: elsewhere Python
    delivers no signal anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def score_records(files: list, model: str | None = None, head: str | None = None, address: str | None = None,
                  device: str = "auto", batch_size: int | None = None, max_side: int | None = None,
                  top: int = 0) -> RayRun:
    """`sliq score --ray`: model and head resolved here (a wrong `--head` fails before Ray starts), then records as
    Scorer.records yields them, in completion order, from an actor pool of one model per GPU (per CPU without
    GPUs). `device` "auto" uses the cluster's GPUs when it has any."""
    from importlib.util import find_spec

    from sliq_cli.errors import UsageError
    from sliq_cli.iqa.head import RidgeHead
    from sliq_cli.iqa.score import HeadRecords, load_parts

    if find_spec("ray") is None:  # before the model loads
        raise UsageError("--ray needs Ray Data: pip install 'sliq-iqa[ray]'")
    parts = load_parts(model, head, explain=bool(top))
    trace.mark("parts loaded")
    info = HeadRecords(RidgeHead(**parts["head"]), parts["source"], parts["fingerprint"], "ray")
    return RayRun(info, _stream(files, parts, info, address, device, batch_size, max_side, top))


def _stream(files, parts, info, address, device, batch_size, max_side, top) -> Iterator[dict]:
    from sliq_cli.errors import UsageError

    with ray_cluster(address) as ray:
        trace.mark("cluster ready")
        gpus = int(ray.cluster_resources().get("GPU", 0)) if device != "cpu" else 0
        if device.startswith("cuda") and not gpus:
            raise UsageError("--device cuda was asked for, but the Ray cluster has no GPU")
        # CPU actors take short calls (they plan nothing across images), which spreads the work evenly; each GPU
        # actor takes an equal share of the files, in calls of at most GPU_PATHS_PER_CALL paths.
        if gpus:
            batch = min(GPU_PATHS_PER_CALL, max(batch_size or 64, -(-len(files) // gpus)))
        else:
            batch = batch_size or 8
        blocks = max(1, -(-len(files) // batch))
        actors = min(blocks, gpus or max(1, int(ray.cluster_resources().get("CPU", 1))))
        ref = ray.put(parts)
        absolute = [str(Path(p).absolute()) for p in files]  # workers may run in another directory
        given = dict(zip(absolute, map(str, files)))
        ds = ray.data.from_items([{"path": p} for p in absolute], override_num_blocks=blocks)
        # Only paths go to the actors, which decode as a local run of all the files would (run_size). Ray Data's
        # default of two tasks in flight an actor already queues the next batch's paths there; concurrent calls
        # (max_concurrent_calls_per_actor) would share one FeatureExtractor, which is not thread-safe.
        ds = ds.map_batches(RayScorer, batch_size=batch, compute=ray.data.ActorPoolStrategy(size=actors),
                            fn_constructor_kwargs={"parts": ref, "device": "cuda" if gpus else "cpu",
                                                   "batch_size": batch_size, "max_side": max_side, "top": top,
                                                   "run_size": len(files)},
                            num_cpus=1, num_gpus=1 if gpus else 0)  # Ray Data restarts dead actors, retries
        for k, row in enumerate(ds.iter_rows()):
            if k == 0:
                trace.mark("first record")  # the actors started and finished their first call
            yield driver_record(info, given[row["path"]], row["score"], row["error"], row.get("explanation"))
        trace.mark("last record")  # then the cluster's shutdown (or leaving a joined one)
