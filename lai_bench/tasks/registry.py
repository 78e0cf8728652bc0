"""Task registry: `@register_task` fills it with each task's class; the launcher, the status and final tables, the
train CLI and the grid's data check read a task's headline metric and data check from it, never a list of names."""
from collections.abc import Callable

from .base import Task

_TASKS: dict[str, type[Task]] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Register a Task subclass under `name` (what a run's config says in `task`)."""

    def wrap(cls: type[Task]) -> type[Task]:
        if name in _TASKS:
            raise ValueError(f"task {name!r} is registered twice")
        cls.name = name
        _TASKS[name] = cls
        return cls

    return wrap


def list_tasks() -> list[str]:
    """Names of all registered tasks."""
    return sorted(_TASKS)


def task_class(name: str) -> type[Task]:
    """The registered class; ValueError naming the allowed tasks."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; allowed: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]
