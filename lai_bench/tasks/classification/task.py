"""Image classification (CIFAR, ImageNet, synthetic): cross-entropy training, top-1/top-5 evaluation."""
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...config import ConfigError, RunConfig, id_neutral
from ...core.devices import amp_dtype, autocast
from ...data import GPU_RESIDENT, DatasetInfo, build_loaders, check_available, dataset_info
from ...data.augment import Augment, check_auto_augment
from ...models import backbone_info, build_model, list_backbones, load_pretrained
from ...records.contents import measure_run
from ...runtime.distributed import World
from ...runtime.engine import epoch_seed
from ..base import DataSet, Task
from ..registry import register_task
from .notes import final_notes
from .report import FIGURE_FILES, TABLE_FILES, classification_report

# Every run was classification before tasks existed: those runs' ids leave `task` out, so these do too.
id_neutral("task", "classification")


def _files(config: RunConfig) -> None:
    check_available(config.dataset, config.data_root, config.download)


DATASETS = (
    DataSet("synthetic", "learnable synthetic images, built from the seed (options: synthetic.num_classes, "
            "image_size, train_size, eval_size, seed, noise); no files", synthetic=True, title="Synthetic"),
    DataSet("cifar10", "CIFAR-10, torchvision's files: DATA_ROOT/cifar-10-batches-py (download: true fetches them)",
            _files, title="CIFAR-10"),
    DataSet("cifar100", "CIFAR-100, torchvision's files: DATA_ROOT/cifar-100-python (download: true fetches them)",
            _files, title="CIFAR-100"),
    DataSet("imagenet", "ILSVRC-2012 (or any ImageFolder tree): DATA_ROOT/train/<class>/*.JPEG and DATA_ROOT/val",
            _files, title="ImageNet", input_size=224),
)


def to_device(x: torch.Tensor, y: torch.Tensor, c: RunConfig, device: torch.device):
    x = x.to(device, non_blocking=True)
    if device.type == "cuda" and c.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> list[int]:
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top.eq(targets[:, None])
    return [int(hits[:, :k].any(1).sum()) for k in ks]


@torch.no_grad()
def evaluate(model, loader, c: RunConfig, device: torch.device, world: World = World()) -> dict[str, float]:
    """Top-1/top-5 (%) and loss over the eval set; counts are summed so every sample weighs the same.

    With several processes each evaluates its shard (every sample on exactly one rank, shards may differ by one)
    and the sums are added across ranks. `model` is the bare module, not the DDP wrapper: DDP's forward would
    broadcast buffers, a collective that hangs when one rank has an extra batch.
    """
    model.eval()
    correct1 = correct5 = n = 0
    loss = 0.0
    for i, (x, y) in enumerate(loader):
        if c.max_eval_batches is not None and i >= c.max_eval_batches:
            break
        x, y = to_device(x, y, c, device)
        with autocast(device, amp_dtype(c.amp, device)):
            logits = model(x)
        loss += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        c1, c5 = topk_correct(logits, y)
        correct1, correct5, n = correct1 + c1, correct5 + c5, n + y.shape[0]
    loss, correct1, correct5, n = world.sum([loss, correct1, correct5, n])
    return {"eval_loss": loss / n, "eval_top1": 100.0 * correct1 / n, "eval_top5": 100.0 * correct5 / n,
            "eval_samples": int(n)}


