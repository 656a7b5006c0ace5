"""Options shared by several commands, defined once (as huggingface_hub's CLI does)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help="Model: a folder, a Hub repo id (ORG/NAME), or 'default' (the embedded model)."),
]
HeadOpt = Annotated[
    Optional[str],
    typer.Option("--head", help="Ridge head: a name (e.g. clive, koniq) or a .safetensors file. Default: the model's."),
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where the encoder runs.", case_sensitive=False)]
BatchSizeOpt = Annotated[
    Optional[int], typer.Option("--batch-size", "-b", min=1, help="Images per batch. Default: 64 on CUDA, 8 on a CPU.")
]
MaxSideOpt = Annotated[
    Optional[int],
    typer.Option("--max-side", min=16, help="Downscale images whose longer side is above this (JPEGs decode at "
                                            "reduced size): much faster on a CPU, but scores change with size."),
]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", min=1, help="Threads reading and decoding images.")]
RecursiveOpt = Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")]
JsonOpt = Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON to this file.")]
DataRootOpt = Annotated[
    Optional[Path], typer.Option("--data-root", help="Folder holding IQA datasets by name (default: $SLIQ_DATA).")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
