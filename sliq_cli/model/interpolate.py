"""Weight-space interpolation between a starting encoder and one trained from it (WiSE-FT, Wortsman et al. 2022).

Fine-tuning, or SLIQUE's contrastive training, moves a pretrained trunk towards its training distribution; features
of images unlike the training data (another camera, another file encoding) can move with it. Averaging the weights
of the start and the trained encoder, theta = (1 - alpha) * start + alpha * trained, keeps much of what training
added while recovering the start's robustness; the two must share an architecture, and the trained one must have
been trained from that start (the averaged network is only meaningful along such a path).

A text tower (`text/`) is aligned with the trained encoder's embedding space, not with the interpolated one's, so an
interpolated model carries the trained trunk too, as an int8 difference from its own (`text/image_delta.safetensors`,
a quarter of the trunk's bf16 size): `sliq explain` describes images with the encoder its texts were trained with.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sliq_cli.errors import SliqError

TRUNK_DELTA = "image_delta.safetensors"  # in MODEL/text/: the text-aligned trunk, as an int8 delta from MODEL's
DELTA_FORMAT = "sliq-trunk-delta"


def interpolate_states(start: dict, trained: dict, alpha: float) -> dict:
    """(1 - alpha) * start + alpha * trained for every floating trunk tensor, in float32; everything else comes from
    `trained`: integer tensors (BatchNorm's step counters) and the projector, which quality features do not read and
    whose embedding space is the text tower's (a `NAME@imagenet` start's projector is an untrained random layer)."""
    import torch

    if not 0.0 <= alpha <= 1.0:
        raise SliqError(f"interpolation alpha must lie in [0, 1], not {alpha}")
    out = {}
    for name, t in trained.items():
        s = start.get(name)
        if s is None or not t.is_floating_point() or not name.startswith("trunk."):
            out[name] = t.clone()
            continue
        if s.shape != t.shape:
            raise SliqError(f"cannot interpolate {name}: shapes {tuple(s.shape)} and {tuple(t.shape)} differ")
        out[name] = torch.lerp(s.float(), t.float(), alpha)
    missing = sorted(k for k in start if k.startswith("trunk.") and k not in trained)
    if missing:
        raise SliqError(f"the trained encoder lacks trunk tensors of the start ({', '.join(missing[:3])})")
    return out


def interpolate_encoders(start_dir, trained_dir, alpha: float, out_dir, dtype: str = "float32",
                         text_from=None) -> str:
    """Write the model folder `out_dir`: the trained model's config, projector and text tower (with the trained trunk
    as a delta, for `explain`), no heads, the trunk interpolated towards the start. Returns the new fingerprint (heads
    fitted on either end do not apply: fit a new one).

    text_from: another model of the same architecture whose text tower (and the projector and trunk it was trained
    with) `explain` should use instead of the trained model's: a longer-trained tower, say."""
    from sliq_cli.model.checkpoint import load_state_dict, read_config, save_encoder
    from sliq_cli.model.config import EncoderConfig
    from sliq_cli.model.encoder import ImageEncoder

    start_meta, trained_meta = read_config(start_dir), read_config(trained_dir)
    if start_meta["config"]["trunk"] != trained_meta["config"]["trunk"]:
        raise SliqError(f"cannot interpolate a {start_meta['config']['trunk']} start with a "
                        f"{trained_meta['config']['trunk']} encoder")
    config = EncoderConfig.from_dict(trained_meta["config"])
    state = interpolate_states(load_state_dict(start_dir), load_state_dict(trained_dir), alpha)
    text_dir = Path(trained_dir)
    if text_from is not None:
        text_dir = Path(text_from)
        shape = ("trunk", "hidden_dim", "embed_dim")  # what the projector's tensors depend on
        if any(read_config(text_dir)["config"].get(k) != trained_meta["config"].get(k) for k in shape):
            raise SliqError(f"{text_dir}: its encoder's architecture differs from {trained_dir}'s; the text tower must "
                            "come from a model of the same architecture")
        if not (text_dir / "text").is_dir():
            raise SliqError(f"{text_dir}: no text tower (text/) to take")
        aligned = text_aligned_encoder(text_dir).state_dict()
        state.update({k: v for k, v in aligned.items() if not k.startswith("trunk.")})  # the tower's projector
    model = ImageEncoder(config)
    model.load_state_dict(state)
    out = Path(out_dir)
    extra = {k: v for k, v in trained_meta.items()
             if k not in ("format", "format_version", "config", "fingerprint", "dtype")}
    extra["interpolated"] = {"alpha": alpha, "start": start_meta["fingerprint"], "trained": trained_meta["fingerprint"]}
    if text_from is not None:
        extra["interpolated"]["text_from"] = read_config(text_dir)["fingerprint"]
    fp = save_encoder(model, out, extra=extra, dtype=dtype)
    if (text_dir / "text").is_dir():
        copy_text_tower(text_dir, out)
    return fp


