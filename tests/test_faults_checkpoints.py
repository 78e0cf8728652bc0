"""Faults around checkpoints and full disks (issue 17, points 3 and 6), reproduced and checked.

3. a corrupt checkpoint is set aside and the run resumes from the previous one (or from scratch), history kept; a
completed run keeps only its final weights. 6. a full disk is one line naming the file, in the failed record and in
the launcher's line; no temp file is left; the report writes what it can and lists what it could not.
"""
import errno
import io
import json
import os
import re
import types
from pathlib import Path

import pytest
import torch
from test_train import StopAfter, tiny

from lai_bench.config import config_from_dict
from lai_bench.core import files
from lai_bench.launch.launcher import outcome_of
from lai_bench.report import main as report_main
from lai_bench.tasks import ClassificationTask
from lai_bench.train.lifecycle import Interrupted, Run
from lai_bench.validate import validate

METRICS = ("train_loss", "train_top1", "eval_top1", "eval_top5", "eval_loss")
ADVICE = "(free some space and rerun: the run resumes from its last checkpoint)"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 2-epoch run (6 steps per epoch): its folder and record."""
    out = tmp_path_factory.mktemp("ref")
    return out, Run(tiny(epochs=2), out, log=lambda line: None).run()


def interrupted(out: Path) -> tuple[Path, Path]:
    """A run stopped at epoch 2, step 2: its latest checkpoint (1, 2) and the previous one (1, 0)."""
    with pytest.raises(Interrupted):
        Run(tiny(epochs=2), out, stop=StopAfter(8), log=lambda line: None).run()
    latest = out / "checkpoints" / f"{tiny(epochs=2).run_id()}.pt"
    prev = latest.with_name(f"{latest.stem}.prev.pt")
    assert [(c["epoch"], c["step"]) for c in map(load, (latest, prev))] == [(1, 2), (1, 0)]
    return latest, prev


def load(path: Path) -> dict:
    return torch.load(path, weights_only=False)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def assert_same_history(got: list, want: list) -> None:
    assert [h["epoch"] for h in got] == [h["epoch"] for h in want]
    for g, w in zip(got, want):
        for key in METRICS:
            assert g[key] == pytest.approx(w[key], rel=1e-6, abs=1e-9), key


def resume(out: Path) -> tuple[dict, list[str]]:
    lines: list[str] = []
    return Run(tiny(epochs=2), out, log=lines.append).run(), lines


def leftovers(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.tmp"))


# -- 3. corrupt checkpoints ----------------------------------------------------------------------------------


def test_a_truncated_latest_checkpoint_is_set_aside_and_the_run_resumes_from_the_previous_one(tmp_path, reference):
    _, want = reference
    latest, prev = interrupted(tmp_path)
    epoch_1 = load(prev)["history"]
    truncate(latest)
    record, lines = resume(tmp_path)
    [warning] = [line for line in lines if "warning" in line]
    assert str(latest) in warning and "not a readable checkpoint (PytorchStreamReader failed" in warning
    assert "\n" not in warning
    assert any(f"resumed from {prev} at epoch 1 step 0" in line for line in lines), lines
    [aside] = latest.parent.glob(f"{latest.name}.corrupt-*")  # set aside, not deleted
    assert aside.read_bytes() and record["status"] == "completed"
    assert record["history"][0] == epoch_1[0]  # the checkpoint's history, as it was (its time_s too)
    assert_same_history(record["history"], want["history"])
    assert record["metrics"] == pytest.approx(want["metrics"])


def test_with_both_checkpoints_corrupt_the_run_starts_from_scratch_with_a_warning(tmp_path, reference):
    _, want = reference
    latest, prev = interrupted(tmp_path)
    truncate(latest)
    prev.write_bytes(b"not a checkpoint")
    record, lines = resume(tmp_path)
    warnings = [line for line in lines if "warning" in line]
    assert len(warnings) == 3, lines
    assert str(latest) in warnings[0] and str(prev) in warnings[1]
    assert "training from scratch" in warnings[2] and not any("resumed from" in line for line in lines)
    assert len(list(latest.parent.glob("*.corrupt-*"))) == 2
    assert record["status"] == "completed"
    assert_same_history(record["history"], want["history"])


def test_a_completed_run_keeps_only_its_final_weights_which_load_into_a_fresh_model(reference):
    out, record = reference
    run_id = record["run_id"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"{run_id}.final.pt"]
    assert record["weights"] == f"checkpoints/{run_id}.final.pt"
    assert json.loads((out / f"{run_id}.json").read_text())["weights"] == record["weights"]
    weights = torch.load(out / record["weights"], weights_only=True)  # plain data: safe to load
    assert weights["run_id"] == run_id and weights["epochs"] == 2
    config = validate(config_from_dict(weights["config"]))
    assert config.run_id() == run_id
    model = ClassificationTask(config).build_model(types.SimpleNamespace(num_classes=4))
    model.load_state_dict(weights["model"], strict=True)


def test_keep_checkpoints_all_keeps_the_training_checkpoints_too(tmp_path, reference):
    _, want = reference
    record = Run(tiny(epochs=2, keep_checkpoints="all"), tmp_path, log=lambda line: None).run()
    assert record["run_id"] == want["run_id"]
    run_id = record["run_id"]
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == [f"{run_id}.final.pt", f"{run_id}.prev.pt", f"{run_id}.pt"]
    final, latest = load(tmp_path / record["weights"]), load(tmp_path / "checkpoints" / f"{run_id}.pt")
    assert (latest["epoch"], latest["step"]) == (2, 0)
    for key, value in latest["model"].items():
        assert torch.equal(final["model"][key], value), key


# -- 6. a full disk ------------------------------------------------------------------------------------------


class FullDisk(io.FileIO):
    """A file on a full disk: every write to the device fails with ENOSPC (buffered data fails on flush)."""

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def open_on_full_disk(real_fdopen):
    def fdopen(fd, mode="r", *args, **kwargs):
        return io.BufferedWriter(FullDisk(fd, "wb")) if mode == "wb" else real_fdopen(fd, mode, *args, **kwargs)
    return fdopen


def test_a_full_disk_during_a_checkpoint_fails_the_run_with_one_line_and_a_rerun_resumes(tmp_path, monkeypatch,
                                                                                         reference):
    _, want = reference
    latest, prev = interrupted(tmp_path)
    before = latest.read_bytes(), prev.read_bytes()
    # The free space is the disk's own (this one is not full: the file object fails), measured at the failure.
    line = re.compile(rf"OSError: no space left on device writing {re.escape(str(latest))} "
                      rf"\(\d+(\.\d)? [kMGT]?B free of \d+(\.\d)? [kMGT]?B; {re.escape(ADVICE[1:])}")
    monkeypatch.setattr(files.os, "fdopen", open_on_full_disk(os.fdopen))  # checkpoints: the only binary writes
    logged: list[str] = []
    with pytest.raises(OSError) as raised:
        Run(tiny(epochs=2), tmp_path, log=logged.append).run()  # resumes at (1, 2); the epoch-2 save fails
    shown = f"{type(raised.value).__name__}: {raised.value}"
    assert line.fullmatch(shown), shown
    assert logged[-1] == f"[{tiny().name()}] failed: {shown}"  # the run's log
    record = json.loads((tmp_path / f"{want['run_id']}.json").read_text())
    assert record["status"] == "failed" and record["error"] == shown
    assert record["epochs_completed"] == 2 and [h["epoch"] for h in record["history"]] == [1, 2]  # history kept
    assert leftovers(tmp_path) == []
    assert (latest.read_bytes(), prev.read_bytes()) == before  # both checkpoints as they were
    monkeypatch.undo()
    again, lines = resume(tmp_path)  # space freed, the same run again
    assert any(f"resumed from {latest} at epoch 1 step 2" in text for text in lines), lines
    assert again["status"] == "completed"
    assert_same_history(again["history"], want["history"])


class FailedJob:
    """A finished submitit job whose result could not be written (a full disk): submitit's text holds the log."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.paths = types.SimpleNamespace(stderr="/r/g/submitit/7_0_log.err")

    def results(self):
        raise self.exception()

    def exception(self) -> Exception:
        return type("UncompletedJobError", (RuntimeError,), {})(self.text)


