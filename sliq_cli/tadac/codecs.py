"""Real JPEG and JPEG2000 round trips for the codec distortions (types 9 and 10).

Images arrive as (B, 3, H, W) float [0, 1] and are quantised to uint8 by rounding (tensors.to_uint8; MATLAB's
im2uint8 rounds too, halves up rather than to even), encoded, decoded and returned as float on the input's device.

- JPEG: torchvision's libjpeg encoder on CPU tensors. On CUDA the whole batch goes through nvJPEG
  (torchvision >= 0.19 encodes and decodes lists of CUDA tensors); older torchvision round-trips via the CPU.
- JPEG2000: Pillow's OpenJPEG encoder with quality_mode="rates", quality_layers=[ratio], which is the meaning
  of MATLAB imwrite's 'CompressionRatio' (uncompressed size / compressed size). One image at a time on the CPU.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, features
from torchvision.io import decode_jpeg, encode_jpeg

from sliq_cli.tensors import to_uint8


def jpeg_roundtrip(images: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG-compress every image at `quality` (1..100) and decode it again; same device as the input."""
    u8 = to_uint8(images)  # (B, 3, H, W) uint8
    if u8.is_cuda:
        decoded = _jpeg_roundtrip_cuda(u8, quality)
        if decoded is not None:
            return decoded.float().div_(255.0)
    cpu = u8.cpu()
    out = torch.stack([decode_jpeg(encode_jpeg(img, quality=quality)) for img in cpu])  # (B, 3, H, W) uint8
    return out.to(images.device).float().div_(255.0)


_warned_cpu_jpeg = False  # the GPU -> CPU fallback is announced once per process


def _jpeg_roundtrip_cuda(u8: torch.Tensor, quality: int) -> torch.Tensor | None:
    """Batched nvJPEG round trip, or None (with a warning, once) where this torchvision cannot do it on CUDA."""
    global _warned_cpu_jpeg
    try:
        encoded = encode_jpeg(list(u8), quality=quality)
        # nvJPEG decoding reads the byte streams from host memory.
        decoded = decode_jpeg([e.cpu() for e in encoded], device=u8.device)
    except (RuntimeError, TypeError, NotImplementedError) as e:
        if not _warned_cpu_jpeg:
            _warned_cpu_jpeg = True
            warnings.warn(f"JPEG distortions run on the CPU (slower): the nvJPEG round trip failed "
                          f"({type(e).__name__}: {e})", RuntimeWarning, stacklevel=3)
        return None
    return torch.stack(decoded)  # (B, 3, H, W) uint8 on the GPU


def jpeg2000_roundtrip(images: torch.Tensor, ratio: float) -> torch.Tensor:
    """JPEG2000-compress every image at compression ratio `ratio` with OpenJPEG and decode it again."""
    if not features.check("jpg_2000"):
        raise RuntimeError("this Pillow build has no OpenJPEG (JPEG2000) support; install a Pillow wheel that has it")
    u8 = to_uint8(images).permute(0, 2, 3, 1).contiguous().cpu().numpy()  # (B, H, W, 3) uint8
    out = np.empty_like(u8)
    for i, img in enumerate(u8):
        buf = io.BytesIO()
        Image.fromarray(img, "RGB").save(buf, format="JPEG2000", quality_mode="rates", quality_layers=[float(ratio)])
        buf.seek(0)
        with Image.open(buf) as decoded:
            out[i] = np.asarray(decoded.convert("RGB"))
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(images.device).float().div_(255.0)
