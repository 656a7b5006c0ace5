"""One way from a model spec — what `--model` takes — to a model folder or a loaded encoder, as timm's
`create_model(name, pretrained=True)` is one way to a model with weights.

A spec is a local folder, `default` (the embedded model) or None, `NAME@imagenet` (a registered encoder with its
ImageNet trunk), or a Hub repository `ORG/NAME[@REVISION]` (the local Hub cache, then the Hub). model/resolve.py
knows the first three and takes the Hub step as an argument, so that model/ needs nothing from hub/; this module
joins the two, so no caller wires them.
"""

from __future__ import annotations

from pathlib import Path


def find_model(spec: str | None) -> Path:
    """The folder of the model `spec` names; ModelNotFoundError (or a Hub error) says why there is none."""
    from sliq_cli.hub.pull import resolve_hub_model
    from sliq_cli.model.resolve import resolve_model

    return resolve_model(spec, hub=resolve_hub_model)


def load_model(spec: str | None = None, device: str = "cpu"):
    """The encoder `spec` names, in eval mode on `device`, with its `fingerprint`, `source` and `meta`."""
    from sliq_cli.model.checkpoint import load_encoder

    return load_encoder(find_model(spec), device=device)
