"""Generalisation bench: does an encoder's quality prediction hold on images and file encodings its choice never saw?

    python bench/generalisation.py --clive ../shared/data/clive-dev --heldout HELDOUT_PHOTOS --work /tmp/gen \\
        --candidate start=slique-efficientnet-lite0@imagenet --candidate default=default \\
        --candidate wise50=wise:start,default,0.5 --candidate both=concat:start,default \\
        [--device cuda] [--json out.json] [--markdown out.md]

clive-dev (627 LIVE Challenge images, every one stored with the same JPEG tables, about quality 75) is split once
into a **hold-back** of 20 % (`bench/clive_holdback.txt`: the 125 names with the smallest sha256, fixed for good)
and **dev-80**. Every column that guides a choice is computed on dev-80 or on photos no model trained on; the
hold-back is reported last and guides nothing.

Columns (SROCC unless named; protocol = 10 seeded 70/10/20 splits of dev-80, ridge alpha on the validation part):
- `proto`, `plcc`: the paper's protocol, as stored.
- `enc`: fit as stored, test on the test part re-encoded (PNG of the decoded pixels, JPEG q95 / q90 / q75, WebP q90);
  the worst encoding.
- `png>jpg`: fit on the PNGs of the decoded pixels, test as stored (the reverse of `enc`'s PNG column).
- `q50>jpg`: fit on dev-80 re-encoded as JPEG q50, test on the test part as stored: a head fitted on more compressed
  files than it is then used on, which is what a head fitted on clive-dev meets on uncompressed photos.
- `same:clive`, `same:kit`: SROCC between the scores of a file as stored and of its re-encoded versions (worst
  encoding), on all 627 clive-dev images and on the held-out kit photos (head: fitted on dev-80, alpha by CV).
- `kadis`: the synthetic check (bench/synthetic_check.py): 25 KADIS types x 5 levels on the held-out photos, mean
  per-photo SROCC of score against level.
- `ref`, `ref:jpeg`: a reference-photo check made without sliq's own distortion code: Pillow JPEG (q 60/40/20/10),
  Pillow Gaussian blur (radius 0.75/1.5/2.5/4), numpy Gaussian noise (sigma 5/10/20/40), Pillow brightness
  (0.75/0.55/0.4/0.25), each on the held-out photos' working images, mean per-photo SROCC over the 4 types; JPEG alone.
- `hold`, `hold:plcc`, `hold:enc`: the head fitted on all of dev-80 (alpha by CV), tested on the hold-back as stored,
  and its worst re-encoding.

Candidates: a model spec (folder, `default`, `NAME@imagenet`); `wise:A,B,ALPHA` (model/interpolate.py, WiSE-FT:
(1 - ALPHA) * A + ALPHA * B, A and B earlier candidates or model specs); `concat:A,B` (the two candidates' features
side by side); `scales:A,1+0.5` (A's encoder, its features pooled at the scales named). The first candidate is the
reference: the second table gives every candidate's difference from it with twice its paired standard error (over
the protocol's splits or the photos; for `hold`, `same:clive` and `same:kit`, a bootstrap of the images, the same
resamples for candidate and reference, the column recomputed on each), and the worst difference over the choosing
columns (everything but the hold-back), the number to choose by. `--json` keeps these differences; of the per-image
scores it keeps only the hold-back's.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine  # noqa: E402
from synthetic_check import kadis_scores  # noqa: E402

HOLDBACK_FILE = Path(__file__).resolve().parent / "clive_holdback.txt"
HOLDBACK_FRACTION = 0.2
# Re-encodings of a decoded image: name -> (Pillow format, save options, suffix)
ENCODINGS = {
    "png": ("PNG", {}, ".png"),
    "q95": ("JPEG", {"quality": 95}, ".jpg"),
    "q90": ("JPEG", {"quality": 90}, ".jpg"),
    "q75": ("JPEG", {"quality": 75}, ".jpg"),
    "webp90": ("WEBP", {"quality": 90}, ".webp"),
}
FIT_HEAVIER = ("q50", ("JPEG", {"quality": 50}, ".jpg"))
REFERENCE_LEVELS = {  # the reference-photo check: 4 levels each, level 0 = the clean working image
    "jpeg": (60, 40, 20, 10),
    "blur": (0.75, 1.5, 2.5, 4.0),
    "noise": (5.0, 10.0, 20.0, 40.0),
    "darken": (0.75, 0.55, 0.4, 0.25),
}
CHOOSING = ("proto", "plcc", "enc", "png>jpg", "q50>jpg", "same:clive", "same:kit", "kadis", "ref", "ref:jpeg")
REPORTED = ("hold", "hold:plcc", "hold:enc")


# ---- image sets -------------------------------------------------------------------------------------------------

def holdback_names(names: list[str]) -> set[str]:
    """The fixed 20 % of clive-dev that guides no choice: the names with the smallest sha256 of the name."""
    if HOLDBACK_FILE.is_file():
        return set(HOLDBACK_FILE.read_text().split())
    n = round(HOLDBACK_FRACTION * len(names))
    held = sorted(names, key=lambda s: hashlib.sha256(s.encode()).hexdigest())[:n]
    HOLDBACK_FILE.write_text("\n".join(sorted(held)) + "\n")
    return set(held)


def _encode(task) -> None:
    src, dst, fmt, opts = task
    from sliq_cli.images import load_image

    buf = io.BytesIO()
    load_image(src).save(buf, fmt, **opts)
    Path(dst).write_bytes(buf.getvalue())


def _reference(task) -> None:
    """One photo's reference-check versions, made with Pillow and numpy only (not sliq's distortion code)."""
    src, out, seed = task
    from PIL import Image, ImageEnhance, ImageFilter

    from sliq_cli.tadac.database import load_work_pil

    img = load_work_pil(src)
    stem = Path(src).stem
    img.save(Path(out) / f"{stem}_clean_0.png")
    rng = np.random.default_rng(seed)
    for level, value in enumerate(REFERENCE_LEVELS["jpeg"], 1):
        img.save(Path(out) / f"{stem}_jpeg_{level}.jpg", "JPEG", quality=value)
    for level, value in enumerate(REFERENCE_LEVELS["blur"], 1):
        img.filter(ImageFilter.GaussianBlur(value)).save(Path(out) / f"{stem}_blur_{level}.png")
    arr = np.asarray(img, dtype=np.float64)
    for level, value in enumerate(REFERENCE_LEVELS["noise"], 1):
        noisy = np.clip(np.rint(arr + rng.normal(0.0, value, arr.shape)), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(Path(out) / f"{stem}_noise_{level}.png")
    for level, value in enumerate(REFERENCE_LEVELS["darken"], 1):
        ImageEnhance.Brightness(img).enhance(value).save(Path(out) / f"{stem}_darken_{level}.png")


@dataclass
class ImageSets:
    clive: list[Path]
    mos: np.ndarray
    dev: np.ndarray  # indices into clive
    hold: np.ndarray
    clive_versions: dict[str, list[Path]] = field(default_factory=dict)  # encoding -> paths, clive order
    kit: list[Path] = field(default_factory=list)
    kit_versions: dict[str, list[Path]] = field(default_factory=dict)
    reference: dict[str, list[list[Path]]] = field(default_factory=dict)  # type -> per photo, levels 0..4
    heldout: list[Path] = field(default_factory=list)
    kadis: dict = field(default_factory=dict)  # photo -> its KADIS versions, made once for every candidate


def prepare(clive_dir: Path, heldout_dir: Path, work: Path, limit: int | None, photos: int | None,
            workers: int) -> ImageSets:
    from sliq_cli.images import list_images
    from sliq_cli.iqa.datasets import load_csv

    ds = load_csv(clive_dir / "mos.csv", clive_dir)
    clive, mos = ds.paths, ds.scores
    if limit:
        clive, mos = clive[:limit], mos[:limit]
    held = holdback_names([p.name for p in ds.paths])
    is_held = np.array([p.name in held for p in clive])
    sets = ImageSets(clive, np.asarray(mos, dtype=np.float64), np.flatnonzero(~is_held), np.flatnonzero(is_held))
    kit = list_images([str(heldout_dir)], recursive=True)[:photos]
    sets.kit, sets.heldout = kit, kit
    tasks = []
    for name, (fmt, opts, suffix) in [*ENCODINGS.items(), FIT_HEAVIER]:
        for label, files, versions in (("clive", clive, sets.clive_versions), ("kit", kit, sets.kit_versions)):
            folder = work / "images" / label / name
            folder.mkdir(parents=True, exist_ok=True)
            versions[name] = [folder / (f.stem + suffix) for f in files]
            tasks += [(str(f), str(d), fmt, opts) for f, d in zip(files, versions[name]) if not d.is_file()]
    ref_dir = work / "images" / "reference"
    ref_dir.mkdir(parents=True, exist_ok=True)
    ref_tasks = [(str(f), str(ref_dir), i) for i, f in enumerate(kit) if not (ref_dir / f"{f.stem}_clean_0.png").is_file()]
    t0 = time.time()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_encode, tasks, chunksize=16))
        list(pool.map(_reference, ref_tasks))
    for kind in REFERENCE_LEVELS:
        sets.reference[kind] = [[ref_dir / f"{f.stem}_clean_0.png"]
                                + [ref_dir / f"{f.stem}_{kind}_{lv}{'.jpg' if kind == 'jpeg' else '.png'}"
                                   for lv in range(1, 5)] for f in kit]
    print(f"images: {len(clive)} clive-dev ({len(sets.dev)} dev-80, {len(sets.hold)} hold-back), {len(kit)} held-out "
          f"photos; {len(tasks)} re-encodings and {len(ref_tasks)} reference sets made in {time.time() - t0:.0f} s",
          flush=True)
    return sets


# ---- candidates -------------------------------------------------------------------------------------------------

class Candidate:
    """Features of files and of image tensors, from one encoder or several side by side."""

    def __init__(self, name: str, encoders: list, sources: list[str]):
        self.name, self.encoders, self.sources = name, encoders, sources

    def files(self, paths: list[Path], device: str, batch_size: int | None, work: Path) -> np.ndarray:
        """Features of the files, kept on disk per encoder (a re-run after a change to the measures reads them)."""
        from sliq_cli.iqa.features import extract_features

        key = hashlib.sha256("\n".join(map(str, paths)).encode()).hexdigest()[:16]
        parts = []
        for enc in self.encoders:
            spec = hashlib.sha256(json.dumps(enc.config.to_dict()["features"]).encode()).hexdigest()[:8]
            cached = work / "features" / f"{enc.fingerprint[:16]}-{spec}" / f"{key}.npy"
            if not cached.is_file():
                res = extract_features(enc, paths, device=device, batch_size=batch_size)
                if res.failed:
                    raise SystemExit(f"{self.name}: {len(res.failed)} images failed, e.g. {next(iter(res.failed.items()))}")
                cached.parent.mkdir(parents=True, exist_ok=True)
                np.save(cached, res.features)
            parts.append(np.load(cached))
        return np.hstack(parts)

    def tensors(self, x) -> np.ndarray:
        return np.hstack([enc.quality_features(x).float().cpu().numpy() for enc in self.encoders])


def build_candidates(specs: list[str], work: Path, device: str) -> list[Candidate]:
    from sliq_cli.loading import find_model
    from sliq_cli.model.checkpoint import load_encoder
    from sliq_cli.model.interpolate import interpolate_encoders

    out: list[Candidate] = []
    by_name: dict[str, Candidate] = {}
    for spec in specs:
        name, _, what = spec.partition("=")
        if not what:
            raise SystemExit(f"--candidate {spec!r}: expected NAME=SPEC")
        kind, _, args = what.partition(":")
        if kind == "concat":
            parts = [by_name[a] for a in args.split(",")]
            cand = Candidate(name, [e for p in parts for e in p.encoders], [s for p in parts for s in p.sources])
            by_name[name] = cand
            out.append(cand)
            continue
        folder = work / "models" / name
        if kind == "scales":  # another candidate's encoder with its features at other scales, e.g. scales:start,1+0.5
            base, scales = args.split(",")
            shutil.copytree(by_name[base].sources[0], folder, dirs_exist_ok=True)
            meta = json.loads((folder / "config.json").read_text())
            meta["config"]["features"]["scales"] = [float(v) for v in scales.split("+")]
            (folder / "config.json").write_text(json.dumps(meta, indent=2))
        elif kind == "wise":
            a, b, alpha = args.split(",")
            ends = [by_name[e].sources[0] if e in by_name else find_model(e) for e in (a, b)]
            interpolate_encoders(*ends, float(alpha), folder, dtype="bfloat16")  # bf16, as the default ships
        else:
            folder = find_model(what)
        cand = Candidate(name, [load_encoder(folder, device).fuse_for_inference()], [str(folder)])
        by_name[name] = cand
        out.append(cand)
    return out


# ---- measures ---------------------------------------------------------------------------------------------------

def protocol_across(X_fit: np.ndarray, X_test: np.ndarray, y: np.ndarray, splits) -> np.ndarray:
    """Test SROCC per split: ridge fitted on X_fit's train part (alpha on X_fit's validation part), tested on
    X_test's test part (the same images, stored another way). (splits,)"""
    from sliq_cli.iqa.head import RidgeHead
    from sliq_cli.iqa.metrics import srocc
    from sliq_cli.iqa.protocol import select_alpha

    out = []
    for sp in splits:
        alpha = select_alpha(X_fit[sp.train], y[sp.train], X_fit[sp.val], y[sp.val])
        out.append(srocc(RidgeHead.fit(X_fit[sp.train], y[sp.train], alpha).predict(X_test[sp.test]), y[sp.test]))
    return np.asarray(out)


