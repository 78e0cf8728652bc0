"""The process world of a run: who this process is, how many there are, and the few collectives training needs.

A run is one process, or N processes training one model with DistributedDataParallel (one per GPU, or gloo on
CPU). The world comes from the environment, in this order:

- torchrun-style variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT);
- a submitit job with more than one task (Slurm ``tasks_per_node`` x ``nodes``): submitit's JobEnvironment gives
  the ranks and the first node's host, and `submitit.helpers.TorchDistributedEnvironment` exports them as above;
- otherwise one process, with no process group at all: every helper below then works on local values.
"""
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..core.devices import resolve_device
from ..core.files import from_portable, portable

TORCHRUN_VARS = ("RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes; ``size == 1`` means no process group."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    device: torch.device = torch.device("cpu")  # where this process trains, and where collectives' tensors live
    backend: str | None = None  # of the process group: nccl or gloo; None for one process

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def nodes(self) -> int:
        return max(1, self.size // max(1, self.local_size))

    # -- collectives (local no-ops for one process) -----------------------------------------------
    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over all processes, in float64 so sample counts stay exact."""
        if self.size == 1:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def any(self, *flags: bool) -> list[bool]:
        """Each flag, true if it is true on any process: all processes then take the same branch."""
        if self.size == 1:
            return [bool(f) for f in flags]
        t = torch.tensor([float(bool(f)) for f in flags], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's value of `obj`, on every process."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self._object_device())
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every process's `obj`, in rank order, on every process."""
        if self.size == 1:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def main_writes(self, write: Callable[[], Any]) -> None:
        """Rank 0 runs ``write`` (a checkpoint, a record) while every rank waits; if it fails, every rank raises
        its error (a full disk's one line on each), so none goes on to a collective rank 0 never reaches."""
        failure: Exception | None = None
        if self.is_main:
            try:
                write()
            except Exception as err:
                failure = err
        shared = self.broadcast(None if failure is None else portable(failure)) if self.size > 1 else None
        if failure is not None:
            raise failure
        if shared is not None:
            raise from_portable(shared)

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every process.

        DDP broadcasts buffers at the start of each training forward, so after the last step every rank holds rank 0's
        statistics updated once with its *own* shard's batch: evaluating with those would evaluate N slightly
        different models. After this call all ranks evaluate rank 0's model, the one the checkpoint holds.
        """
        if self.size == 1:
            return
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)

    def _object_device(self) -> torch.device | None:
        return self.device if self.backend == "nccl" else None


def world_from_env(environ: Mapping[str, str] | None = None) -> World:
    """The world described by torchrun variables or a multi-task submitit job; one process otherwise.

    Inside a submitit job with several tasks, the torchrun variables are exported into ``os.environ`` first, so that
    ``init_process_group("env://")`` finds its rendezvous (the first node of the job, a port derived from the job id).
    """
    env = os.environ if environ is None else environ
    if not all(k in env for k in TORCHRUN_VARS) and environ is None and _submitit_tasks() > 1:
        from submitit.helpers import TorchDistributedEnvironment

        # CUDA_VISIBLE_DEVICES is left alone: Slurm gives every task of a node all its GPUs, and the device is
        # picked by local rank (see pick_device), which also works where the cluster binds one GPU per task.
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    if not all(k in env for k in TORCHRUN_VARS):
        return World()
    values = {k: _int_var(env, k) for k in ("RANK", "WORLD_SIZE")}
    rank, size = values["RANK"], values["WORLD_SIZE"]
    local_rank = _int_var(env, "LOCAL_RANK") if "LOCAL_RANK" in env else rank
    local_size = _int_var(env, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in env else size
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={size}: need WORLD_SIZE >= 1 and 0 <= RANK < WORLD_SIZE")
    return World(rank, size, local_rank, local_size)


def _int_var(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ValueError(f"environment variable {name}={env[name]!r} must be an integer") from None


def _submitit_tasks() -> int:
    """Number of tasks of the submitit job this process runs in (0 outside one)."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return 0
    import submitit

    return submitit.JobEnvironment().num_tasks


def pick_device(name: str, world: World) -> torch.device:
    """The device this process trains on: `name` ("auto", "cpu", "cuda", "cuda:N") resolved for its local rank."""
    device = resolve_device(name)
    if device.type != "cuda" or world.size == 1:
        return device
    if device.index is not None:
        raise ValueError(f"device {name!r} would put all {world.size} processes on one GPU; "
                         "allowed with several processes: auto, cuda (each process takes the GPU of its local rank)")
    count = torch.cuda.device_count()
    if count == 0:
        raise ValueError("device cuda requested but no GPU is visible to this process")
    # Modulo: where the cluster binds one GPU per task, every process sees just "its" GPU as cuda:0.
    return torch.device("cuda", world.local_rank % count)


@contextmanager
def joined(device_name: str, environ: Mapping[str, str] | None = None,
           store: dist.Store | None = None) -> Iterator[World]:
    """The world of this process with its device; with several processes, inside an initialised process group.

    Backend: nccl for CUDA devices, gloo for CPU. A group the caller already initialised is used and left alone;
    one initialised here is destroyed on the way out. ``store``: the rendezvous store the ranks already share
    (claim.py's), used instead of a new env:// rendezvous on the same port.
    """
    world = world_from_env(environ)
    if dist.is_available() and dist.is_initialized():
        world = World(dist.get_rank(), dist.get_world_size(), world.local_rank, world.local_size)
    device = pick_device(device_name, world)
    if world.size == 1:
        yield World(device=device)
        return
    if dist.is_initialized():
        yield World(world.rank, world.size, world.local_rank, world.local_size, device, dist.get_backend())
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    world = World(world.rank, world.size, world.local_rank, world.local_size, device, backend)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if store is not None:  # the keys init_process_group's own env:// rendezvous would use
        store = dist.PrefixStore("default_pg", store)
    dist.init_process_group(backend, rank=world.rank, world_size=world.size, store=store)
    try:
        yield world
    finally:
        dist.destroy_process_group()


def is_main(environ: Mapping[str, str] | None = None) -> bool:
    """True on rank 0 (and in a single process): the process that logs, writes checkpoints and records."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    env = os.environ if environ is None else environ
    return env.get("RANK", "0") == "0"


def describe(world: World) -> dict[str, Any]:
    """The world as record fields."""
    return {"world_size": world.size, "nodes": world.nodes, "processes_per_node": world.local_size,
            "backend": world.backend}
