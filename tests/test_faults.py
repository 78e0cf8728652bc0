"""Faults and bad input: each numbered point of the reliability issue, reproduced and checked.

1. a run is trained by one live process only; 2. a corrupt record or jobs.json never stops a grid.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lai_bench.launch.grid import read_grid
from lai_bench.train.runlock import RunLock, is_running, lock_path

ROOT = Path(__file__).resolve().parent.parent
SYNTH = {"num_classes": 4, "image_size": 16, "train_size": 64, "eval_size": 32}


def grid_file(tmp_path: Path, methods=("none",), **base) -> Path:
    base = {"synthetic": SYNTH, **base}
    data = {"name": "g", "base": {"depth": 20, "dataset": "synthetic", "recipe": "smoke",
                                  "epochs": 1, "batch_size": 16, "eval_batch_size": 32, "measure": False, **base},
            "grid": {"method": list(methods)}}
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def launch_cli(grid: Path, results: Path, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "lai_bench.run", "--grid", str(grid), "--results", str(results),
                           "--executor", "local", *extra], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)


def record_path(grid: Path, results: Path, index: int = 0) -> Path:
    return results / "g" / f"{read_grid(grid).runs[index].run_id}.json"


# -- 1. exactly one live owner per run ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_held_by_a_live_process_is_left_alone_and_the_launcher_says_so(tmp_path):
    grid, results = grid_file(tmp_path), tmp_path / "results"
    path = record_path(grid, results)
    with RunLock(path):  # another live process (this one) owns the run
        assert is_running(path)
        out = launch_cli(grid, results, "--no-wait")  # a waiting launcher would wait for this process (below)
    assert out.returncode == 0, out.stdout + out.stderr  # nothing failed: a live run is no reason to fail --no-wait
    assert "running (a live process holds it)" in out.stdout
    assert not path.exists() and "Traceback" not in out.stderr
    assert not is_running(path)  # the lock file left behind holds nobody: the next launch trains the run
    out = launch_cli(grid, results)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(path.read_text())["status"] == "completed"


@pytest.mark.slow
def test_a_launcher_waits_for_the_live_holder_it_names_then_trains_what_the_holder_left(tmp_path):
    """The holder (this process) is named by host and pid while it holds the run; it lets go without a record (as a
    killed job would), and the waiting launcher trains the run itself, prints the final table and exits 0."""
    grid, results = grid_file(tmp_path), tmp_path / "results"
    path = record_path(grid, results)
    log = tmp_path / "launcher.out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with RunLock(path), log.open("w") as out:
        launcher = subprocess.Popen([sys.executable, "-m", "lai_bench.run", "--grid", str(grid), "--results",
                                     str(results), "--executor", "local"], cwd=ROOT, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, text=True)
        try:
            holder = f"pid {os.getpid()} on host {socket.gethostname()}"
            deadline = time.time() + 120
            while holder not in log.read_text():
                assert time.time() < deadline and launcher.poll() is None, log.read_text()
                time.sleep(0.2)
            time.sleep(3)  # it keeps waiting while the holder lives
            assert launcher.poll() is None and not path.exists(), log.read_text()
        except BaseException:
            launcher.kill()
            raise
    assert launcher.wait(timeout=300) == 0, log.read_text()
    text = log.read_text()
    name = read_grid(grid).runs[0].name
    waiting = text.splitlines()[text.splitlines().index("waiting for 1 run(s) that other live processes train:") + 1]
    assert name in waiting and f"running (a live process holds it): {holder}" in waiting, text
    assert "1 run(s) left unfinished by their holder: this launch trains them" in text
    assert final_table(text) == {name: "completed"}, text
    assert json.loads(path.read_text())["status"] == "completed"


def final_table(stdout: str) -> dict[str, str]:
    """The launcher's final table: run name -> status."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["run", "status"])
    rows = {}
    for line in lines[header + 1:]:
        if not line.strip():
            break
        name, status, *_ = line.split()
        rows[name] = status
    return rows


