"""Grid files: validate a YAML grid and expand it into run configs (this module launches nothing).

    name: ablation_dsu            # results go to results/<name>/ (default: the file's stem)
    base: {method: dla_b, depth: 164, dataset: cifar100, recipe: cifar}
    grid:                         # cartesian product of the axes
      model_opts.cell: [dsu, lstm, gru]
      seed: [0, 1, 2]
      variant:                    # an axis of mappings: each value is a bundle of overrides
        - {}
        - {model_opts.forward_path: false}
    include: [{method: dla_l}]    # extra points (merged over base), also crossed with no axis
    exclude: [{model_opts.cell: gru, seed: 2}]   # drop every point matching all these keys
    controls: [params]            # + a plain ResNet per method run at its params (flops: FLOPs); CIFAR only
    plugins: [my_lab.methods]     # modules imported first, by the launcher and every job (not part of run ids)
    slurm: {partition: gpu, gpus_per_node: 1, cpus_per_task: 8, mem_gb: 32, time_min: 1440}

A run takes nodes x tasks_per_node processes (tasks_per_node defaults to gpus_per_node: one process per GPU);
batch_size is the global batch, so it must divide by that number.
"""
import copy
import itertools
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, ValidationError, with_config
from typing_extensions import TypedDict

from ..config import ConfigError, RunConfig, config_from_dict, split_batch
from ..config.run_config import Count, Positive, Text, kind
from ..config.schema import adapter, schema_error
from ..core.errors import did_you_mean
from ..core.plugins import PluginError, load_plugins
from ..validate import validate

TOP_KEYS = ("name", "description", "plugins", "base", "grid", "include", "exclude", "controls", "slurm")
Sbatch = kind(dict[str, Any], "a mapping of sbatch option: value")  # extra #SBATCH lines, passed through


@with_config(ConfigDict(extra="forbid"))
class SlurmOptions(TypedDict, total=False):
    """A grid's `slurm:` block (and the launcher's command-line overrides); every key may be left out or null."""

    partition: Text | None
    gpus_per_node: Count | None
    cpus_per_task: Count | None
    mem_gb: Positive | None
    time_min: Count | None
    array_parallelism: Count | None
    account: Text | None
    qos: Text | None
    nodes: Count | None
    tasks_per_node: Count | None
    constraint: Text | None
    sbatch: Sbatch | None

NESTED = ("model_opts", "task_opts", "synthetic")
# Keys shown in a run's readable name even when they differ from base (the rest is shown as key=value).
NAMED_BY_CONFIG = ("method", "dataset", "depth", "seed")


class GridError(ValueError):
    """A bad grid file; the message names the file and the key."""


@dataclass
class GridPoint:
    """One expanded point of a grid: its resolved config, stable id and readable name."""

    config: RunConfig
    run_id: str
    name: str
    diff: dict[str, Any] = field(default_factory=dict)  # what differs from base


@dataclass
class Grid:
    name: str
    path: Path | None
    base: dict[str, Any]
    runs: list[GridPoint]
    slurm: dict[str, Any]
    duplicates: int = 0


def config_keys() -> list[str]:
    return [f.name for f in fields(RunConfig)]


def set_dotted(target: dict[str, Any], key: str, value: Any) -> None:
    """Set `model_opts.cell` style keys in a nested config dict."""
    head, _, rest = key.partition(".")
    if rest:
        target.setdefault(head, {})
        target[head] = {**target[head], rest: value}
    else:
        target[head] = value


def get_dotted(config: dict[str, Any], key: str) -> Any:
    head, _, rest = key.partition(".")
    value = config.get(head)
    return value.get(rest) if rest and isinstance(value, dict) else value


def check_key(key: str, where: str) -> None:
    """A grid key is a RunConfig field or `model_opts.<option>` / `task_opts.<option>` / `synthetic.<option>`."""
    head, dot, rest = key.partition(".")
    if head not in config_keys():
        raise GridError(f"{where}: unknown key {key!r}{did_you_mean(head, config_keys())}; "
                        f"allowed: {', '.join(config_keys())} (and model_opts.<option>, task_opts.<option>, "
                        "synthetic.<option>)")
    if dot and head not in NESTED:
        raise GridError(f"{where}: {head!r} takes no sub-keys (only {', '.join(NESTED)} do)")


