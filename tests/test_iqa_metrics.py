"""IQA criteria against scipy.stats, and the VQEG logistic mapping."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from sliq_cli.iqa.metrics import METRICS, correlations, fit_logistic, krocc, logistic4, plcc, rmse, srocc, summarize


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correlations_match_scipy(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=200)
    y = 0.6 * x + rng.normal(size=200)
    y[:20] = np.round(y[:20])  # ties
    x[10:30] = np.round(x[10:30])
    assert srocc(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert krocc(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert plcc(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    assert rmse(x, y) == pytest.approx(np.sqrt(np.mean((x - y) ** 2)))


def test_logistic_is_monotone_and_improves_plcc_on_a_nonlinear_relation():
    rng = np.random.default_rng(0)
    pred = rng.uniform(-3, 3, 300)
    mos = 80 / (1 + np.exp(-2.5 * pred)) + 10 + rng.normal(0, 2, 300)
    params = fit_logistic(pred, mos)
    grid = np.linspace(-3, 3, 200)
    assert np.all(np.diff(logistic4(grid, *params)) >= 0)
    out = correlations(pred, mos)
    assert out["plcc"] > out["plcc_raw"] + 0.02 and out["plcc"] > 0.97
    assert out["rmse"] < out["rmse_raw"]
    assert out["srocc"] == pytest.approx(stats.spearmanr(pred, mos).statistic)


def test_logistic_follows_a_decreasing_relation():
    rng = np.random.default_rng(1)
    pred = rng.uniform(0, 1, 200)
    dmos = 100 - 90 * pred**2 + rng.normal(0, 1, 200)
    params = fit_logistic(pred, dmos)
    assert np.all(np.diff(logistic4(np.linspace(0, 1, 50), *params)) <= 0)
    assert plcc(logistic4(pred, *params), dmos) > 0.99


def test_degenerate_predictions_do_not_crash():
    mos = np.arange(10.0)
    out = correlations(np.ones(10), mos)
    assert all(np.isfinite(out[k]) for k in METRICS) and out["srocc"] == 0.0


def test_summarize_mean_and_std():
    runs = [{"srocc": 0.8, "plcc": 0.7}, {"srocc": 0.9, "plcc": 0.9}]
    s = summarize(runs)
    assert s["srocc"]["mean"] == pytest.approx(0.85) and s["plcc"]["std"] == pytest.approx(0.1)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="4 predictions for 5 scores"):
        srocc(np.zeros(4), np.zeros(5))
