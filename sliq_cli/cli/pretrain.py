"""`sliq pretrain`: SLIQUE joint contrastive pretraining on a TADAC database (paper III-A, IV-A)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer

from sliq_cli.cli.options import Device
from sliq_cli.cli.render import err_console, progress_bars
from sliq_cli.errors import Interrupted


def pretrain(
    db: Annotated[Path, typer.Option("--db", help="TADAC database folder (`sliq tadac build`).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: config, log, state, export.")],
    gpus: Annotated[Optional[int], typer.Option("--gpus", min=1, help="Processes (GPUs) on this machine, DDP.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=2, help="Global batch (default 256, halved until a step fits the device's memory).")] = None,
    epochs: Annotated[Optional[float], typer.Option("--epochs", help="Training length in epochs (default 30).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Training length in steps (overrides --epochs).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", min=0.0, help="Learning rate at batch 1024, scaled linearly with --batch-size (paper: 0.006).")] = None,
    alpha: Annotated[Optional[float], typer.Option("--alpha", help="Weight of the image-image loss (default 0.7).")] = None,
    no_image_text: Annotated[bool, typer.Option("--no-image-text", help="Ablation: image-image branch only.")] = False,
    no_image_image: Annotated[bool, typer.Option("--no-image-image", help="Ablation: image-text branch only.")] = False,
    texts: Annotated[Optional[str], typer.Option("--texts", help="Text components: content,distortion,appearance.")] = None,
    data_fraction: Annotated[Optional[float], typer.Option("--data-fraction", help="Use this fraction of the records.")] = None,
    init: Annotated[Optional[str], typer.Option("--init", help="Image encoder start: scratch (the paper), imagenet (EfficientNet-Lite, needs the [imagenet] extra), or a checkpoint folder.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Encoder architecture: slique-resnet50 (default), slique-efficientnet-lite0/1/2.")] = None,
    trunk_lr_scale: Annotated[Optional[float], typer.Option("--trunk-lr-scale", min=0.0, help="The trunk's learning rate as a multiple of the rest's (default 1).")] = None,
    grad_clip: Annotated[Optional[float], typer.Option("--grad-clip", help="Clip the global gradient norm (default: none, the paper).")] = None,
    authentic_fraction: Annotated[Optional[float], typer.Option("--authentic-fraction", help="Authentic share of each batch (default: the database's share).")] = None,
    appearance_on_pristine: Annotated[bool, typer.Option("--appearance-on-pristine", help="Appearance texts on undistorted pristine images too (paper: authentic only).")] = False,
    colour_views: Annotated[Optional[str], typer.Option("--colour-views", help="CONTRIQUE colour spaces on 'all' views (default) or 'image-image' views only.")] = None,
    half_scale_prob: Annotated[Optional[float], typer.Option("--half-scale-prob", help="Share of image-image pairs with a half-scale second view (default 0.5).")] = None,
    benign_prob: Annotated[Optional[float], typer.Option("--benign-prob", help="Share of image-image pairs whose second view is a benign re-encoding, JPEG q85-95 (default 0: the paper).")] = None,
    ema_decay: Annotated[Optional[float], typer.Option("--ema-decay", help="Also export an EMA of the encoder's weights to RUN/export-ema, e.g. 0.999 (default 0: none).")] = None,
    rank_weight: Annotated[Optional[float], typer.Option("--rank-weight", help="Weight of a RankIQA margin ranking loss on distortion ladders, beside the paper's two (default 0: none).")] = None,
    rank_ladders: Annotated[Optional[int], typer.Option("--rank-ladders", help="Ladders (one photo, one distortion, its 5 levels) a step, over all processes (default 16).")] = None,
    rank_margin: Annotated[Optional[float], typer.Option("--rank-margin", help="Margin between the probe's scores of two levels (default 1).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out (may change --steps/--epochs).")] = False,
    checkpoint_every: Annotated[Optional[int], typer.Option("--checkpoint-every", min=0, help="Save state every K steps.")] = None,
    export_every: Annotated[Optional[int], typer.Option("--export-every", min=0, help="Export a scoring checkpoint every K steps.")] = None,
    export_shard_mb: Annotated[Optional[float], typer.Option("--export-shard-mb", help="Also export in shards of at most this size (RUN/export-shards).")] = None,
    export_dtype: Annotated[Optional[str], typer.Option("--export-dtype", help="Storage dtype of the export (and its shards): float32, bf16, fp16.")] = None,
    device: Annotated[Optional[Device], typer.Option("--device", help="Where to train (default auto).", case_sensitive=False)] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the encoders.")] = False,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="Processes decoding the images at start.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed (default 0).")] = None,
    log_every: Annotated[Optional[int], typer.Option("--log-every", min=1, help="Log every K steps (default 10).")] = None,
    text_width: Annotated[Optional[int], typer.Option("--text-width", min=8, help="Text tower width (default 512).")] = None,
    text_layers: Annotated[Optional[int], typer.Option("--text-layers", min=1, help="Text tower depth (default 12).")] = None,
    text_heads: Annotated[Optional[int], typer.Option("--text-heads", min=1, help="Text tower heads (default 8).")] = None,
    crop_size: Annotated[Optional[int], typer.Option("--crop-size", min=32, help="Crop size (default 224).")] = None,
    max_resident_gb: Annotated[Optional[float], typer.Option("--max-resident-gb", help="Limit of the on-device image store.")] = None,
):
    """Pretrain the SLIQUE image encoder (and text tower) with the joint contrastive loss.

    Examples:

    \b
      sliq pretrain --db tadac --out runs/slique --steps 1000
      sliq pretrain --db tadac --out runs/slique --resume  # after Ctrl-C
      sliq pretrain --db tadac --out runs/lite0 --init imagenet \\
          --model slique-efficientnet-lite0
    """
    from sliq_cli.train.loop import pretrain as run_pretrain

    given = {
        "gpus": gpus, "batch_size": batch_size, "epochs": epochs, "steps": steps, "base_lr": lr, "alpha": alpha,
        "texts": texts.split(",") if texts else None, "data_fraction": data_fraction,
        "init": init, "model": model, "checkpoint_every": checkpoint_every, "trunk_lr_scale": trunk_lr_scale,
        "grad_clip": grad_clip, "authentic_fraction": authentic_fraction, "colour_views": colour_views,
        "half_scale_prob": half_scale_prob, "benign_prob": benign_prob, "ema_decay": ema_decay,
        "rank_weight": rank_weight, "rank_ladders": rank_ladders, "rank_margin": rank_margin,
        "appearance_on_pristine": True if appearance_on_pristine else None,
        "device": device.value if device else None, "seed": seed, "log_every": log_every,
        "export_every": export_every, "export_shard_mb": export_shard_mb, "export_dtype": export_dtype,
        "workers": workers, "text_width": text_width, "text_layers": text_layers, "text_heads": text_heads,
        "crop_size": crop_size, "max_resident_gb": max_resident_gb,
        "image_text": False if no_image_text else None, "image_image": False if no_image_image else None,
        "compile": True if compile else None,
    }
    # Only what the user typed is passed on: a fresh run takes the defaults for the rest, a resumed run its saved values.
    overrides = {k: v for k, v in given.items() if v is not None}
    overrides.update(db=str(db), out=str(out))
    console = err_console()
    try:
        with progress_bars(console, compact=True) as bar:
            export = run_pretrain(overrides, resume=resume, on_log=_ProgressView(console, bar).update)
    except Interrupted as e:
        command = shlex.join(["sliq", "pretrain", "--db", str(db), "--out", str(out), "--resume"])
        console.print(f"{e}\ncontinue with: {command}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    console.print(f"exported the encoder to {export}")


class _ProgressView:
    """Progress on stderr from the training log records: the compact bar on a terminal (it fits 80 columns), one
    plain line per logged step otherwise (a log file or CI sees every record, not a bar's last frame)."""

    def __init__(self, console, bar):
        self.console, self.bar = console, bar

    def update(self, record: dict) -> None:
        event = record.get("event")
        if event == "decoding":
            self.console.print(f"decoding {record['records']} working images onto the device")
        elif event == "resumed-from-export":
            self.console.print(f"resumed from the export at step {record['step']}; the optimiser's momentum did not "
                               "travel with it and starts from zero")
        elif event == "batch-size":
            self.console.print(f"{record['message']}; training with --batch-size {record['batch_size']} instead of "
                               f"the default {record['default']} (the learning rate scales with it)", soft_wrap=True)
        elif event == "stopping":
            self.console.print("stopping after the step in progress to save its state (Ctrl-C again: stop now, "
                               "without saving)")
        elif event == "step":
            self.bar("pretrain", record["step"], record["total"])
        elif event == "training":
            self.bar("pretrain", record["start"], record["total"], stats="")
        elif event is None:
            stats = f"loss {record['loss']:.3f} (it {record['loss_it']:.2f} ii {record['loss_ii']:.2f}) " \
                    f"{record['samples_per_s']:.0f}/s"
            if not self.console.is_terminal:
                self.console.print(f"step {record['step']}/{record['total']} {stats} lr {record['lr']:.2e}",
                                   highlight=False)
            else:  # with --gpus N the records come from the workers' log, without the "training" event
                self.bar("pretrain", record["step"], record["total"], stats=stats)
