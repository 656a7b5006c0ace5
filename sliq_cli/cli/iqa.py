"""`sliq fit-head`, `sliq crossval`, `sliq evaluate`, `sliq plot scatter|tsne`: the paper's IQA protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sliq_cli.cli.options import BatchSizeOpt, DataRootOpt, Device, DeviceOpt, JsonOpt, ModelOpt, SeedOpt
from sliq_cli.cli.render import err_console, fmt_mean_std, out_console, progress_bar, warn

DatasetOpt = Annotated[
    Optional[str],
    typer.Option("--dataset", "-d", help="Dataset: a name under --data-root/$SLIQ_DATA (live, csiq, tid2013, kadid10k, "
                 "koniq10k, clive, flive, spaq, or any folder with mos.csv), a dataset folder, or a CSV file."),
]
MosOpt = Annotated[Optional[Path], typer.Option("--mos", help="CSV with columns image,mos (+ optional ref, split, mos_std).")]
ImagesOpt = Annotated[Optional[Path], typer.Option("--images", help="Folder the CSV's image names are relative to.")]
SplitsOpt = Annotated[int, typer.Option("--splits", min=1, help="Random 70/10/20 splits (ignored with an official split).")]
SkipMissingOpt = Annotated[bool, typer.Option("--skip-missing", help="Skip listed images that are missing (with a warning).")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Recompute features instead of using the feature cache.")]
ROWS = (("srocc", "SROCC"), ("krocc", "KROCC"), ("plcc", "PLCC"), ("rmse", "RMSE"), ("plcc_raw", "PLCC (raw)"))


def _write_json(path: Path | None, doc: dict) -> None:
    if path is not None:
        from sliq_cli.atomic import atomic_write_json

        atomic_write_json(path, doc)
        err_console().print(f"results written to {path}")


def _warn_skipped(missing, failed: dict) -> None:
    if missing:
        warn(f"{len(missing)} listed image(s) missing, skipped: " + ", ".join(str(p) for p in missing[:5])
             + (" ..." if len(missing) > 5 else ""))
    for path, reason in failed.items():
        warn(f"{path}: {reason} (left out)")


def _print_table(title: str, table) -> None:
    """The title on its own line: a table's own title wraps at the (narrow) table width."""
    console = out_console()
    console.print(f"[bold]{title}[/]")
    console.print(table)


def _protocol_table(summaries: dict[str, dict]):
    from rich.table import Table

    table = Table()
    table.add_column("criterion")
    for name in summaries:
        table.add_column(name, justify="right", overflow="fold")
    for key, label in ROWS:
        table.add_row(label, *(fmt_mean_std(s[key]["mean"], s[key]["std"]) for s in summaries.values()))
    return table


def fit_head(
    mos: MosOpt = None,
    images: ImagesOpt = None,
    dataset: DatasetOpt = None,
    data_root: DataRootOpt = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Head name for `sliq score --head` (default: dataset name).")] = None,
    model: ModelOpt = None,
    device: DeviceOpt = Device.auto,
    batch_size: BatchSizeOpt = None,
    splits: SplitsOpt = 10,
    seed: SeedOpt = 0,
    skip_missing: SkipMissingOpt = False,
    dmos: Annotated[bool, typer.Option("--dmos", help="The CSV's scores are DMOS (lower is better).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing head of the same name.")] = False,
    no_cache: NoCacheOpt = False,
    json_out: JsonOpt = None,
):
    """Run the paper's protocol on a dataset (ridge on frozen features, seeded 70/10/20 splits), then fit a head on
    all of it and save it where `sliq score --head NAME` finds it.

    Examples:

    \b
      sliq fit-head --mos clive.csv --images clive/ --name clive
      sliq fit-head --dataset koniq10k --data-root ~/iqa --name koniq
    """
    from sliq_cli.iqa.protocol import DatasetRef, fit_head as run

    ds = DatasetRef(dataset, mos, images, data_root, skip_missing, higher_is_better=not dmos).load()
    report = run(ds, model=model, name=name, device=device.value, batch_size=batch_size, n_splits=splits, seed=seed,
                 progress=progress_bar, use_cache=not no_cache, force=force)
    _warn_skipped(report.missing, report.failed)
    p = report.protocol
    how = "official split" if p.official else f"{len(p.splits)} random 70/10/20 splits, seed {seed}"
    _print_table(f"{report.dataset} · {report.n_images} images · {how}", _protocol_table({"test (mean ± std)": p.summary}))
    fit = report.head.meta["fit"]
    err_console().print(f"head [bold]{report.head.name}[/] (alpha {report.head.meta['alpha']:g}, {fit['cv_folds']}-fold CV "
                        f"SROCC {fit['cv_srocc']:.3f}) saved to {report.head_path}")
    _write_json(json_out, report.to_dict())


def crossval(
    train: Annotated[str, typer.Option("--train", help="Dataset the head is fitted on (all of it).")],
    test: Annotated[str, typer.Option("--test", help="Dataset it is tested on (all of it).")],
    data_root: DataRootOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = Device.auto,
    batch_size: BatchSizeOpt = None,
    seed: SeedOpt = 0,
    skip_missing: SkipMissingOpt = False,
    no_cache: NoCacheOpt = False,
    json_out: JsonOpt = None,
):
    """Cross-dataset evaluation (paper Table III): fit on all of --train, test on all of --test.

    Examples:

    \b
      sliq crossval --train live --test csiq --data-root ~/iqa
    """
    from rich.table import Table

    from sliq_cli.iqa.protocol import DatasetRef, crossval as run

    a = DatasetRef(train, data_root=data_root, skip_missing=skip_missing).load()
    b = DatasetRef(test, data_root=data_root, skip_missing=skip_missing).load()
    report = run(a, b, model=model, device=device.value, batch_size=batch_size, seed=seed, progress=progress_bar,
                 use_cache=not no_cache)
    _warn_skipped([], report.failed)
    table = Table()
    for _, label in ROWS:
        table.add_column(label, justify="right")
    table.add_row(*(f"{report.metrics[key]:.3f}" for key, _ in ROWS))
    _print_table(f"trained on {report.train} ({report.n_train} images) · tested on {report.test} ({report.n_test})", table)
    _write_json(json_out, report.to_dict())


