"""What a new input shape costs the encoder on a GPU, and which layers pay it.

    python bench/new_shape_cost.py [--model weights] [--shapes 4]

For each setting (dtype x memory layout x cuDNN on/off), the encoder's quality features run at `--shapes` new input
shapes (batch 4, photo-like sizes): the first call at a shape (cuDNN plan building, kernel loading) against the
second. Then, bf16 channels_last, the first call of single layers of each kind at new shapes: which convolutions
cost it. Each setting gets shapes no earlier setting used (plans are cached per shape and dtype).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def timed(fn) -> float:
    import torch

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "weights"))
    ap.add_argument("--shapes", type=int, default=4)
    args = ap.parse_args()

    import torch

    from sliq_cli.model.checkpoint import load_encoder

    print(f"machine: {describe()}; cuDNN {torch.backends.cudnn.version()}", flush=True)
    encoder = load_encoder(args.model, device="cuda").eval().fuse_for_inference()
    side = iter(range(200, 2000, 8))  # every shape below is new to the process
    settings = [("bf16", True, True), ("bf16", False, True), ("fp16", True, True), ("fp32", False, True),
                ("bf16", True, False), ("bf16", False, False)]
    for dtype, channels_last, cudnn in settings:
        torch.backends.cudnn.enabled = cudnn
        encoder.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        firsts, seconds = [], []
        for _ in range(args.shapes):
            h = next(side)
            x = torch.rand(4, 3, h, h + 96, device="cuda")
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)

            def run():
                with torch.inference_mode(), torch.autocast("cuda", dtype=getattr(torch, {
                        "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[dtype]), enabled=dtype != "fp32"):
                    encoder.quality_features(x)
            firsts.append(timed(run))
            seconds.append(timed(run))
        print(f"{dtype} {'channels_last' if channels_last else 'NCHW':13s} cuDNN {'on ' if cudnn else 'off'}: first call "
              f"at a new shape {1000 * sum(firsts) / len(firsts):7.0f} ms (each: "
              f"{', '.join(f'{1000 * t:.0f}' for t in firsts)}), second {1000 * sum(seconds) / len(seconds):6.1f} ms",
              flush=True)
    torch.backends.cudnn.enabled = True
    # steady state at batch 64, and a new shape's cost, per memory layout: the loaded model and a random ResNet-50
    from sliq_cli.model.registry import create_model

    for name, model in (("loaded", encoder), ("slique-resnet50", create_model("slique-resnet50").cuda().eval())):
        for channels_last in (True, False):
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            model.to(memory_format=fmt)
            h = next(side)
            x = torch.rand(64, 3, h, h + 128, device="cuda").contiguous(memory_format=fmt)

            def run():
                with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                    model.quality_features(x)
            first = timed(run)
            steady = min(timed(run) for _ in range(5))
            print(f"{name} {'channels_last' if channels_last else 'NCHW':13s} batch 64 at {h}x{h + 128}: first call "
                  f"{1000 * first:.0f} ms, then {64 / steady:,.0f} img/s", flush=True)
    # EfficientNet's depthwise convolutions without cuDNN (torch's own kernels), the rest as it is, batch 64
    from contextlib import contextmanager

    from sliq_cli.model.efficientnet import SameConv2d

    @contextmanager
    def depthwise_without_cudnn(on: bool):
        original = SameConv2d.forward

        def forward(self, x):
            if self.groups == 1:
                return original(self, x)
            with torch.backends.cudnn.flags(enabled=False):
                return original(self, x)
        if on:
            SameConv2d.forward = forward
        try:
            yield
        finally:
            SameConv2d.forward = original

    for label, channels_last, cudnn, dw_off in (("NCHW, cuDNN", False, True, False),
                                                 ("NCHW, no cuDNN", False, False, False),
                                                 ("NCHW, depthwise without cuDNN", False, True, True),
                                                 ("channels_last, depthwise without cuDNN", True, True, True)):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        encoder.to(memory_format=fmt)
        torch.backends.cudnn.enabled = cudnn
        firsts, rates = [], []
        with depthwise_without_cudnn(dw_off):
            for _ in range(2):
                h = next(side)
                x = torch.rand(64, 3, h, h + 128, device="cuda").contiguous(memory_format=fmt)

                def run():
                    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                        encoder.quality_features(x)
                firsts.append(timed(run))
                rates.append(64 / min(timed(run) for _ in range(4)))
        torch.backends.cudnn.enabled = True
        print(f"loaded, {label:40s} batch 64 at ~{h}x{h + 128}: first call at a new shape "
              f"{1000 * sum(firsts) / 2:.0f} ms, then {sum(rates) / 2:,.0f} img/s", flush=True)
    # single layers, bf16 channels_last: which kinds of convolution pay for a new shape
    trunk = encoder.trunk
    layers = {}
    for name, m in trunk.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            kind = ("depthwise" if m.groups > 1 else "dense") + f" {m.kernel_size[0]}x{m.kernel_size[0]} s{m.stride[0]}"
            layers.setdefault(kind, (name, m))
    for kind, (name, m) in sorted(layers.items()):
        firsts = []
        for _ in range(args.shapes):
            h = next(side) // 4
            x = torch.rand(4, m.in_channels, h, h + 24, device="cuda").contiguous(memory_format=torch.channels_last)

            def run():
                with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                    m(x)
            firsts.append(timed(run))
            second = timed(run)
        print(f"layer {kind:22s} ({name}): first call {1000 * sum(firsts) / len(firsts):6.1f} ms, "
              f"second {1000 * second:.2f} ms", flush=True)


if __name__ == "__main__":
    main()
