"""The README stays a user's page (at most 300 lines, its links resolve, its commands name real modules and grids)
and no module grows past 400 lines (docs/design.md: a module has one job)."""
import importlib
import re
from pathlib import Path

import pytest

from lai_bench.run import find_grid

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_readme_is_at_most_300_lines_and_its_doc_links_resolve():
    assert len(README.splitlines()) <= 300
    links = re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)\)", README)
    assert links and all((ROOT / link).is_file() for link in links), links


def test_every_module_and_grid_the_readme_runs_exists():
    modules = set(re.findall(r"python -m (lai_bench[\w.]*)", README))
    assert {"lai_bench.run", "lai_bench.train", "lai_bench.report", "lai_bench.bench"} <= modules
    for name in modules:
        module = importlib.import_module(name)
        main = getattr(module, "main", None) or getattr(importlib.import_module(f"{name}.__main__"), "main", None)
        assert callable(main), name
    for grid in set(re.findall(r"--grid (?:experiments/)?([a-z_]+)(?:\.yaml)?", README)):
        assert find_grid(grid).is_file(), grid


@pytest.mark.parametrize("path", sorted((ROOT / "lai_bench").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_over_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400
