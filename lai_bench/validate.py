"""Validating a run's config against the registries, once at each edge: the launcher checks every run of a grid
before anything is submitted, and the job checks its run again (it may run on another machine, with other plug-ins).

This module sits above the tasks: it reads the task registry (the task's options, data sets and own checks) as it
reads the method and backbone registries, and fills in the defaults they own. `lai_bench.config` below it names
none of them.
"""
import dataclasses
import functools
import json
import typing
from dataclasses import fields
from typing import Any

from pydantic import ConfigDict, ValidationError, with_config
from typing_extensions import TypedDict

from .config import ConfigError, RunConfig, parse
from .config.run_config import Count, Flag, Number, Text
from .config.schema import _plain, adapter, describe, schema_error
from .core.errors import did_you_mean
from .models import backbone_info, check_layout, method_info, method_options, model_options
from .tasks import Task, list_tasks, task_class


def validate(config: RunConfig) -> RunConfig:
    """Check every value before anything runs (cheap checks first, a model build last); returns the resolved config:
    the task, backbone, data set and task options filled in, the recipe's values in every unset field.

    The values are those the schema typed: text numbers become numbers, ints given for floats stay ints.
    """
    c = parse(_values(config))
    task = _task(c)
    if c.dataset is not None:
        task.dataset(c.dataset)
    c = dataclasses.replace(c, task=task.name, task_opts=check_task_options(task, c.task_opts))
    c = _resolved(c)
    if not task.datasets:
        raise ConfigError(f"task {task.name} declares no data set (Task.datasets)")
    if c.warmup_epochs and c.warmup_iters:
        raise ConfigError(f"warmup_epochs {c.warmup_epochs} and warmup_iters {c.warmup_iters}: set one warm-up "
                          "(allowed: one of them > 0, the other 0)")
    task.check_config(c)
    _check_depth(c)
    c = dataclasses.replace(c, model_opts=_check_options(c))
    _check_model_builds(c)
    return c


def _values(config: RunConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in fields(config)}


def _task(c: RunConfig) -> type[Task]:
    try:
        return task_class(c.task)
    except ValueError:
        raise ConfigError(f"task: unknown task {c.task!r}{did_you_mean(c.task, list_tasks())}; allowed: "
                          f"{', '.join(list_tasks())} (or a plug-in's, named in the grid's plugins)") from None


def _resolved(c: RunConfig) -> RunConfig:
    """Every default filled in (RunConfig.resolved, which asks the task); a registry with no default backbone is
    one line."""
    try:
        return c.resolved()
    except ValueError as e:
        raise ConfigError(str(e) if isinstance(e, ConfigError) else f"backbone: unset, and {e}") from None


# -- task options ----------------------------------------------------------------------------------------------
def check_task_options(task: type[Task], options: dict[str, Any]) -> dict[str, Any]:
    """`task_opts` typed by the task's own schema (`Task.options`); an unknown key is one line with "did you mean",
    the allowed keys and their types."""
    hints = typing.get_type_hints(task.options, include_extras=True) if task.options is not None else {}
    for key in options:
        if key not in hints:
            allowed = "; ".join(f"{name} ({describe(hint)})" for name, hint in hints.items())
            raise ConfigError(f"task_opts: unknown option {key!r} for task {task.name}{did_you_mean(key, hints)}; "
                              + (f"allowed: {allowed}" if hints else f"task {task.name} takes no options"))
    if not options:
        return {}
    schema = _options_schema(task)
    try:
        return dict(adapter(schema).validate_python(options))
    except ValidationError as e:
        raise ConfigError(schema_error(e, schema, "task_opts")) from None


@functools.cache
def _options_schema(task: type[Task]) -> type:
    return with_config(ConfigDict(extra="forbid"))(task.options)


# -- the backbone and the method ----------------------------------------------------------------------------------
def _check_depth(c: RunConfig) -> None:
    """Depth against its backbone's rules: arithmetic only, nothing is built."""
    try:
        backbone_info(c.backbone).check_depth(c.depth, c.block)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_options(c: RunConfig) -> dict[str, Any]:
    """The method's options, named and typed as its registered defaults say; returns the typed options."""
    try:
        check_layout(c.method, c.backbone)
    except ValueError as e:
        raise ConfigError(str(e)) from None

    allowed = [k for k in model_options(c.method, c.backbone) if k != "drop_path"]
    for key in c.model_opts:
        if key in ("drop_path", "zero_init_residual"):
            raise ConfigError(f"model_opts.{key}: set {key} at the top level (it is a recipe field)")
        if key not in allowed:
            raise ConfigError(_unknown_option(key, c.method, c.backbone, allowed))
    schema = method_options_schema(c.method, c.backbone)
    try:
        return dict(adapter(schema).validate_python(c.model_opts))
    except ValidationError as e:
        raise ConfigError(schema_error(e, schema, "model_opts")) from None


def _unknown_option(key: str, method: str, backbone: str, allowed: list[str]) -> str:
    if set(method_options(method, backbone)) <= {"drop_path"}:
        return (f"model_opts: unknown option {key!r}: method {method!r} takes no options "
                f"(model_opts may set only the backbone's {', '.join(backbone_info(backbone).options)})")
    return (f"model_opts: unknown option {key!r} for method {method!r}{did_you_mean(key, allowed)}; "
            f"allowed: {', '.join(sorted(allowed))}")


OPTION_TYPES = {bool: Flag, int: Count, float: Number, str: Text}


@functools.cache
def method_options_schema(method: str, backbone: str) -> type:
    """The schema of a method's `model_opts`: a TypedDict of its options, each typed as its registered default says
    (an int option is a size: >= 1), or, where the default is None, as its annotation."""
    cls = method_info(method).cls
    types = {name: _option_type(cls, name, default) for name, default in model_options(method, backbone).items()}
    return with_config(ConfigDict(extra="forbid"))(TypedDict(f"{method}_{backbone}_options", types, total=False))


def _option_type(cls: type, name: str, default: Any) -> Any:
    if default is not None:
        return OPTION_TYPES.get(type(default), Any)
    hints = next((h for h in map(_init_hints, cls.__mro__) if name in h), {})
    return OPTION_TYPES.get(_plain(hints.get(name)), Any) | None


def _init_hints(klass: type) -> dict[str, Any]:
    """The annotations of the keyword options a class's own __init__ declares."""
    init = vars(klass).get("__init__")
    return typing.get_type_hints(init) if init else {}


def _check_model_builds(c: RunConfig) -> None:
    """Option values (e.g. a DLA cell name) are checked by building the model on the meta device: no memory.

    Only when options are set: the registered defaults build by construction.
    """
    if not c.model_opts:
        return
    key = (c.method, c.backbone, c.depth, c.block, json.dumps(c.model_opts, sort_keys=True, default=str))
    error = _model_build_error(key)
    if error:
        raise ConfigError(f"model_opts: {error}")


@functools.lru_cache(maxsize=256)
def _model_build_error(key: tuple) -> str | None:
    """Cached per model: a grid's seeds and data sets share one check."""
    import torch

    from .models import build_model

    method, backbone, depth, block, opts = key
    try:
        with torch.device("meta"):
            build_model(method, backbone, depth, 10, block, **json.loads(opts))
    except (ValueError, TypeError, ArithmeticError) as e:
        return str(e)
    return None
