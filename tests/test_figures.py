"""The figures read: data in every axes, markers on one-point curves, every label and legend on the canvas, legends
off the data and only for what is drawn, ablation rows named by the method they built and in order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox
from test_report import make_record, save

from lai_bench.bench.output import growth_figure, speed_figure
from lai_bench.summary.aggregate import aggregate, build_frame, load_results, variant_labels
from lai_bench.summary.display import real_method
from lai_bench.tasks.classification.figures import (
    plot_ablation,
    plot_curves,
    plot_tradeoff,
    with_real_methods,
    write_figures,
)

# The default job's shape: ResNet-20, synthetic data, one epoch; ResNet and SE on one spot, as a smoke run gives.
SMOKE = {"none": (272_474, 12.5), "se": (273_000, 12.5), "dianet": (285_000, 10.9), "dla_l": (310_000, 14.1),
         "rla": (296_000, 9.4)}
PAPER = {("none", "cifar", 164, "cifar100", "top1"): (73.43, "DIANet README"),
         ("dianet", "cifar", 164, "cifar100", "top1"): (76.67, "DIANet README"),
         ("dianet", "cifar", 164, "cifar100", "params"): (1.946132, "public code")}
ABLATION = [("base", "lstm", 77.9), ("light", "none", 76.1), ("base", "dsu", 78.2), ("light", "dsu", 77.5),
            ("base", "none", 76.0), ("light", "lstm", 77.0)]


# ------------------------------------------------------------------ records and frames


def load(folder: Path) -> tuple[list[dict], object, object, list[str]]:
    """Records as the report reads them: the run frame, the aggregated frame and the config columns."""
    records, _ = load_results([folder])
    frame, config_cols = build_frame(records)
    return records, frame, aggregate(frame, config_cols), config_cols


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple:
    """One-epoch records on synthetic data (two seeds of ResNet, one of the rest)."""
    folder = tmp_path_factory.mktemp("smoke")
    for method, (params, top1) in SMOKE.items():
        for seed in range(2 if method == "none" else 1):
            save(folder, make_record(method, "synthetic", seed, (top1, top1), grid="smoke", depth=20,
                                     epochs=1, params=params, flops=params * 150))
    return load(folder)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> tuple:
    """Four-epoch CIFAR-100 records of ResNet, SE and DLA-L, three seeds each: ResNet and DIANet are published."""
    folder = tmp_path_factory.mktemp("cifar")
    for method, top1 in (("none", 74.0), ("se", 75.2), ("dla_l", 77.4)):
        for seed in range(3):
            save(folder, make_record(method, "cifar100", seed, (top1 + seed / 4, top1)))
    return load(folder)


@pytest.fixture(scope="module")
def ablation(tmp_path_factory) -> tuple:
    """``dla_l`` runs with attention=light and attention=base (DLA-B) and three cells, two seeds each, unordered."""
    folder = tmp_path_factory.mktemp("ablation")
    for attention, cell, top1 in ABLATION:
        for seed in range(2):
            save(folder, make_record("dla_l", "cifar100", seed, (top1 + seed / 5, top1), grid="ablation_dsu",
                                     opts={"attention": attention, "cell": cell},
                                     run_id=f"ablation-{attention}-{cell}-{seed}"))
    return load(folder)


def tradeoff(loaded: tuple, paper: dict, x: str = "params") -> Figure:
    _, _, agg, config_cols = loaded
    named = with_real_methods(agg)
    dataset = agg["dataset"].iloc[0]
    return plot_tradeoff(named, variant_labels(named, config_cols), paper, dataset, x)


def curves(loaded: tuple) -> Figure:
    records, frame, agg, config_cols = loaded
    labels = dict(zip(agg["config_key"], variant_labels(with_real_methods(agg), config_cols)))
    return plot_curves(records, frame, labels, agg["dataset"].iloc[0])


# ------------------------------------------------------------------ what "readable" means


def drawn(fig: Figure):
    """The figure drawn as it is saved (constrained layout done); its renderer."""
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def has_data(ax) -> bool:
    """Lines with a finite point, bars or other patches, or collections with paths."""
    lines = any(np.isfinite(np.asarray(line.get_xydata(), float)).all(axis=1).any() for line in ax.lines)
    return lines or bool(ax.patches) or any(len(c.get_paths()) for c in ax.collections)


def text_boxes(fig: Figure, renderer) -> list[tuple[str, Bbox]]:
    """Every shown text's extent; tick labels through their axis (only the ticks drawn count)."""
    ticks = {
        id(text)
        for ax in fig.axes
        for axis in (ax.xaxis, ax.yaxis)
        for tick in axis.get_major_ticks() + axis.get_minor_ticks()
        for text in (tick.label1, tick.label2)
    }
    boxes = [
        (text.get_text(), text.get_window_extent(renderer))
        for text in fig.findobj(Text)
        if id(text) not in ticks and text.get_visible() and text.get_text().strip()
    ]
    for ax in fig.axes:
        for name, axis in (("x axis", ax.xaxis), ("y axis", ax.yaxis)):
            box = axis.get_tightbbox(renderer)
            if box is not None:
                boxes.append((f"{name} of {ax.get_title()!r}", box))
    return boxes


