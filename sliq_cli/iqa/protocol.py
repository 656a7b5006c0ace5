"""The paper's evaluation protocol (III-B, IV-B, IV-D): a ridge head on frozen features.

- 10 seeded random 70/10/20 train/val/test splits; synthetic datasets split by reference image so no content
  crosses splits; a dataset with an official split (FLIVE) uses it once.
- Ridge on standardised features (sklearn, via `RidgeHead.fit`); the regularisation alpha is the one of a log grid
  with the lowest validation MSE (the paper: "we use the validation set to determine the regularization
  coefficient"; it does not name the criterion, MSE is ridge's own loss and is less noisy than a rank
  correlation on a ~10 % split).
- Test SROCC, KROCC, PLCC and RMSE (raw and after the VQEG logistic), mean and std over the splits.
- A deployable head fitted on all data, alpha by k-fold cross-validation; cross-dataset testing (Table III).

Deviation: the paper says the regression is "supervised ... based on the L1 loss"; ridge regression, which the
paper names and which this module implements, minimises squared error plus the L2 penalty.
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from sliq_cli.errors import HeadExistsError, SliqError, SliqWarning, UsageError
from sliq_cli.iqa.cache import cached_features
from sliq_cli.iqa.datasets import Dataset, load_csv, load_dataset
from sliq_cli.iqa.head import RidgeHead, user_head_path
from sliq_cli.iqa.metrics import correlations, summarize

ALPHAS = tuple(float(a) for a in np.logspace(-3, 5, 17))  # half-decade grid
FRACTIONS = (0.7, 0.1, 0.2)
SMALL_PROBLEM = 2048  # min(samples, features) up to which ridge runs single-threaded
SMALL_SAMPLE = 100  # images below which fit_head warns: test splits of ~20 images give noisy numbers


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def random_splits(n: int, n_splits: int = 10, seed: int = 0, groups: list[str] | None = None,
                  fractions: tuple[float, float, float] = FRACTIONS) -> list[Split]:
    """`n_splits` seeded train/val/test splits of `n` items; with `groups`, whole groups go to one part.

    Fractions apply to the units shuffled (items, or groups for synthetic datasets, whose references are the units).
    """
    if groups is not None and len(groups) != n:
        raise ValueError(f"{len(groups)} groups for {n} items")
    keys = np.arange(n) if groups is None else np.unique(np.asarray(groups, dtype=object), return_inverse=True)[1]
    units = int(keys.max()) + 1 if n else 0
    if units < 3:
        raise SliqError(f"cannot split {units} {'reference images' if groups else 'items'} into train/val/test")
    n_val = max(1, round(fractions[1] * units))
    n_test = max(1, round(fractions[2] * units))
    n_train = units - n_val - n_test
    if n_train < 1:
        raise SliqError(f"too few {'reference images' if groups else 'items'} ({units}) for a train/val/test split")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_splits):
        part = np.empty(units, dtype=np.int8)
        part[rng.permutation(units)] = np.repeat([0, 1, 2], [n_train, n_val, n_test])
        where = part[keys]
        out.append(Split(*(np.flatnonzero(where == p) for p in range(3))))
    return out


def official_split(labels: list[str]) -> Split:
    labels = np.asarray(labels)
    split = Split(*(np.flatnonzero(labels == s) for s in ("train", "val", "test")))
    if min(len(split.train), len(split.val), len(split.test)) == 0:
        raise SliqError("the official split needs train, val and test items")
    return split


class RidgePath:
    """Exact ridge solutions for many alphas from one eigendecomposition (what sklearn's Ridge computes per alpha).

    Features are standardised with the training statistics, as `RidgeHead.fit` does, and the intercept is the
    target mean. With fewer samples than features the n x n Gram matrix is decomposed (dual form), else the D x D
    covariance (primal form).
    """

    def __init__(self, X: np.ndarray, y: np.ndarray):
        X = np.asarray(X, dtype=np.float64)
        self.mean = X.mean(axis=0)
        std = X.std(axis=0)
        std[std < 1e-12] = 1.0
        self.std = std
        self.y_mean = float(np.mean(y))
        Z = (X - self.mean) / std  # (n, D)
        yc = np.asarray(y, dtype=np.float64) - self.y_mean
        self.dual = Z.shape[0] <= Z.shape[1]
        if self.dual:
            self.Z = Z
            self.evals, self.evecs = np.linalg.eigh(Z @ Z.T)  # (n,), (n, n)
            self.proj = self.evecs.T @ yc  # (n,)
        else:
            self.evals, self.evecs = np.linalg.eigh(Z.T @ Z)  # (D,), (D, D)
            self.proj = self.evecs.T @ (Z.T @ yc)  # (D,)

    def predict(self, X: np.ndarray, alphas) -> np.ndarray:
        """Predictions for X under each alpha: (len(alphas), m)."""
        Z = (np.asarray(X, dtype=np.float64) - self.mean) / self.std  # (m, D)
        left = (Z @ self.Z.T) @ self.evecs if self.dual else Z @ self.evecs  # (m, n) or (m, D)
        shrink = self.proj[None, :] / (np.clip(self.evals, 0, None)[None, :] + np.asarray(alphas, dtype=np.float64)[:, None])
        return shrink @ left.T + self.y_mean


def _blas_threads(n: int, d: int):
    """One BLAS thread for small ridge problems: on matrices this small thread start-up and spin-waiting cost more
    than they save (measured 3x slower on 2 cores, and up to 100x on a loaded machine)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1 if min(n, d) <= SMALL_PROBLEM else None, user_api="blas")


