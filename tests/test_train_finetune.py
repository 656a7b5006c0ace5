"""`sliq finetune`: training raises validation SROCC, the model folder works with every command, bad input fails
early and leaves nothing behind, an interrupted run resumes, the protocol compares on the same splits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from sliq_cli.cli.app import app
from sliq_cli.errors import SliqError
from sliq_cli.iqa.datasets import load_csv
from tests.conftest import jsonl_records

runner = CliRunner()


def _rated(folder, n=50, size=48, seed=0):
    """Textures blurred by a known radius; MOS falls with the blur (a quality signal fine-tuning can learn)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    lines = ["image,mos"]
    for i in range(n):
        radius = float(rng.uniform(0.0, 2.5))
        base = rng.random((size // 4, size // 4, 3)).repeat(4, 0).repeat(4, 1) * 0.7 + rng.random((size, size, 3)) * 0.3
        img = Image.fromarray((base * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius))
        img.save(folder / f"im{i:02d}.png")
        lines.append(f"im{i:02d}.png,{100 - 30 * radius:.3f}")
    (folder / "mos.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def rated(tmp_path_factory):
    return _rated(tmp_path_factory.mktemp("finetune") / "blur")


def _invoke(*args):
    return runner.invoke(app, ["finetune", *[str(a) for a in args]], catch_exceptions=False)


def test_training_keeps_the_best_epoch(rated):
    """From the embedded default model: the trunk trains (its weights move, stay finite), and the epoch kept is the
    one with the best validation SROCC, the start included (epoch 0: the start's weights come back unchanged)."""
    import torch

    from sliq_cli.model.checkpoint import load_encoder
    from sliq_cli.model.resolve import resolve_model
    from sliq_cli.train.finetune import FinetuneConfig, load_rated_images, train_encoder, validation_split

    ds = load_csv(rated / "mos.csv")
    cfg = FinetuneConfig(epochs=3, batch_size=10, crop_size=48, crops_per_image=2, val_fraction=0.3, device="cpu")
    data = load_rated_images(ds, max_pixels=4096 * 4096)
    train, val = validation_split(len(ds), cfg.val_fraction, cfg.seed, None)
    assert len(val) == 15 and not set(train) & set(val)
    start = resolve_model(None)
    records = []
    outcome = train_encoder(start, data, train, val, cfg, "cpu", on_log=records.append)
    epochs = [r for r in records if "event" not in r]
    assert [r["epoch"] for r in epochs] == [1, 2, 3] and outcome.epochs_run == 3
    steps = [r for r in records if r.get("event") == "step"]
    assert len(steps) == 3 * (35 * 2 // 10)  # two crops of each of the 35 training images an epoch
    scores = [outcome.start_srocc] + [r["val_srocc"] for r in epochs]
    assert outcome.best_srocc == max(scores) and scores[outcome.best_epoch] == max(scores)
    before = load_encoder(start).trunk.state_dict()
    moved = max(float((v.float() - before[k].float()).abs().max())
                for k, v in outcome.encoder.trunk.state_dict().items() if v.is_floating_point())
    assert (moved > 0) == (outcome.best_epoch > 0)
    assert all(torch.isfinite(p).all() for p in outcome.encoder.parameters())


def test_gradients_reach_the_trunk_through_the_quality_features():
    """The grad path computes what scoring computes; the ranking loss punishes a reversed order."""
    import torch

    from sliq_cli.model.checkpoint import load_encoder
    from sliq_cli.model.resolve import resolve_model
    from sliq_cli.train.finetune import ranking_loss

    encoder = load_encoder(resolve_model(None))
    x = torch.rand(2, 3, 64, 64)
    f = encoder.quality_features_grad(x)  # (2, D)
    assert torch.allclose(f.detach(), encoder.quality_features(x), atol=1e-6)
    assert not encoder.quality_features(x).requires_grad
    f.sum().backward()
    stem = encoder.trunk._conv_stem.weight.grad
    assert stem is not None and torch.isfinite(stem).all() and stem.abs().sum() > 0
    z = torch.tensor([2.0, 1.0, 0.0])
    assert ranking_loss(z * 5, z) < 0.01 < 1.0 < ranking_loss(-z, z)


def test_model_folder_works_with_score_explain_export(rated, tmp_path):
    """From the embedded default model: heads/NAME is the default head, text/ carried over, scores track the MOS."""
    out = tmp_path / "ft"
    result = _invoke("--mos", rated / "mos.csv", "--out", out, "--epochs", 1, "--batch-size", 10, "--crop-size", 48,
                     "--device", "cpu", "--val-fraction", 0.2)
    assert result.exit_code == 0, result.output
    assert "validation split: 10 of 50 images" in result.output  # the split is stated
    assert "epoch 1:" in result.output  # plain lines in a pipe
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "finetune.json", "heads", "log.jsonl",
                                                      "model.safetensors", "text"]
    assert not list(tmp_path.glob(".ft*")), "the build folder is renamed, not left"
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["default_head"] == "blur"
    assert (out / "heads" / "blur.safetensors").is_file()
    run = json.loads((out / "finetune.json").read_text())
    assert run["config"]["epochs"] == 1
    assert len((out / "log.jsonl").read_text().splitlines()) == 1
    from sliq_cli.iqa.head import RidgeHead

    head = RidgeHead.load(out / "heads" / "blur.safetensors")  # alpha on the 10 validation images, not by CV
    assert head.meta["fit"]["alpha_chosen_on"] == "validation" and head.meta["n_train"] == 40
    assert head.meta["fit"]["val_srocc"] == pytest.approx(run["result"]["head_val_srocc"])

    scored = runner.invoke(app, ["score", "--model", str(out), "--format", "jsonl", str(rated)])
    assert scored.exit_code == 0, scored.output
    by_name = {r["path"].rsplit("/", 1)[-1]: r["score"] for r in jsonl_records(scored.stdout)}
    mos = {row.split(",")[0]: float(row.split(",")[1]) for row in (rated / "mos.csv").read_text().split()[1:]}
    names = sorted(mos)
    assert np.corrcoef([by_name[n] for n in names], [mos[n] for n in names])[0, 1] > 0.5

    explained = runner.invoke(app, ["explain", "--model", str(out), str(rated / "im00.png")])
    assert explained.exit_code == 0, explained.output
    exported = runner.invoke(app, ["export", str(out), str(tmp_path / "repo")])
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "repo" / "heads" / "blur.safetensors").is_file()


@pytest.mark.parametrize("problem", ["few", "duplicate", "flat", "unreadable"])
def test_bad_input_named_before_training_nothing_written(rated, tmp_path, problem):
    folder = tmp_path / "data"
    folder.mkdir()
    rows = (rated / "mos.csv").read_text().split()[1:]
    for row in rows:
        (folder / row.split(",")[0]).write_bytes((rated / row.split(",")[0]).read_bytes())
    if problem == "few":
        rows = rows[:49]
    elif problem == "duplicate":
        rows.append(rows[3])
    elif problem == "flat":
        rows = [f"{r.split(',')[0]},3.5" for r in rows]
    else:
        (folder / "im07.png").write_bytes(b"not a png")
    (folder / "mos.csv").write_text("image,mos\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["finetune", "--mos", str(folder / "mos.csv"), "--out", str(out), "--device", "cpu"])
    assert result.exit_code != 0
    expected = {"few": "mos.csv: only 49 rated images", "duplicate": "mos.csv:52: duplicate entry for 'im03.png'",
                "flat": "all 50 scores are 3.5", "unreadable": "im07.png: not an image"}[problem]
    assert expected in " ".join(result.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "nothing is written for bad input"


class Killed(Exception):
    """Stands for the process being killed (click turns a KeyboardInterrupt into an exit code)."""


def test_interrupted_run_resumes(rated, tmp_path, monkeypatch):
    """A run killed after its first epoch continues from the saved state and finishes the model folder; with
    --interpolate 0 (WiSE-FT at the start's end) its trunk is the start's."""
    import torch

    import sliq_cli.train.finetune as ft
    from sliq_cli.model.checkpoint import load_state_dict
    from sliq_cli.model.resolve import resolve_model

    out = tmp_path / "ft"
    args = ["--mos", rated / "mos.csv", "--out", out, "--epochs", 2, "--batch-size", 10,
            "--crop-size", 48, "--device", "cpu", "--interpolate", 0]
    save_state = ft._save_state

    def save_then_die(state, epoch, *rest):
        save_state(state, epoch, *rest)
        if epoch == 1:
            raise Killed

    monkeypatch.setattr(ft, "_save_state", save_then_die)
    with pytest.raises(Killed):
        _invoke(*args)
    assert not out.exists()
    assert (tmp_path / ".ft.partial" / "state" / "latest.json").is_file()
    again = _invoke(*args)
    assert again.exit_code != 0 and "--resume" in again.output  # a fresh run does not overwrite it silently
    monkeypatch.setattr(ft, "_save_state", save_state)
    resumed = _invoke(*args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "resumed after epoch 1" in resumed.output
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert not (out / "state").exists() and not (tmp_path / ".ft.partial").exists()
    start, tuned = load_state_dict(resolve_model(None)), load_state_dict(out)
    assert all(torch.equal(start[k].float(), v) for k, v in tuned.items() if v.is_floating_point())
    finished = runner.invoke(app, ["finetune", *map(str, args), "--resume"])  # nothing left to resume
    assert finished.exit_code == 2 and "exists already" in finished.output


def test_protocol_compares_on_the_same_splits(rated, tmp_path):
    """The frozen column is what `sliq evaluate` reports on the same splits; the fine-tuned one uses them too."""
    result = _invoke("--mos", rated / "mos.csv", "--protocol", "--splits", 1, "--epochs", 1, "--batch-size", 10,
                     "--crop-size", 48, "--device", "cpu", "--json", tmp_path / "p.json")
    assert result.exit_code == 0, result.output
    assert "frozen ridge" in result.output and "fine-tuned" in result.output and "SROCC" in result.output
    doc = json.loads((tmp_path / "p.json").read_text())
    frozen, tuned = doc["frozen"]["splits"], doc["finetuned"]["splits"]
    assert [(s["n_train"], s["n_val"], s["n_test"]) for s in frozen + tuned] == [(35, 5, 10)] * 2
    evaluated = runner.invoke(app, ["evaluate", str(rated / "mos.csv"), "--splits", 1, "--device", "cpu",
                                    "--json", str(tmp_path / "e.json")])
    assert evaluated.exit_code == 0, evaluated.output
    reference = json.loads((tmp_path / "e.json").read_text())["models"]["default"]["splits"][0]
    assert frozen[0]["srocc"] == pytest.approx(reference["srocc"], abs=1e-6)
    assert frozen[0]["alpha"] == reference["alpha"]


def test_config_is_strict():
    from sliq_cli.train.finetune import FinetuneConfig

    with pytest.raises(ValueError, match="unknown option"):
        FinetuneConfig.from_dict({"epochs": 2, "lr": 0.1})
    with pytest.raises(SliqError, match="interpolate"):
        FinetuneConfig(interpolate=1.5)
