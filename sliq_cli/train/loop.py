"""SLIQUE joint contrastive pretraining (paper III-A, Fig. 2, IV-A), read top to bottom.

    pretrain(overrides, resume)           the library function behind `sliq pretrain`
      -> one process, `--gpus N` spawned processes, or this process as one torchrun rank
      -> train(cfg, info, resume)          per process: data, models, optimiser, the step loop, checkpoints, export

Run folder:
    RUN/config.json        the resolved PretrainConfig
    RUN/tokenizer.json     the BPE learned from the database's texts (before step 0)
    RUN/log.jsonl          one line per logged step: step, samples, loss, loss_it, loss_ii, grad_norm (before clipping),
                           lr, samples_per_s, max_mem_gb (and loss_rank with --rank-weight). A resumed run first drops the records after its state's
                           step (it trains those steps again), so each step appears once.
    RUN/state/, RUN/export/, RUN/export-shards/: the saved weights, see sliq_cli.train.state (a run resumes from its
                           state, or from its export where only that travelled)
No RNG state is saved: every random draw of step s (batch, views, texts, distortions) is seeded by (seed, s, rank),
so a resumed run repeats the uninterrupted one exactly.

Ctrl-C or SIGTERM (one process): the step in progress finishes, its state is saved, and Interrupted is raised
with the step; a second signal stops at once (Interrupted names the last saved state).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from sliq_cli.atomic import atomic_write_json, atomic_write_text
from sliq_cli.errors import Interrupted, SliqError, UsageError
from sliq_cli.train.config import PretrainConfig, Schedule
from sliq_cli.train.distributed import (
    DistInfo,
    destroy_process_group,
    free_port,
    init_process_group,
    torchrun_env,
)
from sliq_cli.train.state import export, export_ema, export_step, has_state, load_export, load_state, save_state

# Options a resumed run may change; everything else must match the run's config.json.
RESUMABLE = {"epochs", "steps", "checkpoint_every", "export_every", "export_dtype", "export_shard_mb", "log_every",
             "device", "compile", "workers", "max_resident_gb"}


class SliqueNet(nn.Module):
    """Image encoder F, text encoder G (None without the image-text branch) and, with --rank-weight, the ranking
    probe: a linear map of the quality features (what the ridge head will read) to a score, for training only. One
    forward for DDP, so every parameter's gradient is synchronised."""

    def __init__(self, image: nn.Module, text: nn.Module | None, rank_probe: nn.Module | None = None):
        super().__init__()
        self.image, self.text, self.rank_probe = image, text, rank_probe

    def forward(self, images: torch.Tensor, tokens: torch.Tensor | None, ladders: torch.Tensor | None = None):
        img = self.image(images)  # (3B, D): saliency crops, views 1, views 2
        txt = self.text(tokens) if tokens is not None else None  # (B, D)
        scores = None
        if ladders is not None:  # (K, L, 3, P, P)
            k, levels = ladders.shape[:2]
            x = ladders.flatten(0, 1).contiguous(memory_format=torch.channels_last)  # (K L, 3, P, P)
            scores = self.rank_probe(self.image.quality_features_grad(x)).view(k, levels)  # (K, L)
        return img, txt, scores


# ------------------------------------------------------------------------------------------------ entry point


def resolve_config(run: Path, overrides: dict, resume: bool) -> PretrainConfig:
    """The run's config: fresh from `overrides`, or on --resume the saved one with the allowed changes."""
    if not resume:
        if has_state(run):
            raise UsageError(f"{run} already holds a run; pass --resume to continue it or choose another --out")
        try:
            return PretrainConfig.from_dict(overrides)
        except ValueError as e:
            raise UsageError(str(e)) from None
    try:
        saved = json.loads((run / "config.json").read_text())
    except FileNotFoundError:
        raise UsageError(f"{run}: nothing to resume (no config.json)") from None
    if not has_state(run) and export_step(run) is None:
        raise UsageError(f"{run}: nothing to resume (no saved state or export yet)")
    changed = sorted(k for k, v in overrides.items() if k not in ("db", "out") and _differs(saved.get(k), v))
    fixed = [k for k in changed if k not in RESUMABLE]
    if fixed:
        raise UsageError(f"--resume cannot change {', '.join(fixed)} (the run has "
                         + ", ".join(f"{k}={saved.get(k)!r}" for k in fixed) + ")")
    saved.update({k: overrides[k] for k in changed})
    saved.update(db=overrides["db"], out=overrides["out"])  # where the run and its database are now (runs travel)
    if "epochs" in changed and "steps" not in overrides:
        saved["steps"] = None  # a new --epochs target replaces an old --steps one
    return PretrainConfig.from_dict(saved)


