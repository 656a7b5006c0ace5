"""`sliq score --ray` against plain `sliq score`: images/s, overhead, scores, and what crosses the object store.

    python bench/score_ray.py ../shared/data/photos [--n 500] [--max-side N] [--json out.json]

Runs of the same command on the first N photos (sorted paths), each a fresh process timed whole (start-up, model
load, scoring): plain `sliq score` (before and after the others; the faster counts), `--ray` (starts and stops a
local cluster of this machine's CPUs), `--ray --ray-address auto` on a cluster `ray start --head` started
beforehand (how a cluster is joined; its start is not timed), and twice `--ray-pool` on a warm pool that `sliq
ray-pool start` started there (its start timed apart: paid once, not by each run). A Ray run's time is split by its
SLIQ_TRACE marks (sliq_cli/trace.py): driver start (imports, the model's parts), cluster (import ray, ray.init),
actors + first call (their start, to the first record), other records, shutdown (to the process's end). Then: the
largest score difference against the plain run (on a GPU machine, Ray's GPU actors against `sliq score --device
cuda`), the bytes that cross the object store (the model's parts once per actor; per image, a path and a score), and
a scaling estimate for N actors: each reads its own files, so N actors at the measured rate need N times the file
bytes a second from the storage the workers share.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "bench"), str(REPO)]  # this tree's sliq_cli, as the timed runs (PYTHONPATH) use
from machine import describe, machine  # noqa: E402

from sliq_cli.trace import read as read_trace  # noqa: E402

RAY_CLI = "from ray.scripts.scripts import main; main()"  # the `ray` command, run by this interpreter


# A --ray run's SLIQ_TRACE marks (iqa/ray_score.py, cli/app.py) and the phase each one ends, from the spawn
RAY_PHASES = [("parts loaded", "driver start"), ("cluster ready", "cluster"), ("first record", "actors + first call"),
              ("last record", "other records"), ("end", "shutdown")]


def child_env() -> dict:
    """The environment of the bench's `sliq` processes: this tree first on the path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def run(files: list[Path], *extra: str) -> tuple[float, dict[str, float], dict[str, float]]:
    """(wall seconds, path -> score, phase -> seconds from the SLIQ_TRACE marks, for --ray runs) of `sliq score
    FILES... -f jsonl EXTRA` in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.jsonl"
        env = {**child_env(), "SLIQ_TRACE": str(trace)}
        t, t0 = time.perf_counter(), time.time()
        # cwd: `python -m` puts the working directory first on sys.path, before PYTHONPATH; from here, this tree runs
        out = subprocess.run([sys.executable, "-m", "sliq_cli", "score", *map(str, files), "-f", "jsonl", *extra],
                             capture_output=True, text=True, env=env, check=True, cwd=REPO).stdout
        wall = time.perf_counter() - t
        marks = read_trace(trace)
    phases, start = {}, t0
    if all(mark in marks for mark, _ in RAY_PHASES):
        for mark, phase in RAY_PHASES:
            phases[phase], start = marks[mark] - start, marks[mark]
    return wall, {r["path"]: r["score"] for r in map(json.loads, out.splitlines())}, phases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos", type=Path)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--max-side", type=int)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import numpy as np

    from sliq_cli.images import list_images
    from sliq_cli.iqa.score import load_parts

    files = [p.absolute() for p in list_images([str(args.photos)], recursive=True)[: args.n]]  # the runs' cwd: REPO
    extra = ["--max-side", str(args.max_side)] if args.max_side else []
    print(f"machine: {describe()}; {len(files)} photos from {args.photos}", flush=True)

    load = [os.getloadavg()[0]]
    first_s, local, _ = run(files, *extra)
    ray_s, remote, ray_phases = run(files, *extra, "--ray")
    subprocess.run([sys.executable, "-c", RAY_CLI, "start", "--head", "--include-dashboard=false",
                    "--node-ip-address=127.0.0.1"], check=True, capture_output=True)
    try:
        joined_s, joined, joined_phases = run(files, *extra, "--ray", "--ray-address", "auto")
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sliq_cli", "ray-pool", "start", "--name", "bench", *extra],
                       check=True, capture_output=True, cwd=REPO, env=child_env())
        pool_start_s = time.perf_counter() - t
        pooled = [run(files, "--ray-pool", "bench") for _ in range(2)]  # two runs on one warm pool
    finally:
        subprocess.run([sys.executable, "-c", RAY_CLI, "stop"], check=True, capture_output=True)
    last_s, _, _ = run(files, *extra)  # plain again: the machine is shared, so its load may have changed meanwhile
    local_s = min(first_s, last_s)  # overheads against the faster plain run
    load.append(os.getloadavg()[0])
    pool_s, pool_scores, pool_phases = min(pooled, key=lambda r: r[0])
    diff = max(abs(scores[p] - local[p]) for scores in (remote, joined, pool_scores) for p in local
               if local[p] is not None)

    parts = load_parts()
    model_bytes = sum(len(data) for data in parts["weights"].values())
    head_bytes = sum(v.nbytes for v in parts["head"].values() if isinstance(v, np.ndarray))
    file_bytes = float(np.mean([f.stat().st_size for f in files]))
    cpus = os.cpu_count() or 1

    result = {
        "machine": machine(), "photos": len(files), "max_side": args.max_side, "load_average": load,
        "local_s": [first_s, last_s], "ray_local_cluster_s": ray_s, "ray_joined_s": joined_s,
        "local_img_s": len(files) / local_s, "ray_local_cluster_img_s": len(files) / ray_s,
        "ray_joined_img_s": len(files) / joined_s,
        "overhead_local_cluster": ray_s / local_s - 1, "overhead_joined": joined_s / local_s - 1,
        "max_abs_score_diff": diff,
        "per_cpu_actor_img_s": len(files) / pool_s / cpus,
        "model_parts_bytes": model_bytes + head_bytes, "file_bytes_per_image": file_bytes,
        "ray_local_cluster_phases_s": ray_phases, "ray_joined_phases_s": joined_phases,
        "pool_start_s": pool_start_s, "ray_pool_s": [r[0] for r in pooled], "ray_pool_img_s": len(files) / pool_s,
        "overhead_pool": pool_s / local_s - 1, "ray_pool_phases_s": pool_phases,
    }
    print(f"load average (1 min) before and after: {load[0]:.1f}, {load[1]:.1f}")
    print(f"plain sliq score:             {local_s:6.1f} s  {result['local_img_s']:6.1f} img/s  "
          f"(the faster of {first_s:.1f} s before and {last_s:.1f} s after the Ray runs)")
    print(f"--ray (local cluster):        {ray_s:6.1f} s  {result['ray_local_cluster_img_s']:6.1f} img/s  "
          f"overhead {100 * result['overhead_local_cluster']:+.0f} %")
    print(f"--ray --ray-address auto:     {joined_s:6.1f} s  {result['ray_joined_img_s']:6.1f} img/s  "
          f"overhead {100 * result['overhead_joined']:+.0f} %")
    print(f"--ray-pool (warm, 2 runs):    {pool_s:6.1f} s  {result['ray_pool_img_s']:6.1f} img/s  "
          f"overhead {100 * result['overhead_pool']:+.0f} %  (runs {', '.join(f'{r[0]:.1f}' for r in pooled)} s; "
          f"`sliq ray-pool start` took {pool_start_s:.1f} s, once)")
    for name, phases in (("local cluster", ray_phases), ("auto", joined_phases), ("pool", pool_phases)):
        if phases:  # from the run's trace marks; none from a tree without them
            print(f"  --ray phases ({name}): " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()))
    print(f"largest score difference against plain: {diff:.2g}")
    print(f"object store: model parts {model_bytes / 1e6:.1f} MB + head {head_bytes / 1e3:.0f} kB once per actor; "
          f"per image a path and a score")
    rate = result["ray_pool_img_s"]  # a warm pool's whole run: a lower bound on an actor's steady rate
    for n in (1, 8):
        print(f"scaling: {n} actor(s) at {rate:.0f} img/s each: {n * rate:.0f} img/s, reading "
              f"{n * rate * file_bytes / 1e6:.0f} MB/s of files ({file_bytes / 1e3:.0f} kB a file)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
