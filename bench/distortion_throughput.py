"""Throughput of the 25 KADID distortions (distorted images per second) at 512x384, per type and device.

    python bench/distortion_throughput.py [--device cpu|cuda|all] [--cpu-batch 8] [--cuda-batch 64]
                                          [--seconds 1.0] [--types 1,2,...] [--json out.json]

Each type is timed over its five levels in turn, on a batch of the example photos resized to 512x384, after one
warm-up pass; CUDA timings synchronise only at the ends. Torch-native and codec-bound types (JPEG, JPEG2000) are
summarised separately; a summary rate is total images / total time, i.e. the rate of cycling through the types.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def photo_batch(batch: int, device: str):
    """(batch, 3, 384, 512) float [0, 1]: the example photos, resized and repeated."""
    import numpy as np
    import torch
    from PIL import Image

    photos = []
    for path in sorted((REPO / "examples").glob("*.jpg")):
        with Image.open(path) as im:
            photos.append(torch.from_numpy(np.array(im.convert("RGB").resize((512, 384), Image.BICUBIC))))
    x = torch.stack([photos[i % len(photos)] for i in range(batch)]).permute(0, 3, 1, 2)
    return (x.float() / 255).to(device)


def time_type(type_id: int, images, seconds: float) -> float:
    """Distorted images per second for one type, cycling through levels 1..5."""
    import torch

    from sliq_cli.tadac.distortions import distort

    cuda = images.is_cuda
    gen = torch.Generator(device=images.device).manual_seed(0)
    for level in range(1, 6):  # warm-up: kernels, caches, cuDNN/nvJPEG handles
        distort(images, type_id, level, gen)
    if cuda:
        torch.cuda.synchronize()
    calls, t0 = 0, time.perf_counter()
    while True:
        for level in range(1, 6):
            distort(images, type_id, level, gen)
        calls += 5
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return calls * images.shape[0] / elapsed


def summarise(rows: list[dict]) -> dict:
    out = {}
    for codec, key in ((False, "torch_native"), (True, "codec")):
        part = [r for r in rows if r["codec"] == codec]
        if part:
            # Rate of a workload that spends equal image counts on every type: harmonic mean.
            cycle = len(part) / sum(1.0 / r["images_per_s"] for r in part)
            slowest = min(part, key=lambda r: r["images_per_s"])
            out[key] = {"images_per_s": cycle, "slowest": slowest["name"], "slowest_images_per_s": slowest["images_per_s"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--cpu-batch", type=int, default=8)
    parser.add_argument("--cuda-batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum timing per type")
    parser.add_argument("--types", default="", help="comma-separated type ids (default: all 25)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()

    import torch

    from sliq_cli.tadac.distortions import DISTORTIONS

    print(describe(), flush=True)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            sys.exit("no CUDA device")
        devices.remove("cuda")
    wanted = {int(t) for t in args.types.split(",") if t} or {d.id for d in DISTORTIONS}

    results: dict = {"machine": machine(), "size": [512, 384], "devices": {}}
    for device in devices:
        batch = args.cuda_batch if device == "cuda" else args.cpu_batch
        images = photo_batch(batch, device)
        rows = []
        print(f"\n{device}, batch {batch}, 512x384")
        print(f"{'#':>3} {'type':32s} {'kind':6s} {'images/s':>10s}")
        for d in DISTORTIONS:
            if d.id not in wanted:
                continue
            rate = time_type(d.id, images, args.seconds)
            rows.append({"type": d.id, "name": d.name, "codec": d.codec, "images_per_s": rate})
            print(f"{d.id:3d} {d.name:32s} {'codec' if d.codec else 'torch':6s} {rate:10.1f}", flush=True)
        summary = summarise(rows)
        for key, s in summary.items():
            print(f"{key}: {s['images_per_s']:.1f} images/s cycling through the types; "
                  f"slowest {s['slowest']} at {s['slowest_images_per_s']:.1f}")
        results["devices"][device] = {"batch": batch, "types": rows, "summary": summary}
    if args.json:
        from sliq_cli.atomic import atomic_write_json

        atomic_write_json(args.json, results)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