def per_photo_srocc(scores: np.ndarray) -> np.ndarray:
    """Per photo, the SROCC between level (0 = clean) and -score: +1 = more distortion, lower score.
    scores: (photos, levels) -> (photos,)."""
    from scipy.stats import spearmanr

    levels = np.arange(scores.shape[1])
    return np.nan_to_num(np.asarray([-spearmanr(levels, s)[0] for s in scores]))  # constant scores: no ranking, 0


def measure(cand: Candidate, sets: ImageSets, device: str, batch_size: int | None, work: Path) -> dict:
    """Every column's value, plus `units`: its per-split or per-photo values, so differences between candidates
    can be paired (same splits, same photos) and given a standard error."""
    from sliq_cli.iqa.metrics import correlations, srocc
    from sliq_cli.iqa.protocol import fit_deployable_head, random_splits, run_protocol

    t0 = time.time()
    feats = lambda paths: cand.files(paths, device, batch_size, work)  # noqa: E731
    y = sets.mos
    X = feats(sets.clive)
    Xv = {k: feats(v) for k, v in sets.clive_versions.items()}
    dev, ydev = sets.dev, y[sets.dev]
    splits = random_splits(len(dev), 10, seed=0)  # run_protocol's own splits
    proto = run_protocol(X[dev], ydev)
    units = {"proto": [sp.metrics["srocc"] for sp in proto.splits], "plcc": [sp.metrics["plcc"] for sp in proto.splits]}
    enc = {k: protocol_across(X[dev], Xv[k][dev], ydev, splits) for k in ENCODINGS}
    worst = min(enc, key=lambda k: enc[k].mean())
    units["enc"] = enc[worst]
    units["png>jpg"] = protocol_across(Xv["png"][dev], X[dev], ydev, splits)
    units["q50>jpg"] = protocol_across(Xv[FIT_HEAVIER[0]][dev], X[dev], ydev, splits)
    r = {"proto_std": float(np.std(units["proto"])), "enc_each": {k: float(v.mean()) for k, v in enc.items()}}

    head = fit_deployable_head(X[dev], ydev)
    # per-image scores, as stored and per encoding: the `same:` columns' bootstrap resamples them (not in the JSON)
    r["same_pred"] = {
        "same:clive": {"stored": head.predict(X), **{k: head.predict(Xv[k]) for k in ENCODINGS}},
        "same:kit": {"stored": head.predict(feats(sets.kit)),
                     **{k: head.predict(feats(sets.kit_versions[k])) for k in ENCODINGS}}}
    for col, preds in r["same_pred"].items():
        each = {k: srocc(p, preds["stored"]) for k, p in preds.items() if k != "stored"}
        r[col], r[col + "_each"] = min(each.values()), each

    ref = {}
    for kind, photos in sets.reference.items():
        flat = [p for levels in photos for p in levels]
        ref[kind] = per_photo_srocc(head.predict(feats(flat)).reshape(len(photos), -1))  # (photos,)
    units["ref"], units["ref:jpeg"] = np.mean(list(ref.values()), axis=0), ref["jpeg"]
    r["ref_each"] = {k: float(v.mean()) for k, v in ref.items()}

    import torch

    with torch.inference_mode():
        kadis = kadis_scores(lambda b: head.predict(cand.tensors(b)), sets.heldout, device,
                             cache=sets.kadis)  # (type, photo, level)
    per_type = np.stack([per_photo_srocc(kadis[t]) for t in range(kadis.shape[0])])  # (type, photo)
    units["kadis"] = per_type.mean(0)
    r["kadis_each"] = per_type.mean(1).tolist()

    hold_pred = head.predict(X[sets.hold])
    hold = correlations(hold_pred, y[sets.hold])
    r["hold"], r["hold:plcc"], r["hold_pred"] = hold["srocc"], hold["plcc"], hold_pred.tolist()
    hold_enc = {k: srocc(head.predict(Xv[k][sets.hold]), y[sets.hold]) for k in ENCODINGS}
    r["hold:enc"], r["hold:enc_each"] = min(hold_enc.values()), hold_enc
    for col, values in units.items():
        r[col] = float(np.mean(values))
    r["units"] = {col: np.asarray(v, dtype=float).tolist() for col, v in units.items()}
    r["seconds"] = round(time.time() - t0, 1)
    return r


