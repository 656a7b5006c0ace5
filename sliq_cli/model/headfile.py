"""The file format of a ridge head, readable without the head's maths (iqa/head.py builds RidgeHead on it).

    <name>.safetensors   tensors weight (D,), bias (), feature_mean (D,), feature_std (D,);
                         metadata {"format": "sliq-head", "head": "<JSON>"}

It lives with the model folder's other formats, so that checking a folder's heads/ (hub/layout.py) needs no iqa/.
"""

from __future__ import annotations

import json
from pathlib import Path

from sliq_cli.errors import SliqError

FORMAT = "sliq-head"
TENSORS = ("weight", "bias", "feature_mean", "feature_std")


class HeadError(SliqError):
    pass


def read_head_file(path) -> tuple[dict, dict]:
    """(tensor name -> numpy array, metadata JSON) of a head file; HeadError names the file when it is not one."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="numpy") as st:
            md = st.metadata() or {}
            if md.get("format") != FORMAT:
                raise HeadError(f"{path}: not a sliq head (format={md.get('format')!r})")
            return {k: st.get_tensor(k) for k in TENSORS}, json.loads(md.get("head", "{}"))
    except HeadError:
        raise
    except Exception as e:  # corrupt header, missing tensor, bad JSON
        raise HeadError(f"{path}: not a readable sliq head ({e})") from None
