"""One run, start to finish: data, model, SGD recipe, eval, checkpoint/resume, measurement, the record.

    python -m lai_bench.train --method dla_l --depth 164 --dataset cifar100 --recipe cifar --out results/manual
    torchrun --nproc-per-node 4 -m lai_bench.train ...     # the same run, data-parallel over 4 GPUs

One process or N (DistributedDataParallel; see distributed.py for where the world comes from): `batch_size` is the
global batch, split evenly over the processes; every process resumes from the same checkpoint; only rank 0 logs,
writes checkpoints and the record.
"""
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .config import RECIPE_FIELDS, RECIPES, ConfigError, RunConfig, effective_lr, split_batch, validate
from .data import DatasetInfo, build_loaders
from .devices import amp_dtype, autocast, resolve_device
from .distributed import World, describe, is_main, joined
from .files import atomic_open
from .models import build_model
from .results import write_record

CHECKPOINT_VERSION = 1


class Interrupted(Exception):
    """The run was asked to stop (SIGTERM/SIGUSR1, preemption); a checkpoint has been written."""


@dataclass
class Progress:
    """Where a run stands: enough to resume it exactly."""

    epoch: int = 0  # epochs completed
    step: int = 0  # steps completed within the current epoch
    history: list[dict[str, float]] = field(default_factory=list)
    train_sums: dict[str, float] = field(default_factory=lambda: {"loss": 0.0, "correct": 0.0, "n": 0.0})
    elapsed_s: float = 0.0
    rng_state: torch.Tensor | None = None  # set when resuming mid-epoch


@dataclass
class Trained:
    """A run that reached its last epoch: what the final measurement and record need."""

    model: torch.nn.Module
    info: DatasetInfo
    progress: Progress


TRAIN_SUM_KEYS = ("loss", "correct", "n")


def epoch_seed(seed: int, epoch: int, what: str) -> int:
    """Seeds derived from (seed, epoch): an epoch's randomness does not depend on how the run got there."""
    return (seed * 1_000_003 + epoch * 7_919 + sum(map(ord, what)) * 104_729) % (2**63 - 1)


def model_stream(seed: int, epoch: int, rank: int) -> int:
    """Seed of a process's model randomness (drop-path) in `epoch`: rank 0 keeps the one-process stream; other ranks
    get their own, else sample i of every shard would draw the same drop-path mask."""
    return epoch_seed(seed, epoch, "model" if rank == 0 else f"model-rank{rank}")


