"""The batch planner on plain image sizes: no images, no model, no device."""

from __future__ import annotations

import random

import pytest

from sliq_cli.iqa.batching import BatchPlanner, BatchPolicy
from sliq_cli.model.canvas import fitted_side
from sliq_cli.model.registry import create_model

# EfficientNet-Lite0's stride-2 layers ("same" padding): where a canvas may hold an image
LITE = create_model("slique-efficientnet-lite0").trunk.downsampling


def _started(batch_size: int, canvas: bool, **policy) -> BatchPlanner:
    """A planner past its first batch (so the first-batch rule does not apply)."""
    planner = BatchPlanner(batch_size, LITE, canvas=canvas, policy=BatchPolicy(**policy))
    planner.started = True
    return planner


def _own(size) -> tuple[int, int]:
    return fitted_side(size[0], LITE), fitted_side(size[1], LITE)


def _plan(planner: BatchPlanner, sizes) -> list:
    batches = []
    for i, size in enumerate(sizes):
        batches += planner.add(i, size, image=f"img{i}")
    return batches + planner.finish()


def test_rows_are_bounded_in_pixels():
    """batch_size images of photo size, fewer of large ones (device memory follows pixels), at least one."""
    planner = BatchPlanner(8, LITE, canvas=False)
    assert planner.rows((384, 512)) == 8
    assert planner.rows((1024, 1024)) == 2
    assert planner.rows((4032, 3024)) == 1


def test_equal_sizes_batch_together_without_canvas():
    """Canvas off (a CPU): each size its own bucket, a bucket goes when full, plain stacks."""
    planner = _started(4, canvas=False)
    sizes = [(40, 50), (60, 70)] * 4 + [(40, 50)]
    got = []
    for i, size in enumerate(sizes):
        got.append([b.indices for b in planner.add(i, size)])
    assert got[6] == [(0, 2, 4, 6)] and got[7] == [(1, 3, 5, 7)]
    assert sum(map(len, got)) == 2
    (last,) = planner.finish()
    assert last.indices == (8,) and last.canvas is None and last.rows == 1 and last.sizes == ((40, 50),)


def test_the_first_batch_goes_after_first_batch_images():
    """The fullest bucket (images x pixels) goes once first_batch images have come, before any bucket is full."""
    planner = BatchPlanner(64, LITE, canvas=False, policy=BatchPolicy(first_batch=5))
    sizes = [(40, 40), (80, 80), (40, 40), (80, 80), (40, 40)]
    assert not any(planner.add(i, s) for i, s in enumerate(sizes[:4]))
    (first,) = planner.add(4, sizes[4])
    assert first.indices == (1, 3)  # 2 x 80 x 80 pixels wait against 3 x 40 x 40
    assert planner.started and not planner.add(5, (40, 40))  # later batches wait until they are full


def test_too_many_waiting_pixels_flush_the_fullest_bucket():
    """At most window_batches x batch_pixels decoded pixels wait: then the bucket holding the most pixels goes."""
    planner = _started(100, canvas=False, window_batches=1, pixels_per_image=100)  # 10,000 pixels at most
    sizes = [(10, 10)] * 10 + [(20, 20)] * 22 + [(10, 10)]  # 9,900 pixels; a (20, 20) batch holds 25
    assert not any(planner.add(i, s) for i, s in enumerate(sizes))
    (batch,) = planner.add(len(sizes), (20, 20))
    assert batch.indices == tuple(range(10, 32)) + (33,) and planner.pending == 11 * 100


def test_images_share_a_ladder_canvas_and_a_canvas_in_use_takes_smaller_images():
    planner = BatchPlanner(16, LITE, canvas=True)
    planner.add(0, (300, 500))
    planner.add(1, (250, 400))  # its own canvas is smaller, but within canvas_reuse_pixels of the one in use
    planner.add(2, (40, 40))  # far smaller: in the canvas in use too
    planner.add(3, (600, 100))  # taller: a canvas of its own
    assert _own((300, 500)) != _own((250, 400))
    assert {k: [i for i, _, _ in v] for k, v in planner.buckets.items()} == {_own((300, 500)): [0, 1, 2],
                                                                            _own((600, 100)): [3]}
    assert [(b.canvas, b.indices) for b in planner.finish()] == [(_own((300, 500)), (0, 1, 2)),
                                                                 (_own((600, 100)), (3,))]


