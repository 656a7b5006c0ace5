"""Where a canvas batch's GPU time goes: one batch of photo-sized images on a shared canvas, timed on the GPU per
variant, and its GPU kernels by kind (needs CUDA).

    python bench/canvas_kernels.py [--model weights] [--canvas 384x512] [--rows 64] [--repeats 20]

The batch: --rows images of random sizes that fill 80-100 % of each side of the canvas (the photo kit's typical
canvas: 375 x 500 photos on 384 x 512). Variants, each the median GPU time (CUDA events) of --repeats runs after two
warm-up runs, as `sliq score` runs the model (FeatureExtractor: bf16 autocast, the trunk's layout):
- canvas: the shipped path (masks, 1x1 layers as matrix products);
- canvas, cuDNN 1x1: 1x1 layers through cuDNN (its plans are built per shape: what scoring avoids);
- canvas, no masks: zero_outside and relu6_inside without the mask (wrong features: what the masks cost);
- canvas, ReLU6 then mask: relu6_inside as two passes (ReLU6, then the mask), as before the fourth round;
- uniform: the same pixels as a batch of one size (no canvas: cuDNN, no masks), the floor.
Then torch.profiler's GPU time by kernel name for one canvas batch (top 25).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def gpu_ms(fn, repeats: int) -> float:
    import torch

    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "weights"))
    ap.add_argument("--canvas", default="384x512", help="H x W")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    from sliq_cli.iqa.features import FeatureExtractor
    from sliq_cli.model import canvas as canvas_module
    from sliq_cli.model import efficientnet
    from sliq_cli.model.canvas import CanvasLayout
    from sliq_cli.model.checkpoint import load_encoder

    print(f"machine: {describe()}", flush=True)
    h, w = (int(v) for v in args.canvas.split("x"))
    rng = random.Random(0)
    sizes = [(rng.randint(int(0.8 * h), h), rng.randint(int(0.8 * w), w)) for _ in range(args.rows)]
    extractor = FeatureExtractor(load_encoder(args.model), device="cuda", batch_size=args.rows)
    encoder = extractor.encoder
    layout = CanvasLayout.fitting(sizes, extractor.downsampling, rows=args.rows, canvas=(h, w))
    images = [torch.randint(0, 256, (3, *s), dtype=torch.uint8, device="cuda") for s in sizes]
    batch = layout.paste(images, "cuda")  # (rows, 3, H, W) uint8

    def canvas():
        with torch.inference_mode():
            extractor._forward(encoder.scale_features, batch, layout, len(sizes))

    def uniform():
        with torch.inference_mode():
            extractor._forward(encoder.scale_features, batch, None, len(sizes))

    ValidRegion, pointwise = canvas_module.ValidRegion, efficientnet.pointwise
    results = {"canvas": gpu_ms(canvas, args.repeats)}
    efficientnet.pointwise = lambda x, weight, bias: F.conv2d(x, weight, bias)
    results["canvas, cuDNN 1x1"] = gpu_ms(canvas, args.repeats)
    efficientnet.pointwise = pointwise
    zero_outside, relu6_inside = ValidRegion.zero_outside, ValidRegion.relu6_inside
    ValidRegion.zero_outside = lambda self, x: x
    ValidRegion.relu6_inside = lambda self, x: F.relu6(x)
    results["canvas, no masks"] = gpu_ms(canvas, args.repeats)
    ValidRegion.zero_outside = zero_outside
    ValidRegion.relu6_inside = lambda self, x: self.zero_outside(F.relu6(x))
    results["canvas, ReLU6 then mask"] = gpu_ms(canvas, args.repeats)
    ValidRegion.zero_outside, ValidRegion.relu6_inside = zero_outside, relu6_inside
    results["uniform"] = gpu_ms(uniform, args.repeats)
    for name, ms in results.items():
        print(f"{name:24s} {ms:6.2f} ms a batch of {args.rows} at {h}x{w} ({args.rows / ms * 1000:,.0f} img/s)",
              flush=True)

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        canvas()
        torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():
        device_us = getattr(event, "self_device_time_total", None)
        if device_us is None:
            device_us = getattr(event, "self_cuda_time_total", 0)
        if device_us > 0:
            rows.append((device_us, event.count, event.key))
    total = sum(r[0] for r in rows)
    print(f"GPU time of one canvas batch by kernel ({total / 1000:.2f} ms in all):")
    for device_us, count, key in sorted(rows, reverse=True)[:25]:
        print(f"  {device_us / 1000:7.2f} ms {100 * device_us / total:5.1f} % x{count:<4d} {key[:110]}")


if __name__ == "__main__":
    main()
