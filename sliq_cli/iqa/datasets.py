"""IQA datasets as their authors ship them, plus a generic CSV (paper IV-B: LIVE, CSIQ, TID2013, KADID-10k,
KonIQ-10k, CLIVE, FLIVE, SPAQ).

A dataset is found by name under the data root (`--data-root` or $SLIQ_DATA: `live` -> $SLIQ_DATA/live), by a
path to its folder (the layout is recognised from its marker files), or by a path to a CSV file. Native layouts
(ROOT is the dataset's folder):

  live      LIVE release 2: ROOT/dmos.mat (`dmos`, `orgs`, 1x982), ROOT/refnames_all.mat (`refnames_all`),
            ROOT/{jp2k,jpeg,wn,gblur,fastfading}/imgN.bmp, ROOT/refimgs/. The 982 entries are the five folders in
            that order (227, 233, 174, 174, 174 images); reference copies (orgs == 1) are left out -> 779 images.
            DMOS, lower is better.
  csiq      ROOT/csiq.DMOS.csv: the sheet `all_by_image` of the release's csiq.DMOS.xlsx saved as CSV, header
            `image,dst_idx,dst_type,dst_lev,dmos_std,dmos`; images ROOT/dst_imgs/<type>/<image>.<TYPE>.<lev>.png
            (types noise/jpeg/jpeg 2000/fnoise/blur/contrast). DMOS in [0, 1], lower is better.
  tid2013   ROOT/mos_with_names.txt (`<mos> <name>` per line), optional ROOT/mos_std.txt (same order),
            ROOT/distorted_images/, ROOT/reference_images/. File names are matched case-insensitively (the
            release mixes i25_*.bmp and I25_*.BMP). MOS in [0, 9].
  kadid10k  ROOT/dmos.csv (`dist_img,ref_img,dmos,var`), ROOT/images/. Its `dmos` is a 1..5 rating, higher is better.
  koniq10k  ROOT/koniq10k_scores_and_distributions.csv (`image_name,...,MOS,SD,...`), ROOT/1024x768/. MOS in [1, 5].
  clive     ROOT/Data/AllImages_release.mat + AllMOS_release.mat (+ AllStdDev_release.mat), ROOT/Images/. The
            first 7 entries are the release's training images (Images/trainingImages) and are skipped -> 1162.
  flive     PaQ-2-PiQ database folder (ROOT or ROOT/database): labels_image.csv (`name,mos`), the official split in
            labels640.csv (test, `name_image`) and labels=640_padded.csv (train + validation, `name_image,is_valid`);
            images at ROOT/<name>.
  spaq      ROOT/Annotations/MOS and Image attribute scores.csv: the release's xlsx saved as CSV (columns
            `Image name`, `MOS`, ...); images ROOT/TestImage/. Shorter side resized to 512 at load time (paper IV-B).
  CSV       `image,mos` (+ optional `ref`, `split` in {train,val,test}, `mos_std`; other columns are kept as
            attributes, e.g. `distortion` for t-SNE colours). Images relative to the CSV's folder or --images.
            A folder holding mos.csv is such a dataset.
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from sliq_cli.csvfile import open_csv
from sliq_cli.errors import InputError, SliqError, UsageError
from sliq_cli.paths import data_root

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Item:
    path: Path
    score: float
    ref: str | None = None  # content id: items sharing it never straddle splits
    split: str | None = None  # official split (FLIVE, or a CSV's split column)
    std: float | None = None
    attrs: dict[str, str] = field(default_factory=dict)  # e.g. {"distortion": "jpeg"}


@dataclass(frozen=True)
class Dataset:
    name: str
    items: list[Item]
    higher_is_better: bool  # False for DMOS
    scale: tuple[float, float]
    synthetic: bool  # split by reference image
    source: Path  # the file the scores come from
    resize_shorter: int | None = None  # resize so the shorter side is this at load time (SPAQ)
    missing: list[Path] = field(default_factory=list)  # listed but absent, skipped under skip_missing

    def __len__(self) -> int:
        return len(self.items)

    @property
    def paths(self) -> list[Path]:
        return [it.path for it in self.items]

    @property
    def scores(self) -> np.ndarray:
        return np.array([it.score for it in self.items], dtype=np.float64)

    @property
    def refs(self) -> list[str] | None:
        """Content ids for splitting by reference; None when the dataset is not synthetic."""
        if not self.synthetic:
            return None
        return [it.ref if it.ref is not None else str(it.path) for it in self.items]

    @property
    def official_split(self) -> list[str] | None:
        """Per-item train/val/test when every item carries one, else None (random splits apply)."""
        splits = [it.split for it in self.items]
        return splits if all(s is not None for s in splits) else None

    def mos_scale(self) -> dict:
        return {"min": self.scale[0], "max": self.scale[1], "higher_is_better": self.higher_is_better}

    def subset(self, keep: list[int]) -> Dataset:
        return replace(self, items=[self.items[i] for i in keep])

    def overlap(self, other: Dataset) -> int:
        """How many of `other`'s image files are also this dataset's (by resolved path)."""
        mine = {p.resolve() for p in self.paths}
        return sum(p.resolve() in mine for p in other.paths)

    def attribute(self, key: str) -> list[str]:
        """One attribute per item ("" where absent); errors when no item has it."""
        values = [it.attrs.get(key, "") for it in self.items]
        if not any(values):
            known = sorted({k for it in self.items for k in it.attrs})
            raise SliqError(f"{self.name}: no item has attribute {key!r} (known: {', '.join(known) or 'none'})")
        return values


class _Resolver:
    """Finds listed image files, falling back to a case-insensitive match within the folder."""

    def __init__(self, base: Path):
        self.base = base
        self._listings: dict[Path, dict[str, str]] = {}

    def __call__(self, name: str) -> Path:
        path = self.base / name
        if path.is_file():
            return path
        folder = path.parent
        if folder not in self._listings:
            self._listings[folder] = {n.lower(): n for n in os.listdir(folder)} if folder.is_dir() else {}
        actual = self._listings[folder].get(path.name.lower())
        return folder / actual if actual else path


def _number(text, file: Path, line: int | None, column: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise InputError(file, f"{column} {text!r} is not a number", line) from None
    if not math.isfinite(value):
        raise InputError(file, f"{column} {text!r} is not a finite number", line)
    return value


def _read_csv(file: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV as (line number, {stripped header: stripped value}); checks required columns."""
    try:
        with open_csv(file) as reader:
            header = reader.header()
            if header is None:
                raise InputError(file, "empty file")
            missing = [c for c in required if c not in header]
            if missing:
                raise InputError(file, f"missing column(s) {', '.join(missing)} (header: {', '.join(header)})", 1)
            rows = []
            for line, values in reader:
                if len(values) > len(header):
                    raise InputError(file, f"{len(values)} fields but the header has {len(header)}", line)
                values = values + [""] * (len(header) - len(values))  # short rows: absent values are empty
                rows.append((line, {h: v.strip() for h, v in zip(header, values)}))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(file, f"cannot read: {err}") from None
    if not rows:
        raise InputError(file, "no data rows")
    return rows


