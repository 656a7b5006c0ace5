"""How much memory a pretraining run needs, measured before it starts, so a batch that cannot fit is refused (or a
default one reduced) with the numbers instead of the system's OOM killer stopping the run minutes in.

Estimate = the tensors autograd keeps for the backward pass (counted during one forward of the real model on the
`meta` device: shapes only, no memory, a fraction of a second) x the images and texts of a step, plus the weights,
their gradients and the SGD momentum, the resident image store, and a margin for what the backward pass holds
transiently. On CUDA the forward runs in bf16 autocast, which keeps about a third of it (CUDA_SAVED_SHARE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch

BACKWARD_MARGIN = 1.25  # gradients of activations and allocator slack over the saved tensors (measured on a CPU)
# Under bf16 autocast on CUDA the allocator holds about this share of the CPU estimate per sample (H200, ResNet-50
# at 224 px, batches 64-256: 176 MiB a sample of peak reserved memory, the CPU estimate 509 MiB). On a CPU the
# estimate was within 25 % above the measured growth (ResNet-18 at 64 px).
CUDA_SAVED_SHARE = 0.35
USABLE_SHARE = 0.9  # of the memory available now: the rest for the OS, page cache and other programs


@dataclass(frozen=True)
class Need:
    fixed: int  # bytes whatever the batch: weights, gradients, momentum, image store
    per_sample: int  # bytes per sample of the (per-process) batch

    def total(self, batch: int) -> int:
        return self.fixed + self.per_sample * batch


def need(cfg, vocab_size: int, store_bytes: int, device: torch.device) -> Need:
    from sliq_cli.train.loop import build_models

    # only the shapes count: an ImageNet start has the scratch model's, a checkpoint start its config's
    with torch.device("meta"):
        net = build_models(replace(cfg, init="scratch"), vocab_size)
        if cfg.init not in ("scratch", "imagenet"):
            from sliq_cli.model.checkpoint import read_config
            from sliq_cli.model.config import EncoderConfig
            from sliq_cli.model.encoder import ImageEncoder

            net.image = ImageEncoder(EncoderConfig.from_dict(read_config(cfg.init)["config"]))
    params = sum(p.numel() * p.element_size() for p in net.parameters())
    image = _per_item(lambda n: net.image(torch.empty(n, 3, cfg.crop_size, cfg.crop_size, device="meta")))
    text = 0.0
    if net.text is not None:
        text = _per_item(lambda n: net.text(torch.zeros(n, cfg.context, dtype=torch.long, device="meta")))
    views = (1 if cfg.image_text else 0) + (2 if cfg.image_image else 0)
    input_bytes = 2 * 4 * 3 * cfg.crop_size**2 * views  # the step's float views, and their channels-last copy
    saved = CUDA_SAVED_SHARE if device.type == "cuda" else 1.0
    per_sample = (views * image + text) * saved * BACKWARD_MARGIN + input_bytes
    ladder_images = 0  # --rank-weight: a fixed number of ladder crops a step, whatever the batch
    if cfg.rank_weight:
        from sliq_cli.train.data import N_LEVELS

        ladder_images = -(-cfg.rank_ladders // cfg.gpus) * N_LEVELS
    ladder_bytes = ladder_images * (image * saved * BACKWARD_MARGIN + 2 * 4 * 3 * cfg.crop_size**2)
    return Need(fixed=3 * params + store_bytes + math.ceil(ladder_bytes), per_sample=math.ceil(per_sample))


def _per_item(forward) -> float:
    """Bytes autograd saves per batch item: the difference between batches of 4 and 2, as the weights (which a
    layer saves too) count once whatever the batch."""
    totals = []
    for n in (2, 4):
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            forward(n)
        totals.append(total)
    return (totals[1] - totals[0]) / 2


def available(device: torch.device, trains_here: bool = True) -> tuple[int, str]:
    """Bytes a process may still allocate on `device`, and where the number comes from. trains_here=False (the
    parent of `--gpus N` processes): the GPU's total memory, read without creating a CUDA context, which would hold
    GPU memory for the whole run."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if not trains_here:
            return torch.cuda.get_device_properties(device).total_memory, f"of {name}"
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free on {name}"
    free = _meminfo_available()
    limit = _cgroup_room()
    if limit is not None and (free is None or limit < free):
        return limit, "left under this container's memory limit"
    return (free, "available RAM") if free is not None else (0, "")


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """cgroup v2 limit minus current use, where a limit is set."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((root / "memory.current").read_text())
    except (OSError, ValueError):
        return None


def largest_batch(fits, start: int, multiple: int) -> int | None:
    """The largest batch for which fits(batch) holds, halving from `start` (kept a multiple of `multiple` and at
    least 2); None when even the smallest does not fit."""
    batch = start
    while batch >= max(2, multiple):
        if batch % multiple == 0 and fits(batch):
            return batch
        batch //= 2
    return None
