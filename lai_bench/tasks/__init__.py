"""Tasks: what a run trains and evaluates (lai_bench.tasks.base.Task); the run's lifecycle is the same for all."""
from ..config import RunConfig
from .base import Task
from .classification import ClassificationTask
from .detection import DetectionTask

TASKS: dict[str, type[Task]] = {"classification": ClassificationTask, "detection": DetectionTask}


def task_for(config: RunConfig) -> Task:
    """The task of a run, chosen by its config's `task`."""
    return TASKS[config.task](config)


__all__ = ["TASKS", "ClassificationTask", "DetectionTask", "Task", "task_for"]
