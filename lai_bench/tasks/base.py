"""What a task brings to a run: its options and data sets, its data, its model, the loss of a step, its evaluation
and record metrics, and its side of the launcher's final table, the report and the bench.

Everything else (checkpoint/resume, stop requests, divergence, DDP, progress output, measurement, the record) is
the run's lifecycle (lai_bench.train), the same for every task. Config, launch, train, bench and report know a task
only through these hooks, found by name in the task registry.
"""
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..config import ConfigError, RunConfig
from ..data import DatasetInfo
from ..runtime.distributed import World


@dataclass(frozen=True)
class DataSet:
    """A data set a task trains on: its name (a run's `dataset`), one line on what it is and where its files go,
    and the cheap check that its files are there (file existence only: a launcher checks a grid with it before
    submitting anything; it raises lai_bench.data.DatasetNotFoundError naming what is missing and how to get it)."""

    name: str
    about: str
    check: Callable[[RunConfig], None] | None = None
    title: str = ""  # how tables print it (CIFAR-100); unset: its name
    synthetic: bool = False  # built in memory from the run's seed: no files, what smoke runs train on
    input_size: int | None = None  # the image side a backbone must take for it (None: any)


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
    # The data sets of the task, the first its default (a run's unset `dataset`).
    datasets: tuple[DataSet, ...] = ()
    # The task's options (a run's `task_opts`): a TypedDict whose field types are its schema (lai_bench.config's
    # kinds say what they allow), and their defaults.
    options: type | None = None
    option_defaults: dict[str, Any] = {}
    value_names: dict[str, str] = {}  # how tables print its option values (faster_rcnn: Faster R-CNN)
    controls: bool = False  # its model is the backbone's classifier: a grid's matched-cost controls may be asked for

    # -- the config: lai_bench.validate calls these, in this order --------------------------------------------------
    @classmethod
    def resolve(cls, config: RunConfig) -> RunConfig:
        """`config` with what this task decides filled in: its default data set, its options' defaults, recipe
        values that depend on an option (RetinaNet's lr). Called by `RunConfig.resolved`, so a config has the same id
        before and after validation; idempotent."""
        dataset = config.dataset or (cls.datasets[0].name if cls.datasets else None)
        return dataclasses.replace(config, dataset=dataset, task_opts={**cls.option_defaults, **config.task_opts})

    @classmethod
    def check_config(cls, config: RunConfig) -> None:
        """ConfigError naming the key and what is allowed when the (resolved) config does not fit this task."""

    @classmethod
    def dataset(cls, name: str) -> DataSet:
        """The data set called `name`; ConfigError naming the allowed ones."""
        from ..core.errors import did_you_mean

        names = [d.name for d in cls.datasets]
        if name not in names:
            raise ConfigError(f"dataset {name!r} is not a data set of task {cls.name}{did_you_mean(name, names)}; "
                              f"allowed: {', '.join(names)}")
        return next(d for d in cls.datasets if d.name == name)

    @classmethod
    def check_data(cls, config: RunConfig) -> None:
        """Raise DatasetNotFoundError (what is missing, where, how to get it) unless the run's data is there."""
        check = cls.dataset(config.dataset).check
        if check is not None:
            check(config)

    @classmethod
    def shrink(cls, quick: RunConfig, original: RunConfig, processes: int, steps: int) -> int:
        """Make `quick` (a copy of `original`) a smoke run of the same shape, `steps` batches of an epoch, on the
        task's synthetic data set where it has one; returns its global batch, a multiple of the run's `processes`."""
        synthetic = [d.name for d in cls.datasets if d.synthetic]
        if synthetic:
            quick.dataset, quick.download = synthetic[0], False
        return 4 * processes

    # -- the launcher's final table and the report ------------------------------------------------------------------
    @classmethod
    def headline_values(cls, metrics: dict[str, Any]) -> tuple[float, float]:
        """The headline metric's final and best values from a record's metrics (NaN where missing)."""
        nan = float("nan")
        return (metrics.get(f"{cls.headline_metric}_final", nan), metrics.get(f"{cls.headline_metric}_best", nan))

    @classmethod
    def final_notes(cls, specs: Sequence[Any], records: dict[str, dict]) -> list[str]:
        """Lines under the launcher's final table about this task's runs (`specs`: lai_bench.launch.grid.GridPoint;
        `records`: run id -> its record or {}), e.g. a synthetic data set's chance level."""
        return []

    # File patterns (under tables/ and figures/) this task's report writes: a later report removes those it did not
    # rewrite. None: the headline table, <task>.*
    report_files: dict[str, tuple[str, ...]] | None = None

    @classmethod
    def report(cls, frame: Any, config_cols: Sequence[str], context: Any) -> Any:
        """This task's tables and figures (lai_bench.summary.report.ReportPart) from its runs' rows (`frame`, one per
        record, config columns `config_cols`); `context` (lai_bench.summary.report.ReportContext) holds the records,
        the published numbers, the metric (best or final) and where figures go. Default: the headline table."""
        from ..summary.headline import headline_report

        return headline_report(cls, frame, config_cols, context)

    # -- the bench ------------------------------------------------------------------------------------------------
    # python -m lai_bench.bench's options (backbone, depth, batch, num_classes, size) where this task sets them.
    bench_defaults: dict[str, Any] = {}

    @classmethod
    def bench_check(cls, args: Any) -> None:
        """ValueError naming the option when the bench's options (`args`, defaults filled in; `args.per_layer`: the
        per-layer reference rows are asked for) do not fit this task."""

    @classmethod
    def bench_row(cls, method: str, args: Any, depth: int, device: torch.device, variant: Any, steps: int,
                  warmup: int, reference: bool = False) -> dict[str, Any]:
        """The bench's measurement of one method: params, FLOPs, train and inference step times, samples/s, peak
        memory (lai_bench.runtime.measure.measure_model's keys), what was timed (`model`, e.g. "cifar ResNet-164")
        and one input's size (`input`, "32x32"). Default: the run's model on the bench's backbone, fed images of the
        backbone's input size; `reference` builds the per-layer implementation."""
        from ..models import backbone_info, build_model
        from ..runtime.measure import measure_model

        name, amp_dtype, channels_last, compile = variant
        info = backbone_info(args.backbone)
        size = info.input_size
        model = build_model(method, args.backbone, depth, args.num_classes, reference=reference)
        m = measure_model(model, (3, size, size), args.num_classes, device, batch_size=args.batch, steps=steps,
                          warmup=warmup, amp_dtype=amp_dtype, channels_last=channels_last, compile=compile)
        return {**m, "model": f"{args.backbone} {info.model_name(depth)}", "input": f"{size}x{size}"}

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
