"""Ridge heads: fit/predict, safetensors round trip, encoder mismatch, lookup messages."""

import numpy as np
import pytest
from safetensors import safe_open

from sliq_cli.iqa.head import HeadError, RidgeHead, resolve_head, user_head_path


def _data(n=60, d=16, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=d)
    y = X @ rng.normal(size=d) + 50
    return X, y


def test_fit_matches_sklearn_and_round_trips(tmp_path):
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _data()
    head = RidgeHead.fit(X, y, alpha=3.0, meta={"name": "h", "encoder_fingerprint": "ab" * 32})
    ref = make_pipeline(StandardScaler(), Ridge(alpha=3.0)).fit(X, y)
    assert np.allclose(head.predict(X), ref.predict(X), atol=1e-6)
    path = head.save(tmp_path / "h.safetensors")
    # readable without sliq: plain safetensors with JSON metadata
    with safe_open(str(path), framework="numpy") as st:
        assert set(st.keys()) == {"weight", "bias", "feature_mean", "feature_std"}
        assert st.metadata()["format"] == "sliq-head"
    loaded = RidgeHead.load(path)
    assert loaded.meta["alpha"] == 3.0 and loaded.meta["n_train"] == 60
    assert np.allclose(loaded.predict(X), head.predict(X), atol=1e-3)


def test_wrong_feature_dim_and_encoder(tmp_path):
    X, y = _data()
    head = RidgeHead.fit(X, y, alpha=1.0, meta={"name": "h", "encoder_fingerprint": "ab" * 32})
    with pytest.raises(HeadError, match="16-d"):
        head.predict(np.zeros((2, 8)))
    with pytest.raises(HeadError, match="fitted on encoder abababababab"):
        head.check_encoder("cd" * 32)


def test_resolve_head_by_name_and_messages(tmp_path):
    X, y = _data()
    fp = "ef" * 32
    RidgeHead.fit(X, y, 1.0, {"name": "mine", "encoder_fingerprint": fp}).save(user_head_path("mine", fp))
    assert resolve_head("mine", tmp_path, fp).name == "mine"
    with pytest.raises(HeadError, match="sliq fit-head.*sliq pull"):
        resolve_head("koniq", tmp_path, fp)
    with pytest.raises(HeadError, match="fitted on encoder"):
        resolve_head(str(user_head_path("mine", fp)), tmp_path, "00" * 32)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(HeadError, match="not a readable sliq head"):
        resolve_head(str(tmp_path / "junk.safetensors"), tmp_path, fp)
