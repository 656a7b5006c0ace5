"""`sliq score` end to end: output formats, exit codes, bad files among good ones, determinism, subprocess."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image, ImageEnhance
from typer.testing import CliRunner

from sliq_cli.cli.app import app

from .conftest import jsonl_records

runner = CliRunner()


@pytest.fixture()
def folder(tmp_path, example_photos):
    """Example photos (downscaled for speed), a darkened copy, and one broken file."""
    d = tmp_path / "photos"
    d.mkdir()
    for p in example_photos[:3]:
        Image.open(p).resize((128, 85)).save(d / p.name)
    dark = ImageEnhance.Brightness(Image.open(d / example_photos[0].name)).enhance(0.3)
    dark.save(d / "dark.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return d


def test_jsonl_in_a_pipe_with_one_broken_file(folder, tiny_encoder_dir):
    result = runner.invoke(app, ["score", str(folder), "--model", str(tiny_encoder_dir)])
    assert result.exit_code == 1, result.output
    rows = {os.path.basename(r["path"]): r for r in jsonl_records(result.stdout)}
    assert len(rows) == 5
    assert rows["broken.jpg"]["score"] is None and "corrupt" in rows["broken.jpg"]["error"]
    good = [r for r in rows.values() if r["score"] is not None]
    assert len(good) == 4
    assert "broken.jpg" in result.stderr and "4 of 5 images scored" in result.stderr
    # the test head predicts brightness: the darkened copy must score lower than its source
    assert rows["dark.png"]["score"] < rows["kodim03.jpg"]["score"]


def test_all_formats_and_sort(folder, tiny_encoder_dir, tmp_path):
    (folder / "broken.jpg").unlink()
    base = ["score", str(folder), "-m", str(tiny_encoder_dir)]
    as_json = json.loads(runner.invoke(app, base + ["--format", "json"]).stdout)
    assert as_json["head"] == "test" and as_json["mos_scale"]["max"] == 100 and len(as_json["results"]) == 4
    scores = {r["path"]: r["score"] for r in as_json["results"]}

    rows = list(csv.DictReader(io.StringIO(runner.invoke(app, base + ["--format", "csv"]).stdout)))
    assert {r["path"]: float(r["score"]) for r in rows} == pytest.approx(scores, abs=1e-9)

    ranked = jsonl_records(runner.invoke(app, base + ["--sort"]).stdout)
    assert [r["score"] for r in ranked] == sorted(scores.values(), reverse=True)

    table = runner.invoke(app, base + ["--format", "table"], env={"COLUMNS": "300"})
    assert table.exit_code == 0 and "head test" in table.stdout and "dark.png" in table.stdout

    out = tmp_path / "scores.csv"
    assert runner.invoke(app, base + ["--output", str(out)]).exit_code == 0
    assert len(list(csv.DictReader(out.open()))) == 4


def test_stdin_paths_and_determinism(folder, tiny_encoder_dir):
    (folder / "broken.jpg").unlink()
    paths = "\n".join(str(p) for p in sorted(folder.iterdir())) + "\n"
    a = runner.invoke(app, ["score", "-", "-m", str(tiny_encoder_dir), "-f", "json"], input=paths)
    b = runner.invoke(app, ["score", str(folder), "-m", str(tiny_encoder_dir), "-f", "json", "-b", "1"])
    assert a.exit_code == b.exit_code == 0
    sa = {r["path"]: r["score"] for r in json.loads(a.stdout)["results"]}
    sb = {r["path"]: r["score"] for r in json.loads(b.stdout)["results"]}
    assert sa.keys() == sb.keys() and all(abs(sa[k] - sb[k]) < 1e-3 for k in sa)
    again = runner.invoke(app, ["score", "-", "-m", str(tiny_encoder_dir), "-f", "json"], input=paths)
    assert json.loads(again.stdout)["results"] == json.loads(a.stdout)["results"]  # same input, same score


def test_missing_model_and_head_messages(folder, tiny_encoder_dir, tmp_path):
    r = runner.invoke(app, ["score", str(folder), "--model", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "no such model folder" in r.stderr
    r = runner.invoke(app, ["score", str(folder), "--model", str(tiny_encoder_dir), "--head", "koniq"])
    assert r.exit_code == 1 and "sliq fit-head" in r.stderr and "sliq pull" in r.stderr
    r = runner.invoke(app, ["score", str(tmp_path / "empty_dir_does_not_exist_either"), "-m", str(tiny_encoder_dir)])
    assert r.exit_code == 2 and "empty_dir_does_not_exist_either" in r.stderr  # a typo'd PATH is a usage error
    r = runner.invoke(app, ["score", str(folder), "--format", "yaml"])
    assert r.exit_code == 2


def test_installed_sliq_subprocess(folder, tiny_encoder_dir):
    (folder / "broken.jpg").unlink()
    exe = shutil.which("sliq")
    cmd = [exe] if exe else [sys.executable, "-m", "sliq_cli"]
    proc = subprocess.run(cmd + ["score", str(folder), "-m", str(tiny_encoder_dir)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = jsonl_records(proc.stdout)
    assert len(rows) == 4 and all(isinstance(r["score"], float) for r in rows)
    assert proc.stderr.strip() == ""  # nothing decorative when not on a terminal
    help_ = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=60)
    assert help_.returncode == 0 and "score" in help_.stdout


def test_main_ends_the_process_with_its_output_flushed_and_the_trace_marked(folder, tiny_encoder_dir, tmp_path):
    """The console script ends with os._exit once the command returned: the exit code, every streamed line, the -o
    file and the SLIQ_TRACE phase marks (in order) are all there."""
    trace = tmp_path / "trace.jsonl"
    cmd = [sys.executable, "-m", "sliq_cli", "score", str(folder), "-m", str(tiny_encoder_dir)]
    env = {**os.environ, "SLIQ_TRACE": str(trace)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr  # the broken file
    assert len(jsonl_records(proc.stdout)) == 5 and "4 of 5 images scored; 1 failed" in proc.stderr
    marks = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [m["mark"] for m in marks] == ["import", "cuda context", "model loaded", "warm-up", "first batch", "end"]
    assert [m["t"] for m in marks] == sorted(m["t"] for m in marks)
    out = tmp_path / "scores.csv"
    env.pop("SLIQ_TRACE")
    proc = subprocess.run(cmd + ["-o", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and len(list(csv.DictReader(out.open()))) == 5
