"""sliq's use of huggingface_hub exists in the installed client. In the ordinary run that is the pinned client;
`.ci/min-versions` runs this file against the floor pyproject.toml declares, so raising the floor is caught."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import sliq_cli

PACKAGE = Path(sliq_cli.__file__).parent


def hub_imports() -> set[tuple[str, str]]:
    """(module, name) of every `from huggingface_hub[.x] import name` in sliq_cli, function-level ones included."""
    found = set()
    for source in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "huggingface_hub":
                found.update((node.module, alias.name) for alias in node.names)
    return found


def test_the_scan_sees_sliqs_hub_imports():
    assert ("huggingface_hub.errors", "IncompleteSnapshotError") in hub_imports()
    assert ("huggingface_hub", "snapshot_download") in hub_imports()


def test_every_huggingface_hub_name_sliq_imports_exists():
    missing = [f"{module}.{name}" for module, name in sorted(hub_imports())
               if not hasattr(importlib.import_module(module), name)]
    assert not missing


def test_the_client_gives_what_sliq_reads_off_its_objects():
    """Attributes and keywords sliq relies on beyond names (IncompleteSnapshotError.snapshot_path came in 1.23)."""
    from huggingface_hub import HfApi, snapshot_download, try_to_load_from_cache
    from huggingface_hub.errors import IncompleteSnapshotError

    assert IncompleteSnapshotError("incomplete", snapshot_path="/x").snapshot_path == "/x"
    assert {"cache_dir", "endpoint", "allow_patterns", "etag_timeout", "force_download", "local_files_only"} <= set(
        inspect.signature(snapshot_download).parameters)
    assert {"cache_dir", "revision"} <= set(inspect.signature(try_to_load_from_cache).parameters)
    assert "timeout" in inspect.signature(HfApi.model_info).parameters
    assert "recursive" in inspect.signature(HfApi.list_repo_tree).parameters
