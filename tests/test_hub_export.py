"""`sliq export` (Hub-ready folder + model card, --push) and `sliq models` (what is usable offline)."""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

from sliq_cli.cli.app import app
from sliq_cli.errors import InputError, SliqError, UsageError
from sliq_cli.hub.export import export_model
from sliq_cli.hub.inventory import list_available_models
from sliq_cli.hub.pull import pull_model
from sliq_cli.iqa.head import RidgeHead
from sliq_cli.model.checkpoint import read_config
from sliq_cli.paths import user_heads_dir
from sliq_cli.train.config import PretrainConfig

runner = CliRunner()


def fit_user_head(fingerprint: str, name: str, srocc: float) -> None:
    """A head as `sliq fit-head` leaves it in $SLIQ_HOME/heads/<fp16>/, with recorded metrics."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 1024)), rng.uniform(0, 100, size=30)
    meta = {"name": name, "encoder_fingerprint": fingerprint, "dataset": "clive-dev",
            "protocol": {"srocc": {"mean": srocc, "std": 0.05}, "plcc": {"mean": 0.5, "std": 0.04}},
            "fit": {"cv_srocc": srocc - 0.1, "cv_plcc": 0.4, "srocc": 0.99}, "mos_scale": {"min": 0, "max": 100, "higher_is_better": True}}
    RidgeHead.fit(X, y, alpha=1.0, meta=meta).save(user_heads_dir(fingerprint) / f"{name}.safetensors")


@pytest.fixture()
def run_dir(tmp_path, tiny_encoder_dir):
    """A pretraining run folder: resolved config, a log with a torn last line, the exported checkpoint, a database."""
    db = tmp_path / "db"
    db.mkdir()
    (db / "tadac.json").write_text(json.dumps({"format": "sliq-tadac", "counts": {"pristine": 12, "authentic": 4}}))
    run = tmp_path / "run"
    shutil.copytree(tiny_encoder_dir, run / "export")
    cfg = PretrainConfig(db=str(db), out=str(run), model="slique-resnet18", batch_size=8, steps=20).to_dict()
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "log.jsonl").write_text('{"step": 10, "loss": 4.2}\n{"step": 20, "loss": 3.9, "lr": 0.0001}\n{"step": 2')
    return run


def test_export_run_folder_and_pull_it_back(run_dir, tmp_path, hub):
    fp = read_config(run_dir / "export")["fingerprint"]
    fit_user_head(fp, "clive", srocc=0.812)
    out = tmp_path / "published"
    fit_user_head(fp, "draft", srocc=0.3)  # not named: stays private
    result = runner.invoke(app, ["export", str(run_dir), str(out), "--head", "clive", "--json"])
    assert result.exit_code == 0, result.output
    exported = json.loads(result.stdout)
    assert exported["heads"] == ["clive", "test"] and exported["run"] == str(run_dir) and not exported["text"]
    assert exported["files"] == ["README.md", "config.json", "heads/clive.safetensors", "heads/test.safetensors",
                                 "model.safetensors"]
    card = (out / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: sliq" in front and "- image-quality-assessment" in front and "license: mit" in front
    for section in ("## Training data", "## Training recipe", "## Measured quality prediction", "## How to use"):
        assert section in card
    assert "| pristine | 12 |" in card  # from the database's tadac.json
    assert "| batch_size | 8 |" in card and "| loss | 3.9 |" in card  # run config and last complete log record
    # head metadata: images, protocol test means ± std, deployed head's CV (not its in-sample fit)
    assert "| clive | clive-dev | 30 | 0.812 ± 0.050 | 0.500 ± 0.040 | 0.712 | 0.400 |" in card and "0.99" not in card
    assert not list(tmp_path.glob(".published.*"))  # the staging folder is gone

    # The folder is a valid Hub repository: pull it back through the protocol.
    hub.add_folder("org/exported", out)
    pulled = pull_model("org/exported")
    assert pulled.heads == ["clive", "test"] and "README.md" in pulled.files


def test_export_selects_heads_and_text_tower(tiny_encoder_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_encoder_dir, model)
    (model / "text").mkdir()
    (model / "text" / "config.json").write_text(json.dumps({"width": 8}))
    (model / "text" / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE"}}))
    save_file({"w": np.zeros((2, 2), np.float32)}, str(model / "text" / "model.safetensors"))

    res = export_model(str(model), tmp_path / "a", heads=["test"])
    assert res.heads == ["test"] and res.text and (tmp_path / "a" / "text" / "tokenizer.json").is_file()
    assert "text/" in (tmp_path / "a" / "README.md").read_text()
    res = export_model(str(model), tmp_path / "b", include_text=False, heads=[])
    assert res.heads == ["test"] and not res.text and not (tmp_path / "b" / "text").exists()  # the model's own
    with pytest.raises(UsageError, match="no head 'koniq'"):
        export_model(str(model), tmp_path / "c", heads=["koniq"])
    with pytest.raises(UsageError, match="not an empty folder"):
        export_model(str(model), tmp_path / "a")
    with pytest.raises(UsageError, match="no text tower"):
        export_model(str(tiny_encoder_dir), tmp_path / "d", include_text=True)
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_export_needs_exactly_one_checkpoint(tiny_encoder_dir, tmp_path):
    for name in ("one", "two"):
        shutil.copytree(tiny_encoder_dir, tmp_path / "runs" / name)
    with pytest.raises(InputError, match="several checkpoints"):
        export_model(str(tmp_path / "runs"), tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no sliq checkpoint"):
        export_model(str(tmp_path / "empty"), tmp_path / "out")


def test_push_needs_a_token_then_uploads(tiny_encoder_dir, tmp_path, monkeypatch, hub):
    from huggingface_hub import HfApi, constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    with pytest.raises(SliqError, match="--push needs a Hugging Face token"):
        export_model(str(tiny_encoder_dir), tmp_path / "out", push="me/tiny")
    assert (tmp_path / "out" / "README.md").is_file()  # the export itself is complete

    calls = []
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, self.token)))

    def upload_folder(self, folder_path, repo_id, **kw):
        calls.append(("upload", repo_id, sorted(p.name for p in (tmp_path / "again").iterdir())))
        return type("CommitInfo", (), {"commit_url": f"{self.endpoint}/{repo_id}/commit/abc"})()

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    res = export_model(str(tiny_encoder_dir), tmp_path / "again", push="me/tiny")
    assert calls == [("create", "me/tiny", "hf_test"),
                     ("upload", "me/tiny", ["README.md", "config.json", "heads", "model.safetensors"])]
    assert res.pushed_to == f"{hub.url}/me/tiny/commit/abc"
    assert "sliq pull me/tiny" in (tmp_path / "again" / "README.md").read_text()


def test_models_lists_cache_and_user_heads(hub, tiny_encoder_dir):
    commit = hub.add_folder("org/tiny", tiny_encoder_dir)
    pull_model("org/tiny")
    fp = read_config(tiny_encoder_dir)["fingerprint"]
    fit_user_head(fp, "mine", srocc=0.7)
    fit_user_head("e" * 64, "orphan", srocc=0.6)
    (user_heads_dir("d" * 64)).mkdir(parents=True)
    (user_heads_dir("d" * 64) / "broken.safetensors").write_bytes(b"not a head")

    listed = {m.name: m for m in list_available_models()}
    tiny = listed["org/tiny"]
    assert tiny.source == "hub" and tiny.revision == f"main ({commit[:12]})" and tiny.fingerprint == fp
    assert [(h.name, h.source) for h in tiny.heads] == [("test", "model"), ("mine", "user")]
    assert tiny.heads[1].metrics == pytest.approx({"srocc": 0.7, "plcc": 0.5, "cv_srocc": 0.6, "cv_plcc": 0.4})
    assert tiny.heads[1].dataset == "clive-dev"
    assert [h.name for h in listed[f"encoder {'e' * 16}"].heads] == ["orphan"]
    assert listed[f"encoder {'d' * 16}"].heads[0].problem

    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    as_json = {m["name"]: m for m in json.loads(result.stdout)}
    assert as_json["org/tiny"]["heads"][1]["metrics"]["srocc"] == 0.7
