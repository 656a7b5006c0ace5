"""`sliq pull` and `--model OWNER/NAME` against a local Hub server: verified, all-or-nothing, offline afterwards."""

import json
import shutil
import time

import pytest
from typer.testing import CliRunner

from sliq_cli.cli.app import app
from sliq_cli.errors import SliqError
from sliq_cli.hub.cache import cached_layout, hub_cache_dir
from sliq_cli.hub.pull import pull_model, resolve_hub_model
from sliq_cli.loading import find_model, load_model
from sliq_cli.model.checkpoint import read_config
from sliq_cli.model.resolve import ModelNotFoundError, resolve_model
from tests.hub_server import go_offline

REPO = "org/tiny"
runner = CliRunner()


def repo_storage(repo_id: str):
    """huggingface_hub's cache layout, which `hf` tooling shares with sliq."""
    return hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def assert_nothing_installed():
    """No snapshot or ref left behind, and the cache cannot resolve the model."""
    storage = repo_storage(REPO)
    assert not list(storage.glob("snapshots/*")) and not list(storage.glob("refs/*"))
    assert cached_layout(REPO) is None


def test_pull_then_score_offline(hub, tiny_encoder_dir, example_photos, monkeypatch, tmp_path):
    commit = hub.add_folder(REPO, tiny_encoder_dir)
    result = runner.invoke(app, ["pull", REPO, "--json"])
    assert result.exit_code == 0, result.output
    pulled = json.loads(result.stdout)
    assert pulled["commit"] == commit and pulled["downloaded"] and pulled["heads"] == ["test"]
    assert sorted(hub.downloads()) == ["config.json", "heads/test.safetensors", "model.safetensors"]
    assert (repo_storage(REPO) / "refs" / "main").read_text() == commit

    # Pulling again finds the cached snapshot intact and downloads nothing.
    before = len(hub.downloads())
    assert pull_model(REPO).downloaded is False and len(hub.downloads()) == before

    # Network off: resolution and scoring come from the cache alone.
    go_offline(monkeypatch)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    n_requests = len(hub.requests)
    snapshot = repo_storage(REPO) / "snapshots" / commit
    assert resolve_model(REPO, hub=resolve_hub_model) == resolve_model(f"{REPO}@{commit}", hub=resolve_hub_model) == snapshot
    assert find_model(REPO) == snapshot and load_model(REPO).fingerprint == read_config(snapshot)["fingerprint"]
    photo = tmp_path / "p.png"
    from PIL import Image

    Image.open(example_photos[0]).resize((96, 64)).save(photo)
    scored = runner.invoke(app, ["score", str(photo), "--model", REPO, "--head", "test"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout.splitlines()[0])["score"] is not None
    assert len(hub.requests) == n_requests
    assert pull_model(REPO).downloaded is False  # offline pull answers from the cache


def test_missing_repository(hub):
    with pytest.raises(SliqError, match="org/nope: repository not found"):
        pull_model("org/nope")
    assert not repo_storage("org/nope").exists()


def test_missing_revision(hub, tiny_encoder_dir):
    hub.add_folder(REPO, tiny_encoder_dir)
    with pytest.raises(SliqError, match="revision 'v9' not found"):
        pull_model(REPO, revision="v9")
    assert_nothing_installed()


def test_repository_without_weights_is_refused_before_download(hub, tiny_encoder_dir):
    hub.add_repo(REPO, {"config.json": (tiny_encoder_dir / "config.json").read_bytes()})
    with pytest.raises(SliqError, match="no model.safetensors"):
        pull_model(REPO)
    assert hub.downloads() == []


@pytest.mark.parametrize("path, check", [("model.safetensors", "sha256"), ("config.json", "git blob sha1")])
def test_corrupted_file_is_not_installed(hub, tiny_encoder_dir, path, check):
    hub.add_folder(REPO, tiny_encoder_dir)
    data = bytearray(hub.repos[REPO].files[path])
    data[-2] ^= 0x01  # same size, one bit off: only a hash can tell
    hub.corrupt[(REPO, path)] = bytes(data)
    with pytest.raises(SliqError, match=f"{path}: {check}"):
        pull_model(REPO)
    assert_nothing_installed()


def test_pickle_files_are_refused_before_download(hub, tiny_encoder_dir, monkeypatch):
    files = {p.relative_to(tiny_encoder_dir).as_posix(): p.read_bytes() for p in tiny_encoder_dir.rglob("*") if p.is_file()}
    hub.add_repo(REPO, {**files, "pytorch_model.bin": b"\x80\x04not really a pickle"})
    result = runner.invoke(app, ["pull", REPO])
    assert result.exit_code == 1
    assert "refusing pickle file(s) pytorch_model.bin" in result.stderr
    assert hub.downloads() == []
    assert_nothing_installed()
    # Selecting files leaves the pickle out; config, weights and card always come.
    pulled = pull_model(REPO, include=["heads/"])
    assert "pytorch_model.bin" not in hub.downloads() and pulled.heads == ["test"]
    # huggingface_hub calls this snapshot incomplete (the repo lists a file it lacks); it is a whole sliq model
    go_offline(monkeypatch)
    assert resolve_hub_model(REPO) == pulled.path


def test_damaged_cached_file_is_fetched_again(hub, tiny_encoder_dir):
    hub.add_folder(REPO, tiny_encoder_dir)
    config = pull_model(REPO).path / "config.json"
    data = bytearray(config.read_bytes())
    data[-2] ^= 0x01
    config.resolve().write_bytes(bytes(data))
    assert pull_model(REPO).downloaded and config.read_bytes() == hub.repos[REPO].files["config.json"]


def test_model_layer_resolves_hub_specs_only_through_the_hub_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match="org/tiny: no such model folder$"):
        resolve_model(REPO)
    assert resolve_model(REPO, hub=lambda spec: tmp_path / spec) == tmp_path / REPO


