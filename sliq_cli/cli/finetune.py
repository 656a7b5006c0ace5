"""`sliq finetune`: train the encoder on a team's own rated images; or, with --protocol, compare that with the
frozen-feature ridge head on the paper's splits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sliq_cli.cli.iqa import ImagesOpt, _print_table, _protocol_table, _write_json
from sliq_cli.cli.options import Device, DeviceOpt, JsonOpt, ModelOpt, SeedOpt
from sliq_cli.cli.render import err_console, out_console, progress_bars


def finetune(
    mos: Annotated[Path, typer.Option("--mos", help="CSV with columns image,mos (+ optional ref, split, mos_std), "
                                      "as `sliq fit-head` reads it.")],
    images: ImagesOpt = None,
    dmos: Annotated[bool, typer.Option("--dmos", help="The CSV's scores are DMOS (lower is better).")] = False,
    model: ModelOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Model folder to write (default: "
                                                "DATASET-finetuned). Built beside it, renamed when complete.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Most epochs (early stopping may end "
                                                  "sooner). Default: 20 on CUDA, 3 on a CPU.")] = None,
    device: DeviceOpt = Device.auto,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", min=2, help="Training crops per step. "
                                                      "Default: 32 on CUDA, 8 on a CPU.")] = None,
    crop_size: Annotated[Optional[int], typer.Option("--crop-size", min=32, help="Side of the training crops, at "
                                                     "native scale (default 384).")] = None,
    crops_per_image: Annotated[Optional[int], typer.Option("--crops-per-image", min=1, help="Random crops of "
                                                           "each training image an epoch (default 1).")] = None,
    lr_trunk: Annotated[Optional[float], typer.Option("--lr-trunk", min=0.0, help="AdamW learning rate of the "
                                                      "trunk (default 3e-5).")] = None,
    lr_head: Annotated[Optional[float], typer.Option("--lr-head", min=0.0, help="AdamW learning rate of the head "
                                                     "(default 1e-4).")] = None,
    val_fraction: Annotated[Optional[float], typer.Option("--val-fraction", help="Share of the images held out "
                                                          "for early stopping (default 0.1).")] = None,
    interpolate: Annotated[Optional[float], typer.Option("--interpolate", help="WiSE-FT: final weights = "
                                                         "(1-ALPHA)*start + ALPHA*fine-tuned (default 1).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run of --out.")] = False,
    protocol: Annotated[bool, typer.Option("--protocol", help="Run the paper's splits instead, fine-tuning within "
                                           "each; compare with the frozen ridge head. Writes no model.")] = False,
    splits: Annotated[int, typer.Option("--splits", min=1, help="With --protocol: random 70/10/20 splits.")] = 10,
    seed: SeedOpt = 0,
    json_out: JsonOpt = None,
):
    """Fine-tune the encoder on rated images (regression + ranking loss, early stopping on a validation split) and
    write a model folder that every command takes (`sliq score --model OUT` uses its head by default).

    Examples:

    \b
      sliq finetune --mos ratings.csv --images photos/ -o cam-model
      sliq finetune --mos ratings.csv --images photos/ --protocol --splits 10
    """
    from sliq_cli.errors import UsageError
    from sliq_cli.iqa.datasets import load_csv
    from sliq_cli.train.finetune import FinetuneConfig, finetune as run, finetune_protocol, run_config

    ds = load_csv(mos, images, higher_is_better=not dmos)
    given = {"epochs": epochs, "batch_size": batch_size, "crop_size": crop_size, "crops_per_image": crops_per_image,
             "lr_trunk": lr_trunk, "lr_head": lr_head, "val_fraction": val_fraction, "interpolate": interpolate,
             "model": model}
    overrides = {k: v for k, v in given.items() if v is not None}
    overrides.update(mos=str(mos), images=str(images) if images else None, higher_is_better=not dmos,
                     device=device.value, seed=seed)
    console = err_console()
    if protocol:
        if resume or out is not None:
            raise UsageError("--protocol writes no model: --out and --resume do not apply")
        cfg = FinetuneConfig(**overrides)
        with progress_bars(console, compact=True) as bar:
            report = finetune_protocol(ds, cfg, splits, on_log=_ProgressView(console, bar).update)
        how = "official split" if report.official else f"{len(report.frozen.splits)} random 70/10/20 splits, seed {seed}"
        _print_table(f"{report.dataset} · {report.n_images} images · {how} · test mean ± std",
                     _protocol_table({"frozen ridge": report.frozen.summary, "fine-tuned": report.finetuned.summary}))
        _write_json(json_out, report.to_dict())
        return
    overrides["out"] = str(out or Path(f"{ds.name}-finetuned"))
    cfg = run_config(overrides, resume)
    with progress_bars(console, compact=True) as bar:
        report = run(ds, cfg, resume=resume, on_log=_ProgressView(console, bar).update)
    print_ = out_console().print
    print_(f"{report.out}: fine-tuned on {report.n_train} images of {report.dataset}, validated on {report.n_val}")
    print_(f"  validation SROCC: start {report.start_srocc:.3f} -> best epoch {report.best_epoch} "
           f"{report.best_srocc:.3f}; saved model with its ridge head {report.head_val_srocc:.3f}")
    print_(f"  head {report.dataset!r} is the default: sliq score --model {report.out} IMAGES")
    if report.text:
        print_("  text tower carried over from the start, with the start's trunk as an int8 delta: sliq explain "
               "describes as the start does")
    else:
        print_("  the start has no text tower, so `sliq explain` cannot describe this model's images")
    _write_json(json_out, report.to_dict())


class _ProgressView:
    """The compact bar on a terminal; in a pipe, one plain line per epoch and split (a log sees every record)."""

    def __init__(self, console, bar):
        self.console, self.bar = console, bar

    def update(self, record: dict) -> None:
        event, say = record.get("event"), self.console.print
        if event == "split" and "val_fraction" in record:
            grouped = " (whole reference images)" if record["grouped"] else ""
            say(f"validation split: {record['n_val']} of {record['n_train'] + record['n_val']} images{grouped}, "
                f"{record['val_fraction']:.0%} at seed {record['seed']}; the epoch with the best validation SROCC "
                "is kept")
        elif event == "split":
            say(f"split {record['split']}/{record['splits']}: train {record['n_train']}, val {record['n_val']}, "
                f"test {record['n_test']}")
        elif event == "split-done":
            say(f"split {record['split']}: test SROCC frozen {record['frozen_srocc']:.3f}, fine-tuned "
                f"{record['finetuned_srocc']:.3f} (epoch {record['best_epoch']})")
        elif event == "resumed":
            say(f"resumed after epoch {record['epoch']}")
        elif event == "training":
            self.total = record["epochs"] * record["steps_per_epoch"]
            self.steps = record["steps_per_epoch"]
            say(f"training on {record['n_train']} images, up to {record['epochs']} epochs of {self.steps} steps; "
                f"validation SROCC of the start {record['start_srocc']:.3f}")
            self.bar("finetune", record["epoch"] * self.steps, self.total, stats="")
        elif event == "step":
            self.bar("finetune", (record["epoch"] - 1) * self.steps + record["step"], self.total)
        elif event is None:
            line = (f"epoch {record['epoch']}: loss {record['loss']:.3f}, validation SROCC {record['val_srocc']:.3f} "
                    f"(best: epoch {record['best_epoch']}), {record['seconds']:.0f} s")
            if self.console.is_terminal:
                self.bar("finetune", record["epoch"] * self.steps, self.total, stats=f"val {record['val_srocc']:.3f}")
            else:
                say(line, highlight=False)
