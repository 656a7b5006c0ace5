"""What a new user hits with `sliq export` and `sliq models` (issue #17): which heads get published, file modes,
a listing that fits a terminal."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from sliq_cli.cli.app import app
from sliq_cli.iqa.head import RidgeHead
from sliq_cli.model.checkpoint import read_config
from sliq_cli.paths import user_heads_dir

runner = CliRunner()


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _user_head(fingerprint: str, name: str) -> RidgeHead:
    rng = np.random.default_rng(0)
    meta = {"name": name, "encoder_fingerprint": fingerprint, "dataset": "clive-dev", "n_train": 30,
            "protocol": {"srocc": {"mean": 0.71, "std": 0.05}, "plcc": {"mean": 0.69, "std": 0.04}},
            "fit": {"cv_folds": 5, "cv_srocc": 0.6, "cv_plcc": 0.55, "srocc": 0.99}}
    head = RidgeHead.fit(rng.normal(size=(30, 16)), rng.uniform(0, 100, 30), alpha=1.0, meta=meta)
    head.save(user_heads_dir(fingerprint) / f"{name}.safetensors")
    return head


def _modes(folder):
    return {p.relative_to(folder).as_posix(): p.stat().st_mode & 0o777 for p in [folder, *folder.rglob("*")]}


def test_export_publishes_the_models_heads_and_only_the_named_user_heads(tiny_encoder_dir, tmp_path, umask_022):
    fp = read_config(tiny_encoder_dir)["fingerprint"]
    _user_head(fp, "mine")
    _user_head(fp, "private-experiment")
    (user_heads_dir(fp) / "mine.safetensors").chmod(0o600)  # as an older sliq wrote heads
    res = runner.invoke(app, ["export", str(tiny_encoder_dir), str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["heads"] == ["test"]  # the model's own heads, not the user's whole cache
    res = runner.invoke(app, ["export", str(tiny_encoder_dir), str(tmp_path / "out2"), "--head", "mine", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["heads"] == ["mine", "test"]
    modes = _modes(tmp_path / "out2")
    assert modes.pop(".") == modes.pop("heads") == 0o755  # not mkdtemp's 0700
    assert set(modes.values()) == {0o644}, modes  # weights and heads readable like the JSON files
    res = runner.invoke(app, ["export", str(tiny_encoder_dir), str(tmp_path / "out3"), "--head", "nosuch"])
    assert res.exit_code == 2 and "nosuch" in res.stderr and "mine" in res.stderr


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path, mask, mode):
    from sliq_cli.atomic import atomic_write_json

    old = os.umask(mask)
    try:
        head = _user_head("f" * 64, "h")
        path = head.save(tmp_path / "heads" / "h.safetensors")
        atomic_write_json(tmp_path / "x.json", {})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode and (tmp_path / "x.json").stat().st_mode & 0o777 == mode


def test_models_table_fits_80_columns(tiny_encoder_dir, monkeypatch, tmp_path):
    monkeypatch.setattr("sliq_cli.cli.hub.stdout_is_tty", lambda: True)
    _user_head(read_config(tiny_encoder_dir)["fingerprint"], "mine")
    model = tmp_path / "model"
    shutil.copytree(tiny_encoder_dir, model)
    monkeypatch.setattr("sliq_cli.hub.inventory.embedded_model_dir", lambda: model)
    res = runner.invoke(app, ["models"], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    mine = next(line for line in lines if "└ mine" in line)  # one line per head, key metrics only
    assert "0.710" in mine and "0.690" in mine and "clive-dev" in mine and "30" in mine
    assert "5.000" not in res.stdout and "0.990" not in res.stdout  # no cv_folds as a float, no in-sample fit
    assert len(lines) <= 12