def _loadmat(file: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat

    if not file.is_file():
        raise InputError(file, "file not found")
    try:
        data = loadmat(str(file))
    except (OSError, ValueError, NotImplementedError) as err:
        raise InputError(file, f"not a readable MATLAB file: {err}") from None
    if key not in data:
        raise InputError(file, f"variable {key!r} not found (has: {', '.join(k for k in data if not k.startswith('__'))})")
    return np.asarray(data[key])


def _mat_strings(arr: np.ndarray) -> list[str]:
    """A MATLAB cell array of strings, any orientation, as a flat list."""
    return [str(np.asarray(cell).ravel()[0]) if np.asarray(cell).size else "" for cell in arr.ravel()]


def _check_duplicates(file: Path, keys: list[tuple[str, int | None]]) -> None:
    first: dict[str, int | None] = {}
    for key, line in keys:
        if key in first:
            where = f" (first at line {first[key]})" if first[key] is not None else ""
            raise InputError(file, f"duplicate entry for {key!r}{where}", line)
        first[key] = line


def _finish(name, items, source, skip_missing, *, higher_is_better, scale, synthetic, resize_shorter=None) -> Dataset:
    present = [it for it in items if it.path.is_file()]
    missing = [it.path for it in items if not it.path.is_file()]
    if missing and not skip_missing:
        shown = ", ".join(str(p) for p in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise InputError(
            source, f"{len(missing)} listed image file(s) are missing: {shown}{more} (--skip-missing skips them)"
        )
    if not present:
        raise InputError(source, "no images left to use")
    return Dataset(name, present, higher_is_better, tuple(scale), synthetic, source, resize_shorter, missing)


# ---- native loaders ----------------------------------------------------------------------------------------------

LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))


