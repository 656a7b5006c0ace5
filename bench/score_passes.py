"""One folder scored several times in one process, with a timeline of its first batches, per configuration.

    python bench/score_passes.py FOLDER [--configs default,conv,fullrows,nofirst,workers2] [--passes 3]
                                 [--model weights] [--device cuda] [--out DIR]

Each configuration runs in a fresh process (cuDNN's plans are per process): the model is loaded (not timed), then
the folder is scored --passes times. Pass 1 is what a `sliq score` run gets; later passes show the same work with
every batch shape's plans already built. Per pass: images/s from the first file read to the last score, the time to
the first score and the rate after it, the batches run, and when the first reads, GPU decodes and model launches
began and ended (ms from the pass's start). Scores must not change between passes or configurations (the largest
difference is printed). Configurations (combine with '+'): default; conv = 1x1 layers through cuDNN on canvas batches
too (model/efficientnet.py conv1x1); fullrows = short batches padded to a full batch; nofirst = no small first
batch; workersN = N reading threads. Results: bench/RESULTS.md ("Mixed-size folders on a GPU, second round").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def configure(config: str) -> int | None:
    """Apply a configuration in this process; the reading threads it asks for (None: the default)."""
    import torch.nn.functional as F

    from sliq_cli.iqa import features
    from sliq_cli.model import efficientnet

    workers = None
    for part in config.split("+"):
        if part == "conv":
            efficientnet.pointwise = lambda x, w, b: F.conv2d(x, w, b)
        elif part == "fullrows":
            features.ROW_MULTIPLE = 10**6
        elif part == "nofirst":
            features.FIRST_BATCH = 10**6
        elif part.startswith("workers"):
            workers = int(part[len("workers"):])
        elif part != "default":
            raise SystemExit(f"unknown configuration {part!r}")
    return workers


def run_one(model: str, device: str, config: str, folder: str, passes: int, out: str) -> None:
    import torch

    workers = configure(config)
    from sliq_cli.api import load
    from sliq_cli.images import list_images
    from sliq_cli.iqa.features import FeatureExtractor

    events: list = []
    start = [0.0]

    def timed(name, fn):
        def wrapper(self, *args, **kwargs):
            t = time.perf_counter()
            result = fn(self, *args, **kwargs)
            events.append((name, round(1000 * (t - start[0]), 1), round(1000 * (time.perf_counter() - start[0]), 1)))
            return result
        return wrapper

    FeatureExtractor._load_chunk = timed("read", FeatureExtractor._load_chunk)
    FeatureExtractor._decode_gpu = timed("decode", FeatureExtractor._decode_gpu)
    FeatureExtractor._forward = timed("launch", FeatureExtractor._forward)
    files = list_images([folder], recursive=True)
    t = time.perf_counter()
    scorer = load(model, None, device, batch_size=64, workers=workers)
    result = {"config": config, "images": len(files), "load_s": time.perf_counter() - t, "passes": []}
    scores = []
    for _ in range(passes):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        events.clear()
        start[0] = time.perf_counter()
        first, got = None, {}
        for r in scorer.records(files):
            first = first or time.perf_counter() - start[0]
            got[r["path"]] = r["score"]
        seconds = time.perf_counter() - start[0]
        result["passes"].append({
            "img_s": len(files) / seconds, "first_score_s": first, "after_first": (len(files) - 1) / (seconds - first),
            "batches": sum(e[0] == "launch" for e in events),
            "timeline_ms": {k: [e[1:] for e in events if e[0] == k][:4] for k in ("read", "decode", "launch")}})
        scores.append(got)
    result["max_diff_between_passes"] = max(abs(a[k] - b[k]) for a, b in zip(scores, scores[1:]) for k in a) \
        if passes > 1 else 0.0
    result["scores"] = scores[0]
    Path(out).write_text(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--configs", default="default")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--model", default=str(REPO / "weights"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, default=None, help="folder for each configuration's JSON")
    ap.add_argument("--one", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return run_one(args.model, args.device, args.one[0], args.folder, args.passes, args.one[1])
    print(f"machine: {describe()}", flush=True)
    reference = None
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        for config in args.configs.split(","):
            out = out_dir / f"{Path(args.folder).name}_{config}.json"
            subprocess.run([sys.executable, __file__, args.folder, "--model", args.model, "--device", args.device,
                            "--passes", str(args.passes), "--one", config, str(out)], check=True)
            r = json.loads(out.read_text())
            scores = r.pop("scores")
            reference = reference or scores
            diff = max(abs(scores[k] - reference[k]) for k in scores)
            print(f"{Path(args.folder).name} {config}: load {r['load_s']:.1f} s, largest score difference between "
                  f"passes {r['max_diff_between_passes']:.4f}, against the first configuration {diff:.4f}", flush=True)
            for i, p in enumerate(r["passes"], 1):
                print(f"   pass {i}: {p['img_s']:,.0f} img/s, first score {p['first_score_s']:.3f} s, then "
                      f"{p['after_first']:,.0f} img/s, {p['batches']} batches; first (start, end) ms: "
                      f"{p['timeline_ms']}", flush=True)


if __name__ == "__main__":
    main()
