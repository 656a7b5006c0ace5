"""The TADAC database (paper III-C): build it from image folders, read it back, count it.

On-disk format (plain JSON, readable without sliq):

    DB/tadac.json      {"format": "sliq-tadac", "format_version": 1,
                        "build": {sources, labels_csv, captions_csv, labels_from_folders, pristine_globs,
                                  authentic_globs, heldout, seed, materialize, sliq_version, created, seconds},
                        "counts": {records, pristine, authentic, train, heldout, samples, labelled, captioned,
                                   skipped, sources: {name: n}},
                        "thresholds": {attr: [t1, t2]} for brightness, contrast, sharpness, colourfulness,
                        "work_size": [512, 384], "heldout": [ids of held-out records]}
    DB/manifest.jsonl  one JSON object per source image:
                       {"id", "path" (the source's, relative to DB; absolute in older manifests),
                        "kind": "pristine"|"authentic", "source", "label": str|null, "caption": str|null,
                        "work_size": [w, h], "saliency_box": [x, y, 224, 224] (working-image pixels),
                        "appearance": {attr: float}, "bins": {attr: "low"|"medium"|"high"}, "split": "train"|"heldout"}
    DB/phrases.json    every phrase list (texts.phrase_bank())
    DB/skipped.txt     sources that were left out, one "path<TAB>reason" per line
    DB/distorted/      only with materialize: <id>.png (the working image) and <id>_<type:02d>_<level:02d>.png for
                       every pristine record, KADIS type 1..25 and level 1..5

Working image: the source (EXIF-transposed RGB) resized with antialiasing to fit inside 512x384 (landscape) or
384x512 (portrait), never upscaled unless its shorter side is then below 256 (then scaled so it is 256);
Pillow bicubic. Sources above 16x the working area are first decoded at reduced size (JPEG draft + Lanczos), so
huge photos never need full-size memory. Appearance (appearance.py) and the saliency box (saliency.py) are
measured on it. Attributes are binned by their tertiles over all records of the database.

A pristine record stands for 126 training samples (variant 0 = itself, 1..125 = KADIS (type, level)); an
authentic record for one. `heldout=N` marks N pristine records (chosen by `seed`) split="heldout".
"""

from __future__ import annotations

import csv
import fnmatch
import json
import os
import random
import re
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from sliq_cli import __version__
from sliq_cli.atomic import atomic_path, atomic_write_json, atomic_write_text
from sliq_cli.csvfile import open_csv
from sliq_cli.errors import InputError, UsageError
from sliq_cli.images import ImageLoadError, list_images, load_image, pil_to_float
from sliq_cli.parallel import process_map
from sliq_cli.tadac.appearance import ATTRIBUTES, BINS, appearance, bin_value, tertiles
from sliq_cli.tadac.saliency import saliency_box
from sliq_cli.tadac.texts import N_KADIS_TYPES, N_LEVELS, TEXT_TYPES, VARIANTS_PER_PRISTINE, phrase_bank

FORMAT = "sliq-tadac"
FORMAT_VERSION = 1
WORK_SIZE = (512, 384)
MIN_SHORT_SIDE = 256
DECODE_MAX_PIXELS = 16 * WORK_SIZE[0] * WORK_SIZE[1]
KINDS = ("pristine", "authentic")
SPLITS = ("train", "heldout")

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class Record:
    """One manifest line."""

    id: str
    path: str
    kind: str
    source: str
    label: str | None
    caption: str | None
    work_size: list[int]
    saliency_box: list[int]
    appearance: dict[str, float]
    bins: dict[str, str]
    split: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Record:
        names = set(cls.__dataclass_fields__)
        if set(data) != names:
            unknown, missing = sorted(set(data) - names), sorted(names - set(data))
            raise ValueError(f"record keys differ from the format: unknown {unknown}, missing {missing}")
        if data["kind"] not in KINDS or data["split"] not in SPLITS:
            raise ValueError(f"bad kind {data['kind']!r} or split {data['split']!r}")
        if set(data["bins"]) != set(ATTRIBUTES) or not set(data["bins"].values()) <= set(BINS):
            raise ValueError(f"bad appearance bins {data['bins']!r}")
        return cls(**data)

    @property
    def n_samples(self) -> int:
        return VARIANTS_PER_PRISTINE if self.kind == "pristine" else 1


