"""Who trains a run, decided once by rank 0 and known to every rank before any of them joins the process group.

Rank 0 takes the run's lock (runlock.py) and reads its record. The run is *busy* (another live process holds the
lock), *completed* (its record says so: the record is returned, nothing is trained) or to *train* (a record that
does not read is set aside first). With several processes the decision reaches the other ranks through the
rendezvous store - torch.distributed's TCPStore at MASTER_ADDR:MASTER_PORT, the very store an env:// rendezvous
would create - before any process group exists, and training then initialises its group on that same store (one
port, one rendezvous). A busy run therefore ends on every rank within seconds, where ranks 1..N-1 used to wait in
the rendezvous for a rank 0 that had already gone. A process group the caller initialised carries the decision
itself (a broadcast).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch.distributed as dist

from ..core.files import from_portable, portable, set_aside
from ..records.store import RecordError, read_record
from ..runtime.distributed import World
from .runlock import RunBusy, RunLock

OUTCOMES = ("train", "completed", "busy", "failed")  # failed: rank 0 could not decide (its error is shared)
# How long rank 0 keeps the store it hosts up for the other ranks to read a decision that ends the run.
READ_WAIT_S = 60.0


@dataclass
class Claim:
    """The decision every rank acts on; ``store`` is the rendezvous store training joins the group on."""

    outcome: str  # one of OUTCOMES
    message: str = ""
    record: dict[str, Any] | None = None  # the completed record
    error: list | None = None  # failed: rank 0's error as files.portable describes it
    store: Any = field(default=None, repr=False)

    def shared(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "store"}


def decide(record_path: Path, lock: RunLock, say: Callable[[str], None]) -> Claim:
    """Rank 0's decision; on "train" and "completed" it holds ``lock`` (released by the caller)."""
    try:
        lock.__enter__()
    except RunBusy as err:
        return Claim("busy", str(err))
    try:
        done = read_record(record_path)
    except FileNotFoundError:
        done = None
    except (OSError, RecordError) as err:
        done = None
        moved = set_aside(record_path)
        say(f"{err}: set aside as {moved.name}; training the run again")
    if done is not None and done.get("status") == "completed":
        return Claim("completed", f"{record_path}: this run is already completed (delete the record to run it again)",
                     done)
    return Claim("train")


def rendezvous_store(world: World) -> dist.Store | None:
    """The env:// rendezvous store of a multi-process run that has no process group yet; None otherwise."""
    if world.size == 1 or dist.is_initialized():
        return None
    from torch.distributed.constants import default_pg_timeout

    store, _, _ = next(dist.rendezvous("env://", world.rank, world.size, timeout=default_pg_timeout))
    return store


def _keys() -> tuple[str, str]:
    # torchrun restarts a failed group on the same agent store: each attempt decides afresh.
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return f"lai_bench/claim/{attempt}/decision", f"lai_bench/claim/{attempt}/read"


def share(claim: Claim | None, world: World, store: dist.Store | None, wait_s: float = READ_WAIT_S) -> Claim:
    """Rank 0's ``claim`` on every rank (``claim`` is None on the others)."""
    if world.size == 1:
        return claim
    if store is None:  # the caller's process group
        box = [claim.shared() if world.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return claim if world.is_main else Claim(**box[0])
    decision_key, read_key = _keys()
    if world.is_main:
        store.set(decision_key, json.dumps(claim.shared()))
        if claim.outcome != "train":  # rank 0 may host the store: it stays until every rank has read
            deadline = time.monotonic() + wait_s
            while store.add(read_key, 0) < world.size - 1 and time.monotonic() < deadline:
                time.sleep(0.05)
    else:
        claim = Claim(**json.loads(store.get(decision_key)))
        store.add(read_key, 1)
    claim.store = store
    return claim


@contextmanager
def claimed(record_path: str | os.PathLike, world: World, say: Callable[[str], None] = print) -> Iterator[Claim]:
    """``with claimed(record, world) as claim:`` every rank gets rank 0's decision; RunBusy on every rank when
    another live process trains the run, and rank 0's error on every rank when it could not decide. Rank 0 holds
    the run's lock until the block ends. ``say`` is rank 0's."""
    record_path = Path(record_path)
    store = rendezvous_store(world)
    lock = RunLock(record_path) if world.is_main else None
    try:
        failure: Exception | None = None
        claim = None
        if lock is not None:
            try:
                claim = decide(record_path, lock, say)
            except Exception as err:  # a record that cannot be set aside, say: no rank may wait for a decision
                failure = err
                claim = Claim("failed", str(err), error=list(portable(err)))
        claim = share(claim, world, store)
        if failure is not None:
            raise failure
        if claim.outcome == "failed":
            raise from_portable(tuple(claim.error))
        if claim.outcome == "busy":
            raise RunBusy(claim.message)
        yield claim
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)
