"""A data-parallel run decides once, before any rank joins the process group (issue 31): a run another live process
trains ends on every rank within seconds with the busy message, a completed run returns its record on every rank.
Two processes on CPU (gloo), started the way torchrun starts its workers."""
import errno
import faulthandler
import json
import os
import socket
import threading
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
from test_distributed import SYNTH, free_port

import lai_bench.train.lifecycle as train
from lai_bench.config import RunConfig
from lai_bench.runtime.distributed import World
from lai_bench.train import claim
from lai_bench.train.runlock import RunBusy, RunLock

CONFIG = dict(method="none", depth=8, dataset="synthetic", synthetic=SYNTH, recipe="smoke", epochs=1, batch_size=8,
              eval_batch_size=8, measure=False, device="cpu")
# Without a shared decision rank 1 waited in the rendezvous for the store timeout (30 minutes): a worker still
# running after this long dumps its stack and exits, and the test fails instead of hanging.
HANG_S = 120
SECONDS = 20  # "within seconds": from Run.run to its end on a rank, imports not counted


def _worker(rank: int, size: int, port: int, out: str) -> None:
    faulthandler.dump_traceback_later(HANG_S, exit=True)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(size))
    torch.set_num_threads(1)
    lines: list[str] = []
    run = train.Run(RunConfig(**CONFIG), out, log=lines.append, stop=train.StopFlag(signals=()))
    start = time.monotonic()
    try:
        outcome = {"status": "returned", "record": run.run()}
    except RunBusy as err:
        outcome = {"status": "busy", "message": str(err)}
    outcome.update(seconds=time.monotonic() - start, log=lines)
    (Path(out) / f"outcome.rank{rank}.json").write_text(json.dumps(outcome))


def two_processes(out: Path) -> list[dict]:
    mp.spawn(_worker, args=(2, free_port(), str(out)), nprocs=2)
    return [json.loads((out / f"outcome.rank{r}.json").read_text()) for r in range(2)]


def files_in(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its modification time, but the workers' outcomes and the run's lock file (its
    owner writes its pid there)."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith("outcome.") and p.suffix != ".lock"}


def test_a_two_process_run_that_another_live_process_trains_ends_on_every_rank_within_seconds(tmp_path):
    record = tmp_path / f"{RunConfig(**CONFIG).run_id()}.json"
    with RunLock(record) as held:  # this process plays the live owner
        before = files_in(tmp_path)
        outcomes = two_processes(tmp_path)
    assert [o["status"] for o in outcomes] == ["busy", "busy"], outcomes
    for outcome in outcomes:
        assert outcome["message"] == (f"{held.path}: another live process is running this run "
                                      f"(pid {os.getpid()} on host {socket.gethostname()})")
        assert outcome["seconds"] < SECONDS, outcomes
    assert files_in(tmp_path) == before  # no record, no checkpoint: nothing was trained
    assert not record.exists()


def test_a_two_process_run_of_a_completed_record_returns_it_on_every_rank_untrained(tmp_path):
    done = train.Run(RunConfig(**CONFIG), tmp_path, log=lambda line: None).run()
    assert done["status"] == "completed"
    record = tmp_path / f"{done['run_id']}.json"
    on_disk, before = json.loads(record.read_text()), files_in(tmp_path)
    outcomes = two_processes(tmp_path)
    assert [o["status"] for o in outcomes] == ["returned", "returned"], outcomes
    assert [o["record"] for o in outcomes] == [on_disk, on_disk]
    assert all(o["seconds"] < SECONDS for o in outcomes), outcomes
    assert files_in(tmp_path) == before  # the record and the final weights untouched, no checkpoint written
    assert outcomes[0]["log"] == [f"[{RunConfig(**CONFIG).name()}] {record}: this run is already completed "
                                  "(delete the record to run it again)"]
    assert outcomes[1]["log"] == []  # rank 0 alone logs


def test_when_rank_0_cannot_decide_every_rank_gets_its_error_instead_of_waiting(tmp_path, monkeypatch):
    """A corrupt record in a folder where it cannot be set aside: rank 0's error, on rank 1 too (two threads of
    this process play the two ranks; the decision still goes through a real rendezvous store)."""
    record = tmp_path / "abc.json"
    record.write_text("{not json")

    def unwritable(path, why="corrupt"):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(claim, "set_aside", unwritable)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    ended: dict[int, BaseException] = {}

    def rank(r: int) -> None:
        try:
            with claim.claimed(record, World(r, 2), say=lambda text: None):
                pass
        except BaseException as err:
            ended[r] = err

    other = threading.Thread(target=rank, args=(1,), daemon=True)
    other.start()
    start = time.monotonic()
    rank(0)
    other.join(SECONDS)
    assert not other.is_alive(), "rank 1 still waits for a decision"
    assert time.monotonic() - start < SECONDS
    assert isinstance(ended[0], PermissionError)
    assert type(ended[1]) is OSError and ended[1].errno == errno.EACCES and str(ended[1]) == str(ended[0])
    assert record.read_text() == "{not json"  # left where it was: nothing trained, nothing set aside
