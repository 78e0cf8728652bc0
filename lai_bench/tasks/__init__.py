"""Tasks: what a run trains and evaluates (lai_bench.tasks.base.Task), registered by name; the run's lifecycle is
the same for all. Adding a task is one module with a `@register_task` class and its import."""
from ..config.run_config import RunConfig
from .base import Task
from .classification.task import ClassificationTask
from .detection.task import DetectionTask
from .registry import list_tasks, register_task, task_class


def task_for(config: RunConfig) -> Task:
    """The task of a run, chosen by its config's `task`."""
    return task_class(config.task)(config)


__all__ = ["ClassificationTask", "DetectionTask", "Task", "list_tasks", "register_task", "task_class", "task_for"]
