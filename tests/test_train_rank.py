"""RankIQA beside the paper's losses (--rank-weight): the margin loss, the distortion ladders it ranks, and a run
that trains, logs and resumes with them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sliq_cli.errors import Interrupted
from sliq_cli.tadac.database import load_database
from sliq_cli.train.config import PretrainConfig
from sliq_cli.train.data import N_LEVELS, ImageStore, LadderMaker
from sliq_cli.train.loop import pretrain
from sliq_cli.train.loss import LadderRankLoss

from .test_train_pretrain import TINY, _db, _losses, _one_thread  # noqa: F401 (autouse: CPU training, one thread)


def test_rank_loss_is_zero_only_for_ladders_ordered_by_the_margin():
    loss = LadderRankLoss(margin=1.0)
    assert loss(torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])) == 0
    assert loss(torch.zeros(2, 5)) == pytest.approx(1.0)  # every pair misses the margin by exactly 1
    # levels 2 and 3 swapped: only that pair misses, by 1 + 1; the other 9 pairs keep a gap >= 1
    swapped = torch.tensor([[4.0, 2.0, 3.0, 1.0, 0.0]])
    assert loss(swapped) == pytest.approx(2 / 10)
    scores = torch.zeros(1, 5, requires_grad=True)
    loss(scores).backward()
    assert (scores.grad[0, :2] < 0).all() and (scores.grad[0, -2:] > 0).all()  # milder levels pushed up
    with pytest.raises(ValueError):
        LadderRankLoss(margin=0)
    for bad in (dict(rank_weight=-1), dict(rank_margin=0), dict(rank_ladders=1, gpus=2, batch_size=8)):
        with pytest.raises(ValueError):
            PretrainConfig(db="d", out="o", **bad)


def test_ladders_are_one_window_distorted_ever_more_strongly(tmp_path, example_photos):
    db = _db(tmp_path, example_photos, pristine=True)
    records = [r for r in load_database(db).records if r.split == "train"]
    store = ImageStore.build(records, torch.device("cpu"), 1, 1.0)
    maker = LadderMaker(store, records, 64, 4, torch.device("cpu"))
    ladders = maker(24, np.random.default_rng(0))
    assert ladders.shape == (24, N_LEVELS, 3, 64, 64) and 0 <= ladders.min() and ladders.max() <= 1
    assert torch.equal(ladders, maker(24, np.random.default_rng(0)))  # a pure function of the draws
    # Every level is the same window: level 2 stays close to level 1, and each further level moves away from it.
    moved = (ladders - ladders[:, :1]).abs().mean(dim=(2, 3, 4))  # (24, L): mean change from level 1
    assert (moved[:, -1] >= moved[:, 1]).float().mean() >= 0.9
    assert moved[:, -1].mean() > 2 * moved[:, 1].mean()
    # The windows differ between ladders (another photo or place), not within one.
    assert (ladders[1:, 0] - ladders[:-1, 0]).abs().mean() > moved[:, 1].mean()


def test_a_run_with_the_ranking_loss_logs_it_and_resumes_exactly(tmp_path, example_photos):
    db = _db(tmp_path, example_photos, pristine=True)
    cfg = dict(TINY, db=str(db), batch_size=8, steps=4, checkpoint_every=2, rank_weight=0.5, rank_ladders=4)
    pretrain(dict(cfg, out=str(tmp_path / "full")))
    records = [json.loads(line) for line in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    ranks = [r["loss_rank"] for r in records]
    assert len(ranks) == 4 and all(np.isfinite(ranks)) and max(ranks) > 0
    assert all(r["loss"] > (1 - 0.7) * r["loss_it"] + 0.7 * r["loss_ii"] for r in records)  # the term is added
    assert (tmp_path / "full" / "state" / "step-000000004" / "rank_probe.safetensors").exists()

    def stop_after_step_3(record):
        if record.get("step") == 3:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        pretrain(dict(cfg, out=str(tmp_path / "cut")), on_log=stop_after_step_3)
    pretrain(dict(cfg, out=str(tmp_path / "cut")), resume=True)  # from step 2's state, probe included
    cut = [json.loads(line) for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["loss_rank"] for r in cut] == pytest.approx(ranks, rel=1e-5)
    assert _losses(tmp_path / "cut") == pytest.approx(_losses(tmp_path / "full"), rel=1e-5)
