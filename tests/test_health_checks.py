"""Code-health fixes (issue #15): guards, stop signals and recorded fallbacks, each tested on the CPU."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sliq_cli.images import ImageLoadError, load_image
from sliq_cli.iqa.features import FeatureExtractor, jpeg_size_error

from .conftest import make_tiny_encoder


def _jpeg(path, w=100, h=80):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, "JPEG")
    return path


def test_gpu_jpeg_path_keeps_the_decompression_bomb_guard(tmp_path, monkeypatch):
    path = _jpeg(tmp_path / "big.jpg")  # 8,000 pixels
    data = path.read_bytes()
    assert jpeg_size_error(data, path) is None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 8,000 > 2 x 3,000: Pillow refuses it
    err = jpeg_size_error(data, path)
    assert isinstance(err, ImageLoadError) and err.path == str(path) and "decompression bomb" in err.reason
    with pytest.raises(ImageLoadError) as cpu:  # the CPU path's error, word for word
        load_image(path)
    assert str(cpu.value) == str(err)
    # the extractor's nvJPEG branch (forced on, no GPU needed: it only reads bytes) returns that error
    extractor = FeatureExtractor(make_tiny_encoder(), device="cpu")
    extractor.cuda = True
    assert str(extractor._load(path)) == str(err)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # between 1x and 2x: only Pillow's warning, downscaled
    assert jpeg_size_error(data, path) is None
    assert extractor._load(path)[0] == "jpeg"


def test_unparsable_jpeg_header_is_left_to_the_decoders(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG")
    assert jpeg_size_error(buf.getvalue()[:20], tmp_path / "cut.jpg") is None


def test_truncated_jpeg_goes_to_pillow_not_nvjpeg(tmp_path, example_photos):
    """nvJPEG decodes a cut file without error (measured on the H200): such bytes must take the CPU path's error."""
    whole = next(p for p in example_photos if p.suffix.lower() in (".jpg", ".jpeg"))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[:2000])
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(whole.read_bytes() + b"\x00" * 10)
    extractor = FeatureExtractor(make_tiny_encoder(), device="cpu")
    extractor.cuda = True  # the nvJPEG branch only reads bytes: no GPU needed
    assert extractor._load(whole)[0] == "jpeg" and extractor._load(padded)[0] == "jpeg"
    err = extractor._load(cut)
    assert isinstance(err, ImageLoadError) and err.path == str(cut)
    with pytest.raises(ImageLoadError) as cpu:
        load_image(cut)
    assert str(cpu.value) == str(err)


def test_background_steps_stop_when_the_consumer_fails():
    from sliq_cli.train.data import BackgroundSteps

    made = []
    producer = BackgroundSteps(lambda step: made.append(step) or step * 10, range(10**6), depth=2, name="test")
    assert [producer.get(s) for s in range(3)] == [0, 10, 20]
    time.sleep(0.3)  # the thread fills the queue and then blocks on it
    assert producer.thread.is_alive() and len(made) <= 3 + 2 + 1
    producer.close(timeout=5)
    assert not producer.thread.is_alive() and producer.queue.empty() and len(made) <= 3 + 2 + 1


def test_background_steps_hand_errors_over_and_close_after_them():
    from sliq_cli.train.data import BackgroundSteps

    def make(step):
        if step == 2:
            raise ValueError("bad step")
        return step

    producer = BackgroundSteps(make, range(5), depth=4, name="test")
    assert producer.get(0) == 0 and producer.get(1) == 1
    with pytest.raises(ValueError, match="bad step"):
        producer.get(2)
    producer.close(timeout=5)
    assert not producer.thread.is_alive()


def test_background_close_runs_the_generators_cleanup_on_its_thread():
    from sliq_cli.background import Background

    cleaned = []

    def items():
        try:
            yield from range(10**6)
        finally:
            cleaned.append(True)  # e.g. a thread pool's shutdown: done before close() returns

    background = Background(items(), depth=2, name="test")
    assert next(background) == 0
    background.close()
    assert cleaned and not background.thread.is_alive() and background.queue.empty()


def test_follow_leaves_a_half_written_line_for_the_next_poll(tmp_path):
    from sliq_cli.train.loop import _follow

    log, seen = tmp_path / "log.jsonl", []
    assert _follow(log, 0, seen.append) == 0  # not there yet
    log.write_text('{"step": 1}\n{"step": 2, "lo')
    assert _follow(log, 0, seen.append) == 1 and seen == [{"step": 1}]
    with open(log, "a") as f:
        f.write('ss": 0.5}\n')
    assert _follow(log, 1, seen.append) == 2 and seen == [{"step": 1}, {"step": 2, "loss": 0.5}]
    assert _follow(log, 2, seen.append) == 2 and len(seen) == 2


