"""Scoring throughput on folders of mixed image sizes, as users have them, beside the uniform bench.

    python bench/score_mixed.py [--model weights] [--folders kit,phone,web] [--modes exact,canvas,compile]
                                [--clive DIR] [--work DIR] [--json OUT]

Folders (made under --work, default a temporary folder; kept when --work is given):
- kit:   the photo kit's 1,000 authentic photos in their 328 working sizes (bench/photo_kit.py);
- phone: 160 phone photos in 4 camera sizes (12 MP and 8 MP, landscape and portrait), half of them stored sideways
         with an EXIF rotation;
- web:   1,000 photos of random sizes, 200 to 1,200 px a side: hundreds of sizes.
Modes: exact = images of equal size batch together (the reference: sliq score before canvases); canvas = the default
(different sizes share zero canvases, sliq_cli/model/canvas.py); compile = canvas + --compile (compiles only the
shapes the folder repays). Each (folder, mode) runs in a fresh process (cuDNN's plan cache and torch.compile's are
per process) with the model loaded before the clock starts (loading includes the one-time warm-up of torchvision,
nvJPEG and cuDNN), and reports images/s from the first file read to the last score and after the first score, the
time to the first score, the batches run and their shapes, and the peak GPU memory. Faithfulness: each mode's scores
against the exact ones, per image (SROCC and the largest difference), on every folder and on --clive.
--cold times a fresh process's one-time costs one by one; bench/new_shape_cost.py times what a new input shape costs,
per layout and per layer.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PHONE_SIZES = [(4032, 3024), (3024, 4032), (3264, 2448), (2448, 3264)]  # (w, h)


def make_phone(folder: Path, n: int = 160) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    sources = [Image.open(p).convert("RGB") for p in sorted((REPO / "examples").glob("*.jpg"))]
    for i in range(n):
        w, h = PHONE_SIZES[i % len(PHONE_SIZES)]
        im = sources[i % len(sources)].resize((w, h), Image.Resampling.BILINEAR)
        exif = Image.Exif()
        if i % 2:  # stored sideways, as phones do: the viewer (and sliq) rotates by the EXIF orientation
            im = im.transpose(Image.Transpose.ROTATE_90)
            exif[0x0112] = 6 if i % 4 == 1 else 8
        im.save(folder / f"phone{i:04d}.jpg", quality=90, exif=exif)


def make_web(folder: Path, n: int = 1000) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    sources = [Image.open(p).convert("RGB") for p in sorted((REPO / "examples").glob("*.jpg"))]
    for i in range(n):
        w, h = rng.randint(200, 1200), rng.randint(200, 1200)
        sources[i % len(sources)].resize((w, h), Image.Resampling.BILINEAR).save(folder / f"web{i:04d}.jpg", quality=88)


def make_folders(work: Path, names: list[str]) -> dict[str, Path]:
    out = {}
    if "kit" in names:
        if not (work / "kit" / "authentic").exists():
            subprocess.run([sys.executable, str(REPO / "bench" / "photo_kit.py"), str(work / "kit")], check=True)
        out["kit"] = work / "kit" / "authentic"
    if "phone" in names:
        if not (work / "phone").exists():
            make_phone(work / "phone")
        out["phone"] = work / "phone"
    if "web" in names:
        if not (work / "web").exists():
            make_web(work / "web")
        out["web"] = work / "web"
    return out


def run_one(model: str, folder: str, mode: str, device: str, batch_size: int, out: str) -> None:
    """One (folder, mode) in this process: scores and timings to `out` (JSON)."""
    import torch

    from sliq_cli.api import load
    from sliq_cli.images import list_images

    files = list_images([folder], recursive=True)
    t0 = time.perf_counter()
    scorer = load(model, None, device, batch_size=batch_size, compile=mode == "compile", canvas=mode != "exact")
    load_s = time.perf_counter() - t0
    encoder = scorer.extractor.encoder
    batches = []
    forward = encoder.quality_features

    def counted(x, layout=None, scale_features=None):
        batches.append(tuple(x.shape))
        return forward(x, layout, scale_features)

    encoder.quality_features = counted  # the extractor calls the encoder's method: count its batches
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    scores, first = {}, None
    t0 = time.perf_counter()
    for r in scorer.records(files):
        if first is None:
            first = time.perf_counter() - t0
        scores[r["path"]] = r["score"]
    seconds = time.perf_counter() - t0
    result = {"folder": folder, "mode": mode, "images": len(files), "load_s": load_s,
              "after_first_img_s": (len(files) - 1) / (seconds - first), "failed": sum(v is None for v in scores.values()),
              "seconds": seconds, "img_s": len(files) / seconds, "first_score_s": first,
              "batches": len(batches), "shapes": len(set(batches)),
              "mean_batch": sum(b[0] for b in batches) / max(1, len(batches)),
              "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
              "compile_report": scorer.extractor.compiler.report() if scorer.extractor.compiler else None,
              "scores": scores}
    Path(out).write_text(json.dumps(result))


def cold_start(model: str, folder: str, device: str) -> dict:
    """Where a fresh process's first score goes: each one-time cost timed on its own, in the order scoring meets them."""
    t = {}
    t0 = time.perf_counter()
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    from sliq_cli.api import load
    from sliq_cli.images import list_images
    t["import torch, torchvision, sliq"] = time.perf_counter() - t0

    def step(name, fn):
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        t[name] = time.perf_counter() - t1
        return out

    scorer = step("load the model onto the GPU", lambda: load(model, None, device))
    encoder = scorer.extractor.encoder
    files = list_images([folder], recursive=True)[:64]
    datas = [torch.frombuffer(bytearray(Path(f).read_bytes()), dtype=torch.uint8) for f in files]
    step("first nvJPEG decode (1 image)", lambda: decode_jpeg(datas[0], mode=ImageReadMode.RGB, device=device))
    step("nvJPEG decode of 64 images", lambda: decode_jpeg(datas, mode=ImageReadMode.RGB, device=device))
    fmt = scorer.extractor._memory_format()
    encoder.to(memory_format=fmt)

    def forward(h, w, n=1):
        x = torch.rand(n, 3, h, w, device=device).contiguous(memory_format=fmt)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            encoder.quality_features(x)
    step("first forward (1x3x64x64: cuDNN and kernels load)", lambda: forward(64, 64))
    step("second forward at a new shape (64x3x384x512)", lambda: forward(384, 512, 64))
    step("same shape again", lambda: forward(384, 512, 64))
    for k, v in t.items():
        print(f"cold start: {k:55s} {v:7.2f} s", flush=True)
    return t


