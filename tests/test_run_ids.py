"""Every shipped grid lists exactly the run ids it listed before the code was reorganised (tests/fixtures/run_ids.json,
saved from every shipped grid before tasks became packages, first before backbones and tasks became registered
components): finished runs are never trained again under a new id, and old records keep aggregating with new ones.
The coco grid's ids changed once, when detection's fields became task options (no COCO record existed)."""
import json
from pathlib import Path

import pytest

from lai_bench.launch.grid import read_grid, smoke
from lai_bench.run import find_grid

SAVED = json.loads((Path(__file__).parent / "fixtures" / "run_ids.json").read_text())


@pytest.mark.parametrize("name", sorted(SAVED))
def test_a_shipped_grid_lists_the_run_ids_it_always_listed(name):
    grid = read_grid(find_grid(name.removesuffix("--smoke")))
    if name.endswith("--smoke"):
        grid = smoke(grid)
    assert [spec.run_id for spec in grid.runs] == SAVED[name]