def apply(point: dict[str, Any], overrides: dict[str, Any], where: str) -> dict[str, Any]:
    out = copy.deepcopy(point)
    for key, value in overrides.items():
        check_key(key, where)
        if key in NESTED and isinstance(value, dict):
            out[key] = {**out.get(key, {}), **value}
        else:
            set_dotted(out, key, value)
    return out


def _axes(grid: Any, where: str) -> list[tuple[str, list[Any]]]:
    if grid is None:
        return []
    if not isinstance(grid, dict):
        raise GridError(f"{where}: 'grid' must map axis names to lists of values, got {type(grid).__name__}")
    axes = []
    for axis, values in grid.items():
        if not isinstance(values, list) or not values:
            raise GridError(f"{where}: grid axis {axis!r} must be a non-empty list, got {values!r}")
        if all(isinstance(v, dict) for v in values):
            for v in values:
                for key in v:
                    check_key(key, f"{where}: grid axis {axis!r}")
        else:
            check_key(axis, f"{where}: grid")
        axes.append((axis, values))
    return axes


def _point_overrides(axis: str, value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {axis: value}


def _matches(config: dict[str, Any], pattern: dict[str, Any]) -> bool:
    return all(get_dotted(config, k) == v for k, v in pattern.items())


def check_slurm(slurm: Any, where: str) -> dict[str, Any]:
    """A validated copy of a slurm block (SlurmOptions): known keys, right types, counts >= 1."""
    if slurm is None:
        return {}
    try:
        return dict(adapter(SlurmOptions).validate_python(slurm))
    except ValidationError as e:
        raise GridError(f"{where}: {schema_error(e, SlurmOptions, 'slurm')}") from None


def tasks_per_node(slurm: dict[str, Any]) -> int:
    """Processes per node: tasks_per_node if given, else one per requested GPU, else one."""
    return slurm.get("tasks_per_node") or slurm.get("gpus_per_node") or 1


def world_size(slurm: dict[str, Any]) -> int:
    """Processes that train each run together: nodes x tasks_per_node."""
    return (slurm.get("nodes") or 1) * tasks_per_node(slurm)


def check_world(grid: "Grid", where: str | None = None) -> None:
    """Every run's global batch must split evenly over the processes of its job; GridError naming the run if not."""
    size = world_size(grid.slurm)
    for spec in grid.runs:
        try:
            split_batch(spec.config.batch_size, size)
        except ConfigError as e:
            raise GridError(f"{where or grid.path or grid.name}: run {spec.name} ({spec.run_id}): {e}") from None


def run_name(config: RunConfig, diff: dict[str, Any]) -> str:
    """The config's own name plus every other key that differs from base."""
    extra = [f"{k}={v}" for k, v in sorted(diff.items())
             if k not in NAMED_BY_CONFIG and not k.startswith("model_opts")
             and not (k.startswith("task_opts.") and isinstance(v, str))]  # text task options lead the name
    return "-".join([config.name(), *extra])


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if key in NESTED and isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def expand(data: dict[str, Any], where: str = "grid", name: str | None = None) -> Grid:
    """Validate a parsed grid and expand it into runs; raises GridError naming the key."""
    if not isinstance(data, dict):
        raise GridError(f"{where}: a grid file must be a mapping with keys {', '.join(TOP_KEYS)}")
    for key in data:
        if key not in TOP_KEYS:
            raise GridError(f"{where}: unknown top-level key {key!r}{did_you_mean(key, TOP_KEYS)}; "
                            f"allowed: {', '.join(TOP_KEYS)}")
    plugins = data.get("plugins") or []
    if not isinstance(plugins, list):
        raise GridError(f"{where}: 'plugins' must be a list of importable module names, got {plugins!r}")
    try:
        load_plugins(plugins)  # before anything is validated: they register the names the grid may use
    except PluginError as e:
        raise GridError(f"{where}: {e}") from None
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise GridError(f"{where}: 'base' must be a mapping of config keys")
    base = apply({"plugins": plugins} if plugins else {}, base, f"{where}: base")
    axes = _axes(data.get("grid"), where)
    points = []
    for combo in itertools.product(*(values for _, values in axes)):
        overrides = {}
        for (axis, _), value in zip(axes, combo):
            overrides.update(_point_overrides(axis, value))
        points.append(apply(base, overrides, f"{where}: grid"))
    if not axes and "include" not in data:
        points.append(base)
    for i, extra in enumerate(data.get("include") or []):
        if not isinstance(extra, dict):
            raise GridError(f"{where}: include[{i}] must be a mapping of config keys")
        points.append(apply(base, extra, f"{where}: include[{i}]"))
    excludes = data.get("exclude") or []
    for i, pattern in enumerate(excludes):
        if not isinstance(pattern, dict) or not pattern:
            raise GridError(f"{where}: exclude[{i}] must be a non-empty mapping of config keys")
        for key in pattern:
            check_key(key, f"{where}: exclude[{i}]")
    points = [p for p in points if not any(_matches(p, pat) for pat in excludes)]
    if not points:
        raise GridError(f"{where}: the grid is empty (no axes, or every point excluded)")
    runs, seen, duplicates = [], set(), 0
    flat_base = _flat(base)
    for i, point in enumerate(points):
        try:
            config = validate(config_from_dict(point))
        except ConfigError as e:
            raise GridError(f"{where}: run {i} ({_describe(point, flat_base)}): {e}") from None
        run_id = config.run_id()
        if run_id in seen:
            duplicates += 1
            continue
        seen.add(run_id)
        diff = {k: v for k, v in _flat(point).items() if flat_base.get(k, _MISSING) != v}
        runs.append(GridPoint(config, run_id, run_name(config, diff), diff))
    runs += _controls(runs, data.get("controls"), where, seen)
    grid_name = data.get("name") or name or "grid"
    grid = Grid(str(grid_name), None, base, runs, check_slurm(data.get("slurm"), where), duplicates)
    check_world(grid, where)
    return grid


_MISSING = object()


def _controls(runs: list[GridPoint], kinds: Any, where: str, seen: set[str]) -> list[GridPoint]:
    """The matched-cost control runs of ``controls: [params, flops]`` (controls.py) not already in the grid."""
    from .controls import CONTROL_NAMES, check_controls, control_configs

    out = []
    try:
        kinds = check_controls(kinds)
        pairs = [(spec, config, matched) for spec in runs for config, matched in control_configs([spec.config], kinds)]
    except ValueError as e:
        raise GridError(f"{where}: {e}") from None
    for spec, config, matched in pairs:
        if config.run_id() not in seen:
            seen.add(config.run_id())
            diff = {k: v for k, v in spec.diff.items() if not k.startswith("model_opts")}
            diff |= {"method": "none", "depth": config.depth}
            out.append(GridPoint(config, config.run_id(), f"{run_name(config, diff)}-{CONTROL_NAMES[matched]}", diff))
    return out


def _describe(point: dict[str, Any], flat_base: dict[str, Any]) -> str:
    diff = {k: v for k, v in _flat(point).items() if flat_base.get(k, _MISSING) != v}
    return ", ".join(f"{k}={v}" for k, v in diff.items()) or "base"


def read_grid(path) -> Grid:
    """Read, validate and expand a grid YAML file."""
    path = Path(path)
    if not path.is_file():
        from ..core.resources import shipped_grids

        raise GridError(f"{path}: no such grid file; shipped grids (--grid NAME): {', '.join(shipped_grids())}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise GridError(f"{path}: not valid YAML: {e}") from None
    grid = expand(data, where=str(path), name=path.stem)
    grid.path = path
    return grid


SMOKE_STEPS = 2


def smoke(grid: Grid) -> Grid:
    """The same runs on synthetic data of the same shape, a few steps each: validates a grid in minutes. What
    "the same shape" means is the run's task's (`Task.shrink`)."""
    from ..tasks import task_class

    runs = []
    processes = world_size(grid.slurm)
    for spec in grid.runs:
        c = spec.config
        quick = copy.deepcopy(c)
        quick.data_root = "./data"
        # A multiple of the job's processes, so a multi-GPU grid smoke-tests its data-parallel path too.
        batch = task_class(c.task).shrink(quick, c, processes, SMOKE_STEPS)
        quick.epochs, quick.batch_size, quick.eval_batch_size = 1, batch, batch
        quick.max_steps_per_epoch, quick.max_eval_batches = SMOKE_STEPS, 1
        quick.milestones, quick.warmup_epochs, quick.measure = (), 0, False
        quick.keep_checkpoints = "none"  # a smoke run's weights are worth nothing: no disk filled with them
        try:
            quick = validate(quick)
        except ConfigError as e:
            raise GridError(f"{grid.path or grid.name}: smoke run of {spec.name}: {e}") from None
        runs.append(GridPoint(quick, quick.run_id(), spec.name, spec.diff))
    return Grid(f"{grid.name}-smoke", grid.path, grid.base, runs, grid.slurm, grid.duplicates)
