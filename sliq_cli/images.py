"""Finding and decoding images robustly: every file either becomes an RGB image or a clear per-file error.

Handled: EXIF orientation; CMYK, greyscale, greyscale+alpha, palette and RGBA (alpha composited on white, as a
viewer shows it); 16-bit greyscale PNG (scaled, not clipped); decompression bombs (Pillow's own limit, reported as
an error for that file); zero-byte, truncated, non-image and unreadable files (per-file errors).
"""

from __future__ import annotations

import errno
import functools
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

JPEG_SUFFIXES = {".jpg", ".jpeg", ".jfif"}
# Photo formats a Pillow build may lack a decoder for. A folder scan lists them too, so such a file gets its own
# error (what to do about it) instead of being missing from the results.
PHOTO_SUFFIXES = frozenset({".heic", ".heif", ".hif", ".avif", ".jxl", ".webp", ".jp2"})
# Formats Pillow identifies but are not photographs it decodes: video (MPEG: its header only), PostScript (needs
# Ghostscript), IPTC metadata, FITS science data (.fit is also a fitness-tracker file).
_NOT_PHOTOS = frozenset({"MPEG", "EPS", "IPTC", "FITS"})
# Formats whose decoder is an optional library of the Pillow build.
_OPTIONAL_DECODERS = {"AVIF": "avif", "WEBP": "webp", "JPEG2000": "jpg_2000"}


@functools.cache
def readable_suffixes() -> frozenset[str]:
    """The file suffixes of the image formats this Pillow decodes (its plugins and the libraries it was built with),
    e.g. .avif with Pillow >= 11.3. A folder scan takes these and PHOTO_SUFFIXES."""
    from PIL import Image, ImageFile, features

    Image.init()

    def decodes(fmt: str) -> bool:
        factory = Image.OPEN.get(fmt, (None,))[0]
        if fmt in _NOT_PHOTOS or factory is None:
            return False
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):  # needs a handler installed
            return False
        return fmt not in _OPTIONAL_DECODERS or bool(features.check(_OPTIONAL_DECODERS[fmt]))

    return frozenset(suffix for suffix, fmt in Image.registered_extensions().items() if decodes(fmt))


def is_image_name(path: Path) -> bool:
    suffix = path.suffix.lower()
    return suffix in PHOTO_SUFFIXES or suffix in readable_suffixes()


@dataclass
class ImageLoadError(Exception):
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def list_images(paths: Iterable[str], recursive: bool = False, stdin=None, empty_folders: bool = False) -> list[Path]:
    """Expand the command line's PATHs into image files, in a stable order.

    A folder contributes the image files in it (and below it with `recursive`), sorted: those with a suffix of
    readable_suffixes() or PHOTO_SUFFIXES (one this Pillow cannot decode then gets its own error); with
    `empty_folders`, a folder holding none is kept as itself, so the caller reports it (load_image says why)
    instead of dropping it silently (an empty folder named `dir.jpg` looks like an image in a listing). A file is
    taken as given whatever its suffix (so a broken or mislabelled file gets its own error later). A PATH that does
    not exist is a usage error (a typo: nothing is scored); `-` reads one path per line from standard input, where a
    missing file is a per-file failure (a listing may race with deletions).
    """
    out: list[Path] = []
    missing = [p for p in paths if p != "-" and not os.path.lexists(p)]  # lexists: a broken link gets its own error
    if missing:
        from sliq_cli.errors import UsageError

        hint = ""
        if any(p.lower() in ("true", "false", "yes", "no") for p in missing):  # `--sort true`: a flag given a value
            hint = " (a flag such as --sort or --recursive takes no value: give the flag alone)"
        raise UsageError(f"no such file or folder: {', '.join(missing)}{hint}")
    for p in paths:
        if p == "-":
            lines = (stdin or sys.stdin).read().splitlines()
            out.extend(Path(line.strip()) for line in lines if line.strip())
            continue
        path = Path(p)
        if path.is_dir():
            found = path.rglob("*") if recursive else path.iterdir()
            images = sorted(f for f in found if f.is_file() and is_image_name(f))
            out.extend(images or ([path] if empty_folders else []))
        else:
            out.append(path)
    return out


