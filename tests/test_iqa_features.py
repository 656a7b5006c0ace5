"""The streaming feature extractor: batched results equal single-image ones, any mix of sizes, errors per file,
and the producer thread never outlives its consumer."""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from sliq_cli.errors import UsageError
from sliq_cli.iqa.batching import BatchPolicy
from sliq_cli.iqa.features import FeatureExtractor, extract_features
from sliq_cli.model.checkpoint import load_encoder


@pytest.fixture(scope="module")
def encoder(tiny_encoder_dir):
    return load_encoder(tiny_encoder_dir)


@pytest.fixture()
def mixed(tmp_path, example_photos):
    """Example photo crops in three sizes (JPEG and PNG), interleaved, with a broken file in the middle."""
    paths = []
    sizes = [(64, 48), (48, 64), (80, 60)]
    for i in range(9):
        src = Image.open(example_photos[i % len(example_photos)]).convert("RGB")
        w, h = sizes[i % 3]
        p = tmp_path / f"im{i}.{'jpg' if i % 2 else 'png'}"
        src.resize((w, h)).save(p)
        paths.append(p)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    paths.insert(4, broken)
    return paths


def _sliq_threads():
    return [t for t in threading.enumerate() if t.name.startswith("sliq-images")]


@pytest.mark.parametrize("canvas", [False, True])
def test_batched_equals_one_by_one_and_keeps_order(encoder, mixed, canvas):
    together = extract_features(encoder, mixed, batch_size=4, canvas=canvas)
    assert list(together.failed) == [str(mixed[4])] and "corrupt" in together.failed[str(mixed[4])]
    assert np.isnan(together.features[4]).all() and together.ok.sum() == 9
    for i, p in enumerate(mixed):
        if i == 4:
            continue
        alone = extract_features(encoder, [p], batch_size=1).features[0]
        np.testing.assert_allclose(together.features[i], alone, rtol=1e-4, atol=1e-5)
    assert not _sliq_threads()


@pytest.mark.parametrize("canvas", [False, True])
def test_decoded_images_get_the_features_of_their_files(encoder, mixed, canvas):
    """What a Ray actor scores (arrays decoded in another task) gets what the files get, canvases or not; a too-small
    image is an error of its own index."""
    good = [p for i, p in enumerate(mixed) if i != 4]
    files = {i: f for i, f, _ in FeatureExtractor(encoder, batch_size=4, canvas=canvas).iter(good)}
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in good] + [np.zeros((8, 40, 3), np.uint8)]
    got = list(FeatureExtractor(encoder, batch_size=4, canvas=canvas).decoded(arrays))
    assert sorted(i for i, _, _ in got) == list(range(len(arrays)))
    for i, feat, err in got:
        if i == len(good):
            assert feat is None and "too small" in err
        else:
            assert err is None
            np.testing.assert_allclose(feat, files[i], rtol=1e-4, atol=1e-5)


def test_each_index_exactly_once(encoder, mixed):
    seen = [i for i, _, _ in FeatureExtractor(encoder, batch_size=2, workers=3).iter(mixed)]
    assert sorted(seen) == list(range(len(mixed)))


def test_stopping_early_releases_the_producer(encoder, mixed):
    stream = FeatureExtractor(encoder, batch_size=1, workers=2).iter(mixed * 4)
    next(stream)
    assert _sliq_threads()
    stream.close()
    assert not _sliq_threads()


def test_a_producer_failure_reaches_the_caller(encoder, mixed, monkeypatch):
    def boom(self, t):
        raise RuntimeError("resize failed")

    monkeypatch.setattr(FeatureExtractor, "_fit", boom)
    with pytest.raises(RuntimeError, match="resize failed"):
        list(FeatureExtractor(encoder, batch_size=2).iter(mixed))
    assert not _sliq_threads()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU refusal is what is tested")
def test_compile_needs_cuda(encoder):
    with pytest.raises(UsageError, match="--compile needs a CUDA device"):
        FeatureExtractor(encoder, compile=True)