def load_live(root: Path, skip_missing: bool = False) -> Dataset:
    dmos_file = root / "dmos.mat"
    dmos = _loadmat(dmos_file, "dmos").ravel().astype(np.float64)
    orgs = _loadmat(dmos_file, "orgs").ravel()
    refnames = _mat_strings(_loadmat(root / "refnames_all.mat", "refnames_all"))
    expected = sum(n for _, n in LIVE_FOLDERS)
    for arr, what, file in ((dmos, "dmos", dmos_file), (orgs, "orgs", dmos_file), (refnames, "refnames_all", root / "refnames_all.mat")):
        if len(arr) != expected:
            raise InputError(file, f"{what} has {len(arr)} entries; LIVE release 2 has {expected}")
    resolve = _Resolver(root)
    items, i = [], 0
    for folder, count in LIVE_FOLDERS:
        for k in range(1, count + 1):
            if not orgs[i]:
                if not math.isfinite(dmos[i]):
                    raise InputError(dmos_file, f"dmos entry {i + 1} is not a finite number")
                items.append(Item(resolve(f"{folder}/img{k}.bmp"), float(dmos[i]), ref=refnames[i], attrs={"distortion": folder}))
            i += 1
    return _finish("live", items, dmos_file, skip_missing, higher_is_better=False, scale=(0.0, 100.0), synthetic=True)


# dst_type in csiq.DMOS -> (folder, tag in the file name)
CSIQ_TYPES = {
    "noise": ("awgn", "AWGN"),
    "awgn": ("awgn", "AWGN"),
    "jpeg": ("jpeg", "JPEG"),
    "jpeg2000": ("jpeg2000", "jpeg2000"),
    "fnoise": ("fnoise", "fnoise"),
    "blur": ("blur", "BLUR"),
    "contrast": ("contrast", "contrast"),
}


def load_csiq(root: Path, skip_missing: bool = False) -> Dataset:
    file = next((root / n for n in ("csiq.DMOS.csv", "csiq_dmos.csv") if (root / n).is_file()), root / "csiq.DMOS.csv")
    if not file.is_file():
        raise InputError(file, "file not found (save the sheet all_by_image of csiq.DMOS.xlsx as CSV)")
    rows = _read_csv(file, ("image", "dst_type", "dst_lev", "dmos"))
    resolve = _Resolver(root / "dst_imgs")
    items, keys = [], []
    for line, row in rows:
        kind = re.sub(r"[\s_]+", "", row["dst_type"].lower())
        if kind not in CSIQ_TYPES:
            raise InputError(file, f"unknown dst_type {row['dst_type']!r} (known: noise, jpeg, jpeg 2000, fnoise, blur, contrast)", line)
        level = int(_number(row["dst_lev"], file, line, "dst_lev"))
        image = row["image"].removesuffix(".0")  # numeric names exported from Excel as 1600.0
        folder, tag = CSIQ_TYPES[kind]
        std = _number(row["dmos_std"], file, line, "dmos_std") if row.get("dmos_std") else None
        score = _number(row["dmos"], file, line, "dmos")
        items.append(Item(resolve(f"{folder}/{image}.{tag}.{level}.png"), score, ref=image, std=std, attrs={"distortion": folder, "level": str(level)}))
        keys.append((f"{image} {folder} {level}", line))
    _check_duplicates(file, keys)
    return _finish("csiq", items, file, skip_missing, higher_is_better=False, scale=(0.0, 1.0), synthetic=True)


