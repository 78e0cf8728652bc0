"""Every lai_bench module imports, in a fresh interpreter (not the test process, whose earlier imports could hide a
module that fails on its own), and no module is in an import circle, function-level imports included."""
import pkgutil
import subprocess
import sys
from pathlib import Path

from import_graph import import_circles

import lai_bench

ROOT = Path(__file__).resolve().parent.parent


def all_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(lai_bench.__path__, "lai_bench."))


def test_every_module_imports_in_a_fresh_interpreter():
    modules = all_modules()
    assert len(modules) > 60 and "lai_bench.models.interaction.hc" in modules
    # One interpreter imports them one by one and names each that fails (one per module would take minutes).
    code = ("import importlib, sys, traceback\n"
            "bad = []\n"
            f"for name in {modules!r}:\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except Exception:\n"
            "        bad.append(name + ': ' + traceback.format_exc().splitlines()[-1])\n"
            "print('\\n'.join(bad)); sys.exit(1 if bad else 0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_no_module_of_lai_bench_is_in_an_import_circle():
    import grimp

    graph = grimp.build_graph("lai_bench", cache_dir=None)  # grimp reads every import, function-level ones too
    assert len(graph.modules) > 100
    assert import_circles(edges_of(graph)) == []
    # The check sees a circle where there is one: a function-level import back from the config to the tasks.
    graph.add_import(importer="lai_bench.config.run_config", imported="lai_bench.tasks.registry")
    assert any("lai_bench.config.run_config" in circle for circle in import_circles(edges_of(graph)))


def edges_of(graph) -> dict[str, set[str]]:
    return {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
