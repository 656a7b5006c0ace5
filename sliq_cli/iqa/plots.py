"""Figures: predicted score vs MOS with the fitted logistic, and a t-SNE map of quality features (paper Fig. 3).

matplotlib is an optional extra (`pip install 'sliq-iqa[plots]'`); it is imported inside the functions and drives
an Agg canvas directly (no pyplot, no global backend switch).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sliq_cli.atomic import atomic_path
from sliq_cli.errors import SliqError, SliqWarning
from sliq_cli.iqa.datasets import Dataset
from sliq_cli.iqa.head import RidgeHead
from sliq_cli.iqa.metrics import correlations, fit_logistic, logistic4
from sliq_cli.iqa.protocol import (
    DatasetRef, ProgressFactory, as_dataset, dataset_features, official_split, open_encoder, random_splits, select_alpha,
)


def _figure(size=(5.0, 4.2)):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise SliqError("plots need matplotlib: pip install 'sliq-iqa[plots]'") from None
    return Figure(figsize=size, dpi=120, layout="constrained")


def _save(fig, out) -> Path:
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out


def scatter_figure(pred, mos, out, *, title: str = "", ylabel: str = "MOS") -> Path:
    """Predicted scores against MOS, with the 4-parameter logistic fitted to them and the criteria in the legend."""
    pred, mos = np.asarray(pred, dtype=np.float64), np.asarray(mos, dtype=np.float64)
    params = fit_logistic(pred, mos)
    m = correlations(pred, mos)
    fig = _figure()
    ax = fig.add_subplot()
    ax.scatter(pred, mos, s=10, alpha=0.6, edgecolors="none", label=f"{len(pred)} images")
    grid = np.linspace(pred.min(), pred.max(), 200)
    ax.plot(grid, logistic4(grid, *params), color="C3", lw=2,
            label=f"logistic fit  SROCC {m['srocc']:.3f}  PLCC {m['plcc']:.3f}")
    ax.set_xlabel("predicted score")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, out)


def tsne_embedding(X: np.ndarray, *, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE of features (N, D) -> (N, 2); perplexity is capped below N as t-SNE requires."""
    from sklearn.manifold import TSNE

    n = len(X)
    if n < 5:
        raise SliqError(f"t-SNE needs at least 5 images, got {n}")
    return TSNE(n_components=2, perplexity=min(perplexity, (n - 1) / 3), init="pca", random_state=seed).fit_transform(
        np.asarray(X, dtype=np.float64))