def paired_bootstrap(diff, n: int, resamples: int, seed: int = 0) -> float:
    """Standard error of a difference between two models' statistic on the same n images: the std of diff(i) over
    resamples i of the images, one set of indices for both sides so that the pairing is kept."""
    rng = np.random.default_rng(seed)
    return float(np.std([diff(rng.integers(0, n, n)) for _ in range(resamples)]))


def worst_same(preds: dict[str, np.ndarray], i) -> float:
    """A `same:` column on images i: the lowest SROCC, over encodings, between scores as stored and re-encoded."""
    from sliq_cli.iqa.metrics import srocc

    return min(srocc(p[i], preds["stored"][i]) for k, p in preds.items() if k != "stored")


def paired_difference(r: dict, base: dict, col: str, mos: np.ndarray) -> tuple[float, float | None]:
    """Candidate minus reference on one column, and the standard error of that difference: paired over the same
    splits or photos, or (the hold-back, the `same:` columns) a paired bootstrap over their images; None where
    neither applies."""
    from sliq_cli.iqa.metrics import srocc

    d = r[col] - base[col]
    if col in r.get("units", {}) and col in base.get("units", {}):
        diff = np.asarray(r["units"][col]) - np.asarray(base["units"][col])
        return d, float(diff.std(ddof=1) / np.sqrt(len(diff)))
    if col == "hold" and "hold_pred" in r:
        a, b = np.asarray(r["hold_pred"]), np.asarray(base["hold_pred"])
        return d, paired_bootstrap(lambda i: srocc(a[i], mos[i]) - srocc(b[i], mos[i]), len(mos), 500)
    if col in r.get("same_pred", {}) and col in base.get("same_pred", {}):
        a, b = r["same_pred"][col], base["same_pred"][col]
        return d, paired_bootstrap(lambda i: worst_same(a, i) - worst_same(b, i), len(a["stored"]), 1000)
    return d, None


