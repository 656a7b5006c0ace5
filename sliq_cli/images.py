"""Finding and decoding images robustly: every file either becomes an RGB image or a clear per-file error.

Handled: EXIF orientation; CMYK, greyscale, greyscale+alpha, palette and RGBA (alpha composited on white, as a
viewer shows it); 16-bit greyscale PNG (scaled, not clipped); decompression bombs (Pillow's own limit, reported as
an error for that file); zero-byte, truncated, non-image and unreadable files (per-file errors).
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm", ".jfif"}
JPEG_SUFFIXES = {".jpg", ".jpeg", ".jfif"}


@dataclass
class ImageLoadError(Exception):
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def list_images(paths: Iterable[str], recursive: bool = False, stdin=None) -> list[Path]:
    """Expand the command line's PATHs into image files, in a stable order.

    A folder contributes the image files in it (and below it with `recursive`), sorted; a file is taken as given
    whatever its suffix (so a broken or mislabelled file gets its own error later); `-` reads one path per line from
    standard input. Paths that do not exist are kept, so they are reported as failures and not silently dropped.
    """
    out: list[Path] = []
    for p in paths:
        if p == "-":
            lines = (stdin or sys.stdin).read().splitlines()
            out.extend(Path(line.strip()) for line in lines if line.strip())
            continue
        path = Path(p)
        if path.is_dir():
            found = path.rglob("*") if recursive else path.iterdir()
            out.extend(sorted(f for f in found if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(path)
    return out


def load_image(path, max_pixels: int | None = None):
    """Decode `path` into an 8-bit RGB PIL image, upright. Raises ImageLoadError with the reason.

    max_pixels: if the image is larger, it is downscaled (antialiased, aspect kept) to at most that many pixels;
    JPEGs are then decoded at reduced resolution directly (draft mode), so huge photos never need full-size memory.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        if path.is_dir():
            raise ImageLoadError(str(path), "is a folder, not an image")
        if path.stat().st_size == 0:
            raise ImageLoadError(str(path), "empty file (0 bytes)")
        with warnings.catch_warnings():
            # Above Pillow's warning size we downscale anyway; above twice it, Pillow raises (handled below).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if max_pixels and img.width * img.height > max_pixels and img.format == "JPEG":
                    scale = (max_pixels / (img.width * img.height)) ** 0.5
                    img.draft("RGB", (max(1, int(img.width * scale)), max(1, int(img.height * scale))))
                img.load()
                rgb = _to_rgb(ImageOps.exif_transpose(img))
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(str(path), "no such file") from None
    except PermissionError:
        raise ImageLoadError(str(path), "permission denied") from None
    except Image.DecompressionBombError as e:
        raise ImageLoadError(str(path), f"refused as a possible decompression bomb ({e})") from None
    except UnidentifiedImageError:
        raise ImageLoadError(str(path), "not an image (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError) as e:
        # Pillow reports truncated and corrupt data as OSError/SyntaxError.
        raise ImageLoadError(str(path), f"corrupt or truncated image ({e})") from None
    if max_pixels and rgb.width * rgb.height > max_pixels:
        scale = (max_pixels / (rgb.width * rgb.height)) ** 0.5
        size = (max(1, int(rgb.width * scale)), max(1, int(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return rgb


def _to_rgb(img):
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np

        a = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if a.max() > 255 else 255.0  # 16-bit data, or 8-bit data stored as 32-bit ints
        return Image.fromarray(np.clip(a / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        import numpy as np

        a = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.clip(a * (255.0 if a.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def pil_to_tensor(img):
    """PIL RGB -> (3, H, W) uint8 tensor."""
    import numpy as np
    import torch

    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def pil_to_float(img):
    """PIL RGB -> (3, H, W) float32 tensor in [0, 1], the library's image convention."""
    return pil_to_tensor(img).float().div_(255.0)


def is_jpeg(path) -> bool:
    return Path(path).suffix.lower() in JPEG_SUFFIXES
