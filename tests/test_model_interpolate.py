"""WiSE-FT weight interpolation (model/interpolate.py) and `sliq interpolate`."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from sliq_cli.cli.app import app
from sliq_cli.errors import SliqError
from sliq_cli.images import load_image, pil_to_float
from sliq_cli.model.checkpoint import load_encoder, load_state_dict
from sliq_cli.model.interpolate import interpolate_states, text_aligned_encoder
from sliq_cli.model.resolve import resolve_model
from tests.conftest import EXAMPLES


def test_states_interpolate_the_trunk_and_keep_the_trained_projector_and_counters():
    start = {"trunk.w": torch.zeros(4), "trunk.bn.num_batches_tracked": torch.tensor(1), "projector.w": torch.zeros(2)}
    trained = {"trunk.w": torch.full((4,), 2.0), "trunk.bn.num_batches_tracked": torch.tensor(9),
               "projector.w": torch.ones(2)}
    mid = interpolate_states(start, trained, 0.25)
    assert torch.equal(mid["trunk.w"], torch.full((4,), 0.5))
    assert int(mid["trunk.bn.num_batches_tracked"]) == 9
    assert torch.equal(mid["projector.w"], torch.ones(2))  # the text tower's embedding space: the trained one's
    assert torch.equal(interpolate_states(start, trained, 0.0)["trunk.w"], start["trunk.w"])


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_outside_the_segment_is_refused(alpha):
    with pytest.raises(SliqError, match="alpha"):
        interpolate_states({"trunk.w": torch.zeros(1)}, {"trunk.w": torch.ones(1)}, alpha)


def test_shapes_must_agree():
    with pytest.raises(SliqError, match="trunk.w"):
        interpolate_states({"trunk.w": torch.zeros(2)}, {"trunk.w": torch.ones(3)}, 0.5)


def test_command_writes_a_model_between_its_ends(tmp_path):
    start, trained = resolve_model("slique-efficientnet-lite0@imagenet"), resolve_model("default")
    runner = CliRunner()
    outs = {}
    for alpha in (0.0, 0.5):
        out = tmp_path / f"wise{alpha}"
        res = runner.invoke(app, ["interpolate", str(start), "default", "--alpha", str(alpha), "-o", str(out)])
        assert res.exit_code == 0, res.output
        outs[alpha] = out
    meta = load_encoder(outs[0.5]).meta
    assert meta["interpolated"]["alpha"] == 0.5
    assert (outs[0.5] / "text" / "model.safetensors").is_file()  # explain keeps working
    # ... with the encoder its text tower knows: the trained end's (the default's own text-aligned encoder), from the
    # int8 trunk delta, and the trained projector
    crop = pil_to_float(load_image(EXAMPLES / "kodim03.jpg").resize((224, 224)))[None]
    with torch.no_grad():
        want = text_aligned_encoder(trained)(crop)
        got, plain = text_aligned_encoder(outs[0.5])(crop), load_encoder(outs[0.5])(crop)
    assert torch.cosine_similarity(got, want).item() > 0.999 > torch.cosine_similarity(plain, want).item()
    # alpha 0 is the start, weight for weight (the trained projector aside)
    s0, s = load_state_dict(outs[0.0]), load_state_dict(start)
    assert all(torch.equal(s0[k], s[k].float()) for k in s if k.startswith("trunk.") and s[k].is_floating_point())
    # halfway, the features of a real photo lie between the two ends'
    x = pil_to_float(load_image(EXAMPLES / "kodim23.jpg"))[None]
    f = {name: load_encoder(d).quality_features(x)[0] for name, d in
         (("start", start), ("trained", trained), ("mid", outs[0.5]))}
    d_start, d_trained = (f["mid"] - f["start"]).norm(), (f["mid"] - f["trained"]).norm()
    assert 0 < d_start < (f["start"] - f["trained"]).norm() and 0 < d_trained < (f["start"] - f["trained"]).norm()


def test_text_tower_can_come_from_another_model(tmp_path):
    """--text-from: the interpolated trunk from one run, `explain`'s tower (with its projector and trunk) from another."""
    import json
    import shutil

    start, default = resolve_model("slique-efficientnet-lite0@imagenet"), resolve_model("default")
    out = tmp_path / "wise"
    res = CliRunner().invoke(app, ["interpolate", str(start), str(start), "--alpha", "0.5", "--text-from", "default",
                                   "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert load_encoder(out).meta["interpolated"]["text_from"] == load_encoder(default).fingerprint
    crop = pil_to_float(load_image(EXAMPLES / "kodim03.jpg").resize((224, 224)))[None]
    with torch.no_grad():
        want, got = text_aligned_encoder(default)(crop), text_aligned_encoder(out)(crop)
    assert torch.cosine_similarity(got, want).item() > 0.999
    # the quality features are the interpolated trunk's (here: the start's), not the tower's
    s, o = load_state_dict(start), load_state_dict(out)
    assert all(torch.equal(o[k], s[k].float()) for k in s if k.startswith("trunk.") and s[k].is_floating_point())

    other = tmp_path / "other"
    shutil.copytree(start, other)
    meta = json.loads((other / "config.json").read_text())
    meta["config"]["embed_dim"] += 1
    (other / "config.json").write_text(json.dumps(meta))
    res = CliRunner().invoke(app, ["interpolate", str(start), str(start), "--alpha", "0.5", "--text-from", str(other),
                                   "-o", str(tmp_path / "bad")])
    assert res.exit_code != 0 and "same architecture" in res.output
