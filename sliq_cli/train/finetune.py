"""`sliq finetune`: the encoder trained end to end on a team's own rated images, beyond the paper's frozen protocol.

Method. A linear head reads the encoder's quality features (the model's FeatureSpec, so ridge heads stay valid for
the result) and predicts z-scored MOS. It starts as a ridge fit on the frozen start's features of the training
images (no cold head), then trunk and head train together with AdamW (a small learning rate for the trunk, a larger
one for the head); loss = MSE + a logistic ranking loss on every ordered pair of the batch. BatchNorm layers stay in
eval mode (their statistics frozen: batches of a few images would give noisy ones). Inputs are random crops at
native scale plus horizontal flips, the augmentations that leave quality as rated; nothing rescales, recolours or
re-encodes. After each epoch the validation images go whole through the scoring feature extraction, and the epoch
with the best SROCC of the linear head is kept (early stopping). The model's ridge head is then fitted on the
fine-tuned encoder's features of the training images, as the protocol fits one: its alpha chosen on the validation
images. (Cross-validation within the training images, as `sliq fit-head` chooses alpha, is fooled here: the trunk has
learnt those very images, so every fold looks easy and it picks too weak a penalty; bench/RESULTS.md, fine-tuning.)

The run is built in a hidden folder beside OUT (`.OUT.partial/`), which holds its training state after each
epoch (`state/epoch-N/`, then `state/latest.json` pointing at it), so `--resume` continues an interrupted run; the
finished model folder is renamed to OUT, so OUT is either complete or absent:

    OUT/config.json, model.safetensors    the fine-tuned encoder (sliq_cli.model.checkpoint), default head NAME
    OUT/heads/NAME.safetensors            the ridge head, NAME = the dataset's name
    OUT/text/                             the start's text tower, when it has one
    OUT/finetune.json                     FinetuneConfig, the split, the outcome
    OUT/log.jsonl                         one record per epoch (the state's history, written at the end)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sliq_cli.atomic import atomic_save_safetensors, atomic_write_json, atomic_write_text
from sliq_cli.errors import InputError, SliqError, UsageError
from sliq_cli.iqa.datasets import Dataset
from sliq_cli.model.config import strict_from_dict

MIN_IMAGES = 50  # below this, a validation split of a few images cannot tell good epochs from bad ones
CONFIG_FILE = "finetune.json"
LOG_FILE = "log.jsonl"
STATE_DIR = "state"

OnLog = Callable[[dict], None]


@dataclass
class FinetuneConfig:
    mos: str = ""  # the scores file, read as `sliq fit-head --mos` reads it
    images: str | None = None  # the folder its image names are relative to (default: the file's folder)
    higher_is_better: bool = True  # False with --dmos
    model: str | None = None  # the start (a --model spec; None: the embedded default)
    out: str = ""
    epochs: int | None = None  # None: 20 on CUDA, 3 on a CPU (with early stopping, the most it runs)
    batch_size: int | None = None  # None: 32 on CUDA, 8 on a CPU
    crop_size: int = 384  # side of the random crops at native scale (smaller images: their whole shorter side)
    # An epoch draws this many random crops of every training image (more steps between two validations). 8 made
    # no difference on clive-dev's protocol at 4x the time (bench/RESULTS.md, fine-tuning), so one.
    crops_per_image: int = 1
    # AdamW moves every weight by about lr a step whatever its gradient's size, so the head's prediction moves by up
    # to lr x feature_dim (thousands) z-units a step: its rate is small too (1e-3 made the first epoch's loss explode).
    lr_trunk: float = 3e-5
    lr_head: float = 1e-4
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0  # global gradient norm
    rank_weight: float = 1.0  # weight of the pairwise ranking loss against the MSE
    patience: int = 5  # epochs without a better validation SROCC before stopping
    val_fraction: float = 0.1
    interpolate: float = 1.0  # WiSE-FT: final = (1 - a) * start + a * fine-tuned
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        if not 0 < self.val_fraction < 0.5:
            raise UsageError(f"--val-fraction must lie in (0, 0.5), not {self.val_fraction}")
        if not 0.0 <= self.interpolate <= 1.0:
            raise UsageError(f"--interpolate must lie in [0, 1], not {self.interpolate}")
        if self.crop_size < 32:
            raise UsageError(f"--crop-size must be at least 32, not {self.crop_size}")
        if self.crops_per_image < 1:
            raise UsageError(f"--crops-per-image must be at least 1, not {self.crops_per_image}")

    def resolved(self, cuda: bool) -> FinetuneConfig:
        """The device's defaults filled in (what the run saves and a resumed run reads back)."""
        return dataclasses.replace(self, epochs=self.epochs or (20 if cuda else 3),
                                   batch_size=self.batch_size or (32 if cuda else 8))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FinetuneConfig:
        return strict_from_dict(cls, data, CONFIG_FILE)


