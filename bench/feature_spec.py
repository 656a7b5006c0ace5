"""Which quality features should an encoder family's head read? Measured with the paper's protocol on a MOS set.

Extracts every stage of the trunk, mean- and std-pooled, at scales 1 and 1/2 once per image (unnormalised), then
runs the protocol (10 seeded 70/10/20 splits, ridge, alpha on validation) for each candidate FeatureSpec, built by
slicing and L2-normalising blocks exactly as ImageEncoder.quality_features does. Prints the machine and a table;
--json writes everything.

    python bench/feature_spec.py --mos ../shared/data/clive-dev/mos.csv --images ../shared/data/clive-dev \
        --model slique-efficientnet-lite0@imagenet --model default --json bench/results/feature_spec_clive.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine  # noqa: E402


def candidates(stages: list[str]) -> dict[str, dict]:
    """Named FeatureSpecs over a trunk's stages (last = the paper's pooled feature)."""
    last = stages[-1]
    return {
        "last, mean, 1+1/2 (paper)": {"stages": [last], "pooling": ["mean"], "scales": [1.0, 0.5]},
        "last, mean+std, 1+1/2": {"stages": [last], "pooling": ["mean", "std"], "scales": [1.0, 0.5]},
        "last 4, mean+std, 1+1/2": {"stages": stages[-4:], "pooling": ["mean", "std"], "scales": [1.0, 0.5]},
        "last 6, mean+std, 1+1/2": {"stages": stages[-6:], "pooling": ["mean", "std"], "scales": [1.0, 0.5]},
        "all, mean+std, 1+1/2": {"stages": stages, "pooling": ["mean", "std"], "scales": [1.0, 0.5]},
        "all, mean, 1+1/2": {"stages": stages, "pooling": ["mean"], "scales": [1.0, 0.5]},
        "all, mean+std, 1": {"stages": stages, "pooling": ["mean", "std"], "scales": [1.0]},
    }


def block_features(encoder, paths: list[Path], batch: int) -> tuple[dict, float]:
    """{(scale, stage, pooling): (N, C) float32} for every stage of the trunk; images/s."""
    import torch

    from sliq_cli.images import load_image, pil_to_float
    from sliq_cli.model.config import STAGE_DIMS, FeatureSpec

    stages = list(STAGE_DIMS[encoder.config.trunk])
    full = FeatureSpec(stages=tuple(stages), pooling=("mean", "std"), scales=(1.0, 0.5), normalize="none")
    encoder.config = replace(encoder.config, features=full)
    keys = [(s, st, p) for s in full.scales for st in stages for p in full.pooling]
    dims = [STAGE_DIMS[encoder.config.trunk][st] for _, st, _ in keys]
    rows = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(paths), batch):
            imgs = [pil_to_float(load_image(p)) for p in paths[i : i + batch]]
            if len({tuple(x.shape) for x in imgs}) == 1:
                rows.append(encoder.quality_features(torch.stack(imgs)).numpy())
            else:
                rows.extend(encoder.quality_features(x[None]).numpy() for x in imgs)
    rate = len(paths) / (time.perf_counter() - t0)
    X = np.concatenate(rows)
    out, at = {}, 0
    for key, d in zip(keys, dims):
        out[key] = X[:, at : at + d]
        at += d
    return out, rate


def assemble(blocks: dict, spec: dict) -> np.ndarray:
    parts = []
    for s in spec["scales"]:
        for st in spec["stages"]:
            for p in spec["pooling"]:
                b = blocks[(s, st, p)]
                parts.append(b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12))
    return np.concatenate(parts, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mos", required=True, type=Path)
    ap.add_argument("--images", type=Path)
    ap.add_argument("--model", action="append", required=True, help="model spec (repeatable)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from sliq_cli.iqa.datasets import load_csv
    from sliq_cli.iqa.protocol import open_encoder, run_protocol
    from sliq_cli.model.config import STAGE_DIMS

    ds = load_csv(args.mos, args.images)
    y = np.array([it.score for it in ds.items])
    report = {"machine": machine(), "dataset": str(args.mos), "n": len(y), "models": {}}
    print(json.dumps(report["machine"]))
    for spec in args.model:
        encoder = open_encoder(spec, "cpu")
        blocks, rate = block_features(encoder, ds.paths, args.batch_size)
        stages = list(STAGE_DIMS[encoder.config.trunk])
        results = {}
        for name, cand in candidates(stages).items():
            summary = run_protocol(assemble(blocks, cand), y).summary
            results[name] = {"spec": cand, "srocc": summary["srocc"], "plcc": summary["plcc"]}
            print(f"{spec:42s} {name:28s} SROCC {summary['srocc']['mean']:.3f} ± {summary['srocc']['std']:.3f}  "
                  f"PLCC {summary['plcc']['mean']:.3f} ± {summary['plcc']['std']:.3f}", flush=True)
        report["models"][spec] = {"fingerprint": encoder.fingerprint, "all_blocks_images_per_s": rate,
                                  "candidates": results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
