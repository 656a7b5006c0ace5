"""What `sliq explain`'s numbers are (issue #28): "cosine" is a cosine, in [-1, 1]; "similarity" is what the
descriptions are ranked by, the cosine plus the calibrated pristine offset for "no visible distortion" (so it may
pass 1), and the panel says so, and that the words and the score can disagree."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sliq_cli.api import explain
from sliq_cli.cli.app import app
from sliq_cli.model.resolve import resolve_model

from .conftest import EXAMPLES


def test_cosine_and_similarity_say_what_they_are(tmp_path):
    photo = EXAMPLES / "kodim20.jpg"
    dark = tmp_path / "kodim20-dark.png"  # darkened to 30 %, as in the issue
    Image.fromarray((np.asarray(Image.open(photo), dtype=np.float32) * 0.3).round().astype(np.uint8)).save(dark)
    offset = json.loads((resolve_model(None) / "text" / "explain.json").read_text())["pristine_offset"]
    assert offset > 0
    records = explain([photo, dark], top=20, device="cpu")
    for record in records:
        ranked = [d["similarity"] for d in record["descriptions"]]
        assert ranked == sorted(ranked, reverse=True)
        for d in record["descriptions"]:
            assert -1.0 <= d["cosine"] <= 1.0
            added = offset if d["type"] == "pristine" else 0.0
            assert d["similarity"] == pytest.approx(d["cosine"] + added, abs=2e-4)
    assert records[1]["appearance"]["brightness"]["phrase"] == "a dark photo"  # measured, whatever the words say


def test_the_panel_says_what_its_numbers_are(monkeypatch):
    monkeypatch.setattr("sliq_cli.cli.explain.stdout_is_tty", lambda: True)
    result = CliRunner().invoke(app, ["explain", str(EXAMPLES / "kodim20.jpg"), "--device", "cpu", "--top", "2"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())  # the panel's text, without its border
    assert "cosine similarity" in text and "can disagree" in text
