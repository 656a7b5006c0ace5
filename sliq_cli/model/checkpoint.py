"""Scoring checkpoints: a folder with config.json + model.safetensors (or a sharded index), as timm/transformers do.

    MODEL/config.json                      {"format": "sliq-encoder", "format_version": 2, "config": {...},
                                            "fingerprint": sha256, "dtype": "float32"|"bfloat16"|"float16", ...extra}
    MODEL/model.safetensors                or MODEL/model.safetensors.index.json + model-0000k-of-0000n.safetensors
    MODEL/heads/<name>.safetensors         optional ridge heads (see sliq_cli.iqa.head)
    MODEL/text/                            optional text tower + tokenizer

Pickle formats are never read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sliq_cli.atomic import atomic_save_safetensors, atomic_write_json
from sliq_cli.errors import SliqError

FORMAT = "sliq-encoder"
FORMAT_VERSION = 2  # 2: the encoder config carries its FeatureSpec ("features"); 1 kept scales under preprocess
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_DTYPES = ("float32", "bfloat16", "float16")


class CheckpointError(SliqError):
    pass


def fingerprint(state_dict: dict) -> str:
    """sha256 of the trunk's floating-point tensors (weights and BN statistics) as float32 bytes, names sorted.

    Quality features depend on the trunk only, so a head fitted on one encoder is valid exactly for encoders with
    the same fingerprint. Computed on the tensors as stored, so a bf16 copy has its own fingerprint.
    """
    import torch

    floats = {k: v for k, v in state_dict.items() if v.is_floating_point()}
    return _fingerprint(floats, lambda t: t.detach().to("cpu", torch.float32).contiguous().numpy())


def _fingerprint(tensors: dict, as_float32) -> str:
    """fingerprint()'s hash over floating-point `tensors` (name -> tensor), each read by `as_float32` (-> ndarray)."""
    h = hashlib.sha256()
    for name in sorted(k for k in tensors if k.startswith("trunk.")):
        h.update(name.encode())
        h.update(as_float32(tensors[name]).tobytes())
    return h.hexdigest()


# safetensors dtypes torch counts as floating point, as the numpy dtype of their bytes (bf16: its 16-bit pattern)
_FLOAT_BYTES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}


def read_weight_files(model_dir) -> tuple[dict[str, bytes], str]:
    """(the weight files' bytes by file name (a sharded model's index too), their fingerprint): a model as plain
    data, for workers that have no copy of the folder (iqa/ray_score.py). Read and checked against config.json's
    fingerprint without torch, so a Ray driver needs no torch import."""
    model_dir = Path(model_dir)
    files = weight_files(model_dir)
    weights = {f.name: f.read_bytes() for f in files}
    floats = {}
    for f in files:
        floats.update(_safetensors_floats(weights[f.name], f))
    fp = _fingerprint(floats, _as_float32)
    expected = read_config(model_dir).get("fingerprint")
    if expected and expected != fp:
        raise CheckpointError(f"{model_dir}: weights do not match the fingerprint in config.json (corrupted or edited)")
    if (model_dir / INDEX).is_file():
        weights[INDEX] = (model_dir / INDEX).read_bytes()
    return weights, fp


def _safetensors_floats(data: bytes, path) -> dict:
    """name -> (safetensors dtype, raw bytes) of a safetensors file's floating-point tensors (safetensors'
    deserialize: the format checked, no torch)."""
    from safetensors import deserialize

    try:
        tensors = deserialize(data)
    except Exception as e:  # safetensors raises its own error types for corrupt data
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    return {name: (t["dtype"], t["data"]) for name, t in tensors if t["dtype"] in _FLOAT_BYTES}


def _as_float32(tensor):
    """A (dtype, bytes) pair of _safetensors_floats as float32 values, converted as torch converts them."""
    import numpy as np

    dtype, data = tensor
    raw = np.frombuffer(data, dtype=_FLOAT_BYTES[dtype])
    if dtype == "BF16":  # bfloat16 is the top half of a float32: widening is exact
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float32)


def state_from_weight_files(weights: dict[str, bytes], source) -> dict:
    """The state dict (CPU tensors) of read_weight_files' bytes."""
    from safetensors.torch import load

    state = {}
    for name, data in weights.items():
        if name == INDEX:
            continue
        try:
            state.update(load(data))
        except Exception as e:  # safetensors raises its own error types for corrupt data
            raise CheckpointError(f"{Path(source) / name}: not a readable safetensors file ({e})") from None
    return state


