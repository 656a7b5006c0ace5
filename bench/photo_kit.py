"""A stand-in for the photo kit, for throughput benches on machines the real photos cannot reach.

    python bench/photo_kit.py OUT

Writes OUT/pristine/*.jpg and OUT/authentic/LABEL/*.jpg with exactly the working-image sizes of the real kit
(`photo_kit_sizes.json`: 672 pristine photos in 45 sizes, 1,000 authentic ones in 328, as `sliq tadac build`
computed them from ../shared/data/photos), filled with crops of the example photos. Pretraining throughput
depends on these sizes (they decide how many distortion calls a step makes), not on the content. Build the bench
database with `sliq tadac build OUT --out DB --pristine 'pristine/*' --authentic 'authentic/**/*'
--labels-from-folders`.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
LABELS = ["goldfish", "tabby cat", "espresso", "airliner", "umbrella", "volcano", "zebra", "hourglass"]


def main(out: Path) -> None:
    sizes = json.loads((HERE / "photo_kit_sizes.json").read_text())  # kind -> [[w, h, count], ...]
    sources = [Image.open(p).convert("RGB") for p in sorted((HERE.parent / "examples").glob("*.jpg"))]
    sources += [s.transpose(Image.Transpose.ROTATE_90) for s in sources]
    rng = random.Random(0)
    i = 0
    for kind in ("pristine", "authentic"):
        for w, h, count in sizes[kind]:
            for _ in range(count):
                src = max(sources, key=lambda s: (s.width >= w and s.height >= h, rng.random()))
                scale = max(w / src.width, h / src.height, 0.5)
                im = src.resize((max(w, round(src.width * scale)), max(h, round(src.height * scale))))
                x, y = rng.randrange(im.width - w + 1), rng.randrange(im.height - h + 1)
                folder = out / kind / (LABELS[i % len(LABELS)] if kind == "authentic" else "")
                folder.mkdir(parents=True, exist_ok=True)
                im.crop((x, y, x + w, y + h)).save(folder / f"img{i:05d}.jpg", quality=92)
                i += 1
    print(f"{i} photos in {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
