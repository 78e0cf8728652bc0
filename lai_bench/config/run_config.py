"""Run configuration: the schema of one run (`RunConfig`), its resolution against a recipe, and its stable id.

The schema is `RunConfig` itself: each field's type says what it allows (pydantic validates it, see `parse`). It
names no task, backbone or data set: `lai_bench.validate`, a layer above the tasks, checks a config against the
task, method and backbone registries and fills in the defaults they own.
"""
import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import ConfigDict, Field, Strict, ValidationError, with_config
from typing_extensions import TypedDict

from ..core.devices import AMP_DTYPES
from ..models import backbone_info, default_backbone, list_backbones
from ..models.backbones.resnet import BLOCKS
from .recipes import DEFAULT_RECIPE, RECIPE_FIELDS, RECIPES, WARMUP_ITERS_START
from .schema import adapter, kind, one_of, real, registered, schema_error

SCHEDULES = ("step", "cosine", "cosine_epoch")
INTERPOLATIONS = ("bilinear", "bicubic")
AMP_MODES = tuple(AMP_DTYPES)
LR_SCALINGS = ("none", "linear")
OPTIMIZERS = ("sgd", "adamw")
# Fields added after runs were recorded: left out of the run id while at these defaults, so those runs keep their ids.
# detector, min_size and max_size were fields before they became detection's task options (task_opts): records
# written then hold them at these values, and their config keys must stay those of the runs written since.
ID_NEUTRAL_DEFAULTS = {"sync_bn": False, "lr_scaling": "none", "warmup_iters": 0, "optimizer": "sgd", "min_lr": 0.0,
                       "warmup_lr": 0.0, "auto_augment": None, "interpolation": "bilinear", "reprob": 0.0,
                       "repeated_aug": 1, "mixup": 0.0, "cutmix": 0.0, "mixup_prob": 1.0, "mixup_switch_prob": 0.5,
                       "model_ema": 0.0, "pretrained": None, "task_opts": {},
                       "detector": None, "min_size": 800, "max_size": 1333}
# The fields that became task options: a record written before keeps them at the top level.
MOVED_TO_TASK_OPTS = ("detector", "min_size", "max_size")
# Fields that say where things are, not what is computed: left out of the run id.
NON_SEMANTIC = ("data_root", "download", "workers", "gpu_resident", "device", "measure", "measure_steps", "compile",
                "keep_checkpoints", "threads", "plugins")
KEEP_CHECKPOINTS = ("final", "all", "none")
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:[0-9]+)?)$"


class ConfigError(ValueError):
    """A bad configuration value; the message names the key and what is allowed."""


# What each task decides about a config (its data set, its options' defaults, recipe values that depend on them),
# and which task an unset `task` means: filled by the task registry as tasks register (lai_bench.tasks.registry), so
# that a config resolves, and has its id, the same before and after validation. The config names no task itself.
TASK_RESOLVERS: dict[str, Callable[["RunConfig"], "RunConfig"]] = {}
_DEFAULT_TASK: list[str] = []


def declare_task(name: str, resolve: Callable[["RunConfig"], "RunConfig"], default: bool = False) -> None:
    """Register what task `name` fills into a config (`resolve`), and whether it is the task of a config with none."""
    TASK_RESOLVERS[name] = resolve
    if default:
        _DEFAULT_TASK[:] = [name]


def forget_task(name: str) -> None:
    TASK_RESOLVERS.pop(name, None)
    if _DEFAULT_TASK == [name]:
        _DEFAULT_TASK.clear()


def default_task() -> str:
    """The task of a config that names none; ConfigError before any task has registered."""
    if not _DEFAULT_TASK:
        raise ConfigError("task: unset, and no default task is registered yet (import lai_bench.tasks first)")
    return _DEFAULT_TASK[0]


def id_neutral(field_name: str, value: Any) -> None:
    """Leave `field_name` out of run ids and config keys while it is `value`: what a field meant before it existed.

    The task every run was before tasks existed declares itself here (`task` at its name), so those runs keep their
    ids; the config names no task itself.
    """
    ID_NEUTRAL_DEFAULTS[field_name] = value


# -- the schema's types (schema.py builds them): each says what it allows, and its errors quote that -----------
def _list_models() -> list[str]:
    from ..models import list_models

    return list_models()


