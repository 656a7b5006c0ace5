"""What a pretraining run saves of its weights, and how it continues from them.

    RUN/state/latest.json  {"step": s, "dir": "step-000000s"}; RUN/state/step-*/ = image.safetensors, text.safetensors,
                           momentum.safetensors, state.json (and rank_probe.safetensors with --rank-weight). A new
                           state is written completely before latest.json points at it, so a kill at any moment
                           leaves a loadable state.
    RUN/export/            scoring checkpoint (sliq_cli.model.checkpoint) + text/ (text tower + tokenizer), in
                           --export-dtype; its config.json records the step and the run's config
    RUN/export-shards/     with --export-shard-mb: the same image encoder in shards of at most that size
    RUN/export-ema/        with --ema-decay: the EMA of the image encoder's weights (train/ema.py), a scoring
                           checkpoint like export/ (no text tower: the texts were learned against the live weights)

A state holds the weights, the SGD momentum and the EMA weights (with --ema-decay), nothing else: the loop seeds every random draw from the step.

Across machines: a run folder holding only config.json, tokenizer.json and export/ (what travels back from a
GPU lease) resumes with --resume from the export's weights and step; the SGD momentum (and a --rank-weight run's
ranking probe, which is not exported) did not travel, so they start again from zero (the run says so), and bf16
exports resume from their bf16-rounded weights.

`net` below is the loop's SliqueNet: the image encoder `.image` and the text tower `.text` (None without one).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from sliq_cli.atomic import atomic_save_safetensors, atomic_write_json
from sliq_cli.errors import SliqError
from sliq_cli.train.config import PretrainConfig

# ------------------------------------------------------------------------------------------------ RUN/state


def has_state(run: Path) -> bool:
    """Whether the run has saved a training state (latest.json is written last, so it points at a complete one)."""
    return (run / "state" / "latest.json").exists()


def save_state(run: Path, net: nn.Module, optimizer: torch.optim.Optimizer, step: int, cfg: PretrainConfig,
               ema=None) -> None:
    """Write state/step-N/ completely, then point state/latest.json at it, then remove older states."""
    state_dir = run / "state"
    name = f"step-{step:09d}"
    folder = state_dir / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    names = {id(p): n for n, p in net.named_parameters()}
    momentum = {names[id(p)]: s["momentum_buffer"] for p, s in optimizer.state.items() if s.get("momentum_buffer") is not None}
    atomic_save_safetensors(folder / "image.safetensors", _cpu(net.image.state_dict()))
    if net.text is not None:
        atomic_save_safetensors(folder / "text.safetensors", _cpu(net.text.state_dict()))
    if net.rank_probe is not None:
        atomic_save_safetensors(folder / "rank_probe.safetensors", _cpu(net.rank_probe.state_dict()))
    atomic_save_safetensors(folder / "momentum.safetensors", _cpu(momentum))
    if ema is not None:
        atomic_save_safetensors(folder / "ema.safetensors", _cpu(ema.state))
    atomic_write_json(folder / "state.json", {"step": step, "config": cfg.to_dict(),
                                              "ema_updates": ema.updates if ema is not None else None})
    atomic_write_json(state_dir / "latest.json", {"step": step, "dir": name})
    for old in state_dir.glob("step-*"):
        if old.name != name:
            try:
                shutil.rmtree(old)
            except OSError as e:  # the new state is saved: a leftover old one costs disk space, not the run
                warnings.warn(f"could not remove the old training state {old}: {e}", RuntimeWarning, stacklevel=2)


def _cpu(tensors: dict) -> dict:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def load_state(run: Path, net: nn.Module, optimizer: torch.optim.Optimizer, ema=None) -> int:
    """Restore weights, momentum and EMA weights from state/latest.json; returns the step to continue from."""
    from safetensors.torch import load_file

    latest = run / "state" / "latest.json"
    try:
        pointer = json.loads(latest.read_text())
        folder = run / "state" / pointer["dir"]
        device = next(net.parameters()).device
        net.image.load_state_dict(load_file(str(folder / "image.safetensors"), device=str(device)))
        if net.text is not None:
            net.text.load_state_dict(load_file(str(folder / "text.safetensors"), device=str(device)))
        if net.rank_probe is not None:
            net.rank_probe.load_state_dict(load_file(str(folder / "rank_probe.safetensors"), device=str(device)))
        momentum = load_file(str(folder / "momentum.safetensors"), device=str(device))
        if ema is not None:
            saved = json.loads((folder / "state.json").read_text())
            ema.load(load_file(str(folder / "ema.safetensors"), device=str(device)), int(saved["ema_updates"]))
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as e:
        raise SliqError(f"{latest}: cannot restore the saved state ({e})") from None
    for name, p in net.named_parameters():
        if name in momentum:
            optimizer.state[p]["momentum_buffer"] = momentum[name].to(p.dtype)
    return int(pointer["step"])


# ------------------------------------------------------------------------------------------------ RUN/export


def export(run: Path, net: nn.Module, tokenizer, cfg: PretrainConfig, step: int, thresholds: dict) -> None:
    """RUN/export/: the scoring checkpoint (image encoder) + text/ (text tower, tokenizer, and the database's
    appearance bin edges, which `sliq explain` needs to word brightness etc. as the texts did); optionally shards."""
    from sliq_cli.model.checkpoint import save_encoder
    from sliq_cli.model.text import save_text_tower

    image = _plain_encoder(net.image)
    extra = _export_extra(cfg, step)
    save_encoder(image, run / "export", extra=extra, dtype=cfg.export_dtype)
    if net.text is not None:
        save_text_tower(net.text, tokenizer, run / "export" / "text", dtype=cfg.export_dtype)
        atomic_write_json(run / "export" / "text" / "appearance.json", {
            "format": "sliq-appearance", "format_version": 1, "thresholds": thresholds})
    if cfg.export_shard_mb:
        save_encoder(image, run / "export-shards", extra=extra, dtype=cfg.export_dtype, max_shard_mb=cfg.export_shard_mb)


def export_ema(run: Path, image: nn.Module, ema, cfg: PretrainConfig, step: int) -> None:
    """RUN/export-ema/: a scoring checkpoint of the EMA weights (`image` gives the encoder's config)."""
    from sliq_cli.model.checkpoint import save_encoder
    from sliq_cli.model.encoder import ImageEncoder

    averaged = ImageEncoder(image.config)
    averaged.load_state_dict(ema.state)
    extra = _export_extra(cfg, step)
    extra["pretrain"]["ema"] = {"decay": cfg.ema_decay, "updates": ema.updates}
    save_encoder(averaged, run / "export-ema", extra=extra, dtype=cfg.export_dtype)


def _export_extra(cfg: PretrainConfig, step: int) -> dict:
    """What an export's config.json records of the run. Its folders by name only (they are this machine's paths)."""
    travelling = {**cfg.to_dict(), "db": Path(cfg.db).name, "out": Path(cfg.out).name}
    extra = {"pretrain": {"step": step, "samples": step * cfg.batch_size, "config": travelling}}
    if cfg.init == "imagenet":
        from sliq_cli.model.imagenet import LICENCE

        extra["licence"] = LICENCE
    return extra


def _plain_encoder(image: nn.Module) -> nn.Module:
    """The image encoder with SyncBatchNorm turned back into BatchNorm, so its checkpoint loads anywhere."""
    if not any(isinstance(m, nn.SyncBatchNorm) for m in image.modules()):
        return image
    from sliq_cli.model.encoder import ImageEncoder

    plain = ImageEncoder(image.config)
    plain.load_state_dict(image.state_dict())
    return plain


def export_step(run: Path) -> int | None:
    """The step RUN/export was written at, or None where there is no complete export."""
    try:
        return int(json.loads((run / "export" / "config.json").read_text())["pretrain"]["step"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def load_export(run: Path, net: nn.Module) -> int:
    """Weights from RUN/export (image encoder, text tower) for a run whose state did not travel; returns its step.
    The optimiser keeps a fresh (zero) momentum."""
    from safetensors.torch import load_file

    from sliq_cli.model.checkpoint import load_state_dict

    export_dir = run / "export"
    device = next(net.parameters()).device
    try:
        net.image.load_state_dict({k: v.float() for k, v in load_state_dict(export_dir).items()})
        if net.text is not None:
            text = load_file(str(export_dir / "text" / "model.safetensors"))
            net.text.load_state_dict({k: v.float() for k, v in text.items()})
    except (OSError, RuntimeError) as e:
        raise SliqError(f"{export_dir}: cannot resume from this export ({e})") from None
    net.to(device)
    return export_step(run)
