"""Launch a grid: python -m lai_bench.run --grid experiments/ablation_dsu.yaml [--executor slurm ...].

Exit codes: 0 every run completed (or was already), 1 some run failed or diverged, 2 bad grid or options.
"""
import argparse
import sys
from pathlib import Path

from .config import NON_SEMANTIC, fingerprint
from .core.resources import shipped_grid, shipped_grids
from .launch.grid import Grid, GridError, check_slurm, check_world, read_grid, smoke, tasks_per_node, world_size
from .launch.jobbook import JobBook
from .launch.launcher import EXECUTORS, launch, resolve_executor
from .launch.plan import Plan, grid_dir, make_plan
from .launch.state import STATUS_WORDS, grid_states
from .tasks import task_class

DEFAULT_GRID = "demo"


def find_grid(name: str) -> Path:
    """A path, a grid in ./experiments, or the name of a shipped grid (demo, smoke, cifar, ...)."""
    path = Path(name)
    if path.is_file():
        return path
    local = Path("experiments") / (name if name.endswith(".yaml") else f"{name}.yaml")
    if local.is_file():
        return local
    if "/" not in name:
        shipped = shipped_grid(name)
        if shipped is not None:
            return shipped
    return path  # read_grid reports it missing, naming the shipped grids


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lai_bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", default=DEFAULT_GRID,
                   help=f"grid YAML file, or a shipped grid's name: {', '.join(shipped_grids())} "
                        f"(default: {DEFAULT_GRID}: every method learns a synthetic task in a few minutes)")
    p.add_argument("--executor", default="auto", choices=EXECUTORS,
                   help="auto = Slurm when srun is found and a controller answers, else local; "
                        "debug = in this process, pdb on an error")
    p.add_argument("--results", default="results", help="records go to RESULTS/<grid name>/<run_id>.json")
    p.add_argument("--smoke", action="store_true",
                   help="run every point on synthetic data of the same shape for a few steps (to RESULTS/<grid>-smoke)")
    p.add_argument("--dry-run", action="store_true", help="print the runs and what would be submitted; submit nothing")
    p.add_argument("--status", action="store_true", help="summarise completed/running/failed/missing runs and exit")
    p.add_argument("--rerun-failed", action="store_true", help="resubmit failed and diverged runs")
    p.add_argument("--parallel", type=int, default=1, help="local executor: runs at a time")
    p.add_argument("--no-wait", action="store_true",
                   help="return once submitted: wait neither for Slurm jobs nor for runs other live processes train")
    s = p.add_argument_group("Slurm (override the grid's slurm: block)")
    s.add_argument("--partition")
    s.add_argument("--gpus-per-node", type=int)
    s.add_argument("--cpus-per-task", type=int)
    s.add_argument("--mem-gb", type=float)
    s.add_argument("--time-min", type=int, help="time limit per job in minutes")
    s.add_argument("--array-parallelism", type=int, help="array tasks running at once")
    s.add_argument("--account")
    s.add_argument("--qos")
    s.add_argument("--nodes", type=int)
    s.add_argument("--tasks-per-node", type=int)
    s.add_argument("--sbatch", action="append", metavar="KEY=VALUE", help="extra sbatch option (repeatable)")
    return p


def slurm_overrides(args: argparse.Namespace) -> dict:
    keys = ("partition", "gpus_per_node", "cpus_per_task", "mem_gb", "time_min", "array_parallelism",
            "account", "qos", "nodes", "tasks_per_node")
    out = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    if args.sbatch:
        extra = {}
        for pair in args.sbatch:
            key, sep, value = pair.partition("=")
            if not sep:
                raise GridError(f"--sbatch expects KEY=VALUE, got {pair!r}")
            extra[key.lstrip("-")] = value
        out["sbatch"] = extra
    return out


