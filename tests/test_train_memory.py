"""The memory check before pretraining: a batch that cannot fit is refused with the numbers, a default one halved."""

from __future__ import annotations

import pytest
import torch
import typer
from typer.testing import CliRunner

from sliq_cli.cli.pretrain import pretrain as pretrain_command
from sliq_cli.errors import SliqError
from sliq_cli.train import memory
from sliq_cli.train.config import PretrainConfig
from sliq_cli.train.loop import fit_memory

from .test_train_pretrain import _db

SMALL = dict(model="slique-resnet18", crop_size=64, text_width=64, text_layers=2, text_heads=4, device="cpu")


@pytest.fixture
def db(tmp_path, example_photos):
    return _db(tmp_path, example_photos, pristine=False)


def _room(monkeypatch, gib: float) -> None:
    """This machine as one with `gib` GiB of RAM available."""
    monkeypatch.setattr(memory, "available", lambda device, trains_here=True: (int(gib * 2**30), "available RAM"))


def _store_bytes(db) -> int:
    from sliq_cli.tadac.database import load_database
    from sliq_cli.train.data import ImageStore, select_records

    return ImageStore.resident_bytes(select_records(load_database(db).records, 1.0, 0))


def test_the_estimate_grows_with_batch_crop_and_trunk(db):
    cpu = torch.device("cpu")
    small = memory.need(PretrainConfig(db=str(db), **SMALL), 1000, 0, cpu)
    larger_crop = memory.need(PretrainConfig(db=str(db), **{**SMALL, "crop_size": 128}), 1000, 0, cpu)
    larger_trunk = memory.need(PretrainConfig(db=str(db), **{**SMALL, "model": "slique-resnet50"}), 1000, 0, cpu)
    assert 3 * small.per_sample < larger_crop.per_sample  # activations grow with the view's area
    assert small.per_sample < larger_trunk.per_sample and small.fixed < larger_trunk.fixed
    assert small.total(64) - small.total(32) == 32 * small.per_sample
    on_gpu = memory.need(PretrainConfig(db=str(db), **SMALL), 1000, 0, torch.device("cuda"))  # counted on `meta`
    assert on_gpu.per_sample < small.per_sample  # bf16 autocast
    # a checkpoint start (the shipped model) is counted with its own architecture: weights, gradients, momentum
    from sliq_cli.model.checkpoint import load_encoder
    from sliq_cli.model.resolve import resolve_model
    from sliq_cli.train.loop import build_models

    shipped = str(resolve_model(None))
    need = memory.need(PretrainConfig(db=str(db), **{**SMALL, "init": shipped}), 1000, 0, cpu)
    text = build_models(PretrainConfig(**SMALL), 1000).text
    params = sum(p.numel() for m in (load_encoder(shipped), text) for p in m.parameters())
    assert need.fixed == 3 * 4 * params


def test_a_default_batch_is_halved_until_it_fits_and_a_chosen_one_refused(db, monkeypatch):
    cfg = PretrainConfig(db=str(db), **SMALL)  # the default batch, 256
    _room(monkeypatch, 1000)
    assert fit_memory(cfg, None, chosen=False, resumed=False) is cfg
    _room(monkeypatch, 1.0)
    events = []
    fitted = fit_memory(cfg, None, chosen=False, resumed=False, on_log=events.append)
    need = memory.need(cfg, cfg.vocab_size, _store_bytes(db), torch.device("cpu"))
    assert fitted.batch_size < 256 and fitted.batch_size in (2, 4, 8, 16, 32, 64, 128)
    assert need.total(fitted.batch_size) <= 0.9 * 2**30 < need.total(2 * fitted.batch_size)
    assert events[0]["event"] == "batch-size" and events[0]["batch_size"] == fitted.batch_size
    assert "more than the 1.0 GB available RAM" in events[0]["message"]
    with pytest.raises(SliqError, match=rf"--batch-size {fitted.batch_size} is the largest that fits"):
        fit_memory(cfg, None, chosen=True, resumed=False)
    with pytest.raises(SliqError, match="resume the run on a machine with more memory"):
        fit_memory(cfg, None, chosen=False, resumed=True)
    _room(monkeypatch, 0.05)
    with pytest.raises(SliqError, match="not even --batch-size 2 fits"):
        fit_memory(cfg, None, chosen=False, resumed=False)


def test_the_command_refuses_before_training(db, tmp_path, monkeypatch):
    _room(monkeypatch, 1.0)
    app = typer.Typer()
    app.command()(pretrain_command)
    result = CliRunner().invoke(app, ["--db", str(db), "--out", str(tmp_path / "run"), "--model", "slique-resnet18",
                                      "--crop-size", "64", "--batch-size", "256", "--steps", "3", "--device", "cpu"])
    assert result.exit_code != 0 and isinstance(result.exception, SliqError)
    assert "a batch of 256 needs about" in str(result.exception) and "--batch-size" in str(result.exception)
    assert not (tmp_path / "run").exists()  # nothing started


def test_the_command_trains_with_the_largest_default_batch_that_fits(db, tmp_path, monkeypatch):
    import json

    _room(monkeypatch, 0.5)
    app = typer.Typer()
    app.command()(pretrain_command)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["--db", str(db), "--out", str(run), "--model", "slique-resnet18", "--crop-size",
                                      "64", "--text-width", "64", "--text-layers", "2", "--text-heads", "4",
                                      "--steps", "1", "--workers", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    batch = json.loads((run / "config.json").read_text())["batch_size"]
    assert 2 <= batch < 256
    said = " ".join(result.stderr.split())
    assert "a batch of 256 needs about" in said
    assert f"training with --batch-size {batch} instead of the default 256" in said
