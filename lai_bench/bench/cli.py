"""Speed and memory of every method side by side, in one process on one device (like timm's benchmark).

    python -m lai_bench.bench --methods all --backbone cifar --depth 164 --batch 128
    python -m lai_bench.bench --methods all --loops --depth 20,56,110,164 --batch 32     # cost growth with depth
    python -m lai_bench.bench --methods all,dla_b_loop --rounds 3 ...  # a shared machine: medians of rounds
    python -m lai_bench.bench --methods all --channels-last ...  # CPU: NCHW and channels_last rows
    python -m lai_bench.bench --methods all --compile ...                                # torch.compile rows as well
    python -m lai_bench.bench --task detection --task-opt detector=mask_rcnn --methods none,dla_l --depth 50

For each method and depth: params, fvcore FLOPs, train step (forward + backward + SGD step) and inference time as
the median of --steps timed repeats after --warmup, samples/s, peak memory, and every ratio to plain ResNet of the
same depth and variant (a compiled row against compiled ResNet). Every method runs the same plain PyTorch code.
What is timed is the task's bench step (`Task.bench_row`, defaults `Task.bench_defaults`; --task-opt KEY=VALUE sets
the task's options as a run's task_opts): for classification the classifier on one image batch; with --task detection
the torchvision detector (FPN) on the method's ResNet, as the COCO runs build it, fed --size images (default
800x1333, batch 2) with a few random boxes each.
Writes one CSV under --out (a new file per call, never overwriting an earlier one; rows measured so far are in a
-partial.csv until then), prints a table and draws the PNG plots beside the CSV.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError
from ..core.devices import cpu_threads, usable_cpus
from ..core.plugins import load_plugins
from ..models import backbone_info, default_backbone, display_name, list_backbones, list_models, method_info
from ..models.reference import REFERENCE_IMPLS
from ..tasks import default_task, list_tasks, task_class
from ..train.cli import key_values
from ..validate import check_task_options
from .output import format_table, label, plot, write_csv

LOOP_SUFFIX = "_loop"  # e.g. dla_b_loop: the straightforward per-layer implementation of dla_b
# A method adds work to ResNet: a row this much faster than ResNet of its depth and variant was measured under noise.
FASTER_THAN_RESNET = 0.95
# What the bench measures when neither the command line nor the task says otherwise.
BENCH_DEFAULTS = {"batch": 128, "num_classes": 100, "size": None}
# (name, autocast dtype, channels_last, torch.compile). On CUDA every method is also measured with channels_last
# and bf16 autocast, apart and together; --compile adds a compiled row per variant.
Variant = tuple[str, torch.dtype | None, bool, bool]
VARIANTS: dict[str, list[Variant]] = {
    "cpu": [("fp32", None, False, False)],
    "cuda": [("fp32", None, False, False), ("channels_last", None, True, False), ("bf16", torch.bfloat16, False, False),
             ("channels_last+bf16", torch.bfloat16, True, False)],
}


def parse_methods(text: str, loops: bool) -> list[tuple[str, bool]]:
    """(method, reference) pairs: 'all' or a comma list; NAME_loop or --loops adds the per-layer implementation."""
    allowed = list_models() + [m + LOOP_SUFFIX for m in REFERENCE_IMPLS]
    picked: list[tuple[str, bool]] = []
    for name in [n.strip() for n in text.split(",") if n.strip()]:
        if name == "all":
            picked += [(m, False) for m in sorted(list_models(), key=lambda m: (method_info(m).order, m))]
        elif name.endswith(LOOP_SUFFIX) and name[: -len(LOOP_SUFFIX)] in REFERENCE_IMPLS:
            picked.append((name[: -len(LOOP_SUFFIX)], True))
        elif name in list_models():
            picked.append((name, False))
        else:
            raise ValueError(f"unknown method {name!r}; allowed: all, {', '.join(allowed)}")
    if loops:
        picked += [(m, True) for m, ref in list(picked) if not ref and m in REFERENCE_IMPLS]
    if not picked:
        raise ValueError(f"no method given; allowed: all, {', '.join(allowed)}")
    picked = list(dict.fromkeys([("none", False)] + picked))  # every ratio is to plain ResNet: measured first
    first = {}
    for position, (method, _) in enumerate(picked):
        first.setdefault(method, position)
    return sorted(picked, key=lambda p: (first[p[0]], p[1]))  # a loop row right after its fast row


def parse_depths(text: str) -> list[int]:
    try:
        depths = [int(d) for d in text.split(",") if d.strip()]
    except ValueError:
        raise ValueError(f"--depth takes integers separated by commas, got {text!r}") from None
    if not depths:
        raise ValueError("--depth needs at least one depth")
    return depths


def check_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; allowed: cpu, cuda, cuda:N") from None
    if device.type not in VARIANTS:
        raise ValueError(f"unknown device {name!r}; allowed: cpu, cuda, cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: CUDA is not available on this machine; allowed here: cpu")
    return device


def parse_size(text: str) -> tuple[int, int]:
    """``H,W`` (detection images) as two positive integers."""
    try:
        height, width = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--size takes the image height and width as H,W (e.g. 800,1333), got {text!r}") from None
    if height < 32 or width < 32:
        raise ValueError(f"--size must be at least 32,32 (the FPN's coarsest stride), got {text!r}")
    return height, width


def resolve_task(args: argparse.Namespace) -> None:
    """Fill in the task's defaults (`Task.bench_defaults`) for the options left unset, type its --task-opt options
    by the task's schema, then let the task check what it cannot measure (`Task.bench_check`)."""
    try:
        task = task_class(args.task)
    except ValueError as e:
        raise ValueError(f"--task: {e}") from None
    args.task = task.name
    for key, default in {**BENCH_DEFAULTS, **task.bench_defaults}.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    if args.size is not None and "size" not in task.bench_defaults:
        raise ValueError(f"--size: task {task.name}'s bench step takes no image size (allowed: no --size)")
    pairs = key_values(args.task_opt, "--task-opt")
    try:
        args.task_opts = {**task.option_defaults, **check_task_options(task, pairs)}
    except ConfigError as e:
        raise ValueError(str(e).replace("task_opts", "--task-opt")) from None
    task.bench_check(args)
    if args.backbone is None:
        args.backbone = default_backbone()
    if args.depth is None:
        info = backbone_info(args.backbone)
        args.depth = str(info.bench_depth or info.default_depth)