def differences(rows: dict[str, dict], hold_mos: np.ndarray) -> dict[str, dict[str, tuple[float, float | None]]]:
    """Every candidate but the reference (the first): per column, its difference from the reference and the SE."""
    base = next(iter(rows.values()))
    return {name: {c: paired_difference(r, base, c, hold_mos) for c in (*CHOOSING, *REPORTED)}
            for name, r in list(rows.items())[1:]}


def table(rows: dict[str, dict], diffs: dict[str, dict[str, tuple[float, float | None]]]) -> str:
    cols = (*CHOOSING, *REPORTED)
    lines = ["| candidate | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    lines += ["", f"Difference from `{next(iter(rows))}` ± twice its paired standard error (splits, photos, or a "
              "bootstrap of the images: hold-back, `same:`). `worst`: the lowest difference over the choosing columns; "
              "`worst+2se`: the lowest upper bound (below 0: worse beyond noise on some column).", "",
              "| candidate | worst | worst+2se | " + " | ".join(cols) + " |", "|---|---:|---:|" + "---:|" * len(cols)]
    for name, d in diffs.items():
        worst = min(d[c][0] for c in CHOOSING)
        bound = min(d[c][0] + 2 * (d[c][1] or 0.0) for c in CHOOSING)
        cells = [f"{v:+.3f}" + ("" if se is None else f" ± {2 * se:.3f}") for v, se in (d[c] for c in cols)]
        lines.append(f"| {name} | {worst:+.3f} | {bound:+.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clive", type=Path, required=True, help="clive-dev folder (mos.csv + images)")
    ap.add_argument("--heldout", type=Path, required=True, help="photos no candidate trained on, searched "
                    "recursively (sliq tadac build --heldout's pristine photos)")
    ap.add_argument("--candidate", action="append", required=True, help="NAME=SPEC (see above); the first is the "
                    "reference")
    ap.add_argument("--work", type=Path, required=True, help="folder for re-encoded images and interpolated models")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--workers", type=int, default=8, help="processes making the re-encodings")
    ap.add_argument("--limit", type=int, help="only the first N clive-dev images (a quick check)")
    ap.add_argument("--photos", type=int, help="only the first N held-out photos (a quick check)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()

    from sliq_cli.iqa.features import resolve_device

    device = resolve_device(args.device)
    print(f"machine: {describe()}", flush=True)
    sets = prepare(args.clive, args.heldout, args.work, args.limit, args.photos, args.workers)
    cands = build_candidates(args.candidate, args.work, device)
    rows = {}
    for cand in cands:
        rows[cand.name] = measure(cand, sets, device, args.batch_size, args.work)
        r = rows[cand.name]
        print(f"{cand.name}: " + ", ".join(f"{c} {r[c]:.3f}" for c in (*CHOOSING, *REPORTED))
              + f" ({r['seconds']} s)", flush=True)
    diffs = differences(rows, sets.mos[sets.hold])
    if args.json:  # first: the table is made from it
        results = {name: {k: v for k, v in r.items() if k != "same_pred"} for name, r in rows.items()}
        args.json.write_text(json.dumps({"machine": machine(), "device": device, "candidates": dict(zip(
            [c.name for c in cands], [c.sources for c in cands])), "hold_mos": sets.mos[sets.hold].tolist(),
            "results": results, "differences": diffs}, indent=1) + "\n")
    text = table(rows, diffs)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
