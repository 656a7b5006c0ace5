"""The embedded default model scores real photos sensibly out of the box (no network), gives the pinned scores of
tests/data/default_scores.json, and with ../shared the clive-dev protocol figures README states."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from sliq_cli.cli.app import app
from sliq_cli.images import pil_to_tensor
from sliq_cli.model.resolve import embedded_model_dir
from sliq_cli.tadac.distortions import distort
from tests.default_scores import PINNED, clive_dev_protocol, embedded_fingerprint, example_scores

pytestmark = pytest.mark.skipif(embedded_model_dir() is None, reason="no embedded default model in weights/")
REGENERATE = "weights/ changed: regenerate tests/data/default_scores.json as tests/default_scores.py says"


@pytest.fixture(scope="module")
def pinned() -> dict:
    pinned = json.loads(PINNED.read_text())
    assert pinned["fingerprint"] == embedded_fingerprint(), REGENERATE
    return pinned


def test_example_scores_are_the_pinned_ones(pinned):
    """A clearly worse model, or a change in preprocessing or the head, moves these by more than 0.05 points."""
    assert example_scores() == pytest.approx(pinned["examples"], abs=0.05)


def test_clive_dev_protocol_gives_the_figures_readme_states(pinned, shared_data):
    """The paper's protocol on clive-dev (10 seeded splits) reproduces the stored figures, and README states them."""
    want = pinned["clive_dev"]
    readme = " ".join((Path(__file__).parent.parent / "README.md").read_text().split())  # a claim may wrap
    claim = (f"clive-dev SROCC {want['srocc_mean']:.3f} ± {want['srocc_std']:.3f}, "
             f"PLCC {want['plcc_mean']:.3f} ± {want['plcc_std']:.3f}")
    assert claim in readme, f"README does not state {claim!r}"
    assert clive_dev_protocol(shared_data) == pytest.approx(want, abs=0.002)


def test_scores_examples_and_ranks_degraded_copies_lower(tmp_path, example_photos):
    """Blur (Gaussian, motion), JPEG2000 and white noise at KADIS level 4 must lower the score of every example photo
    tried (the previous default scored noise higher than the clean photo; bench/RESULTS.md, synthetic check)."""
    gen = torch.Generator().manual_seed(0)
    kinds = {"gauss": 1, "motion": 3, "jpeg2000": 9, "noise": 11}
    for p in example_photos[:2]:
        x = pil_to_tensor(Image.open(p).convert("RGB"))[None].float() / 255
        for name, type_id in kinds.items():
            y = distort(x, type_id, 4, gen)[0]
            Image.fromarray((y.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(tmp_path / f"{p.stem}_{name}.png")
        Image.open(p).save(tmp_path / f"{p.stem}.png")
    result = CliRunner().invoke(app, ["score", str(tmp_path), "-f", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["head"] == "clive"
    scores = {r["path"].rsplit("/", 1)[-1][:-4]: r["score"] for r in doc["results"]}
    for p in example_photos[:2]:
        assert 0 < scores[p.stem] < 100
        for name in kinds:
            assert scores[f"{p.stem}_{name}"] < scores[p.stem] - 5, (p.stem, name, scores)


def test_default_model_ships_small_with_its_text_tower(example_photos):
    """weights/ stays within the 60 MB budget and carries what `sliq explain` needs: a text tower, its tokenizer and
    the training database's appearance bins; the explanation of a real photo names real descriptions."""
    from sliq_cli.iqa.explain import explain

    folder = embedded_model_dir()
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert total <= 60e6
    assert {p.name for p in (folder / "text").iterdir()} >= {"model.safetensors", "config.json", "tokenizer.json",
                                                             "appearance.json"}
    (record,) = explain([example_photos[0]], top=3, device="cpu")
    assert len(record["descriptions"]) == 3 and all(d["text"] for d in record["descriptions"])
    assert 0 < record["score"] < 100


def test_a_checkout_run_without_installing_finds_its_weights(monkeypatch):
    """PYTHONPATH=checkout python -m sliq_cli (as on a machine where nothing installs) finds weights/ beside the
    package when the data package `sliq_cli.weights` is not installed."""
    import importlib.util

    from sliq_cli import paths

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert paths.embedded_weights_dir() == embedded_model_dir()
