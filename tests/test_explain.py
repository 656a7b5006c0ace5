"""`sliq explain`: score + closest distortion descriptions + binned appearance; the no-text-tower error; --top."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sliq_cli.cli import explain as explain_cli
from sliq_cli.cli.app import app
from sliq_cli.errors import InputError, UsageError
from sliq_cli.iqa import explain as lib
from sliq_cli.tadac.appearance import ATTRIBUTES, BINS, appearance, bin_value
from sliq_cli.tadac.texts import APPEARANCE_PHRASES, TEXT_TYPES

from .conftest import jsonl_records

runner = CliRunner()


@pytest.fixture(scope="module")
def text_model(tmp_path_factory, tiny_encoder_dir):
    """The tiny scoring checkpoint (with its `test` head) plus a tiny random text tower and a BPE of the phrase bank."""
    import torch

    from sliq_cli.model.text import TextConfig, TextEncoder, save_text_tower
    from sliq_cli.model.tokenizer import Tokenizer
    from sliq_cli.tadac.texts import all_texts

    out = tmp_path_factory.mktemp("explain") / "model"
    shutil.copytree(tiny_encoder_dir, out)
    tokenizer = Tokenizer.train(all_texts(SimpleNamespace(records=[])), vocab_size=400)
    torch.manual_seed(0)
    embed_dim = json.loads((out / "config.json").read_text())["config"]["embed_dim"]
    text = TextEncoder(TextConfig(vocab_size=tokenizer.vocab_size, context=32, width=32, layers=1, heads=2,
                                  embed_dim=embed_dim))
    save_text_tower(text, tokenizer, out / "text")
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory, example_photos):
    """Two example photos, small for speed (explain upscales them to a 384x256 working image for the crop)."""
    d = tmp_path_factory.mktemp("explain_photos")
    for p in example_photos[:2]:
        Image.open(p).resize((192, 128)).save(d / p.name)
    return sorted(d.iterdir())


def test_cli_jsonl_score_descriptions_and_appearance(text_model, photos):
    result = runner.invoke(app, ["explain", *map(str, photos), "--model", str(text_model), "--top", "3",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "appearance.json" in result.stderr  # says the bins fall back to the documented defaults
    rows = {r["path"]: r for r in jsonl_records(result.stdout)}
    assert set(rows) == set(map(str, photos))

    from sliq_cli.iqa.score import Scorer

    scores = dict(zip(map(str, photos), Scorer.load(str(text_model), device="cpu").score(photos)))
    types = {t.name for t in TEXT_TYPES} | {"pristine"}
    for path, row in rows.items():
        assert row["score"] == pytest.approx(scores[path], rel=1e-5)  # the scoring path itself, not a copy
        d = row["descriptions"]
        assert len(d) == 3 and len({x["type"] for x in d}) == 3 and {x["type"] for x in d} <= types
        sims = [x["similarity"] for x in d]
        assert sims == sorted(sims, reverse=True) and all(-1.0 <= s <= 1.0 for s in sims)
        assert all((x["level"] == 0) == (x["type"] == "pristine") and 0 <= x["level"] <= 5 for x in d)
        assert set(row["appearance"]) == set(ATTRIBUTES)
        for attr, a in row["appearance"].items():
            assert a["bin"] == bin_value(a["value"], lib.DEFAULT_THRESHOLDS[attr])
            assert a["phrase"] in APPEARANCE_PHRASES[attr][a["bin"]]
        x, y, w, h = row["crop"]
        assert (w, h) == (224, 224) and x >= 0 and y >= 0


def test_thresholds_travel_with_the_model(text_model, photos, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(text_model, model)
    big, small = [1e3, 2e3], [-2.0, -1.0]  # every value low / high
    (model / "text" / "appearance.json").write_text(json.dumps(
        {"thresholds": {"brightness": big, "contrast": small, "sharpness": big, "colourfulness": small}}))
    records = lib.explain([photos[0]], model=str(model), top=1, device="cpu")
    assert len(records) == 1 and len(records[0]["descriptions"]) == 1
    bins = {a: v["bin"] for a, v in records[0]["appearance"].items()}
    assert bins == {"brightness": "low", "contrast": "high", "sharpness": "low", "colourfulness": "high"}
    json.dumps(records)  # JSON-ready

    (model / "text" / "appearance.json").write_text('{"thresholds": {"brightness": [1, 0]}}')
    with pytest.raises(Exception, match="appearance.json"):
        lib.explain([photos[0]], model=str(model), device="cpu")


def test_calibrated_pristine_offset_moves_the_clean_description(text_model, photos, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(text_model, model)
    plain = lib.explain([photos[0]], model=str(model), top=20, device="cpu")[0]["descriptions"]
    raw = next(d["similarity"] for d in plain if d["type"] == "pristine")
    for offset, first in ((5.0, "pristine"), (-5.0, None)):
        (model / "text" / "explain.json").write_text(json.dumps({"pristine_offset": offset}))
        got = lib.explain([photos[0]], model=str(model), top=20, device="cpu")[0]["descriptions"]
        clean = next(d["similarity"] for d in got if d["type"] == "pristine")
        assert clean == pytest.approx(raw + offset, abs=1e-3)
        assert (got[0]["type"] == "pristine") == (first == "pristine") and (got[-1]["type"] == "pristine") == (first is None)
    (model / "text" / "explain.json").write_text("{}")
    with pytest.raises(InputError, match="explain.json"):
        lib.explain([photos[0]], model=str(model), device="cpu")


def test_full_ranking_covers_every_type_and_pristine_once(text_model, photos):
    result = runner.invoke(app, ["explain", str(photos[0]), "-m", str(text_model), "-k", "20", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    (row,) = jsonl_records(result.stdout)
    assert sorted(d["type"] for d in row["descriptions"]) == sorted([t.name for t in TEXT_TYPES] + ["pristine"])
    pristine = next(d for d in row["descriptions"] if d["type"] == "pristine")
    assert pristine["text"] == "no visible distortion"


def test_top_bounds(text_model, photos):
    assert explain_cli.MAX_TOP == lib.MAX_TOP == 20
    for bad in ("0", "21"):
        result = runner.invoke(app, ["explain", str(photos[0]), "-m", str(text_model), "--top", bad])
        assert result.exit_code == 2, result.output
    with pytest.raises(UsageError, match="--top"):
        lib.explain([photos[0]], model=str(text_model), top=21, device="cpu")


def test_no_text_tower_is_a_clear_error(tiny_encoder_dir, photos):
    result = runner.invoke(app, ["explain", str(photos[0]), "--model", str(tiny_encoder_dir), "--device", "cpu"])
    assert result.exit_code == 1
    assert "no text tower" in result.stderr and "sliq pretrain" in result.stderr and "RUN/export" in result.stderr
    assert result.stdout == ""


def test_panel_on_a_terminal_and_a_broken_file(text_model, photos, tmp_path, monkeypatch):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    monkeypatch.setattr(explain_cli, "stdout_is_tty", lambda: True)
    result = runner.invoke(app, ["explain", str(photos[0]), str(broken), "-m", str(text_model), "--device", "cpu"])
    assert result.exit_code == 1
    for word in (photos[0].name, "score", "looks like", "appearance", "brightness", "colourfulness"):
        assert word in result.stdout
    assert "broken.jpg" in result.stderr and "1 of 2 images explained" in result.stderr


def test_appearance_wording_is_from_the_phrase_bank():
    for attr in ATTRIBUTES:
        assert set(lib.APPEARANCE_WORDING[attr]) == set(BINS)
        for b, phrase in lib.APPEARANCE_WORDING[attr].items():
            assert phrase in APPEARANCE_PHRASES[attr][b]
    assert set(lib.DEFAULT_THRESHOLDS) == set(ATTRIBUTES)
    assert len(lib.CANDIDATES) == 1 + 19 * 5
    # the measurement explain bins is tadac.appearance's, binned by the model's thresholds
    rgb = np.random.default_rng(0).random((48, 64, 3))
    thresholds = {attr: [0.2, 0.5] for attr in ATTRIBUTES}
    described = lib.describe_appearance(rgb, thresholds)
    for attr, value in appearance(rgb).items():
        b = bin_value(value, thresholds[attr])
        assert described[attr] == {"value": pytest.approx(value, abs=1e-4), "bin": b, "phrase": lib.APPEARANCE_WORDING[attr][b]}
    dark = lib.describe_appearance(rgb * 0.05, lib.DEFAULT_THRESHOLDS)["brightness"]
    bright = lib.describe_appearance(0.95 + rgb * 0.05, lib.DEFAULT_THRESHOLDS)["brightness"]
    assert (dark["bin"], bright["bin"]) == ("low", "high")


def test_score_explain_adds_the_fields(text_model, photos, tiny_encoder_dir):
    plain = runner.invoke(app, ["score", *map(str, photos), "--model", str(text_model), "--format", "jsonl"])
    explained = runner.invoke(app, ["score", *map(str, photos), "--model", str(text_model), "--explain",
                                    "--format", "jsonl"])
    assert plain.exit_code == explained.exit_code == 0, explained.output
    plain_recs = {r["path"]: r for r in jsonl_records(plain.stdout)}
    for r in jsonl_records(explained.stdout):
        assert r["score"] == pytest.approx(plain_recs[r["path"]]["score"], abs=1e-4)
        assert len(r["descriptions"]) == 3 and set(r["appearance"]) == set(ATTRIBUTES)
    table = runner.invoke(app, ["score", str(photos[0]), "--model", str(text_model), "--explain", "--format", "csv"])
    header, row = table.stdout.splitlines()[:2]
    assert header == "path,score,out_of_range,explanation,error" and " | " in row
    no_tower = runner.invoke(app, ["score", str(photos[0]), "--model", str(tiny_encoder_dir), "--explain"])
    assert no_tower.exit_code == 1 and "text tower" in no_tower.output and not no_tower.stdout.strip()
