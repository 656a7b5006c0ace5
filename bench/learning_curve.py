"""How much does a ridge head gain from more rated images? The paper's protocol with the training part cut down.

    python bench/learning_curve.py --mos ../shared/data/clive-dev/mos.csv --images ../shared/data/clive-dev \
        --model default --model slique-efficientnet-lite0@imagenet --json bench/results/learning_curve_clive.json

The paper's 10 seeded 70/10/20 splits (`iqa.protocol.random_splits`, seed 0) stay as they are: the same validation
part chooses ridge's alpha and the same test part is scored at every size. Only the training part shrinks, to the
first N of a seeded permutation of it (so each size's images hold the smaller sizes'). Per model and size: the mean
and standard deviation over the splits of test SROCC and PLCC. Then, from the sizes measured, the gain per doubling
of the training images (least squares of mean SROCC on log2 N): a description of the measured range, which says how
far more rated images of the same kind would move the frozen-feature protocol, not a promise beyond it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from machine import describe, machine  # noqa: E402


def curve(X: np.ndarray, y: np.ndarray, sizes: list[int], n_splits: int, seed: int) -> dict[int, dict]:
    """size -> {"srocc": [per split], "plcc": [...]} of the protocol with each split's training part cut to size."""
    from sliq_cli.iqa.protocol import Split, random_splits, split_result

    out = {n: {"srocc": [], "plcc": []} for n in sizes}
    for k, sp in enumerate(random_splits(len(y), n_splits, seed)):
        order = np.random.default_rng([seed, k]).permutation(sp.train)  # nested: a size holds the smaller sizes
        for n in sizes:
            if n > len(order):
                raise SystemExit(f"--sizes: {n} is more than a split's {len(order)} training images")
            metrics = split_result(X, y, Split(np.sort(order[:n]), sp.val, sp.test)).metrics
            out[n]["srocc"].append(metrics["srocc"])
            out[n]["plcc"].append(metrics["plcc"])
    return out


def per_doubling(sizes: list[int], means: list[float]) -> float:
    """Slope of mean SROCC against log2(training images): the gain of doubling them, within the measured range."""
    return float(np.polyfit(np.log2(sizes), means, 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mos", required=True, type=Path, help="a MOS file, read as `sliq fit-head --mos` reads it")
    ap.add_argument("--images", type=Path, help="the folder its names are relative to (default: the file's)")
    ap.add_argument("--model", action="append", default=[], help="a --model spec (repeatable; default: the default)")
    ap.add_argument("--sizes", default="50,100,200,300,all", help="training images per split; 'all': the whole 70 %%")
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from sliq_cli.iqa.datasets import load_csv
    from sliq_cli.iqa.protocol import dataset_features, open_encoder, random_splits

    ds = load_csv(args.mos, args.images)
    if ds.refs is not None:  # its splits go by reference image, which cutting by image would break
        raise SystemExit(f"{args.mos}: a dataset with references (synthetic distortions) is not supported here")
    n_train = len(random_splits(len(ds), 1, args.seed)[0].train)
    sizes = sorted({n_train if s.strip() == "all" else int(s) for s in args.sizes.split(",")})
    print(f"machine: {describe()}; {args.mos}: {len(ds)} images, {n_train} training images a split; "
          f"{args.splits} splits; sizes {sizes}", flush=True)
    report = {"machine": machine(), "dataset": str(args.mos), "n": len(ds), "splits": args.splits, "seed": args.seed,
              "sizes": sizes, "models": {}}
    for spec in args.model or ["default"]:
        encoder = open_encoder(None if spec == "default" else spec, args.device)
        feats = dataset_features(ds, encoder)
        if feats.failed:
            raise SystemExit(f"unreadable images: {feats.failed}")
        result = curve(feats.X, feats.dataset.scores, sizes, args.splits, args.seed)
        means = [float(np.mean(result[n]["srocc"])) for n in sizes]
        slope = per_doubling(sizes, means)
        report["models"][spec] = {"fingerprint": encoder.fingerprint, "per_doubling_srocc": slope,
                                  "curve": {str(n): r for n, r in result.items()}}
        print(f"\n{spec}  ({encoder.fingerprint[:12]})")
        print(f"{'train images':>12}  {'SROCC':>15}  {'PLCC':>15}")
        for n in sizes:
            s, p = np.asarray(result[n]["srocc"]), np.asarray(result[n]["plcc"])
            print(f"{n:>12}  {s.mean():.3f} ± {s.std():.3f}  {p.mean():.3f} ± {p.std():.3f}")
        print(f"SROCC per doubling of the training images ({sizes[0]}-{sizes[-1]}): {slope:+.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