def select_alpha(X_train, y_train, X_val, y_val, alphas=ALPHAS) -> float:
    """The alpha of the grid with the lowest validation MSE."""
    pred = RidgePath(X_train, y_train).predict(X_val, alphas)  # (A, m)
    mse = np.mean((pred - np.asarray(y_val, dtype=np.float64)[None, :]) ** 2, axis=1)
    return float(alphas[int(np.argmin(mse))])


@dataclass
class SplitResult:
    metrics: dict[str, float]
    alpha: float
    sizes: tuple[int, int, int]
    test_index: np.ndarray
    test_pred: np.ndarray

    def to_dict(self) -> dict:
        return {"alpha": self.alpha, "n_train": self.sizes[0], "n_val": self.sizes[1], "n_test": self.sizes[2], **self.metrics}


@dataclass
class ProtocolResult:
    splits: list[SplitResult]
    official: bool

    @property
    def summary(self) -> dict[str, dict[str, float]]:
        return summarize([s.metrics for s in self.splits])

    def to_dict(self) -> dict:
        return {"n_splits": len(self.splits), "official_split": self.official, "summary": self.summary,
                "splits": [s.to_dict() for s in self.splits]}


def run_protocol(X: np.ndarray, y: np.ndarray, *, groups: list[str] | None = None, official: list[str] | None = None,
                 n_splits: int = 10, seed: int = 0, alphas=ALPHAS) -> ProtocolResult:
    """The paper's protocol on precomputed features X (N, D) and scores y (N,)."""
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    splits = [official_split(official)] if official is not None else random_splits(len(y), n_splits, seed, groups)
    return ProtocolResult([split_result(X, y, sp, alphas) for sp in splits], official is not None)


def split_result(X: np.ndarray, y: np.ndarray, sp: Split, alphas=ALPHAS) -> SplitResult:
    """One split of the protocol: alpha on the validation part, ridge on the training part, metrics on the test part."""
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    with _blas_threads(*X.shape):
        alpha = select_alpha(X[sp.train], y[sp.train], X[sp.val], y[sp.val], alphas)
        pred = RidgeHead.fit(X[sp.train], y[sp.train], alpha).predict(X[sp.test])
    sizes = (len(sp.train), len(sp.val), len(sp.test))
    return SplitResult(correlations(pred, y[sp.test]), alpha, sizes, sp.test, pred)