def _task_defaults(key: str) -> str:
    """Each task's bench default of `key`, for the help: "classification 128, detection 2"."""
    values = {name: {**BENCH_DEFAULTS, **task_class(name).bench_defaults}.get(key) for name in list_tasks()}
    return ", ".join(f"{name} {value}" for name, value in values.items() if value is not None) or "none"



def bench_one(method: str, reference: bool, args: argparse.Namespace, depth: int, device: torch.device,
              variant: Variant) -> dict[str, Any]:
    """One row of the CSV (ratios filled in later)."""
    name, amp_dtype, channels_last, compile = variant
    torch.manual_seed(0)
    # The loop rows replay the public code's cost (up to ~20x ResNet): fewer repeats keep a run in minutes.
    steps, warmup = args.steps, args.warmup
    if reference and args.loop_steps:
        steps, warmup = args.loop_steps, min(args.warmup, 1)
    load = os.getloadavg()[0]  # the CPU may be shared: a busy machine explains slow rows
    m = task_class(args.task).bench_row(method, args, depth, device, variant, steps, warmup, reference)
    return {
        "method": method + (LOOP_SUFFIX if reference else ""), "display": display_name(method),
        "impl": "loop" if reference else "fast", "task": args.task,
        "task_opts": json.dumps(args.task_opts, sort_keys=True) if args.task_opts else "", "model": m["model"],
        "backbone": args.backbone, "depth": depth, "batch": args.batch, "image_size": m["input"],
        "device": str(device), "variant": name, "threads": torch.get_num_threads(), "params": m["params"],
        "backbone_params": m.get("backbone_params", ""),
        "flops": m["flops"], "train_step_s": m["train_step_time_s"], "train_samples_per_s": m["train_samples_per_s"],
        "infer_step_s": m["infer_step_time_s"], "infer_samples_per_s": m["infer_samples_per_s"],
        "peak_memory_bytes": m["peak_memory_bytes"], "peak_memory_kind": m["peak_memory_kind"],
        "compile_s": m["compile_s"], "torch_version": torch.__version__, "machine": machine(device),
        "load_1min": round(load, 2), "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }


def machine(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model} ({os.cpu_count()} cores)"


def median_row(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One method's rows from several rounds as one: the median of each measured cost."""
    row = dict(rounds[0])
    for key in ("train_step_s", "infer_step_s", "peak_memory_bytes", "load_1min"):
        row[key] = statistics.median(r[key] for r in rounds)
    if row["compile_s"] is not None:
        row["compile_s"] = statistics.median(r["compile_s"] for r in rounds)
    row["peak_memory_bytes"] = int(row["peak_memory_bytes"])
    row["train_samples_per_s"] = row["batch"] / row["train_step_s"]
    row["infer_samples_per_s"] = row["batch"] / row["infer_step_s"]
    return row


def add_round_ratios(rows: list[dict[str, Any]], samples: Sequence[Sequence[dict[str, Any]]]) -> None:
    """Each round's train ratio against that round's ResNet: steadier than a ratio of medians on a drifting machine."""
    base = {(r["depth"], r["variant"]): rounds for r, rounds in zip(rows, samples) if r["method"] == "none"}
    for row, rounds in zip(rows, samples):
        ratios = [a["train_step_s"] / b["train_step_s"] for a, b in zip(rounds, base[(row["depth"], row["variant"])])]
        row["train_ratio_round_median"] = statistics.median(ratios)
        row["train_ratio_round_range"] = f"{min(ratios):.2f}-{max(ratios):.2f}"


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Every row's costs relative to plain ResNet (fast) of the same depth and variant."""
    base = {(r["depth"], r["variant"]): r for r in rows if r["method"] == "none"}
    for r in rows:
        ref = base[(r["depth"], r["variant"])]
        r["train_ratio_vs_resnet"] = r["train_step_s"] / ref["train_step_s"]
        r["infer_ratio_vs_resnet"] = r["infer_step_s"] / ref["infer_step_s"]
        r["memory_ratio_vs_resnet"] = (r["peak_memory_bytes"] / ref["peak_memory_bytes"]
                                       if ref["peak_memory_bytes"] else float("nan"))


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and every option's default once (none for switches and unset options)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: {action.default})".strip()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lai_bench.bench", description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument("--methods", default="all",
                   help="all, or a comma list of methods; NAME_loop (mrla_base_loop, dla_b_loop) adds the "
                        "straightforward per-layer implementation. ResNet ('none') is always measured.")
    p.add_argument("--loops", action="store_true", help="add the per-layer implementation of every method that has one")
    p.add_argument("--plugins", default=None,
                   help="comma list of modules to import first: plug-ins that register methods, backbones or tasks")
    p.add_argument("--task", default=None,
                   help=f"whose bench step is timed: {' | '.join(list_tasks())} (default: {default_task()})")
    options = "; ".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in task_class(name).option_defaults.items())
                        for name in list_tasks() if task_class(name).option_defaults)
    p.add_argument("--task-opt", action="append", metavar="KEY=VALUE",
                   help=f"a task option, as a run's task_opts (repeatable) (default: the task's: {options})")
    p.add_argument("--size", default=None, help=f"image height,width where the task takes one (default: "
                                                f"{_task_defaults('size')})")
    p.add_argument("--backbone", default=None, choices=list_backbones(),
                   help=f"the network family (default: the task's, else {default_backbone()})")
    depths = ", ".join(f"{name} {backbone_info(name).bench_depth or backbone_info(name).default_depth}"
                       for name in list_backbones())
    p.add_argument("--depth", default=None,
                   help=f"one depth or a comma list (cost growth), e.g. 20,56,110,164 (default: the task's "
                        f"({_task_defaults('depth')}), else the backbone's: {depths})")
    p.add_argument("--batch", type=int, default=None, help=f"samples per step (default: {_task_defaults('batch')})")
    p.add_argument("--num-classes", type=int, default=None,
                   help=f"classifier outputs or object categories (default: {_task_defaults('num_classes')})")
    p.add_argument("--steps", type=int, default=5, help="timed repeats; the median is reported")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    p.add_argument("--loop-steps", type=int, default=None,
                   help="timed repeats for the per-layer (loop) rows, which are slow (unset: --steps; "
                        "their warm-up is then at most 1 step)")
    p.add_argument("--rounds", type=int, default=3,
                   help="measure every method this many times in turn and keep the medians: on a shared machine "
                        "a burst of load then hits one round of one method, not the whole row")
    p.add_argument("--device", default="cpu",
                   help="cpu | cuda | cuda:N (cuda adds channels_last, bf16 autocast and both together as rows)")
    p.add_argument("--channels-last", action="store_true",
                   help="on CPU, also measure every method in channels_last memory format (own ResNet baseline); "
                        "on CUDA that row is always there")
    p.add_argument("--variants", default=None,
                   help="keep only these variants, a comma list of names as printed (e.g. on CUDA: "
                        "fp32,channels_last+bf16,channels_last+bf16+compile); unset: every one")
    p.add_argument("--compile", action="store_true",
                   help="also measure every method under torch.compile (a compiled row per variant, against compiled "
                        "ResNet; compile time in the compile_s column)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (unset: the CPUs this process may use)")
    p.add_argument("--out", default="results/bench", help="folder of the CSV and plots")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        load_plugins([name.strip() for name in (args.plugins or "").split(",") if name.strip()])
        methods = parse_methods(args.methods, args.loops)
        args.per_layer = any(reference for _, reference in methods)  # what a task's bench_check may refuse
        resolve_task(args)
        if args.size is not None:
            args.size = parse_size(args.size)
        depths = parse_depths(args.depth)
        device = check_device(args.device)
        for value, flag in ((args.batch, "--batch"), (args.steps, "--steps"), (args.num_classes, "--num-classes"),
                            (args.rounds, "--rounds")):
            if value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
        if args.loop_steps is not None and args.loop_steps < 1:
            raise ValueError(f"--loop-steps must be >= 1, got {args.loop_steps}")
        if args.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
        for depth in depths:  # every depth must fit before minutes are spent on the first
            backbone_info(args.backbone).check_depth(depth)
        variants = pick_variants(device, args)
    except (ValueError, ImportError) as e:  # ImportError: a plug-in that cannot be imported (PluginError)
        print(f"error: {e}", file=sys.stderr)
        return 2
    threads = torch.get_num_threads()
    torch.set_num_threads(cpu_threads(args.threads, current=threads))
    try:
        return run(args, methods, depths, device, variants)
    finally:
        torch.set_num_threads(threads)  # main() may be called in-process (tests): leave it as found


