"""`sliq interpolate`: a model between a starting encoder and one trained from it (WiSE-FT)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sliq_cli.cli.render import err_console


def interpolate(
    start: Annotated[str, typer.Argument(help="The starting model (folder, NAME@imagenet, Hub id).")],
    trained: Annotated[str, typer.Argument(help="The model trained from it (folder, 'default', Hub id).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the new model.")],
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, max=1.0,
                                         help="Weight of the trained model: 0 = the start, 1 = the trained one.")],
    dtype: Annotated[str, typer.Option("--dtype", help="Storage dtype: float32, bfloat16 or float16.")] = "float32",
    text_from: Annotated[Optional[str], typer.Option("--text-from", help="Take the text tower for `explain` (and the "
                                                     "projector it was trained with) from this model of the same "
                                                     "architecture instead of TRAINED's.")] = None,
):
    """Average two encoders' weights, (1 - alpha) * START + alpha * TRAINED (WiSE-FT): much of what training added,
    with the start's robustness to images unlike the training data. Fit a head on the result (`sliq fit-head`).

    The shipped default was made so from its ImageNet start and a SLIQUE run (bench/RESULTS.md).

    Examples:

    \b
      sliq interpolate slique-efficientnet-lite0@imagenet runs/a/export \\
          --alpha 0.3 -o runs/wise
      sliq fit-head --mos clive.csv --images clive/ -m runs/wise --name clive
      sliq interpolate slique-efficientnet-lite0@imagenet runs/b/export \\
          --alpha 0.5 --text-from default -o runs/wise-b
    """
    from sliq_cli.loading import find_model
    from sliq_cli.model.interpolate import interpolate_encoders

    fp = interpolate_encoders(find_model(start), find_model(trained), alpha, out_dir, dtype=dtype,
                              text_from=find_model(text_from) if text_from else None)
    err_console().print(f"[green]{out_dir}[/]: {alpha:g} x trained + {1 - alpha:g} x start, fingerprint {fp[:12]}")
