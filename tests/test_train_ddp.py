"""Two processes over gloo compute the same loss and gradients as one process on the same global batch."""

from __future__ import annotations

import os

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from sliq_cli.model.registry import create_model
from sliq_cli.model.text import TextConfig, TextEncoder
from sliq_cli.train.distributed import DistInfo, destroy_process_group, free_port, init_process_group
from sliq_cli.train.loop import SliqueNet
from sliq_cli.train.loss import SliqueLoss

B, P = 8, 64


def _net() -> SliqueNet:
    torch.manual_seed(0)
    net = SliqueNet(create_model("slique-resnet18", hidden_dim=64, embed_dim=32),
                    TextEncoder(TextConfig(vocab_size=50, width=64, layers=2, heads=4, embed_dim=32)))
    # BatchNorm in eval mode: with CPU/gloo each process normalises by its own batch (SyncBatchNorm needs CUDA,
    # and the loop uses it there), so only the running statistics make the two set-ups comparable.
    return net.eval()


def _batch():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(3, B, 3, P, P, generator=g)  # saliency crops, views 1, views 2
    tokens = torch.randint(3, 50, (B, 6), generator=g)
    tokens[:, 0], tokens[:, -1] = 1, 2
    tokens[4] = tokens[1]  # a repeated text
    ids = tokens.sum(1) * 1000 + tokens[:, 1]
    return images, tokens, ids


def _step(net, images, tokens, ids, rank, world):
    loss_fn = SliqueLoss(rank=rank, world_size=world)
    n = images.shape[1]
    emb, txt, _ = net(images.reshape(3 * n, 3, P, P), tokens)
    out = loss_fn(emb[:n], txt, emb[n : 2 * n], emb[2 * n :], ids)
    out["loss"].backward()
    return out["loss"].detach()


def _worker(rank, world, port, out_dir):
    init_process_group(DistInfo(rank, world, rank), "cpu", port)
    try:
        assert os.environ.get("MASTER_PORT") != str(port)  # the port went to the init method, not the environment
        net = _net()
        ddp = torch.nn.parallel.DistributedDataParallel(net)
        images, tokens, ids = _batch()
        sl = slice(rank * B // world, (rank + 1) * B // world)
        loss = _step(ddp, images[:, sl], tokens[sl], ids[sl], rank, world)
        if rank == 0:
            grads = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
            save_file({"loss": loss.reshape(1), **grads}, f"{out_dir}/ddp.safetensors")
    finally:
        destroy_process_group()


def test_two_process_gloo_matches_one_process(tmp_path):
    net = _net()
    loss = _step(net, *_batch(), 0, 1)
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2)
    ddp = load_file(str(tmp_path / "ddp.safetensors"))
    assert torch.allclose(ddp.pop("loss"), loss.reshape(1), rtol=1e-5)
    grads = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
    assert set(ddp) == set(grads) and len(grads) > 50
    for name, g in grads.items():
        assert torch.allclose(ddp[name], g, rtol=1e-3, atol=1e-6), name