def inside(box: Bbox, frame: Bbox, slack: float = 1.0) -> bool:
    return (box.x0 >= frame.x0 - slack and box.y0 >= frame.y0 - slack and box.x1 <= frame.x1 + slack
            and box.y1 <= frame.y1 + slack)


def legends(fig: Figure) -> list:
    return list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]


def covers_data(box: Bbox, fig: Figure, renderer) -> bool:
    """True when the box lies over a data point, a bar or an error bar/band drawn in any axes."""
    for ax in fig.axes:
        if not box.overlaps(ax.bbox):
            continue
        points = [line.get_transform().transform(line.get_xydata()) for line in ax.lines]
        points += [c.get_transform().transform(p.vertices) for c in ax.collections for p in c.get_paths()]
        for xy in points:
            if any(ax.bbox.contains(x, y) and box.contains(x, y) for x, y in xy if np.isfinite([x, y]).all()):
                return True
        for patch in ax.patches:
            shown = Bbox.intersection(patch.get_window_extent(renderer), ax.bbox)
            if shown is not None and box.overlaps(shown):
                return True
    return False


def assert_readable(fig: Figure) -> None:
    """Data in every axes; every text and legend on the canvas; no legend over the data."""
    renderer = drawn(fig)
    assert fig.axes and all(has_data(ax) for ax in fig.axes)
    for name, box in text_boxes(fig, renderer):
        assert inside(box, fig.bbox), f"{name!r} at {box.extents} leaves the canvas {fig.bbox.extents}"
    for legend in legends(fig):
        box = legend.get_window_extent(renderer)
        assert inside(box, fig.bbox), f"legend at {box.extents} leaves the canvas {fig.bbox.extents}"
        assert not covers_data(box, fig, renderer), "the legend covers data"


def marked(ax) -> list:
    """The axes' data lines: every line but error-bar caps (marker ``_``)."""
    return [line for line in ax.lines if line.get_marker() != "_"]


def legend_texts(fig: Figure) -> list[str]:
    return [text.get_text() for legend in legends(fig) for text in legend.get_texts()]


# ------------------------------------------------------------------ training curves


def test_one_epoch_curves_have_visible_markers_on_a_whole_epoch_axis(smoke):
    fig = curves(smoke)
    assert_readable(fig)
    for ax in fig.axes:
        one_point = [line for line in marked(ax) if len(line.get_xdata()) == 1]
        assert len(one_point) == len(SMOKE)
        for line in one_point:
            assert line.get_marker() not in (None, "None", "", " ") and line.get_markersize() >= 5
            assert line.get_markeredgewidth() > 0
        assert list(ax.get_xticks()) == [1] and ax.get_xlim() == (0.5, 1.5)
    assert len(legend_texts(fig)) == len(SMOKE) + 1 and "ResNet (n=2)" in legend_texts(fig)
    assert legend_texts(fig)[-1] == "chance 10 %"  # synthetic data: its chance line


def test_many_epoch_curves_are_lines_with_std_bands(cifar):
    fig = curves(cifar)
    assert_readable(fig)
    for ax in fig.axes:
        assert [len(line.get_xdata()) for line in marked(ax)] == [4, 4, 4]
        assert len(ax.collections) == 3  # a ±std band per configuration


# ------------------------------------------------------------------ accuracy vs cost