@dataclass
class Database:
    root: Path
    meta: dict
    records: list[Record]
    thresholds: dict[str, list[float]]
    phrases: dict

    def training_records(self) -> list[Record]:
        return [r for r in self.records if r.split == "train"]


@dataclass
class BuildSummary:
    out: Path
    counts: dict
    thresholds: dict[str, list[float]]
    skipped: list[tuple[str, str]]
    seconds: float
    materialized: int = 0

    def to_dict(self) -> dict:
        return {"out": str(self.out), "counts": self.counts, "thresholds": self.thresholds,
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped], "seconds": round(self.seconds, 2),
                "materialized": self.materialized}


@dataclass
class _Candidate:
    path: Path  # absolute
    rel: str  # relative to its source root, posix
    root: Path
    kind: str
    label: str | None = None
    caption: str | None = None
    id: str = field(default="")

    @property
    def source(self) -> str:
        parts = self.rel.split("/")
        return parts[0] if len(parts) > 1 else self.root.name


# ---------------------------------------------------------------------------------------------- working image


def work_size(width: int, height: int) -> tuple[int, int]:
    """The working-image size of a width x height source (module docstring)."""
    box_w, box_h = WORK_SIZE if width >= height else WORK_SIZE[::-1]
    scale = min(box_w / width, box_h / height, 1.0)
    if min(width, height) * scale < MIN_SHORT_SIDE:
        scale = MIN_SHORT_SIDE / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def load_work_pil(path):
    """The working image of the source at `path` as a PIL RGB image; raises ImageLoadError."""
    from PIL import Image

    img = load_image(path, max_pixels=DECODE_MAX_PIXELS)
    size = work_size(*img.size)
    return img if size == img.size else img.resize(size, Image.Resampling.BICUBIC)


def tensor_to_pil(x):
    """(3, h, w) float [0, 1] tensor -> 8-bit PIL RGB image (rounded)."""
    from PIL import Image

    from sliq_cli.tensors import to_uint8

    return Image.fromarray(to_uint8(x).permute(1, 2, 0).cpu().numpy())


def load_work_image(record: Record):
    """(3, h, w) float32 tensor in [0, 1]: the record's working image, decoded as the build did."""
    try:
        img = load_work_pil(record.path)
    except ImageLoadError as e:
        raise InputError(e.path, e.reason) from None
    if list(img.size) != list(record.work_size):
        raise InputError(record.path, f"working image is {list(img.size)}, the database says {record.work_size}: "
                                      "the source changed since the build")
    return pil_to_float(img)  # (3, h, w)


def _analyse(path: str) -> dict:
    """Worker: working size, appearance and saliency box of one source, or the reason it cannot be read."""
    try:
        img = load_work_pil(path)
    except ImageLoadError as e:
        return {"path": path, "error": e.reason}
    rgb = np.asarray(img, dtype=np.float32) / 255.0  # (h, w, 3)
    return {"path": path, "work_size": list(img.size), "appearance": appearance(rgb), "saliency_box": saliency_box(rgb)}


# ---------------------------------------------------------------------------------------------- inputs


def read_csv_column(path, column: str) -> dict[str, str | None]:
    """{image: value} from a CSV with columns `image` and `column` (others ignored); empty values become None.

    Raises InputError naming the file and line for a missing column, a row of the wrong length, an empty image
    field, an image listed twice with different values, or text that is not UTF-8 CSV.
    """
    path = Path(path)
    out: dict[str, str | None] = {}
    first_line: dict[str, int] = {}
    try:
        with open_csv(path) as reader:
            header = reader.header()
            if header is None:
                raise InputError(path, "empty file, expected a header with columns image," + column, line=1)
            for name in ("image", column):
                if name not in header:
                    raise InputError(path, f"missing column {name!r} (header: {','.join(header)})", line=1)
            i_image, i_value = header.index("image"), header.index(column)
            for line, row in reader:
                if len(row) != len(header):
                    raise InputError(path, f"expected {len(header)} fields, found {len(row)}", line=line)
                image, value = row[i_image].strip(), row[i_value].strip() or None
                if not image:
                    raise InputError(path, "empty image field", line=line)
                if image in out and out[image] != value:
                    raise InputError(path, f"{image!r} is listed again with a different {column} "
                                           f"(first at line {first_line[image]})", line=line)
                out[image], first_line[image] = value, line
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except UnicodeDecodeError as e:
        raise InputError(path, f"not UTF-8 text ({e.reason})") from None
    except csv.Error as e:
        raise InputError(path, f"malformed CSV ({e})", line=reader.line_num) from None
    return out


