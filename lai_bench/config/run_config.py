"""Run configuration: recipes as data, one validated, fully resolved config per run, and its stable id.

The schema is `RunConfig` itself: each field's type says what it allows (pydantic validates it, see `parse`), and
`validate` adds the checks across fields (depth per backbone, data paths, method options) before anything runs.
"""
import dataclasses
import functools
import hashlib
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Annotated, Any

from pydantic import ConfigDict, Field, Strict, ValidationError, with_config
from typing_extensions import TypedDict

from ..core.devices import AMP_DTYPES
from ..core.errors import did_you_mean
from ..models import backbone_info, list_backbones
from ..models.backbones.resnet import BLOCKS
from .recipes import RECIPE_FIELDS, RECIPE_VARIANTS, RECIPES, WARMUP_ITERS_START
from .schema import _plain, adapter, kind, one_of, real, registered, schema_error

# The data sets by task; "synthetic" serves every task (learnable images, or shapes on noise for detection).
CLASSIFICATION_DATASETS = ("cifar10", "cifar100", "imagenet")
DETECTION_DATASETS = ("coco",)
DATASETS = (*CLASSIFICATION_DATASETS, *DETECTION_DATASETS, "synthetic")
DETECTORS = ("faster_rcnn", "mask_rcnn", "retinanet")
# What a detection run's images are resized to (shorter side, longer side at most): mmdetection's 1333x800.
DETECTION_SIZE = {"min_size": 800, "max_size": 1333}
SCHEDULES = ("step", "cosine", "cosine_epoch")
INTERPOLATIONS = ("bilinear", "bicubic")
# auto_augment: a timm RandAugment string (rand-m9-mstd0.5-inc1, ...) or torchvision's AutoAugment policy for CIFAR-10.
AUTO_AUGMENT_POLICIES = ("cifar10",)
AMP_MODES = tuple(AMP_DTYPES)
LR_SCALINGS = ("none", "linear")
OPTIMIZERS = ("sgd", "adamw")
# Fields added after runs were recorded: left out of the run id while at these defaults, so those runs keep their ids.
ID_NEUTRAL_DEFAULTS = {"sync_bn": False, "lr_scaling": "none", "warmup_iters": 0, "task": "classification",
                       "optimizer": "sgd", "min_lr": 0.0, "warmup_lr": 0.0, "auto_augment": None,
                       "interpolation": "bilinear", "reprob": 0.0, "repeated_aug": 1, "mixup": 0.0, "cutmix": 0.0,
                       "mixup_prob": 1.0, "mixup_switch_prob": 0.5, "model_ema": 0.0,
                       "detector": None, "pretrained": None, **DETECTION_SIZE}
# Fields that say where things are, not what is computed: left out of the run id.
NON_SEMANTIC = ("data_root", "download", "workers", "gpu_resident", "device", "measure", "measure_steps", "compile",
                "keep_checkpoints", "threads", "plugins")
KEEP_CHECKPOINTS = ("final", "all", "none")
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:[0-9]+)?)$"


class ConfigError(ValueError):
    """A bad configuration value; the message names the key and what is allowed."""


# -- the schema's types (schema.py builds them): each says what it allows, and its errors quote that -----------
def _list_models() -> list[str]:
    from ..models import list_models

    return list_models()