def print_dry_run(grid: Grid, results: Path, rerun_failed: bool) -> None:
    plan = make_plan(grid, results, rerun_failed)
    print(f"grid {grid.name!r}: {len(grid.runs)} run(s)" +
          (f" ({grid.duplicates} duplicate point(s) merged)" if grid.duplicates else ""))
    if world_size(grid.slurm) > 1:
        print(f"each run: {world_size(grid.slurm)} processes ({grid.slurm.get('nodes') or 1} node(s) x "
              f"{tasks_per_node(grid.slurm)} task(s)), batch_size split evenly over them")
    skip = {spec.run_id: why for spec, why in plan.skip}
    for spec in grid.runs:
        action = f"skip: {skip[spec.run_id]}" if spec.run_id in skip else "submit"
        diff = ", ".join(f"{k}={v}" for k, v in spec.diff.items()) or "(base)"
        print(f"  {spec.run_id}  {spec.name:50s} {diff:45s} {action}")
    print(f"would submit {len(plan.submit)}, skip {len(plan.skip)}; records in {grid_dir(results, grid)}")


def print_status(grid: Grid, results: Path) -> int:
    folder, book = grid_dir(results, grid), JobBook(grid_dir(results, grid))
    if book.corrupt:
        print(f"warning: {book.path} is corrupt (the next launch sets it aside); scheduler states unknown")
    states = grid_states(folder, [spec.run_id for spec in grid.runs], book)
    counts = dict.fromkeys(STATUS_WORDS, 0)
    lines = []
    for spec in grid.runs:
        state = states[spec.run_id]
        counts[state.word if state.word in counts else "running"] += 1  # pending, requeued, ... count as running
        lines.append(f"  {spec.run_id}  {spec.name:50s} {state.describe()}")
    print(f"grid {grid.name!r} in {folder}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    print("\n".join(lines))
    return 0


def print_results(grid: Grid, results: Path) -> int:
    """A short table of every run's outcome; returns the exit code."""
    folder = grid_dir(results, grid)
    states = grid_states(folder, [spec.run_id for spec in grid.runs])
    rows, bad = [], 0
    for spec in grid.runs:
        state = states[spec.run_id]
        status, record = state.word, state.record or {}
        bad += status != "completed"
        m = record.get("metrics") or {}
        metric = task_class(spec.config.task).headline_metric
        final = status == "completed" and f"{metric}_final" in m  # a live or stopped run's metrics are not final
        result = f"{m[f'{metric}_final']:7.2f} {m[f'{metric}_best']:6.2f}" if final else f"{'-':>7s} {'-':>6s}"
        params = f"{record['params'] / 1e6:9.3f}" if record.get("params") else f"{'-':>9s}"
        rows.append(f"  {spec.name:50s} {status:10s} {result} {params}")
    heading = " / ".join(sorted({task_class(spec.config.task).headline_label for spec in grid.runs}))
    print(f"\n  {'run':50s} {'status':10s} {heading + ' final':>7s} {'best':>6s} {'params(M)':>9s}")
    print("\n".join(rows))
    print("\n" + "\n".join(table_notes(grid, states)))
    report = f"python -m lai_bench.report {folder} --out analysis/"
    if grid.name == DEFAULT_GRID:
        print(f"next: {report} (tables, figures), then a real grid: python -m lai_bench.run --grid cifar --dry-run "
              "(CIFAR-10/100 from --data-root, 3 seeds: gains with CIs)")
    else:
        print(f"report: {report}")
    return 1 if bad else 0


def table_notes(grid: Grid, states: dict | None = None) -> list[str]:
    """What the final table can and cannot say: a smoke check's numbers mean nothing, one seed per configuration
    ranks nothing, and what each task says of its runs (`Task.final_notes`: a synthetic set's chance level...)."""
    notes = []
    if grid.name == "smoke" or grid.name.endswith("-smoke"):
        steps = max((s.config.max_steps_per_epoch or 0) * (s.config.epochs or 1) for s in grid.runs)
        notes.append(f"smoke: {steps or 'a few'} training steps a run, a plumbing check; its numbers are chance "
                     "level and mean nothing (for runs that learn: python -m lai_bench.run, the demo grid)")
    records = {run_id: state.record or {} for run_id, state in (states or {}).items()}
    for name in sorted({spec.config.task for spec in grid.runs}):
        notes += task_class(name).final_notes([spec for spec in grid.runs if spec.config.task == name], records)
    seeds: dict[str, set[int]] = {}
    for spec in grid.runs:
        point = {k: v for k, v in spec.config.to_dict().items() if k != "seed" and k not in NON_SEMANTIC}
        seeds.setdefault(fingerprint(point), set()).add(spec.config.seed)
    if seeds and max(len(s) for s in seeds.values()) <= 1:
        notes.append("one seed per configuration: the table shows that each run learns and what it costs, not which "
                     "method is better (n too small for a comparison: that needs seeds, see the report)")
    return notes


def missing_data(plan: Plan) -> str | None:
    """What data the runs still to do lack, checked once per data set and folder; None when all is there."""
    from .data import DatasetNotFoundError

    todo = plan.submit
    needs: dict[tuple, list[str]] = {}
    examples = {}
    for spec in todo:
        c = spec.config
        if task_class(c.task).dataset(c.dataset).check is not None:
            key = (c.task, c.dataset, c.data_root, c.download)
            needs.setdefault(key, []).append(spec.name)
            examples.setdefault(key, c)
    weights: dict[str, list[str]] = {}
    for spec in todo:
        if spec.config.pretrained is not None and not Path(spec.config.pretrained).exists():
            weights.setdefault(spec.config.pretrained, []).append(spec.name)
    for key, names in needs.items():
        try:
            task_class(key[0]).check_data(examples[key])
        except DatasetNotFoundError as e:
            return f"{e} Nothing was submitted; {len(names)} run(s) need it: {_some(names)}."
    for path, names in weights.items():
        return (f"pretrained weights not found: {Path(path).resolve()} (a lai_bench run record, weights file or "
                f"results folder of an ImageNet grid, or a torchvision ResNet state_dict). Nothing was submitted; "
                f"{len(names)} run(s) need it: {_some(names)}.")
    return None


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def no_controller() -> str | None:
    """One line when --executor slurm has no Slurm controller to talk to."""
    from .launch.launcher import slurm_answers

    if slurm_answers():
        return None
    return ("--executor slurm, but no Slurm controller answers (sinfo failed or is not installed): start one "
            "(on this machine: bash scripts/slurm-local.sh start) or pass --executor local")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results = Path(args.results)
    try:
        grid = read_grid(find_grid(args.grid))
        grid.slurm = check_slurm({**grid.slurm, **slurm_overrides(args)}, "command line")
        check_world(grid)  # e.g. a --tasks-per-node the batch size does not divide by
        if args.smoke:
            grid = smoke(grid)
    except GridError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print_dry_run(grid, results, args.rerun_failed)
        return 0
    if args.status:
        return print_status(grid, results)
    kind = resolve_executor(args.executor)
    plan = make_plan(grid, results, args.rerun_failed)  # once: the data check and the launch read the same plan
    problem = missing_data(plan) or (kind == "slurm" and no_controller())
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        plan, outcomes = launch(grid, results, kind, args.rerun_failed, args.parallel, not args.no_wait, plan=plan)
    except KeyboardInterrupt:
        return 130
    if args.no_wait:  # nothing was waited for: live runs are fine, only finished bad ones fail the command
        print(f"{'submitted' if plan.submit else 'nothing submitted'}; "
              f"watch with: python -m lai_bench.run --grid {args.grid} --status")
        states = grid_states(grid_dir(results, grid), [spec.run_id for spec in grid.runs])
        return 1 if any(s.state in ("failed", "diverged", "corrupt") for s in states.values()) else 0
    return print_results(grid, results)


if __name__ == "__main__":
    sys.exit(main())
