"""Correlation criteria of IQA (paper IV-B): SROCC, KROCC, PLCC and RMSE, raw and after the VQEG logistic mapping."""

from __future__ import annotations

import warnings

import numpy as np

METRICS = ("srocc", "krocc", "plcc", "rmse", "plcc_raw", "rmse_raw")


def _pair(pred, mos) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64).ravel()
    mos = np.asarray(mos, dtype=np.float64).ravel()
    if pred.shape != mos.shape:
        raise ValueError(f"{pred.size} predictions for {mos.size} scores")
    if pred.size < 3:
        raise ValueError("correlations need at least 3 items")
    return pred, mos


def _rank(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x)


def pearson(x, y) -> float:
    x, y = _pair(x, y)
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    return float((xc * yc).sum() / denom) if denom > 0 else 0.0


def srocc(pred, mos) -> float:
    """Spearman rank-order correlation (average ranks for ties)."""
    pred, mos = _pair(pred, mos)
    return pearson(_rank(pred), _rank(mos))


def krocc(pred, mos) -> float:
    """Kendall rank-order correlation, tau-b."""
    from scipy.stats import kendalltau

    pred, mos = _pair(pred, mos)
    tau = kendalltau(pred, mos).statistic
    return float(tau) if np.isfinite(tau) else 0.0


def plcc(pred, mos) -> float:
    return pearson(pred, mos)


def rmse(pred, mos) -> float:
    pred, mos = _pair(pred, mos)
    return float(np.sqrt(np.mean((pred - mos) ** 2)))


def logistic4(x, b1, b2, b3, b4):
    """VQEG 4-parameter logistic: (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2."""
    z = np.clip(-(np.asarray(x, dtype=np.float64) - b3) / (abs(b4) + 1e-12), -60.0, 60.0)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def fit_logistic(pred, mos) -> np.ndarray:
    """Fit the 4-parameter logistic mapping predictions onto MOS; returns (b1, b2, b3, b4).

    Initialised from the data (b1, b2 at the MOS extremes ordered by the sign of the rank correlation, b3 at the
    median prediction, b4 at the predictions' spread), so curve_fit starts on the right branch; if it still
    fails to converge, a least-squares linear map expressed in the same form (a wide logistic) is returned.
    """
    return _fit_mapping(pred, mos)[0]


def _fit_mapping(pred, mos) -> tuple[np.ndarray, str]:
    """fit_logistic's parameters and which mapping they are: "logistic", or "linear" (the fallback)."""
    from scipy.optimize import curve_fit

    pred, mos = _pair(pred, mos)
    if pred.size < 5:  # four parameters need at least five points to be fitted, not interpolated
        return _linear_as_logistic(pred, mos), "linear"
    spread = float(np.std(pred)) or 1.0
    hi, lo = float(mos.max()), float(mos.min())
    if srocc(pred, mos) < 0:
        hi, lo = lo, hi
    p0 = [hi, lo, float(np.median(pred)), spread]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = curve_fit(logistic4, pred, mos, p0=p0, maxfev=20000)
        if np.all(np.isfinite(params)):
            return params, "logistic"
    except (RuntimeError, ValueError, TypeError):
        pass
    return _linear_as_logistic(pred, mos), "linear"


def _linear_as_logistic(pred: np.ndarray, mos: np.ndarray) -> np.ndarray:
    """Parameters of a logistic that is linear (slope a, intercept c) over the predictions' range.

    Around b3 the logistic has slope (b1 - b2) / (4 |b4|); a b4 much wider than the range makes it straight there.
    """
    a, c = np.polyfit(pred, mos, 1)
    b3 = float(pred.mean())
    b4 = 100.0 * (float(np.ptp(pred)) or 1.0)
    half = 2.0 * a * b4  # b1 - b2 = 4 a b4
    mid = a * b3 + c
    return np.array([mid + half, mid - half, b3, b4])


def correlations(pred, mos, logistic: bool = True) -> dict[str, float | str]:
    """srocc, krocc, plcc, rmse (after the logistic mapping when `logistic`), plcc_raw, rmse_raw (as predicted),
    and plcc_mapping: the mapping behind plcc and rmse — "logistic", "linear" (the logistic fit failed, or fewer
    than 5 points) or "none" (without `logistic`), so a report can say when PLCC is not the VQEG one."""
    pred, mos = _pair(pred, mos)
    out = {"srocc": srocc(pred, mos), "krocc": krocc(pred, mos), "plcc_raw": plcc(pred, mos), "rmse_raw": rmse(pred, mos)}
    if logistic:
        params, mapping = _fit_mapping(pred, mos)
        mapped = logistic4(pred, *params)
        out["plcc"], out["rmse"] = plcc(mapped, mos), rmse(mapped, mos)
    else:
        mapping = "none"
        out["plcc"], out["rmse"] = out["plcc_raw"], out["rmse_raw"]
    return {**{k: out[k] for k in METRICS}, "plcc_mapping": mapping}


def summarize(runs: list[dict[str, float | str]]) -> dict[str, dict[str, float]]:
    """Mean and (population) standard deviation of each numeric metric over runs: {metric: {"mean", "std"}}."""
    keys = [k for k in runs[0] if all(k in r for r in runs) and not isinstance(runs[0][k], str)]
    return {k: {"mean": float(np.mean([r[k] for r in runs])), "std": float(np.std([r[k] for r in runs]))} for k in keys}
