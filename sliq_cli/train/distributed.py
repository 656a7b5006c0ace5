"""Process groups for data-parallel pretraining and the feature gather behind cross-process negatives.

Every process computes the contrastive loss over the GLOBAL batch (all processes' embeddings), so the loss value
is the single-process loss of that batch. The gathered embeddings of other processes are constants; the backward
of `gather_keep_local` hands each process the gradient of its own slice (CONTRIQUE's GatherLayer, open_clip's
gather_features without gather_with_grad) multiplied by the world size, so that DDP's gradient *averaging*
yields exactly the full-batch gradient: each process's slice gradient is already the complete derivative of the
global loss, and the full gradient is their sum.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def torchrun_env() -> DistInfo | None:
    """The process's place when launched by torchrun (RANK/WORLD_SIZE/LOCAL_RANK set), else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_process_group(info: DistInfo, device_type: str, port: int | None = None) -> None:
    """Join the group (NCCL on CUDA, gloo on CPU). `port` is given by `--gpus N` spawning (passed as the init method,
    not written into os.environ); without it, torchrun's MASTER_ADDR/PORT are read from the environment."""
    if info.world_size == 1:
        return
    backend = "nccl" if device_type == "cuda" else "gloo"
    init_method = f"tcp://127.0.0.1:{port}" if port is not None else None
    dist.init_process_group(backend, init_method=init_method, rank=info.rank, world_size=info.world_size)


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _GatherKeepLocal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
        ctx.rank, ctx.world_size, ctx.n = rank, world_size, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)  # (W*B, ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        local = grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]  # (B, ...)
        return local * ctx.world_size, None, None


def gather_keep_local(x: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """All-gather (B, ...) -> (world_size*B, ...) in rank order; gradients flow to this rank's slice only."""
    if world_size == 1:
        return x
    return _GatherKeepLocal.apply(x, rank, world_size)


def gather_constant(x: torch.Tensor, world_size: int) -> torch.Tensor:
    """All-gather a tensor that needs no gradient (e.g. text ids). (B,) -> (world_size*B,)."""
    if world_size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def all_reduce_mean(x: torch.Tensor, world_size: int) -> torch.Tensor:
    """Mean of a tensor over processes (for logging)."""
    if world_size == 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / world_size
