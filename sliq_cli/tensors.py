"""Small tensor helpers: device-resident constants and a one-pass a * x + b, for elementwise tensor code that must not
stall the GPU, and the one float -> uint8 quantisation.

const and axpb are shared by the colour conversions (colour.py) and the TADAC distortions; a per-call host-to-device
copy would block the host until the GPU caught up, and a scalar multiply-add as two ops would read the image twice.
"""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=256)
def const(values: tuple, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`values` as a tensor on `device`, built once (callers must not write to it): a host-to-device copy per call
    would block the host until the GPU has caught up."""
    return torch.tensor(values, dtype=dtype, device=device)


def axpb(x: torch.Tensor, a: float, b: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """a * x + b in one elementwise pass: b rides in a 0-d CPU tensor, which CUDA kernels take by value (a float64
    one, like a Python number, so it neither loses precision nor changes the result's dtype)."""
    return torch.add(torch.tensor(b, dtype=torch.float64), x, alpha=a, out=out)


def to_uint8(x: torch.Tensor, scale: float = 255.0) -> torch.Tensor:
    """round(x * scale) clamped to [0, 255], as uint8: [0, 1] images by default, scale=1 for values in 0..255.
    Rounds half to even (torch.round), as images.py does for numpy (np.rint), so every path quantises alike."""
    return (x.float() * scale).round_().clamp_(0, 255).to(torch.uint8)