def test_correlations_say_which_mapping_plcc_used(monkeypatch):
    from sliq_cli.iqa import metrics

    rng = np.random.default_rng(0)
    pred = rng.normal(size=40)
    mos = 50 + 40 * np.tanh(pred) + rng.normal(scale=2, size=40)
    assert metrics.correlations(pred, mos)["plcc_mapping"] == "logistic"
    assert metrics.correlations(pred[:4], mos[:4])["plcc_mapping"] == "linear"  # too few points to fit
    assert metrics.correlations(pred, mos, logistic=False)["plcc_mapping"] == "none"

    def no_convergence(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    import scipy.optimize

    monkeypatch.setattr(scipy.optimize, "curve_fit", no_convergence)
    out = metrics.correlations(pred, mos)
    assert out["plcc_mapping"] == "linear" and out["plcc"] == pytest.approx(out["plcc_raw"], abs=1e-6)
    assert set(metrics.summarize([out, out])) == set(metrics.METRICS)  # the label is not averaged


def test_gpu_jpeg_fallback_warns_once(monkeypatch):
    import warnings

    import torch

    from sliq_cli.tadac import codecs

    def no_cuda_jpeg(*args, **kwargs):
        raise TypeError("encode_jpeg expects CPU tensors")

    monkeypatch.setattr(codecs, "encode_jpeg", no_cuda_jpeg)
    monkeypatch.setattr(codecs, "_warned_cpu_jpeg", False)
    u8 = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.warns(RuntimeWarning, match="JPEG distortions run on the CPU.*TypeError: encode_jpeg expects"):
        assert codecs._jpeg_roundtrip_cuda(u8, 50) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert codecs._jpeg_roundtrip_cuda(u8, 50) is None


def test_save_state_warns_when_an_old_state_cannot_be_removed(tmp_path, monkeypatch):
    import shutil

    import torch

    from sliq_cli.train.config import PretrainConfig
    from sliq_cli.train.loop import SliqueNet
    from sliq_cli.train.state import save_state

    net = SliqueNet(torch.nn.Linear(3, 2), None)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    cfg = PretrainConfig(out=str(tmp_path))
    save_state(tmp_path, net, optimizer, 1, cfg)
    real_rmtree = shutil.rmtree

    def stuck(path, *args, **kwargs):
        if path.name == "step-000000001":
            raise PermissionError(13, "Permission denied", str(path))
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", stuck)
    with pytest.warns(RuntimeWarning, match="could not remove the old training state .*step-000000001"):
        save_state(tmp_path, net, optimizer, 2, cfg)
    assert json.loads((tmp_path / "state" / "latest.json").read_text())["step"] == 2


def test_a_database_moves_with_its_sources(tmp_path, example_photos):
    import os
    import shutil

    from sliq_cli.tadac.database import build_database, load_database, load_work_image

    src = tmp_path / "project" / "photos"
    src.mkdir(parents=True)
    for photo in example_photos[:2]:
        shutil.copy(photo, src / photo.name)
    build_database([src], tmp_path / "project" / "db", authentic_globs=["*"])
    moved = tmp_path / "elsewhere" / "project"
    shutil.copytree(tmp_path / "project", moved)
    shutil.rmtree(tmp_path / "project")  # the original sources are gone: only the moved copy can be read
    db = load_database(moved / "db")
    assert sorted(Path(r.path).name for r in db.records) == sorted(p.name for p in example_photos[:2])
    for r in db.records:
        assert Path(r.path).is_absolute() and Path(r.path).parent == (moved / "photos").resolve()
        assert load_work_image(r).shape == (3, r.work_size[1], r.work_size[0])

    # a manifest of absolute paths (written before paths became relative) still loads as it is
    manifest = moved / "db" / "manifest.jsonl"
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps({**r, "path": os.path.abspath(moved / "db" / r["path"])}) + "\n"
                                for r in lines))
    assert [r.path for r in load_database(moved / "db").records] == [r.path for r in db.records]


def test_a_bad_argument_to_the_library_is_a_value_error():
    """UsageError is the CLI's exit code 2 and, for a Python caller, the ValueError a bad argument is."""
    from sliq_cli.errors import UsageError
    from sliq_cli.hub.cache import check_repo_id

    with pytest.raises(ValueError, match="not a Hub repository id") as bad:
        check_repo_id("no-slash")
    assert isinstance(bad.value, UsageError) and bad.value.exit_code == 2


def test_a_folder_of_one_batch_decodes_on_the_cpu(tmp_path):
    """On CUDA, a folder that fits in the first batch is decoded by Pillow (no torchvision import, no nvJPEG start);
    a larger one hands its JPEGs on as bytes for nvJPEG. The routing only reads files: no GPU needed."""
    paths = [_jpeg(tmp_path / f"{k}.jpg") for k in range(3)]
    extractor = FeatureExtractor(make_tiny_encoder(), device="cpu")
    extractor.cuda = True
    decoded = extractor._load_chunk(paths, cpu=True)
    assert [tuple(t.shape) for t in decoded] == [(3, 80, 100)] * 3
    assert [t[0] for t in extractor._load_chunk(paths)] == ["jpeg"] * 3
    first = extractor.planner().first
    assert extractor.pillow_only(first) and not extractor.pillow_only(first + 1)