def tsne_figure(emb: np.ndarray, labels: list[str], out, *, title: str = "", order: list[str] | None = None) -> Path:
    """Points coloured by label; `order` lists ordinal labels (MOS bins) low to high, drawn on a sequential map."""
    fig = _figure((5.6, 4.6))
    ax = fig.add_subplot()
    labels_arr = np.asarray([lab or "(none)" for lab in labels])
    groups = order or sorted(set(labels_arr))
    for k, lab in enumerate(groups):
        sel = labels_arr == lab
        colour = _viridis(k / max(1, len(groups) - 1)) if order else f"C{k % 10}"
        ax.scatter(emb[sel, 0], emb[sel, 1], s=8, color=colour, marker="o" if order else "os^Dv"[k // 10 % 5], label=lab,
                   alpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.legend(loc="best", fontsize=7, markerscale=1.5, ncols=1 + len(groups) // 12)
    return _save(fig, out)


def _viridis(x: float):
    from matplotlib import colormaps

    return colormaps["viridis"](x)


def mos_bins(ds: Dataset, n: int = 5) -> tuple[list[str], list[str]]:
    """Each item's score bin ("MOS 20–40") and the bins low to high: n equal-width bins over the dataset's scale, so
    datasets without distortion labels (authentic photos) can be coloured by quality."""
    lo, hi = ds.scale
    edges = np.linspace(lo, hi, n + 1)
    kind = "MOS" if ds.higher_is_better else "DMOS"
    names = [f"{kind} {edges[k]:.3g}–{edges[k + 1]:.3g}" for k in range(n)]
    return [names[i] for i in np.digitize(ds.scores, edges[1:-1])], names


def _colours(ds: Dataset, color_by: str) -> tuple[list[str], list[str] | None]:
    """Labels for each item and, for MOS bins, their order; raises when no item has the attribute."""
    return mos_bins(ds) if color_by == "mos" else (ds.attribute(color_by), None)


@dataclass
class PlotReport:
    path: Path
    n_points: int
    metrics: dict[str, float]
    fitted_on: str | None = None  # the head's training dataset, when it is the plotted one (in-sample numbers)


def plot_scatter(dataset: Dataset | DatasetRef, out, *, model: str | None = None, head: str | None = None,
                 device: str = "auto", batch_size: int | None = None, seed: int = 0, progress: ProgressFactory | None = None) -> PlotReport:
    """`sliq plot scatter`: with `head`, that head's predictions on every image; else the held-out predictions of
    the protocol's first split (ridge fitted on its train part, alpha from its val part)."""
    from sliq_cli.iqa.head import resolve_head

    ds = as_dataset(dataset)
    encoder = open_encoder(model, device)
    ridge = resolve_head(head, encoder.source, encoder.fingerprint) if head is not None else None  # before the features
    feats = dataset_features(ds, encoder, batch_size=batch_size, progress=progress)
    X, y = feats.X, feats.dataset.scores
    fitted_on = None
    if ridge is not None:
        pred, mos, what = ridge.predict(X), y, f"head {ridge.name}"
        if ridge.meta.get("dataset") == feats.dataset.name:
            fitted_on, what = feats.dataset.name, f"head {ridge.name}, in-sample"
            warnings.warn(f"head {head!r} was fitted on {fitted_on}: these are in-sample numbers (its training data), "
                          "not a test; leave out the head for held-out predictions", SliqWarning, stacklevel=2)
    else:
        official = feats.dataset.official_split
        sp = official_split(official) if official else random_splits(len(y), 1, seed, feats.dataset.refs)[0]
        alpha = select_alpha(X[sp.train], y[sp.train], X[sp.val], y[sp.val])
        pred, mos, what = RidgeHead.fit(X[sp.train], y[sp.train], alpha).predict(X[sp.test]), y[sp.test], "test split"
    kind = "MOS" if feats.dataset.higher_is_better else "DMOS"
    path = scatter_figure(pred, mos, out, title=f"{feats.dataset.name} · {what}", ylabel=kind)
    return PlotReport(path, len(pred), correlations(pred, mos), fitted_on)


def plot_tsne(dataset: Dataset | DatasetRef, out, *, model: str | None = None, color_by: str | None = None,
              max_points: int = 750, seed: int = 0, perplexity: float = 30.0, device: str = "auto", batch_size: int | None = None,
              progress: ProgressFactory | None = None) -> PlotReport:
    """`sliq plot tsne`: t-SNE of the quality features of up to `max_points` images (seeded sample), coloured by
    "mos" (binned scores) or an item attribute (the distortion type of a synthetic dataset, any extra column of a
    CSV). Default: distortion where the dataset has it, else mos."""
    ds = as_dataset(dataset)
    color_by = color_by or ("distortion" if any(it.attrs.get("distortion") for it in ds.items) else "mos")
    _colours(ds, color_by)  # fail before extracting anything
    if len(ds) > max_points:
        ds = ds.subset(sorted(np.random.default_rng(seed).choice(len(ds), max_points, replace=False).tolist()))
    encoder = open_encoder(model, device)
    feats = dataset_features(ds, encoder, batch_size=batch_size, progress=progress)
    emb = tsne_embedding(feats.X, seed=seed, perplexity=perplexity)
    labels, order = _colours(feats.dataset, color_by)
    path = tsne_figure(emb, labels, out, title=f"{feats.dataset.name} · t-SNE by {color_by}", order=order)
    return PlotReport(path, len(emb), {})