def copy_text_tower(src_dir, out_dir) -> None:
    """SRC's text/ into OUT (whose weights are written already), with the trunk the tower was trained with stored
    as an int8 delta from OUT's trunk, so `explain` on OUT describes as SRC's text-aligned encoder does."""
    from sliq_cli.model.checkpoint import load_state_dict, read_config

    src, out = Path(src_dir), Path(out_dir)
    target = text_aligned_encoder(src).state_dict()
    shutil.rmtree(out / "text", ignore_errors=True)
    shutil.copytree(src / "text", out / "text")
    save_trunk_delta(out / "text" / TRUNK_DELTA, load_state_dict(out), target, read_config(out)["fingerprint"])


def save_trunk_delta(path, base: dict, target: dict, base_fingerprint: str) -> None:
    """target - base for every floating trunk tensor, stored as int8 with one float32 scale per output channel
    (dim 0), atomically. base: the state dict as stored (the delta is applied to what is loaded)."""
    import torch

    from sliq_cli.atomic import atomic_save_safetensors

    out = {}
    for name, t in target.items():
        if not name.startswith("trunk.") or not t.is_floating_point():
            continue
        d = t.float() - base[name].float()
        amax = d.abs().amax(dim=tuple(range(1, d.ndim))) if d.ndim > 1 else d.abs()  # (C,) or (n,)
        scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
        shape = (-1,) + (1,) * (d.ndim - 1)
        out[f"{name}.q"] = torch.round(d / scale.view(shape)).clamp(-127, 127).to(torch.int8).contiguous()
        out[f"{name}.scale"] = scale.contiguous()
    atomic_save_safetensors(path, out, metadata={"format": DELTA_FORMAT, "base": base_fingerprint})


def text_aligned_encoder(model_dir, device: str = "cpu", loaded=None):
    """MODEL's encoder with the trunk its text tower was trained with: MODEL itself (`loaded`, when the caller has it
    already), or, for an interpolated model, its trunk plus `text/image_delta.safetensors` (eval mode, float32)."""
    from safetensors import safe_open

    from sliq_cli.model.checkpoint import CheckpointError, load_encoder

    path = Path(model_dir) / "text" / TRUNK_DELTA
    if not path.is_file():
        return loaded if loaded is not None else load_encoder(model_dir, device=device)
    encoder = load_encoder(model_dir, device="cpu")  # unfused, whatever `loaded` became: the delta is per tensor
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != DELTA_FORMAT or meta.get("base") != encoder.fingerprint:
            raise CheckpointError(f"{path}: not the trunk delta of this model (its base is {meta.get('base')!r})")
        state = encoder.state_dict()
        for key in f.keys():
            if not key.endswith(".q"):
                continue
            name = key[: -len(".q")]
            q, scale = f.get_tensor(key).float(), f.get_tensor(f"{name}.scale")
            state[name] = state[name] + q * scale.view((-1,) + (1,) * (q.ndim - 1))
    encoder.load_state_dict(state)
    return encoder.to(device).eval()
