"""The training loop's pieces, the same for every task: where a run stands, seeds, the lr schedule, one epoch.

What a step computes (the batch, the forward pass, the loss and what it adds up) comes from the run's task
(lai_bench.tasks); everything around it is here.
"""
import functools
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import WARMUP_ITERS_START, RunConfig, effective_lr
from ..core.devices import amp_dtype, autocast
from .distributed import World

# How `train_one_epoch` ends.
DONE, STOPPED, DIVERGED = "done", "stopped", "diverged"


@dataclass
class Progress:
    """Where a run stands: enough to resume it exactly."""

    epoch: int = 0  # epochs completed
    step: int = 0  # steps completed within the current epoch
    history: list[dict[str, float]] = field(default_factory=list)
    train_sums: dict[str, float] = field(default_factory=dict)  # the task's per-step sums over the current epoch
    elapsed_s: float = 0.0
    rng_state: torch.Tensor | None = None  # set when resuming mid-epoch


def epoch_seed(seed: int, epoch: int, what: str) -> int:
    """Seeds derived from (seed, epoch): an epoch's randomness does not depend on how the run got there."""
    return (seed * 1_000_003 + epoch * 7_919 + sum(map(ord, what)) * 104_729) % (2**63 - 1)


def model_stream(seed: int, epoch: int, rank: int) -> int:
    """Seed of a process's model randomness (drop-path) in `epoch`: rank 0 keeps the one-process stream; other ranks
    get their own, else sample i of every shard would draw the same drop-path mask."""
    return epoch_seed(seed, epoch, "model" if rank == 0 else f"model-rank{rank}")


def build_optimizer(c: RunConfig, model: torch.nn.Module, trainable: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The run's optimizer over `trainable` at the peak lr: SGD as the CNN papers, or AdamW through timm's factory
    (eps 1e-8; no weight decay on parameters of ndim <= 1 nor on the model's `no_weight_decay()` names)."""
    if c.optimizer == "sgd":
        return torch.optim.SGD(trainable, lr=effective_lr(c), momentum=c.momentum, weight_decay=c.weight_decay,
                               nesterov=c.nesterov)
    from timm.optim import param_groups_weight_decay

    if {id(p) for p in trainable} != {id(p) for p in model.parameters() if p.requires_grad}:
        raise ValueError("adamw: the trainable parameters must be those with requires_grad (timm's grouping)")
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    groups = param_groups_weight_decay(model, c.weight_decay, no_weight_decay_list=skip)
    return torch.optim.AdamW(groups, lr=effective_lr(c), eps=1e-8)


@functools.lru_cache(maxsize=16)
def timm_cosine(lr: float, epochs: int, min_lr: float, warmup_epochs: int, warmup_lr: float):
    """timm's CosineLRScheduler as DeiT's main.py builds it (one cycle over the epochs, stepped per epoch), over a
    stand-in optimizer at the peak lr: only its lr at an epoch is read."""
    from timm.scheduler import CosineLRScheduler

    holder = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    return CosineLRScheduler(holder, t_initial=epochs, lr_min=min_lr, warmup_t=warmup_epochs,
                             warmup_lr_init=warmup_lr, cycle_limit=1, t_in_epochs=True)


def learning_rate(c: RunConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then step decay at the milestone epochs or per-iteration cosine (peak: `effective_lr`); or
    `cosine_epoch`, timm's cosine scheduler stepped per epoch (its own warm-up from `warmup_lr`), as DeiT.

    Warm-up over `warmup_epochs` rises from lr/steps to lr; over `warmup_iters` (mmdetection's) it rises from
    WARMUP_ITERS_START x the scheduled lr, linearly in the iteration, and scales the step schedule.
    """
    lr = effective_lr(c)
    if c.schedule == "cosine_epoch":
        scheduler = timm_cosine(lr, c.epochs, c.min_lr, c.warmup_epochs, c.warmup_lr)
        scheduler.step(epoch)  # sets the stand-in's lr to the epoch's, as DeiT's per-epoch call does
        return float(scheduler.optimizer.param_groups[0]["lr"])
    progress = epoch + step / steps_per_epoch
    if progress < c.warmup_epochs:
        return lr * (epoch * steps_per_epoch + step + 1) / (c.warmup_epochs * steps_per_epoch)
    if c.schedule == "cosine":
        span = max(c.epochs - c.warmup_epochs, 1e-8)
        return c.min_lr + 0.5 * (lr - c.min_lr) * (1 + math.cos(math.pi * (progress - c.warmup_epochs) / span))
    lr *= c.gamma ** sum(epoch >= m for m in c.milestones)
    iteration = epoch * steps_per_epoch + step
    if iteration < c.warmup_iters:
        lr *= 1 - (1 - iteration / c.warmup_iters) * (1 - WARMUP_ITERS_START)
    return lr


def start_loader_epoch(loader, seed: int, epoch: int) -> None:
    """Re-seed the loader for `epoch`: its order then does not depend on how many epochs this process ran."""
    for obj in (loader, getattr(loader, "sampler", None)):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)
    generator = getattr(loader, "generator", None)
    if generator is not None:
        generator.manual_seed(epoch_seed(seed, epoch, "loader"))


def make_bar(steps: int, progress: Progress, c: RunConfig):
    """A tqdm bar per epoch on a terminal; None otherwise (Slurm logs get one line per epoch)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=steps, initial=progress.step, desc=f"{c.name()} epoch {progress.epoch + 1}/{c.epochs}",
                leave=False, dynamic_ncols=True)


def train_one_epoch(task, net: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    loader, steps: int, progress: Progress, c: RunConfig, world: World, stop: Any,
                    step_times: list[float] | None = None, after_step: Callable[[], None] | None = None) -> str:
    """Train from `progress.step` to the end of the epoch: DONE, STOPPED (after a step, `stop.requested` on any rank)
    or DIVERGED (a non-finite loss on any rank, before its step).

    `task` computes each step's loss and sums (added to `progress.train_sums`); `progress.step` follows the steps.
    `step_times`, when given, receives the wall time of the epoch's first two steps; `after_step` runs after every
    optimizer step (the model EMA's update).
    """
    start_loader_epoch(loader, c.seed, progress.epoch)
    rng_state = progress.rng_state
    torch.manual_seed(model_stream(c.seed, progress.epoch, world.rank))
    net.train()
    batches = iter(loader)
    for _ in range(progress.step):  # mid-epoch resume: replay the loader to the same position
        next(batches)
    if rng_state is not None:
        torch.set_rng_state(rng_state)
        progress.rng_state = None
    bar = make_bar(steps, progress, c) if world.is_main else None
    try:
        for step in range(progress.step, steps):
            t_step = time.perf_counter()
            task.seed_step(progress.epoch, step, world.rank)
            batch = task.to_device(next(batches), world.device)
            lr = learning_rate(c, progress.epoch, step, steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(world.device, amp_dtype(c.amp, world.device)):
                loss, sums = task.step(net, batch)
            # One all-reduce decides both for every rank: a rank that returned or stopped alone would leave the
            # others waiting in the gradient all-reduce.
            diverged, stop_now = world.any(not torch.isfinite(loss), stop.requested)
            if diverged:
                return DIVERGED
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if task.grad_clip_norm is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(task.trainable(net), task.grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
            if after_step is not None:
                after_step()
            for key, value in sums.items():
                progress.train_sums[key] += value
            progress.step = step + 1
            if step_times is not None and len(step_times) < 2:
                step_times.append(time.perf_counter() - t_step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.3f}", lr=f"{lr:.3g}")
            if stop_now:
                return STOPPED
        return DONE
    finally:
        if bar is not None:
            bar.close()
