"""What every figure shares: an Agg canvas sized to its labels, legends off the data, point labels clear of the
markers and of each other, 95 % CI bars, PNG and PDF files."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from ..core.files import atomic_open

FEW_POINTS = 3  # a curve of this many epochs or fewer is drawn with markers
LONG_LEGEND = 45  # a legend with a longer label goes under the axes, not beside them
LONG_TAG = 24  # with a longer name, points are labelled by their legend number


def _new_figure(
    width: float, height: float, ncols: int = 1, nrows: int = 1, height_ratios: Sequence[float] | None = None
) -> tuple[Figure, list]:
    """A figure on the Agg canvas (no pyplot state), laid out so every label stays on it, and its axes."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, gridspec_kw={"height_ratios": height_ratios})
    return fig, list(axes.flat)


def save_figure(fig: Figure, folder: Path, stem: str) -> list[Path]:
    """Write ``<stem>.png`` (150 dpi) and ``<stem>.pdf``, each atomically."""
    paths = [folder / f"{stem}.png", folder / f"{stem}.pdf"]
    for path in paths:
        with atomic_open(path, "wb") as handle:
            fig.savefig(handle, format=path.suffix[1:], dpi=150)
    return paths


def _legend_outside(ax: Any, handles: Sequence[Any] | None = None) -> None:
    """The legend off the data: right of the axes, or under them (the figure made taller) when its labels are long;
    constrained layout keeps it on the canvas."""
    if handles is None:
        handles = ax.get_legend_handles_labels()[0]
    if not handles:
        return
    longest = max(len(h.get_label()) for h in handles)
    if longest <= LONG_LEGEND:
        ax.legend(
            handles=list(handles),
            loc="center left",
            bbox_to_anchor=(1.02, 0.5),
            fontsize=8,
            frameon=False,
            ncols=1 + (len(handles) - 1) // 24,
        )
        return
    fig = ax.figure
    ncols = max(1, min(3, int(fig.get_figwidth() / (0.055 * longest + 0.6))))
    fig.set_figheight(fig.get_figheight() + 0.17 * -(-len(handles) // ncols) + 0.2)
    fig.legend(handles=list(handles), loc="outside lower center", fontsize=7, frameon=False, ncols=ncols)


def _tags(names: Sequence[str]) -> list[str]:
    """How points are named on the axes: their names, or their legend numbers when some name is long."""
    if max(len(name) for name in names) <= LONG_TAG:
        return list(names)
    return [str(k) for k in range(1, len(names) + 1)]


def _entry(tag: str, name: str) -> str:
    """A legend label: the name, after its number when the axes show numbers."""
    return name if tag == name else f"{tag}: {name}"


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p")


# Where a point's label may go, in points from the point: beside it, then above and below, further each time.
_LABEL_OFFSETS = ((8, 0), (6, 9), (6, -9), (6, 18), (6, -18), (6, 27), (6, -27), (6, 36), (6, -36))


def _label_points(ax: Any, points: Sequence[tuple[float, float, str]]) -> None:
    """Name every point next to it, clear of the markers and the other names; points whose markers overlap share
    one name, so none hides unnamed."""
    fig = ax.figure
    fig.draw_without_rendering()  # the final layout: display coordinates as saved
    renderer = fig.canvas.get_renderer()
    xy = ax.transData.transform(np.array([(px, py) for px, py, _ in points], dtype=float))
    middle = ax.transAxes.transform((0.5, 0.5))[0]
    size = 10.0 * fig.dpi / 72  # a marker's width (8 pt) and a little more
    taken = [Bbox.from_bounds(x - size / 2, y - size / 2, size, size) for x, y in xy]
    for group in _clusters(xy, size):
        text = textwrap.fill(", ".join(dict.fromkeys(points[i][2] for i in group)), 40)
        side = -1 if xy[group[0]][0] > middle else 1  # labels of right-hand points go left, towards the middle
        note = ax.annotate(
            text,
            points[group[0]][:2],
            xytext=(side * _LABEL_OFFSETS[0][0], 0),
            textcoords="offset points",
            ha="left" if side > 0 else "right",
            va="center",
            fontsize=7,
            zorder=4,
        )
        taken.append(_place_label(note, side, taken, ax.bbox, renderer))


def _place_label(note: Any, side: int, taken: Sequence[Bbox], inside: Bbox, renderer: Any) -> Bbox:
    """Move a point's label to the first offset where it overlaps nothing taken and stays in the axes."""
    for dx, dy in _LABEL_OFFSETS:
        note.xyann = (side * dx, dy)
        box = note.get_window_extent(renderer)
        if inside.contains(*box.p0) and inside.contains(*box.p1) and not any(box.overlaps(b) for b in taken):
            return box
    note.xyann = (side * _LABEL_OFFSETS[1][0], _LABEL_OFFSETS[1][1])  # crowded: just above the point
    return note.get_window_extent(renderer)


def _clusters(xy: np.ndarray, radius: float) -> list[list[int]]:
    """Point indices grouped so that each point lies within ``radius`` of another in its group."""
    groups: list[list[int]] = []
    for i, point in enumerate(xy):
        near = [g for g in groups if any(np.hypot(*(xy[j] - point)) <= radius for j in g)]
        groups = [g for g in groups if g not in near] + [sorted([j for g in near for j in g] + [i])]
    return sorted(groups)


CI_STYLE = {"fmt": "none", "elinewidth": 6, "alpha": 0.3, "capsize": 0, "zorder": 2.5}
CI_LABEL = "95 % CI of the mean (t interval)"


def ci_bars(ax: Any, x: Any, y: Any, low: Any, high: Any, color: Any, horizontal: bool = False) -> bool:
    """A thick translucent bar over each point's 95 % CI (``low``..``high``), drawn where the CI is known; True
    when one was drawn."""
    x, y, low, high = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (x, y, low, high))
    known = np.isfinite(low) & np.isfinite(high)
    if not known.any():
        return False
    centre = x if horizontal else y
    spread = [centre[known] - low[known], high[known] - centre[known]]
    if horizontal:
        ax.errorbar(x[known], y[known], xerr=spread, ecolor=color, **CI_STYLE)
    else:
        ax.errorbar(x[known], y[known], yerr=spread, ecolor=color, **CI_STYLE)
    return True
