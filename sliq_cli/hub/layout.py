"""What a published sliq model folder must hold, checked without loading the encoder's weights.

    config.json                                  {"format": "sliq-encoder", ..., "fingerprint"}
    model.safetensors | model.safetensors.index.json + shards
    heads/<name>.safetensors                     optional; metadata {"format": "sliq-head", "head": JSON}
    text/{config.json, model.safetensors, tokenizer.json}   optional text tower
    README.md                                    model card (optional for loading)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from sliq_cli.errors import SliqError
from sliq_cli.model.checkpoint import FORMAT as ENCODER_FORMAT
from sliq_cli.model.checkpoint import CheckpointError, check_safetensors, validate_checkpoint_dir, weight_files
from sliq_cli.model.headfile import HeadError, read_head_file

TEXT_FILES = ("config.json", "model.safetensors", "tokenizer.json")


class LayoutError(SliqError):
    """A folder that is not a usable sliq model; the message names the file at fault."""


@dataclass
class ModelLayout:
    path: Path
    config: dict
    weights: list[Path]
    heads: dict[str, dict] = field(default_factory=dict)  # head name -> its metadata JSON
    head_files: dict[str, Path] = field(default_factory=dict)
    text: bool = False

    @property
    def fingerprint(self) -> str | None:
        return self.config.get("fingerprint")


def is_sliq_checkpoint(folder: Path) -> bool:
    """True when FOLDER/config.json is a sliq encoder checkpoint's (format sliq-encoder); nothing else is checked."""
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("format") == ENCODER_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_head_meta(path: Path) -> dict:
    """The JSON a head file carries in its safetensors metadata; the head must load and name its encoder."""
    try:
        meta = read_head_file(path)[1]
    except HeadError as e:
        raise LayoutError(str(e)) from None
    if not meta.get("encoder_fingerprint"):
        raise LayoutError(f"{path}: head metadata lacks encoder_fingerprint")
    return meta


def check_layout(folder: Path) -> ModelLayout:
    """Validate a model folder: no pickle file anywhere (checked first, by read_config), config, weights' headers,
    every head (for this encoder), the text tower."""
    folder = Path(folder)
    try:
        layout = ModelLayout(folder, validate_checkpoint_dir(folder), weight_files(folder))
    except CheckpointError as e:
        raise LayoutError(str(e)) from None
    for path in sorted((folder / "heads").glob("*.safetensors")):
        head = read_head_meta(path)
        if layout.fingerprint and head["encoder_fingerprint"] != layout.fingerprint:
            raise LayoutError(
                f"{path}: head was fitted for encoder {head['encoder_fingerprint'][:16]}, "
                f"not this model ({layout.fingerprint[:16]})"
            )
        layout.heads[path.stem] = head
        layout.head_files[path.stem] = path
    text = folder / "text"
    if text.is_dir():
        missing = [n for n in TEXT_FILES if not (text / n).is_file()]
        if missing:
            raise LayoutError(f"{text}: text tower lacks {', '.join(missing)}")
        for name in ("config.json", "tokenizer.json"):
            try:
                json.loads((text / name).read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise LayoutError(f"{text / name}: not valid JSON ({e})") from None
        try:
            check_safetensors(text / "model.safetensors")
        except CheckpointError as e:
            raise LayoutError(str(e)) from None
        layout.text = True
    return layout
