"""Whole-process `sliq score` wall time, from exec to exit, split into phases, for folders of 1 to 1,000 photos.

    python bench/score_startup.py [--devices cuda,cpu] [--counts 1,5,100,1000] [--repeats 3] [--json FILE]
                                  [--photos DIR] [--size 512x384] [--model DIR]

Each run is a fresh `python -m sliq_cli score FOLDER --device D` subprocess with SLIQ_TRACE set (sliq_cli/trace.py):
its phase marks split the wall time into import (interpreter, sliq, torch; listing the folder), CUDA context, model
load (weights, the fused copy, the extractor), warm-up (the device's one-time start, CUDA only), first batch (to its
scores), rest (the other batches) and exit (after the last output to the process's end). Peak RSS is the child's
(wait4's ru_maxrss, which counts the forked child before its exec too: so this process never imports torch, and the
machine and the GPU check run in a subprocess). Folders: --photos DIR's images (cycled to the count), else JPEGs made
from the example photos at --size (bench/score_throughput.make_jpegs). One untimed run per device first warms the file cache; each cell is
the median of --repeats runs (peak RSS: the largest). A device the machine lacks is reported and skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO)]  # --photos lists its folder with sliq_cli, installed or not
from score_throughput import make_jpegs  # noqa: E402

from sliq_cli.trace import read as read_trace  # noqa: E402

# (phase, the mark that ends it); each phase starts at the previous mark (the first at the spawn)
PHASES = [("import", "import"), ("cuda", "cuda context"), ("model", "model loaded"), ("warm-up", "warm-up"),
          ("first batch", "first batch"), ("rest", "end")]


def make_folder(folder: Path, count: int, photos: Path | None, size: tuple[int, int]) -> None:
    folder.mkdir(parents=True)
    if photos is None:
        make_jpegs(folder, count, size)
        return
    from sliq_cli.images import list_images

    sources = list_images([photos], recursive=True)
    if not sources:
        raise SystemExit(f"no images in {photos}")
    for i in range(count):
        src = sources[i % len(sources)]
        (folder / f"{i:05d}{src.suffix.lower()}").symlink_to(src.resolve())


def run_once(folder: Path, device: str, model: str | None, work: Path) -> dict:
    """One `sliq score` process: wall seconds per phase, total, peak RSS (MB) and the scores it printed."""
    trace, out = work / "trace.jsonl", work / "out.jsonl"
    trace.unlink(missing_ok=True)
    env = {**os.environ, "SLIQ_TRACE": str(trace), "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    cmd = [sys.executable, "-m", "sliq_cli", "score", str(folder), "--device", device, "--format", "jsonl",
           *(["--model", str(Path(model).resolve()) if Path(model).exists() else model] if model else [])]
    with open(out, "w") as stdout:
        t0 = time.time()
        # from the checkout: `python -m` puts the working directory first on sys.path
        child = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=stdout, stderr=subprocess.PIPE)
        stderr = child.stderr.read()
        _, status, usage = os.wait4(child.pid, 0)
        t1 = time.time()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({child.returncode}): {stderr.decode(errors='replace')[-2000:]}")
    marks = read_trace(trace)
    if all(mark in marks for _, mark in PHASES):
        result, start = {}, t0
        for phase, mark in PHASES:
            result[phase] = marks[mark] - start
            start = marks[mark]
        result["exit"] = t1 - start
    else:  # code without the trace marks (an older checkout): the total only
        result = {phase: None for phase, _ in PHASES} | {"exit": None}
    result["total"] = t1 - t0
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # KB on Linux
    result["scored"] = sum(json.loads(line)["score"] is not None for line in out.read_text().splitlines())
    return result


def probe() -> dict:
    """machine.py's description and whether CUDA is there, from a subprocess (torch stays out of this process)."""
    code = ("import json, sys, torch; sys.path.insert(0, sys.argv[1]); from machine import describe, machine; "
            "print(json.dumps({'machine': machine(), 'describe': describe(), 'cuda': torch.cuda.is_available()}))")
    out = subprocess.run([sys.executable, "-c", code, str(BENCH)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="cuda,cpu",
                    help="comma-separated: cuda, cpu (one the machine lacks is skipped)")
    ap.add_argument("--counts", default="1,5,100,1000", help="photos per folder, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--photos", type=Path, default=None, help="a folder of photos (default: generated JPEGs)")
    ap.add_argument("--size", default="512x384", help="generated JPEGs' size WxH")
    ap.add_argument("--model", default=None, help="a model spec (default: the embedded default)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    size = tuple(int(v) for v in args.size.split("x"))
    here = probe()
    print(f"machine: {here['describe']}", flush=True)
    report = {"machine": here["machine"], "photos": str(args.photos) if args.photos else f"generated JPEGs {args.size}",
              "repeats": args.repeats, "runs": []}
    columns = [p for p, _ in PHASES] + ["exit", "total"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for count in counts:
            make_folder(tmp / f"photos{count}", count, args.photos, size)
        for device in args.devices.split(","):
            if device.startswith("cuda") and not here["cuda"]:
                print(f"{device}: no CUDA GPU on this machine, skipped", flush=True)
                continue
            run_once(tmp / f"photos{counts[0]}", device, args.model, tmp)  # warms the file cache: not counted
            print(f"{device}: seconds from exec, median of {args.repeats} (peak RSS: the largest)", flush=True)
            print(f"  {'photos':>6} " + " ".join(f"{c:>11}" for c in columns) + f" {'peak RSS':>9} {'img/s':>7}",
                  flush=True)
            for count in counts:
                runs = [run_once(tmp / f"photos{count}", device, args.model, tmp) for _ in range(args.repeats)]
                if any(r["scored"] != count for r in runs):
                    raise SystemExit(f"{device}, {count} photos: scored {[r['scored'] for r in runs]}")
                median = {c: None if runs[0][c] is None else statistics.median(r[c] for r in runs) for c in columns}
                rss = max(r["peak_rss_mb"] for r in runs)
                rate = count / median["total"]
                print(f"  {count:>6} " + " ".join("          -" if median[c] is None else f"{median[c]:>11.3f}"
                                                  for c in columns)
                      + f" {rss:>6.0f} MB {rate:>7.1f}", flush=True)
                report["runs"].append({"device": device, "photos": count, "median": median, "peak_rss_mb": rss,
                                       "runs": runs})
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