def test_a_full_canvas_batch_goes_at_once_and_exact_fits_need_no_canvas():
    side = fitted_side(64, LITE)
    planner = _started(4, canvas=True)
    got = [b for i in range(4) for b in planner.add(i, (side, side))]
    assert len(got) == 1 and got[0].canvas is None and got[0].rows == 4  # full and one size: a plain stack
    got = [b for i in range(4) for b in planner.add(4 + i, (side - 5, side))]
    assert len(got) == 1 and got[0].canvas == (side, side) and got[0].rows == 4


@pytest.mark.parametrize("new_shape_pixels, rows", [(BatchPolicy.new_shape_pixels, 16), (0, 8)])
def test_a_short_batch_takes_a_full_shape_already_run_else_a_row_multiple(new_shape_pixels, rows):
    policy = BatchPolicy(new_shape_pixels=new_shape_pixels)
    shapes_run = set()
    planner = BatchPlanner(16, LITE, canvas=True, policy=policy, shapes_run=shapes_run)
    batches = _plan(planner, [(40 + i % 3, 32) for i in range(21)])
    assert [len(b.indices) for b in batches] == [16, 5]
    assert [b.rows for b in batches] == [16, rows] and batches[0].canvas == batches[1].canvas
    assert shapes_run == {(16, *batches[0].canvas), (rows, *batches[0].canvas)}


def test_a_later_run_reuses_the_shapes_an_earlier_one_ran():
    """Not the first batch, but its full shape already ran in an earlier planner of the process: padded to it."""
    planner = _started(16, canvas=True)
    planner.shapes_run.add((16, *_own((40, 30))))
    (batch,) = _plan(planner, [(40, 30)] * 3)
    assert batch.rows == 16
    (fresh,) = _plan(_started(16, canvas=True), [(40, 30)] * 3)
    assert fresh.rows == 8


def test_leftover_buckets_merge_into_a_larger_canvas_at_the_end():
    """Buckets whose canvases differ end in one batch when the larger canvas holds the others cheaply."""
    planner = BatchPlanner(16, LITE, canvas=True)
    batches = _plan(planner, [(60, 100)] * 3 + [(60, 130)] * 2)
    assert len(batches) == 1 and batches[0].indices == (3, 4, 0, 1, 2)
    assert batches[0].canvas == _own((60, 130)) and batches[0].rows == 16
    # too costly to pad (each image would waste more than a new shape): two batches
    planner = BatchPlanner(16, LITE, canvas=True, policy=BatchPolicy(new_shape_pixels=100))
    assert len(_plan(planner, [(60, 100)] * 3 + [(60, 130)] * 2)) == 2


def test_large_photos_of_a_repeated_size_get_their_own_shape():
    """A batch holds one 70 x 100 photo: large. Canvases until the size has come 2.5 photos' canvas cost, then its
    own size (a plain stack); a size that comes once stays on a canvas."""
    policy = BatchPolicy(new_shape_pixels=int(2.5 * 0.2 * 7000), pixels_per_image=7000, canvas_cost=0.2)
    planner = BatchPlanner(1, LITE, canvas=True, policy=policy)
    batches = _plan(planner, [(70, 100)] * 4 + [(60, 90)])
    canvas = _own((70, 100))  # where the 60 x 90 one goes too: within canvas_reuse_pixels of its own
    assert [b.canvas for b in batches] == [canvas, canvas, None, None, canvas]
    assert [b.rows for b in batches] == [1] * 5 and [b.indices for b in batches] == [(i,) for i in range(5)]


def test_every_index_exactly_once_in_completion_order():
    """A thousand random sizes, canvas or not, any batch size: each index in exactly one batch, its size with it,
    and no batch beyond its rows or the pixel bound."""
    rng = random.Random(0)
    sizes = [(rng.randint(32, 1500), rng.randint(32, 1500)) for _ in range(1000)]
    for canvas in (False, True):
        for batch_size in (1, 7, 64):
            planner = BatchPlanner(batch_size, LITE, canvas=canvas)
            batches = _plan(planner, sizes)
            indices = [i for b in batches for i in b.indices]
            assert sorted(indices) == list(range(len(sizes)))
            for b in batches:
                assert [sizes[i] for i in b.indices] == list(b.sizes)
                assert b.images == tuple(f"img{i}" for i in b.indices)
                assert len(b.indices) <= b.rows <= batch_size
                if b.canvas is None:
                    assert len(set(b.sizes)) == 1 and b.rows == len(b.indices)
                else:
                    assert all(h <= b.canvas[0] and w <= b.canvas[1] for h, w in b.sizes)
            assert planner.pending == 0 and not planner.buckets