def load_tid2013(root: Path, skip_missing: bool = False) -> Dataset:
    file = root / "mos_with_names.txt"
    lines = _read_lines(file)
    std_file = root / "mos_std.txt"
    stds = _read_lines(std_file) if std_file.is_file() else None
    if stds is not None and len(stds) != len(lines):
        raise InputError(std_file, f"{len(stds)} lines but {file.name} has {len(lines)}")
    resolve = _Resolver(root / "distorted_images")
    items, keys = [], []
    for k, (line, text) in enumerate(lines):
        parts = text.split()
        match = re.fullmatch(r"i(\d+)_(\d+)_(\d+)\.\w+", parts[1], re.IGNORECASE) if len(parts) == 2 else None
        if match is None:
            raise InputError(file, f"expected '<mos> iXX_YY_Z.bmp', got {text!r}", line)
        std = _number(stds[k][1], std_file, stds[k][0], "std") if stds else None
        ref, dist, level = match.groups()
        items.append(Item(resolve(parts[1]), _number(parts[0], file, line, "mos"), ref=f"i{ref}", std=std, attrs={"distortion": dist, "level": level}))
        keys.append((parts[1].lower(), line))
    _check_duplicates(file, keys)
    return _finish("tid2013", items, file, skip_missing, higher_is_better=True, scale=(0.0, 9.0), synthetic=True)


def _read_lines(file: Path) -> list[tuple[int, str]]:
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(file, f"cannot read: {err}") from None
    lines = [(i, t.strip()) for i, t in enumerate(text.splitlines(), 1) if t.strip()]
    if not lines:
        raise InputError(file, "no data lines")
    return lines


def load_kadid10k(root: Path, skip_missing: bool = False) -> Dataset:
    file = root / "dmos.csv"
    rows = _read_csv(file, ("dist_img", "ref_img", "dmos"))
    resolve = _Resolver(root / "images")
    items = []
    for line, row in rows:
        var = _number(row["var"], file, line, "var") if row.get("var") else None
        dist = re.fullmatch(r"i\d+_(\d+)_\d+\.\w+", row["dist_img"], re.IGNORECASE)
        items.append(Item(
            resolve(row["dist_img"]), _number(row["dmos"], file, line, "dmos"), ref=row["ref_img"],
            std=math.sqrt(var) if var is not None and var >= 0 else None,
            attrs={"distortion": dist.group(1)} if dist else {},
        ))
    _check_duplicates(file, [(row["dist_img"], line) for line, row in rows])
    return _finish("kadid10k", items, file, skip_missing, higher_is_better=True, scale=(1.0, 5.0), synthetic=True)


def load_koniq10k(root: Path, skip_missing: bool = False) -> Dataset:
    file = root / "koniq10k_scores_and_distributions.csv"
    rows = _read_csv(file, ("image_name", "MOS"))
    resolve = _Resolver(root / "1024x768")
    items = [
        Item(resolve(row["image_name"]), _number(row["MOS"], file, line, "MOS"),
             std=_number(row["SD"], file, line, "SD") if row.get("SD") else None)
        for line, row in rows
    ]
    _check_duplicates(file, [(row["image_name"], line) for line, row in rows])
    return _finish("koniq10k", items, file, skip_missing, higher_is_better=True, scale=(1.0, 5.0), synthetic=False)


CLIVE_TRAINING_IMAGES = 7


