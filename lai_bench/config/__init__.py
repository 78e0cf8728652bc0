"""A run's configuration: the schema (`RunConfig`, each field with its help text), recipes as data, resolution of a
run's defaults and its stable id. It names no task, backbone or data set: those are checked against their registries
by `lai_bench.validate`, a layer above the tasks."""
from .recipes import DEFAULT_RECIPE, RECIPE_FIELDS, RECIPES, WARMUP_ITERS_START
from .run_config import (
    ID_NEUTRAL_DEFAULTS,
    MOVED_TO_TASK_OPTS,
    NON_SEMANTIC,
    ConfigError,
    RunConfig,
    SyntheticOptions,
    config_from_dict,
    declare_task,
    default_task,
    effective_lr,
    fingerprint,
    forget_task,
    id_neutral,
    parse,
    split_batch,
)

__all__ = ["DEFAULT_RECIPE", "ID_NEUTRAL_DEFAULTS", "MOVED_TO_TASK_OPTS", "NON_SEMANTIC", "RECIPES", "RECIPE_FIELDS",
           "WARMUP_ITERS_START", "ConfigError", "RunConfig", "SyntheticOptions", "config_from_dict", "declare_task",
           "default_task", "effective_lr", "fingerprint", "forget_task", "id_neutral", "parse", "split_batch"]