def kfold_alpha(X, y, *, groups: list[str] | None = None, folds: int = 5, seed: int = 0, alphas=ALPHAS) -> tuple[float, np.ndarray]:
    """Alpha by k-fold cross-validation (grouped by reference when `groups`): lowest mean out-of-fold MSE.

    Returns the alpha and the out-of-fold predictions at that alpha (N,).
    """
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keys = np.arange(len(y)) if groups is None else np.unique(np.asarray(groups, dtype=object), return_inverse=True)[1]
    units = int(keys.max()) + 1
    folds = min(folds, units)
    if folds < 2:
        raise SliqError("cross-validation needs at least 2 items (or reference images)")
    fold_of = np.random.default_rng(seed).permutation(units) % folds
    oof = np.zeros((len(alphas), len(y)))
    for k in range(folds):
        test = fold_of[keys] == k
        oof[:, test] = RidgePath(X[~test], y[~test]).predict(X[test], alphas)
    best = int(np.argmin(np.mean((oof - y[None, :]) ** 2, axis=1)))
    return float(alphas[best]), oof[best]


def fit_deployable_head(X, y, *, groups: list[str] | None = None, folds: int = 5, seed: int = 0, alphas=ALPHAS,
                        meta: dict | None = None) -> RidgeHead:
    """A head fitted on all data; alpha by k-fold CV. meta gains fit statistics (out-of-fold and training)."""
    with _blas_threads(*np.shape(X)):
        alpha, oof = kfold_alpha(X, y, groups=groups, folds=folds, seed=seed, alphas=alphas)
        head = RidgeHead.fit(X, y, alpha, meta)
    cv = correlations(oof, y)
    train = correlations(head.predict(X), y, logistic=False)
    head.meta["fit"] = {"cv_folds": min(folds, len(set(groups)) if groups else len(y)), "cv_srocc": cv["srocc"],
                        "cv_plcc": cv["plcc"], "cv_rmse": cv["rmse_raw"], "srocc": train["srocc"], "plcc": train["plcc"]}
    return head


def cross_dataset(X_train, y_train, X_test, y_test, *, flip: bool = False, groups: list[str] | None = None,
                  seed: int = 0, alphas=ALPHAS) -> tuple[dict[str, float], np.ndarray, RidgeHead]:
    """Fit on all of A (alpha by CV), test on all of B (Table III). `flip` when one is MOS and the other DMOS.

    Returns B's metrics (rmse after the logistic mapping only: raw predictions are on A's scale), the predictions
    and the head.
    """
    head = fit_deployable_head(X_train, y_train, groups=groups, seed=seed, alphas=alphas)
    pred = head.predict(X_test)
    if flip:
        pred = -pred
    metrics = correlations(pred, y_test)
    metrics.pop("rmse_raw")
    return metrics, pred, head


# ---- on datasets and encoders --------------------------------------------------------------------------------

ProgressFactory = Callable  # (total, description) -> context manager yielding advance(n=1)


@contextmanager
def _no_progress(total, description):
    yield lambda n=1: None


@dataclass(frozen=True)
class DatasetRef:
    """How the command line names a dataset: a name/folder/CSV, or a scores CSV plus an images folder."""

    spec: str | None = None
    mos: Path | None = None
    images: Path | None = None
    data_root: Path | None = None
    skip_missing: bool = False
    higher_is_better: bool = True  # for CSV scores; False when they are DMOS

    def load(self) -> Dataset:
        if (self.spec is None) == (self.mos is None):
            raise UsageError("give either a dataset (--dataset NAME) or a scores file (--mos CSV [--images DIR])")
        if self.mos is not None:
            return load_csv(self.mos, self.images, higher_is_better=self.higher_is_better, skip_missing=self.skip_missing)
        return load_dataset(self.spec, data_root_dir=self.data_root, images=self.images, skip_missing=self.skip_missing,
                            higher_is_better=self.higher_is_better)


@dataclass
class DatasetFeatures:
    dataset: Dataset  # the items whose features were computed
    X: np.ndarray  # (N, D) float32
    failed: dict[str, str]  # path -> reason, for images that could not be used


def as_dataset(ds: Dataset | DatasetRef) -> Dataset:
    return ds.load() if isinstance(ds, DatasetRef) else ds