def test_the_launcher_shows_the_jobs_error_line_when_no_failed_record_could_be_written(tmp_path):
    line = f"OSError: no space left on device writing /r/g/checkpoints/abc.pt (0 B free of 3.1 MB; {ADVICE[1:]}"
    text = "\n".join([
        "Job 7 (task: 0) with path /r/g/submitit/7_0_result.pkl",
        "has not produced any output (state: FINISHED)",
        "Error stream produced:",
        "-" * 40,
        "submitit ERROR (2024-05-01 10:00:00,000) - Could not dump error:",
        line.partition(": ")[2],
        "",
        "because of [Errno 28] No space left on device",
        "submitit ERROR (2024-05-01 10:00:00,001) - Submitted job triggered an exception",
        "Traceback (most recent call last):",
        '  File "/x/lai_bench/checkpoint.py", line 60, in save_atomic',
        "OSError: [Errno 28] No space left on device",
        "",
        "The above exception was the direct cause of the following exception:",
        "",
        "Traceback (most recent call last):",
        '  File "/x/submitit/core/submission.py", line 55, in process_job',
        line,
        "srun: error: node1: task 0: Exited with exit code 1",
    ])
    spec = types.SimpleNamespace(run_id="abc", name="none-synthetic-d20-s0")
    (tmp_path / "abc.json").write_text(json.dumps({"schema": "lai_bench.record/1", "run_id": "abc",
                                                   "status": "running", "config": {}, "error": None}))
    outcome = outcome_of(spec, FailedJob(text), tmp_path)
    assert outcome.status == "failed"
    assert outcome.detail == f"{line} (log: /r/g/submitit/7_0_log.err)"


def test_the_report_writes_what_it_can_and_lists_the_file_it_could_not(reference, tmp_path, capsys):
    results, _ = reference
    out = tmp_path / "analysis"
    (out / "status.md" / "in-the-way").mkdir(parents=True)  # a folder where the report writes a file
    assert report_main([str(results), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert f"error: is a directory writing {out / 'status.md'}" in captured.err.splitlines()
    assert "Traceback" not in captured.err + captured.out
    assert (out / "report.md").is_file() and (out / "status.csv").is_file()
    assert f"wrote {out / 'report.md'}" in captured.out
    assert leftovers(out) == []


def test_a_figure_that_cannot_be_written_costs_only_itself(reference, tmp_path, capsys):
    results, _ = reference
    assert report_main([str(results), "--out", str(tmp_path / "whole")]) == 0
    stems = sorted({p.stem for p in (tmp_path / "whole" / "figures").glob("*.png")})
    assert len(stems) >= 2, stems
    out = tmp_path / "analysis"
    blocked = out / "figures" / f"{stems[0]}.png"
    (blocked / "in-the-way").mkdir(parents=True)  # a folder where the report writes the first figure
    capsys.readouterr()
    assert report_main([str(results), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert f"error: is a directory writing {blocked}" in captured.err.splitlines(), captured.err
    for stem in stems[1:]:  # every other figure, the classification and detection ones alike, is written
        assert (out / "figures" / f"{stem}.png").is_file() and (out / "figures" / f"{stem}.pdf").is_file(), stem
    assert (out / "report.md").is_file() and leftovers(out) == []
