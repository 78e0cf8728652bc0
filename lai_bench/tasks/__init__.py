"""Tasks: what a run trains and evaluates (lai_bench.tasks.base.Task), one package each, registered by name; the run's
lifecycle is the same for all. Adding a task is one package (or a plug-in module) with a `@register_task` class.

Importing this package registers the built-in tasks: classification (the default) and detection.
"""
from .base import DataSet, Task
from .classification import ClassificationTask
from .detection import DetectionTask
from .registry import (
    TASKS,
    default_task,
    list_tasks,
    register_task,
    task_class,
    task_datasets,
    task_for,
    task_options,
    unregister_task,
)

__all__ = ["TASKS", "ClassificationTask", "DataSet", "DetectionTask", "Task", "default_task", "list_tasks",
           "register_task", "task_class", "task_datasets", "task_for", "task_options", "unregister_task"]
