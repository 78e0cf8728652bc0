"""What a task brings to a run: its data, its model, the loss of a step, its evaluation and its record metrics.

Everything else (checkpoint/resume, stop requests, divergence, DDP, progress output, measurement, the record) is
the run's lifecycle (lai_bench.train.lifecycle), the same for every task.
"""
from abc import ABC, abstractmethod
from typing import Any

import torch

from ..config.run_config import RunConfig
from ..data import DatasetInfo
from ..runtime.distributed import World


class Task(ABC):
    """One task's side of a run, built from the run's resolved config.

    `sum_keys` names what a training step adds up over an epoch (summed over all processes at the epoch's end and
    kept in checkpoints, so a run resumed mid-epoch reports the same epoch metrics).
    """

    name: str = ""  # set by @register_task
    sum_keys: tuple[str, ...] = ()
    grad_clip_norm: float | None = None  # clip the gradients' global norm to this before each SGD step
    # The one number a table line shows of a run: `metric`_final / `metric`_best in the record's metrics.
    headline_metric: str = ""
    headline_label: str = ""  # e.g. "top-1 %"
    # Config fields this task owns, with their defaults: a run of another task must leave them there.
    config_fields: dict[str, Any] = {}

    @classmethod
    def check_config(cls, config: RunConfig) -> None:
        """ConfigError naming the key and what is allowed when the (resolved) config does not fit this task."""

    @classmethod
    def shrink(cls, quick: RunConfig, original: RunConfig, processes: int, steps: int) -> int:
        """Make `quick` (a copy of `original` on synthetic data) a smoke run of the same shape, `steps` batches of an
        epoch; returns its global batch, a multiple of the run's `processes`."""
        from ..data import dataset_info

        batch = 4 * processes
        info = dataset_info(original.dataset, data_root=original.data_root, synthetic=original.synthetic or None)
        quick.synthetic = {"num_classes": info.num_classes, "image_size": info.image_size,
                           "train_size": batch * steps, "eval_size": batch}
        return batch

    @classmethod
    def check_data(cls, config: RunConfig) -> None:
        """Raise DatasetNotFoundError (what is missing, where, how to get it) unless the run's data is there: cheap,
        file existence only, so a launcher checks a grid with it before submitting anything."""
        from ..data import check_available

        check_available(config.dataset, config.data_root, config.download)

    @classmethod
    def headline_values(cls, metrics: dict[str, Any]) -> tuple[float, float]:
        """The headline metric's final and best values from a record's metrics (NaN where missing)."""
        nan = float("nan")
        return (metrics.get(f"{cls.headline_metric}_final", nan), metrics.get(f"{cls.headline_metric}_best", nan))

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    def zero_sums(self) -> dict[str, float]:
        """The sums of an epoch before its first step."""
        return dict.fromkeys(self.sum_keys, 0.0)

    @abstractmethod
    def build_data(self, world: World, batch_size: int, eval_batch_size: int) -> tuple[Any, Any, DatasetInfo]:
        """This process's train loader, eval loader (sharded over `world`) and the dataset's info.

        Batch sizes are per process; epoch e's batches must depend only on (seed, e).
        """

    @abstractmethod
    def build_model(self, info: DatasetInfo) -> torch.nn.Module:
        """The model, on the CPU, freshly initialised (the run seeds, places and wraps it)."""

    def trainable(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        """The parameters SGD updates (frozen ones, requires_grad False, are left out)."""
        return [p for p in model.parameters() if p.requires_grad]

    @abstractmethod
    def measure(self, model: torch.nn.Module, info: DatasetInfo, world: World) -> dict[str, Any]:
        """What the completed record says the model costs: params, FLOPs, throughput (rank 0 only)."""

    @abstractmethod
    def to_device(self, batch: Any, device: torch.device) -> Any:
        """A batch from the loaders, moved to `device`."""

    def seed_step(self, epoch: int, step: int, rank: int) -> None:
        """Seed what a training step draws outside torch's generator (e.g. numpy), before the step's batch moves."""

    @abstractmethod
    def step(self, net: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Forward and loss of one training step (under the run's autocast).

        Returns the scalar loss to back-propagate and what the step adds to the epoch's sums (keys: `sum_keys`).
        """

    @abstractmethod
    def train_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """An epoch's training metrics from its sums over all processes (history entries, e.g. train_loss)."""

    @abstractmethod
    def evaluate(self, model: torch.nn.Module, loader: Any, world: World) -> dict[str, float]:
        """Metrics over the eval set, every sample counted once over the processes (history entries)."""

    @abstractmethod
    def record_metrics(self, history: list[dict[str, float]]) -> dict[str, Any]:
        """The record's `metrics` from the epoch history ({} before the first epoch)."""

    @abstractmethod
    def epoch_summary(self, entry: dict[str, float]) -> str:
        """The metrics part of an epoch's log line."""

    @abstractmethod
    def headline(self, metrics: dict[str, Any]) -> str:
        """The result in a few words, for the command line's last line."""
