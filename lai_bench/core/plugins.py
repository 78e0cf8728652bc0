"""Plug-ins from outside the package: modules that register their own methods, backbones or tasks.

A grid names them in `plugins:` (importable module names); installed packages can also declare them in the entry-
point group `lai_bench.plugins`. The launcher imports them before it validates the grid, and every job imports the
ones its config names before it builds anything, locally and on Slurm. The record says which file each one was and
its version: the git commit of its folder where it has one, else the SHA-256 of its file.
"""
import hashlib
import importlib
import subprocess
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

ENTRY_POINT_GROUP = "lai_bench.plugins"


class PluginError(ImportError):
    """A plug-in that cannot be imported; the message names it and why."""


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as e:  # a plug-in's own error, whatever it is, is named in one line
        raise PluginError(f"plugin {name!r} cannot be imported ({type(e).__name__}: {e}); allowed: a module on the "
                          f"Python path (PYTHONPATH, or an installed package) that registers methods, backbones or "
                          f"tasks") from None


def load_plugins(names: Iterable[str] = ()) -> list[ModuleType]:
    """Import the entry-point plug-ins of the group and the named modules (each once; imports are cached)."""
    modules = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        modules.append(_import(point.value.split(":")[0]))
    for name in names:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugins must name importable modules, got {name!r}")
        modules.append(_import(name))
    return modules


def describe(module: ModuleType) -> dict[str, Any]:
    """Which file a plug-in module was and its version: the git commit of its folder, else a hash of its file."""
    path = Path(module.__file__ or "").resolve()
    commit = None
    if path.is_file():
        found = subprocess.run(["git", "-C", str(path.parent), "rev-parse", "HEAD"], capture_output=True, text=True)
        commit = found.stdout.strip() or None if found.returncode == 0 else None
    return {"module": module.__name__, "path": str(path), "commit": commit,
            "sha256": None if commit or not path.is_file() else hashlib.sha256(path.read_bytes()).hexdigest()}
