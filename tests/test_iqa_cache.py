"""The feature cache: keyed by encoder fingerprint, feature spec and image bytes; a second run extracts nothing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from sliq_cli.digest import sha256_file
from sliq_cli.iqa import cache as cache_mod
from sliq_cli.iqa.cache import FeatureCache, cached_features
from sliq_cli.model.checkpoint import load_encoder
from sliq_cli.paths import features_cache_dir


@pytest.fixture(scope="module")
def encoder(tiny_encoder_dir):
    return load_encoder(tiny_encoder_dir)


def _images(folder, n=5):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"im{i}.png"
        Image.fromarray((rng.random((32, 40, 3)) * (i + 1) * 40).clip(0, 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


def _no_extraction(*args, **kwargs):
    raise AssertionError("features were extracted although all were cached")


def test_second_run_reads_the_cache(tmp_path, encoder, monkeypatch):
    paths = _images(tmp_path / "a")
    first = cached_features(encoder, paths, batch_size=2)
    assert first.ok.all() and not first.failed
    monkeypatch.setattr(cache_mod, "_extract", _no_extraction)
    again = cached_features(encoder, paths)
    np.testing.assert_array_equal(again.features, first.features)
    # a renamed copy has the same bytes, so it hits too
    copy = tmp_path / "b" / "renamed.png"
    copy.parent.mkdir()
    shutil.copy(paths[2], copy)
    np.testing.assert_array_equal(cached_features(encoder, [copy]).features[0], first.features[2])


def test_edited_image_misses_and_bad_files_are_reported(tmp_path, encoder, monkeypatch):
    paths = _images(tmp_path)
    cached_features(encoder, paths[:2])
    Image.new("RGB", (32, 40), (10, 200, 30)).save(paths[0])  # edited in place
    (tmp_path / "broken.png").write_bytes(b"not an image")
    calls = []
    real = cache_mod._extract

    def spy(encoder, todo, *args):
        calls.append([p.name for p in todo])
        return real(encoder, todo, *args)

    monkeypatch.setattr(cache_mod, "_extract", spy)
    res = cached_features(encoder, [paths[0], paths[1], tmp_path / "broken.png", tmp_path / "gone.png"])
    assert calls == [["im0.png", "broken.png"]]
    assert res.ok.tolist() == [True, True, False, False]
    assert set(res.failed) == {str(tmp_path / "broken.png"), str(tmp_path / "gone.png")}
    # the broken file was not cached: it is tried again next time
    calls.clear()
    cached_features(encoder, [tmp_path / "broken.png"])
    assert calls == [["broken.png"]]


def test_an_encoder_never_saved_is_not_cached(tmp_path):
    """Two freshly built encoders share no identity (fingerprint None): neither may read the other's features."""
    from tests.conftest import make_tiny_encoder

    paths = _images(tmp_path, n=2)
    fresh = [make_tiny_encoder(seed) for seed in (1, 2)]
    first, second = (cached_features(e, paths).features for e in fresh)
    assert not np.allclose(first, second)
    assert not features_cache_dir().exists() or not any(features_cache_dir().iterdir())


def test_cache_is_keyed_by_fingerprint_and_spec(tmp_path, encoder):
    paths = _images(tmp_path, n=2)
    res = cached_features(encoder, paths)
    spec = cache_mod.feature_spec(encoder)
    digests = [sha256_file(p) for p in paths]
    hit = FeatureCache(encoder.fingerprint, spec).get(digests)
    np.testing.assert_array_equal(hit[digests[1]], res.features[1])
    assert FeatureCache("0" * 64, spec).get(digests) == {}
    assert FeatureCache(encoder.fingerprint, {**spec, "resize_shorter": 512}).get(digests) == {}
    assert FeatureCache(encoder.fingerprint, {**spec, "precision": "bf16"}).get(digests) == {}
    index = json.loads(FeatureCache(encoder.fingerprint, spec).index_path.read_text())
    assert index["format"] == "sliq-feature-cache" and index["dim"] == encoder.config.feature_dim
    assert set(index["entries"]) == set(digests)


def test_corrupt_index_is_a_miss_not_an_error(tmp_path, encoder):
    paths = _images(tmp_path, n=2)
    cache = FeatureCache(encoder.fingerprint, cache_mod.feature_spec(encoder))
    cached_features(encoder, paths)
    cache.index_path.write_text("{ truncated")
    res = cached_features(encoder, paths)
    assert res.ok.all()
    assert len(json.loads(cache.index_path.read_text())["entries"]) == 2


def test_dataset_features_leave_out_unreadable_images(tmp_path, encoder):
    from sliq_cli.iqa.datasets import load_csv
    from sliq_cli.iqa.protocol import dataset_features

    paths = _images(tmp_path, n=4)
    paths[1].write_bytes(b"\x89PNG broken")
    csv = tmp_path / "mos.csv"
    csv.write_text("image,mos\n" + "".join(f"{p.name},{i}\n" for i, p in enumerate(paths)))
    feats = dataset_features(load_csv(csv), encoder)
    assert [it.path.name for it in feats.dataset.items] == ["im0.png", "im2.png", "im3.png"]
    assert feats.X.shape == (3, encoder.config.feature_dim) and np.isfinite(feats.X).all()
    assert list(feats.failed) == [str(paths[1])]
