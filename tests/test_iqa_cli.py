"""`sliq fit-head`, `crossval`, `evaluate`, `plot` end to end with a tiny random encoder on generated images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sliq_cli.cli.app import app
from sliq_cli.iqa.head import RidgeHead, resolve_head
from sliq_cli.model.checkpoint import load_encoder, save_encoder
from tests.conftest import make_tiny_encoder

runner = CliRunner()


def _dataset(folder, n=30, seed=0):
    """Images whose MOS is their brightness (a property even a random encoder's features carry), two distortions."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    lines = ["image,mos,ref,distortion"]
    for i in range(n):
        level = rng.uniform(0.15, 1.0)
        noisy = i % 2 == 0
        pix = rng.random((32, 40, 3)) * (0.6 if noisy else 0.1) + level * 0.5  # >= the trunk's stride (32 px)
        Image.fromarray((pix.clip(0, 1) * 255).astype(np.uint8)).save(folder / f"im{i:02d}.png")
        lines.append(f"im{i:02d}.png,{100 * level:.3f},r{i // 3},{'noise' if noisy else 'clean'}")
    (folder / "mos.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("iqa_data")
    _dataset(root / "bright", seed=0)
    _dataset(root / "other", n=20, seed=1)
    return root


def _run(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=True)
    return result


def test_fit_head_reports_protocol_and_saves_a_findable_head(data, tiny_encoder_dir, tmp_path):
    out = tmp_path / "fit.json"
    res = _run("fit-head", "--mos", data / "bright" / "mos.csv", "--images", data / "bright", "--model", tiny_encoder_dir,
               "--name", "bright", "--splits", 3, "--device", "cpu", "--json", out)
    assert res.exit_code == 0, res.output
    assert "SROCC" in res.output and "±" in res.output
    doc = json.loads(out.read_text())
    assert doc["protocol"]["n_splits"] == 3 and doc["n_images"] == 30
    # the CSV's ref column makes it split by reference: 10 references -> 7/1/2, three images each
    assert all((s["n_train"], s["n_val"], s["n_test"]) == (21, 3, 6) for s in doc["protocol"]["splits"])
    fp = load_encoder(tiny_encoder_dir).fingerprint
    head = resolve_head("bright", tiny_encoder_dir, fp)
    assert isinstance(head, RidgeHead) and head.meta["dataset"] == "bright" and head.meta["encoder_fingerprint"] == fp
    assert head.meta["mos_scale"]["higher_is_better"] is True and head.meta["feature_spec"]["dim"] == head.feature_dim
    assert head.meta["fit"]["cv_srocc"] > 0.5 and "srocc" in head.meta["protocol"]


def test_fit_head_by_dataset_name(data, tiny_encoder_dir):
    res = _run("fit-head", "--dataset", "other", "--data-root", data, "--model", tiny_encoder_dir, "--splits", 2,
               "--device", "cpu", "--dmos")
    assert res.exit_code == 0, res.output
    assert "other · 20 images" in res.output
    head = resolve_head("other", tiny_encoder_dir, load_encoder(tiny_encoder_dir).fingerprint)
    assert head.mos_scale["higher_is_better"] is False


def test_fit_head_needs_one_dataset(data, tiny_encoder_dir):
    res = _run("fit-head", "--model", tiny_encoder_dir)
    assert res.exit_code == 2 and "error:" in res.stderr


def test_missing_images_are_listed_or_skipped(data, tiny_encoder_dir, tmp_path):
    csv = tmp_path / "mos.csv"
    csv.write_text((data / "other" / "mos.csv").read_text() + "nothere.png,50,r99,clean\n")
    res = _run("fit-head", "--mos", csv, "--images", data / "other", "--model", tiny_encoder_dir, "--device", "cpu")
    assert res.exit_code == 1 and "nothere.png" in res.stderr
    res = _run("fit-head", "--mos", csv, "--images", data / "other", "--model", tiny_encoder_dir, "--device", "cpu",
               "--splits", 2, "--skip-missing")
    assert res.exit_code == 0, res.output


def test_crossval(data, tiny_encoder_dir, tmp_path):
    out = tmp_path / "cross.json"
    res = _run("crossval", "--train", data / "bright", "--test", data / "other", "--model", tiny_encoder_dir,
               "--device", "cpu", "--json", out)
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["train"] == "bright" and doc["n_test"] == 20 and doc["alpha"] > 0
    # both sets score brightness on the same MOS scale, which the features carry: it transfers
    assert doc["srocc"] > 0.7 and doc["plcc"] > 0.7


def test_evaluate_puts_encoders_side_by_side(data, tiny_encoder_dir, tmp_path):
    other = tmp_path / "tiny2"
    save_encoder(make_tiny_encoder(seed=1), other)
    out = tmp_path / "eval.json"
    res = _run("evaluate", data / "bright", "--model", tiny_encoder_dir, "--model", other, "--splits", 2,
               "--device", "cpu", "--json", out)
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert list(doc["models"]) == [str(tiny_encoder_dir), str(other)]
    assert doc["models"][str(other)]["encoder"]["fingerprint"] != doc["models"][str(tiny_encoder_dir)]["encoder"]["fingerprint"]
    assert "tiny2" in res.output


def test_plots_write_pngs(data, tiny_encoder_dir, tmp_path):
    res = _run("plot", "scatter", data / "bright", "--model", tiny_encoder_dir, "--out", tmp_path / "s.png", "--device", "cpu")
    assert res.exit_code == 0, res.output
    res = _run("plot", "tsne", data / "bright", "--model", tiny_encoder_dir, "--out", tmp_path / "t.png",
               "--color-by", "distortion", "--perplexity", 5, "--device", "cpu")
    assert res.exit_code == 0, res.output
    for name in ("s.png", "t.png"):
        png = (tmp_path / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