@pytest.mark.parametrize("x", ["params", "flops"])
def test_tradeoff_without_published_points_has_no_published_legend_entry(smoke, x):
    fig = tradeoff(smoke, PAPER, x)  # the paper's numbers are for CIFAR-100 ResNet-164: none drawn here
    assert_readable(fig)
    (ax,) = fig.axes
    assert not any(line.get_markerfacecolor() == "none" for line in ax.lines)
    assert not any("published" in text for text in legend_texts(fig))
    assert "ours: mean ± std over seeds" in legend_texts(fig)


def test_overlapping_points_share_a_label_and_every_point_is_named(smoke):
    (ax,) = tradeoff(smoke, {}).axes
    notes = [text.get_text().replace("\n", " ") for text in ax.texts]
    assert any("ResNet" in note and "SE" in note for note in notes)  # ResNet's marker is under SE's: named
    for name in ("ResNet", "SE", "DIANet", "DLA-L", "RLA-Net"):
        assert sum(name in note.split(", ") for note in notes) == 1, (name, notes)


def test_published_points_are_drawn_under_ours_and_named_in_the_legend(cifar):
    fig = tradeoff(cifar, PAPER)
    assert_readable(fig)
    (ax,) = fig.axes
    published = [line for line in marked(ax) if line.get_markerfacecolor() == "none"]
    ours = [line for line in marked(ax) if line.get_markerfacecolor() != "none"]
    assert len(published) == 2 and len(ours) == 3
    assert max(line.get_zorder() for line in published) < min(line.get_zorder() for line in ours)
    texts = legend_texts(fig)
    assert "published" in texts and "DIANet (published only)" in texts
    assert not any("ResNet (published only)" in text for text in texts)  # ours is drawn as well


# ------------------------------------------------------------------ the DSU ablation


def test_ablation_rows_are_named_by_their_method_and_ordered(ablation):
    _, _, agg, config_cols = ablation
    fig = plot_ablation(agg, config_cols)
    assert_readable(fig)
    (ax,) = fig.axes
    ticks = [text.get_text() for text in ax.get_yticklabels()]
    assert ticks == [f"{name}: cell={cell}" for name in ("DLA-L", "DLA-B") for cell in ("dsu", "lstm", "none")]
    top_to_bottom = sorted(range(len(ticks)), key=lambda i: -ax.transData.transform((0, i))[1])
    assert top_to_bottom == list(range(len(ticks)))  # the first row is drawn on top
    values = {f"{'DLA-B' if a == 'base' else 'DLA-L'}: cell={c}": f"{top1 + 0.1:.2f} ± " for a, c, top1 in ABLATION}
    for y, tick in enumerate(ticks):
        assert [t.get_text() for t in ax.texts][y].startswith(values[tick])


@pytest.fixture(scope="module")
def shipped_ablation(tmp_path_factory) -> tuple:
    """One seed of every setting of the shipped ``ablation_dsu`` grid (DLA-L and DLA-B, long labels)."""
    from lai_bench.core.resources import shipped_grid
    from lai_bench.launch.grid import read_grid

    folder = tmp_path_factory.mktemp("shipped_ablation")
    for k, spec in enumerate(s for s in read_grid(shipped_grid("ablation_dsu")).runs if s.config.seed == 0):
        save(folder, make_record("dla_l", "cifar100", 0, (70.0 + k % 7, 69.0), grid="ablation_dsu",
                                 opts=spec.config.model_opts, run_id=spec.run_id))
    return load(folder)


def test_the_shipped_ablation_grid_reads_with_every_row_named_and_ordered(shipped_ablation):
    _, _, agg, config_cols = shipped_ablation
    fig = plot_ablation(agg, config_cols)
    assert_readable(fig)
    (ax,) = fig.axes
    ticks = [text.get_text() for text in ax.get_yticklabels()]
    assert len(set(ticks)) == len(ticks) == 18
    assert [t.split(":")[0] for t in ticks] == ["DLA-L"] * 9 + ["DLA-B"] * 9
    assert not any("attention=" in t for t in ticks)  # the name says it
    full = [t for t in ticks[:9] if "cell=dsu" in t and "forward_path" not in t and "refresh_context=sample0" in t]
    assert [int(t.split("reduction=")[1].split(",")[0]) for t in full] == [2, 4, 8, 16]  # numbers by size
    assert ax.get_xlim()[0] > 0 and ax.get_xlabel().endswith("(axis zoomed, not from 0)")


