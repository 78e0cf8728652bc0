"""How many seeds a comparison needs, and what a grid's seeds can resolve.

    python -m lai_bench.report.plan --std 0.3 --delta 0.3      # seeds per method to tell a 0.3-point gain
    python -m lai_bench.report.plan --results results/variance --delta 0.2   # the std measured from records
    python -m lai_bench.report.plan --grid cifar               # the smallest gain the cifar grid's seeds resolve

An unpaired two-sided t-test at alpha 0.05 and power 0.8 (statsmodels ``TTestIndPower``): the conservative plan, since
a paired comparison over shared seeds needs no more. Without ``--std`` or ``--results`` the std is an assumption:
0.3 points, the seed-to-seed spread of a CIFAR-100 ResNet-164; the ``variance`` grid measures it on your cluster.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..summary.stats import ALPHA, POWER, detectable_delta, seeds_per_arm, within_std

DEFAULT_STD = 0.3  # points of top-1: a CIFAR-100 ResNet-164's seed-to-seed std (an assumption, stated as one)
ASSUMPTION = (f"assumed {DEFAULT_STD} pp, the seed-to-seed std of a CIFAR-100 ResNet-164; measure your own with "
              "`python -m lai_bench.run --grid variance` and --results")


class PlanError(ValueError):
    """Bad planning input; the message names the option."""


def std_from_results(folders: Sequence[str | Path], metric: str = "best") -> tuple[float, int, int]:
    """The seed-to-seed std of the headline top-1 pooled over every configuration of the records under ``folders``
    (statsmodels OLS residual of ``top1 ~ configuration``), its degrees of freedom and the runs it used."""
    from ..summary.aggregate import build_frame, load_results

    missing = [str(f) for f in folders if not Path(f).is_dir()]
    if missing:
        raise PlanError(f"--results: no such results folder: {', '.join(missing)}")
    records, _ = load_results(folders)
    frame, _ = build_frame(records)
    column = f"top1_{metric}"
    if len(frame) and column in frame:
        frame = frame[(frame["status"] == "completed") & frame[column].notna()]  # runs that report top-1
    else:
        frame = frame.iloc[0:0]
    std, dof = within_std(frame[column], frame["config_key"]) if len(frame) else (math.nan, 0)
    if not dof or not math.isfinite(std) or std <= 0:
        raise PlanError(f"--results: no configuration with 2 or more completed seeds of {column} and a spread in "
                        f"{', '.join(map(str, folders))}; give --std")
    return std, dof, len(frame)


def grid_seeds(name: str) -> tuple[str, Counter]:
    """A grid's name and how many configurations it runs with each number of seeds."""
    from dataclasses import asdict

    from ..core.resources import shipped_grid, shipped_grids
    from ..launch.grid import GridError, read_grid
    from ..records.store import config_key

    path = shipped_grid(name) or Path(name)
    if not path.is_file():
        raise PlanError(f"--grid: no grid {name!r}; shipped: {', '.join(shipped_grids())} (or a path to a YAML file)")
    try:
        grid = read_grid(path)
    except GridError as err:
        raise PlanError(f"--grid: {err}") from None
    seeds: dict[str, set] = {}
    for spec in grid.runs:
        seeds.setdefault(config_key(asdict(spec.config)), set()).add(spec.config.seed)
    return grid.name, Counter(len(s) for s in seeds.values())


def _parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m lai_bench.report.plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--std", type=float, default=None,
                        help=f"seed-to-seed std of the metric, in points (default: from --results, else {DEFAULT_STD})")
    parser.add_argument("--delta", type=float, default=None, help="the gain to detect, in points")
    parser.add_argument("--results", action="append", default=None, metavar="DIR",
                        help="estimate the std from the records under DIR (repeatable)")
    parser.add_argument("--metric", choices=("best", "final"), default="best",
                        help="top-1 of the best or the final epoch, for --results (default: best)")
    parser.add_argument("--grid", default=None, metavar="NAME",
                        help="a shipped grid or a grid file: the smallest gain its seeds resolve")
    parser.add_argument("--alpha", type=float, default=ALPHA, help=f"significance level (default: {ALPHA})")
    parser.add_argument("--power", type=float, default=POWER, help=f"power (default: {POWER})")
    return parser


def plan(args: argparse.Namespace) -> list[str]:
    """The plan's lines; PlanError for bad input."""
    if args.delta is None and args.grid is None:
        raise PlanError("give --delta D (seeds needed for a gain of D points) and/or --grid NAME (the gain its "
                        "seeds resolve)")
    for name in ("alpha", "power"):
        value = getattr(args, name)
        if not 0 < value < 1:
            raise PlanError(f"--{name} must lie between 0 and 1, got {value}")
    if args.std is not None and args.results:
        raise PlanError("--std and --results both give the std: give one")
    for name in ("std", "delta"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise PlanError(f"--{name} must be a positive number of points, got {value}")
    if args.results:
        std, dof, runs = std_from_results(args.results, args.metric)
        lines = [f"std: {std:.3f} pp (pooled within configurations from {runs} completed runs, {dof} degrees of "
                 f"freedom, top1_{args.metric})"]
    elif args.std is not None:
        std, lines = args.std, [f"std: {args.std:g} pp (given)"]
    else:
        std, lines = DEFAULT_STD, [f"std: {ASSUMPTION}"]
    test = f"unpaired two-sided t-test, alpha {args.alpha:g}, power {args.power:g}"
    if args.delta is not None:
        n = seeds_per_arm(std, args.delta, args.alpha, args.power)
        lines.append(f"seeds per method to detect a gain of {args.delta:g} pp ({test}): {n}")
    if args.grid is not None:
        name, counts = grid_seeds(args.grid)
        for seeds, configs in sorted(counts.items()):
            if seeds < 2:
                lines.append(f"grid {name!r}: {configs} configuration(s) with {seeds} seed: n too small for a test")
                continue
            delta = detectable_delta(std, seeds, args.alpha, args.power)
            lines.append(f"grid {name!r}: {configs} configuration(s) with {seeds} seeds: smallest gain resolved "
                         f"{delta:.2f} pp ({test})")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Print the plan; exit code 2 with one line on bad input."""
    args = _parser().parse_args(argv)
    try:
        lines = plan(args)
    except (PlanError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
