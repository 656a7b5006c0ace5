"""A contact sheet of one photo under all 25 KADIS distortions at all 5 levels, to eyeball the synthetic data.

The photo is first made the TADAC working image (database.py) and distorted whole, exactly as training samples are.
Each tile is a size x size window of that result at 1:1 scale, centred on the most salient 224x224 window: a
downscaled thumbnail would average away the noise, blocking and ringing the sheet is meant to show.
Rows: the original, then types 1..25 (KADIS name and the text type it is described as); columns: levels 1..5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sliq_cli.atomic import atomic_path
from sliq_cli.errors import InputError
from sliq_cli.images import ImageLoadError
from sliq_cli.tadac.saliency import centred_window
from sliq_cli.tadac.texts import KADIS_TO_TEXT_TYPE, N_LEVELS

PAD = 4
LABEL_WIDTH = 210
HEADER_HEIGHT = 22
FONT_SIZE = 13


def _crop_window(box: list[int], width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a size x size window centred on the box, shifted inside the image."""
    w, h = min(size, width), min(size, height)
    left, top = centred_window((box[0] + box[2] / 2, box[1] + box[3] / 2), (w, h), width, height)
    return left, top, left + w, top + h


def contact_sheet(path, size: int = 128, seed: int = 0):
    """The sheet for the image at `path` as a PIL RGB image."""
    import torch
    from PIL import Image, ImageDraw, ImageFont

    from sliq_cli.tadac.database import distortion_seed, load_work_pil, tensor_to_pil
    from sliq_cli.tadac.distortions import DISTORTIONS, distort
    from sliq_cli.tadac.saliency import saliency_box

    try:
        work = load_work_pil(path)
    except ImageLoadError as e:
        raise InputError(e.path, e.reason) from None
    rgb = np.asarray(work, dtype=np.float32) / 255.0  # (h, w, 3)
    window = _crop_window(saliency_box(rgb), work.width, work.height, size)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]  # (1, 3, h, w)

    cell = size + PAD
    sheet = Image.new("RGB", (LABEL_WIDTH + N_LEVELS * cell + PAD, HEADER_HEIGHT + (len(DISTORTIONS) + 1) * cell),
                      "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=FONT_SIZE)
    for level in range(1, N_LEVELS + 1):
        draw.text((LABEL_WIDTH + (level - 1) * cell + size // 2, HEADER_HEIGHT // 2), f"level {level}",
                  fill="black", font=font, anchor="mm")

    def put(tile: Image.Image, row: int, col: int) -> None:
        sheet.paste(tile.crop(window), (LABEL_WIDTH + col * cell, HEADER_HEIGHT + row * cell))

    def label(row: int, lines: list[str]) -> None:
        draw.multiline_text((PAD, HEADER_HEIGHT + row * cell + size // 2), "\n".join(lines), fill="black",
                            font=font, anchor="lm")

    put(work, 0, 0)
    label(0, ["original"])
    for row, dist in enumerate(DISTORTIONS, 1):
        label(row, [f"{dist.id:02d} {dist.name.replace('_', ' ')}", f"text: {KADIS_TO_TEXT_TYPE[dist.id].name}"])
        for level in range(1, N_LEVELS + 1):
            g = torch.Generator().manual_seed(distortion_seed(seed, "preview", dist.id, level))
            put(tensor_to_pil(distort(x, dist.id, level, generator=g)[0]), row, level - 1)
    return sheet


def write_contact_sheet(path, out, size: int = 128, seed: int = 0) -> Path:
    """Render the sheet of `path` and save it as PNG at `out` (atomically); returns `out`."""
    out = Path(out)
    sheet = contact_sheet(path, size=size, seed=seed)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out
