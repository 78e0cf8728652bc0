"""A full disk on a real filesystem (issue 31): a small tmpfs that a checkpoint write fills. The run fails with the
one line naming the file and the free space, in the launcher's output, the run's log and its record; no temp file is
left; with more space `--rerun-failed` resumes to the metrics of an uninterrupted run.

Mounting needs root (CI runs as root); elsewhere these tests are skipped with the reason.
"""
import errno
import faulthandler
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_distributed import free_port
from test_faults import grid_file, launch_cli, record_path

from lai_bench.config import RunConfig, config_from_dict
from lai_bench.core import files
from lai_bench.launch.grid import read_grid
from lai_bench.runtime.checkpoint import save_atomic
from lai_bench.train.lifecycle import Run, StopFlag

ADVICE = "free some space and rerun: the run resumes from its last checkpoint"
SYNTH = {"num_classes": 4, "image_size": 16, "train_size": 48, "eval_size": 16}
# ResNet-8: a training checkpoint of about 0.6 MB. Two epochs, every checkpoint kept; one thread, as the reference.
BASE = dict(depth=8, synthetic=SYNTH, epochs=2, batch_size=16, eval_batch_size=16, keep_checkpoints="all",
            threads=1, device="cpu")
PAGE = 4096


class SmallDisk:
    """A tmpfs of ``size`` bytes mounted at ``path``; ``resize`` remounts it with another size, files kept."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs at {path}: {done.stderr.strip() or done.returncode}")

    def resize(self, size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    @property
    def total(self) -> int:
        return shutil.disk_usage(self.path).total

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    """A function that mounts a SmallDisk of the size it is given under tmp_path (unmounted afterwards)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs the suite as root)")
    if shutil.which("mount") is None:
        pytest.skip("no mount command on this machine")
    mounted: list[SmallDisk] = []

    def mount(size: int) -> SmallDisk:
        mounted.append(SmallDisk(tmp_path / f"disk{len(mounted)}", -(-size // PAGE) * PAGE))
        return mounted[-1]

    yield mount
    for disk in mounted:
        disk.unmount()


def leftovers(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.tmp"))


def fill_up(path: Path) -> None:
    """Write ``path`` until the disk is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * PAGE)
    except OSError as err:
        assert err.errno == errno.ENOSPC
    finally:
        os.close(fd)


def to_bytes(text: str) -> float:
    number, unit = text.split()
    return float(number) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[unit]


def full_disk_line(path: Path, disk: SmallDisk) -> re.Pattern:
    """The one line of a full disk writing ``path`` on ``disk``; its group 1 is the free space."""
    return re.compile(rf"OSError: no space left on device writing {re.escape(str(path))} "
                      rf"\((\d+(?:\.\d)? [kMGT]?B) free of {re.escape(files.size_text(disk.total))}; "
                      rf"{re.escape(ADVICE)}\)")


# -- the one atomic-write helper --------------------------------------------------------------------------


def test_a_checkpoint_that_fills_the_disk_is_one_full_disk_error_whatever_torch_raised(small_disk):
    disk = small_disk(600_000)
    target = disk.path / "checkpoints" / "abc.pt"
    with pytest.raises(OSError) as raised:
        save_atomic({"weights": torch.zeros(300_000)}, target)  # 1.2 MB
    err = raised.value
    assert type(err) is OSError and err.errno == errno.ENOSPC
    assert re.fullmatch(rf"no space left on device writing {re.escape(str(target))} \(0 B free of 602.1 kB\)",
                        str(err)), str(err)
    assert leftovers(disk.path) == [] and not target.exists()
    assert shutil.disk_usage(disk.path).free > 0.9 * disk.total  # the partial file is gone: its space is free again


def test_a_write_that_fills_the_disk_and_raises_without_an_errno_is_named_by_the_free_space(small_disk):
    disk = small_disk(100_000)
    target = disk.path / "figure.png"

    def fill(handle) -> None:
        try:
            while True:
                os.write(handle.fileno(), b"x" * PAGE)  # unbuffered: closing the file has nothing left to write
        except OSError:
            pass  # swallowed, as a C++ writer may: what reaches the caller carries no errno

    with pytest.raises(OSError) as raised, files.atomic_open(target, "wb") as handle:
        fill(handle)
        raise RuntimeError("unexpected pos 704 vs 598")
    assert raised.value.errno == errno.ENOSPC and str(raised.value).startswith(
        f"no space left on device writing {target} (0 B free of")
    assert isinstance(raised.value.__cause__, RuntimeError) and raised.value.__cause__.__context__ is None
    assert leftovers(disk.path) == [] and not target.exists()


def test_the_same_error_with_room_on_the_disk_is_not_called_a_full_disk(tmp_path):
    assert files.disk_usage(tmp_path)[0] > files.FULL_MARGIN
    with pytest.raises(RuntimeError, match="unexpected pos"), files.atomic_open(tmp_path / "x.png", "wb") as handle:
        handle.write(b"x")
        raise RuntimeError("unexpected pos 704 vs 598")
    assert leftovers(tmp_path) == []


def test_a_record_or_table_on_a_full_disk_names_its_file_and_the_free_space(small_disk):
    disk = small_disk(PAGE * 4)
    fill_up(disk.path / "ballast")  # the disk filled by something else
    target = disk.path / "tables" / "main.md"
    with pytest.raises(OSError) as raised:
        files.write_text_atomic(target, "| method | top-1 |\n" * 2000)
    assert str(raised.value) == f"no space left on device writing {target} (0 B free of 16.4 kB)"
    assert leftovers(disk.path) == [] and not target.exists()


# -- a grid on a full disk ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_grid_that_fills_its_disk_during_a_checkpoint_fails_with_one_line_and_resumes_once_there_is_room(
        tmp_path, small_disk):
    grid = grid_file(tmp_path, **BASE)
    [spec] = read_grid(grid).runs
    # The uninterrupted run, in this process (same seed, one thread): its metrics and the size of a checkpoint.
    reference = Run(config_from_dict(spec.config.to_dict()), tmp_path / "reference", log=lambda line: None).run()
    checkpoint = (tmp_path / "reference" / "checkpoints" / f"{spec.run_id}.pt").stat().st_size

    # Room for the first checkpoint and half of the second: the epoch-2 save fills the disk.
    disk = small_disk(int(checkpoint * 1.5))
    results = disk.path
    out = launch_cli(grid, results)
    assert out.returncode == 1, out.stdout + out.stderr
    latest = results / "g" / "checkpoints" / f"{spec.run_id}.pt"
    line = full_disk_line(latest, disk)
    [shown] = [text for text in out.stdout.splitlines() if text.startswith("[1/1] failed")]
    found = line.search(shown)
    assert found, shown  # the launcher's line: the run's name, then the one line, then the job's log
    assert to_bytes(found.group(1)) < files.FULL_MARGIN  # the free space when the write failed: none to speak of
    record = json.loads(record_path(grid, results).read_text())
    assert record["status"] == "failed" and line.fullmatch(record["error"]), record["error"]
    assert [h["epoch"] for h in record["history"]] == [1, 2]  # epoch 2 was trained; only its checkpoint failed
    [log] = (results / "g" / "submitit").glob("*_log.out")
    assert f"[{spec.name}] failed: {found.group(0)}" in log.read_text().splitlines()  # the run's own log
    assert leftovers(results) == []
    assert torch.load(latest, weights_only=False)["epoch"] == 1  # the last good checkpoint is kept
    assert "Traceback" not in out.stdout + out.stderr

    disk.resize(checkpoint * 6)  # room made
    again = launch_cli(grid, results, "--rerun-failed")
    assert again.returncode == 0, again.stdout + again.stderr
    record = json.loads(record_path(grid, results).read_text())
    assert record["status"] == "completed"
    logs = "".join(p.read_text() for p in (results / "g" / "submitit").glob("*_log.out"))
    assert f"resumed from {latest} at epoch 1 step 0" in logs
    assert record["metrics"].keys() == reference["metrics"].keys()
    for key, value in reference["metrics"].items():
        assert record["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    for got, want in zip(record["history"], reference["history"], strict=True):
        assert got["eval_loss"] == pytest.approx(want["eval_loss"], rel=1e-6), got["epoch"]
    assert leftovers(results) == []


# -- several processes ------------------------------------------------------------------------------------

TWO = dict(method="none", dataset="synthetic", recipe="smoke", measure=False, **{**BASE, "batch_size": 8})


def _worker(rank: int, size: int, port: int, out: str, report: str) -> None:
    """One rank of a 2-process run writing to ``out``; what it ended with goes to ``report`` (not on that disk)."""
    faulthandler.dump_traceback_later(120, exit=True)  # a rank left waiting for the others fails, not hangs
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(size))
    lines: list[str] = []
    try:
        Run(RunConfig(**TWO), out, log=lines.append, stop=StopFlag(signals=())).run()
        outcome = {"status": "completed"}
    except OSError as err:
        outcome = {"status": "failed", "line": f"{type(err).__name__}: {err}"}
    (Path(report) / f"rank{rank}.json").write_text(json.dumps({**outcome, "log": lines}))


@pytest.mark.slow
def test_a_data_parallel_run_whose_checkpoint_fills_the_disk_fails_on_every_rank_with_the_one_line(
        tmp_path, small_disk):
    alone = Run(RunConfig(**TWO), tmp_path / "alone", log=lambda line: None).run()
    checkpoint = (tmp_path / "alone" / "checkpoints" / f"{alone['run_id']}.pt").stat().st_size
    disk = small_disk(int(checkpoint * 1.5))  # the first checkpoint fits, the second does not
    report = tmp_path / "report"
    report.mkdir()
    mp.spawn(_worker, args=(2, free_port(), str(disk.path), str(report)), nprocs=2)
    outcomes = [json.loads((report / f"rank{rank}.json").read_text()) for rank in range(2)]
    line = full_disk_line(disk.path / "checkpoints" / f"{alone['run_id']}.pt", disk)
    assert [o["status"] for o in outcomes] == ["failed", "failed"], outcomes
    assert line.fullmatch(outcomes[0]["line"]) and outcomes[1]["line"] == outcomes[0]["line"]
    record = json.loads((disk.path / f"{alone['run_id']}.json").read_text())
    assert record["status"] == "failed" and record["error"] == outcomes[0]["line"]
    assert outcomes[0]["log"][-1] == f"[{RunConfig(**TWO).name()}] failed: {outcomes[0]['line']}"
    assert outcomes[1]["log"] == []  # rank 0 alone logs
    assert leftovers(disk.path) == []