# ---------------------------------------------------------------------------------------------------- the data


@dataclass
class RatedImages:
    """A checked dataset with its images decoded once, in memory."""

    dataset: Dataset
    pixels: list  # (3, H, W) uint8 tensors, in the dataset's order
    z: np.ndarray  # (N,) z-scored scores, higher is better (DMOS negated)
    mean: float  # of the raw scores
    std: float


def check_dataset(ds: Dataset) -> None:
    """What makes fine-tuning meaningless, named before any image is decoded."""
    if len(ds) < MIN_IMAGES:
        raise InputError(ds.source, f"only {len(ds)} rated images; fine-tuning needs at least {MIN_IMAGES} "
                         "(with fewer, fit a ridge head on frozen features: `sliq fit-head`)")
    first: dict[Path, Path] = {}
    for p in ds.paths:  # load_csv refuses repeated names; this catches two names of one file (a.jpg, ./a.jpg)
        key = p.resolve()
        if key in first:
            raise InputError(ds.source, f"{first[key]} and {p} are the same image file, listed twice")
        first[key] = p
    scores = ds.scores
    if float(scores.std()) < 1e-12:
        raise InputError(ds.source, f"all {len(ds)} scores are {scores[0]:g}: there is no spread to learn from")


def load_rated_images(ds: Dataset, max_pixels: int, workers: int | None = None) -> RatedImages:
    """Decode every image (load_image: EXIF, CMYK, bombs); the first unreadable one is an InputError naming it."""
    from sliq_cli.images import ImageLoadError, load_image, pil_to_tensor

    check_dataset(ds)

    def decode(path):
        try:
            return pil_to_tensor(load_image(path, max_pixels=max_pixels))
        except ImageLoadError as e:
            raise InputError(e.path, e.reason) from None

    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        pixels = list(pool.map(decode, ds.paths))
    scores = ds.scores if ds.higher_is_better else -ds.scores
    mean, std = float(scores.mean()), float(scores.std())
    return RatedImages(ds, pixels, (scores - mean) / std, mean, std)


