"""The evaluation protocol on numpy features: splits, alpha selection, ridge, deployable heads, cross-dataset."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from sliq_cli.errors import SliqError
from sliq_cli.iqa.protocol import (
    ALPHAS, RidgePath, cross_dataset, fit_deployable_head, kfold_alpha, official_split, random_splits, run_protocol,
    select_alpha,
)


def _data(n=300, d=40, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 5, d)  # unequal feature scales: standardisation matters
    w = rng.normal(size=d)
    y = 50 + 10 * ((X / X.std(0)) @ w) / np.sqrt(d) + noise * 10 * rng.normal(size=n)
    return X, y


def test_random_splits_partition_70_10_20_and_are_seeded():
    splits = random_splits(1000, 10, seed=3)
    for sp in splits:
        assert (len(sp.train), len(sp.val), len(sp.test)) == (700, 100, 200)
        assert np.array_equal(np.sort(np.concatenate([sp.train, sp.val, sp.test])), np.arange(1000))
    assert not np.array_equal(splits[0].test, splits[1].test)
    again = random_splits(1000, 10, seed=3)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(splits, again))
    assert not np.array_equal(random_splits(1000, 1, seed=4)[0].test, splits[0].test)


def test_synthetic_splits_keep_each_reference_in_one_part():
    groups = [f"ref{i % 29}" for i in range(779)]  # LIVE: 29 references
    for sp in random_splits(len(groups), 10, seed=0, groups=groups):
        parts = [{groups[i] for i in idx} for idx in (sp.train, sp.val, sp.test)]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        assert [len(p) for p in parts] == [20, 3, 6]


def test_too_few_units():
    with pytest.raises(SliqError, match="reference images"):
        random_splits(10, groups=["a"] * 5 + ["b"] * 5)


def test_official_split():
    sp = official_split(["train", "val", "test", "train", "test"])
    assert sp.train.tolist() == [0, 3] and sp.val.tolist() == [1] and sp.test.tolist() == [2, 4]
    with pytest.raises(SliqError, match="needs train, val and test"):
        official_split(["train", "test"])


@pytest.mark.parametrize("n", [30, 120])  # dual (n < D) and primal (n > D) forms
def test_ridge_path_matches_sklearn_on_standardised_features(n):
    X, y = _data(n=n + 20, d=60)
    Xtr, ytr, Xte = X[:n], y[:n], X[n:]
    alphas = [0.1, 10.0, 1000.0]
    path = RidgePath(Xtr, ytr).predict(Xte, alphas)
    mean, std = Xtr.mean(0), Xtr.std(0)
    for a, got in zip(alphas, path):
        ref = Ridge(alpha=a).fit((Xtr - mean) / std, ytr).predict((Xte - mean) / std)
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_select_alpha_grows_with_noise():
    clean = _data(n=200, d=150, noise=0.05, seed=1)
    noisy = _data(n=200, d=150, noise=3.0, seed=1)
    pick = lambda X, y: select_alpha(X[:150], y[:150], X[150:], y[150:])  # noqa: E731
    assert pick(*noisy) > pick(*clean)


def test_run_protocol_recovers_a_linear_relation():
    X, y = _data(n=400, d=30, noise=0.2)
    res = run_protocol(X, y, n_splits=10, seed=0)
    assert len(res.splits) == 10 and not res.official
    s = res.summary
    assert s["srocc"]["mean"] > 0.9 and s["plcc"]["mean"] > 0.9 and 0 < s["srocc"]["std"] < 0.05
    assert set(s) == {"srocc", "krocc", "plcc", "rmse", "plcc_raw", "rmse_raw"}
    d = res.to_dict()
    assert d["n_splits"] == 10 and d["splits"][0]["n_test"] == 80 and d["splits"][0]["alpha"] in ALPHAS


def test_random_features_give_chance_level():
    rng = np.random.default_rng(0)
    res = run_protocol(rng.normal(size=(1000, 20)), rng.normal(size=1000), n_splits=5)
    assert abs(res.summary["srocc"]["mean"]) < 0.12


def test_deployable_head_records_fit_stats():
    X, y = _data(n=200, d=30, noise=0.2)
    groups = [str(i // 10) for i in range(200)]
    alpha, oof = kfold_alpha(X, y, groups=groups)
    head = fit_deployable_head(X, y, groups=groups, meta={"dataset": "toy"})
    assert head.meta["alpha"] == alpha and head.meta["n_train"] == 200 and head.meta["dataset"] == "toy"
    fit = head.meta["fit"]
    assert fit["cv_folds"] == 5 and fit["cv_srocc"] > 0.85 and fit["srocc"] >= fit["cv_srocc"]
    assert np.corrcoef(head.predict(X), y)[0, 1] > 0.9


def test_cross_dataset_flips_between_mos_and_dmos():
    X, y = _data(n=300, d=20, noise=0.1)
    metrics, pred, head = cross_dataset(X[:200], y[:200], X[200:], 100 - y[200:], flip=True)
    assert metrics["srocc"] > 0.9 and "rmse_raw" not in metrics and head.meta["n_train"] == 200


def test_official_split_runs_once():
    X, y = _data(n=100, d=10, noise=0.1)
    labels = ["train"] * 70 + ["val"] * 10 + ["test"] * 20
    res = run_protocol(X, y, official=labels, n_splits=10)
    assert res.official and len(res.splits) == 1
    assert res.splits[0].test_index.tolist() == list(range(80, 100)) and res.splits[0].metrics["srocc"] > 0.9
