"""End-to-end pretraining on a tiny TADAC database built from examples/: loss goes down, resume equivalence, CLI."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from sliq_cli.cli.pretrain import pretrain as pretrain_command
from sliq_cli.errors import UsageError
from sliq_cli.model.checkpoint import load_encoder
from sliq_cli.model.text import load_text_tower
from sliq_cli.tadac.database import build_database
from sliq_cli.train.loop import flushes_denormals, pretrain

TINY = dict(model="slique-resnet18", crop_size=64, text_width=64, text_layers=2, text_heads=4, workers=1,
            device="cpu", group_size=4, log_every=1)


@pytest.fixture(autouse=True)
def _one_thread():
    """Training on the CPU flushes subnormal floats, which takes effect in the calling thread only; an intra-op
    thread pool created earlier in this process would keep them and run the steps several times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _db(tmp_path, examples, pristine):
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label\n" + "".join(f"{p.name},{n}\n" for p, n in zip(examples, ["hats", "motorbikes", "river", "airplane", "parrots"])))
    out = tmp_path / ("db_p" if pristine else "db_a")
    globs = dict(pristine_globs=["kodim0*", "kodim14*"]) if pristine else dict(authentic_globs=["*"])
    build_database([str(p) for p in examples], out, labels_csv=labels, workers=1, **globs)
    return out


def _losses(run) -> dict[int, float]:
    """Loss per step, the last record of each step (a resumed run logs the steps after its state again)."""
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())}


class _Killed(Exception):
    pass


def test_resume_follows_the_uninterrupted_run(tmp_path, example_photos):
    db = _db(tmp_path, example_photos, pristine=True)
    cfg = dict(TINY, db=str(db), batch_size=8, steps=4, checkpoint_every=2)
    pretrain(dict(cfg, out=str(tmp_path / "full")))

    def kill_after_step_3(record):
        if record.get("step") == 3:
            raise _Killed

    with pytest.raises(_Killed):
        pretrain(dict(cfg, out=str(tmp_path / "cut")), on_log=kill_after_step_3)
    assert json.loads((tmp_path / "cut" / "state" / "latest.json").read_text())["step"] == 2
    with pytest.raises(UsageError, match="already holds a run"):
        pretrain(dict(cfg, out=str(tmp_path / "cut")))
    with pytest.raises(UsageError, match="cannot change alpha"):
        pretrain(dict(cfg, out=str(tmp_path / "cut"), alpha=0.5), resume=True)
    pretrain(dict(cfg, out=str(tmp_path / "cut")), resume=True)
    full, cut = _losses(tmp_path / "full"), _losses(tmp_path / "cut")
    assert list(cut) == [1, 2, 3, 4]
    assert cut == pytest.approx(full, rel=1e-5)

    # A finished run continues to a new, longer target.
    pretrain(dict(cfg, out=str(tmp_path / "full"), steps=5), resume=True)
    assert max(_losses(tmp_path / "full")) == 5
    encoder = load_encoder(tmp_path / "full" / "export")
    assert encoder.meta["pretrain"]["step"] == 5
    text, tokenizer = load_text_tower(tmp_path / "full" / "export" / "text")
    assert text.config.width == 64 and tokenizer.vocab_size > 259


def test_loss_goes_down_and_export_loads(tmp_path, example_photos):
    import torch

    db = _db(tmp_path, example_photos, pristine=False)
    run = tmp_path / "run"
    caller_flushes = torch.set_flush_denormal(True)  # False where the CPU has no such mode
    try:
        pretrain(dict(TINY, db=str(db), out=str(run), batch_size=5, steps=30, base_lr=3.0, warmup_epochs=0.0,
                      export_shard_mb=6.0, export_dtype="bf16", checkpoint_every=0))
        assert flushes_denormals() == caller_flushes  # the caller's mode, as it was before training
    finally:
        torch.set_flush_denormal(False)
    losses = list(_losses(run).values())
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5
    config = json.loads((run / "config.json").read_text())
    assert config["steps"] == 30 and config["texts"] == ["content", "distortion", "appearance"]
    assert load_encoder(run / "export").config.trunk == "resnet18"
    shards = sorted((run / "export-shards").glob("model-*.safetensors"))
    assert len(shards) > 1 and all(s.stat().st_size < 6 * 2**20 + 65536 for s in shards)
    assert load_encoder(run / "export-shards").meta["dtype"] == "bfloat16"