def open_encoder(model: str | None, device: str = "auto"):
    """Resolve `--model` and load the encoder on the resolved device."""
    from sliq_cli.iqa.features import resolve_device
    from sliq_cli.loading import load_model

    return load_model(model, resolve_device(device))


def dataset_features(dataset: Dataset, encoder, *, batch_size: int | None = None, progress: ProgressFactory | None = None,
                     use_cache: bool = True) -> DatasetFeatures:
    """Quality features of a dataset's images (cached); unreadable images are dropped and listed, not fatal."""
    device = str(next(encoder.parameters()).device)
    with (progress or _no_progress)(len(dataset), f"features · {dataset.name}") as advance:
        result = cached_features(encoder, dataset.paths, device=device, batch_size=batch_size,
                                 resize_shorter=dataset.resize_shorter, progress=advance, use_cache=use_cache)
    keep = [int(i) for i in np.flatnonzero(result.ok)]
    if len(keep) < 3:
        raise SliqError(f"{dataset.source}: only {len(keep)} of {len(dataset)} images could be read")
    return DatasetFeatures(dataset.subset(keep), result.features[keep], result.failed)


def _encoder_info(encoder) -> dict:
    return {"model": encoder.source, "fingerprint": encoder.fingerprint}


@dataclass
class FitHeadReport:
    dataset: str
    n_images: int
    encoder: dict
    protocol: ProtocolResult
    head: RidgeHead
    head_path: Path
    failed: dict[str, str]
    missing: list[Path]
    seconds: dict[str, float]

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "n_images": self.n_images, "encoder": self.encoder, "protocol": self.protocol.to_dict(),
                "head": {"path": str(self.head_path), **self.head.meta}, "failed": self.failed,
                "missing": [str(p) for p in self.missing], "seconds": self.seconds}


def fit_head(dataset: Dataset | DatasetRef, *, model: str | None = None, name: str | None = None, device: str = "auto",
             batch_size: int | None = None, n_splits: int = 10, seed: int = 0, progress: ProgressFactory | None = None,
             use_cache: bool = True, force: bool = False) -> FitHeadReport:
    """`sliq fit-head`: the paper's protocol on a dataset, then a deployable head on all of it, saved where
    `sliq score --head NAME` finds it (the user's heads folder for this encoder). An existing head of that name is
    replaced only with `force` (HeadExistsError otherwise); fewer than SMALL_SAMPLE images give a SliqWarning."""
    from sliq_cli import __version__
    from sliq_cli.model.checkpoint import read_config
    from sliq_cli.loading import find_model

    ds = as_dataset(dataset)
    name = name or ds.name
    # checked before minutes of feature extraction, from config.json alone (no weights loaded)
    target = user_head_path(name, read_config(find_model(model)).get("fingerprint", ""))
    if target.exists() and not force:
        raise HeadExistsError(f"{target}: a head named {name!r} exists already for this model; --force (force=True) "
                              "replaces it, or give another --name")
    if len(ds) < SMALL_SAMPLE:
        warnings.warn(f"{ds.name}: only {len(ds)} images; with test splits of ~{max(1, len(ds) // 5)} images the "
                      "protocol's numbers are noisy, and the head may not generalise (IQA datasets have 500 to 40,000 "
                      "images)", SliqWarning, stacklevel=2)
    t0 = time.perf_counter()
    encoder = open_encoder(model, device)
    feats = dataset_features(ds, encoder, batch_size=batch_size, progress=progress, use_cache=use_cache)
    t1 = time.perf_counter()
    kept, y = feats.dataset, feats.dataset.scores
    protocol = run_protocol(feats.X, y, groups=kept.refs, official=kept.official_split, n_splits=n_splits, seed=seed)
    cfg = encoder.config
    spec = {**cfg.features.to_dict(), "dim": cfg.feature_dim}
    if kept.resize_shorter:
        spec["resize_shorter"] = kept.resize_shorter
    meta = {"name": name, "encoder_fingerprint": encoder.fingerprint, "feature_spec": spec, "mos_scale": kept.mos_scale(),
            "dataset": kept.name, "protocol": {k: protocol.summary[k] for k in ("srocc", "krocc", "plcc", "rmse")},
            "sliq_version": __version__}
    head = fit_deployable_head(feats.X, y, groups=kept.refs, seed=seed, meta=meta)
    path = head.save(user_head_path(name, encoder.fingerprint))
    t2 = time.perf_counter()
    return FitHeadReport(kept.name, len(kept), _encoder_info(encoder), protocol, head, path, feats.failed, ds.missing,
                         {"features": round(t1 - t0, 2), "regression": round(t2 - t1, 2)})


