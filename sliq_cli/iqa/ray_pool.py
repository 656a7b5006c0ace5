"""A warm scorer pool on a long-lived Ray cluster: `sliq ray-pool start`, then `sliq score --ray --ray-pool NAME`.

Each `sliq score --ray` run starts its own actors: new worker processes that import torch, build the model and
start CUDA before the first image (on an H100 host, ~12 s a run joining a running cluster, against 0.5 s to score
a thousand photos once started; bench/RESULTS.md), since every run is a new Ray job. A pool pays that once:
detached named actors in the namespace "sliq" that outlive the command that started them and serve every later run
that names the pool, until `sliq ray-pool stop`. A run then costs joining the cluster and the scoring itself.

    NAME-registry   the pool's description (model, fingerprint, head, device, size) and the model's parts, put in
                    the object store by this actor, so actors restarted after the starting command has gone still
                    find them
    NAME-0 .. K-1   PoolScorer actors (a GPU each, or a CPU each), each a RayScorer: a local run's pipeline

A run splits its files into calls (each actor an equal share, in calls of at most GPU_PATHS_PER_CALL paths on GPUs,
`batch_size` on CPUs), keeps two calls in flight an actor and streams the records back in completion order. An
actor that dies is restarted by Ray and its call retried (max_restarts / max_task_retries -1), and a call's records
come back only once it is done: nothing lost, nothing twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from sliq_cli import trace
from sliq_cli.errors import UsageError
from sliq_cli.iqa.ray_score import GPU_PATHS_PER_CALL, RayRun, RayScorer, driver_record, ray_cluster

NAMESPACE = "sliq"
IN_FLIGHT = 2  # calls queued at each actor: the next call's paths are there when the current one ends


@dataclass(frozen=True)
class PoolInfo:
    name: str
    actors: int
    device: str  # "cuda" or "cpu", as the actors run
    source: str  # the model folder the parts were read from (on the machine that started the pool)
    fingerprint: str
    head: str  # the head's name
    top: int  # with the text tower: `sliq score --explain`'s nearest descriptions (0: scores only)
    batch_size: int | None
    max_side: int | None

    def to_dict(self) -> dict:
        return asdict(self)


class PoolRegistry:
    """A pool's description and the model's parts, held for the pool's actors (their constructor and restarts)."""

    def __init__(self, info: PoolInfo, parts: dict):
        import ray

        self.description = info
        self.parts_ref = ray.put(parts)  # owned by this detached actor: alive as long as the pool
        self.head_arrays = parts["head"]  # what a run's driver needs of them (kB, against the weights' MB)

    def info(self) -> PoolInfo:
        return self.description

    def head(self) -> dict:
        return self.head_arrays

    def parts(self) -> list:
        return [self.parts_ref]  # in a list: Ray hands the reference itself, not its value, to the caller


class PoolScorer:
    """One model of a pool: its parts from the registry, then RayScorer calls of paths."""

    def __init__(self, registry: str, device: str, batch_size: int | None, max_side: int | None, top: int):
        import ray

        (ref,) = ray.get(ray.get_actor(registry, namespace=NAMESPACE).parts.remote())
        self.scorer = RayScorer(ref, device, batch_size=batch_size, max_side=max_side, top=top)

    def pid(self) -> int:
        import os

        return os.getpid()

    def score(self, paths: list[str], run_size: int) -> dict:
        """RayScorer's columns for `paths`, decoded as a local run of `run_size` files would decode them."""
        self.scorer.scorer.extractor.run_size = run_size
        return self.scorer({"path": paths})


def _registry_name(name: str) -> str:
    return f"{name}-registry"


def _actor_name(name: str, k: int) -> str:
    return f"{name}-{k}"


@contextmanager
def _joined(address: str):
    """The running cluster at `address` (ray_cluster), where finding none is a usage error: a pool lives on a
    cluster started apart from any one command."""
    joined = False
    try:
        with ray_cluster(address) as ray:
            joined = True
            yield ray
    except ConnectionError as e:
        if joined:
            raise
        raise UsageError(f"no Ray cluster to join at {address!r}: start one first (`ray start --head`) ({e})") from None