def test_a_job_that_finds_its_run_live_reports_busy_and_writes_nothing(tmp_path):
    """The race the plan cannot see: the job starts while another process already trains the run."""
    from lai_bench.config import config_from_dict
    from lai_bench.launch.launcher import TrainJob

    grid, results = grid_file(tmp_path), tmp_path / "results"
    spec = read_grid(grid).runs[0]
    path = record_path(grid, results)
    with RunLock(path):
        result = TrainJob()(spec.config.to_dict(), str(results / "g"), "g")
    assert result["status"] == "busy" and not path.exists()
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in result["detail"]  # whom it found training the run
    assert config_from_dict(spec.config.to_dict()).run_id() == result["run_id"]


@pytest.mark.slow
def test_a_killed_launchers_live_job_is_not_trained_again_by_the_next_launch(tmp_path):
    # Long enough (~40 s on one thread) that the job still trains when the second launcher looks.
    long_synth = {"num_classes": 4, "image_size": 32, "train_size": 3072, "eval_size": 32}
    grid = grid_file(tmp_path, epochs=1, synthetic=long_synth)
    results = tmp_path / "results"
    path = record_path(grid, results)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "lai_bench.run", "--grid", str(grid), "--results", str(results),
                              "--executor", "local"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not is_running(path):  # the job has taken the run
        assert time.time() < deadline and first.poll() is None, "the job never started"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)  # the launcher dies; its job trains on as an orphan
    first.wait()
    assert is_running(path)
    second = launch_cli(grid, results, "--no-wait")
    assert "nothing to submit" in second.stdout and "running (a live process holds it)" in second.stdout
    assert second.returncode == 0  # nothing failed: a live run is no reason to fail --no-wait
    deadline = time.time() + 300
    while is_running(path):
        assert time.time() < deadline
        time.sleep(0.5)
    record = json.loads(path.read_text())
    assert record["status"] == "completed" and record["epochs_completed"] == 1
    third = launch_cli(grid, results)
    assert third.returncode == 0 and "nothing to submit" in third.stdout


@pytest.mark.slow
def test_two_launchers_on_one_grid_train_each_run_once_and_report_no_failure(tmp_path):
    grid, results = grid_file(tmp_path, methods=("none", "se", "eca")), tmp_path / "results"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "lai_bench.run", "--grid", str(grid), "--results", str(results),
            "--executor", "local", "--parallel", "3"]
    launchers = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    outputs = [launcher.communicate(timeout=600) for launcher in launchers]
    text = "\n".join(out + err for out, err in outputs)
    assert "failed" not in text and "Traceback" not in text, text
    records = [json.loads(record_path(grid, results, i).read_text()) for i in range(3)]
    assert [r["status"] for r in records] == ["completed"] * 3
    # Both wait for what the other trains, then print the same final table and exit 0.
    assert [launcher.returncode for launcher in launchers] == [0, 0], text
    for out, _ in outputs:
        assert final_table(out) == {r["name"]: "completed" for r in records}, text
    # Each run was trained by exactly one job (the other launcher skipped it, found it busy or found it done):
    # every job's log is in submitit's folder, and a run's training logs its epoch once.
    logs = "".join(path.read_text() for path in (results / "g" / "submitit").glob("*.out"))
    for record in records:
        assert logs.count(f"[{record['name']}] epoch 1/1") == 1, logs
    third = launch_cli(grid, results)
    assert third.returncode == 0 and "nothing to submit" in third.stdout


