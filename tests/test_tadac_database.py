"""Building, reading and counting a tiny TADAC database from real photos and generated images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sliq_cli.errors import InputError, UsageError
from sliq_cli.tadac.appearance import ATTRIBUTES, bin_value
from sliq_cli.tadac.database import (
    build_database,
    database_counts,
    load_database,
    load_work_image,
    read_csv_column,
    work_size,
)


@pytest.fixture
def source(tmp_path, example_photos) -> Path:
    """src/pristine: two photos, a portrait and a tiny image; src/authentic: a photo, a greyscale image, a broken file."""
    src = tmp_path / "src"
    (src / "pristine").mkdir(parents=True)
    (src / "authentic" / "living_room").mkdir(parents=True)
    for photo in example_photos[:2]:
        shutil.copy(photo, src / "pristine" / photo.name)
    shutil.copy(example_photos[2], src / "authentic" / example_photos[2].name)
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((600, 300, 3)) * 255).astype(np.uint8)).save(src / "pristine" / "portrait.png")
    Image.fromarray((rng.random((80, 100, 3)) * 255).astype(np.uint8)).save(src / "pristine" / "tiny.png")
    Image.fromarray((rng.random((200, 400)) * 255).astype(np.uint8), "L").save(src / "authentic" / "living_room" / "grey.png")
    (src / "authentic" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / "labels.csv").write_text(
        f"image,label,source\npristine/{example_photos[0].name},hourglass,x\n"
        f"authentic/{example_photos[2].name},umbrella,y\npristine/tiny.png,,z\n"
    )
    return src


def _build(source, out, **kw):
    kw.setdefault("pristine_globs", ["pristine/*"])
    kw.setdefault("authentic_globs", ["authentic/*"])
    return build_database([source], out, labels_csv=source / "labels.csv", **kw)


def test_work_size_rule():
    assert work_size(768, 512) == (512, 341)
    assert work_size(512, 768) == (341, 512)
    assert work_size(500, 333) == (500, 333)  # fits: never upscaled
    assert work_size(500, 500) == (384, 384)
    assert work_size(100, 80) == (320, 256)  # shorter side below 256: upscaled to 256
    assert work_size(300, 600) == (256, 512)


def test_build_and_load(source, tmp_path, example_photos):
    stages = []
    summary = _build(source, tmp_path / "db", heldout=1, seed=3, labels_from_folders=True,
                     progress=lambda stage, done, total: stages.append((stage, done, total)))
    assert stages[0] == ("analyse", 0, 7) and stages[-1] == ("analyse", 7, 7)
    c = summary.counts
    assert (c["records"], c["pristine"], c["authentic"], c["heldout"], c["skipped"]) == (6, 4, 2, 1, 1)
    assert c["samples"] == 3 * 126 + 2
    assert summary.skipped[0][0].endswith("broken.jpg")
    assert "broken.jpg\t" in (tmp_path / "db" / "skipped.txt").read_text()

    # Plain JSON, readable without sliq.
    meta = json.loads((tmp_path / "db" / "tadac.json").read_text())
    assert meta["format"] == "sliq-tadac" and meta["format_version"] == 1 and meta["work_size"] == [512, 384]
    lines = [json.loads(line) for line in (tmp_path / "db" / "manifest.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in lines}
    assert meta["heldout"] == [r["id"] for r in lines if r["split"] == "heldout"]
    assert by_id["pristine_tiny"]["work_size"] == [320, 256] and by_id["pristine_portrait"]["work_size"] == [256, 512]
    assert by_id[f"pristine_{example_photos[0].stem}"]["label"] == "hourglass"
    assert by_id["pristine_tiny"]["label"] == "pristine"  # empty CSV label: the folder name stands in
    assert by_id["authentic_living_room_grey"]["label"] == "living room"
    assert by_id[f"authentic_{example_photos[2].stem}"]["kind"] == "authentic"
    for r in lines:
        w, h = r["work_size"]
        x, y, bw, bh = r["saliency_box"]
        assert (bw, bh) == (224, 224) and 0 <= x <= w - 224 and 0 <= y <= h - 224
        assert r["bins"] == {a: bin_value(r["appearance"][a], meta["thresholds"][a]) for a in ATTRIBUTES}
        assert not Path(r["path"]).is_absolute() and r["source"] in ("pristine", "authentic")  # relative to db/
    assert json.loads((tmp_path / "db" / "phrases.json").read_text())["distortion_types"][0]["name"] == "blur"

    db = load_database(tmp_path / "db")
    resolved = [{**r, "path": str((tmp_path / "db" / r["path"]).resolve())} for r in lines]
    assert [r.to_dict() for r in db.records] == resolved and db.thresholds == meta["thresholds"]
    rec = db.records[0]
    x = load_work_image(rec)
    assert x.shape == (3, rec.work_size[1], rec.work_size[0]) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0

    counts = database_counts(db)
    assert counts.records == {"pristine": 4, "authentic": 2}
    assert counts.samples == {"pristine": 3 * 126, "authentic": 2}
    assert counts.text_types["blur"] == 2 * 3 * 5 and counts.text_types["motion blur"] == 3 * 5
    assert counts.levels["5"] == 3 * 25
    assert sum(counts.appearance["sharpness"].values()) == 6


def test_heldout_is_deterministic_and_pristine(source, tmp_path):
    a = _build(source, tmp_path / "a", heldout=2, seed=7)
    b = _build(source, tmp_path / "b", heldout=2, seed=7, workers=2)
    ids = json.loads((tmp_path / "a" / "tadac.json").read_text())["heldout"]
    assert ids == json.loads((tmp_path / "b" / "tadac.json").read_text())["heldout"] and len(ids) == 2
    assert all(i.startswith("pristine_") for i in ids)
    assert a.thresholds == b.thresholds  # the process pool gives the same measurements
    with pytest.raises(UsageError):
        _build(source, tmp_path / "c", heldout=5)


def test_glob_rules(source, tmp_path):
    both = _build(source, tmp_path / "both", pristine_globs=["*"], authentic_globs=["authentic/*"])
    assert both.counts["pristine"] == 4 and both.counts["authentic"] == 0
    assert sum("matches both" in reason for _, reason in both.skipped) == 3  # broken.jpg too: classified before reading
    only_authentic = build_database([source], tmp_path / "oa", authentic_globs=["authentic/*"])
    assert (only_authentic.counts["pristine"], only_authentic.counts["authentic"]) == (4, 2)


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("image,name\na.jpg,x\n", 1, "missing column 'label'"),
        ("image,label\na.jpg,cat\nb.jpg,dog,extra\n", 3, "expected 2 fields"),
        ("image,label\na.jpg,cat\n,dog\n", 3, "empty image field"),
        ("image,label\na.jpg,cat\nb.jpg,dog\na.jpg,cow\n", 4, "listed again"),
        ("", 1, "empty file"),
    ],
)
def test_bad_labels_csv(tmp_path, text, line, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        read_csv_column(path, "label")
    assert err.value.line == line and message in err.value.reason and str(path) in str(err.value)


def test_bad_csv_stops_the_build_before_any_work(source, tmp_path):
    (source / "labels.csv").write_text("image,label\npristine/tiny.png\n")
    with pytest.raises(InputError, match=r"labels.csv:2: expected 2 fields"):
        _build(source, tmp_path / "db")
    assert not (tmp_path / "db").exists()


def test_load_database_rejects_bad_files(source, tmp_path):
    _build(source, tmp_path / "db")
    manifest = tmp_path / "db" / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    bad = dict(json.loads(lines[1]), kind="weird")
    manifest.write_text("\n".join([lines[0], json.dumps(bad)]) + "\n")
    with pytest.raises(InputError) as err:
        load_database(tmp_path / "db")
    assert err.value.line == 2
    (tmp_path / "db" / "tadac.json").write_text('{"format": "something-else"}')
    with pytest.raises(InputError, match="not a TADAC database"):
        load_database(tmp_path / "db")
    with pytest.raises(InputError):
        load_database(tmp_path / "missing")


def test_materialize_writes_kadis_style_files(tmp_path):
    src = tmp_path / "one"
    src.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((256, 256, 3)) * 255).astype(np.uint8)).save(src / "img.png")
    summary = build_database([src], tmp_path / "db", materialize=True)
    files = sorted(p.name for p in (tmp_path / "db" / "distorted").iterdir())
    assert summary.materialized == 126 and len(files) == 126
    assert "img.png" in files and "img_01_01.png" in files and "img_25_05.png" in files
    ref = np.asarray(Image.open(tmp_path / "db" / "distorted" / "img.png"), dtype=np.float64)
    blurred = np.asarray(Image.open(tmp_path / "db" / "distorted" / "img_01_05.png"), dtype=np.float64)
    assert ref.shape == blurred.shape == (256, 256, 3) and blurred.std() < ref.std()


def test_labels_from_the_shared_manifest(shared_data, tmp_path):
    photos = shared_data / "photos"
    files = sorted((photos / "imagenet-sample").iterdir())[:3]
    summary = build_database(files, tmp_path / "db", labels_csv=photos / "manifest.csv",
                             authentic_globs=["*"])
    assert summary.counts["labelled"] == 3 and summary.counts["authentic"] == 3
    labels = {r.path: r.label for r in load_database(tmp_path / "db").records}
    # The manifest names images relative to its own folder; the build resolves them to these files.
    assert labels[str(files[0].resolve())] == files[0].stem.split("_", 1)[1].replace("_", " ")