Flag = kind(bool, "true or false", Strict())
Text = kind(str, "text", Strict())
Count = kind(int, "an integer >= 1", Strict(), Field(ge=1))
Natural = kind(int, "an integer >= 0", Strict(), Field(ge=0))
Number = real("a finite number")
Positive = real("a finite number > 0", gt=0)
NonNegative = real("a finite number >= 0", ge=0)
Fraction = real("a number in [0, 1)", ge=0, lt=1)
Probability = real("a number in [0, 1]", ge=0, le=1)
Epochs = kind(tuple[Annotated[int, Strict(), Field(ge=1)], ...], "a list of epochs >= 1")
Options = kind(dict[str, Any], "a mapping of option: value")
Modules = kind(tuple[Annotated[str, Strict(), Field(min_length=1)], ...], "a list of importable module names")
Device = kind(str, "auto, cpu, cuda, cuda:N (N >= 0) or mps", Strict(), Field(pattern=DEVICE_PATTERN))
Method = registered(_list_models)
Backbone = registered(list_backbones)
Block = one_of(BLOCKS)
Recipe = one_of(RECIPES)
Schedule = one_of(SCHEDULES)
Interpolation = one_of(INTERPOLATIONS)
LrScaling = one_of(LR_SCALINGS)
OptimizerName = one_of(OPTIMIZERS)
Amp = one_of(AMP_MODES)
KeepCheckpoints = one_of(KEEP_CHECKPOINTS)


@with_config(ConfigDict(extra="forbid"))
class SyntheticOptions(TypedDict, total=False):
    """The synthetic data set's options (lai_bench.data): the keys a run's `synthetic` may set."""

    num_classes: Count
    image_size: Count
    train_size: Count
    eval_size: Count
    seed: Natural
    noise: NonNegative


