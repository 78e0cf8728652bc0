"""The record store: atomic writes, overwrite protection, loading that skips what is not a record."""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path

import pytest

from lai_bench.core import files
from lai_bench.records.store import (
    SCHEMA,
    RecordError,
    config_key,
    load_records,
    read_record,
    records_frame,
    write_record,
)


def make_record(
    method: str = "dla_l", dataset: str = "cifar100", seed: int = 0, status: str = "completed", **overrides
) -> dict:
    """A small record as the trainer writes it."""
    config = {
        "method": method,
        "backbone": "cifar",
        "depth": 164,
        "block": "bottleneck",
        "dataset": dataset,
        "seed": seed,
        "model_opts": {"cell": "dsu", "forward": True, "backward": True, "reduction": 4},
        "recipe": "cifar",
        "epochs": 180,
        "batch_size": 128,
        "lr": 0.1,
        "drop_path": 0.2,
    }
    record = {
        "schema": SCHEMA,
        "run_id": f"{method}-{dataset}-{seed}",
        "name": f"{method}-{dataset}-d164-s{seed}",
        "grid": "cifar",
        "status": status,
        "error": None,
        "diverged_epoch": None,
        "config": config,
        "metrics": {"top1_final": 77.1, "top1_best": 77.6, "top5_final": 93.9, "top5_best": 94.2, "best_epoch": 171},
        "history": [{"epoch": 1, "train_loss": 3.9, "train_top1": 9.8, "eval_top1": 14.2, "lr": 0.1, "time_s": 61.2}],
        "params": 2003496,
        "flops": 265000000,
        "flops_unsupported": {"aten::sigmoid": 36},
        "throughput": {"train_samples_per_s": 512.0, "infer_samples_per_s": 2100.0},
        "peak_memory_bytes": 123456789,
        "peak_memory_kind": "cuda_max_allocated",
        "wall_time_s": 12345.0,
        "code_version": "abc1234",
        "torch_version": "2.13.0",
        "device": "NVIDIA H100",
        "started_at": "2026-11-24T10:00:00Z",
        "finished_at": "2026-11-24T13:25:00Z",
    }
    record.update(overrides)
    return record