@pytest.mark.slow
def test_a_launcher_started_while_another_trains_the_grid_waits_and_prints_the_same_table(tmp_path):
    """The second launcher finds every run held by the first one's jobs: it submits nothing, names the holders,
    waits, and ends as the first does (exit 0, the same final table); no run is trained twice."""
    slow_synth = {"num_classes": 4, "image_size": 32, "train_size": 768, "eval_size": 32}
    grid = grid_file(tmp_path, methods=("none", "se"), synthetic=slow_synth)
    results = tmp_path / "results"
    paths = [record_path(grid, results, i) for i in range(2)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "lai_bench.run", "--grid", str(grid), "--results", str(results),
            "--executor", "local", "--parallel", "2"]
    first = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second_out, second, paused = tmp_path / "second.out", None, {}
    try:
        # Each job is paused (SIGSTOP: its lock stays held) as soon as it holds its run, until the second launcher
        # has looked, so that it finds both live however slow the machine is; the lock files name their pids.
        deadline = time.time() + 120
        while len(paused) < len(paths):
            for path in paths:
                words = lock_words(path)
                if path not in paused and len(words) == 2 and is_running(path):
                    paused[path] = int(words[1])
                    os.kill(paused[path], signal.SIGSTOP)
            assert time.time() < deadline and first.poll() is None, f"the jobs never both started: {paused}"
            time.sleep(0.05)
        pids = [paused[path] for path in paths]
        with second_out.open("w") as out:
            second = subprocess.Popen(args, cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=out,
                                      stderr=subprocess.STDOUT, text=True)
            while "waiting for 2 run(s) that other live processes train:" not in second_out.read_text():
                assert time.time() < deadline + 120 and second.poll() is None, second_out.read_text()
                time.sleep(0.2)
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
            paused = {}
            first_out, first_err = first.communicate(timeout=600)
            second.wait(timeout=600)
    finally:
        for pid in paused.values():
            os.kill(pid, signal.SIGCONT)
        for launcher in (first, second):
            if launcher is not None:
                launcher.kill()
    second_text = second_out.read_text()
    text = "\n".join((first_out, first_err, second_text))
    assert [first.returncode, second.returncode] == [0, 0], text
    assert "nothing to submit" in second_text, text
    records = [json.loads(path.read_text()) for path in paths]
    assert final_table(first_out) == final_table(second_text) == {r["name"]: "completed" for r in records}, text
    for record, pid in zip(records, pids):  # each run's line names the job that trains it
        assert (f"  {record['name']} ({record['run_id']}): running (a live process holds it): pid {pid} on host "
                f"{socket.gethostname()}") in second_text.splitlines(), text
    logs = "".join(path.read_text() for path in (results / "g" / "submitit").glob("*.out"))
    for record in records:
        assert logs.count(f"[{record['name']}] epoch 1/1") == 1, logs
        assert f"completed {record['name']}" in second_text  # its progress line, as the run ends


def lock_words(record: Path) -> list[str]:
    """The lock file's words: the holder's host and pid."""
    try:
        return lock_path(record).read_text().split()
    except FileNotFoundError:
        return []


# -- 2. one corrupt file stops nothing -----------------------------------------------------------------------


@pytest.mark.slow
def test_a_truncated_record_is_named_corrupt_set_aside_and_the_run_reruns(tmp_path):
    grid, results = grid_file(tmp_path), tmp_path / "results"
    path = record_path(grid, results)
    path.parent.mkdir(parents=True)
    path.write_text('{"schema": "lai_bench.run/1", "run_id": "abc", "sta')  # a write cut short
    status = launch_cli(grid, results, "--status")
    assert status.returncode == 0 and "Traceback" not in status.stderr
    assert "corrupt" in status.stdout and "1 corrupt" in status.stdout
    out = launch_cli(grid, results)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert json.loads(path.read_text())["status"] == "completed"
    kept = list(path.parent.glob(f"{path.name}.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text().endswith('"sta')  # set aside, never deleted


@pytest.mark.slow
def test_a_corrupt_jobs_file_breaks_no_command(tmp_path):
    grid, results = grid_file(tmp_path), tmp_path / "results"
    book = results / "g" / "jobs.json"
    book.parent.mkdir(parents=True)
    book.write_text('{"abc": {"job_id": "1", "exec')
    for extra in (("--status",), ("--dry-run",)):
        out = launch_cli(grid, results, *extra)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert "jobs.json is corrupt" in launch_cli(grid, results, "--status").stdout
    out = launch_cli(grid, results)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stdout + out.stderr
    assert run_ids(json.loads(book.read_text())) == {read_grid(grid).runs[0].run_id}
    assert len(list(book.parent.glob("jobs.json.corrupt-*"))) == 1


def run_ids(jobs: dict) -> set:
    return set(jobs)


# -- 8. small items -------------------------------------------------------------------------------------------


def test_a_truncated_cifar_batch_is_named_in_the_error(tmp_path):
    from data_files import make_separable_cifar

    from lai_bench.data import DatasetError, _build_cifar

    make_separable_cifar(tmp_path, num_classes=10, n_train=100, n_test=20)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:1000])
    with pytest.raises(DatasetError, match=r"data_batch_3 is not a readable CIFAR batch \(UnpicklingError"):
        _build_cifar("cifar10", str(tmp_path), download=False)