def test_an_ablation_axis_that_starts_at_zero_does_not_say_it_is_zoomed(tmp_path):
    for k, opts in enumerate([{"cell": "dsu"}, {"cell": "none"}]):  # smoke-run accuracies: 0 and 25 %
        save(tmp_path, make_record("dla_l", "cifar100", 0, (25.0 * k, 0.0), grid="ablation_dsu", opts=opts,
                                   run_id=f"r{k}"))
    _, _, agg, config_cols = load(tmp_path)
    (ax,) = plot_ablation(agg, config_cols).axes
    assert ax.get_xlim()[0] == 0 and "zoomed" not in ax.get_xlabel()


def test_long_names_become_numbers_on_the_axes_and_the_legend_goes_under_them(shipped_ablation):
    for fig in (tradeoff(shipped_ablation, {}), curves(shipped_ablation)):
        assert_readable(fig)
        (legend,) = fig.legends  # the figure's, under the axes
        entries = [text.get_text() for text in legend.get_texts()]
        assert entries[0].startswith("1: DLA-L [") and entries[9].startswith("10: DLA-B [")
        assert legend.get_window_extent().y1 < min(ax.get_position().y0 for ax in fig.axes) * fig.bbox.height
    (ax,) = tradeoff(shipped_ablation, {}).axes
    numbers = sorted(int(n) for text in ax.texts for n in text.get_text().replace("\n", " ").split(", "))
    assert numbers == list(range(1, 19))  # every point named once, by its legend number


def test_real_method_follows_the_options_that_define_a_name():
    assert real_method("dla_l", {"attention": "base", "cell": "lstm"}) == "dla_b"
    assert real_method("dla_b", {"attention": "light"}) == "dla_l"
    assert real_method("dla_l", {"attention": float("nan")}) == "dla_l"  # unset: the method's own default
    assert real_method("se", {}) == "se" and real_method("mystery", {"attention": "base"}) == "mystery"


# ------------------------------------------------------------------ the report's files


def test_write_figures_keeps_its_file_names(smoke, ablation, tmp_path):
    records, frame, agg, config_cols = smoke
    written = write_figures(records, frame, agg, config_cols, paper_rows=_no_paper(), metric="best", folder=tmp_path)
    stems = {"acc_vs_params_synthetic", "acc_vs_flops_synthetic", "curves_synthetic"}
    assert sorted(written) == sorted(tmp_path / f"{s}.{e}" for s in stems for e in ("png", "pdf"))
    records, frame, agg, config_cols = ablation
    written = write_figures(records, frame, agg, config_cols, paper_rows=_no_paper(), metric="best", folder=tmp_path)
    assert tmp_path / "ablation_dsu.png" in written and all(p.stat().st_size > 1000 for p in written)


def _no_paper():
    from lai_bench.summary.paper import load_paper

    return load_paper(None)


# ------------------------------------------------------------------ bench figures


def bench_rows(depths: tuple[int, ...] = (20, 56)) -> list[dict]:
    """Rows as ``python -m lai_bench.bench`` measures them, ResNet the fastest, one loop row."""
    rows = []
    for depth in depths:
        for k, (method, display, impl) in enumerate((("none", "ResNet", "fast"), ("se", "SE", "fast"),
                                                     ("dla_b", "DLA-B", "fast"), ("dla_b_loop", "DLA-B", "loop"))):
            step = depth / 100 * (1 + k / 2)
            rows.append({"method": method, "display": display, "impl": impl, "backbone": "cifar", "depth": depth,
                         "batch": 8, "device": "cpu", "variant": "fp32", "threads": 2, "train_step_s": step,
                         "train_samples_per_s": 8 / step, "infer_samples_per_s": 24 / step,
                         "peak_memory_bytes": int(depth * 1e6 * (1 + k)), "peak_memory_kind": "cpu_rss_growth"})
    return rows


def test_bench_bars_keep_the_legend_off_the_bars():
    fig = speed_figure(bench_rows())
    assert_readable(fig)
    ticks = [text.get_text() for text in fig.axes[0].get_yticklabels()]
    assert ticks == ["ResNet", "SE", "DLA-B", "DLA-B (loop)"]
    assert legend_texts(fig) == ["train (fwd + bwd + SGD step)", "inference"]


def test_bench_growth_labels_stay_clear_of_the_title():
    fig = growth_figure(bench_rows())
    assert_readable(fig)
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    for ax in fig.axes:
        assert not ax.yaxis.label.get_window_extent(renderer).overlaps(title)
    assert len(legend_texts(fig)) == 4
