"""Task registry: `@register_task` fills it with each task's class (one package per task under lai_bench/tasks/, or a
plug-in's module); validation, the launcher, the final table, the report and the bench read a task's options, data
sets and hooks from it, never a list of names. It imports none of its tasks (the package `__init__` does)."""
from collections.abc import Callable
from typing import Any

from ..config import RunConfig, declare_task, forget_task
from ..config import default_task as _config_default_task
from ..core.registry import Registry
from ..summary.display import name_dataset, name_value
from .base import DataSet, Task

TASKS: Registry[type[Task]] = Registry("task")


def register_task(name: str, *, default: bool = False) -> Callable[[type[Task]], type[Task]]:
    """Register a Task subclass under `name` (what a run's config says in `task`); `default`: the task of a run that
    names none (one task only)."""

    def wrap(cls: type[Task]) -> type[Task]:
        if default and _has_default():
            raise ValueError(f"task {name!r} is registered as the default, but {default_task()!r} already is")
        TASKS.register(name)(cls)
        cls.name = name
        for dataset in cls.datasets:
            name_dataset(dataset.name, dataset.title or dataset.name, dataset.synthetic)
        for value, title in cls.value_names.items():
            name_value(value, title)
        declare_task(name, cls.resolve, default)  # what an unset task, data set or option means, for the config
        return cls

    return wrap


def list_tasks() -> list[str]:
    """Names of all registered tasks."""
    return TASKS.list()


def task_class(name: str | None) -> type[Task]:
    """The registered class (None: the default task); ValueError naming the allowed tasks."""
    return TASKS.get(default_task() if name is None else name)


def default_task() -> str:
    """The task of a run whose config names none."""
    return _config_default_task()


def _has_default() -> bool:
    try:
        default_task()
    except ValueError:
        return False
    return True


def task_datasets(name: str | None) -> list[DataSet]:
    """The data sets of a task."""
    return list(task_class(name).datasets)


def task_options(name: str | None) -> dict[str, Any]:
    """Every option a run's `task_opts` may set for the task, with its default."""
    cls = task_class(name)
    return {key: cls.option_defaults.get(key) for key in _option_names(cls)}


def _option_names(cls: type[Task]) -> list[str]:
    import typing

    return list(typing.get_type_hints(cls.options)) if cls.options is not None else []


def task_for(config: RunConfig) -> Task:
    """The task of a run, chosen by its config's `task`."""
    return task_class(config.task)(config)


def unregister_task(name: str) -> None:
    """Remove a task (tests that register one of their own)."""
    TASKS.unregister(name)
    forget_task(name)