class _CsvLookup:
    """Values of a CSV keyed by image path: relative to the source root, or resolved from the CSV's folder."""

    def __init__(self, path, column: str):
        self.values = read_csv_column(path, column)
        base = Path(path).resolve().parent
        self.by_abs = {(base / k).resolve(): k for k in self.values}
        self.used: set[str] = set()

    def get(self, cand: _Candidate) -> str | None:
        key = cand.rel if cand.rel in self.values else self.by_abs.get(cand.path)
        if key is None:
            return None
        self.used.add(key)
        return self.values[key]


def _matches(cand_rel: str, cand_abs: Path, globs) -> bool:
    return any(fnmatch.fnmatchcase(cand_rel, g) or fnmatch.fnmatchcase(cand_abs.as_posix(), g) for g in globs)


def _classify(rel: str, path: Path, pristine_globs, authentic_globs) -> tuple[str | None, str]:
    """(kind, reason if none). Only --authentic given: the rest is pristine; only --pristine: the rest authentic;
    neither: all pristine; both: an image must match exactly one."""
    is_p, is_a = _matches(rel, path, pristine_globs), _matches(rel, path, authentic_globs)
    if is_p and is_a:
        return None, "matches both a --pristine and an --authentic pattern"
    if is_p or is_a:
        return ("pristine" if is_p else "authentic"), ""
    if pristine_globs and authentic_globs:
        return None, "matches no --pristine or --authentic pattern"
    return ("authentic" if pristine_globs else "pristine"), ""


def _collect(sources, pristine_globs, authentic_globs) -> tuple[list[_Candidate], list[tuple[str, str]]]:
    cands: list[_Candidate] = []
    skipped: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for src in sources:
        src = Path(src).expanduser()
        if not src.exists():
            raise InputError(src, "no such file or folder")
        root = src.resolve() if src.is_dir() else src.resolve().parent
        files = list_images([str(src)], recursive=True) if src.is_dir() else [src]
        for f in files:
            path = f.resolve()
            if path in seen:
                continue
            seen.add(path)
            rel = path.relative_to(root).as_posix()
            kind, reason = _classify(rel, path, pristine_globs, authentic_globs)
            if kind is None:
                skipped.append((str(path), reason))
            else:
                cands.append(_Candidate(path=path, rel=rel, root=root, kind=kind))
    return cands, skipped


def _assign_ids(cands: list[_Candidate]) -> None:
    """Filesystem-safe unique ids from the relative path ('bsds500/100007.jpg' -> 'bsds500_100007')."""
    taken: set[str] = set()
    for c in cands:
        stem = re.sub(r"[^A-Za-z0-9.-]+", "_", c.rel.rsplit(".", 1)[0]).strip("_") or "image"
        cid = stem
        if cid in taken:
            cid = re.sub(r"[^A-Za-z0-9.-]+", "_", c.root.name) + "_" + stem
        n = 2
        while cid in taken:
            cid, n = f"{stem}_{n}", n + 1
        taken.add(cid)
        c.id = cid


# ---------------------------------------------------------------------------------------------- build


def _run_pool(fn, items: list, workers: int, stage: str, progress: Progress | None, uses_torch: bool = False):
    """process_map's results as a list, reporting progress per item."""
    total = len(items)
    if progress:
        progress(stage, 0, total)
    results = []
    for i, res in enumerate(process_map(fn, items, workers, uses_torch), 1):
        results.append(res)
        if progress:
            progress(stage, i, total)
    return results


def _counts(records: list[Record], skipped: int) -> dict:
    train = [r for r in records if r.split == "train"]
    return {
        "records": len(records),
        "pristine": sum(r.kind == "pristine" for r in records),
        "authentic": sum(r.kind == "authentic" for r in records),
        "train": len(train),
        "heldout": len(records) - len(train),
        "samples": sum(r.n_samples for r in train),
        "labelled": sum(r.label is not None for r in records),
        "captioned": sum(r.caption is not None for r in records),
        "skipped": skipped,
        "sources": dict(sorted(Counter(r.source for r in records).items())),
    }


