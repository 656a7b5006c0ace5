"""The Python API: load a model and a head once, then score files, PIL images or tensors.

    from sliq_cli.api import load

    metric = load()                          # the embedded model and its default head, on CUDA when there is one
    metric.score("photo.jpg")                # 61.3: the head's MOS scale, see metric.mos_scale
    metric.score(["a.jpg", "b.png"])         # [61.3, 40.2], in order
    metric.score(torch.rand(4, 3, 384, 512)) # a (B, 3, H, W) or (3, H, W) float tensor in [0, 1], or a PIL image
    for rec in metric.records(paths): ...    # the dicts `sliq score` prints, in completion order

`sliq score` itself runs on this (sliq_cli.iqa.score.Scorer), so both give the same scores.
"""

from __future__ import annotations

from sliq_cli.iqa.score import Scorer as Metric

__all__ = ["Metric", "load"]


def load(model: str | None = None, head: str | None = None, device: str = "auto", *, batch_size: int = 8,
         workers: int | None = None, compile: bool = False, max_side: int | None = None) -> Metric:
    """A scorer: `model` as `--model` (None: the embedded default), `head` as `--head` (None: the model's default
    head), `device` "auto" | "cpu" | "cuda[:N]"; the rest as `sliq score`'s options of the same names."""
    return Metric.load(model, head, device, batch_size=batch_size, workers=workers, compile=compile, max_side=max_side)