def load_clive(root: Path, skip_missing: bool = False) -> Dataset:
    data = root / "Data"
    names = _mat_strings(_loadmat(data / "AllImages_release.mat", "AllImages_release"))
    mos_file = data / "AllMOS_release.mat"
    mos = _loadmat(mos_file, "AllMOS_release").ravel().astype(np.float64)
    std_file = data / "AllStdDev_release.mat"
    std = _loadmat(std_file, "AllStdDev_release").ravel().astype(np.float64) if std_file.is_file() else None
    if len(mos) != len(names) or (std is not None and len(std) != len(names)):
        raise InputError(mos_file, f"{len(mos)} scores for {len(names)} images in AllImages_release.mat")
    resolve = _Resolver(root / "Images")
    items, keys = [], []
    for i in range(CLIVE_TRAINING_IMAGES, len(names)):
        if not math.isfinite(mos[i]):
            raise InputError(mos_file, f"entry {i + 1} is not a finite number")
        items.append(Item(resolve(names[i]), float(mos[i]), std=float(std[i]) if std is not None else None))
        keys.append((names[i], None))
    _check_duplicates(data / "AllImages_release.mat", keys)
    return _finish("clive", items, mos_file, skip_missing, higher_is_better=True, scale=(0.0, 100.0), synthetic=False)


def load_flive(root: Path, skip_missing: bool = False) -> Dataset:
    base = root / "database" if (root / "database" / "labels_image.csv").is_file() else root
    file = base / "labels_image.csv"
    rows = _read_csv(file, ("name", "mos"))
    test_file, trainval_file = base / "labels640.csv", base / "labels=640_padded.csv"
    test = {row["name_image"] for _, row in _read_csv(test_file, ("name_image",))}
    val = {
        row["name_image"]
        for _, row in _read_csv(trainval_file, ("name_image", "is_valid"))
        if row["is_valid"].lower() in ("true", "1")
    }
    resolve = _Resolver(base)
    items = []
    for line, row in rows:
        split = "test" if row["name"] in test else "val" if row["name"] in val else "train"
        items.append(Item(resolve(row["name"]), _number(row["mos"], file, line, "mos"), split=split))
    _check_duplicates(file, [(row["name"], line) for line, row in rows])
    return _finish("flive", items, file, skip_missing, higher_is_better=True, scale=(0.0, 100.0), synthetic=False)


SPAQ_CSV = "MOS and Image attribute scores.csv"


def load_spaq(root: Path, skip_missing: bool = False) -> Dataset:
    file = next((p for p in (root / "Annotations" / SPAQ_CSV, root / SPAQ_CSV) if p.is_file()), root / "Annotations" / SPAQ_CSV)
    if not file.is_file():
        raise InputError(file, "file not found (save Annotations/MOS and Image attribute scores.xlsx as CSV)")
    rows = _read_csv(file, ("Image name", "MOS"))
    resolve = _Resolver(root / "TestImage")
    items = [Item(resolve(row["Image name"]), _number(row["MOS"], file, line, "MOS")) for line, row in rows]
    _check_duplicates(file, [(row["Image name"], line) for line, row in rows])
    return _finish("spaq", items, file, skip_missing, higher_is_better=True, scale=(0.0, 100.0), synthetic=False, resize_shorter=512)


# ---- generic CSV -------------------------------------------------------------------------------------------------

CSV_COLUMNS = ("image", "mos", "ref", "split", "mos_std")


def load_csv(file: str | os.PathLike, images: str | os.PathLike | None = None, *, name: str | None = None,
             higher_is_better: bool = True, skip_missing: bool = False) -> Dataset:
    """A CSV with `image,mos` (+ optional ref, split, mos_std, any attributes); images relative to `images`."""
    file = Path(file)
    if not file.is_file():
        raise UsageError(f"{file}: no such file")  # a path the user typed, as a missing PATH of `sliq score`
    if images is not None and not Path(images).is_dir():
        raise UsageError(f"{images}: no such folder")
    rows = _read_csv(file, ("image", "mos"))
    resolve = _Resolver(Path(images) if images is not None else file.parent)
    has_ref = "ref" in rows[0][1]
    items = []
    for line, row in rows:
        split = row.get("split") or None
        if split is not None and split not in SPLITS:
            raise InputError(file, f"split {split!r} is not one of {', '.join(SPLITS)}", line)
        if not row["image"]:
            raise InputError(file, "empty image name", line)
        items.append(Item(
            resolve(row["image"]), _number(row["mos"], file, line, "mos"), ref=row.get("ref") or None, split=split,
            std=_number(row["mos_std"], file, line, "mos_std") if row.get("mos_std") else None,
            attrs={k: v for k, v in row.items() if k not in CSV_COLUMNS and v},
        ))
    _check_duplicates(file, [(row["image"], line) for line, row in rows])
    scores = [it.score for it in items]
    dataset_name = name or (file.parent.name if file.name == "mos.csv" else file.stem)
    return _finish(dataset_name, items, file, skip_missing, higher_is_better=higher_is_better,
                   scale=(min(scores), max(scores)), synthetic=has_ref)