def save_encoder(model, out_dir, extra: dict | None = None, dtype: str = "float32", max_shard_mb: float | None = None) -> str:
    """Write `model` as a scoring checkpoint folder; returns its fingerprint.

    dtype: storage dtype of floating tensors. max_shard_mb: split weights into safetensors shards no larger than
    this (for transfers with a per-file limit; a single larger tensor gets a shard of its own); None: one file. Each file is written atomically and
    config.json last, so a reader never sees a config that points at missing weights.
    """
    import torch

    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, not {dtype!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch_dtype = getattr(torch, dtype)
    state = {
        k: (v.detach().to("cpu", torch_dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in model.state_dict().items()
    }
    fp = fingerprint(state)
    for stale in [out / WEIGHTS, out / INDEX, *out.glob("model-*-of-*.safetensors")]:
        stale.unlink(missing_ok=True)
    if max_shard_mb is None:
        atomic_save_safetensors(out / WEIGHTS, state, metadata={"format": "pt"})
    else:
        _save_sharded(out, state, int(max_shard_mb * 1024 * 1024))
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_dict(), "fingerprint": fp, "dtype": dtype}
    meta.update(extra or {})
    atomic_write_json(out / "config.json", meta)
    return fp


def _save_sharded(out: Path, state: dict, limit: int) -> None:
    shards: list[dict] = [{}]
    size = 0
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    n = len(shards)
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{n:05d}.safetensors"
        atomic_save_safetensors(out / fname, shard, metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
    total = sum(t.numel() * t.element_size() for t in state.values())
    atomic_write_json(out / INDEX, {"metadata": {"total_size": total}, "weight_map": weight_map})


def read_config(model_dir) -> dict:
    """config.json of a checkpoint folder, checked for format; raises CheckpointError naming the problem."""
    model_dir = Path(model_dir)
    cfg_path = model_dir / "config.json"
    # A pickle file can run code when something loads it; a model folder holding one is refused, not half-trusted.
    pickles = sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES) \
        if model_dir.is_dir() else []
    if pickles:
        raise CheckpointError(f"{model_dir}: holds pickle file(s) {', '.join(pickles)}; sliq only loads safetensors "
                              "(remove them to use this model)")
    if not cfg_path.is_file():
        raise CheckpointError(f"{model_dir}: not a sliq model (no config.json)")
    try:
        meta = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path}: not a sliq encoder config (format={meta.get('format')!r})")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{cfg_path}: format_version {meta['format_version']} is newer than this sliq supports")
    return meta


def weight_files(model_dir) -> list[Path]:
    """The safetensors files holding the weights (one file, or the shards an index names)."""
    model_dir = Path(model_dir)
    if (model_dir / WEIGHTS).is_file():
        return [model_dir / WEIGHTS]
    if (model_dir / INDEX).is_file():
        index = json.loads((model_dir / INDEX).read_text())
        files = sorted(set(index["weight_map"].values()))
        missing = [f for f in files if not (model_dir / f).is_file()]
        if missing:
            raise CheckpointError(f"{model_dir}: shard(s) missing: {', '.join(missing)}")
        return [model_dir / f for f in files]
    raise CheckpointError(f"{model_dir}: no {WEIGHTS} or {INDEX}")


def check_safetensors(path) -> None:
    """Read a safetensors file's header only: a truncated or foreign file fails here, naming it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as st:
            st.keys()
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def validate_checkpoint_dir(model_dir) -> dict:
    """Check layout and weight headers without loading tensors; returns config.json."""
    meta = read_config(model_dir)
    for f in weight_files(model_dir):
        check_safetensors(f)
    return meta


def load_state_dict(model_dir) -> dict:
    from safetensors.torch import load_file

    state = {}
    for f in weight_files(model_dir):
        try:
            state.update(load_file(str(f)))
        except Exception as e:
            raise CheckpointError(f"{f}: not a readable safetensors file ({e})") from None
    return state


def load_encoder(model_dir, device: str = "cpu"):
    """Load a scoring checkpoint as an ImageEncoder in eval mode (float32), with its `.fingerprint`, `.source` (the
    folder) and `.meta` (config.json) set."""
    model_dir = Path(model_dir)
    return build_encoder(read_config(model_dir), load_state_dict(model_dir), model_dir, device)


def encoder_config(meta: dict, source):
    """The EncoderConfig of config.json's dict (`meta`) of the folder `source`, or a CheckpointError naming it."""
    from sliq_cli.model.config import EncoderConfig

    try:
        return EncoderConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{Path(source) / 'config.json'}: bad encoder config ({e})") from None


def build_encoder(meta: dict, state: dict, source, device: str = "cpu"):
    """An ImageEncoder from config.json's dict and its state dict, checked as load_encoder checks a folder: what a
    worker that has no copy of the folder builds from what reached it in memory (iqa/ray_score.py). `source`: the
    folder the parts came from, named in errors and kept as `.source`."""
    from sliq_cli.model.encoder import ImageEncoder

    config = encoder_config(meta, source)
    fp = fingerprint(state)
    if meta.get("fingerprint") and meta["fingerprint"] != fp:
        raise CheckpointError(f"{source}: weights do not match the fingerprint in config.json (corrupted or edited)")
    model = ImageEncoder(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not fit the config (missing: {missing[:3]}, unexpected: {unexpected[:3]})"
        )
    model.fingerprint = fp
    model.source = str(source)
    model.meta = meta
    return model.to(device).eval()
