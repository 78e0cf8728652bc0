"""Run configuration: recipes as data, one validated, fully resolved config per run, and its stable id."""
import dataclasses
import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .devices import AMP_DTYPES
from .errors import did_you_mean

RECIPES: dict[str, dict[str, Any]] = {
    # The DLA code's CIFAR README: SGD 0.1, batch 128, 180 epochs, /10 at 100 and 150, wd 1e-4, drop-path 0.2.
    "cifar": dict(epochs=180, batch_size=128, eval_batch_size=100, lr=0.1, momentum=0.9, weight_decay=1e-4,
                  nesterov=False, schedule="step", milestones=(100, 150), gamma=0.1, warmup_epochs=0,
                  label_smoothing=0.0, drop_path=0.2, zero_init_residual=False),
    # The DLA/MRLA ImageNet recipe: batch 256, 100 epochs, 3 warm-up epochs, x0.1 every 30, last BN zero-init.
    "imagenet": dict(epochs=100, batch_size=256, eval_batch_size=256, lr=0.1, momentum=0.9, weight_decay=1e-4,
                     nesterov=False, schedule="step", milestones=(30, 60, 90), gamma=0.1, warmup_epochs=3,
                     label_smoothing=0.0, drop_path=0.2, zero_init_residual=True),
    # The alternative ImageNet script: label smoothing 0.1, per-iteration cosine, 5 warm-up epochs.
    "imagenet_cosine": dict(epochs=100, batch_size=256, eval_batch_size=256, lr=0.1, momentum=0.9, weight_decay=1e-4,
                            nesterov=False, schedule="cosine", milestones=(), gamma=0.1, warmup_epochs=5,
                            label_smoothing=0.1, drop_path=0.2, zero_init_residual=True),
    # A few quick steps: smoke runs and tests.
    "smoke": dict(epochs=1, batch_size=32, eval_batch_size=64, lr=0.05, momentum=0.9, weight_decay=1e-4,
                  nesterov=False, schedule="step", milestones=(), gamma=0.1, warmup_epochs=0,
                  label_smoothing=0.0, drop_path=0.0, zero_init_residual=False),
}
RECIPE_FIELDS = tuple(RECIPES["cifar"])
DATASETS = ("cifar10", "cifar100", "imagenet", "synthetic")
SCHEDULES = ("step", "cosine")
AMP_MODES = tuple(AMP_DTYPES)
LR_SCALINGS = ("none", "linear")
# Fields added after runs were recorded: left out of the run id while at these defaults, so those runs keep their ids.
ID_NEUTRAL_DEFAULTS = {"sync_bn": False, "lr_scaling": "none"}
# Fields that say where things are, not what is computed: left out of the run id.
NON_SEMANTIC = ("data_root", "download", "workers", "gpu_resident", "device", "measure", "measure_steps", "compile",
                "keep_checkpoints")
KEEP_CHECKPOINTS = ("final", "all")


class ConfigError(ValueError):
    """A bad configuration value; the message names the key and what is allowed."""


