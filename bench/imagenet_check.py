"""Are the ImageNet weights what they claim? Top-1 of each EfficientNet-Lite classifier on the photo kit's labelled
ImageNet sample (one photo per class), with the evaluation the weights were published with.

    python bench/imagenet_check.py ../shared/data/photos [--json bench/results/imagenet_top1.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos", type=Path, help="the photo kit (manifest.csv, imagenet-sample/)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from sliq_cli.model.imagenet import WHEELS, imagenet_sample, imagenet_top1

    print(f"machine: {describe()}", flush=True)
    photos, labels = imagenet_sample(args.photos)
    results = {}
    for trunk in WHEELS:
        t0 = time.perf_counter()
        results[trunk] = imagenet_top1(trunk, photos, labels)
        print(f"{trunk}: top-1 {100 * results[trunk]:.1f} % on {len(photos)} photos "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "photos": len(photos), "top1": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