def _list_tasks() -> list[str]:
    from ..tasks import list_tasks  # the task registry: the one import upwards (pyproject.toml)

    return list_tasks()


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
Dataset = one_of(DATASETS)
TaskName = registered(_list_tasks)
Detector = one_of(DETECTORS)
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

    task: TaskName = field(default="classification", metadata={
        "help": "a registered task: classification | detection (COCO: a detector on the backbone, see detector) "
                "| a plug-in's"})
    method: Method = field(default="none", metadata={
        "help": "layer-interaction method (see lai_bench.models.list_models())"})
    backbone: Backbone = field(default="cifar", metadata={
        "help": "the network family: " + " | ".join(list_backbones())})
    depth: Count | None = field(default=None, metadata={
        "help": "network depth, per backbone (unset: " + ", ".join(
            f"{name} {backbone_info(name).default_depth}" for name in list_backbones()) + "): " + "; ".join(
            f"{name}: {backbone_info(name).depth_help}" for name in list_backbones())})
    block: Block | None = field(default=None, metadata={"help": "basic | bottleneck (default: from the depth)"})
    detector: Detector | None = field(default=None, metadata={
        "help": "task detection: faster_rcnn | mask_rcnn | retinanet (torchvision, FPN; unset: faster_rcnn)"})
    pretrained: Text | None = field(default=None, metadata={
        "help": "initial weights: for task detection a lai_bench ImageNet run record or weights file, or a "
                "torchvision ResNet state_dict (method none); for classification a state_dict file loaded by name "
                "(e.g. a timm DeiT's; lai_bench.models.load_pretrained); unset: random init"})
    dataset: Dataset = field(default="synthetic", metadata={
        "help": "cifar10 | cifar100 | imagenet | coco | synthetic"})
    data_root: Text = field(default="./data", metadata={
        "help": "folder holding cifar-10-batches-py / cifar-100-python / imagenet train,val / coco train2017, "
                "val2017, annotations"})
    download: Flag = field(default=False, metadata={
        "help": "download CIFAR into data_root if missing (off: clusters have no internet)"})
    seed: Natural = field(default=0, metadata={"help": "seed of init, data order and augmentation"})
    model_opts: Options = field(default_factory=dict, metadata={
        "help": "method options (see lai_bench.models.model_options)"})
    recipe: Recipe = field(default="cifar", metadata={"help": "base recipe: " + ", ".join(RECIPES)})
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
    min_size: Count = field(default=DETECTION_SIZE["min_size"], metadata={
        "help": "task detection: images resized so their shorter side is this (the detector's transform)"})
    max_size: Count = field(default=DETECTION_SIZE["max_size"], metadata={
        "help": "task detection: ... and their longer side at most this"})
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
        """A copy with every recipe field filled in."""
        recipe = RECIPES.get(self.recipe)
        if recipe is None:
            raise ConfigError(f"unknown recipe {self.recipe!r}; allowed: {', '.join(RECIPES)}")
        detector = self.detector
        if self.task == "detection" and detector is None:
            detector = DETECTORS[0]
        recipe = {**recipe, **RECIPE_VARIANTS.get((self.recipe, detector), {})}
        values = {k: (recipe[k] if getattr(self, k) is None else getattr(self, k)) for k in RECIPE_FIELDS}
        values["milestones"] = tuple(values["milestones"])
        values["detector"] = detector
        values["depth"] = self.resolved_depth()
        return dataclasses.replace(self, **values)

    def resolved_depth(self) -> int:
        """`depth`, or the backbone's default where it is unset."""
        if self.depth is not None:
            return self.depth
        try:
            return backbone_info(self.backbone).default_depth
        except ValueError:  # an unknown backbone: validation names it
            return 20

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["milestones"] is not None:
            d["milestones"] = list(d["milestones"])
        d["plugins"] = list(d["plugins"])
        return d

    def run_id(self) -> str:
        """Stable 12-hex id of the resolved config (paths and devices left out)."""
        d = {k: v for k, v in self.resolved().to_dict().items() if k not in NON_SEMANTIC}
        d = {k: v for k, v in d.items() if k not in ID_NEUTRAL_DEFAULTS or v != ID_NEUTRAL_DEFAULTS[k]}
        return fingerprint(d)

    def name(self) -> str:
        """A readable name, e.g. dla_l-cifar100-d164-s0 (+ model options); named by what the options make of the
        method (dla_l with attention=base is dla_b-...). Not part of the run id."""
        from ..models.registry import canonical_method

        try:
            method, options = canonical_method(self.method, self.model_opts)
        except (KeyError, ValueError):  # an unknown method: validation names it
            method, options = self.method, self.model_opts
        opts = "".join(f"-{k}={v}" for k, v in sorted(options.items()))
        if self.task == "detection":
            method = f"{self.detector or DETECTORS[0]}-{method}"
        return f"{method}{opts}-{self.dataset}-d{self.resolved_depth()}-s{self.seed}"


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
    """Build a RunConfig from plain data (YAML, the command line), typed by the schema; ConfigError if it is not."""
    return parse(data, where)


def parse(data: Any, where: str | None = None) -> RunConfig:
    """Data checked and typed by the schema (RunConfig's field types): "1e-3" becomes 0.001, unknown keys fail."""
    try:
        return adapter(RunConfig).validate_python(data)
    except ValidationError as e:
        raise ConfigError((f"{where}: " if where else "") + schema_error(e, RunConfig)) from None


def _values(config: RunConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in fields(config)}


def validate(config: RunConfig) -> RunConfig:
    """Check every value before anything runs (cheap checks first, a model build last); returns the resolved config.

    The values are those the schema typed: text numbers become numbers, ints given for floats stay ints.
    """
    c = parse(_values(config)).resolved()
    _check_task(c)
    _check_depth(c)
    _check_data(c)
    c = dataclasses.replace(c, model_opts=_check_options(c))
    _check_model_builds(c)
    return c