def find_pool(ray, name: str) -> PoolInfo | None:
    try:
        registry = ray.get_actor(_registry_name(name), namespace=NAMESPACE)
    except ValueError:  # no actor of that name
        return None
    return ray.get(registry.info.remote())


def start_pool(name: str = "sliq", model: str | None = None, head: str | None = None, actors: int | None = None,
               device: str = "auto", address: str = "auto", batch_size: int | None = None,
               max_side: int | None = None, top: int = 0) -> PoolInfo:
    """Start a pool on the running cluster at `address`; returns once every actor holds its model. actors: default
    one per GPU of the cluster (one per CPU without GPUs, or with device "cpu"). top: hold the text tower, for runs
    with `--explain` (its number of nearest descriptions)."""
    from sliq_cli.iqa.head import RidgeHead
    from sliq_cli.iqa.score import load_parts

    parts = load_parts(model, head, explain=bool(top))  # a wrong model or head fails before the cluster is joined
    with _joined(address) as ray:
        if find_pool(ray, name) is not None:
            raise UsageError(f"a scorer pool named {name!r} is running already (`sliq ray-pool stop --name {name}`)")
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if device != "cpu" else 0
        if device.startswith("cuda") and not gpus:
            raise UsageError("--device cuda was asked for, but the Ray cluster has no GPU")
        size = actors or gpus or max(1, int(resources.get("CPU", 1)))
        info = PoolInfo(name, size, "cuda" if gpus else "cpu", parts["source"], parts["fingerprint"],
                        RidgeHead(**parts["head"]).name, top, batch_size, max_side)
        detached = {"namespace": NAMESPACE, "lifetime": "detached"}
        registry = ray.remote(PoolRegistry).options(name=_registry_name(name), num_cpus=0, **detached)
        ray.get(registry.remote(info, parts).info.remote())
        scorer = ray.remote(PoolScorer)
        members = [scorer.options(name=_actor_name(name, k), num_cpus=1, num_gpus=1 if gpus else 0, max_restarts=-1,
                                  max_task_retries=-1, **detached).remote(_registry_name(name), info.device,
                                                                          batch_size, max_side, top)
                   for k in range(size)]
        try:
            ray.get([m.pid.remote() for m in members])  # each has built its model; a constructor's error shows here
        except BaseException:
            _kill(ray, name, size)
            raise
        return info


def pool_status(name: str = "sliq", address: str = "auto") -> tuple[PoolInfo, list[int | None]]:
    """The pool's description and each actor's process id (None: not answering within 30 s)."""
    with _joined(address) as ray:
        info = _pool(ray, name)
        pids: list[int | None] = []
        for k in range(info.actors):
            try:
                pids.append(ray.get(ray.get_actor(_actor_name(name, k), namespace=NAMESPACE).pid.remote(),
                                    timeout=30))
            except (ValueError, ray.exceptions.RayError):  # gone, dead, restarting: reported, not raised
                pids.append(None)
        return info, pids


def stop_pool(name: str = "sliq", address: str = "auto") -> PoolInfo:
    with _joined(address) as ray:
        info = _pool(ray, name)
        _kill(ray, name, info.actors)
        return info


def _pool(ray, name: str) -> PoolInfo:
    info = find_pool(ray, name)
    if info is None:
        raise UsageError(f"no scorer pool named {name!r} on this Ray cluster: start one with `sliq ray-pool start "
                         f"--name {name}`")
    return info


def _kill(ray, name: str, size: int) -> None:
    for actor in [*(_actor_name(name, k) for k in range(size)), _registry_name(name)]:
        try:
            ray.kill(ray.get_actor(actor, namespace=NAMESPACE), no_restart=True)
        except ValueError:  # not there (a start that failed half-way)
            pass


