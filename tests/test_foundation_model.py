"""Encoder config, registry, checkpoint format (single file, sharded, bf16), fingerprints, pickle refusal."""

import json

import pytest
import torch

from sliq_cli.model.checkpoint import CheckpointError, fingerprint, load_encoder, save_encoder
from sliq_cli.model.config import EncoderConfig
from sliq_cli.model.registry import create_model, list_models, model_config
from tests.conftest import make_tiny_encoder


def test_config_round_trip_and_unknown_keys():
    cfg = model_config("slique-resnet50")
    assert EncoderConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    bad = cfg.to_dict() | {"dropout": 0.1}
    with pytest.raises(ValueError, match="dropout"):
        EncoderConfig.from_dict(bad)
    with pytest.raises(ValueError, match="unknown model"):
        create_model("vit-huge")
    with pytest.raises(ValueError, match="unknown option"):
        create_model("slique-resnet50", width=3)
    assert {"slique-resnet50", "slique-resnet18"} <= set(list_models())


def test_registry_default_is_the_shipped_family_and_names_its_weights():
    from sliq_cli.model.registry import DEFAULT_MODEL, model_weights
    from sliq_cli.model.resolve import embedded_model_dir

    assert create_model().config.name == DEFAULT_MODEL
    assert model_weights("slique-resnet50") == model_weights("slique-resnet18") == []  # from scratch only
    assert model_weights("slique-efficientnet-lite2") == ["slique-efficientnet-lite2@imagenet"]
    assert list_models(pretrained=True) == [f"slique-efficientnet-lite{i}" for i in range(3)]
    embedded = embedded_model_dir()
    if embedded is not None:  # the shipped model is of the registry's default family, and listed as its weights
        assert json.loads((embedded / "config.json").read_text())["config"]["name"] == DEFAULT_MODEL
        assert model_weights(DEFAULT_MODEL) == ["default", f"{DEFAULT_MODEL}@imagenet"]


def test_paper_encoder_shapes():
    model = create_model("slique-resnet50").eval()
    # Paper IV-A: ResNet-50 -> adaptive pool -> 2 MLP layers -> 512-d.
    linears = [m for m in model.projector if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(2048, 2048), (2048, 512)]
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        assert model(x).shape == (2, 512)
    feats = model.quality_features(x)
    assert feats.shape == (2, 4096)
    # each scale's half is L2-normalised
    assert torch.allclose(feats[:, :2048].norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(feats[:, 2048:].norm(dim=1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("dtype,shard", [("float32", None), ("bfloat16", 5.0)])
def test_checkpoint_round_trip(tmp_path, dtype, shard):
    model = make_tiny_encoder()
    fp = save_encoder(model, tmp_path, dtype=dtype, max_shard_mb=shard)
    if shard:
        assert (tmp_path / "model.safetensors.index.json").is_file()
        shards = sorted(tmp_path.glob("model-*-of-*.safetensors"))
        assert len(shards) > 1 and all(s.stat().st_size < 5.1 * 1024 * 1024 for s in shards)
    assert (model.fingerprint, model.source, model.meta) == (None, "", {})  # declared, empty until loaded
    loaded = load_encoder(tmp_path)
    assert loaded.fingerprint == fp and loaded.source == str(tmp_path) and loaded.meta["fingerprint"] == fp
    x = torch.rand(1, 3, 64, 64)
    tol = 1e-6 if dtype == "float32" else 0.05
    assert torch.allclose(loaded.quality_features(x), model.quality_features(x), atol=tol)


def test_fingerprint_detects_changed_weights(tmp_path):
    from safetensors.torch import load_file, save_file

    model = make_tiny_encoder()
    save_encoder(model, tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state["trunk.0.weight"][0, 0, 0, 0] += 1.0
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_encoder(tmp_path)
    assert fingerprint(state) != fingerprint(make_tiny_encoder().state_dict())


@pytest.mark.parametrize("dtype,shard", [("float32", None), ("bfloat16", 5.0), ("float16", None)])
def test_weight_files_read_without_torch_give_the_loaded_model(tmp_path, dtype, shard):
    """read_weight_files (a Ray driver's reader: no torch) finds the fingerprint torch computes, and its bytes
    rebuild the same state dict."""
    from sliq_cli.model.checkpoint import load_state_dict, read_weight_files, state_from_weight_files

    fp = save_encoder(make_tiny_encoder(), tmp_path, dtype=dtype, max_shard_mb=shard)
    weights, found = read_weight_files(tmp_path)
    assert found == fp
    assert ("model.safetensors.index.json" in weights) == bool(shard)
    state, want = state_from_weight_files(weights, tmp_path), load_state_dict(tmp_path)
    assert state.keys() == want.keys() and all(torch.equal(state[k], want[k]) for k in want)


def test_weight_files_read_without_torch_refuse_edited_and_truncated_files(tmp_path):
    from safetensors.torch import load_file, save_file

    from sliq_cli.model.checkpoint import read_weight_files

    save_encoder(make_tiny_encoder(), tmp_path, dtype="bfloat16")
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        read_weight_files(tmp_path)
    path.write_bytes(data)
    state = load_file(str(path))
    state["trunk.0.weight"][0, 0, 0, 0] += 1.0
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match="fingerprint"):
        read_weight_files(tmp_path)


def test_pickle_checkpoint_refused(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle"):
        load_encoder(tmp_path)


def test_pickle_beside_valid_safetensors_is_refused(tmp_path):
    """A valid model plus a stray extra.pkl (anywhere in the folder) is refused, naming the file."""
    save_encoder(make_tiny_encoder(), tmp_path)
    load_encoder(tmp_path)
    (tmp_path / "heads").mkdir()
    (tmp_path / "heads" / "extra.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(CheckpointError, match=r"heads/extra\.pkl"):
        load_encoder(tmp_path)


def test_unknown_config_key_is_an_error(tmp_path):
    save_encoder(make_tiny_encoder(), tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["config"]["pooling"] = "gem"
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="pooling"):
        load_encoder(tmp_path)