def _folder_reason(path: Path) -> str:
    if any(f.is_file() and is_image_name(f) for f in path.iterdir()):
        return "a folder, not an image (give the folder as an argument, not in a list of files)"
    below = any(is_image_name(f) and f.is_file() for f in path.rglob("*"))  # only without -r
    return "a folder with no image files in it" + (" (its sub-folders have some: --recursive)" if below else "")


def reduced_size(width: int, height: int, max_pixels: int | None = None, max_side: int | None = None):
    """The (w, h) an image must be downscaled to (aspect kept) to fit both limits; None when it fits already."""
    s = 1.0
    if max_pixels and width * height > max_pixels:
        s = (max_pixels / (width * height)) ** 0.5
    if max_side and max(width, height) > max_side:
        s = min(s, max_side / max(width, height))
    return None if s >= 1.0 else (max(1, int(width * s)), max(1, int(height * s)))


def load_image(path, max_pixels: int | None = None, max_side: int | None = None):
    """Decode `path` into an 8-bit RGB PIL image, upright. Raises ImageLoadError with the reason.

    max_pixels, max_side: a larger image is downscaled (antialiased, aspect kept) to fit both. A JPEG is then
    decoded at reduced resolution directly (draft mode: the DCT scaled by 1/2, 1/4 or 1/8, to the smallest size
    still at least the target), so a huge photo never needs its full-size decode in memory.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        if path.is_dir():
            raise ImageLoadError(str(path), _folder_reason(path))
        if path.stat().st_size == 0:
            raise ImageLoadError(str(path), "empty file (0 bytes)")
        with warnings.catch_warnings():
            # Above Pillow's warning size we downscale anyway; above twice it, Pillow raises (handled below).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                size = reduced_size(img.width, img.height, max_pixels, max_side)
                if size and img.format == "JPEG":
                    img.draft("RGB", size)
                img.load()
                rgb = _to_rgb(ImageOps.exif_transpose(img))
    except ImageLoadError:
        raise
    except FileNotFoundError:
        reason = f"broken symbolic link (to {os.readlink(path)})" if path.is_symlink() else "no such file"
        raise ImageLoadError(str(path), reason) from None
    except PermissionError:
        raise ImageLoadError(str(path), "permission denied") from None
    except Image.DecompressionBombError as e:
        raise ImageLoadError(str(path), f"refused as a possible decompression bomb ({e})") from None
    except UnidentifiedImageError:
        suffix = path.suffix.lower()
        if suffix in PHOTO_SUFFIXES and suffix not in readable_suffixes():
            raise ImageLoadError(str(path), f"a {suffix[1:].upper()} image, which this Pillow cannot decode "
                                            "(convert it to JPEG or PNG)") from None
        raise ImageLoadError(str(path), "not an image (or a format Pillow cannot read)") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ImageLoadError(str(path), "symbolic link loop (the link points back to itself)") from None
        if e.errno is not None:  # the file system's error, not the decoder's
            raise ImageLoadError(str(path), f"unreadable path ({e.strerror})") from None
        raise ImageLoadError(str(path), f"corrupt or truncated image ({e})") from None
    except (SyntaxError, ValueError) as e:
        # Pillow reports truncated and corrupt data as OSError (without an errno) or SyntaxError.
        raise ImageLoadError(str(path), f"corrupt or truncated image ({e})") from None
    return fit_image(rgb, max_pixels, max_side)


def fit_image(img, max_pixels: int | None = None, max_side: int | None = None):
    """Downscale a PIL image (antialiased, aspect kept) to fit max_pixels and max_side; unchanged when it fits."""
    from PIL import Image

    size = reduced_size(img.width, img.height, max_pixels, max_side)
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0) if size else img


def prepare_pil(img, max_pixels: int | None = None, max_side: int | None = None):
    """A PIL image from a caller, made what load_image returns: upright, 8-bit RGB, within the size limits."""
    from PIL import ImageOps

    return fit_image(_to_rgb(ImageOps.exif_transpose(img)), max_pixels, max_side)


def _to_rgb(img):
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np

        a = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if a.max() > 255 else 255.0  # 16-bit data, or 8-bit data stored as 32-bit ints
        return Image.fromarray(_to_uint8(a / peak * 255.0), "L").convert("RGB")
    if img.mode == "F":
        import numpy as np

        a = np.asarray(img, dtype=np.float64)
        return Image.fromarray(_to_uint8(a * (255.0 if a.max() <= 1.0 else 1.0)), "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _to_uint8(a):
    """Values in 0..255 (float) -> uint8, rounded half to even like tensors.to_uint8."""
    import numpy as np

    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


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


def jpeg_complete(data) -> bool:
    """Whether JPEG bytes end with the end-of-image marker (trailing NUL padding allowed). nvJPEG decodes a truncated
    file without error, grey below the cut; Pillow refuses it. Bytes that fail this go to Pillow, which either
    reports the file or decodes it (data after the marker, as some cameras append)."""
    return bytes(data[-64:]).rstrip(b"\x00").endswith(b"\xff\xd9")


# Start-of-frame markers (baseline, extended, progressive, lossless; Huffman and arithmetic): the frame header holds
# the image's size. 0xC4, 0xC8 and 0xCC share the range but are other segments.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_segments(data) -> Iterator[tuple[int, int, int]]:
    """(marker, start, end) of the marker segments of JPEG bytes up to and including the frame header (the payload
    is data[start:end]); stops early where the segments do not lead to one (the caller sees no frame header).

    Follows the segment lengths from the start: a few steps, where PIL's Image.open parses every segment in Python;
    the GPU path asks this for every file while other threads launch the model (bench/RESULTS.md)."""
    if data[:2] != b"\xff\xd8":
        return
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # segments without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xDA or length < 2:  # scan data before any frame header
            return
        yield marker, i + 4, min(n, i + 2 + length)
        if marker in _SOF_MARKERS:
            return
        i += 2 + length


def jpeg_size(data) -> tuple[int, int] | None:
    """(width, height) of JPEG bytes from their frame header (as stored, before any EXIF orientation), or None when
    the segments do not lead to one."""
    for marker, start, end in _jpeg_segments(data):
        if marker in _SOF_MARKERS:
            if end - start < 5:
                return None
            return int.from_bytes(data[start + 3:start + 5], "big"), int.from_bytes(data[start + 1:start + 3], "big")
    return None


_EXIF = b"Exif\x00\x00"
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(?:="|>)([0-9])')


def jpeg_orientation(data) -> int:
    """The EXIF orientation (1-8) of JPEG bytes as Pillow's ImageOps.exif_transpose reads it: the Orientation tag of
    the first EXIF segment's IFD0, else an XMP segment's tiff:Orientation; 1 when there is none or it is not 1-8.
    nvJPEG ignores it, so the GPU path turns the decoded image itself (nvjpeg.orient)."""
    exif = xmp = None
    for marker, start, end in _jpeg_segments(data):
        if marker == 0xE1 and exif is None and bytes(data[start:start + 6]) == _EXIF:
            exif = bytes(data[start + 6:end])
        elif marker == 0xE1 and xmp is None and bytes(data[start:start + len(_XMP)]) == _XMP:
            xmp = bytes(data[start + len(_XMP):end])
    value = _tiff_orientation(exif) if exif else None
    if value is None and xmp and (match := _XMP_ORIENTATION.search(xmp)):
        value = int(match[1])
    return value if value in range(1, 9) else 1


def _tiff_orientation(tiff: bytes) -> int | None:
    """The Orientation tag (0x0112) of a TIFF structure's first IFD, or None."""
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return None
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return None
    for k in range(int.from_bytes(tiff[ifd:ifd + 2], order)):
        entry = tiff[ifd + 2 + 12 * k:ifd + 14 + 12 * k]
        if len(entry) < 12:
            return None
        if int.from_bytes(entry[:2], order) == 0x0112:
            kind = int.from_bytes(entry[2:4], order)  # 3: SHORT (as the standard has it), 4: LONG
            return int.from_bytes(entry[8:10] if kind == 3 else entry[8:12], order)
    return None