def pool_score_records(files: list, name: str = "sliq", address: str | None = None, model: str | None = None,
                       head: str | None = None, top: int = 0) -> RayRun:
    """`sliq score --ray --ray-pool NAME`: records as Scorer.records yields them, in completion order, from the
    pool's actors, scored by the pool's model and head; a `model` or `head` given too must be the pool's."""
    from sliq_cli.iqa.head import RidgeHead
    from sliq_cli.iqa.score import HeadRecords

    trace.mark("parts loaded")  # the pool holds them: the driver's own start ends here
    stack = ExitStack()
    ray = stack.enter_context(_joined(address or "auto"))
    try:
        trace.mark("cluster ready")
        info = _pool(ray, name)
        head_arrays = ray.get(ray.get_actor(_registry_name(name), namespace=NAMESPACE).head.remote())
        _check_asked(info, head_arrays, model, head, top)
    except BaseException:
        stack.close()
        raise
    info_records = HeadRecords(RidgeHead(**head_arrays), info.source, info.fingerprint, f"ray pool {name}")

    def records() -> Iterator[dict]:
        with stack:
            yield from _stream(ray, info, files, info_records, top)

    return RayRun(info_records, records())


def _check_asked(info: PoolInfo, head_arrays: dict, model: str | None, head: str | None, top: int) -> None:
    """A run that asks for what the pool does not serve is refused: its scores would not be what it asked."""
    import dataclasses

    import numpy as np

    from sliq_cli.iqa.score import load_parts, resolve_parts

    if top and not info.top:
        raise UsageError(f"scorer pool {info.name!r} holds no text tower for --explain: start it with --explain")
    if model is None and head is None:
        return
    _, config, ridge = resolve_parts(model, head)  # config.json's fingerprint: no weights read
    if ridge is None:  # an old config without a fingerprint: only the weights say which model it is
        asked = load_parts(model, head)
        fingerprint, asked_head = asked["fingerprint"], asked["head"]
    else:
        fingerprint, asked_head = config["fingerprint"], dataclasses.asdict(ridge)
    same = fingerprint == info.fingerprint and all(
        np.array_equal(asked_head[k], head_arrays[k]) for k in ("weight", "bias", "feature_mean", "feature_std"))
    if not same:
        raise UsageError(f"scorer pool {info.name!r} serves model {info.fingerprint[:12]} with head {info.head!r}; "
                         "this run asks for another model or head: start a pool for it, or leave out --model/--head")


def _stream(ray, info: PoolInfo, files: list, head_records, top: int) -> Iterator[dict]:
    members = [ray.get_actor(_actor_name(info.name, k), namespace=NAMESPACE) for k in range(info.actors)]
    absolute = [str(Path(p).absolute()) for p in files]  # the actors run in another directory
    given = dict(zip(absolute, map(str, files)))
    per_call = GPU_PATHS_PER_CALL if info.device == "cuda" else (info.batch_size or 8)
    size = min(per_call, max(1, -(-len(absolute) // len(members))))  # on GPUs: each actor an equal share
    calls = deque(absolute[k:k + size] for k in range(0, len(absolute), size))
    pending: dict = {}  # ObjectRef of a call -> the actor running it

    def submit(actor) -> None:
        if calls:
            pending[actor.score.remote(calls.popleft(), len(absolute))] = actor

    for actor in members:
        for _ in range(IN_FLIGHT):
            submit(actor)
    first = True
    while pending:
        (done,), _ = ray.wait(list(pending), num_returns=1)
        out = ray.get(done)
        submit(pending.pop(done))
        if first:
            trace.mark("first record")  # the actors' first call came back
            first = False
        # a pool that holds the text tower explains every call; a run without --explain leaves those fields out
        explanations = (top and out.get("explanation")) or [None] * len(out["path"])
        for path, score, error, explanation in zip(out["path"], out["score"], out["error"], explanations):
            yield driver_record(head_records, given[path], score, error, explanation)
    trace.mark("last record")
