"""The CUDA scoring path (nvJPEG decoding, bf16, canvases of mixed sizes, torch.compile) against the CPU reference.

Skipped without a CUDA device; run on the GPU machine with `python -m pytest -q tests/test_cuda_scoring.py`
(bench/RESULTS.md records the run)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# The CPU computes in float32 from libjpeg's decode; CUDA in bf16 from nvJPEG's (another IDCT and chroma
# upsampling: 0.2-1.3 of 255 a pixel on average). On this folder (H100, 2026-12-07): max 1.72, mean 0.56 of 100,
# correlation 0.9986; bf16 alone (Pillow's decode on CUDA) max 1.16, the decoder alone max 1.06.
CUDA_VS_CPU = 2.5
CUDA_VS_CPU_CORRELATION = 0.997


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, example_photos):
    """Crops of the example photos in 12 sizes (odd ones included), twice, JPEG and PNG, two of the JPEGs stored
    turned with an EXIF orientation: what canvases batch together. More files than the first batch (16), so the
    JPEGs decode with nvJPEG, as a folder's do (a folder of one batch decodes with Pillow)."""
    folder = tmp_path_factory.mktemp("mixed")
    sizes = [(500, 500), (512, 384), (384, 512), (333, 257), (640, 427), (257, 333), (300, 300), (481, 321),
             (700, 466), (224, 224), (512, 341), (401, 599)]
    for i, (w, h) in enumerate(sizes * 2):
        img = Image.open(example_photos[i % len(example_photos)]).convert("RGB")
        img = img.resize((max(w, img.width), max(h, img.height)))
        left = (i // len(sizes)) * (img.width - w)  # the second round: the other corner
        img = img.crop((left, 0, left + w, h))
        options = {}
        if i in (4, 20):  # stored turned, as phones store portrait photos
            exif = Image.Exif()
            exif[0x0112] = 6 if i == 4 else 8
            options["exif"] = exif.tobytes()
        img.save(folder / (f"m{i:02d}.png" if i % 4 == 3 else f"m{i:02d}.jpg"), quality=92, **options)
    return sorted(folder.iterdir())


@pytest.fixture(scope="module")
def cpu_scores(mixed_folder):
    from sliq_cli.api import load

    return np.array(load(device="cpu").score(mixed_folder))


def test_cuda_scores_match_the_cpu(mixed_folder, cpu_scores):
    from sliq_cli.api import load

    metric = load(device="cuda")
    assert not metric.extractor.pillow_only(len(mixed_folder))  # the nvJPEG path is what is measured
    cuda = np.array(metric.score(mixed_folder))
    assert np.abs(cuda - cpu_scores).max() < CUDA_VS_CPU
    assert np.corrcoef(cuda, cpu_scores)[0, 1] > CUDA_VS_CPU_CORRELATION


def test_canvases_give_the_scores_of_equal_size_batches(mixed_folder):
    from sliq_cli.api import load

    canvas = np.array(load(device="cuda", canvas=True).score(mixed_folder))
    plain = np.array(load(device="cuda", canvas=False).score(mixed_folder))
    # the canvases' masks make each image's features its own; what differs is bf16 rounding, as other batch shapes
    # pick other kernels (measured on the H200: max 0.128 of 100)
    assert np.abs(canvas - plain).max() < 0.25


def test_compiled_scoring_matches_eager(mixed_folder, cpu_scores):
    from sliq_cli.api import load

    compiled = np.array(load(device="cuda", compile=True).score(mixed_folder))
    assert np.abs(compiled - cpu_scores).max() < CUDA_VS_CPU


def test_cli_on_cuda_reports_a_broken_file_and_scores_the_rest(tmp_path, mixed_folder, cpu_scores):
    from sliq_cli.cli.app import app

    folder = tmp_path / "photos"
    folder.mkdir()
    for p in mixed_folder:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_bytes(mixed_folder[0].read_bytes()[:2000])  # a truncated JPEG: nvJPEG must not
    result = CliRunner().invoke(app, ["score", str(folder), "--device", "cuda", "--format", "jsonl"])
    assert result.exit_code == 1
    records = {r["path"].rsplit("/", 1)[-1]: r for r in map(json.loads, result.stdout.splitlines())}
    assert records["broken.jpg"]["score"] is None and "broken.jpg" in records["broken.jpg"]["path"]
    good = np.array([records[p.name]["score"] for p in mixed_folder])
    assert np.abs(good - cpu_scores).max() < CUDA_VS_CPU


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_nvjpeg_turns_photos_upright_as_pillow_does(tmp_path, example_photos, orientation):
    from sliq_cli.api import load
    from sliq_cli.images import load_image, pil_to_tensor

    extractor = load(device="cuda").extractor
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "turned.jpg"
    Image.open(example_photos[0]).convert("RGB").resize((640, 427)).save(path, quality=92, exif=exif.tobytes())
    item = extractor._load(path)
    assert item[0] == "jpeg" and item[3] == orientation  # goes to nvJPEG, with its orientation
    (gpu,) = extractor._decode_gpu([item])
    cpu = pil_to_tensor(load_image(path))  # (3, H, W), upright
    assert gpu.shape == cpu.shape
    assert (gpu.cpu().float() - cpu.float()).abs().mean() < 2  # nvJPEG's IDCT against libjpeg's: ~0.5 of 255