@pytest.mark.parametrize("compile_seconds", [0.0, 1e9])
@pytest.mark.parametrize("canvas", [False, True])
def test_compile_only_where_it_pays(encoder, tmp_path, example_photos, monkeypatch, compile_seconds, canvas):
    """--compile's decision, run on the CPU with torch.compile replaced by a recorder: a shape goes to the compiled
    function only once it has run eager, been timed, and the images still to come repay the compilation (free here:
    every repeated shape compiles; never repaid: none does), and every image gets the eager features either way."""
    from sliq_cli.iqa import compiling

    calls, compilations = [], []

    def fake_compile(fn, mode=None, dynamic=None):
        assert (mode, dynamic) == ("reduce-overhead", False)
        compilations.append(fn)

        def recorded(x, region_table=None):
            calls.append(tuple(x.shape))
            return fn(x, region_table)
        return recorded

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(compiling, "COMPILE_SECONDS", compile_seconds)
    src = Image.open(example_photos[0]).convert("RGB")
    paths = []
    for i, w in enumerate([40, 72] * 12):  # 2 sizes, 12 images each: 3 batches of 4 per size
        p = tmp_path / f"im{i}.png"
        src.resize((w, 36)).save(p)
        paths.append(p)
    ex = FeatureExtractor(encoder, batch_size=4, canvas=canvas)
    ex.compile = True  # the CPU refuses --compile; the bookkeeping under test does not depend on the device
    got = {i: f for i, f, _ in ex.iter(paths)}
    assert len(got) == len(paths)
    if compile_seconds:  # nothing compiled, nor Inductor even set up (its import alone takes seconds)
        assert calls == [] and compilations == [] and "no batch shape compiled" in ex.compiler.report()
    else:
        ran = Counter()  # every call of each batch shape, eager or compiled
        for (shape, _), n in ex.compiler.calls.items():
            ran[shape] += n
        compiled = Counter(calls)
        # some shape compiled, none before its two eager calls (the first builds cuDNN plans, the second is timed);
        # which later calls compile depends on the measured cost of the first compilation
        assert compiled and all(n <= ran[shape] - 2 for shape, n in compiled.items())
        assert "compiled" in ex.compiler.report()
    reference = extract_features(encoder, paths, batch_size=1).features
    np.testing.assert_allclose(np.stack([got[i] for i in range(len(paths))]), reference, rtol=1e-4, atol=1e-5)


def _batches(ex, paths) -> list[tuple[int, tuple]]:
    """(images, batch shape) of each batch the extractor runs, in order."""
    seen = []
    forward = ex._forward

    def recorded(scale_features, batch, layout, n):
        seen.append((n, tuple(batch.shape)))
        return forward(scale_features, batch, layout, n)

    ex._forward = recorded
    list(ex.iter(paths))
    return seen


def test_leftover_buckets_merge_at_the_end(encoder, tmp_path, example_photos):
    """Images whose canvases differ end in one batch when the larger canvas holds the others cheaply (one shape
    fewer), with the features each image gets alone; as the run's first batch it is padded to full rows."""
    src = Image.open(example_photos[0]).convert("RGB")
    paths = []
    for i, w in enumerate([100, 100, 100, 130, 130]):  # canvases 64 x 128, then 64 x 160 (too large to reuse)
        p = tmp_path / f"im{i}.png"
        src.resize((w, 60)).save(p)
        paths.append(p)
    ex = FeatureExtractor(encoder, batch_size=16, canvas=True)
    assert _batches(ex, paths) == [(5, (16, 3, 64, 160))]
    together = extract_features(encoder, paths, batch_size=16, canvas=True).features
    alone = np.stack([extract_features(encoder, [p], batch_size=1).features[0] for p in paths])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)


def test_the_first_batch_goes_early(encoder, tmp_path, example_photos):
    """The model starts after the policy's first_batch images, not after a full batch: the first score comes early."""
    first = BatchPolicy().first_batch
    src = Image.open(example_photos[0]).convert("RGB").resize((40, 32))  # >= the trunk's stride
    paths = []
    for i in range(first + 5):
        src.save(tmp_path / f"im{i}.png")
        paths.append(tmp_path / f"im{i}.png")
    sizes = [n for n, _ in _batches(FeatureExtractor(encoder, batch_size=64), paths)]
    assert sizes == [first, 5]