def learning_rate(c: RunConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then step decay at the milestone epochs or per-iteration cosine (peak: `effective_lr`)."""
    lr = effective_lr(c)
    progress = epoch + step / steps_per_epoch
    if progress < c.warmup_epochs:
        return lr * (epoch * steps_per_epoch + step + 1) / (c.warmup_epochs * steps_per_epoch)
    if c.schedule == "cosine":
        span = max(c.epochs - c.warmup_epochs, 1e-8)
        return 0.5 * lr * (1 + math.cos(math.pi * (progress - c.warmup_epochs) / span))
    return lr * c.gamma ** sum(epoch >= m for m in c.milestones)


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


def to_device(x, y, c: RunConfig, device: torch.device):
    x = x.to(device, non_blocking=True)
    if device.type == "cuda" and c.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file beside `path`, then rename: a kill never leaves half a checkpoint."""
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads, {socket.gethostname()})"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StopFlag:
    """Set by SIGTERM/SIGUSR1 (CLI runs) or by a launcher; checked between steps.

    `signals`: what `install` hooks; a launcher that sets the flag itself passes none.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGUSR1)) -> None:
        self.requested = False
        self.signals = signals

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                signal.signal(sig, lambda *_: setattr(self, "requested", True))


class Run:
    """One configured run; `run()` trains (or resumes) to the end and writes the record.

    Called in each of a run's N processes (torchrun, or a submitit job with N tasks) it trains one model with
    DistributedDataParallel; every process returns the record, rank 0 alone writes it.
    """

    def __init__(self, config: RunConfig, out_dir: os.PathLike = "results/manual",
                 checkpoint_dir: os.PathLike | None = None, grid: str | None = None,
                 log: Callable[[str], None] = print, stop: StopFlag | None = None) -> None:
        self.config = validate(config)
        self.run_id = self.config.run_id()
        self.out_dir = Path(out_dir)
        self.record_path = self.out_dir / f"{self.run_id}.json"
        self.checkpoint_path = Path(checkpoint_dir or self.out_dir / "checkpoints") / f"{self.run_id}.pt"
        self.grid = grid
        self.log = log
        self.stop = stop or StopFlag()
        self.started_at = now()
        self.world = World(device=resolve_device(self.config.device))  # until run() joins the real one
        self.net: torch.nn.Module | None = None  # what training steps call: DDP or the model, while training
        self.compile_s: float | None = None  # seconds the first compiled step took beyond the second

    def say(self, text: str) -> None:
        """Log from rank 0 only: N processes would print every line N times."""
        if self.world.is_main:
            self.log(text)

    # -- the record -------------------------------------------------------------------------------
    def record(self, status: str, progress: Progress, **extra) -> dict[str, Any]:
        history = progress.history
        top1 = [h["eval_top1"] for h in history]
        best = max(range(len(top1)), key=top1.__getitem__) if top1 else None
        metrics = {}
        if history:
            metrics = {"top1_final": top1[-1], "top1_best": top1[best], "top5_final": history[-1]["eval_top5"],
                       "top5_best": max(h["eval_top5"] for h in history), "best_epoch": history[best]["epoch"],
                       "train_loss_final": history[-1]["train_loss"]}
        c, world = self.config, self.world
        return {
            "run_id": self.run_id, "name": c.name(), "grid": self.grid, "status": status,
            "error": extra.pop("error", None), "diverged_epoch": extra.pop("diverged_epoch", None),
            "config": c.to_dict(), "metrics": metrics, "history": history,
            "epochs_completed": progress.epoch,
            "wall_time_s": progress.elapsed_s, "code_version": git_commit(), "torch_version": torch.__version__,
            "device": device_name(world.device), "hostname": socket.gethostname(),
            **describe(world), "global_batch_size": c.batch_size,
            "batch_per_process": c.batch_size // world.size if c.batch_size % world.size == 0 else None,
            "lr_effective": effective_lr(c), "compile_s": self.compile_s,
            "started_at": self.started_at, "finished_at": now() if status != "running" else None,
            **extra,
        }

    def write(self, record: dict[str, Any]) -> None:
        write_record(self.record_path, record, overwrite=False)

    # -- training ---------------------------------------------------------------------------------
    def run(self, resume: bool = True) -> dict[str, Any]:
        """Train to the end (resuming from the checkpoint if any) and return the written record."""
        progress = Progress()
        try:
            with joined(self.config.device) as world:
                self.world = world
                trained = self._train(progress, resume)
            if isinstance(trained, dict):  # diverged, already recorded
                return trained
            # Measured outside the process group: a SyncBatchNorm model then runs as plain BatchNorm on rank 0
            # alone, where inside the group its training steps would wait for the other ranks.
            measured = self._measure(trained.model, trained.info) if world.is_main else {}
            record = self.record("completed", trained.progress, **measured)
            if world.is_main:
                self.write(record)
            return record
        except Interrupted:
            raise
        except Exception as exc:  # recorded, then re-raised so a launcher sees the failure too
            if is_main():
                self.write(self.record("failed", progress, error=traceback.format_exc()))
            raise exc

    def _check_world(self, world: World) -> int:
        """The per-process batch; one clear error for what cannot run on this world."""
        c = self.config
        if c.sync_bn and world.size > 1 and world.device.type != "cuda":
            # torch.nn.SyncBatchNorm rejects CPU tensors (checked with torch 2.13 and gloo).
            raise ConfigError(f"sync_bn needs CUDA devices: torch.nn.SyncBatchNorm does not run on {world.device} "
                              f"with {world.size} processes; allowed on CPU: sync_bn false")
        return split_batch(c.batch_size, world.size)

    def _train(self, progress: Progress, resume: bool) -> Trained | dict[str, Any]:
        c, world = self.config, self.world
        device = world.device
        batch = self._check_world(world)
        eval_batch = -(-c.eval_batch_size // world.size)  # only speed depends on it: round up, no error
        torch.manual_seed(c.seed)
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        train_loader, eval_loader, info = build_loaders(
            c.dataset, batch, eval_batch, data_root=c.data_root, download=c.download,
            workers=c.workers, seed=c.seed, device=str(device), synthetic=c.synthetic or None,
            gpu_resident=c.gpu_resident, distributed=world.size > 1, num_replicas=world.size, rank=world.rank)
        model = build_model(c.method, c.backbone, c.depth, info.num_classes, c.block,
                            zero_init_residual=c.zero_init_residual, drop_path=c.drop_path, **c.model_opts)
        if c.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(device)
        if device.type == "cuda" and c.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=effective_lr(c), momentum=c.momentum,
                                    weight_decay=c.weight_decay, nesterov=c.nesterov)
        scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and c.amp == "fp16")
        # Rank 0 decides, so that all ranks resume, or none does.
        if resume and world.broadcast(self.checkpoint_path.exists()):
            progress = self._load_checkpoint(model, optimizer, scaler, device)
            self.say(f"[{c.name()}] resumed from {self.checkpoint_path} at epoch {progress.epoch} "
                     f"step {progress.step}" + (f" ({world.size} processes)" if world.size > 1 else ""))
        steps = len(train_loader) if c.max_steps_per_epoch is None else min(len(train_loader), c.max_steps_per_epoch)
        if steps == 0:
            raise ValueError(f"the train set ({info.train_size} samples) is smaller than one batch ({c.batch_size})")
        self.stop.install()
        t_start = time.perf_counter() - progress.elapsed_s
        self.net = self._parallel(model)
        if c.compile:
            self.net = torch.compile(self.net)
        try:
            while progress.epoch < c.epochs:
                diverged = self._train_epoch(model, optimizer, scaler, train_loader, steps, progress, t_start)
                if diverged:
                    self.say(f"[{c.name()}] diverged (non-finite loss) in epoch {progress.epoch + 1}")
                    record = self.record("diverged", progress, diverged_epoch=progress.epoch + 1)
                    if world.is_main:
                        self.write(record)
                    return record
                loss, correct, n = world.sum([progress.train_sums[k] for k in TRAIN_SUM_KEYS])
                entry = {"epoch": progress.epoch + 1, "train_loss": loss / n, "train_top1": 100.0 * correct / n,
                         "lr": learning_rate(c, progress.epoch, 0, steps)}
                world.broadcast_buffers(model)
                entry.update(evaluate(model, eval_loader, c, device, world))
                progress.epoch, progress.step = progress.epoch + 1, 0
                progress.train_sums = dict.fromkeys(TRAIN_SUM_KEYS, 0.0)
                progress.elapsed_s = time.perf_counter() - t_start
                entry["time_s"] = progress.elapsed_s
                progress.history.append(entry)
                self._save_checkpoint(model, optimizer, scaler, progress)
                self.say(f"[{c.name()}] epoch {entry['epoch']}/{c.epochs} train_loss {entry['train_loss']:.4f} "
                         f"train_top1 {entry['train_top1']:.2f} eval_top1 {entry['eval_top1']:.2f} "
                         f"lr {entry['lr']:.4g} ({entry['time_s']:.0f}s)")
                if world.is_main:
                    self.write(self.record("running", progress))
        finally:
            # The DDP wrapper holds the process group, so it must go before `joined` destroys the group: a DDP
            # outliving its gloo group hung its process when finally collected (torch 2.13). On an exception the
            # traceback keeps every frame's locals alive, hence `self.net` and no local reference anywhere.
            self.net = None
        return Trained(model, info, progress)

    def _parallel(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the training steps call: DDP over the process group, or the model itself."""
        world = self.world
        if world.size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        # static_graph: some configurations leave parameters unused in every step (DLA-B with one block per stage
        # never calls its DSU's hidden projection); DDP learns that set once instead of searching every step.
        return DistributedDataParallel(model, device_ids=[world.device.index] if world.device.type == "cuda" else None,
                                       static_graph=True)

    def _train_epoch(self, model, optimizer, scaler, loader, steps: int, progress: Progress, t_start: float) -> bool:
        """Train one epoch from `progress.step`; returns True if the loss diverged (on any rank)."""
        c, world = self.config, self.world
        start_loader_epoch(loader, c.seed, progress.epoch)
        rng_state = progress.rng_state
        torch.manual_seed(model_stream(c.seed, progress.epoch, world.rank))
        self.net.train()
        batches = iter(loader)
        for _ in range(progress.step):  # mid-epoch resume: replay the loader to the same position
            next(batches)
        if rng_state is not None:
            torch.set_rng_state(rng_state)
            progress.rng_state = None
        bar = make_bar(steps, progress, c) if world.is_main else None
        step_times: list[float] = []
        for step in range(progress.step, steps):
            t_step = time.perf_counter()
            x, y = to_device(*next(batches), c, world.device)
            lr = learning_rate(c, progress.epoch, step, steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(world.device, amp_dtype(c.amp, world.device)):
                logits = self.net(x)
                loss = F.cross_entropy(logits, y, label_smoothing=c.label_smoothing)
            # One all-reduce decides both for every rank: a rank that returned or stopped alone would leave the
            # others waiting in the gradient all-reduce.
            diverged, stop = world.any(not torch.isfinite(loss), self.stop.requested)
            if diverged:
                return True
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            sums = progress.train_sums
            sums["loss"] += float(loss.detach()) * y.shape[0]
            sums["correct"] += topk_correct(logits.detach(), y, ks=(1,))[0]
            sums["n"] += y.shape[0]
            progress.step = step + 1
            if c.compile and self.compile_s is None and len(step_times) < 2:
                step_times.append(time.perf_counter() - t_step)
                if len(step_times) == 2:  # the first step compiled, the second ran the compiled code
                    self.compile_s = max(step_times[0] - step_times[1], 0.0)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.3f}", lr=f"{lr:.3g}")
            if stop:
                progress.elapsed_s = time.perf_counter() - t_start
                self._save_checkpoint(model, optimizer, scaler, progress)
                self.say(f"[{c.name()}] stop requested: checkpoint at epoch {progress.epoch} step {progress.step}")
                raise Interrupted(str(self.checkpoint_path))
        if bar is not None:
            bar.close()
        return False

    def _measure(self, model, info) -> dict[str, Any]:
        """Params, FLOPs (fvcore, batch 1, eval), throughput and peak memory, for the record.

        Throughput is measured at the per-process batch: what one device runs.
        """
        from .measure import count_flops, count_params, measure_model

        c, device = self.config, self.world.device
        batch = c.batch_size // self.world.size
        size = (3, info.image_size, info.image_size)
        out: dict[str, Any] = {"params": count_params(model)}
        flops = count_flops(model, size)
        out.update(flops=flops.total, flops_unsupported=flops.unsupported)
        if c.measure:
            m = measure_model(model, size, info.num_classes, device, batch_size=batch,
                              steps=c.measure_steps, warmup=2, amp_dtype=amp_dtype(c.amp, device),
                              channels_last=device.type == "cuda" and c.channels_last, compile=c.compile)
            out["throughput"] = {"train_samples_per_s": m["train_samples_per_s"],
                                 "infer_samples_per_s": m["infer_samples_per_s"],
                                 "train_step_time_s": m["train_step_time_s"],
                                 "infer_step_time_s": m["infer_step_time_s"], "batch_size": batch}
            out.update(peak_memory_bytes=m["peak_memory_bytes"], peak_memory_kind=m["peak_memory_kind"])
        return out

    # -- checkpoints ------------------------------------------------------------------------------
    def _save_checkpoint(self, model, optimizer, scaler, progress: Progress) -> None:
        """Rank 0 writes; every rank calls it (the sums and RNG states are gathered) and waits until it is on disk."""
        world = self.world
        sums = dict(zip(TRAIN_SUM_KEYS, world.sum([progress.train_sums[k] for k in TRAIN_SUM_KEYS])))
        rng_states = world.gather(torch.get_rng_state())
        if world.is_main:
            save_atomic({"version": CHECKPOINT_VERSION, "run_id": self.run_id, "model": model.state_dict(),
                         "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                         "epoch": progress.epoch, "step": progress.step, "history": progress.history,
                         "train_sums": sums, "elapsed_s": progress.elapsed_s, "world_size": world.size,
                         "rng_state": rng_states[0], "rng_states": rng_states, "started_at": self.started_at},
                        self.checkpoint_path)
        world.barrier()

    def _load_checkpoint(self, model, optimizer, scaler, device: torch.device) -> Progress:
        """Every rank loads the same file; rank 0 takes the epoch's partial train sums (they are global)."""
        world = self.world
        ckpt = torch.load(self.checkpoint_path, map_location=device, weights_only=False)
        if ckpt.get("run_id") != self.run_id:
            raise ValueError(f"{self.checkpoint_path} belongs to run {ckpt.get('run_id')}, not {self.run_id}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        self.started_at = ckpt.get("started_at", self.started_at)
        sums = ckpt["train_sums"] if world.is_main else dict.fromkeys(TRAIN_SUM_KEYS, 0.0)
        progress = Progress(ckpt["epoch"], ckpt["step"], ckpt["history"], sums, ckpt["elapsed_s"])
        if progress.step:  # mid-epoch: continue the interrupted epoch's random stream
            states = ckpt.get("rng_states") or [ckpt["rng_state"]]
            if len(states) == world.size:
                progress.rng_state = states[world.rank].cpu()  # map_location may have moved it to the GPU
            else:  # the data still resumes exactly (the batch is global); only drop-path draws differ
                self.say(f"[{self.config.name()}] checkpoint of {len(states)} process(es) resumed mid-epoch on "
                         f"{world.size}: the rest of epoch {progress.epoch + 1} draws new drop-path masks")
        return progress


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


FIELD_HELP = {
    "method": "layer-interaction method (see lai_bench.models.list_models())",
    "backbone": "cifar | imagenet stem",
    "depth": "ResNet depth (CIFAR: basic 6n+2, bottleneck 9n+2; ImageNet: 10/14/18/26/34/50/101/152)",
    "block": "basic | bottleneck (default: from the depth)",
    "dataset": "cifar10 | cifar100 | imagenet | synthetic",
    "data_root": "folder holding cifar-10-batches-py / cifar-100-python / imagenet train,val",
    "download": "download CIFAR into data_root if missing (off by default: clusters have no internet)",
    "seed": "seed of init, data order and augmentation",
    "recipe": "base recipe: " + ", ".join(RECIPES),
    "batch_size": "global batch: all processes together, split evenly over them; recipe value if unset",
    "eval_batch_size": "global eval batch (speed only; rounded up per process); recipe value if unset",
    "sync_bn": "BatchNorm statistics over the global batch (torch SyncBatchNorm: CUDA only); off, as in the papers",
    "lr_scaling": "none: use lr as given | linear: lr x batch_size / the recipe's batch_size (cifar 128, imagenet 256)",
    "max_steps_per_epoch": "cap the steps of every epoch (smoke runs)",
    "max_eval_batches": "cap the eval batches of each process (smoke runs)",
    "amp": "autocast dtype on CUDA: bf16 | fp16 | none (CPU runs fp32)",
    "channels_last": "channels_last memory format on CUDA",
    "device": "auto | cpu | cuda | cuda:N",
    "workers": "data loader workers (default: 0 on CPU, min(8, cpus) on GPU)",
    "gpu_resident": "CIFAR only: keep the whole set on the device and augment there (no CPU loader; meant for CUDA)",
    "compile": "torch.compile the training step's forward and backward (the first step compiles; eval stays eager)",
    "measure": "measure throughput and peak memory at the end",
    "measure_steps": "timed steps of the throughput measurement",
}


def parse_value(text: str) -> Any:
    """Command-line values as YAML scalars/lists: 0.1, true, [100, 150], dsu."""
    import yaml

    return yaml.safe_load(text)


def parse_pairs(pairs: list[str], flag: str) -> dict[str, Any]:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag} expects KEY=VALUE, got {pair!r}")
        out[key] = parse_value(value)
    return out


