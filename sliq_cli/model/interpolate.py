"""Weight-space interpolation between a starting encoder and one trained from it (WiSE-FT, Wortsman et al. 2022).

Fine-tuning, or SLIQUE's contrastive training, moves a pretrained trunk towards its training distribution; features
of images unlike the training data (another camera, another file encoding) can move with it. Averaging the weights
of the start and the trained encoder, theta = (1 - alpha) * start + alpha * trained, keeps much of what training
added while recovering the start's robustness; the two must share an architecture, and the trained one must have
been trained from that start (the averaged network is only meaningful along such a path).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sliq_cli.errors import SliqError


def interpolate_states(start: dict, trained: dict, alpha: float) -> dict:
    """(1 - alpha) * start + alpha * trained for every floating tensor, in float32; integer tensors (BatchNorm's
    step counters) and tensors the start lacks (a projector trained from scratch) come from `trained`."""
    import torch

    if not 0.0 <= alpha <= 1.0:
        raise SliqError(f"interpolation alpha must lie in [0, 1], not {alpha}")
    out = {}
    for name, t in trained.items():
        s = start.get(name)
        if s is None or not t.is_floating_point():
            out[name] = t.clone()
            continue
        if s.shape != t.shape:
            raise SliqError(f"cannot interpolate {name}: shapes {tuple(s.shape)} and {tuple(t.shape)} differ")
        out[name] = torch.lerp(s.float(), t.float(), alpha)
    missing = sorted(k for k in start if k.startswith("trunk.") and k not in trained)
    if missing:
        raise SliqError(f"the trained encoder lacks trunk tensors of the start ({', '.join(missing[:3])})")
    return out


def interpolate_encoders(start_dir, trained_dir, alpha: float, out_dir, dtype: str = "float32") -> str:
    """Write the model folder `out_dir`: the trained model's config, text tower and heads-free layout, with trunk
    and projector weights interpolated towards the start. Returns the new fingerprint (heads fitted on either end
    do not apply: fit a new one)."""
    from sliq_cli.model.checkpoint import load_state_dict, read_config, save_encoder
    from sliq_cli.model.config import EncoderConfig
    from sliq_cli.model.encoder import ImageEncoder

    start_meta, trained_meta = read_config(start_dir), read_config(trained_dir)
    if start_meta["config"]["trunk"] != trained_meta["config"]["trunk"]:
        raise SliqError(f"cannot interpolate a {start_meta['config']['trunk']} start with a "
                        f"{trained_meta['config']['trunk']} encoder")
    config = EncoderConfig.from_dict(trained_meta["config"])
    model = ImageEncoder(config)
    model.load_state_dict(interpolate_states(load_state_dict(start_dir), load_state_dict(trained_dir), alpha))
    out = Path(out_dir)
    extra = {k: v for k, v in trained_meta.items()
             if k not in ("format", "format_version", "config", "fingerprint", "dtype")}
    extra["interpolated"] = {"alpha": alpha, "start": start_meta["fingerprint"], "trained": trained_meta["fingerprint"]}
    if (Path(trained_dir) / "text").is_dir():
        # The text tower was aligned with the trained projector's embedding; an interpolated encoder keeps that
        # projector's space approximately, so `explain` stays usable (its similarities are not re-calibrated).
        shutil.copytree(Path(trained_dir) / "text", out / "text", dirs_exist_ok=True)
    return save_encoder(model, out, extra=extra, dtype=dtype)
