"""The GPU decoding path's pieces that a CPU can check: torchvision's image operators loaded without importing
torchvision, the mode constant and operator schema sliq_cli.nvjpeg relies on, and EXIF orientation applied to a
decoded tensor exactly as Pillow applies it (nvJPEG itself runs in tests/test_cuda_scoring.py)."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from sliq_cli import nvjpeg
from sliq_cli.images import jpeg_orientation


def jpeg_bytes(img: Image.Image, orientation: int | None = None, **options) -> bytes:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes(), quality=95, **options)
    return buf.getvalue()


def pillow_upright(data: bytes) -> torch.Tensor:
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    return torch.from_numpy(np.array(upright)).permute(2, 0, 1)  # (3, H, W)


def test_image_operators_load_without_importing_torchvision():
    code = ("import sys; from sliq_cli import nvjpeg; ops = nvjpeg.image_ops(); "
            "print(hasattr(ops, 'decode_jpegs_cuda'), 'torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False"]


def test_the_gpu_operator_takes_what_decode_passes():
    # decode() calls decode_jpegs_cuda(list of byte tensors, mode, device) by position: a changed schema fails here,
    # not on a GPU. Only the types are compared: torchvision 0.26's library registers the arguments unnamed.
    schema = nvjpeg.image_ops().decode_jpegs_cuda.default._schema
    assert [str(a.type) for a in schema.arguments] == ["List[Tensor]", "int", "Device"]
    assert [str(r.type) for r in schema.returns] == ["List[Tensor]"]


def test_rgb_mode_gives_three_channels_as_torchvision_does(example_photos):
    from torchvision.io import ImageReadMode, decode_jpeg

    assert nvjpeg.RGB == ImageReadMode.RGB.value
    grey = Image.open(example_photos[0]).convert("L").resize((64, 48))
    for data in (open(example_photos[0], "rb").read(), jpeg_bytes(grey)):
        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        ours = nvjpeg.image_ops().decode_jpeg(raw, nvjpeg.RGB, False)  # the CPU twin of the GPU operator
        assert ours.shape[0] == 3 and torch.equal(ours, decode_jpeg(raw, mode=ImageReadMode.RGB))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_turns_a_decoded_image_as_pillow_does(orientation):
    rng = np.random.default_rng(orientation)
    img = Image.fromarray(rng.integers(0, 256, (40, 64, 3), dtype=np.uint8))  # not square: turns show in the shape
    data = jpeg_bytes(img, orientation)
    raw = nvjpeg.image_ops().decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), nvjpeg.RGB, False)
    expected = pillow_upright(data)
    upright = nvjpeg.orient(raw, jpeg_orientation(data))
    assert upright.shape == expected.shape and torch.equal(upright, expected)
