"""The `sliq` command: this module only assembles commands; each lives in its own module."""

from __future__ import annotations

import os
import sys
import threading
import warnings

import typer
from typer.core import TyperGroup

from sliq_cli import __version__, trace
from sliq_cli.cli import explain, finetune, hub, interpolate, iqa, pretrain, ray_pool, score, tadac
from sliq_cli.cli.render import error, warn
from sliq_cli.errors import SliqError, SliqWarning


class _SliqGroup(TyperGroup):
    """Turns a SliqError raised anywhere below into one clear line on stderr and its exit code, and prints the
    library's SliqWarnings as the CLI's own warnings (each time: one process may run several commands)."""

    def invoke(self, ctx):
        with warnings.catch_warnings():
            warnings.simplefilter("always", SliqWarning)
            show = warnings.showwarning
            warnings.showwarning = lambda message, category, *args, **kwargs: (
                warn(str(message)) if issubclass(category, SliqWarning) else show(message, category, *args, **kwargs))
            try:
                return super().invoke(ctx)
            except SliqError as e:
                error(str(e))
                raise typer.Exit(e.exit_code) from None


app = typer.Typer(
    name="sliq",
    cls=_SliqGroup,
    help="Blind image quality assessment with SLIQUE (joint vision-language and visual contrastive learning).",
    epilog="Examples:\n\n\b\n  sliq score examples/\n  sliq explain examples/kodim23.jpg\n  sliq score --help   "
           "# every command has its own help, with examples",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,  # click's help: whole option names, text re-flowed, [brackets] kept
)


def _version(value: bool):
    if value:
        typer.echo(f"sliq {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version.")):
    pass


app.command("score")(score.score)
app.command("explain")(explain.explain)
app.command("pull")(hub.pull)
app.command("models")(hub.models)
app.command("export")(hub.export)
app.add_typer(tadac.app, name="tadac")
app.command("pretrain")(pretrain.pretrain)
app.command("interpolate")(interpolate.interpolate)
app.command("fit-head")(iqa.fit_head)
app.command("evaluate")(iqa.evaluate)
app.command("crossval")(iqa.crossval)
app.command("finetune")(finetune.finetune)
app.add_typer(iqa.plot_app, name="plot")
app.add_typer(ray_pool.app, name="ray-pool")


def main() -> None:
    """The console script (and `python -m sliq_cli`). Once the command has returned, its files are closed and its
    output flushed, the process ends at once (os._exit): the interpreter's teardown of torch and its thread pools
    costs 0.3-1 s and does nothing a finished command needs. Not while threads or child processes of the command are
    still running: those get the normal exit, which waits for them."""
    try:
        app()
        code = 0
    except SystemExit as e:
        code = e.code
    if code is not None and not isinstance(code, int):  # sys.exit("message")
        print(code, file=sys.stderr)
        code = 1
    trace.mark("end")
    if _still_running():
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the reader went away (`| head`), or the stream is closed
            pass
    os._exit(code or 0)


def _still_running() -> bool:
    """Whether a non-daemon thread or a child process of the command is alive (a normal exit waits for them)."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return True
    multiprocessing = sys.modules.get("multiprocessing")  # not imported: no children of its making
    return multiprocessing is not None and bool(multiprocessing.active_children())