@pytest.mark.parametrize("new_shape_pixels, leftover_rows", [(None, 16), (0, 8)])
def test_a_short_batch_takes_the_full_shape_already_run(encoder, tmp_path, example_photos, new_shape_pixels,
                                                         leftover_rows):
    """Leftovers run in the full batch's shape (no new shape to plan) while the filler costs less than a new shape
    would; above that, they are padded to a multiple of 8 rows only."""
    policy = BatchPolicy() if new_shape_pixels is None else BatchPolicy(new_shape_pixels=new_shape_pixels)
    src = Image.open(example_photos[0]).convert("RGB")
    paths = []
    for i in range(21):
        src.resize((40 + i % 3, 32)).save(tmp_path / f"im{i}.png")
        paths.append(tmp_path / f"im{i}.png")
    batches = _batches(FeatureExtractor(encoder, batch_size=16, canvas=True, policy=policy), paths)
    assert [n for n, _ in batches] == [16, 5]
    assert batches[0][1][0] == 16 and batches[1][1][0] == leftover_rows and batches[0][1][1:] == batches[1][1][1:]


@pytest.mark.parametrize("per_batch, own", [(1, [False, False, True, True, True, False]),
                                             (2, [False, False, True, False, False])])
def test_large_photos_of_a_repeated_size_run_at_their_own_size(encoder, tmp_path, example_photos, per_batch, own):
    """Large photos (a batch holds at most two) go on canvases until their size has come often enough to repay a new
    shape, then at their own size (no canvas, no masks; a short batch of them on a canvas of their size); features
    equal one-by-one ones either way."""
    # a batch holds one or two 70 x 100 photos: all six are large
    policy = BatchPolicy(new_shape_pixels=int(2.5 * BatchPolicy.canvas_cost * 100 * 70), pixels_per_image=100 * 70)
    src = Image.open(example_photos[0]).convert("RGB")
    paths = []
    for i in range(5):
        src.resize((100, 70)).save(tmp_path / f"big{i}.png")
        paths.append(tmp_path / f"big{i}.png")
    src.resize((90, 60)).save(tmp_path / "other.png")  # large too, but its size comes once: a canvas
    paths.append(tmp_path / "other.png")
    ex = FeatureExtractor(encoder, batch_size=per_batch, canvas=True, policy=policy)
    layouts = []
    forward = ex._forward
    ex._forward = lambda sf, batch, layout, n: layouts.append(layout) or forward(sf, batch, layout, n)
    got = dict((i, f) for i, f, _ in ex.iter(paths))
    # the third 70 x 100 photo repays the new shape (2.5 photos' canvas cost); with two a batch, the fifth is left
    # over and runs on a canvas of its own size, as does the 60 x 90 one
    assert [layout is None for layout in layouts] == own
    alone = extract_features(encoder, paths, batch_size=1).features
    assert np.allclose(np.stack([got[i] for i in range(len(paths))]), alone, atol=2e-5)


def test_reading_ahead_is_bounded(encoder, tmp_path, example_photos, monkeypatch):
    """A caller that takes one result has not made the pool read the whole folder (memory stays bounded on a folder
    of a million files)."""
    src = Image.open(example_photos[0]).convert("RGB").resize((32, 32))
    paths = []
    for i in range(400):
        src.save(tmp_path / f"im{i}.png")
        paths.append(tmp_path / f"im{i}.png")
    loads = []
    load = FeatureExtractor._load
    monkeypatch.setattr(FeatureExtractor, "_load", lambda self, p, **kw: loads.append(p) or load(self, p, **kw))
    stream = FeatureExtractor(encoder, batch_size=1, workers=1).iter(paths)
    next(stream)
    stream.close()
    assert len(loads) < 100