def pick_variants(device: torch.device, args: argparse.Namespace) -> list[Variant]:
    """The variants to measure on ``device``: its defaults, channels_last/compile rows, filtered by --variants."""
    variants = VARIANTS[device.type]
    if args.channels_last and not any(v[2] for v in variants):
        variants = variants + [("channels_last", None, True, False)]
    if args.compile:
        variants = variants + [(f"{name}+compile", dtype, cl, True) for name, dtype, cl, _ in variants]
    if args.variants:
        wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = sorted(set(wanted) - {v[0] for v in variants})
        if unknown:
            raise ValueError(f"unknown variant(s) {unknown} for {device.type}; allowed: "
                             f"{', '.join(v[0] for v in variants)} (compiled ones need --compile)")
        variants = [v for v in variants if v[0] in wanted]
    return variants


def add_warnings(rows: list[dict[str, Any]], cpus: int | None = None) -> list[str]:
    """Mark rows whose numbers a busy machine may have spoiled; return the warnings, one line each.

    Two signs: the 1-minute load above the CPUs this process may use, and a row clearly faster than ResNet of its
    depth and variant (every method adds work to ResNet, so that is noise, not speed)."""
    cpus = cpus or usable_cpus()
    lines = []
    for r in rows:
        why = []
        if r["device"] == "cpu" and r["load_1min"] > cpus:
            why.append(f"load {r['load_1min']:.1f} > {cpus} usable CPUs")
        if r["method"] != "none" and r["train_ratio_vs_resnet"] < FASTER_THAN_RESNET:
            why.append(f"{r['train_ratio_vs_resnet']:.2f}x ResNet's train step: ResNet's own rows were slowed")
        r["warning"] = "; ".join(why)
        if why:
            lines.append(f"warning: {label(r)} depth {r['depth']} {r['variant']}: {r['warning']} "
                         "(numbers unreliable: rerun on an idle machine or with more --rounds)")
    return lines


