"""A plain (non-editable) ``pip install .`` ships the grids and the published numbers with the package."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_GRIDS = ["ablation_dsu", "cifar", "coco", "deit", "demo", "imagenet", "modern", "smoke", "variance",
                 "vit_cifar"]


def test_the_package_data_globs_cover_every_grid_and_the_published_numbers():
    """The quick half of the install tests: what pyproject ships is what the slow ones expect to find."""
    import tomllib
    shipped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["lai_bench"]
    assert sorted(shipped) == ["grids/*.yaml", "paper_results.csv"]
    assert sorted(p.stem for p in (ROOT / "lai_bench" / "grids").glob("*.yaml")) == SHIPPED_GRIDS
    assert (ROOT / "lai_bench" / "paper_results.csv").is_file()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """lai_bench installed from a copy of the sources into a private folder (no dependencies, no network)."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    shutil.copytree(ROOT / "lai_bench", src / "lai_bench", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(src)], check=True, capture_output=True, text=True)
    workdir = tmp / "elsewhere"  # no experiments/ or analysis/ folder here
    workdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    return site, workdir, env


def run_python(args, installed):
    site, workdir, env = installed
    return subprocess.run([sys.executable, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_plain_install_runs_a_shipped_grid_by_name(installed):
    site = installed[0]
    where = run_python(["-c", "import lai_bench; print(lai_bench.__file__)"], installed)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr
    grids = sorted(p.stem for p in (site / "lai_bench" / "grids").glob("*.yaml"))
    assert grids == SHIPPED_GRIDS
    out = run_python(["-m", "lai_bench.run", "--grid", "ablation_dsu", "--dry-run"], installed)
    assert out.returncode == 0, out.stderr
    assert "grid 'ablation_dsu': 54 run(s)" in out.stdout


@pytest.mark.slow
def test_a_plain_install_finds_the_published_numbers(installed):
    code = ("from lai_bench.core.resources import paper_results_path; import pandas as pd; "
            "p = paper_results_path(); print(p); print(len(pd.read_csv(p)))")
    out = run_python(["-c", code], installed)
    assert out.returncode == 0, out.stderr
    path, rows = out.stdout.split()
    assert Path(path).is_relative_to(installed[0]) and int(rows) > 10
