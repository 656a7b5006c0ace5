"""Pretraining throughput on one GPU: samples/s of the whole SLIQUE step, and the ResNet-50 train-step ceiling.

A sample is one saliency crop + two OLA crops (three encoder passes) + one text. The full step runs what
`sliq pretrain` runs: resident image store, sampler, on-device distortions and views, text tower, joint loss,
SGD step (bf16 autocast, channels_last, optionally torch.compile). The ceiling is a bare ResNet-50 classifier
train step on random 224x224 tensors at the same number of images per step. Target on one H100: >= 1,700
samples/s.

    python bench/pretrain_throughput.py --db DB [--batch-size 256] [--steps 30] [--compile]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402
import torch.nn.functional as F


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def full_step(db: str, batch: int, steps: int, warmup: int, compile_: bool, workers: int) -> dict:
    from sliq_cli.model.tokenizer import Tokenizer
    from sliq_cli.tadac.database import load_database
    from sliq_cli.tadac.texts import all_texts
    from sliq_cli.train.config import PretrainConfig
    from sliq_cli.train.data import ImageStore, Prefetcher, Sampler, TextPicker, ViewMaker, select_records
    from sliq_cli.train.loop import build_models, param_groups
    from sliq_cli.train.loss import SliqueLoss

    device = torch.device("cuda")
    cfg = PretrainConfig(db=db, out=tempfile.mkdtemp(), batch_size=batch, compile=compile_)
    database = load_database(db)
    records = select_records(database.records, 1.0, 0)
    t0 = time.perf_counter()
    tokenizer = Tokenizer.train(all_texts(database), cfg.vocab_size)
    store = ImageStore.build(records, device, workers, cfg.max_resident_gb)
    _sync()
    startup = time.perf_counter() - t0
    views = ViewMaker(store, records, cfg.crop_size, TextPicker(tokenizer, cfg.texts, cfg.context), device)
    sampler = Sampler(records, batch, cfg.authentic_fraction, cfg.group_size, cfg.seed)
    net = build_models(cfg, tokenizer.vocab_size).to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(param_groups(net, cfg.weight_decay), lr=cfg.peak_lr, momentum=cfg.momentum)
    forward = torch.compile(net) if compile_ else net
    loss_fn = SliqueLoss(cfg.alpha, cfg.temperature)
    view_s = 0.0  # time the training step waited for its batch (views are built ahead by the prefetch thread)
    batches = Prefetcher(lambda i: views(*sampler.local_batch(i), np.random.default_rng([0, i])),
                         range(warmup + steps), device)

    def train(batch_) -> None:
        if compile_:
            torch._dynamo.maybe_mark_dynamic(batch_.tokens, 1)  # as sliq pretrain does
        with torch.autocast("cuda", dtype=torch.bfloat16):
            emb, txt, _ = forward(batch_.images.contiguous(memory_format=torch.channels_last), batch_.tokens)
        out = loss_fn(emb[:batch], txt, emb[batch : 2 * batch], emb[2 * batch :], batch_.text_ids, batch_.text_mask)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()

    def step(i: int):
        nonlocal view_s
        t = time.perf_counter()
        batch_ = batches.get(i)
        view_s += time.perf_counter() - t
        train(batch_)
        return batch_

    for i in range(warmup):
        step(i)
    _sync()
    torch.cuda.reset_peak_memory_stats()
    view_s = 0.0
    t = time.perf_counter()
    for i in range(warmup, warmup + steps):
        last = step(i)
    _sync()
    seconds = time.perf_counter() - t
    # The same step on one fixed batch, no data path: the ceiling of this model's step on this GPU.
    t = time.perf_counter()
    for _ in range(steps):
        train(last)
    _sync()
    fixed = time.perf_counter() - t
    return {"samples_per_s": steps * batch / seconds, "step_ms": 1000 * seconds / steps,
            "batch_wait_ms": 1000 * view_s / steps, "fixed_batch_samples_per_s": steps * batch / fixed,
            "startup_s": startup, "store_gb": store.flat.numel() / 1e9,
            "max_mem_gb": torch.cuda.max_memory_allocated() / 2**30}


def resnet50_ceiling(images: int, steps: int, warmup: int, compile_: bool) -> float:
    import torchvision

    net = torchvision.models.resnet50().cuda().to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    fwd = torch.compile(net) if compile_ else net
    x = torch.rand(images, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (images,), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(fwd(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    _sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync()
    return steps * images / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--workers", type=int, default=0, help="decode processes (0 = all cores)")
    ap.add_argument("--skip-ceiling", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    print(f"machine: {describe()}")
    r = full_step(args.db, args.batch_size, args.steps, args.warmup, args.compile, args.workers or os.cpu_count())
    print(f"SLIQUE step, batch {args.batch_size} (x3 crops), compile={args.compile}: "
          f"{r['samples_per_s']:.0f} samples/s ({3 * r['samples_per_s']:.0f} encoder images/s), "
          f"{r['step_ms']:.0f} ms/step, waiting for the batch {r['batch_wait_ms']:.0f} ms/step, "
          f"max memory {r['max_mem_gb']:.1f} GiB, store {r['store_gb']:.2f} GB built in {r['startup_s']:.0f} s")
    print(f"same step on a fixed batch (no data path): {r['fixed_batch_samples_per_s']:.0f} samples/s")
    if not args.skip_ceiling:
        for c in (False, True):
            ips = resnet50_ceiling(3 * args.batch_size, args.steps, args.warmup, c)
            print(f"ResNet-50 train step ceiling, {3 * args.batch_size} images of 224, compile={c}: {ips:.0f} img/s "
                  f"= {ips / 3:.0f} samples/s")


if __name__ == "__main__":
    main()
