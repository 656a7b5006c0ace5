"""End-to-end scoring throughput (files -> scores) beside the model-only forward rate, at 512x384.

    python bench/score_throughput.py [--device cuda] [--images 2000] [--batch-size 128] [--workers N] [--compile]
                                     [--arch slique-resnet50 | --model DIR] [--size 512x384] [--other-layout]
                                     [--json out.json]

The model is a registered encoder (--arch, default the paper's ResNet-50) with random weights unless --model is given:
speed does not depend on the weights. Images are JPEGs made from the example photos (random crops of upscaled
copies, q90) at --size. The model-only rate runs quality_features (as scoring does) on a batch already on the device;
the end-to-end rate includes reading, decoding (nvJPEG on CUDA), batching, the model and the ridge head, timed from the
end of the first batch to the last score (so the model load does not count). With --compile the end-to-end run is
`sliq score --compile`, which compiles a shape only when the folder's images repay it (sliq_cli/iqa/compiling.py: a
bench-size folder runs eager); the model-only line shows the compiled speed, and a check forces compilation (no compile cost
assumed) to compare compiled and eager scores. Both run the trunk in the memory layout scoring picks (on CUDA the
trunk's own, on a CPU channels_last); --other-layout measures the other one too.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def make_jpegs(folder: Path, n: int, size=(512, 384), prefix: str = "img") -> list[Path]:
    import random

    from PIL import Image

    rng = random.Random(0)
    canvas = (max(768, size[0] + 64), max(512, size[1] + 64))
    sources = [Image.open(p).convert("RGB").resize(canvas) for p in sorted((REPO / "examples").glob("*.jpg"))]
    out = []
    for i in range(n):
        src = sources[i % len(sources)]
        x, y = rng.randrange(0, canvas[0] - size[0]), rng.randrange(0, canvas[1] - size[1])
        p = folder / f"{prefix}{i:05d}.jpg"
        src.crop((x, y, x + size[0], y + size[1])).save(p, quality=90)
        out.append(p)
    return out


def model_only_rate(extractor, batch_size: int, seconds: float, compile_: bool, size=(512, 384)) -> float:
    """quality_features on a batch already on the device, as the extractor runs it (its fused encoder, memory layout
    and precision)."""
    import torch

    device, cuda = extractor.device, extractor.cuda
    x = torch.rand(batch_size, 3, size[1], size[0], device=device)
    encoder = extractor.encoder
    features = torch.compile(encoder.quality_features) if compile_ else encoder.quality_features

    def step():
        with torch.inference_mode():
            extractor._run(features, x)

    step()  # warm-up (compilation, allocator)
    if cuda:
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += batch_size
        if cuda:
            torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--images", type=int, default=None, help="default: 8000 on CUDA, 24 on CPU")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 128 on CUDA, 8 on CPU")
    ap.add_argument("--seconds", type=float, default=None, help="model-only timing length")
    ap.add_argument("--model", default=None, help="a model folder (default: a random --arch encoder)")
    ap.add_argument("--arch", default="slique-resnet50", help="registered encoder for the random model")
    ap.add_argument("--size", default="512x384", help="image size WxH")
    ap.add_argument("--workers", type=int, default=None, help="reader threads (default: sliq score's)")
    ap.add_argument("--compile", action="store_true", help="model only: torch.compile's default mode; end to end: `sliq score --compile`")
    ap.add_argument("--other-layout", action="store_true",
                    help="also measure the other memory layout (NCHW against the extractor's channels_last or back)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import numpy as np

    from sliq_cli.iqa.features import resolve_device
    from sliq_cli.iqa.head import RidgeHead
    from sliq_cli.iqa.score import Scorer
    from sliq_cli.model.checkpoint import load_encoder, save_encoder
    from sliq_cli.model.registry import create_model

    size = tuple(int(v) for v in args.size.split("x"))
    device = resolve_device(args.device)
    cuda = device.startswith("cuda")
    n_images = args.images or (8192 if cuda else 24)
    batch = args.batch_size or (128 if cuda else 8)
    seconds = args.seconds or (20.0 if cuda else 30.0)
    # No cudnn.benchmark: `sliq score` leaves it off, because full-resolution folders bring many input shapes and
    # each new shape would trigger an autotune costing more than it saves.
    print(f"machine: {describe()}", flush=True)

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = Path(args.model) if args.model else tmp / "model"
        if not args.model:
            save_encoder(create_model(args.arch), model_dir)
        encoder = load_encoder(model_dir, device="cpu")
        dim = encoder.config.feature_dim
        RidgeHead(np.zeros(dim), 50.0, np.zeros(dim), np.ones(dim),
                  {"name": "bench", "encoder_fingerprint": encoder.fingerprint}).save(tmp / "bench.safetensors")
        head = str(tmp / "bench.safetensors")
        (tmp / "imgs").mkdir()
        files = make_jpegs(tmp / "imgs", n_images, size)

        def scorer(channels_last=None, compile_=args.compile):
            return Scorer.load(str(model_dir), head, device, batch_size=batch, workers=args.workers, compile=compile_,
                               channels_last=channels_last)

        default = scorer(compile_=False).extractor.channels_last
        for channels_last in [default, not default] if args.other_layout else [default]:
            layout = "channels_last" if channels_last else "NCHW"
            raw = model_only_rate(scorer(channels_last, compile_=False).extractor, batch, seconds, args.compile, size)
            print(f"model only ({encoder.config.name}, quality_features, {args.size}, batch {batch}, {layout}, "
                  f"compile={args.compile}): {raw:,.1f} img/s", flush=True)
            if not args.compile:  # a warm-up pass (allocator, decoder)
                list(scorer(channels_last).records(files[: batch * 2]))
            e2e, scored = end_to_end_rate(scorer(channels_last), files, batch)
            print(f"end to end (files -> scores, {scored} JPEGs {args.size}, batch {batch}, {layout}, "
                  f"compile={args.compile}): {e2e:,.1f} img/s = {100 * e2e / raw:.0f}% of the model-only rate",
                  flush=True)
            results.append({"layout": layout, "model_only_img_s": raw, "end_to_end_img_s": e2e, "ratio": e2e / raw,
                            "images": scored})
        if args.compile:
            compiled_vs_eager(model_dir, tmp, files, device, batch, args.workers, size, dim, encoder.fingerprint)
    result = {"machine": machine(), "device": device, "model": encoder.config.name, "size": args.size,
              "batch_size": batch, "compile": args.compile, "workers": args.workers, **results[0],
              "layouts": results}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def end_to_end_rate(scorer, files: list[Path], batch: int) -> tuple[float, int]:
    """Images per second from the end of the first batch to the last score, and the images scored in that time."""
    seen, scored, t0 = 0, 0, None
    for r in scorer.records(files):
        seen += 1
        if seen == batch:
            t0 = time.perf_counter()  # the first batch is out
        elif seen > batch:
            scored += r["score"] is not None
    return scored / (time.perf_counter() - t0), scored


def compiled_vs_eager(model_dir: Path, tmp: Path, files: list[Path], device: str, batch: int, workers, size, dim: int,
                      fingerprint: str) -> None:
    """The compiled model must give the eager model's scores (bf16 rounding apart), on mixed sizes too."""
    import numpy as np

    from sliq_cli.api import load
    from sliq_cli.iqa import compiling
    from sliq_cli.iqa.head import RidgeHead

    check = files[:256] + make_jpegs(tmp / "imgs", 96, size=(336, 448), prefix="tall") + \
        make_jpegs(tmp / "imgs", 40, size=(500, 333), prefix="odd")
    random_head = str(tmp / "random.safetensors")  # the bench head is constant; this one reads the features
    RidgeHead(np.random.default_rng(0).normal(size=dim), 50.0, np.zeros(dim), np.ones(dim),
              {"name": "random", "encoder_fingerprint": fingerprint}).save(random_head)
    compiling.COMPILE_SECONDS = 0.0  # every shape that repeats compiles: the check needs compiled batches
    scores = {}
    for compiled in (False, True):
        got = load(str(model_dir), random_head, device, batch_size=batch, workers=workers,
                   compile=compiled).records(check)
        scores[compiled] = {r["path"]: r["score"] for r in got}
    diff = max(abs(scores[True][k] - scores[False][k]) for k in scores[False])
    spread = float(np.std(list(scores[False].values())))
    print(f"compiled vs eager on {len(check)} images of 3 sizes: max |score difference| {diff:.4g} "
          f"(score std {spread:.4g})", flush=True)

if __name__ == "__main__":
    main()
