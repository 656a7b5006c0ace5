"""Stage a photo kit for the GPU machine: working-size copies packed in tar parts that each fit one device call.

A device call carries at most 64 MiB (the tree included), so the kit travels in parts, each unpacked into the same
folder outside the repository on a warm machine (`bench/gpu_run.sh unpack`). Every photo keeps its path relative to
the kit root, so `sliq tadac build` there gives the records the same ids (and the same held-out photos) as here.

- A photo travels byte for byte when its file is no larger than its working image (tadac.database.work_size)
  stored as JPEG quality 90 would be: the build there resizes it exactly as it would here.
- Otherwise it is resized to its working size here (as the build would) and stored as JPEG quality 90: one more
  lossy generation for those photos (large imagenet-sample ones), the price of the transfer limit.
- Other files named on the command line (the manifest CSV, converted ImageNet weights) go into the first part,
  at its root.

    python bench/gpu_stage.py ../shared/data/photos --out .gpu/stage --extra ../shared/data/photos/manifest.csv \
        --extra ~/.cache/sliq/imagenet/efficientnet-lite0.safetensors
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

from PIL import Image

from sliq_cli.images import list_images, load_image
from sliq_cli.tadac.database import DECODE_MAX_PIXELS, work_size


def working_bytes(path: Path) -> bytes:
    """The bytes to stage for one photo: the file itself, or a q90 JPEG of its working image where that is smaller."""
    original = path.read_bytes()
    img = load_image(path, max_pixels=DECODE_MAX_PIXELS)
    img = img.resize(work_size(*img.size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return min(original, buf.getvalue(), key=len)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="the photo kit's root folder")
    ap.add_argument("--out", type=Path, required=True, help="folder for part-1.tar, part-2.tar, ...")
    ap.add_argument("--part-mb", type=float, default=56.0, help="size of each part (default 56 MB)")
    ap.add_argument("--extra", type=Path, action="append", default=[], help="another file for part 1 (repeatable)")
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("part-*.tar"):
        old.unlink()
    limit = int(args.part_mb * 1e6)
    part, size, tar, counts = 0, limit, None, []

    def add(name: str, data: bytes) -> None:
        nonlocal part, size, tar
        if size + len(data) > limit and size > 0:
            if tar is not None:
                tar.close()
            part += 1
            size, tar = 0, tarfile.open(args.out / f"part-{part}.tar", "w")
            counts.append(0)
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        size += len(data) + 512
        counts[-1] += 1

    for extra in args.extra:
        add(extra.name, extra.read_bytes())
    for path in list_images([args.root], recursive=True):
        add(path.relative_to(args.root).as_posix(), working_bytes(path))
    tar.close()
    for k, n in enumerate(counts, 1):
        f = args.out / f"part-{k}.tar"
        print(f"{f}: {n} files, {f.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
