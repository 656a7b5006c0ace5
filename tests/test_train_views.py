"""OLA crops, flat-buffer crops, colour spaces, the step-addressable sampler and the view maker."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sliq_cli.tadac.texts import VARIANTS_PER_PRISTINE
from sliq_cli.train.data import Sampler
from sliq_cli.train.views import COLOUR_SPACES, crop_flat, ola_positions, random_colour_space, to_colour_space


def test_ola_overlap_in_range_and_inside_image():
    rng = np.random.default_rng(0)
    sizes = np.array([[384, 512]] * 500 + [[512, 384]] * 500 + [[321, 481]] * 500)
    xy1, xy2 = ola_positions(sizes, 224, rng)
    d = np.abs(xy1 - xy2)
    overlap = (224 - d[:, 0]) * (224 - d[:, 1]) / 224**2
    assert overlap.min() >= 0.10 and overlap.max() <= 0.30
    for xy in (xy1, xy2):
        assert (xy >= 0).all() and (xy[:, 0] + 224 <= sizes[:, 1]).all() and (xy[:, 1] + 224 <= sizes[:, 0]).all()
    assert 0.3 < np.mean(xy1[:, 0] > xy2[:, 0]) < 0.7  # shifts in both directions


def test_ola_small_image_takes_least_overlap():
    xy1, xy2 = ola_positions(np.array([[256, 256]] * 50), 224, np.random.default_rng(1))
    d = np.abs(xy1 - xy2)
    assert (d.max(axis=0) == 32).all() and (d.mean(axis=0) > 28).all()


def test_crop_flat_mixed_shapes():
    a, b = torch.rand(3, 40, 50), torch.rand(3, 30, 35)
    flat = torch.cat([a.reshape(-1), b.reshape(-1)])
    crops = crop_flat(flat, torch.tensor([0, a.numel(), 0]), torch.tensor([[40, 50], [30, 35], [40, 50]]),
                      torch.tensor([[3, 5], [10, 0], [34, 24]]), 16)
    assert torch.equal(crops[0], a[:, 5:21, 3:19])
    assert torch.equal(crops[1], b[:, 0:16, 10:26])
    assert torch.equal(crops[2], a[:, 24:40, 34:50])


def test_colour_spaces():
    x = torch.rand(4, 3, 32, 32)
    for space in COLOUR_SPACES:
        y = to_colour_space(x, space)
        assert y.shape == x.shape and y.min() >= -1e-6 and y.max() <= 1 + 1e-6
    grey = to_colour_space(x, "gray")
    assert torch.equal(grey[:, 0], grey[:, 1])
    out = random_colour_space(x, torch.tensor([0, 1, 3, 0]))
    assert torch.equal(out[0], x[0]) and torch.equal(out[3], x[3])
    assert torch.allclose(out[2], to_colour_space(x[2:3], "hsv")[0])


def _records(n_pristine, n_authentic):
    shapes = [[512, 384], [384, 512], [512, 341]]
    return [SimpleNamespace(kind="pristine", work_size=shapes[i % 3]) for i in range(n_pristine)] + [
        SimpleNamespace(kind="authentic", work_size=[500, 500]) for _ in range(n_authentic)
    ]


def test_sampler_is_a_pure_function_of_the_step():
    records = _records(20, 30)
    s = Sampler(records, batch_size=32, authentic_fraction=0.5, group_size=8, seed=3)
    assert s.epoch_samples == 20 * VARIANTS_PER_PRISTINE + 30
    again = Sampler(records, batch_size=32, authentic_fraction=0.5, group_size=8, seed=3)
    for step in (0, 5, 200, 3):  # any order: a resumed run sees the same batches
        rec, var = s.local_batch(step)
        rec2, var2 = again.local_batch(step)
        assert np.array_equal(rec, rec2) and np.array_equal(var, var2)
    rec, var = s.local_batch(7)
    kinds = [records[i].kind for i in rec]
    assert kinds.count("authentic") == 16 and (var[np.array(kinds) == "authentic"] == 0).all()
    # Two processes split the global batch between them.
    r0, _ = s.local_batch(7, 0, 2)
    r1, _ = s.local_batch(7, 1, 2)
    assert sorted(np.concatenate([r0, r1]).tolist()) == sorted(rec.tolist())


def test_sampler_cycle_covers_every_variant_in_same_shape_groups():
    records = _records(6, 0)
    s = Sampler(records, batch_size=16, authentic_fraction=0.5, group_size=4, seed=0)
    total = 6 * VARIANTS_PER_PRISTINE
    rec, var = s._take("synthetic", 0, total)
    assert len(set(zip(rec.tolist(), var.tolist()))) == total  # each (record, variant) once per cycle
    # Records come in groups sharing one variant (one distort call each), here 2 records of each shape, so groups of 2.
    runs = np.split(var, np.flatnonzero(np.diff(var)) + 1)
    assert np.mean([len(r) for r in runs]) > 1.5
    shapes_per_run = [len({tuple(records[i].work_size) for i in chunk}) for chunk in np.split(rec, np.cumsum([len(r) for r in runs])[:-1]) if len(chunk) <= 2]
    assert max(shapes_per_run) == 1


def test_sampler_rejects_empty_database():
    with pytest.raises(Exception, match="no training records"):
        Sampler([], 8, 0.5, 8, 0)
