"""What the bench writes: the printed table, the CSV and the plots beside it."""
import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.files import atomic_open

COLUMNS = (
    "method", "display", "impl", "task", "task_opts", "model", "backbone", "depth", "batch", "image_size", "device",
    "variant",
    "threads", "params", "backbone_params", "flops",
    "train_step_s", "train_samples_per_s", "infer_step_s", "infer_samples_per_s", "peak_memory_bytes",
    "peak_memory_kind", "train_ratio_vs_resnet", "train_ratio_round_median", "train_ratio_round_range",
    "infer_ratio_vs_resnet", "memory_ratio_vs_resnet", "compile_s",
    "torch_version", "machine", "load_1min", "date", "warning",
)


def label(row: dict[str, Any]) -> str:
    return row["display"] + (" (loop)" if row["impl"] == "loop" else "")


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    head = (f"{'method':22s} {'depth':>5s} {'variant':>18s} {'params(M)':>9s} {'GFLOPs':>7s} {'train s/step':>12s} "
            f"{'train img/s':>11s} {'x ResNet':>8s} {'per round':>9s} {'infer img/s':>11s} {'x ResNet':>8s} "
            f"{'mem(MB)':>8s} {'x ResNet':>8s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{label(r):22s} {r['depth']:5d} {r['variant']:>18s} {r['params'] / 1e6:9.3f} {r['flops'] / 1e9:7.3f} "
            f"{r['train_step_s']:12.3f} {r['train_samples_per_s']:11.1f} {r['train_ratio_vs_resnet']:8.2f} "
            f"{r['train_ratio_round_range']:>9s} "
            f"{r['infer_samples_per_s']:11.1f} {r['infer_ratio_vs_resnet']:8.2f} "
            f"{r['peak_memory_bytes'] / 1e6:8.1f} {r['memory_ratio_vs_resnet']:8.2f}")
    return "\n".join(lines)


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with atomic_open(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)


def _memory_note(rows: Sequence[dict[str, Any]]) -> str:
    """What the memory numbers are: CUDA's peak allocation or the CPU's RSS growth."""
    return "CUDA max allocated" if rows[0]["peak_memory_kind"].startswith("cuda") else \
        "CPU RSS growth during 2 train steps"


def _figure(width: float, height: float) -> Any:
    """A figure on the Agg canvas (no pyplot state), laid out so every label stays on it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def speed_figure(rows: Sequence[dict[str, Any]]) -> Any:
    """Samples/s (train and inference bars) and peak memory per method at the deepest depth; legend under the bars."""
    depth = max(r["depth"] for r in rows)
    at_depth = [r for r in rows if r["depth"] == depth]
    several = len({r["variant"] for r in at_depth}) > 1
    names = [f"{label(r)} [{r['variant']}]" if several else label(r) for r in at_depth]
    fig = _figure(12, max(3.5, 1.8 + 0.32 * len(at_depth)))
    ax_speed, ax_mem = fig.subplots(1, 2)
    y = list(range(len(at_depth)))  # two bars per method, side by side
    ax_speed.barh([i - 0.2 for i in y], [r["train_samples_per_s"] for r in at_depth], height=0.4,
                  color="tab:blue", label="train (fwd + bwd + SGD step)")
    ax_speed.barh([i + 0.2 for i in y], [r["infer_samples_per_s"] for r in at_depth], height=0.4,
                  color="tab:orange", label="inference")
    ax_speed.set_yticks(y, names)
    ax_speed.set_xlabel("throughput (images/s)")
    fig.legend(*ax_speed.get_legend_handles_labels(), loc="outside lower center", ncols=2, frameon=False,
               fontsize=9)  # under the x labels, off the bars
    ax_mem.barh(y, [r["peak_memory_bytes"] / 1e6 for r in at_depth], height=0.6, color="tab:green")
    ax_mem.set_yticks(y, [])
    ax_mem.set_xlabel(f"peak memory (MB, {_memory_note(at_depth)})")
    for ax in (ax_speed, ax_mem):
        ax.set_ylim(len(at_depth) - 0.5, -0.5)  # the first method on top
        ax.grid(axis="x", alpha=0.3)
    r0 = at_depth[0]
    fig.suptitle(f"{model_text(r0, depth)}, batch {r0['batch']}, {r0['device']} ({r0['threads']} threads)")
    return fig


def model_text(row: dict[str, Any], depth: int) -> str:
    """What was timed, as the task's bench step names it (``cifar ResNet-164``, ``Faster R-CNN (FPN) on ResNet-50,
    800x1333 images``)."""
    return str(row.get("model") or f"{row['backbone']} depth {depth}")


def growth_figure(rows: Sequence[dict[str, Any]]) -> Any:
    """Train step time and peak memory vs depth, a line per method and variant; legend right of the axes."""
    fig = _figure(12, 4.5)
    ax_time, ax_mem = fig.subplots(1, 2)
    several = len({r["variant"] for r in rows}) > 1
    for key in dict.fromkeys((r["method"], r["variant"]) for r in rows):
        series = sorted((r for r in rows if (r["method"], r["variant"]) == key), key=lambda r: r["depth"])
        style = "--" if series[0]["impl"] == "loop" else "-"
        ax_time.plot([r["depth"] for r in series], [r["train_step_s"] for r in series], style, marker="o",
                     label=label(series[0]) + (f" [{key[1]}]" if several else ""))
        ax_mem.plot([r["depth"] for r in series], [r["peak_memory_bytes"] / 1e6 for r in series], style, marker="o")
    ax_time.set(xlabel="depth (layers)", ylabel="train step time (s, median)", title="Train step time")
    ax_mem.set(xlabel="depth (layers)", ylabel="peak memory (MB)", title=f"Peak memory ({_memory_note(rows)})")
    for ax in (ax_time, ax_mem):
        ax.grid(alpha=0.3)
        ax.set_xticks(sorted({r["depth"] for r in rows}))
    fig.legend(loc="outside right center", fontsize=9, frameon=False)
    r0 = rows[0]
    fig.suptitle(f"Cost growth with depth, batch {r0['batch']}, {r0['device']}")
    return fig


def plot(rows: Sequence[dict[str, Any]], stem: Path) -> list[Path]:
    """Samples/s and memory per method at the deepest depth; with several depths, cost vs depth too (PNG files)."""
    figures = [(speed_figure(rows), stem.with_suffix(".png"))]
    if len({r["depth"] for r in rows}) > 1:
        figures.append((growth_figure(rows), stem.with_name(stem.name + "_growth.png")))
    for fig, path in figures:
        fig.savefig(path, dpi=120)
    return [path for _, path in figures]


