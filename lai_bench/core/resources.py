"""Files shipped inside the package: the grids and the published numbers. Found through importlib.resources,
so they work from a clone, an editable install and a plain ``pip install .`` alike."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _package_file(*parts: str) -> Path:
    # A regular (not zipped) package: its files are on disk, Traversable is a Path.
    return Path(str(resources.files("lai_bench").joinpath(*parts)))


def shipped_grids() -> list[str]:
    """Names of the grids that come with lai_bench (``--grid NAME``)."""
    return sorted(p.stem for p in _package_file("grids").glob("*.yaml"))


def shipped_grid(name: str) -> Path | None:
    """The shipped grid called ``name`` (with or without ``.yaml``), or None."""
    path = _package_file("grids", name if name.endswith(".yaml") else f"{name}.yaml")
    return path if path.is_file() else None


def paper_results_path() -> Path:
    """The CSV of published numbers (method, backbone, depth, dataset, metric, value, ...)."""
    return _package_file("paper_results.csv")