def fingerprint(data: Mapping[str, Any]) -> str:
    """12 hex digits of the SHA-256 of ``data`` as sorted JSON: the one hash behind run ids and config keys."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


@with_config(ConfigDict(extra="forbid"))
@dataclass
class RunConfig:
    """One run's settings; each field's type is its schema (`parse`), `validate` checks the rest."""

    task: Text | None = field(default=None, metadata={
        "help": "a registered task (lai_bench.tasks.list_tasks(), or a plug-in's); unset: the default task"})
    method: Method = field(default="none", metadata={
        "help": "layer-interaction method (see lai_bench.models.list_models())"})
    backbone: Backbone | None = field(default=None, metadata={
        "help": "the network family: " + " | ".join(list_backbones()) + "; unset: the default backbone"})
    depth: Count | None = field(default=None, metadata={
        "help": "network depth, per backbone (unset: " + ", ".join(
            f"{name} {backbone_info(name).default_depth}" for name in list_backbones()) + "): " + "; ".join(
            f"{name}: {backbone_info(name).depth_help}" for name in list_backbones())})
    block: Block | None = field(default=None, metadata={"help": "basic | bottleneck (default: from the depth)"})
    task_opts: Options = field(default_factory=dict, metadata={
        "help": "the task's options (lai_bench.tasks.task_options), e.g. detection's detector"})
    pretrained: Text | None = field(default=None, metadata={
        "help": "initial weights: a state_dict file loaded by name (e.g. a timm DeiT's; lai_bench.models."
                "load_pretrained), or what the task reads (a detector's backbone: a lai_bench run record); unset: "
                "random init"})
    dataset: Text | None = field(default=None, metadata={
        "help": "a data set of the run's task (lai_bench.tasks.task_datasets); unset: the task's default"})
    data_root: Text = field(default="./data", metadata={
        "help": "the folder holding the data sets' files (each data set says what it reads there)"})
    download: Flag = field(default=False, metadata={
        "help": "download CIFAR into data_root if missing (off: clusters have no internet)"})
    seed: Natural = field(default=0, metadata={"help": "seed of init, data order and augmentation"})
    model_opts: Options = field(default_factory=dict, metadata={
        "help": "method options (see lai_bench.models.model_options)"})
    recipe: Recipe = field(default=DEFAULT_RECIPE, metadata={"help": "base recipe: " + ", ".join(RECIPES)})
    # Recipe fields: None means "take the recipe's value".
    epochs: Count | None = field(default=None, metadata={"help": "training epochs"})
    batch_size: Count | None = field(default=None, metadata={
        "help": "global batch: all processes together, split evenly over them"})
    eval_batch_size: Count | None = field(default=None, metadata={
        "help": "global eval batch (speed only; rounded up per process)"})
    lr: Positive | None = field(default=None, metadata={"help": "peak learning rate of SGD (see lr_scaling)"})
    momentum: Fraction | None = field(default=None, metadata={"help": "SGD momentum"})
    weight_decay: NonNegative | None = field(default=None, metadata={"help": "SGD weight decay"})
    nesterov: Flag | None = field(default=None, metadata={"help": "Nesterov momentum"})
    schedule: Schedule | None = field(default=None, metadata={
        "help": "lr schedule after the warm-up: step (x gamma at each milestone) | cosine (per iteration) | "
                "cosine_epoch (timm's CosineLRScheduler stepped per epoch from warmup_lr, as DeiT)"})
    milestones: Epochs | None = field(default=None, metadata={
        "help": "epochs where the step schedule multiplies the lr by gamma, e.g. [100, 150]"})
    gamma: Positive | None = field(default=None, metadata={"help": "lr factor at each milestone"})
    warmup_epochs: Natural | None = field(default=None, metadata={"help": "epochs of linear lr warm-up"})
    warmup_iters: Natural | None = field(default=None, metadata={
        "help": f"iterations of linear lr warm-up from {WARMUP_ITERS_START}x (mmdetection's; or warmup_epochs)"})
    label_smoothing: Fraction | None = field(default=None, metadata={"help": "label smoothing of the training loss"})
    drop_path: Fraction | None = field(default=None, metadata={"help": "drop-path (stochastic depth) rate"})
    zero_init_residual: Flag | None = field(default=None, metadata={
        "help": "zero-init the last BatchNorm of every residual block"})
    # Data parallelism. batch_size and eval_batch_size are global: split evenly over the processes of the run.
    sync_bn: Flag = field(default=False, metadata={
        "help": "BatchNorm statistics over the global batch (torch SyncBatchNorm: CUDA only); off, as in the papers"})
    lr_scaling: LrScaling | None = field(default=None, metadata={
        "help": "none: use lr as given | linear: lr x batch_size / the recipe's batch_size (cifar 128, imagenet 256, "
                "coco_1x 16; Goyal et al. 2017)"})
    optimizer: OptimizerName | None = field(default=None, metadata={
        "help": "sgd (momentum, nesterov) | adamw (eps 1e-8, no weight decay on norms, biases and the model's "
                "no_weight_decay() names: timm's optimizer factory)"})
    min_lr: NonNegative | None = field(default=None, metadata={"help": "the cosine schedule's final lr"})
    warmup_lr: NonNegative | None = field(default=None, metadata={
        "help": "schedule cosine_epoch: the lr its warm-up starts from (timm's warmup_lr_init; DeiT 1e-6)"})
    # Augmentation and regularisation of the ViT recipes, through timm (torchvision for the CIFAR AutoAugment).
    auto_augment: Text | None = field(default=None, metadata={
        "help": "image data sets: a timm RandAugment string, e.g. rand-m9-mstd0.5-inc1 (DeiT), or cifar10 "
                "(torchvision's AutoAugment CIFAR-10 policy); unset: none. Synthetic images are tensors: not applied"})
    interpolation: Interpolation | None = field(default=None, metadata={
        "help": "ImageNet training crops: bilinear | bicubic (DeiT)"})
    reprob: Fraction | None = field(default=None, metadata={
        "help": "random erasing probability (timm's RandomErasing, pixel mode; DeiT 0.25)"})
    repeated_aug: Count | None = field(default=None, metadata={
        "help": "repeated augmentation: each epoch draws len/repeats samples, each `repeats` times (timm's "
                "RepeatAugSampler; DeiT 3); 1: off"})
    mixup: NonNegative | None = field(default=None, metadata={
        "help": "Mixup alpha (timm's Mixup, soft-target loss with label_smoothing in the targets); 0: off"})
    cutmix: NonNegative | None = field(default=None, metadata={"help": "CutMix alpha (timm's Mixup); 0: off"})
    mixup_prob: Probability | None = field(default=None, metadata={
        "help": "the fraction of batches Mixup/CutMix is applied to"})
    mixup_switch_prob: Probability | None = field(default=None, metadata={
        "help": "with both on: the probability a mixed batch uses CutMix rather than Mixup"})
    model_ema: Fraction | None = field(default=None, metadata={
        "help": "decay of a model EMA updated after every step and evaluated beside the model (timm's ModelEmaV3; "
                "records top1_ema_*); 0: off"})
    # Execution.
    max_steps_per_epoch: Count | None = field(default=None, metadata={
        "help": "cap the steps of every epoch (smoke runs)"})
    max_eval_batches: Count | None = field(default=None, metadata={
        "help": "cap the eval batches of each process (smoke runs)"})
    synthetic: SyntheticOptions = field(default_factory=dict, metadata={
        "help": "synthetic data option: num_classes, image_size, train_size, eval_size"})
    amp: Amp = field(default="bf16", metadata={"help": "autocast dtype on CUDA: bf16 | fp16 | none (CPU runs fp32)"})
    channels_last: Flag = field(default=True, metadata={"help": "channels_last memory format on CUDA"})
    device: Device = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N | mps"})
    workers: Natural | None = field(default=None, metadata={
        "help": "data loader workers (default: 0 on CPU, min(8, cpus) on GPU)"})
    threads: Count | None = field(default=None, metadata={
        "help": "torch CPU threads per process (None: the CPUs this process may use - its affinity, or "
                "SLURM_CPUS_PER_TASK - divided among the run's processes on this node)"})
    gpu_resident: Flag = field(default=False, metadata={
        "help": "CIFAR only: keep the whole set on the device and augment there (no CPU loader; meant for CUDA)"})
    compile: Flag = field(default=False, metadata={
        "help": "torch.compile the training step's forward and backward: the same numbers to float tolerance (the "
                "first step compiles; eval stays eager)"})
    measure: Flag = field(default=True, metadata={"help": "measure throughput and peak memory at the end"})
    measure_steps: Count = field(default=5, metadata={"help": "timed steps of the throughput measurement"})
    keep_checkpoints: KeepCheckpoints = field(default="final", metadata={
        "help": "final: a completed run keeps only its final model weights (<run_id>.final.pt) | "
                "all: it keeps its training checkpoints too | none: it keeps nothing (smoke runs)"})
    plugins: Modules = field(default=(), metadata={
        "help": "modules imported before anything is built: plug-ins that register methods, backbones or tasks "
                "(lai_bench.core.plugins); not part of the run id"})

    def resolved(self) -> "RunConfig":
        """A copy with every default filled in: the task (the default task), the backbone (the default backbone),
        what the task decides (its data set, its options' defaults: `declare_task`), then the recipe's values."""
        c = self
        if c.task is None:
            c = dataclasses.replace(c, task=default_task())
        if c.backbone is None:
            c = dataclasses.replace(c, backbone=default_backbone())
        if c.task in TASK_RESOLVERS:  # an unknown task is left as it is: validation names it
            c = TASK_RESOLVERS[c.task](c)
        recipe = RECIPES.get(c.recipe)
        if recipe is None:
            raise ConfigError(f"unknown recipe {c.recipe!r}; allowed: {', '.join(RECIPES)}")
        values = {k: (recipe[k] if getattr(c, k) is None else getattr(c, k)) for k in RECIPE_FIELDS}
        values["milestones"] = tuple(values["milestones"])
        values["depth"] = c.resolved_depth()
        return dataclasses.replace(c, **values)

    def resolved_depth(self) -> int | None:
        """`depth`, or the backbone's default where it is unset."""
        if self.depth is not None:
            return self.depth
        try:
            return backbone_info(self.backbone or default_backbone()).default_depth
        except ValueError:  # an unknown backbone: validation names it
            return None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["milestones"] is not None:
            d["milestones"] = list(d["milestones"])
        d["plugins"] = list(d["plugins"])
        d["task_opts"] = dict(d["task_opts"])
        return d

    def run_id(self) -> str:
        """Stable 12-hex id of the resolved config (paths and devices left out)."""
        d = {k: v for k, v in self.resolved().to_dict().items() if k not in NON_SEMANTIC}
        d = {k: v for k, v in d.items() if k not in ID_NEUTRAL_DEFAULTS or v != ID_NEUTRAL_DEFAULTS[k]}
        return fingerprint(d)

    def name(self) -> str:
        """A readable name, e.g. dla_l-cifar100-d164-s0 (+ model options); named by what the options make of the
        method (dla_l with attention=base is dla_b-...), after the task options given as text (a detector:
        faster_rcnn-dla_l-coco-d50-s0). Not part of the run id."""
        from ..models.registry import canonical_method

        try:
            method, options = canonical_method(self.method, self.model_opts)
        except (KeyError, ValueError):  # an unknown method: validation names it
            method, options = self.method, self.model_opts
        opts = "".join(f"-{k}={v}" for k, v in sorted(options.items()))
        try:
            full = self.resolved()  # the data set and options an unset field means
        except ValueError:  # a bad value: validation names it
            full = self
        lead = "".join(f"{v}-" for v in full.task_opts.values() if isinstance(v, str))
        return f"{lead}{method}{opts}-{full.dataset}-d{full.resolved_depth()}-s{self.seed}"


def effective_lr(c: "RunConfig") -> float:
    """The peak learning rate a run uses: `lr`, or with linear scaling lr x batch_size / the recipe's batch.

    The reference is the recipe's own global batch (cifar 128, imagenet 256), the batch its lr was tuned for, so a
    recipe run at its own batch gets its own lr whatever the scaling. Independent of the number of processes: the
    batch is global.
    """
    if c.lr_scaling == "linear":
        return c.lr * c.batch_size / RECIPES[c.recipe]["batch_size"]
    return c.lr


def split_batch(batch_size: int, world_size: int, name: str = "batch_size") -> int:
    """The per-process share of a global batch; it must divide evenly (DDP averages equal-sized shards)."""
    if batch_size % world_size:
        lower, upper = (batch_size // world_size) * world_size, (batch_size // world_size + 1) * world_size
        near = f"{lower} or {upper}" if lower else f"{upper}"
        raise ConfigError(f"{name} {batch_size} is the global batch and must divide by the {world_size} processes "
                          f"of the run (nodes x tasks_per_node); allowed: a multiple of {world_size}, e.g. {near}")
    return batch_size // world_size


def config_from_dict(data: Mapping[str, Any], where: str | None = None) -> RunConfig:
    """Build a RunConfig from plain data (YAML, the command line, a record's config), typed by the schema;
    ConfigError if it is not. A record written before detection's fields became task options still reads."""
    return parse(_moved_to_task_opts(data), where)


def _moved_to_task_opts(data: Mapping[str, Any]) -> Any:
    """A record's top-level `detector`, `min_size`, `max_size` (fields once) as task options; at their old
    defaults (every classification record's) they said nothing and are dropped."""
    if not isinstance(data, Mapping) or not any(k in data for k in MOVED_TO_TASK_OPTS):
        return data
    data = dict(data)
    moved = {k: data.pop(k) for k in MOVED_TO_TASK_OPTS if k in data}
    given = {k: v for k, v in moved.items() if v != ID_NEUTRAL_DEFAULTS[k]}
    if given:
        data["task_opts"] = {**given, **(data.get("task_opts") or {})}
    return data


def parse(data: Any, where: str | None = None) -> RunConfig:
    """Data checked and typed by the schema (RunConfig's field types): "1e-3" becomes 0.001, unknown keys fail."""
    try:
        return adapter(RunConfig).validate_python(data)
    except ValidationError as e:
        raise ConfigError((f"{where}: " if where else "") + schema_error(e, RunConfig)) from None


__all__ = [
    "AMP_MODES",
    "Amp",
    "ConfigError",
    "Count",
    "Flag",
    "ID_NEUTRAL_DEFAULTS",
    "KEEP_CHECKPOINTS",
    "MOVED_TO_TASK_OPTS",
    "NON_SEMANTIC",
    "Natural",
    "NonNegative",
    "Number",
    "Options",
    "Positive",
    "RECIPE_FIELDS",
    "RECIPES",
    "RunConfig",
    "SyntheticOptions",
    "Text",
    "WARMUP_ITERS_START",
    "config_from_dict",
    "declare_task",
    "default_task",
    "effective_lr",
    "fingerprint",
    "forget_task",
    "id_neutral",
    "kind",
    "parse",
    "split_batch",
]