def evaluate(
    dataset: Annotated[str, typer.Argument(help="Dataset name under --data-root/$SLIQ_DATA, dataset folder, or CSV.")],
    models: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Model to compare (repeat for several).")] = None,
    images: ImagesOpt = None,
    data_root: DataRootOpt = None,
    device: DeviceOpt = Device.auto,
    batch_size: BatchSizeOpt = None,
    splits: SplitsOpt = 10,
    seed: SeedOpt = 0,
    skip_missing: SkipMissingOpt = False,
    no_cache: NoCacheOpt = False,
    json_out: JsonOpt = None,
):
    """The paper's protocol on one dataset for one or more encoders, side by side on the same splits.

    Examples:

    \b
      sliq evaluate clive.csv
      sliq evaluate live -m default -m runs/slique/export --data-root ~/iqa
    """
    from sliq_cli.iqa.protocol import DatasetRef, evaluate as run

    report = run(DatasetRef(dataset, images=images, data_root=data_root, skip_missing=skip_missing), models or [None],
                 device=device.value, batch_size=batch_size, n_splits=splits, seed=seed, progress=progress_bar,
                 use_cache=not no_cache)
    for failed in report.failed.values():
        _warn_skipped([], failed)
    splits = next(iter(report.results.values()))
    how = "official split" if splits.official else f"{len(splits.splits)} random 70/10/20 splits, seed {seed}"
    _print_table(f"{report.dataset} · {report.n_images} images · {how} · test mean ± std",
                 _protocol_table({m: r.summary for m, r in report.results.items()}))
    _write_json(json_out, report.to_dict())


plot_app = typer.Typer(help="Figures: predicted vs MOS scatter, t-SNE of quality features.", no_args_is_help=True)
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")]


@plot_app.command("scatter")
def scatter(
    dataset: Annotated[str, typer.Argument(help="Dataset name, folder or CSV.")],
    out: OutOpt = Path("scatter.png"),
    model: ModelOpt = None,
    head: Annotated[Optional[str], typer.Option("--head", help="Plot this head's predictions on every image "
                                                "(default: held-out predictions of the first protocol split).")] = None,
    data_root: DataRootOpt = None,
    device: DeviceOpt = Device.auto,
    batch_size: BatchSizeOpt = None,
    seed: SeedOpt = 0,
    skip_missing: SkipMissingOpt = False,
):
    """Predicted score vs MOS with the fitted 4-parameter logistic curve.

    Examples:

    \b
      sliq plot scatter clive.csv --out clive.png  # needs sliq-iqa[plots]
    """
    from sliq_cli.iqa.plots import plot_scatter
    from sliq_cli.iqa.protocol import DatasetRef

    report = plot_scatter(DatasetRef(dataset, data_root=data_root, skip_missing=skip_missing), out, model=model,
                          head=head, device=device.value, batch_size=batch_size, seed=seed, progress=progress_bar)
    m = report.metrics
    out_console().print(f"{report.path}  ({report.n_points} points, SROCC {m['srocc']:.3f}, PLCC {m['plcc']:.3f})")


@plot_app.command("tsne")
def tsne(
    dataset: Annotated[str, typer.Argument(help="Dataset name, folder or CSV.")],
    out: OutOpt = Path("tsne.png"),
    colour_by: Annotated[Optional[str], typer.Option(
        "--colour-by", help="What colours the points: mos (binned scores) or an item attribute (e.g. distortion). "
                            "Default: distortion where the dataset has it, else mos.")] = None,
    color_by: Annotated[Optional[str], typer.Option("--color-by", hidden=True)] = None,  # the earlier spelling
    max_points: Annotated[int, typer.Option("--max-points", min=5, help="Seeded random sample of at most this many images.")] = 750,
    perplexity: Annotated[float, typer.Option("--perplexity", min=1.0, help="t-SNE perplexity.")] = 30.0,
    model: ModelOpt = None,
    data_root: DataRootOpt = None,
    device: DeviceOpt = Device.auto,
    batch_size: BatchSizeOpt = None,
    seed: SeedOpt = 0,
    skip_missing: SkipMissingOpt = False,
):
    """2-D t-SNE of the quality features, coloured by an attribute (paper Fig. 3).

    Examples:

    \b
      sliq plot tsne kadid10k --data-root ~/iqa --colour-by distortion \\
          --out tsne.png
      sliq plot tsne clive.csv --out tsne.png
    """
    from sliq_cli.iqa.plots import plot_tsne
    from sliq_cli.iqa.protocol import DatasetRef

    report = plot_tsne(DatasetRef(dataset, data_root=data_root, skip_missing=skip_missing), out, model=model,
                       color_by=colour_by or color_by, max_points=max_points, seed=seed, perplexity=perplexity, device=device.value,
                       batch_size=batch_size, progress=progress_bar)
    out_console().print(f"{report.path}  ({report.n_points} points)")
