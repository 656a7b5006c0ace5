"""sliq_cli.loading: one way from a model spec to a folder or an encoder (the Hub case is in test_hub_pull.py)."""

from __future__ import annotations

import pytest

from sliq_cli.loading import find_model, load_model
from sliq_cli.model.checkpoint import read_config
from sliq_cli.model.resolve import ModelNotFoundError, embedded_model_dir


def test_default_and_folders_resolve_to_their_folders(tmp_path):
    assert find_model(None) == find_model("default") == embedded_model_dir()
    assert find_model(str(embedded_model_dir())) == embedded_model_dir()
    encoder = load_model()
    assert encoder.fingerprint == read_config(embedded_model_dir())["fingerprint"] and not encoder.training


def test_imagenet_spec_loads_the_frozen_start():
    encoder = load_model("slique-efficientnet-lite0@imagenet")
    assert encoder.config.trunk == "efficientnet-lite0" and encoder.meta.get("init") == "imagenet"


def test_an_unknown_spec_says_so(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        find_model(str(tmp_path / "no-such-model"))