def faithfulness(exact: dict, other: dict) -> dict:
    import numpy as np
    from scipy.stats import spearmanr

    keys = [k for k in exact if exact[k] is not None and other.get(k) is not None]
    a, b = np.array([exact[k] for k in keys]), np.array([other[k] for k in keys])
    return {"images": len(keys), "srocc": float(spearmanr(a, b)[0]), "max_abs_diff": float(np.abs(a - b).max()),
            "score_std": float(a.std())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "weights"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--folders", default="kit,phone,web")
    ap.add_argument("--modes", default="exact,canvas,compile")
    ap.add_argument("--clive", type=Path, default=None, help="a folder of LIVE Challenge images (faithfulness)")
    ap.add_argument("--cold", action="store_true", help="time a fresh process's one-time costs (on the first folder)")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--one", nargs=3, metavar=("FOLDER", "MODE", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--cold-one", metavar="FOLDER", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return run_one(args.model, args.one[0], args.one[1], args.device, args.batch_size, args.one[2])
    if args.cold_one:
        return print(json.dumps(cold_start(args.model, args.cold_one, args.device)))

    print(f"machine: {describe()}", flush=True)
    report = {"machine": machine(), "model": args.model, "batch_size": args.batch_size, "runs": [], "faithfulness": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        folders = make_folders(work, args.folders.split(","))
        if args.clive:
            folders["clive"] = args.clive
        modes = args.modes.split(",")
        if args.cold:  # a fresh process of its own
            out = subprocess.run([sys.executable, __file__, "--model", args.model, "--device", args.device,
                                  "--cold-one", str(next(iter(folders.values())))], check=True, capture_output=True,
                                 text=True).stdout
            print(out, end="", flush=True)
            report["cold_start"] = json.loads(out.splitlines()[-1])
        for name, folder in folders.items():
            scores = {}
            for mode in modes if name != "clive" else [m for m in modes if m != "compile"]:
                out = work / f"{name}-{mode}.json"
                subprocess.run([sys.executable, __file__, "--model", args.model, "--device", args.device,
                                "--batch-size", str(args.batch_size), "--one", str(folder), mode, str(out)], check=True)
                r = json.loads(out.read_text())
                scores[mode] = r.pop("scores")
                r["folder"] = name
                report["runs"].append(r)
                print(f"{name:6s} {mode:8s} {r['images']:5d} images: {r['img_s']:8.1f} img/s "
                      f"({r['after_first_img_s']:,.0f} after the first score), load {r['load_s']:.1f} s, first score "
                      f"{r['first_score_s']:.2f} s, {r['batches']} batches in {r['shapes']} shapes (mean "
                      f"{r['mean_batch']:.1f} images), peak GPU {r['peak_gpu_mib'] or 0:,.0f} MiB"
                      + (f"\n       {r['compile_report']}" if r["compile_report"] else ""), flush=True)
            for mode in scores:
                if mode != "exact" and "exact" in scores:
                    f = {"folder": name, "mode": mode, **faithfulness(scores["exact"], scores[mode])}
                    report["faithfulness"].append(f)
                    print(f"{name:6s} {mode:8s} vs exact: SROCC {f['srocc']:.5f}, largest |score difference| "
                          f"{f['max_abs_diff']:.4f} (score std {f['score_std']:.2f}, {f['images']} images)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