def test_cli_runs_an_ablation_and_rejects_bad_options(tmp_path, example_photos):
    db = _db(tmp_path, example_photos, pristine=False)
    app = typer.Typer()
    app.command()(pretrain_command)
    runner = CliRunner()
    args = ["--db", str(db), "--out", str(tmp_path / "run"), "--model", "slique-resnet18", "--crop-size", "64",
            "--batch-size", "6", "--steps", "2", "--workers", "1", "--device", "cpu", "--no-image-text"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "run" / "export" / "text").exists()  # no text tower trained
    assert "step 2/2 loss" in result.stderr  # not a terminal: a plain line per logged step, the last one included
    bad = runner.invoke(app, [*args[:-1], "--out", str(tmp_path / "other"), "--texts", "content,colour"])
    assert bad.exit_code != 0 and isinstance(bad.exception, UsageError)
    assert "--texts takes a non-empty subset" in str(bad.exception)
    assert not (tmp_path / "other" / "state").exists()


def test_cli_resume_after_a_kill_matches_the_uninterrupted_run(tmp_path, example_photos, monkeypatch):
    """`sliq pretrain --resume` through the command line (it once crashed reading click's context)."""
    from sliq_cli.cli import pretrain as cli_pretrain

    db = _db(tmp_path, example_photos, pristine=True)
    app = typer.Typer()
    app.command()(pretrain_command)
    runner = CliRunner()

    def args(out, *more):
        return ["--db", str(db), "--out", str(tmp_path / out), "--model", "slique-resnet18", "--crop-size", "64",
                "--batch-size", "8", "--steps", "4", "--checkpoint-every", "2", "--workers", "1", "--text-width", "64",
                "--text-layers", "2", "--text-heads", "4", "--log-every", "1", *more]

    assert runner.invoke(app, args("full", "--device", "cpu")).exit_code == 0
    update = cli_pretrain._ProgressView.update

    def killed_at_step_3(self, record):
        if record.get("step") == 3:
            raise KeyboardInterrupt
        update(self, record)

    monkeypatch.setattr(cli_pretrain._ProgressView, "update", killed_at_step_3)
    assert runner.invoke(app, args("cut", "--device", "cpu")).exit_code != 0
    monkeypatch.setattr(cli_pretrain._ProgressView, "update", update)
    refused = runner.invoke(app, args("cut", "--resume", "--seed", "5"))
    assert refused.exit_code != 0 and "cannot change seed" in str(refused.exception)
    resumed = runner.invoke(app, args("cut", "--resume", "--device", "cpu"))
    assert resumed.exit_code == 0, resumed.output
    assert _losses(tmp_path / "cut") == pytest.approx(_losses(tmp_path / "full"), rel=1e-5)
    assert _logged_steps(tmp_path / "cut") == [1, 2, 3, 4]  # step 3, trained twice, is logged once


def _logged_steps(run) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]


