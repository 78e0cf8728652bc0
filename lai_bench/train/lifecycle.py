"""One run, start to finish: its lifecycle (resume, stop, divergence, DDP, progress output, the record) and the CLI.

    python -m lai_bench.train --method dla_l --depth 164 --dataset cifar100 --recipe cifar --out results/manual
    torchrun --nproc-per-node 4 -m lai_bench.train ...     # the same run, data-parallel over 4 GPUs

One process or N (DistributedDataParallel; see distributed.py for where the world comes from): `batch_size` is the
global batch, split evenly over the processes; every process resumes from the same checkpoint; only rank 0 logs,
writes checkpoints and the record.

What the run trains comes from its task (lai_bench.tasks: data, model, loss, evaluation, metrics); the loop's pieces
are in engine.py, the checkpoint in checkpoint.py, the record's contents in record.py.
"""
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError, RunConfig, split_batch
from ..core.devices import cpu_threads, resolve_device
from ..core.files import is_disk_full, with_advice
from ..data import DatasetInfo
from ..records.contents import build_record, now
from ..records.store import write_record
from ..runtime.checkpoint import (
    final_path,
    load_into,
    newest_readable,
    read_checkpoint,
    remove_training_checkpoints,
    save_checkpoint,
    save_weights,
)
from ..runtime.distributed import World, is_main, joined, world_from_env
from ..runtime.engine import DIVERGED, STOPPED, Progress, build_optimizer, learning_rate, train_one_epoch
from ..tasks import Task, task_for
from ..validate import validate
from .claim import claimed

# What a full disk's error adds: the checkpoints already on disk are good, and a rerun resumes from them.
RESUME_ADVICE = "free some space and rerun: the run resumes from its last checkpoint"


class Interrupted(Exception):
    """The run was asked to stop (SIGTERM/SIGUSR1, preemption); a checkpoint has been written."""


class StopFlag:
    """Set by SIGTERM/SIGUSR1 (CLI runs) or by a launcher; checked between steps.

    A context manager: `with StopFlag() as stop:` hooks `signals` on entry and puts the previous handlers back on
    exit (in the main thread; elsewhere signals cannot be hooked and it only holds the flag). Re-entrant: a flag
    entered twice hooks once. `signals`: a launcher that sets the flag itself passes none.
    """

    _saved: tuple[tuple[int, Any], ...] = ()  # (signal, the handler it replaced) while installed
    _depth = 0

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGUSR1)) -> None:
        self.requested = False
        self.signals = signals

    def __enter__(self) -> "StopFlag":
        if self._depth == 0:
            self.install()
        self._depth += 1
        return self

    def __exit__(self, *_: Any) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.restore()

    def _set(self, *_: Any) -> None:
        self.requested = True

    def install(self) -> None:
        """Hook the signals (main thread only), keeping the handlers they replace for `restore`."""
        if threading.current_thread() is threading.main_thread():
            self._saved = tuple((sig, signal.signal(sig, self._set)) for sig in self.signals)

    def restore(self) -> None:
        """Put back the handlers `install` replaced (None: one not set from Python, so the default)."""
        for sig, handler in reversed(self._saved):
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._saved = ()


@dataclass
class Trained:
    """A run that reached its last epoch: what the final measurement and record need."""

    model: torch.nn.Module
    info: DatasetInfo
    progress: Progress