# ---- lookup ------------------------------------------------------------------------------------------------------

# name -> (loader, marker file that identifies the layout in a folder)
LOADERS: dict[str, tuple[Callable[[Path, bool], Dataset], str]] = {
    "live": (load_live, "dmos.mat"),
    "csiq": (load_csiq, "dst_imgs"),
    "tid2013": (load_tid2013, "mos_with_names.txt"),
    "kadid10k": (load_kadid10k, "dmos.csv"),
    "koniq10k": (load_koniq10k, "koniq10k_scores_and_distributions.csv"),
    "clive": (load_clive, "Data/AllMOS_release.mat"),
    "flive": (load_flive, "labels_image.csv"),
    "spaq": (load_spaq, "TestImage"),
}
ALIASES = {"kadid": "kadid10k", "kadid-10k": "kadid10k", "koniq": "koniq10k", "koniq-10k": "koniq10k",
           "tid": "tid2013", "livec": "clive", "livew": "clive", "live-itw": "clive", "paq2piq": "flive"}


def detect_layout(folder: Path) -> str | None:
    """The native layout a folder holds, by its marker files; None when none matches."""
    for name, (_, marker) in LOADERS.items():
        if (folder / marker).exists() or (name == "flive" and (folder / "database" / marker).exists()):
            return name
    return None


def load_dataset(spec: str | os.PathLike, *, data_root_dir: str | os.PathLike | None = None,
                 images: str | os.PathLike | None = None, skip_missing: bool = False,
                 higher_is_better: bool = True) -> Dataset:
    """Resolve `spec` (a dataset name under the data root, a dataset folder, or a CSV file) and load it.

    `higher_is_better` applies to CSV datasets only (native layouts know whether they hold MOS or DMOS).
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return load_csv(path, images, higher_is_better=higher_is_better, skip_missing=skip_missing)
    key = ALIASES.get(str(spec).lower(), str(spec).lower())
    folder = path if path.is_dir() else None
    if folder is None:
        root = data_root(data_root_dir)
        if root is None or os.sep in str(spec):
            raise UsageError(f"dataset {str(spec)!r} not found: give a folder or CSV file, or a name under "
                            "--data-root / $SLIQ_DATA (known layouts: " + ", ".join(LOADERS) + ")")
        candidates = list(dict.fromkeys([root / str(spec), root / key]))  # the same path when spec is the key
        folder = next((c for c in candidates if c.is_dir()), None)
        if folder is None:
            raise UsageError(f"dataset {str(spec)!r} not found under {root} (looked for {', '.join(str(c) for c in candidates)})")
    layout = key if key in LOADERS and (folder / LOADERS[key][1]).exists() else detect_layout(folder)
    if layout is not None:
        return LOADERS[layout][0](folder, skip_missing)
    if (folder / "mos.csv").is_file():
        return load_csv(folder / "mos.csv", images or folder, higher_is_better=higher_is_better, skip_missing=skip_missing)
    if key in LOADERS:
        return LOADERS[key][0](folder, skip_missing)  # raises, naming the file it needs
    raise SliqError(f"{folder}: not a known dataset layout ({', '.join(LOADERS)}) and holds no mos.csv")