def test_ctrl_c_saves_the_step_and_says_how_to_resume(tmp_path, example_photos, monkeypatch):
    """SIGINT (Ctrl-C) or SIGTERM: the step in progress finishes and is saved, the command says so and how to resume,
    exit code 130; a second signal stops at once and names the last saved state; a resumed run logs each step once."""
    import os
    import signal

    from sliq_cli.cli import pretrain as cli_pretrain
    from sliq_cli.errors import Interrupted

    db = _db(tmp_path, example_photos, pristine=True)
    app = typer.Typer()
    app.command()(pretrain_command)
    run = tmp_path / "run"
    args = ["--db", str(db), "--out", str(run), "--model", "slique-resnet18", "--crop-size", "64", "--batch-size", "8",
            "--steps", "5", "--checkpoint-every", "2", "--workers", "1", "--text-width", "64", "--text-layers", "2",
            "--text-heads", "4", "--log-every", "1", "--device", "cpu"]
    update = cli_pretrain._ProgressView.update

    def signal_at_step_3(self, record):
        update(self, record)
        if record.get("step") == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(cli_pretrain._ProgressView, "update", signal_at_step_3)
    stopped = CliRunner().invoke(app, args)
    assert stopped.exit_code == 130, stopped.output
    assert "stopping after the step in progress to save its state" in stopped.stderr
    assert f"saved the state at step 3 in {run / 'state'}" in stopped.stderr
    assert f"continue with: sliq pretrain --db {db} --out {run} --resume" in stopped.stderr
    assert json.loads((run / "state" / "latest.json").read_text())["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and signal.getsignal(signal.SIGINT) is signal.default_int_handler

    def two_signals_at_step_4(record):
        if record.get("step") == 4:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    cfg = dict(TINY, db=str(db), out=str(run), batch_size=8, steps=5, checkpoint_every=2, group_size=8)  # as the CLI
    with pytest.raises(Interrupted, match="nothing saved at the interrupt; the last saved state is step 3") as e:
        pretrain(cfg, resume=True, on_log=two_signals_at_step_4)
    assert e.value.saved == 3 and _logged_steps(run) == [1, 2, 3, 4]
    events = []
    pretrain(dict(cfg, steps=6, log_every=2), resume=True, on_log=events.append)
    assert _logged_steps(run) == [1, 2, 3, 4, 6]
    # between logged steps the progress bar still hears of every step
    assert [r["step"] for r in events if r.get("event") == "step" or "loss" in r] == [4, 5, 6]


def test_resume_from_an_export_that_travelled(tmp_path, example_photos):
    """A run folder with only config.json, tokenizer.json and a bf16 export (what comes back from a GPU lease)
    continues from the export's step, weights and tokenizer; the momentum starts again from zero."""
    import shutil

    import torch

    from sliq_cli.model.checkpoint import load_state_dict

    db = _db(tmp_path, example_photos, pristine=True)
    cfg = dict(TINY, db=str(db), batch_size=8, steps=3, checkpoint_every=0, export_dtype="bf16")
    pretrain(dict(cfg, out=str(tmp_path / "gpu")))
    travelled = tmp_path / "here"
    travelled.mkdir()
    for name in ("config.json", "log.jsonl", "export"):
        (shutil.copytree if name == "export" else shutil.copy)(tmp_path / "gpu" / name, travelled / name)
    assert load_encoder(travelled / "export").meta["dtype"] == "bfloat16"
    events = []
    pretrain(dict(cfg, out=str(travelled), steps=5), resume=True, on_log=events.append)
    assert {"event": "resumed-from-export", "step": 3} in events
    assert sorted(_losses(travelled)) == [1, 2, 3, 4, 5]
    assert (travelled / "tokenizer.json").read_bytes() == (tmp_path / "gpu" / "export" / "text" / "tokenizer.json").read_bytes()
    before = load_state_dict(tmp_path / "gpu" / "export")["trunk.0.weight"].float()
    after = load_state_dict(travelled / "export")["trunk.0.weight"].float()
    assert 0 < (after - before).abs().max() < 0.1 * before.abs().max()
    appearance = json.loads((travelled / "export" / "text" / "appearance.json").read_text())
    assert set(appearance["thresholds"]) == {"brightness", "contrast", "sharpness", "colourfulness"}
    assert torch.isfinite(torch.tensor(list(_losses(travelled).values()))).all()





def test_the_bar_follows_worker_logs_without_a_training_event():
    """With --gpus N the parent reads the workers' step records only: on a terminal the bar still appears and moves
    (it used to wait for a "training" event that never came); off a terminal each step is a plain line."""
    from sliq_cli.cli.pretrain import _ProgressView

    class Console:
        def __init__(self, terminal):
            self.is_terminal, self.lines = terminal, []

        def print(self, text, **_):
            self.lines.append(text)

    step = {"step": 2, "total": 10, "loss": 1.5, "loss_it": 1.0, "loss_ii": 0.5, "samples_per_s": 100.0, "lr": 1e-3}
    drawn = []
    terminal = Console(True)
    _ProgressView(terminal, lambda *args, **kw: drawn.append(args)).update(step)
    assert drawn == [("pretrain", 2, 10)] and terminal.lines == []
    plain = Console(False)
    _ProgressView(plain, lambda *args, **kw: drawn.append(args)).update(step)
    assert plain.lines == ["step 2/10 loss 1.500 (it 1.00 ii 0.50) 100/s lr 1.00e-03"]
    # a step between logged ones moves the bar on a terminal and prints nothing elsewhere
    _ProgressView(terminal, lambda *args, **kw: drawn.append(args)).update({"event": "step", "step": 3, "total": 10})
    _ProgressView(plain, lambda *args, **kw: drawn.append(args)).update({"event": "step", "step": 3, "total": 10})
    assert drawn[-1] == ("pretrain", 3, 10) and len(plain.lines) == 1
