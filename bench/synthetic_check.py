"""Synthetic check: do scores fall as KADIS distortion levels rise, on photos the encoder never trained on?

    python bench/synthetic_check.py --model MODEL --head HEAD --images HELDOUT_DIR [--device cuda] [--json out.json]

Every image (its TADAC working image) is distorted with each of the 25 KADIS types at levels 1..5; the model and
head score the pristine image and the 125 variants. Per type we report the SROCC between score and level (levels 0
to 5, 0 = pristine) pooled over all images, and the mean over images of the per-image SROCC (ranking within one
content, which is what a quality model must get right); negated, so +1 means "more distortion, lower score".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--head", required=True)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from scipy.stats import spearmanr

    from sliq_cli.images import list_images
    from sliq_cli.iqa.features import resolve_device
    from sliq_cli.iqa.head import resolve_head
    from sliq_cli.model.checkpoint import load_encoder
    from sliq_cli.model.resolve import resolve_model
    from sliq_cli.tadac.distortions import DISTORTIONS

    device = resolve_device(args.device)
    model_dir = resolve_model(args.model)
    encoder = load_encoder(model_dir, device=device)
    head = resolve_head(args.head, model_dir, encoder.fingerprint)
    files = list_images([str(args.images)])
    print(f"machine: {describe()}; {len(files)} images, model {model_dir}, head {head.name}", flush=True)
    scores = kadis_scores(lambda batch: head.predict(encoder.quality_features(batch).float().cpu().numpy()),
                          files, device, args.seed, log=print)
    sign = 1.0 if head.mos_scale.get("higher_is_better", True) else -1.0
    levels = np.arange(6)  # 0 = pristine
    rows = []
    for t, d in enumerate(DISTORTIONS):
        pooled = -sign * spearmanr(np.tile(levels, len(files)), scores[t].reshape(-1))[0]
        per_image = [-sign * spearmanr(levels, s)[0] for s in scores[t]]
        rows.append({"type": d.id, "name": d.name, "srocc_pooled": float(pooled),
                     "srocc_per_image_mean": float(np.nanmean(per_image))})
        print(f"{d.id:2d} {d.name:32s} pooled {pooled:+.3f}  per-image mean {np.nanmean(per_image):+.3f}")
    mean_pooled = float(np.mean([r["srocc_pooled"] for r in rows]))
    mean_per_image = float(np.mean([r["srocc_per_image_mean"] for r in rows]))
    print(f"mean over 25 types: pooled {mean_pooled:+.3f}, per-image {mean_per_image:+.3f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "model": str(model_dir), "head": head.name,
                                         "images": len(files), "types": rows, "mean_pooled": mean_pooled,
                                         "mean_per_image": mean_per_image}, indent=2) + "\n")


def kadis_scores(score_batch, files, device: str, seed: int = 0, log=None, cache: dict | None = None) -> np.ndarray:
    """Scores of every file's working image, pristine and with each KADIS type at levels 1..5: (type, image, level).
    score_batch: (B, 3, h, w) float images in [0, 1] on `device` -> B scores. cache: a dict that keeps each photo's
    distorted versions (uint8, on `device`) for the next call, when several encoders are measured on them."""
    import torch

    from sliq_cli.images import pil_to_float
    from sliq_cli.tadac.database import load_work_pil
    from sliq_cli.tadac.distortions import DISTORTIONS, distort
    from sliq_cli.tensors import to_uint8

    gen = torch.Generator(device=device)
    scores = np.zeros((len(DISTORTIONS), len(files), 6))  # (type, image, level)
    for j, f in enumerate(files):
        versions = None if cache is None else cache.get(str(f))
        if versions is None:
            x = pil_to_float(load_work_pil(f))[None].to(device)  # (1, 3, h, w)
            variants = []
            for d in DISTORTIONS:
                variants.append(to_uint8(x))
                for level in range(1, 6):
                    gen.manual_seed(seed * 1_000_003 + j * 1009 + d.id * 7 + level)
                    variants.append(to_uint8(distort(x, d.id, level, gen)))  # stored as 8-bit, like KADIS
            versions = torch.cat(variants)  # (25 * 6, 3, h, w) uint8: one forward per photo
            if cache is not None:
                cache[str(f)] = versions
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            scores[:, j] = np.asarray(score_batch(versions.float() / 255)).reshape(len(DISTORTIONS), 6)
        if log is not None:
            log(f"  {j + 1}/{len(files)} {f.name}", flush=True)
    return scores


if __name__ == "__main__":
    main()