def build_parser():
    import argparse
    from dataclasses import fields

    parser = argparse.ArgumentParser(
        prog="python -m lai_bench.train",
        description="Train and evaluate one run; write its JSON record. Under torchrun (or in a submitit job with "
                    "several tasks) the run is data-parallel over the processes: gloo on CPU, nccl on GPUs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    recipe_help = "; recipe value if unset"
    for f in fields(RunConfig):
        if f.name in ("model_opts", "synthetic"):
            continue
        default = None if f.name in RECIPE_FIELDS else f.default
        help_text = FIELD_HELP.get(f.name, f.name.replace("_", " ") + (recipe_help if f.name in RECIPE_FIELDS else ""))
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, bool | None):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=parse_value, default=default, help=help_text)
    parser.add_argument("--opt", action="append", metavar="KEY=VALUE",
                        help="method option, e.g. --opt cell=gru --opt forward_path=false (repeatable)")
    parser.add_argument("--synthetic", action="append", metavar="KEY=VALUE",
                        help="synthetic data option: num_classes, image_size, train_size, eval_size (repeatable)")
    parser.add_argument("--out", default="results/manual", help="folder of the run record <run_id>.json")
    parser.add_argument("--checkpoint-dir", default=None, help="checkpoint folder (default: OUT/checkpoints)")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint and start over")
    return parser


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError, config_from_dict
    from .results import read_record

    args = build_parser().parse_args(argv)
    cli_only = ("opt", "synthetic", "out", "checkpoint_dir", "no_resume")
    values = {k: v for k, v in vars(args).items() if k not in cli_only}
    values["model_opts"] = parse_pairs(args.opt, "--opt")
    values["synthetic"] = parse_pairs(args.synthetic, "--synthetic")
    try:
        run = Run(config_from_dict(values), args.out, args.checkpoint_dir)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    say = print if is_main() else (lambda *a, **k: None)  # under torchrun: one copy of each line
    if run.record_path.exists() and read_record(run.record_path).get("status") == "completed":
        say(f"{run.record_path}: this run is already completed (delete the record to run it again)")
        return 0
    say(f"run {run.run_id} ({run.config.name()}) -> {run.record_path}", flush=True)
    try:
        record = run.run(resume=not args.no_resume)
    except Interrupted as e:
        say(f"interrupted; resume with the same command (checkpoint {e})", file=sys.stderr)
        return 143
    except Exception as e:  # the record holds the traceback
        print(f"failed: {type(e).__name__}: {e} (traceback in {run.record_path})", file=sys.stderr)
        return 1
    m = record["metrics"]
    final, best = m.get("top1_final", float("nan")), m.get("top1_best", float("nan"))
    say(f"{record['status']}: top1 final {final:.2f} best {best:.2f} "
        f"-> {run.record_path}")
    return 0 if record["status"] == "completed" else 3


if __name__ == "__main__":
    sys.exit(main())