def build_database(
    sources,
    out,
    labels_csv=None,
    captions_csv=None,
    pristine_globs=(),
    authentic_globs=(),
    heldout: int = 0,
    seed: int = 0,
    materialize: bool = False,
    workers: int = 1,
    labels_from_folders: bool = False,
    progress: Progress | None = None,
) -> BuildSummary:
    """Build a TADAC database in folder `out` from image files and folders (searched recursively).

    Kinds come from fnmatch patterns on each image's path relative to its source folder (or its absolute path):
    see `_classify`. Labels (columns image,label) and captions (image,caption) CSVs name images relative to the
    source folder or to the CSV's own folder. Unreadable images are skipped and listed; a bad CSV raises InputError.
    """
    start = time.perf_counter()
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if heldout < 0 or workers < 1:
        raise UsageError("--heldout must be >= 0 and --workers >= 1")
    labels = _CsvLookup(labels_csv, "label") if labels_csv else None
    captions = _CsvLookup(captions_csv, "caption") if captions_csv else None
    cands, skipped = _collect(sources, list(pristine_globs), list(authentic_globs))

    results = _run_pool(_analyse, [str(c.path) for c in cands], workers, "analyse", progress)
    readable = []
    for cand, res in zip(cands, results):
        if "error" in res:
            skipped.append((res["path"], res["error"]))
        else:
            readable.append((cand, res))
    if not readable:
        raise InputError(", ".join(map(str, sources)), "no readable images")
    _assign_ids([c for c, _ in readable])

    pristine_ids = sorted(c.id for c, _ in readable if c.kind == "pristine")
    if heldout > len(pristine_ids):
        raise UsageError(f"--heldout {heldout} is more than the {len(pristine_ids)} pristine images")
    held = set(random.Random(seed).sample(pristine_ids, heldout))
    thresholds = {a: tertiles(res["appearance"][a] for _, res in readable) for a in ATTRIBUTES}

    records = []
    for cand, res in readable:
        label = labels.get(cand) if labels else None
        if label is None and labels_from_folders:
            label = cand.path.parent.name.replace("_", " ")
        records.append(Record(
            id=cand.id, path=str(cand.path), kind=cand.kind, source=cand.source, label=label,
            caption=captions.get(cand) if captions else None, work_size=res["work_size"],
            saliency_box=res["saliency_box"], appearance=res["appearance"],
            bins={a: bin_value(res["appearance"][a], thresholds[a]) for a in ATTRIBUTES},
            split="heldout" if cand.id in held else "train",
        ))

    materialized = 0
    if materialize:
        jobs = [(r.path, r.id, str(out / "distorted"), seed) for r in records if r.kind == "pristine"]
        materialized = sum(_run_pool(_materialize_one, jobs, workers, "materialize", progress, uses_torch=True))

    seconds = time.perf_counter() - start
    counts = _counts(records, len(skipped))
    build = {
        "sources": [str(Path(s).expanduser().resolve()) for s in sources],
        "labels_csv": str(Path(labels_csv).resolve()) if labels_csv else None,
        "captions_csv": str(Path(captions_csv).resolve()) if captions_csv else None,
        "labels_from_folders": labels_from_folders,
        "pristine_globs": list(pristine_globs), "authentic_globs": list(authentic_globs),
        "heldout": heldout, "seed": seed, "materialize": materialize, "sliq_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seconds": round(seconds, 2),
    }
    if labels:
        counts["labels_unmatched"] = len(labels.values) - len(labels.used)
    if captions:
        counts["captions_unmatched"] = len(captions.values) - len(captions.used)
    out.mkdir(parents=True, exist_ok=True)
    base = out.resolve()
    atomic_write_text(out / "manifest.jsonl", "".join(
        json.dumps({**r.to_dict(), "path": _relative_path(r.path, base)}, ensure_ascii=False) + "\n" for r in records))
    atomic_write_json(out / "phrases.json", phrase_bank())
    atomic_write_text(out / "skipped.txt", "".join(f"{p}\t{reason}\n" for p, reason in skipped))
    # tadac.json last: its presence marks a complete database.
    atomic_write_json(out / "tadac.json", {
        "format": FORMAT, "format_version": FORMAT_VERSION, "build": build, "counts": counts,
        "thresholds": thresholds, "work_size": list(WORK_SIZE), "heldout": sorted(held),
    })
    return BuildSummary(out=out, counts=counts, thresholds=thresholds, skipped=skipped, seconds=seconds,
                        materialized=materialized)