@register_task("classification", default=True)
class ClassificationTask(Task):
    """The ResNet + layer-interaction models on CIFAR/ImageNet/synthetic images, trained with cross-entropy."""

    headline_metric, headline_label = "top1", "top-1 %"
    sum_keys = ("loss", "correct", "n")
    datasets = DATASETS
    controls = True
    final_notes = classmethod(final_notes)
    report = classmethod(classification_report)
    report_files = {"tables": TABLE_FILES, "figures": FIGURE_FILES}

    @classmethod
    def bench_check(cls, args: Any) -> None:
        problem = cls._not_images(args.backbone) if args.backbone is not None else None
        if problem:
            raise ValueError(f"--backbone {args.backbone}: {problem}")

    @classmethod
    def _not_images(cls, backbone: str) -> str | None:
        """One line when `backbone`'s model is not fed images (a causal decoder takes tokens); None when it is."""
        if backbone_info(backbone).inputs == "images":
            return None
        allowed = [b for b in list_backbones() if backbone_info(b).inputs == "images"]
        return (f"task {cls.name} trains on images; backbone {backbone} takes {backbone_info(backbone).inputs} "
                f"(allowed: {', '.join(allowed)})")

    @classmethod
    def shrink(cls, quick: RunConfig, original: RunConfig, processes: int, steps: int) -> int:
        """Synthetic images of the original's classes and image size, `steps` batches of 4 a process."""
        batch = 4 * processes
        info = dataset_info(original.dataset, data_root=original.data_root, synthetic=original.synthetic or None)
        quick.dataset, quick.download = DATASETS[0].name, False
        quick.synthetic = {"num_classes": info.num_classes, "image_size": info.image_size,
                           "train_size": batch * steps, "eval_size": batch}
        return batch

    @classmethod
    def check_config(cls, config: RunConfig) -> None:
        problem = cls._not_images(config.backbone)
        if problem:
            raise ConfigError(problem)
        if config.gpu_resident and config.dataset not in GPU_RESIDENT:
            raise ConfigError(f"gpu_resident holds CIFAR on the device; dataset {config.dataset!r} has no such path "
                              f"(allowed with gpu_resident: {', '.join(GPU_RESIDENT)})")
        size = cls.dataset(config.dataset).input_size
        if size is not None and size != backbone_info(config.backbone).input_size:
            allowed = [b for b in list_backbones() if backbone_info(b).input_size == size]
            raise ConfigError(f"dataset {config.dataset} needs a {size}x{size} backbone, not {config.backbone} "
                              f"(allowed: {', '.join(allowed)})")
        if config.auto_augment is not None:
            try:
                check_auto_augment(config.auto_augment)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        if config.mixup or config.cutmix:
            if config.batch_size % 2:
                raise ConfigError(f"mixup/cutmix mix each batch with its reverse and need an even batch; batch_size "
                                  f"{config.batch_size} (allowed: an even batch_size, or mixup 0 and cutmix 0)")

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config)
        self.mixer: Any = None  # timm's Mixup (built with the data: it needs the number of classes)

    def build_data(self, world: World, batch_size: int, eval_batch_size: int) -> tuple[Any, Any, DatasetInfo]:
        c = self.config
        augment = Augment(c.auto_augment, c.interpolation, c.reprob)
        train, evaluate, info = build_loaders(
            c.dataset, batch_size, eval_batch_size, data_root=c.data_root, download=c.download,
            workers=c.workers, seed=c.seed, device=str(world.device), synthetic=c.synthetic or None,
            gpu_resident=c.gpu_resident, distributed=world.size > 1, num_replicas=world.size, rank=world.rank,
            augment=augment, repeats=c.repeated_aug)
        if c.mixup or c.cutmix:
            from timm.data import Mixup

            self.mixer = Mixup(mixup_alpha=c.mixup, cutmix_alpha=c.cutmix, prob=c.mixup_prob,
                               switch_prob=c.mixup_switch_prob, mode="batch", label_smoothing=c.label_smoothing,
                               num_classes=info.num_classes)
        return train, evaluate, info

    def build_model(self, info: DatasetInfo) -> torch.nn.Module:
        """The model; with `pretrained`, a state_dict file's weights by name (fine-tuning; load_pretrained)."""
        c = self.config
        model = build_model(c.method, c.backbone, c.depth, info.num_classes, c.block,
                            zero_init_residual=c.zero_init_residual, drop_path=c.drop_path, **c.model_opts)
        if c.pretrained is not None:
            load_pretrained(model, c.pretrained)
        return model

    def measure(self, model: torch.nn.Module, info: DatasetInfo, world: World) -> dict[str, Any]:
        return measure_run(model, info, self.config, world)

    def to_device(self, batch: Any, device: torch.device) -> Any:
        return to_device(*batch, self.config, device)

    def seed_step(self, epoch: int, step: int, rank: int) -> None:
        """Mixup/CutMix draw from numpy (timm): seeded per step, so a resumed run mixes as the original did."""
        if self.mixer is not None:
            np.random.seed(epoch_seed(self.config.seed, epoch, f"mixup-{step}-{rank}") % 2**32)

    def step(self, net: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy (label smoothing), or with Mixup/CutMix the soft-target loss on the mixed batch (the
        smoothing is in the targets); train top-1 counts against the unmixed labels."""
        x, y = batch
        if self.mixer is None:
            logits = net(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.config.label_smoothing)
        else:
            x, soft = self.mixer(x, y)
            logits = net(x)
            loss = torch.sum(-soft * F.log_softmax(logits, dim=-1), dim=-1).mean()  # timm's SoftTargetCrossEntropy
        n = y.shape[0]
        return loss, {"loss": float(loss.detach()) * n, "correct": topk_correct(logits.detach(), y, ks=(1,))[0],
                      "n": n}

    def train_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return {"train_loss": sums["loss"] / sums["n"], "train_top1": 100.0 * sums["correct"] / sums["n"]}

    def evaluate(self, model: torch.nn.Module, loader: Any, world: World) -> dict[str, float]:
        return evaluate(model, loader, self.config, world.device, world)

    def record_metrics(self, history: list[dict[str, float]]) -> dict[str, Any]:
        if not history:
            return {}
        top1 = [h["eval_top1"] for h in history]
        best = max(range(len(top1)), key=top1.__getitem__)
        metrics = {"top1_final": top1[-1], "top1_best": top1[best], "top5_final": history[-1]["eval_top5"],
                   "top5_best": max(h["eval_top5"] for h in history), "best_epoch": history[best]["epoch"],
                   "train_loss_final": history[-1]["train_loss"]}
        if "ema_eval_top1" in history[-1]:  # the model EMA, evaluated beside the model every epoch
            ema = [h["ema_eval_top1"] for h in history]
            metrics.update(top1_ema_final=ema[-1], top1_ema_best=max(ema), top5_ema_final=history[-1]["ema_eval_top5"])
        return metrics

    def epoch_summary(self, entry: dict[str, float]) -> str:
        ema = f" ema_top1 {entry['ema_eval_top1']:.2f}" if "ema_eval_top1" in entry else ""
        return (f"train_loss {entry['train_loss']:.4f} train_top1 {entry['train_top1']:.2f} "
                f"eval_top1 {entry['eval_top1']:.2f}{ema}")

    def headline(self, metrics: dict[str, Any]) -> str:
        final, best = metrics.get("top1_final", math.nan), metrics.get("top1_best", math.nan)
        return f"top1 final {final:.2f} best {best:.2f}"