def test_an_incompatible_client_is_not_reported_as_the_network(hub, tiny_encoder_dir, monkeypatch):
    """A client whose API changed raises TypeError/AttributeError: that must surface, not "cannot reach the Hub"."""
    import huggingface_hub

    hub.add_folder(REPO, tiny_encoder_dir)

    def changed_signature(*args, **kwargs):
        raise TypeError("model_info() got an unexpected keyword argument 'timeout'")

    def renamed(*args, **kwargs):
        raise AttributeError("'RepoFile' object has no attribute 'lfs'")

    with monkeypatch.context() as patch:
        patch.setattr(huggingface_hub.HfApi, "model_info", changed_signature)
        with pytest.raises(TypeError, match="unexpected keyword"):
            pull_model(REPO)
    with monkeypatch.context() as patch:
        patch.setattr(huggingface_hub, "snapshot_download", renamed)
        with pytest.raises(AttributeError, match="no attribute 'lfs'"):
            pull_model(REPO)
    assert_nothing_installed()


@pytest.mark.parametrize("fault, path", [("interrupted", "model.safetensors"), ("missing", "heads/test.safetensors")])
def test_failed_download_installs_nothing_and_a_retry_succeeds(hub, tiny_encoder_dir, fault, path):
    """interrupted: the connection drops halfway through the body; missing: a listed file answers 404."""
    hub.add_folder(REPO, tiny_encoder_dir)
    getattr(hub, fault).add((REPO, path))
    with pytest.raises(SliqError, match="download failed.*nothing was installed"):
        pull_model(REPO)
    assert_nothing_installed()
    getattr(hub, fault).clear()
    assert pull_model(REPO).downloaded
    assert cached_layout(REPO) is not None


def test_head_for_another_encoder_is_not_installed(hub, tiny_encoder_dir, tmp_path):
    from sliq_cli.iqa.head import RidgeHead

    model = tmp_path / "model"
    shutil.copytree(tiny_encoder_dir, model)
    head = RidgeHead.load(model / "heads" / "test.safetensors")
    head.meta["encoder_fingerprint"] = "f" * 64
    head.save(model / "heads" / "alien.safetensors")
    hub.add_folder(REPO, model)
    with pytest.raises(SliqError, match="alien.safetensors: head was fitted for encoder ffffffff"):
        pull_model(REPO)
    assert_nothing_installed()


def test_offline_with_empty_cache_fails_fast(monkeypatch, tmp_path, example_photos):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://10.255.255.1")  # unroutable: a request would hang until timeout
    go_offline(monkeypatch)
    start = time.monotonic()
    with pytest.raises(SliqError, match="not in the local Hub cache.*HF_HUB_OFFLINE"):
        resolve_model(REPO, hub=resolve_hub_model)
    # a real photo, so `score` gets past listing images and fails on resolving the model offline
    photo = next(p for p in example_photos if p.name == "kodim03.jpg")
    result = runner.invoke(app, ["score", str(photo), "--model", REPO])
    assert time.monotonic() - start < 5
    assert result.exit_code == 1 and "not in the local Hub cache" in result.output, result.output


def test_unreachable_hub_fails_fast_with_advice(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # connection refused
    start = time.monotonic()
    with pytest.raises(SliqError, match="cannot reach the Hub.*HF_HUB_OFFLINE=1"):
        pull_model(REPO)
    assert time.monotonic() - start < 5
