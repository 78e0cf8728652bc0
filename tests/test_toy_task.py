"""A new task is one plug-in file (tests/plugins/toy_regression.py) and no edit anywhere in lai_bench: a grid names it
in `plugins:`, sets its own option in `task_opts` and its own data set name, and it trains through the grid CLI to
records, --status, the final table, the report (its headline table) and the bench; a bad `task_opts` key is one line
before anything is submitted."""
import csv
import sys
from pathlib import Path

import pytest
import yaml

from lai_bench.bench.cli import main as bench_main
from lai_bench.records.store import load_records
from lai_bench.report.build import build_report
from lai_bench.run import main

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture
def plugin_path(monkeypatch):
    """The plug-in's folder on the Python path of this process and of every job it starts."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv("PYTHONPATH", f"{PLUGINS}:{Path(__file__).parent.parent}")
    yield
    from lai_bench.tasks import unregister_task

    unregister_task("toy_regression")
    sys.modules.pop("toy_regression", None)


def toy_grid(tmp_path: Path, **base) -> Path:
    grid = tmp_path / "toy.yaml"
    grid.write_text(yaml.safe_dump({
        "name": "toy", "plugins": ["toy_regression"],
        "base": {"task": "toy_regression", "dataset": "noise_means", "task_opts": {"scale": 2.0}, "depth": 8,
                 "recipe": "smoke", "epochs": 2, "batch_size": 16, "eval_batch_size": 16, **base},
        "grid": {"method": ["none", "se"]}}))
    return grid


def test_a_plugin_task_with_its_own_option_and_data_set_trains_reports_and_benches(plugin_path, tmp_path, capsys):
    grid, results = toy_grid(tmp_path), tmp_path / "results"
    assert main(["--grid", str(grid), "--executor", "debug", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "MSE final" in out and "top-1" not in out and "top1" not in out
    records = {r["config"]["method"]: r for r in load_records(results / "toy")}
    assert set(records) == {"none", "se"} and all(r["status"] == "completed" for r in records.values())
    for record in records.values():
        assert record["config"]["task_opts"] == {"scale": 2.0} and record["config"]["dataset"] == "noise_means"
        assert record["metrics"]["mse_final"] == record["history"][-1]["eval_mse"]
        assert f"{record['metrics']['mse_final']:7.2f}" in out  # the final table's headline column
        assert record["plugins"][0]["module"] == "toy_regression"

    assert main(["--grid", str(grid), "--results", str(results), "--status"]) == 0
    assert "2 completed" in capsys.readouterr().out

    written = build_report(results / "toy", tmp_path / "analysis")
    table = (tmp_path / "analysis" / "tables" / "toy_regression.md").read_text()
    assert tmp_path / "analysis" / "tables" / "toy_regression.md" in written["tables"]
    assert "MSE final" in table and "| ResNet |" in table and "| SE |" in table
    assert not (tmp_path / "analysis" / "tables" / "all_runs.md").exists()  # no classification row made of NaN

    out_dir = tmp_path / "bench"
    assert bench_main(["--plugins", "toy_regression", "--task", "toy_regression", "--methods", "se", "--depth", "8",
                       "--steps", "1", "--warmup", "0", "--rounds", "1", "--out", str(out_dir)]) == 0
    (path,) = out_dir.glob("*.csv")
    rows = {row["method"]: row for row in csv.DictReader(path.open())}
    assert set(rows) == {"none", "se"} and {row["task"] for row in rows.values()} == {"toy_regression"}
    assert all(int(row["batch"]) == 8 for row in rows.values())  # the task's bench default


def test_a_plugin_task_option_changes_the_run_id_and_reaches_the_task(plugin_path, tmp_path):
    from lai_bench.launch.grid import read_grid

    ids = {scale: [spec.run_id for spec in read_grid(toy_grid(tmp_path, task_opts={"scale": scale})).runs]
           for scale in (2.0, 3.0)}
    assert set(ids[2.0]).isdisjoint(ids[3.0])
    spec = read_grid(toy_grid(tmp_path, task_opts={})).runs[0]
    assert spec.config.task_opts == {"scale": 4.0}  # the task's default, filled in by validation


@pytest.mark.parametrize("base, words", [
    ({"task_opts": {"scael": 2.0}}, ["task_opts: unknown option 'scael' for task toy_regression",
                                     "did you mean 'scale'", "allowed: scale (a finite number > 0)"]),
    ({"task_opts": {"scale": -1}}, ["task_opts.scale", "a finite number > 0", "-1"]),
    ({"task_opts": {"scale": 500}}, ["task_opts.scale 500 is too large"]),
    ({"dataset": "cifar10"}, ["dataset 'cifar10' is not a data set of task toy_regression", "allowed: noise_means"]),
])
def test_a_bad_task_option_or_data_set_is_one_line_before_anything_is_submitted(plugin_path, tmp_path, capsys, base,
                                                                               words):
    results = tmp_path / "results"
    assert main(["--grid", str(toy_grid(tmp_path, **base)), "--executor", "local", "--results", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    for word in words:
        assert word in err
    assert not results.exists() or not any(results.rglob("*.json"))  # nothing submitted, nothing written


def test_a_plugin_task_runs_as_a_local_job_in_another_process(plugin_path, tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["--grid", str(toy_grid(tmp_path)), "--executor", "local", "--results", str(results)]) == 0
    assert {r["status"] for r in load_records(results / "toy")} == {"completed"}