def _differs(a, b) -> bool:
    return (list(a) if isinstance(a, (list, tuple)) else a) != (list(b) if isinstance(b, (list, tuple)) else b)


def pretrain(overrides: dict, resume: bool = False, on_log: Callable[[dict], None] | None = None) -> Path:
    """Train (or continue) the run in overrides["out"]; returns the export folder.

    overrides: PretrainConfig fields the user set (the others take their defaults, or the saved run's on resume).
    on_log(record) is called with every log.jsonl record (and {"event": ...} lines for set-up stages).
    """
    run = Path(overrides["out"])
    cfg = resolve_config(run, overrides, resume)
    env = torchrun_env()
    cfg = fit_memory(cfg, env, "batch_size" in overrides, resume, on_log if env is None or env.is_main else None)
    if env is not None:
        train(replace(cfg, gpus=env.world_size), env, resume, on_log if env.is_main else None)
    elif cfg.gpus == 1:
        train(cfg, DistInfo(), resume, on_log)
    else:
        _spawn(cfg, resume, on_log)
    return run / "export"


def fit_memory(cfg: PretrainConfig, env: DistInfo | None, chosen: bool, resumed: bool, on_log=None) -> PretrainConfig:
    """Check before training that a step fits the device's memory (sliq_cli.train.memory). A batch the user chose
    (or a resumed run's) that does not fit is refused with the numbers and the flag to change; the default batch is
    halved until it fits (its learning rate scales with it), and on_log hears of it ({"event": "batch-size"})."""
    from sliq_cli.tadac.database import load_database
    from sliq_cli.train import memory
    from sliq_cli.train.data import ImageStore, select_records

    gpus = env.world_size if env is not None else cfg.gpus
    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cuda and not torch.cuda.is_available():
        return cfg  # train() says why
    device = torch.device("cuda", env.local_rank if env is not None else 0) if cuda else torch.device("cpu")
    store = ImageStore.resident_bytes(select_records(load_database(cfg.db).records, cfg.data_fraction, cfg.seed))
    need = memory.need(cfg, cfg.vocab_size, store, device)
    room, where = memory.available(device, trains_here=env is not None or gpus == 1)
    if not room:
        return cfg  # no way to tell on this system

    def total(batch: int) -> int:  # each GPU holds its share of the batch; CPU processes share the RAM
        return need.total(batch // gpus) * (1 if cuda else gpus)

    def fits(batch: int) -> bool:
        return total(batch) <= memory.USABLE_SHARE * room

    if fits(cfg.batch_size):
        return cfg
    best = memory.largest_batch(fits, cfg.batch_size, gpus)
    gb = 2**30
    needs = (f"a batch of {cfg.batch_size} needs about {total(cfg.batch_size) / gb:.1f} GB on {device.type} "
             f"({need.fixed / gb:.1f} GB for the weights, gradients, momentum and image store, then "
             f"{need.per_sample / 2**20:.0f} MB per sample), more than the {room / gb:.1f} GB {where}")
    if resumed or chosen or best is None:
        remedy = (f"--batch-size {best} is the largest that fits" if best else
                  "not even --batch-size 2 fits: choose a smaller --crop-size or --model, or --data-fraction")
        if resumed:  # the batch is part of what a run is
            remedy = f"resume the run on a machine with more memory, or start a new one ({remedy})"
        raise SliqError(f"{needs}; {remedy}")
    if on_log is not None:
        on_log({"event": "batch-size", "batch_size": best, "default": cfg.batch_size, "message": needs})
    return replace(cfg, batch_size=best)


def _spawn(cfg: PretrainConfig, resume: bool, on_log) -> None:
    """`--gpus N`: N processes on this machine; this process follows RUN/log.jsonl to report progress."""
    import torch.multiprocessing as mp

    log = Path(cfg.out) / "log.jsonl"
    seen = _count_lines(log)
    ctx = mp.spawn(_spawned, args=(cfg, resume, free_port()), nprocs=cfg.gpus, join=False)
    while not ctx.join(timeout=1.0):
        seen = _follow(log, seen, on_log)
    _follow(log, seen, on_log)


def _count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _follow(path: Path, seen: int, on_log) -> int:
    """Pass the log's complete lines after the first `seen` to on_log; returns the number of complete lines.

    Rank 0 appends to the log while this reads it: a last line without its "\n" may be half-written, so it is
    left for the next poll.
    """
    if not path.exists():
        return seen
    lines = path.read_bytes().split(b"\n")[:-1]  # (the piece after the last "\n": partial or empty)
    for line in lines[seen:]:
        if on_log is not None and line.strip():
            on_log(json.loads(line))
    return len(lines)


def _spawned(rank: int, cfg: PretrainConfig, resume: bool, port: int) -> None:
    train(cfg, DistInfo(rank, cfg.gpus, rank), resume, None, port)


# ------------------------------------------------------------------------------------------------ one process


def _device(cfg: PretrainConfig, info: DistInfo) -> torch.device:
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise SliqError("--device cuda, but no CUDA device is available")
        if info.local_rank >= torch.cuda.device_count():
            raise SliqError(f"--gpus {info.world_size} needs {info.world_size} GPUs; {torch.cuda.device_count()} visible")
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    if want != "cpu":
        raise UsageError(f"--device must be auto, cpu or cuda, not {want!r}")
    return torch.device("cpu")


def build_models(cfg: PretrainConfig, vocab_size: int) -> SliqueNet:
    """Image encoder (from scratch, ImageNet or a checkpoint, per --init) and text tower of the configured shape."""
    from sliq_cli.model.checkpoint import load_encoder
    from sliq_cli.model.imagenet import load_imagenet_trunk
    from sliq_cli.model.registry import create_model
    from sliq_cli.model.text import TextConfig, TextEncoder

    if cfg.init in ("scratch", "imagenet"):
        image = create_model(cfg.model)
        if cfg.init == "imagenet":
            load_imagenet_trunk(image)
    else:
        image = load_encoder(cfg.init).train()
    text = None
    if cfg.image_text:
        tcfg = TextConfig(vocab_size=vocab_size, context=cfg.context, width=cfg.text_width, layers=cfg.text_layers,
                          heads=cfg.text_heads, embed_dim=image.config.embed_dim)
        text = TextEncoder(tcfg)
    rank_probe = nn.Linear(image.config.feature_dim, 1) if cfg.rank_weight else None
    return SliqueNet(image, text, rank_probe)


def param_groups(net: nn.Module, weight_decay: float, trunk_lr_scale: float = 1.0) -> list[dict]:
    """Weight decay on weight matrices and kernels only (none on norms, biases, the position table); the image
    trunk's groups carry `lr_scale` = trunk_lr_scale, the others 1."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in net.named_parameters():
        decay = p.ndim >= 2 and "positional_embedding" not in name
        groups.setdefault((name.startswith("image.trunk."), decay), []).append(p)
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0,
             "lr_scale": trunk_lr_scale if trunk else 1.0} for (trunk, decay), params in groups.items()]


def _prepare_run(cfg: PretrainConfig, db, resume: bool) -> None:
    """Rank 0, before any process trains: config.json and (fresh runs) the tokenizer learned from the texts."""
    from sliq_cli.model.tokenizer import Tokenizer
    from sliq_cli.tadac.texts import all_texts

    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run / "config.json", cfg.to_dict())
    exported = run / "export" / "text" / "tokenizer.json"
    if cfg.image_text and resume and not (run / "tokenizer.json").exists() and exported.exists():
        shutil.copyfile(exported, run / "tokenizer.json")  # a run that travelled as its export
    if cfg.image_text and not (resume and (run / "tokenizer.json").exists()):
        Tokenizer.train(all_texts(db), cfg.vocab_size).save(run / "tokenizer.json")


def train(cfg: PretrainConfig, info: DistInfo, resume: bool, on_log=None, port: int | None = None) -> None:
    """One process's run: the database and the run folder, the models, the views; then the step loop (batch ->
    joint loss -> SGD step -> log, checkpoint, export); finally the last state and export."""
    from sliq_cli.model.tokenizer import Tokenizer
    from sliq_cli.tadac.database import load_database
    from sliq_cli.train.data import Prefetcher, select_records
    from sliq_cli.train.loss import LadderRankLoss, SliqueLoss

    device = _device(cfg, info)
    init_process_group(info, device.type, port)
    flushed = flushes_denormals()  # restored at the end: the mode is the whole process's
    if device.type == "cpu":  # subnormal floats (small gradients, momentum tails) slow CPU SGD steps several-fold
        torch.set_flush_denormal(True)
    run = Path(cfg.out)
    batches = None
    done = None  # the last step trained, once the loop runs (for an interrupt's message)
    stop = _StopRequest(info, lambda: _emit(on_log, run, info, {"event": "stopping"}, log=False))
    try:
        db = load_database(cfg.db)
        records = select_records(db.records, cfg.data_fraction, cfg.seed)
        if info.is_main:
            _prepare_run(cfg, db, resume)
        _barrier(info)
        tokenizer = Tokenizer.load(run / "tokenizer.json") if cfg.image_text else None

        net, optimizer, ema, start = _models(cfg, info, device, tokenizer, resume, on_log)
        model = net
        if info.world_size > 1:
            model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        forward = torch.compile(model) if cfg.compile else model
        loss_fn = SliqueLoss(cfg.alpha, cfg.temperature, info.rank, info.world_size, cfg.image_text, cfg.image_image)
        rank_fn = LadderRankLoss(cfg.rank_margin) if cfg.rank_weight else None
        make_batch, steps_per_epoch = _batch_maker(cfg, info, device, records, tokenizer, run, on_log)
        schedule = Schedule.from_config(cfg, steps_per_epoch)
        _emit(on_log, run, info, {"event": "training", "start": start, "total": schedule.total_steps,
                                  "steps_per_epoch": steps_per_epoch}, log=False)

        b = cfg.batch_size // info.world_size
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
        log = _StepLog(cfg, info, run, on_log, device, start, schedule.total_steps)
        batches = Prefetcher(make_batch, range(start, schedule.total_steps), device)
        net.train()
        done = last_saved = start
        stop.install()
        for step in range(start, schedule.total_steps):
            lr = schedule.lr(step)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            batch = batches.get(step)
            images = batch.images  # (3b, 3, P, P): saliency crops, views 1, views 2
            if not (cfg.image_text and cfg.image_image):  # an ablation: encode only the crops its branch uses
                images = images[:b] if cfg.image_text else images[b:]
            if cfg.compile and batch.tokens is not None:
                torch._dynamo.maybe_mark_dynamic(batch.tokens, 1)  # text lengths vary: one compilation for all
            with autocast:  # emb (nb, D), txt (b, D), scores (K, L) or None
                emb, txt, scores = forward(images.contiguous(memory_format=torch.channels_last), batch.tokens,
                                           batch.ladders)
            img_t = emb[:b] if cfg.image_text else None
            view1, view2 = (emb[-2 * b : -b], emb[-b:]) if cfg.image_image else (None, None)
            out = loss_fn(img_t, txt, view1, view2, batch.text_ids, batch.text_mask)
            if rank_fn is not None:
                out["loss_rank"] = rank_fn(scores)
                out["loss"] = out["loss"] + cfg.rank_weight * out["loss_rank"]
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            # the global gradient norm, logged so a --grad-clip can be chosen from what a run measured
            grad_norm = nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip or math.inf, foreach=True)
            optimizer.step()
            if ema is not None:
                ema.update()

            done = step + 1
            log.add(step, out, grad_norm)
            log.emit(done, lr, last_saved)
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < schedule.total_steps:
                log.check_finite(last_saved)
                if info.is_main:
                    save_state(run, net, optimizer, done, cfg, ema)
                last_saved = done
            if cfg.export_every and done % cfg.export_every == 0 and info.is_main:
                _export(run, net, ema, tokenizer, cfg, done, db.thresholds)
            if stop.requested and done < schedule.total_steps:
                log.check_finite(last_saved)
                if last_saved != done:
                    save_state(run, net, optimizer, done, cfg, ema)
                    last_saved = done
                raise Interrupted(f"stopped ({stop.requested}) after step {done} of {schedule.total_steps}; "
                                  f"saved the state at step {done} in {run / 'state'}", done, done)
        log.check_finite(last_saved)
        done = max(start, schedule.total_steps)
        if info.is_main:
            if done > start:
                save_state(run, net, optimizer, done, cfg, ema)
            _export(run, net, ema, tokenizer, cfg, done, db.thresholds)
            _emit(on_log, run, info, {"event": "exported", "step": done, "export": str(run / "export")}, log=False)
        _barrier(info)
    except KeyboardInterrupt:  # a second signal, or one before the handler: nothing saved at the interrupt
        if done is None:
            raise  # before training: nothing to save
        raise Interrupted(f"stopped at step {done} of {schedule.total_steps} with nothing saved at the interrupt; "
                          "the last saved state is " + (f"step {last_saved} in {run / 'state'}" if has_state(run)
                                                        else "none"), done, last_saved) from None
    finally:
        stop.restore()
        if batches is not None:  # on an error, the prefetch thread would stay blocked holding device batches
            batches.close()
        destroy_process_group()
        if device.type == "cpu":
            torch.set_flush_denormal(flushed)


def _models(cfg: PretrainConfig, info: DistInfo, device: torch.device, tokenizer, resume: bool, on_log):
    """The encoders on the device, the SGD optimiser, the EMA (with --ema-decay) and the step to start from: 0, or
    where the saved state (or, failing that, the export) of a resumed run left off."""
    from sliq_cli.train.ema import EncoderEma

    run = Path(cfg.out)
    torch.manual_seed(cfg.seed)  # identical initialisation on every rank; DDP also broadcasts rank 0's weights
    net = build_models(cfg, tokenizer.vocab_size if tokenizer else 0).to(device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
        if info.world_size > 1:  # BN statistics over the global batch, as one process would compute them
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    optimizer = torch.optim.SGD(param_groups(net, cfg.weight_decay, cfg.trunk_lr_scale), lr=cfg.peak_lr,
                                momentum=cfg.momentum)
    start = 0
    if resume and has_state(run):
        ema = EncoderEma(net.image, cfg.ema_decay) if cfg.ema_decay else None
        start = load_state(run, net, optimizer, ema)
    else:
        if resume:
            start = load_export(run, net)
            _emit(on_log, run, info, {"event": "resumed-from-export", "step": start}, log=False)
        ema = EncoderEma(net.image, cfg.ema_decay) if cfg.ema_decay else None  # from the weights it starts at
    if resume and info.is_main:
        _trim_log(run / "log.jsonl", start)
    return net, optimizer, ema, start


def _batch_maker(cfg: PretrainConfig, info: DistInfo, device: torch.device, records: list, tokenizer, run: Path,
                 on_log) -> tuple[Callable, int]:
    """The training images resident on the device, and make_batch(step): this rank's views and texts of the step's
    batch, every random draw seeded by (seed, step, rank). Also the steps per epoch."""
    from sliq_cli.train.data import ImageStore, LadderMaker, Sampler, TextPicker, ViewMaker

    _emit(on_log, run, info, {"event": "decoding", "records": len(records)}, log=False)
    workers = max(1, (cfg.workers or os.cpu_count() or 1) // info.world_size)
    store = ImageStore.build(records, device, workers, cfg.max_resident_gb)
    sampler = Sampler(records, cfg.batch_size, cfg.authentic_fraction, cfg.group_size, cfg.seed)
    texts = TextPicker(tokenizer, cfg.texts, cfg.context, cfg.appearance_on_pristine) if cfg.image_text else None
    views = ViewMaker(store, records, cfg.crop_size, texts, device, cfg.colour_views, cfg.half_scale_prob,
                      cfg.benign_prob)

    ladders = LadderMaker(store, records, cfg.crop_size, cfg.group_size, device) if cfg.rank_weight else None
    n_ladders = (cfg.rank_ladders * (info.rank + 1) // info.world_size) - (cfg.rank_ladders * info.rank // info.world_size)

    def make_batch(step: int):
        rng = np.random.default_rng([cfg.seed, step, info.rank])
        batch = views(*sampler.local_batch(step, info.rank, info.world_size), rng)
        if ladders is not None:  # their own stream: the batch is the one a run without ladders draws
            batch.ladders = ladders(n_ladders, np.random.default_rng([cfg.seed, step, info.rank, 1]))
        return batch

    return make_batch, sampler.steps_per_epoch


class _StepLog:
    """What RUN/log.jsonl records every --log-every steps. The loss terms and the gradient norm are summed on the
    device between records, and the first step with a non-finite loss is kept there too, so a step waits for the
    GPU only when a record is written; every other step sends the progress bar a step event."""

    def __init__(self, cfg: PretrainConfig, info: DistInfo, run: Path, on_log, device: torch.device, start: int,
                 total: int):
        self.cfg, self.info, self.run, self.on_log, self.device, self.total = cfg, info, run, on_log, device, total
        # loss, loss_it, loss_ii, gradient norm, loss_rank (NaN without --rank-weight) since the last record
        self.sums = torch.zeros(5, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.t_last, self.n_last = time.perf_counter(), start

    def add(self, step: int, out: dict, grad_norm: torch.Tensor) -> None:
        loss = out["loss"].detach()
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(loss), step, self.first_bad)
        terms = [out.get(k, torch.tensor(float("nan"))).detach().to(self.device) for k in ("loss_it", "loss_ii",
                                                                                             "loss_rank")]
        self.sums += torch.stack([loss, terms[0], terms[1], grad_norm, terms[2]])

    def check_finite(self, last_saved: int) -> None:
        _check_finite(self.first_bad, self.run, last_saved)

    def emit(self, done: int, lr: float, last_saved: int) -> None:
        from sliq_cli.train.distributed import all_reduce_mean

        if done % self.cfg.log_every and done != self.total:  # the bar moves every step (its rate and time left)
            _emit(self.on_log, self.run, self.info, {"event": "step", "step": done, "total": self.total}, log=False)
            return
        self.check_finite(last_saved)
        means = (all_reduce_mean(self.sums, self.info.world_size) / (done - self.n_last)).tolist()
        now = time.perf_counter()
        record = {
            "step": done, "total": self.total, "samples": done * self.cfg.batch_size,
            "loss": means[0], "loss_it": means[1], "loss_ii": means[2], "grad_norm": means[3], "lr": lr,
            "samples_per_s": (done - self.n_last) * self.cfg.batch_size / (now - self.t_last),
            "max_mem_gb": torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else None,
        }
        if self.cfg.rank_weight:
            record["loss_rank"] = means[4]
        _emit(self.on_log, self.run, self.info, record)
        self.sums.zero_()
        self.t_last, self.n_last = now, done


def _export(run: Path, net: SliqueNet, ema, tokenizer, cfg: PretrainConfig, step: int, thresholds: dict) -> None:
    export(run, net, tokenizer, cfg, step, thresholds)
    if ema is not None:
        export_ema(run, net.image, ema, cfg, step)


def flushes_denormals() -> bool:
    """Whether the CPU now flushes subnormal floats to zero (torch sets the mode but has no getter): a float32
    subnormal survives the conversion into a tensor only when it does not."""
    return torch.tensor([1e-42], dtype=torch.float32).item() == 0.0


class _StopRequest:
    """SIGINT/SIGTERM while training: the first asks the loop to stop after the step in progress (whose state it then
    saves, as a kill mid-step could save half-updated weights) and calls `announce`; a second one interrupts at once.

    One process only: a DDP rank that stopped alone would leave the others waiting in their all-reduce, so under
    DDP the signals keep their usual effect (the run resumes from its last saved state). Handlers can only be set
    from the main thread; elsewhere this does nothing.
    """

    def __init__(self, info: DistInfo, announce: Callable[[], None]):
        self.active = info.world_size == 1 and threading.current_thread() is threading.main_thread()
        self.announce, self.requested, self.previous = announce, None, {}

    def install(self) -> None:
        if self.active:
            self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        self.announce()

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}


def _trim_log(log: Path, step: int) -> None:
    """Drop the log records after `step` (a resumed run trains those steps again) and any half-written line."""
    if not log.exists():
        return
    kept = []
    for line in log.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line + "\n")
        except ValueError:  # the line a kill cut short
            continue
    atomic_write_text(log, "".join(kept))


def _barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        torch.distributed.barrier()


def _emit(on_log, run: Path, info: DistInfo, record: dict, log: bool = True) -> None:
    """Rank 0: append a record to RUN/log.jsonl (training records) and pass it to the progress callback."""
    if not info.is_main:
        return
    if log:
        with open(run / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
    if on_log is not None:
        on_log(record)


def _check_finite(first_bad: torch.Tensor, run: Path, last_saved: int) -> None:
    bad = int(first_bad)
    if bad >= 0:
        raise SliqError(f"the loss became NaN/inf at step {bad + 1}; stopped without saving. The last good state "
                        f"is step {last_saved} in {run / 'state'} (try a lower learning rate or --batch-size)")
