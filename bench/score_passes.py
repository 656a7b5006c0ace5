"""One folder scored several times in one process, with a timeline of its first batches, per configuration.

    python bench/score_passes.py FOLDER [--configs default,conv,fullrows,nofirst,workers2] [--passes 3] [--trace]
                                 [--model weights | --arch slique-resnet50] [--device cuda] [--out DIR]

Each configuration runs in a fresh process (cuDNN's plans are per process): the model is loaded (not timed), then
the folder is scored --passes times. Pass 1 is what a `sliq score` run gets; later passes show the same work with
every batch shape's plans already built. Per pass: images/s from the first file read to the last score, the time to
the first score and the rate after it, the batches run, and when the first reads, GPU decodes and model launches
began and ended (ms from the pass's start). Scores must not change between passes or configurations (the largest
difference is printed). Configurations (combine with '+'): default; conv = 1x1 layers through cuDNN on canvas batches
too (model/efficientnet.py conv1x1); fullrows = short batches padded to a full batch; rows8 = short batches padded to
a multiple of 8 rows only (no full-shape reuse, no leftover merge); nofirst = no small first batch; workersN = N
reading threads; switch = a 0.2 ms GIL switch interval; eagerload = every CUDA kernel loaded when CUDA starts
(CUDA_MODULE_LOADING=EAGER, a diagnosis); nosizecheck = no JPEG header check; bf16 = a bf16 trunk without autocast;
addmm = 1x1 layers as baddbmm with the bias fused. --trace prints passes 1-2 batch by batch (rows, canvas, ms the
model's thread waited for the batch, ms launching it, GPU start and duration); --arch scores with a registered encoder
at random weights. Results: bench/RESULTS.md ("Mixed-size folders on a GPU", second to fourth rounds).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def configure(config: str) -> tuple[int | None, object]:
    """Apply a configuration in this process: (the reading threads it asks for (None: the default), the BatchPolicy)."""
    import dataclasses

    import torch
    import torch.nn.functional as F

    from sliq_cli.iqa import features
    from sliq_cli.iqa.batching import BatchPolicy
    from sliq_cli.model import efficientnet, encoder

    workers, policy = None, BatchPolicy()
    for part in config.split("+"):
        if part == "conv":
            efficientnet.pointwise = lambda x, w, b: F.conv2d(x, w, b)
        elif part == "switch":
            sys.setswitchinterval(2e-4)
        elif part == "nosizecheck":
            features.jpeg_size_error = lambda data, path: None
        elif part == "addmm":
            def fused(x, weight, bias):
                b, c, h, w = x.shape
                wt = weight.flatten(1).expand(b, -1, -1)
                xr = x.reshape(b, c, h * w)
                y = torch.bmm(wt, xr) if bias is None else torch.baddbmm(bias.to(x.dtype)[:, None], wt, xr)
                return y.view(b, -1, h, w)
            efficientnet.pointwise = fused
        elif part == "bf16":
            normalize, run = encoder.ImageEncoder.normalize, features.FeatureExtractor._run
            # to the trunk's dtype: bf16 on CUDA (run_bf16 converts it), unchanged on a CPU
            encoder.ImageEncoder.normalize = lambda self, x: normalize(self, x).to(next(self.trunk.parameters()).dtype)

            def run_bf16(self, fn, x):
                if not self.cuda:
                    return run(self, fn, x)
                trunk = self.encoder.trunk
                if next(trunk.parameters()).dtype != torch.bfloat16:  # once, on the first batch
                    trunk.to(torch.bfloat16)
                return fn(x.contiguous(memory_format=self._memory_format()))
            features.FeatureExtractor._run = run_bf16
        elif part == "fullrows":
            policy = dataclasses.replace(policy, row_multiple=10**6)
        elif part == "nofirst":
            policy = dataclasses.replace(policy, first_batch=10**6)
        elif part == "rows8":
            policy = dataclasses.replace(policy, new_shape_pixels=-1)
        elif part == "eagerload":
            os.environ["CUDA_MODULE_LOADING"] = "EAGER"  # read when CUDA starts, after this
        elif part.startswith("workers"):
            workers = int(part[len("workers"):])
        elif part != "default":
            raise SystemExit(f"unknown configuration {part!r}")
    return workers, policy


def random_model(arch: str, folder: Path) -> tuple[str, str]:
    """A registered encoder with random weights and a random head, saved in folder: (model dir, head file)."""
    import numpy as np

    from sliq_cli.iqa.head import RidgeHead
    from sliq_cli.model.checkpoint import load_encoder, save_encoder
    from sliq_cli.model.registry import create_model

    save_encoder(create_model(arch), folder / "model")
    encoder = load_encoder(folder / "model")
    dim = encoder.config.feature_dim
    RidgeHead(np.random.default_rng(0).normal(size=dim), 50.0, np.zeros(dim), np.ones(dim),
              {"name": "random", "encoder_fingerprint": encoder.fingerprint}).save(folder / "random.safetensors")
    return str(folder / "model"), str(folder / "random.safetensors")


def run_one(model: str, head: str | None, device: str, config: str, folder: str, passes: int, out: str) -> None:
    import torch

    workers, policy = configure(config)
    from sliq_cli.images import list_images
    from sliq_cli.iqa.features import FeatureExtractor
    from sliq_cli.iqa.score import Scorer

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
    cuda = device.startswith("cuda")
    batches: list = []  # per batch: (rows, H, W, CPU ms waiting for it, CPU ms launching it, GPU start and end events)
    waited = [0.0]
    forward = FeatureExtractor._forward

    def traced_forward(self, scale_features, batch, layout, n):
        t = time.perf_counter()
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(2)] if cuda else None
        if ends:
            ends[0].record()
        out = forward(self, scale_features, batch, layout, n)
        if ends:
            ends[1].record()
        batches.append((*batch.shape[:1], *batch.shape[-2:], waited[0], 1000 * (time.perf_counter() - t), ends))
        waited[0] = 0.0
        return out

    from sliq_cli.background import Background
    next_item = Background.__next__

    def traced_next(self):
        t = time.perf_counter()
        try:
            return next_item(self)
        finally:
            waited[0] += 1000 * (time.perf_counter() - t)

    FeatureExtractor._forward, Background.__next__ = traced_forward, traced_next
    files = list_images([folder], recursive=True)
    t = time.perf_counter()
    scorer = Scorer.load(model, head, device, batch_size=64, workers=workers, policy=policy)
    result = {"config": config, "images": len(files), "load_s": time.perf_counter() - t, "passes": []}
    scores = []
    for _ in range(passes):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        events.clear()
        batches.clear()
        origin = torch.cuda.Event(enable_timing=True) if cuda else None
        if origin:
            origin.record()
        start[0] = time.perf_counter()
        first, got = None, {}
        for r in scorer.records(files):
            first = first or time.perf_counter() - start[0]
            got[r["path"]] = r["score"]
        seconds = time.perf_counter() - start[0]
        trace = []
        for rows, h, w, wait, launch, ends in batches:
            gpu = (origin.elapsed_time(ends[0]), ends[0].elapsed_time(ends[1])) if ends else (0.0, 0.0)
            trace.append([rows, h, w, round(wait, 1), round(launch, 1), round(gpu[0], 1), round(gpu[1], 1)])
        result["passes"].append({
            "trace": trace, "gpu_busy_ms": sum(b[6] for b in trace), "waiting_ms": sum(b[3] for b in trace),
            "launching_ms": sum(b[4] for b in trace),
            "decoding_ms": sum(e[2] - e[1] for e in events if e[0] == "decode"),
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
    ap.add_argument("--arch", default=None, help="a registered encoder with random weights instead of --model")
    ap.add_argument("--head", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--trace", action="store_true", help="print passes 1-2 batch by batch")
    ap.add_argument("--out", type=Path, default=None, help="folder for each configuration's JSON")
    ap.add_argument("--one", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return run_one(args.model, args.head, args.device, args.one[0], args.folder, args.passes, args.one[1])
    print(f"machine: {describe()}", flush=True)
    reference = None
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        model, head = random_model(args.arch, Path(tmp)) if args.arch else (args.model, None)
        for config in args.configs.split(","):
            out = out_dir / f"{Path(args.folder).name}_{config}.json"
            subprocess.run([sys.executable, __file__, args.folder, "--model", model, *(["--head", head] if head else []),
                            "--device", args.device,
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
                print(f"     GPU busy {p['gpu_busy_ms']:.0f} ms, consumer waiting {p['waiting_ms']:.0f} ms, launching "
                      f"{p['launching_ms']:.0f} ms, decoding {p['decoding_ms']:.0f} ms", flush=True)
                if args.trace and i <= 2:
                    print("     rows H W wait launch gpu_start gpu_ms: " + " | ".join(
                        " ".join(f"{v:g}" for v in b) for b in p["trace"]), flush=True)


if __name__ == "__main__":
    main()
