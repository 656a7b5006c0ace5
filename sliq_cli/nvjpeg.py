"""JPEG decoding on the GPU (nvJPEG) by torchvision's compiled image operators, without importing torchvision.

`import torchvision` imports torchvision.models and torchvision.ops, and those import torch._dynamo: 1.2 s on the
2-core development CPU, 3.1-3.4 s on the H100 hosts (bench/RESULTS.md, start-up), all of it paid before a CUDA run's
first batch. nvJPEG itself lives in one shared library of the torchvision wheel, which registers the operators
`torch.ops.image.*`; this module loads that library alone (`torch.ops.load_library`, as torchvision.io does) and
calls the operator that torchvision.io.decode_jpeg calls for a list of CPU byte tensors and a CUDA device.

nvJPEG does not apply EXIF orientation (torchvision: "only implemented for JPEG format on CPU"); `orient` turns a
decoded image as Pillow's ImageOps.exif_transpose turns it on the CPU path, so both paths score the upright image.
"""

from __future__ import annotations

import functools

# The library's name in the torchvision wheel: "image_stable" from torchvision 0.29 (built on torch's stable ABI),
# "image" before.
_LIBRARIES = ("image_stable", "image")
RGB = 3  # torchvision.io.ImageReadMode.RGB.value: three channels, whatever the file's


@functools.cache
def image_ops():
    """torch.ops.image, with torchvision's image library loaded (once a process)."""
    import importlib.machinery
    import importlib.util

    import torch

    spec = importlib.util.find_spec("torchvision")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("decoding JPEGs on a GPU needs torchvision (pip install torchvision)")
    folders = list(spec.submodule_search_locations)
    for name in _LIBRARIES:
        for folder in folders:
            finder = importlib.machinery.FileFinder(
                folder, (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES))
            if (lib := finder.find_spec(name)) is not None:
                torch.ops.load_library(lib.origin)
                return torch.ops.image
    raise RuntimeError(f"no image operator library ({' or '.join(_LIBRARIES)}) in torchvision at {folders[0]}")


def decode(datas: list, device) -> list:
    """nvJPEG decodes of JPEG byte tensors ((n,) uint8 on the CPU): (3, H, W) uint8 tensors on `device`, as stored
    (see `orient`). RuntimeError if nvJPEG refuses any of them."""
    import torch

    return image_ops().decode_jpegs_cuda(datas, RGB, torch.device(device))


def orient(t, orientation: int):
    """(3, H, W) -> the image upright for an EXIF orientation 1-8, as PIL.ImageOps.exif_transpose makes it."""
    if orientation == 2:
        return t.flip(-1)  # mirrored left-right
    if orientation == 3:
        return t.flip(-2, -1)  # rotated 180
    if orientation == 4:
        return t.flip(-2)  # mirrored top-bottom
    if orientation == 5:
        return t.transpose(-2, -1)  # mirrored along the main diagonal
    if orientation == 6:
        return t.transpose(-2, -1).flip(-1)  # rotated 90 clockwise to view
    if orientation == 7:
        return t.transpose(-2, -1).flip(-2, -1)  # mirrored along the other diagonal
    if orientation == 8:
        return t.transpose(-2, -1).flip(-2)  # rotated 90 counter-clockwise to view
    return t