def leftovers(folder: Path) -> list[str]:
    """Files in ``folder`` other than records (temp files of an interrupted write)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".json"))


def test_a_record_round_trips(tmp_path):
    record = make_record()
    path = write_record(tmp_path / "grid" / "run.json", record)
    assert read_record(path) == record
    assert leftovers(path.parent) == []


def test_the_schema_key_is_added_when_the_writer_forgets_it(tmp_path):
    record = make_record()
    del record["schema"]
    path = write_record(tmp_path / "run.json", record)
    assert read_record(path)["schema"] == SCHEMA


def test_a_record_is_readable_by_others(tmp_path):
    path = write_record(tmp_path / "run.json", make_record())
    assert path.stat().st_mode & 0o777 == files._FILE_MODE


def test_an_interrupted_write_keeps_the_old_record_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = write_record(tmp_path / "run.json", make_record(status="running"))
    before = path.read_text()

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_record(path, make_record())
    assert path.read_text() == before
    assert leftovers(tmp_path) == []


def test_an_unserialisable_record_writes_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_record(tmp_path / "run.json", make_record(extra=object()))
    assert list(tmp_path.iterdir()) == []


def test_numpy_values_are_written_as_plain_numbers(tmp_path):
    np = pytest.importorskip("numpy")
    path = write_record(tmp_path / "run.json", make_record(params=np.int64(7), flops=np.float32(1.5)))
    assert read_record(path)["params"] == 7 and read_record(path)["flops"] == 1.5


def test_a_completed_record_is_not_overwritten_without_permission(tmp_path):
    path = write_record(tmp_path / "run.json", make_record())
    before = path.read_text()
    with pytest.raises(FileExistsError, match="completed"):
        write_record(path, make_record(status="running"), overwrite=False)
    assert path.read_text() == before
    assert leftovers(tmp_path) == []
    write_record(path, make_record(status="failed", error="boom"), overwrite=True)
    assert read_record(path)["status"] == "failed"


def test_a_running_record_may_be_replaced_by_the_finished_one(tmp_path):
    path = write_record(tmp_path / "run.json", make_record(status="running", metrics={}))
    write_record(path, make_record(), overwrite=False)
    assert read_record(path)["status"] == "completed"


def test_a_bad_status_is_refused_before_writing(tmp_path):
    with pytest.raises(RecordError, match="status"):
        write_record(tmp_path / "run.json", make_record(status="done"))
    assert not (tmp_path / "run.json").exists()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"run_id": "x", ', "corrupt JSON"),
        ('{"name": "grid manifest"}', "no 'schema' key"),
        ("[1, 2]", "not a run record"),
        ('{"schema": "other/2", "run_id": "x"}', "unsupported schema"),
    ],
)
def test_files_that_are_not_records_are_refused(tmp_path, text, reason):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(RecordError, match=reason):
        read_record(path)


def test_a_folder_with_a_corrupt_and_a_foreign_json_loads_everything_else(tmp_path):
    for seed in range(3):
        write_record(tmp_path / f"s{seed}.json", make_record(seed=seed))
    write_record(tmp_path / "nested" / "deep.json", make_record(method="se"))
    (tmp_path / "corrupt.json").write_text('{"schema": "lai_bench.record/1", "run_id": ')
    (tmp_path / "foreign.json").write_text(json.dumps({"grid": "cifar", "seeds": [0, 1, 2]}))
    (tmp_path / "notes.txt").write_text("not json at all")

    with pytest.warns(UserWarning) as caught:
        records = load_records(tmp_path)

    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert any("corrupt.json" in m and "corrupt JSON" in m for m in messages)
    assert any("foreign.json" in m and "schema" in m for m in messages)
    assert sorted(r["run_id"] for r in records) == sorted(
        ["dla_l-cifar100-0", "dla_l-cifar100-1", "dla_l-cifar100-2", "se-cifar100-0"]
    )
    assert all(Path(r["_path"]).is_file() for r in records)


def test_loading_without_recursion_ignores_subfolders(tmp_path):
    write_record(tmp_path / "top.json", make_record())
    write_record(tmp_path / "sub" / "deep.json", make_record(seed=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r["run_id"] for r in load_records(tmp_path, recursive=False)] == ["dla_l-cifar100-0"]


def test_a_missing_results_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_records(tmp_path / "nope")


def test_the_frame_has_one_flat_row_per_record():
    records = [make_record(seed=0), make_record(method="none", seed=1, status="failed", metrics={}, error="boom")]
    frame = records_frame(records)
    assert len(frame) == 2
    for column in (
        "run_id",
        "status",
        "method",
        "depth",
        "dataset",
        "seed",
        "opt.cell",
        "opt.reduction",
        "top1_final",
        "top1_best",
        "top5_best",
        "params",
        "flops",
        "train_samples_per_s",
        "config_key",
        "error",
    ):
        assert column in frame, column
    first = frame.iloc[0]
    assert (first["method"], first["depth"], first["seed"], first["opt.cell"]) == ("dla_l", 164, 0, "dsu")
    assert (first["top1_best"], first["params"], first["train_samples_per_s"]) == (77.6, 2003496, 512.0)
    assert frame.iloc[1]["status"] == "failed" and frame.iloc[1]["top1_best"] != frame.iloc[1]["top1_best"]  # NaN


def test_an_empty_frame_still_has_the_columns():
    frame = records_frame([])
    assert len(frame) == 0 and {"run_id", "status", "best_epoch", "config_key"} <= set(frame.columns)
    assert "top1_best" not in frame  # a task's own metrics come from its records, not from the generic schema


def test_config_key_ignores_the_seed_and_key_order():
    config = make_record()["config"]
    reordered = dict(reversed(list(config.items())))
    assert config_key(config) == config_key({**config, "seed": 7}) == config_key(reordered)
    assert config_key(config) == config_key({**config, "epochs": 180.0})
    assert config_key(config) != config_key({**config, "model_opts": {**config["model_opts"], "backward": False}})
    assert config_key(config) != config_key({**config, "dataset": "cifar10"})


def test_a_reader_never_sees_a_half_written_record(tmp_path):
    path = tmp_path / "run.json"
    big = make_record(history=[{"epoch": e, "train_loss": 1.0 / e} for e in range(1, 3000)])
    write_record(path, big)
    done, seen, errors = threading.Event(), [], []

    def reader() -> None:
        while not done.is_set():
            try:
                seen.append(read_record(path)["wall_time_s"])
            except Exception as err:  # noqa: BLE001 - any failure here is the bug under test
                errors.append(err)

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(20):
        write_record(path, {**big, "wall_time_s": float(i)})
    done.set()
    thread.join()
    assert errors == [] and seen
    assert leftovers(tmp_path) == []