def validation_split(n: int, fraction: float, seed: int, groups: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: a seeded random `fraction` of the items (of the reference images, with groups) for
    validation."""
    keys = np.arange(n) if groups is None else np.unique(np.asarray(groups, dtype=object), return_inverse=True)[1]
    units = int(keys.max()) + 1
    n_val = max(1, round(fraction * units))
    if units - n_val < 2:
        raise SliqError(f"too few {'reference images' if groups else 'items'} ({units}) for a validation split")
    is_val = np.zeros(units, dtype=bool)
    is_val[np.random.default_rng(seed).permutation(units)[:n_val]] = True
    return np.flatnonzero(~is_val[keys]), np.flatnonzero(is_val[keys])


# ---------------------------------------------------------------------------------------------------- the model


class LinearHead(nn.Module):
    """A ridge head's affine map as a trainable layer, in z-scored MOS: ((f - mean) / std) @ w + b. Standardised
    features keep the head's and the trunk's gradients on one scale."""

    def __init__(self, ridge):
        super().__init__()
        self.register_buffer("mean", torch.tensor(ridge.feature_mean, dtype=torch.float32))  # (D,)
        self.register_buffer("std", torch.tensor(ridge.feature_std, dtype=torch.float32))  # (D,)
        self.weight = nn.Parameter(torch.tensor(ridge.weight, dtype=torch.float32))  # (D,)
        self.bias = nn.Parameter(torch.tensor(ridge.bias, dtype=torch.float32))  # ()

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return ((f - self.mean) / self.std) @ self.weight + self.bias  # (B, D) -> (B,)


def ranking_loss(pred: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Logistic loss on every pair of the batch whose scores differ: softplus(-(p_i - p_j)) where z_i > z_j."""
    dp = pred[:, None] - pred[None, :]  # (B, B)
    above = z[:, None] > z[None, :]  # (B, B)
    return F.softplus(-dp[above]).mean() if bool(above.any()) else pred.sum() * 0.0


def features_of(encoder, paths: list[Path], device: str, batch_size: int | None) -> np.ndarray:
    """Whole-image quality features as `sliq score` computes them (sliq_cli.iqa.features: mixed sizes, bf16 autocast
    on CUDA); `encoder` is left as it is (the extractor runs a fused copy). (N, D) float32."""
    from sliq_cli.iqa.features import extract_features

    result = extract_features(encoder, paths, device=device, batch_size=batch_size)
    if result.failed:
        path, reason = next(iter(result.failed.items()))
        raise InputError(path, reason)
    return result.features


def _random_crops(pixels: list, idx: np.ndarray, crop: int, rng: np.random.Generator):
    """Random crops of one size at native scale, each flipped horizontally with probability 1/2.
    The size: `crop`, or the batch's smallest side when an image is smaller. -> (B, 3, c, c) uint8."""
    c = min(crop, *(min(pixels[i].shape[-2:]) for i in idx))
    out = []
    for i in idx:
        img = pixels[i]  # (3, H, W)
        top = int(rng.integers(0, img.shape[1] - c + 1))
        left = int(rng.integers(0, img.shape[2] - c + 1))
        view = img[:, top:top + c, left:left + c]
        out.append(view.flip(-1) if rng.random() < 0.5 else view)
    return torch.stack(out)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine to zero."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


@dataclass
class TrainOutcome:
    encoder: object  # the best epoch's encoder (interpolated towards the start when asked), eval mode
    start_srocc: float  # validation SROCC of the ridge-initialised head on the frozen start
    best_srocc: float
    best_epoch: int  # 0: no epoch beat the start
    epochs_run: int
    history: list[dict]


def train_encoder(start_dir: Path, data: RatedImages, train: np.ndarray, val: np.ndarray, cfg: FinetuneConfig,
                  device: str, state: Path | None = None, on_log: OnLog | None = None) -> TrainOutcome:
    """Fine-tune the encoder at `start_dir` on the images `train`, selecting the epoch by SROCC on `val`.
    state: a folder to save the training state to after each epoch, and to continue from when it holds one."""
    from sliq_cli.iqa.head import RidgeHead
    from sliq_cli.iqa.metrics import srocc
    from sliq_cli.iqa.protocol import select_alpha
    from sliq_cli.model.checkpoint import load_encoder, load_state_dict
    from sliq_cli.model.interpolate import interpolate_states

    emit = on_log or (lambda record: None)
    cuda = device.startswith("cuda")
    paths = data.dataset.paths
    encoder = load_encoder(start_dir, device)  # eval mode: BatchNorm statistics stay frozen throughout
    if cuda and encoder.trunk.channels_last:
        encoder.to(memory_format=torch.channels_last)

    # The head starts as ridge on the frozen start's features (alpha chosen on the validation images).
    X_train = features_of(encoder, [paths[i] for i in train], device, cfg.batch_size)  # (n, D)
    X_val = features_of(encoder, [paths[i] for i in val], device, cfg.batch_size)  # (m, D)
    z_train, z_val = data.z[train], data.z[val]
    ridge = RidgeHead.fit(X_train, z_train, select_alpha(X_train, z_train, X_val, z_val))
    head = LinearHead(ridge).to(device)
    start_srocc = srocc(ridge.predict(X_val), z_val)

    for p in encoder.projector.parameters():  # quality features never reach the projector; explain keeps its space
        p.requires_grad_(False)
    params = [*encoder.trunk.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW([
        {"params": list(encoder.trunk.parameters()), "lr": cfg.lr_trunk, "base_lr": cfg.lr_trunk},
        {"params": list(head.parameters()), "lr": cfg.lr_head, "base_lr": cfg.lr_head},
    ], weight_decay=cfg.weight_decay)
    crops = len(train) * cfg.crops_per_image
    steps_per_epoch = max(1, crops // cfg.batch_size)  # the last partial batch is dropped: no 1-image batch
    total, warmup = cfg.epochs * steps_per_epoch, max(1, round(cfg.warmup_epochs * steps_per_epoch))

    best = {"srocc": start_srocc, "epoch": 0, "encoder": _cpu(encoder.state_dict()), "head": _cpu(head.state_dict())}
    history, epoch = [], 0
    if state is not None and (state / "latest.json").is_file():
        epoch, history, best = _load_state(state, encoder, head, optimizer)
        emit({"event": "resumed", "epoch": epoch})
    emit({"event": "training", "start_srocc": start_srocc, "epoch": epoch, "epochs": cfg.epochs,
          "steps_per_epoch": steps_per_epoch, "n_train": len(train), "n_val": len(val)})
    z_all = torch.tensor(data.z, dtype=torch.float32)
    while epoch < cfg.epochs and epoch - best["epoch"] < cfg.patience:
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch])  # each epoch's draws from its number: resumable exactly
        order = np.concatenate([rng.permutation(train) for _ in range(cfg.crops_per_image)])  # (crops,)
        losses = []
        for b in range(steps_per_epoch):
            step = epoch * steps_per_epoch + b
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * _lr_factor(step, warmup, total)
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            x = _random_crops(data.pixels, idx, cfg.crop_size, rng).to(device, non_blocking=True)  # (B, 3, c, c)
            x = x.float().div_(255.0)
            if cuda and encoder.trunk.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            z = z_all[idx].to(device)  # (B,)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                f = encoder.quality_features_grad(x)  # (B, D) float32
            pred = head(f)  # (B,)
            loss = F.mse_loss(pred, z) + cfg.rank_weight * ranking_loss(pred, z)
            if not torch.isfinite(loss):
                raise SliqError(f"the loss became {loss.item()} at epoch {epoch + 1}, step {b + 1}; try a lower "
                                "learning rate")
            loss.backward()
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)  # one bad batch of a few images must not wreck the trunk
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)  # before the validation copies the encoder: no gradients to copy
            losses.append(loss.item())
            emit({"event": "step", "epoch": epoch + 1, "step": b + 1, "steps": steps_per_epoch})
        epoch += 1
        with torch.no_grad():
            F_val = features_of(encoder, [paths[i] for i in val], device, cfg.batch_size)  # (m, D)
            val_pred = head(torch.from_numpy(F_val).to(device)).float().cpu().numpy()  # (m,)
        val_srocc = srocc(val_pred, z_val)
        if val_srocc > best["srocc"]:
            best = {"srocc": val_srocc, "epoch": epoch, "encoder": _cpu(encoder.state_dict()),
                    "head": _cpu(head.state_dict())}
        record = {"epoch": epoch, "loss": float(np.mean(losses)), "val_srocc": val_srocc, "best_epoch": best["epoch"],
                  "lr_trunk": optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - t0, 2)}
        history.append(record)
        if state is not None:
            _save_state(state, epoch, history, encoder, head, optimizer, best)
        emit(record)

    encoder.load_state_dict(best["encoder"])
    if cfg.interpolate < 1.0:
        start = load_state_dict(start_dir)
        encoder.load_state_dict(interpolate_states(start, best["encoder"], cfg.interpolate))
    encoder.to(memory_format=torch.contiguous_format)
    return TrainOutcome(encoder.eval(), start_srocc, best["srocc"], best["epoch"], epoch, history)


