"""Tasks: what a run trains and evaluates (lai_bench.tasks.base.Task); the run's lifecycle is the same for all."""
from ..config import RunConfig
from .base import Task
from .classification import ClassificationTask

TASKS: dict[str, type[Task]] = {"classification": ClassificationTask}


def task_for(config: RunConfig) -> Task:
    """The task of a run: classification (the one task so far; a config field will choose once there are more)."""
    return TASKS["classification"](config)


__all__ = ["TASKS", "ClassificationTask", "Task", "task_for"]