@dataclass
class CrossReport:
    train: str
    test: str
    n_train: int
    n_test: int
    encoder: dict
    alpha: float
    metrics: dict[str, float]
    failed: dict[str, str]

    def to_dict(self) -> dict:
        return {"train": self.train, "test": self.test, "n_train": self.n_train, "n_test": self.n_test,
                "encoder": self.encoder, "alpha": self.alpha, **self.metrics, "failed": self.failed}


def crossval(train: Dataset | DatasetRef, test: Dataset | DatasetRef, *, model: str | None = None, device: str = "auto",
             batch_size: int | None = None, seed: int = 0, progress: ProgressFactory | None = None, use_cache: bool = True) -> CrossReport:
    """`sliq crossval`: a head fitted on all of `train`, tested on all of `test` (paper IV-D, Table III)."""
    a, b = as_dataset(train), as_dataset(test)
    shared = a.overlap(b)
    if shared:
        warnings.warn(f"{shared} of the {len(b)} test images ({b.name}) are also training images ({a.name}): these "
                      "numbers are in-sample, not a cross-dataset test", SliqWarning, stacklevel=2)
    encoder = open_encoder(model, device)
    fa = dataset_features(a, encoder, batch_size=batch_size, progress=progress, use_cache=use_cache)
    fb = dataset_features(b, encoder, batch_size=batch_size, progress=progress, use_cache=use_cache)
    metrics, _, head = cross_dataset(fa.X, fa.dataset.scores, fb.X, fb.dataset.scores, groups=fa.dataset.refs, seed=seed,
                                      flip=a.higher_is_better != b.higher_is_better)
    return CrossReport(a.name, b.name, len(fa.dataset), len(fb.dataset), _encoder_info(encoder), head.meta["alpha"], metrics,
                       {**fa.failed, **fb.failed})


@dataclass
class EvaluateReport:
    dataset: str
    n_images: int
    results: dict[str, ProtocolResult]  # model spec -> protocol result
    encoders: dict[str, dict]
    failed: dict[str, dict[str, str]]
    seconds: dict[str, float]

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "n_images": self.n_images,
                "models": {m: {"encoder": self.encoders[m], **r.to_dict(), "failed": self.failed[m],
                               "seconds": self.seconds[m]} for m, r in self.results.items()}}


def evaluate(dataset: Dataset | DatasetRef, models: list[str | None], *, device: str = "auto", batch_size: int | None = None,
             n_splits: int = 10, seed: int = 0, progress: ProgressFactory | None = None, use_cache: bool = True) -> EvaluateReport:
    """`sliq evaluate`: the paper's protocol on one dataset for one or more encoders, on the same splits."""
    ds = as_dataset(dataset)
    results, encoders, failed, seconds = {}, {}, {}, {}
    for spec in models or [None]:
        key = spec or "default"
        t0 = time.perf_counter()
        encoder = open_encoder(spec, device)
        feats = dataset_features(ds, encoder, batch_size=batch_size, progress=progress, use_cache=use_cache)
        kept = feats.dataset
        results[key] = run_protocol(feats.X, kept.scores, groups=kept.refs, official=kept.official_split,
                                    n_splits=n_splits, seed=seed)
        encoders[key], failed[key], seconds[key] = _encoder_info(encoder), feats.failed, round(time.perf_counter() - t0, 2)
        del encoder
    return EvaluateReport(ds.name, len(ds), results, encoders, failed, seconds)
