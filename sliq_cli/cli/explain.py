"""`sliq explain`: the score of each image, the distortion descriptions its embedding is closest to, its appearance."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sliq_cli.cli.options import Device, DeviceOpt, HeadOpt, ModelOpt, RecursiveOpt
from sliq_cli.cli.render import err_console, jsonl_line, progress_bar, stdout_is_tty, warn

MAX_TOP = 20  # 19 distortion text types + pristine (sliq_cli.iqa.explain.MAX_TOP, which checks it again)


def explain(
    paths: Annotated[list[str], typer.Argument(help="Image files and folders; '-' reads paths from standard input.")],
    model: ModelOpt = None,
    head: HeadOpt = None,
    top: Annotated[
        int, typer.Option("--top", "-k", min=1, max=MAX_TOP, help="How many distortion descriptions to list.")
    ] = 5,
    device: DeviceOpt = Device.auto,
    recursive: RecursiveOpt = False,
):
    """Say in words why images scored as they did: the score, the closest distortion descriptions, the appearance.

    Needs a model with a text tower (MODEL/text/, exported by `sliq pretrain`). A panel per image on a terminal,
    JSON lines in a pipe. Exit code 0 when every image was explained, 1 when some failed or the model cannot
    explain, 2 for usage errors.

    Examples:

    \b
      sliq explain examples/kodim23.jpg   # a panel per image on a terminal
      sliq explain examples/ --top 3 > why.jsonl
    """
    from sliq_cli.images import list_images
    from sliq_cli.iqa.explain import DEFAULT_THRESHOLDS_SOURCE, explain_images

    files = list_images(paths, recursive=recursive)
    if not files:
        raise typer.BadParameter("no images found in the given paths", param_hint="PATHS")
    run = explain_images(files, model=model, head=head, top=top, device=device.value)
    if run.thresholds_source == DEFAULT_THRESHOLDS_SOURCE:
        warn(f"{run.scorer.model_dir} has no text/appearance.json; appearance bins use the {run.thresholds_source}")
    tty = stdout_is_tty()
    failed = 0
    with progress_bar(len(files), f"explaining on {run.scorer.device}") as advance:
        for record in run.records:
            advance()
            if record.get("error"):
                failed += 1
                warn(f"{record['path']}: {record['error']}")
            if tty:
                _panel(record, run.scorer.head)
            else:
                sys.stdout.write(jsonl_line(record) + "\n")  # stream: a pipeline sees each image as it is done
                sys.stdout.flush()
    if failed:
        err_console().print(f"{len(files) - failed} of {len(files)} images explained; {failed} failed")
        raise typer.Exit(1)


def _panel(record: dict, head) -> None:
    from rich.console import Group
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    from sliq_cli.cli.render import out_console

    if record.get("error"):
        out_console().print(Panel(f"[red]{escape(record['error'])}[/]", title=escape(record["path"]), title_align="left"))
        return
    scale = head.mos_scale
    better = "higher" if scale.get("higher_is_better", True) else "lower"
    lo, hi = (f"{scale[k]:.4g}" if isinstance(scale.get(k), (int, float)) else "?" for k in ("min", "max"))
    flag = " (outside the head's MOS range)" if record.get("out_of_range") else ""
    subtitle = f"score [bold]{record['score']:.2f}[/]{flag} · head {escape(head.name or '?')} ({lo}–{hi}, {better} is better)"

    looks = Table(title="looks like", title_justify="left", box=None, show_header=False, pad_edge=False)
    looks.add_column(justify="right", style="dim")
    looks.add_column()
    looks.add_column(justify="right")
    for i, d in enumerate(record["descriptions"], 1):
        looks.add_row(str(i), escape(d["text"]), f"{d['similarity']:.3f}")

    seen = Table(title="appearance", title_justify="left", box=None, show_header=False, pad_edge=False)
    seen.add_column()
    seen.add_column(justify="right")
    seen.add_column()
    seen.add_column(style="italic")
    for attr, a in record["appearance"].items():
        seen.add_row(attr, f"{a['value']:.3g}", a["bin"], escape(a["phrase"]))
    out_console().print(Panel(Group(looks, "", seen, "", NOTE), title=escape(record["path"]), title_align="left",
                              subtitle=subtitle, subtitle_align="right"))


# What a panel's numbers are, and why its words and its score can differ (sliq_cli.iqa.explain's docstring).
NOTE = ("[dim]looks like: the distortion texts nearest one 224 px crop, by cosine similarity of the embeddings "
        "(plus the model's calibrated offset for 'no visible distortion', so that one can pass 1). The score "
        "reads the whole image on the head's MOS scale: the two can disagree.[/]")
