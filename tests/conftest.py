"""Shared fixtures. Core tests need neither the network nor ../shared; data tests skip cleanly without it."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def _shared_data() -> Path | None:
    root = Path(os.environ.get("SLIQ_SHARED_DATA", REPO.parent / "shared" / "data"))
    return root if (root / "photos" / "manifest.csv").is_file() else None


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own SLIQ_HOME, so user heads and caches never leak between tests."""
    monkeypatch.setenv("SLIQ_HOME", str(tmp_path_factory.mktemp("sliq_home")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    """A local server speaking the Hugging Face Hub protocol, with huggingface_hub pointed at it
    (tests/hub_server.py)."""
    from tests.hub_server import serve_hub

    yield from serve_hub(tmp_path, monkeypatch)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (photos/, clive-dev/); skips the test when it is absent."""
    root = _shared_data()
    if root is None:
        pytest.skip("../shared/data is not present")
    return root


@pytest.fixture(scope="session")
def example_photos() -> list[Path]:
    photos = sorted(EXAMPLES.glob("*.jpg")) + sorted(EXAMPLES.glob("*.png"))
    assert photos, "examples/ holds no photos"
    return photos


def jsonl_records(text: str) -> list[dict]:
    """The JSON lines of a command's stdout."""
    import json

    return [json.loads(line) for line in text.splitlines() if line.strip()]


def make_tiny_encoder(seed: int = 0):
    """A small randomly initialised encoder (resnet18 trunk) so tests run fast on 2 CPU cores."""
    import torch

    from sliq_cli.model.registry import create_model

    torch.manual_seed(seed)
    return create_model("slique-resnet18", hidden_dim=64, embed_dim=32).eval()


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A scoring checkpoint folder (tiny random encoder) with a head `test` fitted on generated images.

    The head's target is a known image property (mean brightness x 100), so scores are meaningful enough to check
    ordering and round trips; heads/test.safetensors is also the model's default head.
    """
    import torch

    from sliq_cli.iqa.head import RidgeHead
    from sliq_cli.model.checkpoint import save_encoder

    out = tmp_path_factory.mktemp("tiny_model")
    model = make_tiny_encoder()
    model.config = dataclasses.replace(model.config, default_head="test")
    fp = save_encoder(model, out)
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(24, 3, 64, 64, generator=g) * torch.linspace(0.1, 1.0, 24).view(-1, 1, 1, 1)
    with torch.no_grad():
        X = model.quality_features(imgs).numpy()
    y = imgs.mean(dim=(1, 2, 3)).numpy() * 100
    meta = {"name": "test", "encoder_fingerprint": fp, "dataset": "generated",
            "mos_scale": {"min": 0, "max": 100, "higher_is_better": True}}
    RidgeHead.fit(X, y, alpha=1.0, meta=meta).save(out / "heads" / "test.safetensors")
    return out