class Run:
    """One configured run; `run()` trains (or resumes) to the end and writes the record.

    Called in each of a run's N processes (torchrun, or a submitit job with N tasks) it trains one model with
    DistributedDataParallel; every process returns the record, rank 0 alone writes it. Its task supplies data,
    model, loss, evaluation and metrics: `task` builds it from the resolved config (lai_bench.tasks.task_for: the
    config's task; a Task subclass works too).

    Checkpoints (checkpoint.py): `<run_id>.pt` and `<run_id>.prev.pt` while training; a corrupt one is set aside
    on resume and the run resumes from the other, or from scratch. A completed run writes `<run_id>.final.pt` (its
    weights), names it in the record's "weights" (relative to the record's folder when inside it, the default
    "checkpoints/<run_id>.final.pt"; absolute otherwise) and deletes its training checkpoints unless the config's
    keep_checkpoints is "all". A failure is recorded (status "failed", its traceback as "error"; for a full disk
    the one line naming the file) and re-raised.
    """

    def __init__(self, config: RunConfig, out_dir: os.PathLike = "results/manual",
                 checkpoint_dir: os.PathLike | None = None, grid: str | None = None,
                 log: Callable[[str], None] = print, stop: StopFlag | None = None,
                 task: Callable[[RunConfig], Task] = task_for) -> None:
        self.config = validate(config)
        self.task = task(self.config)
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
        self.progress = Progress(train_sums=self.task.zero_sums())  # where the run stands: what a failure records
        self.compile_s: float | None = None  # seconds the first compiled step took beyond the second
        self.ema: Any = None  # timm's ModelEmaV3 of the model, when the recipe keeps one (model_ema > 0)

    def say(self, text: str) -> None:
        """Log from rank 0 only: N processes would print every line N times."""
        if self.world.is_main:
            self.log(text)

    # -- the record -------------------------------------------------------------------------------
    def record(self, status: str, progress: Progress, **extra) -> dict[str, Any]:
        return build_record(status, progress, run_id=self.run_id, config=self.config, world=self.world,
                            metrics=self.task.record_metrics(progress.history), grid=self.grid,
                            started_at=self.started_at, compile_s=self.compile_s, **extra)

    def write(self, record: dict[str, Any]) -> None:
        write_record(self.record_path, record, overwrite=False)

    # -- training ---------------------------------------------------------------------------------
    def run(self, resume: bool = True) -> dict[str, Any]:
        """Train to the end (resuming from the checkpoint if any) and return the written record.

        Every rank acts on rank 0's decision, taken before any joins the process group (claim.py): RunBusy at once
        if another live process trains this run, a completed record returned as it is, untrained; else rank 0
        holds the run's lock while they train (a corrupt record is set aside first).
        """
        env = world_from_env()
        name = self.config.name()
        with claimed(self.record_path, env, say=lambda text: self.log(f"[{name}] {text}")) as claim:
            if claim.outcome == "completed":
                if env.is_main:
                    self.log(f"[{name}] {claim.message}")
                return claim.record
            threads = torch.get_num_threads()
            torch.set_num_threads(cpu_threads(self.config.threads, env.local_size, threads))
            try:
                return self._run(resume, claim.store)
            finally:
                torch.set_num_threads(threads)  # in-process callers (tests, notebooks) get their setting back

    def _run(self, resume: bool, store: Any = None) -> dict[str, Any]:
        self.progress = Progress(train_sums=self.task.zero_sums())
        try:
            with joined(self.config.device, store=store) as world:
                self.world = world
                trained = self._train(resume)
            if isinstance(trained, dict):  # diverged, already recorded
                return trained
            return self._complete(trained)
        except Interrupted:
            raise
        except Exception as exc:  # recorded, then re-raised so a launcher sees the failure too
            if not is_disk_full(exc):
                self._record_failure(traceback.format_exc())
                raise
            failure = with_advice(exc, RESUME_ADVICE)
            line = f"{type(failure).__name__}: {failure}"
            self.say(f"[{self.config.name()}] failed: {line}")
            self._record_failure(line)
            raise failure from exc

    def _complete(self, trained: Trained) -> dict[str, Any]:
        """The final weights, the measurement and the completed record; then the training checkpoints go."""
        world, keep = self.world, self.config.keep_checkpoints
        if world.is_main and keep != "none":
            save_weights(final_path(self.checkpoint_path), self.run_id, self.config.to_dict(), trained.progress.epoch,
                         trained.model)
        # Measured outside the process group: a SyncBatchNorm model then runs as plain BatchNorm on rank 0
        # alone, where inside the group its training steps would wait for the other ranks.
        measured = self.task.measure(trained.model, trained.info, world) if world.is_main else {}
        weights = None if keep == "none" else self.weights_ref()
        record = self.record("completed", trained.progress, weights=weights, **measured)
        if world.is_main:
            self.write(record)
            if keep != "all":
                remove_training_checkpoints(self.checkpoint_path)
        return record

    def weights_ref(self) -> str:
        """The final weights' file as the record names it: relative to the record's folder when inside it."""
        path = final_path(self.checkpoint_path)
        try:
            return path.relative_to(self.out_dir).as_posix()
        except ValueError:
            return str(path.resolve())

    def _record_failure(self, error: str) -> None:
        """Rank 0 writes the failed record (the history so far); if even that fails, it says so and goes on."""
        if not is_main():
            return
        try:
            self.write(self.record("failed", self.progress, error=error))
        except OSError as err:
            self.log(f"[{self.config.name()}] the failed record could not be written: {err}")

    def _check_world(self, world: World) -> int:
        """The per-process batch; one clear error for what cannot run on this world."""
        c = self.config
        if c.sync_bn and world.size > 1 and world.device.type != "cuda":
            # torch.nn.SyncBatchNorm rejects CPU tensors (checked with torch 2.13 and gloo).
            raise ConfigError(f"sync_bn needs CUDA devices: torch.nn.SyncBatchNorm does not run on {world.device} "
                              f"with {world.size} processes; allowed on CPU: sync_bn false")
        return split_batch(c.batch_size, world.size)

    def _train(self, resume: bool) -> Trained | dict[str, Any]:
        c, world, task = self.config, self.world, self.task
        batch = self._check_world(world)
        eval_batch = -(-c.eval_batch_size // world.size)  # only speed depends on it: round up, no error
        torch.manual_seed(c.seed)
        if world.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        train_loader, eval_loader, info = task.build_data(world, batch, eval_batch)
        model = self._place(task.build_model(info))
        if c.model_ema:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(model, decay=c.model_ema)  # a copy on the model's device, updated every step
        optimizer = build_optimizer(c, model, task.trainable(model))
        scaler = torch.amp.GradScaler("cuda", enabled=world.device.type == "cuda" and c.amp == "fp16")
        if resume:
            self.progress = self._resume(model, optimizer, scaler) or self.progress
        progress = self.progress
        steps = len(train_loader) if c.max_steps_per_epoch is None else min(len(train_loader), c.max_steps_per_epoch)
        if steps == 0:
            raise ValueError(f"the train set ({info.train_size} samples) is smaller than one batch ({c.batch_size})")
        t_start = time.perf_counter() - progress.elapsed_s
        self.net = self._parallel(model)
        if c.compile:
            self.net = torch.compile(self.net)
        try:
            with self.stop:
                while progress.epoch < c.epochs:
                    if self._train_epoch(model, optimizer, scaler, train_loader, steps, progress, t_start):
                        self.say(f"[{c.name()}] diverged (non-finite loss) in epoch {progress.epoch + 1}")
                        record = self.record("diverged", progress, diverged_epoch=progress.epoch + 1)
                        if world.is_main:
                            self.write(record)
                        return record
                    self._end_epoch(model, optimizer, scaler, eval_loader, steps, progress, t_start)
        finally:
            # The DDP wrapper holds the process group, so it must go before `joined` destroys the group: a DDP
            # outliving its gloo group hung its process when finally collected (torch 2.13). On an exception the
            # traceback keeps every frame's locals alive, hence `self.net` and no local reference anywhere.
            self.net = None
        return Trained(model, info, progress)

    def _place(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model on this process's device (SyncBatchNorm and channels_last as configured)."""
        c, device = self.config, self.world.device
        if c.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(device)
        if device.type == "cuda" and c.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

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
        """Train one epoch from `progress.step`; returns True if the loss diverged (on any rank).

        A stop request checkpoints after the step all ranks agree on and raises Interrupted.
        """
        c = self.config
        step_times: list[float] | None = [] if c.compile and self.compile_s is None else None
        after_step = None if self.ema is None else (lambda: self.ema.update(model))
        outcome = train_one_epoch(self.task, self.net, optimizer, scaler, loader, steps, progress, c, self.world,
                                  self.stop, step_times, after_step)
        if step_times is not None and len(step_times) == 2:  # the first step compiled, the second ran compiled code
            self.compile_s = max(step_times[0] - step_times[1], 0.0)
        if outcome == STOPPED:
            progress.elapsed_s = time.perf_counter() - t_start
            self._save_checkpoint(model, optimizer, scaler, progress)
            self.say(f"[{c.name()}] stop requested: checkpoint at epoch {progress.epoch} step {progress.step}")
            raise Interrupted(str(self.checkpoint_path))
        return outcome == DIVERGED

    def _end_epoch(self, model, optimizer, scaler, eval_loader, steps: int, progress: Progress,
                   t_start: float) -> None:
        """Close an epoch: its train metrics over all ranks, evaluation, history, checkpoint, log line, record."""
        c, world, task = self.config, self.world, self.task
        sums = dict(zip(task.sum_keys, world.sum([progress.train_sums[k] for k in task.sum_keys])))
        entry = {"epoch": progress.epoch + 1, **task.train_metrics(sums),
                 "lr": learning_rate(c, progress.epoch, 0, steps)}
        world.broadcast_buffers(model)
        entry.update(task.evaluate(model, eval_loader, world))
        if self.ema is not None:  # the EMA beside the model: ema_eval_top1, ...
            entry.update({f"ema_{k}": v for k, v in task.evaluate(self.ema.module, eval_loader, world).items()
                          if k != "eval_samples"})
        progress.epoch, progress.step = progress.epoch + 1, 0
        progress.train_sums = task.zero_sums()
        progress.elapsed_s = time.perf_counter() - t_start
        entry["time_s"] = progress.elapsed_s
        progress.history.append(entry)
        self._save_checkpoint(model, optimizer, scaler, progress)
        self.say(f"[{c.name()}] epoch {entry['epoch']}/{c.epochs} {task.epoch_summary(entry)} "
                 f"lr {entry['lr']:.4g} ({entry['time_s']:.0f}s)")
        # A failed write (a full disk) ends every rank, not rank 0 alone.
        world.main_writes(lambda: self.write(self.record("running", progress)))

    # -- checkpoints ------------------------------------------------------------------------------
    def _save_checkpoint(self, model, optimizer, scaler, progress: Progress) -> None:
        save_checkpoint(self.checkpoint_path, self.run_id, model, optimizer, scaler, progress, self.world,
                        self.task.sum_keys, self.started_at, ema=None if self.ema is None else self.ema.module)

    def _resume(self, model, optimizer, scaler) -> Progress | None:
        """Rank 0 picks the newest readable checkpoint (a corrupt one is set aside with a warning); every rank loads
        that one, or none does. None: no checkpoint to resume from."""
        world, name = self.world, self.config.name()
        warned: list[str] = []

        def warn(text: str) -> None:
            warned.append(text)
            self.say(f"[{name}] {text}")

        found = newest_readable(self.checkpoint_path, self.run_id, warn=warn) if world.is_main else None
        path = world.broadcast(None if found is None else str(found[0]))
        if path is None:
            if warned:
                self.say(f"[{name}] warning: no readable checkpoint left: training from scratch")
            return None
        ckpt = found[1] if found is not None else read_checkpoint(path, self.run_id, world.device)
        progress, started_at = load_into(ckpt, model, optimizer, scaler, world, self.task.sum_keys,
                                         say=lambda text: self.say(f"[{name}] {text}"),
                                         ema=None if self.ema is None else self.ema.module)
        self.started_at = started_at or self.started_at
        self.say(f"[{name}] resumed from {path} at epoch {progress.epoch} step {progress.step}"
                 + (f" ({world.size} processes)" if world.size > 1 else ""))
        return progress


# -- command line ---------------------------------------------------------------------------------
