"""The README's Python API block, run as written: every statement whose names it defines runs, and a value shown
in its comment (`# 86.82`, `# [86.82, 79.27]`, `# {...}`) must be what the statement returns (numbers within 0.05).
When the default model changes, only the README's numbers need updating."""

from __future__ import annotations

import ast
import functools
import json
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
TOLERANCE = 0.05


def _api_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    return section[section.index("```python\n") + len("```python\n"):section.index("```\n", 10)]


def _shown(comment: str):
    """The value a comment starts with (a number, a list or a dict, JSON-style), or None for prose."""
    head = re.match(r"\s*([-\d.]+|\[[^\]]*\]|\{[^}]*\})", comment)
    if not head:
        return None
    try:
        return json.loads(head.group(1).replace("True", "true").replace("False", "false"))
    except ValueError:
        return None


def _close(got, want) -> bool:
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(_close(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return len(got) == len(want) and all(_close(g, w) for g, w in zip(got, want))
    if isinstance(want, bool) or not isinstance(want, (int, float)):
        return got == want
    return abs(got - want) <= TOLERANCE


def test_the_python_api_block_gives_the_numbers_it_shows(monkeypatch):
    import sliq_cli.api

    monkeypatch.chdir(README.parent)  # its paths are the checkout's examples/
    # the README's numbers are a CPU's (CUDA runs in bf16); `load()` as written, on the CPU on any machine
    monkeypatch.setattr(sliq_cli.api, "load", functools.partial(sliq_cli.api.load, device="cpu"))
    source = _api_block()
    lines = source.splitlines()
    namespace: dict = {}
    checked = 0
    for node in ast.parse(source).body:
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        if names - set(namespace) - set(dir(__builtins__)) - {"print"}:
            continue  # an illustration with placeholders (pil_image, batch, paths)
        code = ast.get_source_segment(source, node)
        line = lines[node.end_lineno - 1]
        want = _shown(line.split("#", 1)[1]) if "#" in line else None
        if isinstance(node, ast.Expr):
            got = eval(compile(ast.Expression(node.value), "README.md", "eval"), namespace)
            if want is not None:
                assert _close(got, want), f"README.md shows {want!r} for {code}; it gives {got!r}"
                checked += 1
        else:
            exec(compile(ast.Module([node], []), "README.md", "exec"), namespace)
    assert checked >= 3 and "metric" in namespace


def test_set_up_says_what_it_installs_and_plots_say_what_they_need():
    text = README.read_text(encoding="utf-8")
    setup = text[text.index("## Set-up"):text.index("## Commands")]
    assert "CUDA build" in setup and "CPU-importable" not in text  # what `pip install torch==...` really brings
    assert "sliq-iqa[plots]" in setup
    first_plot = text.index("sliq plot scatter ")
    assert '".[plots]"' in text[text.rindex("```bash", 0, first_plot):first_plot]  # in the block that introduces it