def _cpu(tensors: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def _save_state(state: Path, epoch: int, history: list, encoder, head, optimizer, best: dict) -> None:
    """state/epoch-N/ written completely, then latest.json pointed at it, then older epochs removed. AdamW's moments
    go to safetensors by parameter name (no pickle)."""
    name = f"epoch-{epoch:04d}"
    folder = state / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    names = {id(p): f"encoder.{n}" for n, p in encoder.named_parameters()}
    names.update({id(p): f"head.{n}" for n, p in head.named_parameters()})
    moments = {}
    for p, s in optimizer.state.items():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            moments[f"{names[id(p)]}:{key}"] = s[key].reshape(-1) if key == "step" else s[key]
    atomic_save_safetensors(folder / "current.safetensors", _prefixed(encoder, head))
    atomic_save_safetensors(folder / "best.safetensors", {**{f"encoder.{k}": v for k, v in best["encoder"].items()},
                                                           **{f"head.{k}": v for k, v in best["head"].items()}})
    atomic_save_safetensors(folder / "optimizer.safetensors", _cpu(moments))
    atomic_write_json(folder / "state.json", {"epoch": epoch, "best_epoch": best["epoch"], "best_srocc": best["srocc"],
                                              "history": history})
    atomic_write_json(state / "latest.json", {"epoch": epoch, "dir": name})
    for old in state.glob("epoch-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def _prefixed(encoder, head) -> dict:
    return _cpu({**{f"encoder.{k}": v for k, v in encoder.state_dict().items()},
                 **{f"head.{k}": v for k, v in head.state_dict().items()}})


def _split_prefixed(tensors: dict) -> tuple[dict, dict]:
    enc = {k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")}
    head = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
    return enc, head


def _load_state(state: Path, encoder, head, optimizer) -> tuple[int, list, dict]:
    from safetensors.torch import load_file

    latest = state / "latest.json"
    device = next(encoder.parameters()).device
    try:
        folder = state / json.loads(latest.read_text())["dir"]
        meta = json.loads((folder / "state.json").read_text())
        enc, hd = _split_prefixed(load_file(str(folder / "current.safetensors"), device=str(device)))
        encoder.load_state_dict(enc)
        head.load_state_dict(hd)
        best_enc, best_head = _split_prefixed(load_file(str(folder / "best.safetensors")))
        moments = load_file(str(folder / "optimizer.safetensors"), device=str(device))
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise SliqError(f"{latest}: cannot restore the saved training state ({e})") from None
    params = {f"encoder.{n}": p for n, p in encoder.named_parameters()}
    params.update({f"head.{n}": p for n, p in head.named_parameters()})
    for name, p in params.items():
        if f"{name}:exp_avg" in moments:
            optimizer.state[p] = {"step": moments[f"{name}:step"].reshape(()).cpu(),
                                  "exp_avg": moments[f"{name}:exp_avg"], "exp_avg_sq": moments[f"{name}:exp_avg_sq"]}
    best = {"srocc": meta["best_srocc"], "epoch": meta["best_epoch"], "encoder": best_enc, "head": best_head}
    return int(meta["epoch"]), meta["history"], best


# ---------------------------------------------------------------------------------------------------- a model run


@dataclass
class FinetuneReport:
    out: Path
    dataset: str  # also the name of the head
    n_train: int
    n_val: int
    start_srocc: float  # validation SROCC, frozen start (ridge-initialised linear head)
    best_srocc: float  # validation SROCC, best epoch (linear head)
    head_val_srocc: float  # validation SROCC of the saved ridge head on the saved encoder
    best_epoch: int
    epochs_run: int
    text: bool  # the start's text tower was carried over
    seconds: float

    def to_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


def build_dir(out: Path) -> Path:
    """Where a run on `out` is built, beside it (the same file system: the final rename is atomic)."""
    return out.parent / f".{out.name}.partial"


RESUME_MAY_CHANGE = ("mos", "images", "out", "epochs", "device")  # what a resumed run may take from the command line


def run_config(overrides: dict, resume: bool) -> FinetuneConfig:
    """A fresh run: the defaults with what the user typed. A resumed run: its saved config, where the user may
    change only RESUME_MAY_CHANGE (the dataset's spelling, a longer run, another device)."""
    if Path(overrides["out"]).exists():
        raise UsageError(f"{overrides['out']}: exists already (a finished run leaves nothing to resume); give another "
                         "--out, or remove it")
    if not resume:
        return FinetuneConfig(**overrides)
    path = build_dir(Path(overrides["out"])) / CONFIG_FILE
    try:
        saved = json.loads(path.read_text())["config"]
    except (OSError, KeyError, ValueError):
        raise UsageError(f"--resume: no interrupted run of {overrides['out']} to continue (no {path})") from None
    changed = [f"{k} {saved.get(k)!r} -> {v!r}" for k, v in overrides.items()
               if k not in RESUME_MAY_CHANGE and saved.get(k) != v]
    if changed:
        raise UsageError(f"--resume continues the run as it was configured; it cannot change {', '.join(changed)}")
    try:
        return FinetuneConfig.from_dict({**saved, **overrides})
    except (TypeError, ValueError) as e:
        raise SliqError(f"{path}: {e}") from None


def finetune(ds: Dataset, cfg: FinetuneConfig, resume: bool = False, on_log: OnLog | None = None) -> FinetuneReport:
    """Fine-tune, fit the deployable head, write the model folder cfg.out (see the module docstring)."""
    from sliq_cli.iqa.features import resolve_device
    from sliq_cli.model.checkpoint import read_config
    from sliq_cli.loading import find_model

    t0 = time.perf_counter()
    emit = on_log or (lambda record: None)
    out = Path(cfg.out)
    build = build_dir(out)
    if out.exists():
        raise UsageError(f"{out}: exists already; give another --out, or remove it")
    if resume and not (build / STATE_DIR / "latest.json").is_file():
        raise UsageError(f"--resume: no interrupted run of {out} to continue ({build / STATE_DIR} holds no state)")
    if not resume and build.exists():
        raise UsageError(f"{build} holds an interrupted run of {out}: continue it with --resume, or remove it")
    device = resolve_device(cfg.device)
    cfg = cfg.resolved(device.startswith("cuda"))
    start_dir = find_model(cfg.model)
    start_meta = read_config(start_dir)
    data = load_rated_images(ds, _max_pixels(start_meta))
    train, val = validation_split(len(ds), cfg.val_fraction, cfg.seed, ds.refs)
    emit({"event": "split", "n_train": len(train), "n_val": len(val), "val_fraction": cfg.val_fraction,
          "seed": cfg.seed, "grouped": ds.refs is not None})

    build.mkdir(parents=True, exist_ok=True)
    atomic_write_json(build / CONFIG_FILE, {"config": cfg.to_dict()})
    outcome = train_encoder(start_dir, data, train, val, cfg, device, build / STATE_DIR, emit)

    name = ds.name
    encoder = outcome.encoder
    encoder.config = dataclasses.replace(encoder.config, default_head=name)
    extra = {k: start_meta[k] for k in ("licence",) if k in start_meta}
    extra["finetune"] = {"start": cfg.model or "default", "start_fingerprint": start_meta.get("fingerprint"),
                         "dataset": name, "best_epoch": outcome.best_epoch, "val_srocc": outcome.best_srocc,
                         "interpolate": cfg.interpolate}
    from sliq_cli.model.checkpoint import save_encoder

    save_encoder(encoder, build, extra=extra)
    text = (Path(start_dir) / "text").is_dir()
    if text:  # explain keeps describing with the encoder the start's texts were trained with
        from sliq_cli.model.interpolate import copy_text_tower

        copy_text_tower(start_dir, build)
    head, head_val = _deployable_head(build, data, train, val, name, device, cfg)
    head.save(build / "heads" / f"{name}.safetensors")
    report = FinetuneReport(out, name, len(train), len(val), outcome.start_srocc, outcome.best_srocc, head_val,
                            outcome.best_epoch, outcome.epochs_run, text, round(time.perf_counter() - t0, 1))
    atomic_write_json(build / CONFIG_FILE, {"config": cfg.to_dict(), "split": {"val": [str(p) for p in
                      data.dataset.subset(list(val)).paths]}, "result": report.to_dict(), "history": outcome.history})
    # from the history the state kept, so a resumed run's log holds each epoch once
    atomic_write_text(build / LOG_FILE, "".join(json.dumps(r) + "\n" for r in outcome.history))
    shutil.rmtree(build / STATE_DIR)
    os.replace(build, out)
    return report


def _max_pixels(meta: dict) -> int:
    from sliq_cli.model.config import EncoderConfig

    return EncoderConfig.from_dict(meta["config"]).preprocess.max_pixels


def _deployable_head(model_dir: Path, data: RatedImages, train, val, name: str, device: str, cfg: FinetuneConfig):
    """The ridge head of the written model on the raw MOS scale, fitted on its training images with the alpha that
    predicts its validation images best (as the protocol fits a split's head); and its validation SROCC."""
    from sliq_cli import __version__
    from sliq_cli.iqa.head import RidgeHead
    from sliq_cli.iqa.metrics import correlations
    from sliq_cli.iqa.protocol import select_alpha
    from sliq_cli.model.checkpoint import load_encoder

    encoder = load_encoder(model_dir, device)
    ds = data.dataset
    X = features_of(encoder, ds.paths, device, cfg.batch_size)  # (N, D)
    y = ds.scores
    spec = {**encoder.config.features.to_dict(), "dim": encoder.config.feature_dim}
    meta = {"name": name, "encoder_fingerprint": encoder.fingerprint, "feature_spec": spec,
            "mos_scale": ds.mos_scale(), "dataset": ds.name, "sliq_version": __version__, "finetuned": True}
    head = RidgeHead.fit(X[train], y[train], select_alpha(X[train], y[train], X[val], y[val]), meta)
    on_val = correlations(head.predict(X[val]), y[val])
    head.meta["fit"] = {"alpha_chosen_on": "validation", "n_val": len(val), "val_srocc": on_val["srocc"],
                        "val_plcc": on_val["plcc"]}
    return head, on_val["srocc"]


# ---------------------------------------------------------------------------------------------------- the protocol


@dataclass
class FinetuneProtocolReport:
    dataset: str
    n_images: int
    frozen: object  # ProtocolResult: ridge on the start's frozen features
    finetuned: object  # ProtocolResult: ridge on the encoder fine-tuned within each split
    epochs: list[int]  # best epoch of each split
    official: bool

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "n_images": self.n_images, "frozen": self.frozen.to_dict(),
                "finetuned": {**self.finetuned.to_dict(), "best_epochs": self.epochs}}


def finetune_protocol(ds: Dataset, cfg: FinetuneConfig, n_splits: int = 10, on_log: OnLog | None = None
                      ) -> FinetuneProtocolReport:
    """The paper's splits (seeded 70/10/20, or the dataset's official split), each evaluated twice: ridge on the
    frozen start's features, and ridge on the encoder fine-tuned on that split's 70 % (epoch chosen on its 10 %);
    both report on its 20 %."""
    from sliq_cli.iqa.features import resolve_device
    from sliq_cli.iqa.protocol import ProtocolResult, official_split, random_splits, split_result
    from sliq_cli.model.checkpoint import load_encoder, read_config
    from sliq_cli.loading import find_model

    emit = on_log or (lambda record: None)
    device = resolve_device(cfg.device)
    cfg = cfg.resolved(device.startswith("cuda"))
    start_dir = find_model(cfg.model)
    data = load_rated_images(ds, _max_pixels(read_config(start_dir)))
    official = ds.official_split
    splits = [official_split(official)] if official else random_splits(len(ds), n_splits, cfg.seed, ds.refs)
    y = ds.scores
    X_frozen = features_of(load_encoder(start_dir, device), ds.paths, device, cfg.batch_size)  # (N, D)
    frozen, tuned, epochs = [], [], []
    for k, sp in enumerate(splits):
        emit({"event": "split", "split": k + 1, "splits": len(splits), "n_train": len(sp.train), "n_val": len(sp.val),
              "n_test": len(sp.test)})
        frozen.append(split_result(X_frozen, y, sp))
        outcome = train_encoder(start_dir, data, sp.train, sp.val, cfg, device, on_log=on_log)
        X = features_of(outcome.encoder, ds.paths, device, cfg.batch_size)  # (N, D)
        tuned.append(split_result(X, y, sp))
        epochs.append(outcome.best_epoch)
        emit({"event": "split-done", "split": k + 1, "frozen_srocc": frozen[-1].metrics["srocc"],
              "finetuned_srocc": tuned[-1].metrics["srocc"], "best_epoch": outcome.best_epoch})
    return FinetuneProtocolReport(ds.name, len(ds), ProtocolResult(frozen, bool(official)),
                                  ProtocolResult(tuned, bool(official)), epochs, bool(official))