def run(args: argparse.Namespace, methods: list[tuple[str, bool]], depths: list[int], device: torch.device,
        variants: list[Variant]) -> int:
    """Measure every (depth, method, variant) in turn, then write the CSV, the table and the plots."""
    jobs = [(d, m, ref, v) for d in depths for m, ref in methods for v in variants]
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    model = args.task_opts.get("detector") or args.backbone  # the detector names a detection bench's files
    stem = Path(args.out) / f"bench-{model}-d{'_'.join(map(str, depths))}-b{args.batch}-{device.type}-{stamp}"
    print(f"{len(jobs)} measurement(s) on {device} ({torch.get_num_threads()} threads) -> {stem}.csv", flush=True)
    samples: list[list[dict[str, Any]]] = [[] for _ in jobs]
    partial = stem.with_name(stem.name + "-partial.csv")  # raw rows as they come; removed once the CSV is written
    for round_ in range(1, args.rounds + 1):
        for i, (depth, method, ref, variant) in enumerate(jobs):
            start = time.perf_counter()
            row = bench_one(method, ref, args, depth, device, variant)
            samples[i].append(row)
            write_csv([r for rs in samples for r in rs], partial)  # what is measured survives an interruption
            print(f"[{i + 1}/{len(jobs)}{f' round {round_}' if args.rounds > 1 else ''}] {label(row):18s} "
                  f"depth {depth:4d} {variant[0]:>18s}: train {row['train_step_s']:.3f} s/step, "
                  f"infer {row['infer_step_s']:.3f} s/step ({time.perf_counter() - start:.0f}s)", flush=True)
    rows = [median_row(rs) for rs in samples]
    add_ratios(rows)
    add_round_ratios(rows, samples)
    warnings = add_warnings(rows)
    write_csv(rows, stem.with_suffix(".csv"))
    partial.unlink(missing_ok=True)
    print()
    print(format_table(rows))
    for line in warnings:
        print(line)
    for path in [stem.with_suffix(".csv"), *plot(rows, stem)]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
