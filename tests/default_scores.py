"""The embedded default model's pinned numbers, kept in tests/data/default_scores.json and checked by
tests/test_default_model.py. After replacing weights/, regenerate them (on a CPU, as CI runs) with

    PYTHONPATH=. python -m tests.default_scores              # examples/ scores (seconds), keeps the clive-dev entry
    PYTHONPATH=. python -m tests.default_scores --clive-dev  # also the clive-dev protocol (../shared; minutes)

then update README's clive-dev figures if they changed: the test checks that README states the stored SROCC.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sliq_cli.atomic import atomic_write_text

HERE = Path(__file__).parent
PINNED = HERE / "data" / "default_scores.json"
EXAMPLES = HERE.parent / "examples"


def embedded_fingerprint() -> str:
    from sliq_cli.model.checkpoint import read_config
    from sliq_cli.model.resolve import embedded_model_dir

    return read_config(embedded_model_dir())["fingerprint"]


def example_scores() -> dict[str, float]:
    """examples/ photo name -> the default model's score with its default head, on the CPU."""
    from sliq_cli.api import load

    photos = sorted(EXAMPLES.glob("*.jpg")) + sorted(EXAMPLES.glob("*.png"))
    return {p.name: round(s, 4) for p, s in zip(photos, load(device="cpu").score(photos))}


def clive_dev_protocol(data_root: Path) -> dict[str, float]:
    """The paper's protocol (10 seeded splits, seed 0) on clive-dev: test SROCC and PLCC, mean and std."""
    from sliq_cli.iqa.protocol import DatasetRef, evaluate

    folder = data_root / "clive-dev"
    report = evaluate(DatasetRef(mos=folder / "mos.csv", images=folder), [None], device="cpu", use_cache=False)
    summary = report.results["default"].summary
    return {f"{k}_{stat}": round(summary[k][stat], 4) for k in ("srocc", "plcc") for stat in ("mean", "std")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clive-dev", action="store_true", help="also run the clive-dev protocol")
    parser.add_argument("--data-root", type=Path, default=HERE.parent.parent / "shared" / "data")
    args = parser.parse_args()
    old = json.loads(PINNED.read_text()) if PINNED.is_file() else {}
    pinned = {"fingerprint": embedded_fingerprint(), "head": "clive", "examples": example_scores()}
    if args.clive_dev:
        pinned["clive_dev"] = clive_dev_protocol(args.data_root)
    elif old.get("fingerprint") == pinned["fingerprint"] and "clive_dev" in old:
        pinned["clive_dev"] = old["clive_dev"]  # the same weights: the protocol's numbers still hold
    PINNED.parent.mkdir(exist_ok=True)
    atomic_write_text(PINNED, json.dumps(pinned, indent=2) + "\n")
    print(json.dumps(pinned, indent=2))


if __name__ == "__main__":
    main()
