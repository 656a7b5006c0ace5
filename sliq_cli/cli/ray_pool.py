"""`sliq ray-pool`: start, inspect and stop a warm scorer pool on a running Ray cluster (sliq_cli.iqa.ray_pool)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from sliq_cli.cli.options import BatchSizeOpt, Device, DeviceOpt, HeadOpt, MaxSideOpt, ModelOpt
from sliq_cli.cli.render import err_console, out_console, stdout_is_tty

app = typer.Typer(
    name="ray-pool",
    help="A warm scorer pool on a running Ray cluster: actors that keep their model loaded between `sliq score "
         "--ray --ray-pool NAME` runs (needs the ray extra).",
    no_args_is_help=True,
)

NameOpt = Annotated[str, typer.Option("--name", help="The pool's name on the cluster.")]
AddressOpt = Annotated[
    str, typer.Option("--ray-address", help="The running cluster: 'auto' (the one `ray start --head` started here) or "
                                            "ray://HOST:PORT.")
]


def _show(info, pids: list | None = None) -> None:
    """A key: value listing on a terminal, JSON in a pipe."""
    data = info.to_dict()
    if pids is not None:
        data["pids"] = pids
    if not stdout_is_tty():
        typer.echo(json.dumps(data))
        return
    for key, value in data.items():
        out_console().print(f"{key:>11}: {value}", highlight=False)


@app.command()
def start(
    name: NameOpt = "sliq",
    model: ModelOpt = None,
    head: HeadOpt = None,
    actors: Annotated[
        Optional[int], typer.Option("--actors", min=1, help="Models in the pool. Default: one per GPU of the cluster "
                                                          "(one per CPU without GPUs).")
    ] = None,
    device: DeviceOpt = Device.auto,
    ray_address: AddressOpt = "auto",
    batch_size: BatchSizeOpt = None,
    max_side: MaxSideOpt = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Hold the text tower too, for runs with `sliq score --explain`.")
    ] = False,
):
    """Start a pool: each actor loads the model once and stays until `sliq ray-pool stop`.

    Examples:

    \b
      ray start --head
      sliq ray-pool start                       # one model per GPU of the cluster
      sliq score photos/ --ray-pool sliq -o scores.csv
      sliq ray-pool stop
    """
    from sliq_cli.cli.score import EXPLAIN_TOP
    from sliq_cli.iqa.ray_pool import start_pool

    with err_console().status(f"starting scorer pool {name!r}"):
        info = start_pool(name, model, head, actors, device.value, ray_address, batch_size, max_side,
                          EXPLAIN_TOP if explain else 0)
    err_console().print(f"scorer pool {name!r}: {info.actors} {info.device} actor(s) ready", highlight=False)
    _show(info)


@app.command()
def status(name: NameOpt = "sliq", ray_address: AddressOpt = "auto"):
    """The pool's model, head and actors (a process id each; none for an actor not answering).

    Examples:

    \b
      sliq ray-pool status
      sliq ray-pool status --name gpu-pool --ray-address ray://head:10001
    """
    from sliq_cli.iqa.ray_pool import pool_status

    info, pids = pool_status(name, ray_address)
    _show(info, pids)


@app.command()
def stop(name: NameOpt = "sliq", ray_address: AddressOpt = "auto"):
    """Stop the pool's actors (the cluster keeps running).

    Examples:

    \b
      sliq ray-pool stop
      sliq ray-pool stop --name gpu-pool
    """
    from sliq_cli.iqa.ray_pool import stop_pool

    info = stop_pool(name, ray_address)
    err_console().print(f"scorer pool {name!r} stopped ({info.actors} actor(s))", highlight=False)
