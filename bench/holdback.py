"""The clive-dev hold-back scored by models trained on dev-80, each with its own head.

    python bench/holdback.py --clive CLIVE_DEV --write-dev80 dev80.csv      # dev-80's rows, for sliq finetune --mos
    sliq finetune --mos dev80.csv --images CLIVE_DEV --out FT                 # a model and head trained on dev-80
    python bench/holdback.py --clive CLIVE_DEV --model default --model FT [--device cuda] [--json out.json]

The hold-back is the generalisation bench's (bench/clive_holdback.txt: 125 of the 627 images, fixed for good); dev-80
is the other 502. `bench/generalisation.py` fits a ridge head on dev-80's features for every candidate, which is the
protocol for a frozen encoder. For a model fine-tuned on dev-80, how its head is fitted matters too, so each model is
scored on the hold-back with:
- `own`: its own default head, as `sliq score --model M` scores (only a head that saw none of the 125 says anything:
  the embedded default's `clive` head was fitted on all 627, so its row is in-sample);
- `val-alpha`, `cv-alpha` (fine-tuned folders: `finetune.json` names the validation images): ridge on its features of
  the images it trained on, alpha chosen on its validation images, or by 5-fold CV within the training images;
- `dev80`: ridge on its features of all of dev-80, alpha by 5-fold CV (as `sliq fit-head` fits one).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generalisation import holdback_names  # noqa: E402
from machine import describe, machine  # noqa: E402


def write_dev80(clive: Path, out: Path) -> int:
    with open(clive / "mos.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        fields = reader.fieldnames
    held = holdback_names([r["image"] for r in rows])
    dev = [r for r in rows if r["image"] not in held]
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(dev)
    return len(dev)


HEADS = ("own", "val-alpha", "cv-alpha", "dev80")


def measure(model: str, clive: Path, device: str) -> dict:
    from sliq_cli.api import load
    from sliq_cli.iqa.features import extract_features, resolve_device
    from sliq_cli.iqa.datasets import load_csv
    from sliq_cli.iqa.head import RidgeHead
    from sliq_cli.iqa.metrics import correlations
    from sliq_cli.iqa.protocol import kfold_alpha, select_alpha

    ds = load_csv(clive / "mos.csv", clive)
    y = ds.scores
    held = holdback_names([p.name for p in ds.paths])
    is_held = np.array([p.name in held for p in ds.paths])
    dev, hold = np.flatnonzero(~is_held), np.flatnonzero(is_held)
    metric = load(model, device=device)
    X = extract_features(metric.encoder, ds.paths, device=resolve_device(device)).features.astype(np.float64)  # (N, D)
    preds = {"own": metric.head.predict(X[hold]),
             "dev80": RidgeHead.fit(X[dev], y[dev], kfold_alpha(X[dev], y[dev])[0]).predict(X[hold])}
    run_file = Path(model) / "finetune.json"
    if run_file.is_file():  # a fine-tuned folder: the images it trained on and validated on
        val_names = {Path(p).name for p in json.loads(run_file.read_text())["split"]["val"]}
        is_val = np.array([p.name in val_names for p in ds.paths])
        val, train = dev[is_val[dev]], dev[~is_val[dev]]
        for key, alpha in (("val-alpha", select_alpha(X[train], y[train], X[val], y[val])),
                           ("cv-alpha", kfold_alpha(X[train], y[train])[0])):
            preds[key] = RidgeHead.fit(X[train], y[train], alpha).predict(X[hold])
    result = {"model": model, "fingerprint": metric.fingerprint, "head": metric.head.name,
              "head_dataset": metric.head.meta.get("dataset"), "head_n_train": metric.head.meta.get("n_train")}
    for key, pred in preds.items():
        c = correlations(pred, y[hold])
        result[key] = {"srocc": c["srocc"], "plcc": c["plcc"]}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clive", type=Path, required=True, help="clive-dev folder (mos.csv + images)")
    ap.add_argument("--model", action="append", default=[], help="a model spec (folder, default, NAME@imagenet)")
    ap.add_argument("--write-dev80", type=Path, help="write dev-80's rows of mos.csv to this file")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.write_dev80:
        print(f"{write_dev80(args.clive, args.write_dev80)} dev-80 rows written to {args.write_dev80}")
    if not args.model:
        return
    print(f"machine: {describe()}")
    results = [measure(m, args.clive, args.device) for m in args.model]
    print("SROCC / PLCC on the 125 held-back images")
    print("| model | own head (fitted on, images) | " + " | ".join(HEADS) + " |")
    print("|---|---|" + "---:|" * len(HEADS))
    for r in results:
        cells = [f"{r[k]['srocc']:.3f} / {r[k]['plcc']:.3f}" if k in r else "-" for k in HEADS]
        print(f"| {r['model']} | {r['head']} ({r['head_dataset']}, {r['head_n_train']}) | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
