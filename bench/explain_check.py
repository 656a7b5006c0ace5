"""Explain check: does `sliq explain` name the distortion that was applied, at the right degree?

    python bench/explain_check.py --model MODEL --images HELDOUT_DIR [--limit 20] [--device auto] [--bf16]
                                  [--json out.json] [--png confusion.png]

MODEL needs a text tower (MODEL/text/, from `sliq pretrain`); HELDOUT_DIR holds pristine photos the model never
trained on. Each photo's TADAC working image is distorted with every KADIS type (25) at every level (1..5), stored
as 8 bits as KADIS images are, and explained exactly as `sliq explain` does (saliency crop of the image as given,
cosine similarity with the 19 text types x 5 degrees + pristine; sliq_cli.iqa.explain.Explainer). Reported:
- top-1 / top-3 accuracy of the predicted text type (KADIS type -> text type as tadac/texts.py merges them;
  pristine competes, so "no visible distortion" for a distorted image is a miss), overall, per level, per type;
- mean level error: |the degree the model gives the TRUE text type - the applied level| (levels 1..5), which
  separates "how much" from "what";
- pristine explained as clean: the share of undistorted photos whose top-1 is pristine;
- a confusion matrix (true text type x top-1 prediction, rows normalised) as a PNG.
Chance: top-1 1/20, top-3 3/20, level error 1.6 (uniform guess against uniform levels).

With --calibrate it instead writes MODEL/text/explain.json: the offset added to the pristine description's
similarity that best separates the undistorted photos (pristine should win) from their visibly distorted versions,
levels 2..5 (a distortion should win), by balanced accuracy. Calibrate on photos the model never trained on (on its
training photos the pristine texts are memorised: the offset comes out far too small), and check on other ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a model folder with text/ (e.g. RUN/export)")
    ap.add_argument("--images", type=Path, required=True, help="held-out pristine photos")
    ap.add_argument("--limit", type=int, default=20, help="use the first N photos (sorted by name)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16", action="store_true",
                    help="bf16 autocast on the CPU too (always on CUDA): ~1.6x on CPUs with AMX/AVX-512 BF16")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--png", type=Path, help="confusion matrix image (default: next to --json, else not drawn)")
    ap.add_argument("--calibrate", action="store_true",
                    help="write MODEL/text/explain.json (pristine offset) from these photos (not trained on, not "
                         "the ones you check on)")
    args = ap.parse_args()

    import torch

    from sliq_cli.images import list_images, pil_to_float
    from sliq_cli.iqa.explain import Explainer
    from sliq_cli.tensors import to_uint8
    from sliq_cli.tadac.database import distortion_seed, load_work_pil
    from sliq_cli.tadac.distortions import DISTORTIONS, distort
    from sliq_cli.tadac.texts import KADIS_TO_TEXT_TYPE, N_LEVELS, TEXT_TYPES

    t0 = time.perf_counter()
    explainer = Explainer.load(args.model, args.device)
    device = explainer.device
    amp = args.bf16 or device.startswith("cuda")
    files = list_images([str(args.images)])[: args.limit]
    print(f"machine: {describe()}; {len(files)} images x 126 variants, model {explainer.model_dir} on {device}; "
          f"{'bf16' if amp else 'fp32'}; appearance bins: {explainer.thresholds_source}", flush=True)

    # Variant 0 = pristine, then (KADIS type, level) type-major, as tadac.texts.decode_variant.
    variants = [(0, 0)] + [(d.id, level) for d in DISTORTIONS for level in range(1, N_LEVELS + 1)]
    true_col = np.array([0 if t == 0 else KADIS_TO_TEXT_TYPE[t].id for t, _ in variants])  # (126,) 0 = pristine
    true_level = np.array([level for _, level in variants])  # (126,)
    gen = torch.Generator(device=device)
    scores, levels = [], []  # per image: (126, 20) best similarity per type, (126, 20) its level
    for j, f in enumerate(files):
        x = pil_to_float(load_work_pil(f))[None].to(device)  # (1, 3, h, w)
        crops = []
        for t, level in variants:
            if t == 0:
                y = x
            else:
                gen.manual_seed(distortion_seed(args.seed, f.stem, t, level))
                y = to_uint8(distort(x, t, level, gen)).float() / 255  # (1, 3, h, w), 8 bits like KADIS
            crops.append(explainer.crop(y[0].permute(1, 2, 0).cpu().numpy())[0])  # (224, 224, 3)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=amp):
            sims = torch.cat([explainer.similarities(np.stack(crops[k : k + 32])) for k in range(0, len(crops), 32)])
        s, lv = explainer.by_type(sims)  # (126, 20), (126, 20)
        scores.append(s.numpy())
        levels.append(lv.numpy())
        print(f"  {j + 1}/{len(files)} {f.name}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    scores, levels = np.stack(scores), np.stack(levels)  # (N, 126, 20)
    seconds = time.perf_counter() - t0
    if args.calibrate:
        calibrate(explainer, scores, true_level, len(files), seconds)
        return

    n = len(files)
    order = np.argsort(-scores, axis=2)  # (N, 126, 20) columns best first
    truth = np.broadcast_to(true_col, (n, len(variants)))  # (N, 126)
    top1 = order[..., 0] == truth
    top3 = (order[..., :3] == truth[..., None]).any(axis=2)
    level_err = np.abs(np.take_along_axis(levels, truth[..., None], axis=2)[..., 0] - true_level)  # (N, 126)
    dist = true_level > 0  # the 125 distorted variants
    labels = ["pristine"] + [t.name for t in TEXT_TYPES]
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)  # true x predicted top-1
    np.add.at(confusion, (truth.reshape(-1), order[..., 0].reshape(-1)), 1)

    result = {
        "top1": float(top1[:, dist].mean()), "top3": float(top3[:, dist].mean()),
        "level_error": float(level_err[:, dist].mean()),
        "pristine_as_clean": float(top1[:, 0].mean()),
        "pristine_in_top3": float(top3[:, 0].mean()),
        "distorted_as_clean": float((order[:, dist, 0] == 0).mean()),
        "per_level": {str(level): {"top1": float(top1[:, true_level == level].mean()),
                                   "top3": float(top3[:, true_level == level].mean()),
                                   "distorted_as_clean": float((order[:, true_level == level, 0] == 0).mean())}
                      for level in range(1, N_LEVELS + 1)},
        "per_kadis_type": [],
    }
    for d in DISTORTIONS:
        cols = np.array([t == d.id for t, _ in variants])
        result["per_kadis_type"].append({
            "type": d.id, "name": d.name, "text_type": KADIS_TO_TEXT_TYPE[d.id].name,
            "top1": float(top1[:, cols].mean()), "top3": float(top3[:, cols].mean()),
            "level_error": float(level_err[:, cols].mean())})

    for r in result["per_kadis_type"]:
        print(f"{r['type']:2d} {r['name']:31s} -> {r['text_type']:21s} top-1 {r['top1']:.2f}  top-3 {r['top3']:.2f}"
              f"  level error {r['level_error']:.2f}")
    for level, r in result["per_level"].items():
        print(f"level {level}: top-1 {r['top1']:.3f}  top-3 {r['top3']:.3f}  called clean {r['distorted_as_clean']:.3f}")
    print(f"distorted ({n * 125}): top-1 {result['top1']:.3f} (chance 0.050)  top-3 {result['top3']:.3f} (chance 0.150)"
          f"  level error {result['level_error']:.2f} (chance 1.60)  called clean {result['distorted_as_clean']:.3f}")
    print(f"pristine ({n}): explained as clean {result['pristine_as_clean']:.3f}  clean in top-3 "
          f"{result['pristine_in_top3']:.3f}")
    print(f"{seconds:.0f} s")

    png = args.png or (args.json.with_suffix(".png") if args.json else None)
    if png:
        png.parent.mkdir(parents=True, exist_ok=True)
        _plot(confusion, labels, png, f"sliq explain: top-1 text type, {n} photos x 126 variants")
        print(f"confusion matrix: {png}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": machine(), "model": str(explainer.model_dir), "device": device, "images": n,
            "seed": args.seed, "bf16": amp, "thresholds_source": explainer.thresholds_source, "seconds": round(seconds, 1),
            **result, "confusion": {"labels": labels, "counts": confusion.tolist()}}, indent=2) + "\n")


def calibrate(explainer, scores: np.ndarray, true_level: np.ndarray, n: int, seconds: float) -> None:
    """Choose and write the pristine offset (module docstring). scores: (N, 126, 20) with the current offset."""
    from sliq_cli.atomic import atomic_write_json
    from sliq_cli.iqa.explain import CALIBRATION_FILE, TEXT_DIR

    margin = scores[..., 1:].max(axis=2) - (scores[..., 0] - explainer.pristine_offset)  # (N, 126) best distortion
    clean, visible = margin[:, 0], margin[:, true_level >= 2].reshape(-1)  # pristine wins iff offset > margin
    grid = np.unique(np.concatenate([clean, visible]))
    balanced = [(np.mean(clean < b) + np.mean(visible >= b)) / 2 for b in grid]
    best = int(np.argmax(balanced))
    offset = float(grid[best])
    path = explainer.model_dir / TEXT_DIR / CALIBRATION_FILE
    atomic_write_json(path, {"format": "sliq-explain-calibration", "format_version": 1, "pristine_offset": offset,
                             "photos": n, "clean_called_clean": float(np.mean(clean < offset)),
                             "visible_called_distorted": float(np.mean(visible >= offset))})
    print(f"pristine offset {offset:+.4f} on {n} calibration photos: undistorted called clean "
          f"{np.mean(clean < offset):.3f}, levels 2-5 called distorted {np.mean(visible >= offset):.3f} "
          f"({seconds:.0f} s) -> {path}")


def _plot(confusion: np.ndarray, labels: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)  # each true type sums to 1
    fig, ax = plt.subplots(figsize=(10, 9))
    im = ax.imshow(rows, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted (top-1)")
    ax.set_ylabel("applied")
    for i, j in zip(*np.nonzero(confusion)):
        ax.text(j, i, f"{rows[i, j]:.2f}".lstrip("0"), ha="center", va="center", fontsize=6,
                color="black" if rows[i, j] > 0.5 else "white")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the row")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