def fingerprint(data: Mapping[str, Any]) -> str:
    """12 hex digits of the SHA-256 of ``data`` as sorted JSON: the one hash behind run ids and config keys."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class RunConfig:
    method: str = field(default="none",
                        metadata={"help": "layer-interaction method (see lai_bench.models.list_models())"})
    backbone: str = field(default="cifar", metadata={"help": "cifar | imagenet stem"})
    depth: int = field(default=20, metadata={
        "help": "ResNet depth (CIFAR: basic 6n+2, bottleneck 9n+2; ImageNet: 10/14/18/26/34/50/101/152)"})
    block: str | None = field(default=None, metadata={"help": "basic | bottleneck (default: from the depth)"})
    dataset: str = field(default="synthetic", metadata={"help": "cifar10 | cifar100 | imagenet | synthetic"})
    data_root: str = field(default="./data", metadata={
        "help": "folder holding cifar-10-batches-py / cifar-100-python / imagenet train,val"})
    download: bool = field(default=False, metadata={
        "help": "download CIFAR into data_root if missing (off: clusters have no internet)"})
    seed: int = field(default=0, metadata={"help": "seed of init, data order and augmentation"})
    model_opts: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "method options (see lai_bench.models.model_options)"})
    recipe: str = field(default="cifar", metadata={"help": "base recipe: " + ", ".join(RECIPES)})
    # Recipe fields: None means "take the recipe's value".
    epochs: int | None = field(default=None, metadata={"help": "training epochs"})
    batch_size: int | None = field(default=None, metadata={
        "help": "global batch: all processes together, split evenly over them"})
    eval_batch_size: int | None = field(default=None, metadata={
        "help": "global eval batch (speed only; rounded up per process)"})
    lr: float | None = field(default=None, metadata={"help": "peak learning rate of SGD (see lr_scaling)"})
    momentum: float | None = field(default=None, metadata={"help": "SGD momentum"})
    weight_decay: float | None = field(default=None, metadata={"help": "SGD weight decay"})
    nesterov: bool | None = field(default=None, metadata={"help": "Nesterov momentum"})
    schedule: str | None = field(default=None, metadata={
        "help": "lr schedule after the warm-up: step (x gamma at each milestone) | cosine (per iteration)"})
    milestones: tuple[int, ...] | None = field(default=None, metadata={
        "help": "epochs where the step schedule multiplies the lr by gamma, e.g. [100, 150]"})
    gamma: float | None = field(default=None, metadata={"help": "lr factor at each milestone"})
    warmup_epochs: int | None = field(default=None, metadata={"help": "epochs of linear lr warm-up"})
    label_smoothing: float | None = field(default=None, metadata={"help": "label smoothing of the training loss"})
    drop_path: float | None = field(default=None, metadata={"help": "drop-path (stochastic depth) rate"})
    zero_init_residual: bool | None = field(default=None, metadata={
        "help": "zero-init the last BatchNorm of every residual block"})
    # Data parallelism. batch_size and eval_batch_size are global: split evenly over the processes of the run.
    sync_bn: bool = field(default=False, metadata={
        "help": "BatchNorm statistics over the global batch (torch SyncBatchNorm: CUDA only); off, as in the papers"})
    lr_scaling: str = field(default="none", metadata={
        "help": "none: use lr as given | linear: lr x batch_size / the recipe's batch_size (cifar 128, imagenet 256; "
                "Goyal et al. 2017)"})
    # Execution.
    max_steps_per_epoch: int | None = field(default=None, metadata={
        "help": "cap the steps of every epoch (smoke runs)"})
    max_eval_batches: int | None = field(default=None, metadata={
        "help": "cap the eval batches of each process (smoke runs)"})
    synthetic: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "synthetic data option: num_classes, image_size, train_size, eval_size"})
    amp: str = field(default="bf16", metadata={"help": "autocast dtype on CUDA: bf16 | fp16 | none (CPU runs fp32)"})
    channels_last: bool = field(default=True, metadata={"help": "channels_last memory format on CUDA"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    workers: int | None = field(default=None, metadata={
        "help": "data loader workers (default: 0 on CPU, min(8, cpus) on GPU)"})
    gpu_resident: bool = field(default=False, metadata={
        "help": "CIFAR only: keep the whole set on the device and augment there (no CPU loader; meant for CUDA)"})
    compile: bool = field(default=False, metadata={
        "help": "torch.compile the training step's forward and backward: the same numbers to float tolerance (the "
                "first step compiles; eval stays eager)"})
    measure: bool = field(default=True, metadata={"help": "measure throughput and peak memory at the end"})
    measure_steps: int = field(default=5, metadata={"help": "timed steps of the throughput measurement"})
    keep_checkpoints: str = field(default="final", metadata={
        "help": "final: a completed run keeps only its final model weights (<run_id>.final.pt) | "
                "all: it keeps its training checkpoints too"})

    def resolved(self) -> "RunConfig":
        """A copy with every recipe field filled in."""
        recipe = RECIPES.get(self.recipe)
        if recipe is None:
            raise ConfigError(f"unknown recipe {self.recipe!r}; allowed: {', '.join(RECIPES)}")
        values = {k: (recipe[k] if getattr(self, k) is None else getattr(self, k)) for k in RECIPE_FIELDS}
        values["milestones"] = tuple(values["milestones"])
        return dataclasses.replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["milestones"] is not None:
            d["milestones"] = list(d["milestones"])
        return d

    def run_id(self) -> str:
        """Stable 12-hex id of the resolved config (paths and devices left out)."""
        d = {k: v for k, v in self.resolved().to_dict().items() if k not in NON_SEMANTIC}
        d = {k: v for k, v in d.items() if k not in ID_NEUTRAL_DEFAULTS or v != ID_NEUTRAL_DEFAULTS[k]}
        return fingerprint(d)

    def name(self) -> str:
        """A readable name, e.g. dla_l-cifar100-d164-s0 (+ model options)."""
        opts = "".join(f"-{k}={v}" for k, v in sorted(self.model_opts.items()))
        return f"{self.method}{opts}-{self.dataset}-d{self.depth}-s{self.seed}"


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


def config_from_dict(data: dict[str, Any], where: str = "config") -> RunConfig:
    """Build a RunConfig from plain data; unknown keys get a did-you-mean."""
    known = [f.name for f in fields(RunConfig)]
    for key in data:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}{did_you_mean(key, known)}; allowed: {', '.join(known)}")
    return RunConfig(**data)


def _check_type(name: str, value: Any, kind: type, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ConfigError(f"{name} must be {kind.__name__}, got {value!r}")


def validate(config: RunConfig) -> RunConfig:
    """Check every value before anything runs; returns the resolved config."""
    from .models import BACKBONES, list_models, model_options
    from .models.backbone import cifar_layout, imagenet_layout

    c = config.resolved()
    if c.method not in list_models():
        raise ConfigError(f"unknown method {c.method!r}; allowed: {', '.join(list_models())}")
    if c.backbone not in BACKBONES:
        raise ConfigError(f"unknown backbone {c.backbone!r}; allowed: {', '.join(BACKBONES)}")
    if c.dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {c.dataset!r}; allowed: {', '.join(DATASETS)}")
    _check_type("depth", c.depth, int)
    try:
        (cifar_layout if c.backbone == "cifar" else imagenet_layout)(c.depth, c.block)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if c.gpu_resident and c.dataset not in ("cifar10", "cifar100"):
        raise ConfigError(f"gpu_resident holds CIFAR on the device; dataset {c.dataset!r} has no such path "
                          f"(allowed with gpu_resident: cifar10, cifar100)")
    if c.dataset == "imagenet" and c.backbone != "imagenet":
        raise ConfigError("dataset imagenet needs backbone imagenet")
    for name in ("epochs", "batch_size", "eval_batch_size", "seed", "warmup_epochs", "measure_steps"):
        _check_type(name, getattr(c, name), int)
    for name in ("max_steps_per_epoch", "max_eval_batches", "workers"):
        _check_type(name, getattr(c, name), int, allow_none=True)
    for name in ("lr", "momentum", "weight_decay", "gamma", "label_smoothing", "drop_path"):
        _check_type(name, getattr(c, name), float)
    if c.epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {c.epochs}")
    for name in ("batch_size", "eval_batch_size", "max_steps_per_epoch", "max_eval_batches", "measure_steps"):
        value = getattr(c, name)
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if c.lr <= 0 or c.weight_decay < 0 or c.warmup_epochs < 0 or c.seed < 0:
        raise ConfigError("lr must be > 0; weight_decay, warmup_epochs and seed must be >= 0")
    if not 0.0 <= c.drop_path < 1.0 or not 0.0 <= c.label_smoothing < 1.0:
        raise ConfigError("drop_path and label_smoothing must be in [0, 1)")
    if c.schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {c.schedule!r}; allowed: {', '.join(SCHEDULES)}")
    if any(not isinstance(m, int) or m < 1 for m in c.milestones):
        raise ConfigError(f"milestones must be positive epoch numbers, got {list(c.milestones)}")
    if c.lr_scaling not in LR_SCALINGS:
        raise ConfigError(f"unknown lr_scaling {c.lr_scaling!r}; allowed: {', '.join(LR_SCALINGS)}")
    _check_type("sync_bn", c.sync_bn, bool)
    _check_type("compile", c.compile, bool)
    if c.amp not in AMP_MODES:
        raise ConfigError(f"unknown amp {c.amp!r}; allowed: {', '.join(AMP_MODES)}")
    if not isinstance(c.model_opts, dict):
        raise ConfigError(f"model_opts must be a mapping, got {c.model_opts!r}")
    allowed = model_options(c.method, c.backbone)
    for key in c.model_opts:
        if key in ("drop_path", "zero_init_residual"):
            raise ConfigError(f"model_opts.{key}: set {key} at the top level (it is a recipe field)")
        if key not in allowed:
            hint = did_you_mean(key, allowed)
            raise ConfigError(f"model_opts: unknown option {key!r} for method {c.method!r}{hint}; "
                              f"allowed: {', '.join(sorted(k for k in allowed if k != 'drop_path'))}")
    _check_model_builds(c)
    return c


def _check_model_builds(c: RunConfig) -> None:
    """Option values (e.g. a DLA cell name) are checked by building the model on the meta device: no memory."""
    key = (c.method, c.backbone, c.depth, c.block, json.dumps(c.model_opts, sort_keys=True, default=str))
    error = _model_build_error(key)
    if error:
        raise ConfigError(f"model_opts: {error}")


@functools.lru_cache(maxsize=256)
def _model_build_error(key: tuple) -> str | None:
    """Cached per model: a grid's seeds and data sets share one check."""
    import torch

    from .models import build_model

    method, backbone, depth, block, opts = key
    try:
        with torch.device("meta"):
            build_model(method, backbone, depth, 10, block, **json.loads(opts))
    except ValueError as e:
        return str(e)
    return None