def _check_task(c: RunConfig) -> None:
    """What belongs to one task only (its `config_fields`, left at their defaults by every other task's runs), then
    the task's own checks (`Task.check_config`)."""
    from ..tasks import list_tasks, task_class  # the task registry: the one import upwards (pyproject.toml)

    if c.warmup_epochs and c.warmup_iters:
        raise ConfigError(f"warmup_epochs {c.warmup_epochs} and warmup_iters {c.warmup_iters}: set one warm-up "
                          "(allowed: one of them > 0, the other 0)")
    for other in list_tasks():
        for key, default in task_class(other).config_fields.items() if other != c.task else ():
            value = getattr(c, key)
            if value != default:
                raise ConfigError(f"{key} {value!r} is a {other} setting, but task is {c.task} "
                                  f"(allowed: task {other} with {key}, or no {key})")
    task_class(c.task).check_config(c)


def _check_depth(c: RunConfig) -> None:
    """Depth against its backbone's rules: arithmetic only, nothing is built."""
    try:
        backbone_info(c.backbone).check_depth(c.depth, c.block)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_data(c: RunConfig) -> None:
    if c.gpu_resident and c.dataset not in ("cifar10", "cifar100"):
        raise ConfigError(f"gpu_resident holds CIFAR on the device; dataset {c.dataset!r} has no such path "
                          f"(allowed with gpu_resident: cifar10, cifar100)")
    if c.dataset == "imagenet" and backbone_info(c.backbone).input_size != 224:
        allowed = [b for b in list_backbones() if backbone_info(b).input_size == 224]
        raise ConfigError(f"dataset imagenet needs a 224x224 backbone, not {c.backbone} "
                          f"(allowed: {', '.join(allowed)})")


def _check_options(c: RunConfig) -> dict[str, Any]:
    """The method's options, named and typed as its registered defaults say; returns the typed options."""
    from ..models import check_layout, model_options

    try:
        check_layout(c.method, c.backbone)
    except ValueError as e:
        raise ConfigError(str(e)) from None

    allowed = [k for k in model_options(c.method, c.backbone) if k != "drop_path"]
    for key in c.model_opts:
        if key in ("drop_path", "zero_init_residual"):
            raise ConfigError(f"model_opts.{key}: set {key} at the top level (it is a recipe field)")
        if key not in allowed:
            raise ConfigError(_unknown_option(key, c.method, c.backbone, allowed))
    schema = method_options_schema(c.method, c.backbone)
    try:
        return dict(adapter(schema).validate_python(c.model_opts))
    except ValidationError as e:
        raise ConfigError(schema_error(e, schema, "model_opts")) from None


def _unknown_option(key: str, method: str, backbone: str, allowed: list[str]) -> str:
    from ..models import method_options

    if set(method_options(method, backbone)) <= {"drop_path"}:
        return (f"model_opts: unknown option {key!r}: method {method!r} takes no options "
                f"(model_opts may set only the backbone's {', '.join(backbone_info(backbone).options)})")
    return (f"model_opts: unknown option {key!r} for method {method!r}{did_you_mean(key, allowed)}; "
            f"allowed: {', '.join(sorted(allowed))}")


OPTION_TYPES = {bool: Flag, int: Count, float: Number, str: Text}


@functools.cache
def method_options_schema(method: str, backbone: str) -> type:
    """The schema of a method's `model_opts`: a TypedDict of its options, each typed as its registered default says
    (an int option is a size: >= 1), or, where the default is None, as its annotation."""
    from ..models import method_info, model_options

    cls = method_info(method).cls
    types = {name: _option_type(cls, name, default) for name, default in model_options(method, backbone).items()}
    return with_config(ConfigDict(extra="forbid"))(TypedDict(f"{method}_{backbone}_options", types, total=False))


def _option_type(cls: type, name: str, default: Any) -> Any:
    if default is not None:
        return OPTION_TYPES.get(type(default), Any)
    hints = next((h for h in map(_init_hints, cls.__mro__) if name in h), {})
    return OPTION_TYPES.get(_plain(hints.get(name)), Any) | None


def _init_hints(klass: type) -> dict[str, Any]:
    """The annotations of the keyword options a class's own __init__ declares."""
    init = vars(klass).get("__init__")
    return typing.get_type_hints(init) if init else {}


def _check_model_builds(c: RunConfig) -> None:
    """Option values (e.g. a DLA cell name) are checked by building the model on the meta device: no memory.

    Only when options are set: the registered defaults build by construction.
    """
    if not c.model_opts:
        return
    key = (c.method, c.backbone, c.depth, c.block, json.dumps(c.model_opts, sort_keys=True, default=str))
    error = _model_build_error(key)
    if error:
        raise ConfigError(f"model_opts: {error}")


@functools.lru_cache(maxsize=256)
def _model_build_error(key: tuple) -> str | None:
    """Cached per model: a grid's seeds and data sets share one check."""
    import torch

    from ..models import build_model

    method, backbone, depth, block, opts = key
    try:
        with torch.device("meta"):
            build_model(method, backbone, depth, 10, block, **json.loads(opts))
    except (ValueError, TypeError, ArithmeticError) as e:
        return str(e)
    return None
