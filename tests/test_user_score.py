"""What a new user hits with `sliq score` and the Python API (issue #17): safe -o, what a score means, the API, odd
paths, exit codes, early head errors, huge JPEGs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from sliq_cli.api import load
from sliq_cli.cli.app import app
from sliq_cli.errors import InputError
from sliq_cli.images import ImageLoadError, load_image, pil_to_float
from sliq_cli.iqa.features import FeatureExtractor
from sliq_cli.iqa.head import HeadError, RidgeHead

from .conftest import jsonl_records

runner = CliRunner()


@pytest.fixture()
def folder(tmp_path, example_photos):
    d = tmp_path / "photos"
    d.mkdir()
    for p in example_photos:
        Image.open(p).resize((96, 64)).save(d / p.name)
    return d


def _interrupt_after(monkeypatch, n):
    """Make scoring raise KeyboardInterrupt (Ctrl-C) after n images."""
    real = FeatureExtractor.iter

    def iter_(self, paths):
        for k, item in enumerate(real(self, paths)):
            if k == n:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(FeatureExtractor, "iter", iter_)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_interrupted_output_keeps_the_old_file_and_the_partial_results(folder, tiny_encoder_dir, tmp_path, monkeypatch, fmt):
    out = tmp_path / f"scores.{fmt}"
    out.write_text("yesterday's results\n")
    _interrupt_after(monkeypatch, 2)
    r = runner.invoke(app, ["score", str(folder), "-m", str(tiny_encoder_dir), "-o", str(out)])
    assert r.exit_code != 0
    assert out.read_text() == "yesterday's results\n"  # never truncated
    partial = tmp_path / f"scores.{fmt}.partial"
    rows = list(csv.DictReader(partial.open())) if fmt == "csv" else jsonl_records(partial.read_text())
    assert len(rows) == 2 and all(float(row["score"]) for row in rows)
    assert str(partial) in r.stderr and "unchanged" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos", f"scores.{fmt}", f"scores.{fmt}.partial"]  # no temp


def test_completed_output_replaces_the_file_with_normal_permissions(folder, tiny_encoder_dir, tmp_path):
    out = tmp_path / "scores.csv"
    out.write_text("old\n")
    old = os.umask(0o022)
    try:
        r = runner.invoke(app, ["score", str(folder), "-m", str(tiny_encoder_dir), "-o", str(out)])
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert len(list(csv.DictReader(out.open()))) == 5 and not (tmp_path / "scores.csv.partial").exists()
    assert out.stat().st_mode & 0o777 == 0o644


def test_json_says_what_the_score_means_and_flags_out_of_range(folder, tiny_encoder_dir, tmp_path):
    base = ["score", str(folder), "-m", str(tiny_encoder_dir)]
    doc = json.loads(runner.invoke(app, base + ["-f", "json"]).stdout)
    assert doc["head"] == "test" and doc["dataset"] == "generated"
    assert doc["mos_scale"] == {"min": 0, "max": 100, "higher_is_better": True}
    raw = {r["path"]: r["score"] for r in doc["results"]}
    # the same head, but fitted (so it says) on MOS between the 2nd and 4th of these scores
    lo, hi = sorted(raw.values())[1], sorted(raw.values())[3]
    head = RidgeHead.load(tiny_encoder_dir / "heads" / "test.safetensors")
    head.meta["mos_scale"] = {"min": lo, "max": hi, "higher_is_better": True}
    narrow = head.save(tmp_path / "narrow.safetensors")
    doc = json.loads(runner.invoke(app, base + ["-f", "json", "--head", str(narrow)]).stdout)
    flagged = {r["path"] for r in doc["results"] if r.get("out_of_range")}
    assert len(flagged) == 2 and {r["path"]: r["score"] for r in doc["results"]} == raw  # flagged, never clamped
    rows = list(csv.DictReader(runner.invoke(app, base + ["-f", "csv", "--head", str(narrow)]).stdout.splitlines()))
    assert {r["path"] for r in rows if r["out_of_range"] == "True"} == flagged
    table = runner.invoke(app, base + ["-f", "table", "--head", str(narrow)], env={"COLUMNS": "200"}).stdout
    assert "outside the head's MOS range" in table and table.count("*") >= 3


def test_api_gives_the_cli_scores_for_every_kind_of_input(example_photos, tiny_encoder_dir):
    cli = {r["path"]: r for r in jsonl_records(runner.invoke(app, ["score", *map(str, example_photos), "-m", str(tiny_encoder_dir)]).stdout)}
    metric = load(model=str(tiny_encoder_dir), device="cpu")
    assert metric.head.name == "test" and metric.mos_scale["max"] == 100
    want = [cli[str(p)]["score"] for p in example_photos]
    assert {r["path"]: r for r in metric.records(example_photos)} == cli  # the records the CLI prints
    assert metric.score(example_photos) == pytest.approx(want, abs=1e-4)
    assert metric.score(p for p in example_photos) == pytest.approx(want, abs=1e-4)  # read once, not emptied
    assert metric.score(Image.open(p) for p in example_photos[:2]) == pytest.approx(want[:2], abs=1e-4)
    assert metric.score(str(example_photos[0])) == pytest.approx(want[0], abs=1e-4)
    assert metric.score(Image.open(example_photos[1])) == pytest.approx(want[1], abs=1e-4)
    x = pil_to_float(load_image(example_photos[2]))  # (3, H, W) in [0, 1]
    assert metric.score(x) == pytest.approx(want[2], abs=1e-4)
    assert metric.score(torch.stack([x, x.flip(-1)])) [0] == pytest.approx(want[2], abs=1e-4)
    with pytest.raises(ValueError, match="float"):
        metric.score((x * 255).byte())


def test_api_raises_for_an_unreadable_file(tiny_encoder_dir, tmp_path, example_photos):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 nope")
    with pytest.raises(InputError, match="bad.jpg"):
        load(model=str(tiny_encoder_dir), device="cpu").score([example_photos[0], tmp_path / "bad.jpg"])


def test_empty_folder_named_like_an_image_is_reported(folder, tiny_encoder_dir, tmp_path):
    (tmp_path / "dir.jpg").mkdir()
    r = runner.invoke(app, ["score", str(folder / "kodim03.jpg"), str(tmp_path / "dir.jpg"), "-m", str(tiny_encoder_dir)])
    assert r.exit_code == 1
    rows = {os.path.basename(x["path"]): x for x in jsonl_records(r.stdout)}
    assert rows["dir.jpg"]["score"] is None and "folder with no image files" in rows["dir.jpg"]["error"]
    assert "dir.jpg" in r.stderr and "1 of 2 images scored" in r.stderr


def test_symlink_loop_and_broken_link_are_not_called_corrupt(tmp_path):
    os.symlink(tmp_path / "b.jpg", tmp_path / "a.jpg")
    os.symlink(tmp_path / "a.jpg", tmp_path / "b.jpg")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "dangling.jpg")
    with pytest.raises(ImageLoadError, match="symbolic link loop"):
        load_image(tmp_path / "a.jpg")
    with pytest.raises(ImageLoadError, match="broken symbolic link"):
        load_image(tmp_path / "dangling.jpg")


def test_missing_path_is_a_usage_error_before_the_model_loads(folder, tiny_encoder_dir, tmp_path):
    r = runner.invoke(app, ["score", str(folder), str(tmp_path / "typo.jpg"), "-m", str(tiny_encoder_dir)])
    assert r.exit_code == 2 and "typo.jpg" in r.stderr and r.stdout == ""


def test_unknown_head_fails_before_the_weights_load(tiny_encoder_dir, monkeypatch):
    def no_loading(*a, **k):
        raise AssertionError("weights loaded before the head was resolved")

    monkeypatch.setattr("sliq_cli.model.checkpoint.load_encoder", no_loading)
    with pytest.raises(HeadError, match="koniq"):
        load(model=str(tiny_encoder_dir), head="koniq", device="cpu")


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory):
    """A 24-megapixel camera-sized JPEG (6000 x 4000)."""
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    ramp = np.linspace(0, 255, 6000, dtype=np.float32)[None, :, None]
    noise = np.random.default_rng(0).integers(0, 40, (4000, 6000, 1), dtype=np.uint8)
    Image.fromarray((ramp * 0.8 + noise).astype(np.uint8).repeat(3, axis=2)).save(path, quality=90)
    return path


def _peak_rss_mb(code: str) -> float:
    """Peak memory growth (MB) of running `code` in a fresh interpreter that has already imported Pillow. VmHWM, not
    ru_maxrss: a child's ru_maxrss starts at the (large) pytest process's size it was forked from."""
    prog = ("import re, PIL.Image, PIL.ImageOps; from sliq_cli.images import load_image\n"
            "hwm = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
            "before = hwm()\n"
            f"img = {code}\n"
            "print((hwm() - before) / 1024)")
    return float(subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, check=True).stdout)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="peak memory is read from /proc")
def test_huge_jpeg_is_decoded_small(big_jpeg):
    assert load_image(big_jpeg, max_pixels=4096 * 4096).size == (5016, 3344)  # the model's 16.7 MP limit
    assert load_image(big_jpeg, max_side=1024).size == (1024, 682)
    # draft mode decodes at 1/4 scale (1500 x 1000) when 1024 px are wanted: ~20 MB at peak, not the ~100 MB that the
    # full 24 MP decode alone takes (Pillow holds RGB as 4 bytes a pixel)
    assert _peak_rss_mb(f"load_image({str(big_jpeg)!r}, max_side=1024)") < 40
    assert _peak_rss_mb(f"PIL.Image.open({str(big_jpeg)!r}).convert('RGB')") > 90


def test_max_side_on_the_command_line(big_jpeg, tiny_encoder_dir):
    r = runner.invoke(app, ["score", str(big_jpeg), "-m", str(tiny_encoder_dir), "--max-side", "512", "-f", "json"])
    assert r.exit_code == 0, r.output
    metric = load(model=str(tiny_encoder_dir), device="cpu")
    small = load_image(big_jpeg, max_side=512)
    assert small.size == (512, 341)
    assert json.loads(r.stdout)["results"][0]["score"] == pytest.approx(metric.score(small), abs=1e-4)


def test_a_folder_with_images_only_below_it_points_to_recursive(tmp_path):
    from sliq_cli.images import list_images

    (tmp_path / "trip" / "day1").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "trip" / "day1" / "a.png")
    (listed,) = list_images([str(tmp_path / "trip")], empty_folders=True)
    with pytest.raises(ImageLoadError, match="--recursive"):
        load_image(listed)
    assert list_images([str(tmp_path / "trip")]) == []  # other callers (tadac) see no files, as before
    assert [p.name for p in list_images([str(tmp_path / "trip")], recursive=True, empty_folders=True)] == ["a.png"]


def test_a_folder_scan_takes_every_format_this_pillow_reads_and_reports_the_others(folder, tiny_encoder_dir):
    """AVIF (read by Pillow >= 11.3) is scored from a folder as when named directly; a HEIC this Pillow cannot
    decode is a per-file error counted in "N of M", never silently left out (issue #28)."""
    from PIL import features

    from sliq_cli.images import readable_suffixes

    assert (".avif" in readable_suffixes()) == bool(features.check("avif"))
    assert {".jpg", ".png", ".webp", ".tif"} <= readable_suffixes() and ".mpg" not in readable_suffixes()
    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF codec")
    Image.open(folder / "kodim03.jpg").save(folder / "kodim03-copy.avif", quality=90)
    (folder / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    n = len(list(folder.iterdir()))
    r = runner.invoke(app, ["score", str(folder), "-m", str(tiny_encoder_dir)])
    assert r.exit_code == 1
    rows = {os.path.basename(x["path"]): x for x in jsonl_records(r.stdout)}
    assert len(rows) == n
    direct = jsonl_records(runner.invoke(app, ["score", str(folder / "kodim03-copy.avif"), "-m", str(tiny_encoder_dir)]).stdout)
    assert rows["kodim03-copy.avif"]["score"] == pytest.approx(direct[0]["score"], abs=1e-4)
    assert rows["phone.heic"]["score"] is None and "HEIC image, which this Pillow cannot decode" in rows["phone.heic"]["error"]
    assert f"{n - 1} of {n} images scored; 1 failed" in r.stderr


def test_an_image_below_the_encoders_stride_is_an_error_not_a_score(tmp_path, tiny_encoder_dir, example_photos):
    """A 1x1 image once got a normal-looking score; below the trunk's total stride it is a per-file error."""
    metric = load(model=str(tiny_encoder_dir), device="cpu")
    m = metric.extractor.min_side
    photo = Image.open(example_photos[0]).convert("RGB")
    photo.resize((1, 1)).save(tmp_path / "dot.png")
    photo.resize((m - 1, 2 * m)).save(tmp_path / "narrow.png")
    photo.resize((m, m)).save(tmp_path / "smallest.png")
    r = runner.invoke(app, ["score", str(tmp_path), "-m", str(tiny_encoder_dir)])
    assert r.exit_code == 1
    rows = {os.path.basename(x["path"]): x for x in jsonl_records(r.stdout)}
    assert rows["dot.png"]["score"] is None and "too small to score (1x1 px)" in rows["dot.png"]["error"]
    assert rows["narrow.png"]["score"] is None and f"at least {m} px on each side" in rows["narrow.png"]["error"]
    assert isinstance(rows["smallest.png"]["score"], float)
    with pytest.raises(ValueError, match="too small to score"):
        metric.score(photo.resize((1, 1)))


def test_the_package_loads_lazily_and_a_metric_is_callable(tiny_encoder_dir, example_photos):
    """`import sliq_cli; sliq_cli.load()` as pyiqa users expect, without making `import sliq_cli` (and so
    `sliq --help`) import torch; `metric(x)` is `metric.score(x)`."""
    import sliq_cli

    prog = "import sys, sliq_cli, sliq_cli.api; print(sliq_cli.load is sliq_cli.api.load, 'torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, check=True).stdout.split() == [
        "True", "False"]
    metric = sliq_cli.load(model=str(tiny_encoder_dir), device="cpu")
    assert isinstance(metric, sliq_cli.Metric)
    assert metric(example_photos[0]) == pytest.approx(metric.score(example_photos[0]), abs=1e-6)
    assert metric(Image.open(example_photos[1])) == pytest.approx(metric.score(example_photos[1]), abs=1e-4)
    with pytest.raises(AttributeError, match="no attribute 'lod'"):
        sliq_cli.lod