def _relative_path(path: str, base: Path) -> str:
    """A source's path relative to the database folder, so the two can move together (a copy of their common
    parent folder); the absolute path where none exists (another drive on Windows)."""
    try:
        return os.path.relpath(path, base)
    except ValueError:
        return path


def distortion_seed(seed: int, record_id: str, kadis_type: int, level: int) -> int:
    """A stable per-(record, type, level) generator seed, so materialised files are reproducible."""
    return zlib.crc32(f"{seed}/{record_id}/{kadis_type}/{level}".encode())


def _materialize_one(job: tuple[str, str, str, int]) -> int:
    """Worker: write the working image and its 125 KADIS distortions as PNGs; returns the number of files."""
    import torch

    from sliq_cli.tadac.distortions import distort

    path, record_id, folder, seed = job
    img = load_work_pil(path)
    x = pil_to_float(img)[None]  # (1, 3, h, w)
    outputs = [(f"{record_id}.png", x)]
    for t in range(1, N_KADIS_TYPES + 1):
        for level in range(1, N_LEVELS + 1):
            g = torch.Generator().manual_seed(distortion_seed(seed, record_id, t, level))
            outputs.append((f"{record_id}_{t:02d}_{level:02d}.png", distort(x, t, level, generator=g)))
    for name, tensor in outputs:
        with atomic_path(Path(folder) / name) as tmp:
            tensor_to_pil(tensor[0]).save(tmp, format="PNG")
    return len(outputs)


# ---------------------------------------------------------------------------------------------- read


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "missing (not a complete TADAC database)") from None
    except json.JSONDecodeError as e:
        raise InputError(path, f"invalid JSON: {e.msg}", line=e.lineno) from None


def load_database(path) -> Database:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise InputError(root, "not a folder (expected a TADAC database built by `sliq tadac build`)")
    meta = _read_json(root / "tadac.json")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(root / "tadac.json", f"not a TADAC database (format is not {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputError(root / "tadac.json", f"format_version {meta.get('format_version')} is not supported "
                                              f"(this sliq reads version {FORMAT_VERSION})")
    records = []
    manifest = root / "manifest.jsonl"
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(manifest, "missing (not a complete TADAC database)") from None
    base = root.resolve()
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = Record.from_dict(json.loads(line))
            # relative source paths are relative to the database folder; absolute ones (older manifests) stay
            records.append(replace(record, path=os.path.normpath(os.path.join(base, record.path))))
        except (json.JSONDecodeError, ValueError, TypeError, KeyError, AttributeError) as e:
            raise InputError(manifest, f"bad record: {e}", line=line_no) from None
    return Database(root=root, meta=meta, records=records, thresholds=meta["thresholds"],
                    phrases=_read_json(root / "phrases.json"))


@dataclass
class DatabaseCounts:
    """What `sliq tadac show` prints. Sample counts are over the training split."""

    records: dict[str, int]  # kind -> records (all splits)
    samples: dict[str, int]  # kind -> training samples
    splits: dict[str, int]
    sources: dict[str, int]
    content: dict[str, int]  # labelled / captioned / neither
    text_types: dict[str, int]  # distortion text type -> training samples
    levels: dict[str, int]  # "0 (pristine)", "1".."5" -> training samples of pristine records
    appearance: dict[str, dict[str, int]]  # attr -> bin -> records


def database_counts(db: Database) -> DatabaseCounts:
    train_pristine = sum(r.kind == "pristine" for r in db.training_records())
    per_kadis = train_pristine * N_LEVELS  # training samples of one KADIS type
    return DatabaseCounts(
        records={k: sum(r.kind == k for r in db.records) for k in KINDS},
        samples={k: sum(r.n_samples for r in db.training_records() if r.kind == k) for k in KINDS},
        splits={s: sum(r.split == s for r in db.records) for s in SPLITS},
        sources=dict(sorted(Counter(r.source for r in db.records).items())),
        content={
            "label": sum(r.label is not None for r in db.records),
            "caption": sum(r.caption is not None for r in db.records),
            "neither": sum(r.label is None and r.caption is None for r in db.records),
        },
        text_types={t.name: per_kadis * len(t.kadis) for t in TEXT_TYPES},
        levels={"0 (pristine)": train_pristine, **{str(l): train_pristine * N_KADIS_TYPES for l in range(1, N_LEVELS + 1)}},
        appearance={a: {b: sum(r.bins[a] == b for r in db.records) for b in BINS} for a in ATTRIBUTES},
    )