# -- 7. Slurm cancel ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.slurm
def test_a_scancelled_run_checkpoints_stops_within_seconds_and_shows_as_cancelled(tmp_path):
    from slurm_util import require_slurm

    from lai_bench.launch.launcher import JobBook, make_executor, submit

    require_slurm()
    long_synth = {"num_classes": 4, "image_size": 32, "train_size": 3072, "eval_size": 32}
    grid_path = grid_file(tmp_path, epochs=1, synthetic=long_synth)
    data = yaml.safe_load(grid_path.read_text())
    data["slurm"] = {"partition": "debug", "cpus_per_task": 1, "mem_gb": 1, "time_min": 20}
    grid_path.write_text(yaml.safe_dump(data))
    grid, results = read_grid(grid_path), tmp_path / "results"
    folder = results / "g"
    [(spec, job)] = submit(make_executor("slurm", folder / "submitit", grid.slurm), "slurm", grid.runs, folder,
                           grid.name, JobBook(folder))
    path = folder / f"{spec.run_id}.json"
    deadline = time.time() + 300
    while not is_running(path):  # the job trains
        assert time.time() < deadline, "the job never started"
        time.sleep(0.2)
    time.sleep(2)
    cancelled_at = time.time()
    subprocess.run(["scancel", str(job.job_id)], check=True)
    while is_running(path):
        assert time.time() - cancelled_at < 60
        time.sleep(0.2)
    assert time.time() - cancelled_at < 15  # it stopped at a step, not at Slurm's SIGKILL after KillWait
    assert not path.exists() or json.loads(path.read_text())["status"] == "running"  # never "completed"
    assert (folder / "checkpoints" / f"{spec.run_id}.pt").exists()
    deadline = time.time() + 60
    while "CANCELLED" not in (JobBook(folder).ended_state(spec.run_id) or ""):
        assert time.time() < deadline, "sacct never reported the cancel"
        time.sleep(1)
    status = launch_slurm(grid_path, results, "--status")
    assert "cancelled (scancel" in status.stdout and "1 cancelled" in status.stdout, status.stdout
    again = launch_slurm(grid_path, results)
    assert "cancelled (use --rerun-failed to resume it)" in again.stdout and again.returncode == 1
    row = next(line.split() for line in again.stdout.splitlines() if line.split()[:2] == [spec.name, "cancelled"])
    assert row[2:4] == ["-", "-"]  # its partial metrics are not shown as final
    resumed = launch_slurm(grid_path, results, "--rerun-failed")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    record = json.loads(path.read_text())
    assert record["status"] == "completed" and record["epochs_completed"] == 1


def launch_slurm(grid: Path, results: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lai_bench.run", "--grid", str(grid), "--results", str(results),
                           "--executor", "slurm", *extra], capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_runs_that_share_a_name_are_told_apart_in_the_status_report(tmp_path):
    """Two runs differing only in lr have the same name (method, data set, depth, seed): status.md adds the lr."""
    from test_report import make_record

    from lai_bench.records.store import write_record
    from lai_bench.report import build_report

    for lr, status in ((0.1, "completed"), (0.05, "failed")):
        record = make_record("none", "cifar100", 0, (70.0, 69.0), status=status, grid="lrs")
        record["config"]["lr"] = lr
        record["run_id"] = f"lr{lr}"
        record["error"] = "ValueError: boom" if status == "failed" else None
        write_record(tmp_path / "res" / f"lr{lr}.json", record)
    build_report([tmp_path / "res"], tmp_path / "out")
    status = (tmp_path / "out" / "status.md").read_text()
    assert "none-cifar100-d164-s0 [lr=0.05]" in status, status
    csv = pd.read_csv(tmp_path / "out" / "status.csv")
    assert sorted(csv["name"]) == ["none-cifar100-d164-s0 [lr=0.05]", "none-cifar100-d164-s0 [lr=0.1]"]


def test_the_record_states_the_thread_count_that_produced_its_numbers(tmp_path):
    import torch

    from lai_bench.config import RunConfig
    from lai_bench.train.lifecycle import Run

    config = RunConfig(method="none", depth=8, dataset="synthetic", synthetic=SYNTH, recipe="smoke", epochs=1,
                       batch_size=16, eval_batch_size=32, measure=False)
    record = Run(config, tmp_path, log=lambda s: None).run()
    assert record["status"] == "completed" and record["torch_threads"] == torch.get_num_threads()
