"""The Python API: load a model and a head once, then score files, PIL images or tensors.

    from sliq_cli.api import load

    metric = load()                          # the embedded model and its default head, on CUDA when there is one
    metric.score("photo.jpg")                # 61.3: the head's MOS scale, see metric.mos_scale
    metric.score(["a.jpg", "b.png"])         # [61.3, 40.2], in order
    metric.score(torch.rand(4, 3, 384, 512)) # a (B, 3, H, W) or (3, H, W) float tensor in [0, 1], or a PIL image
    for rec in metric.records(paths): ...    # the dicts `sliq score` prints, in completion order
    explain(["photo.jpg"], top=3)            # `sliq explain`'s records: score, nearest descriptions, appearance
    ds.map_batches(RayScorer, fn_constructor_kwargs={"parts": ray_parts()}, ...)  # Ray Data (the ray extra)

`sliq score` itself runs on this (sliq_cli.iqa.score.Scorer), so both give the same scores.
"""

from __future__ import annotations

from sliq_cli.iqa.ray_score import RayScorer, ray_parts
from sliq_cli.iqa.score import Scorer as Metric

__all__ = ["Metric", "RayScorer", "explain", "load", "ray_parts"]


def load(model: str | None = None, head: str | None = None, device: str = "auto", *, batch_size: int | None = None,
         workers: int | None = None, compile: bool = False, max_side: int | None = None,
         canvas: bool | None = None) -> Metric:
    """A scorer: `model` as `--model` (None: the embedded default), `head` as `--head` (None: the model's default
    head), `device` "auto" | "cpu" | "cuda[:N]"; `canvas`: batch images of different sizes on shared canvases (default:
    on CUDA; False batches equal sizes only, the reference the canvases are measured against); the rest as
    `sliq score`'s options of the same names."""
    return Metric.load(model, head, device, batch_size=batch_size, workers=workers, compile=compile, max_side=max_side,
                       canvas=canvas)


def explain(paths, model: str | None = None, head: str | None = None, top: int = 5, device: str = "auto") -> list[dict]:
    """`sliq explain` for image files or folders: JSON-ready records with the score, the `top` nearest distortion
    descriptions and the binned appearance attributes (needs the model's text tower)."""
    from sliq_cli.iqa.explain import explain as explain_paths

    return explain_paths(paths, model=model, head=head, top=top, device=device)
