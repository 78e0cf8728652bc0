"""Records written before tasks became packages (tests/fixtures/records_v1: the smoke grid, trained by commit 2e17f56,
whose configs still hold detection's `detector`, `min_size`, `max_size` as top-level fields) still load, keep their
run ids, report, and count as finished: a relaunch of their grid skips them and retrains only an interrupted one."""
import json
import shutil
from pathlib import Path

from lai_bench.config import config_from_dict
from lai_bench.launch.grid import read_grid
from lai_bench.launch.plan import make_plan
from lai_bench.records.store import load_records
from lai_bench.report.build import build_report
from lai_bench.run import find_grid, main
from lai_bench.validate import validate

OLD = Path(__file__).parent / "fixtures" / "records_v1" / "smoke"


def test_old_records_load_and_keep_their_run_ids():
    records = load_records(OLD)
    assert len(records) == 10 and {r["status"] for r in records} == {"completed"}
    for record in records:
        assert {"detector", "min_size", "max_size"} <= set(record["config"])  # the fields before task_opts
        config = validate(config_from_dict(record["config"]))
        assert config.task_opts == {} and config.run_id() == record["run_id"]
        assert config.name() == record["name"]


def test_old_records_report_as_before(tmp_path):
    written = build_report(OLD, tmp_path / "analysis")
    table = (tmp_path / "analysis" / "tables" / "all_runs.md").read_text()
    for name in ("ResNet", "SE", "ECA", "DIANet", "MRLA-light", "MRLA-base", "DLA-L", "DLA-B"):
        assert f"| {name} |" in table, name
    assert not written["failed"]
    status = (tmp_path / "analysis" / "status.md").read_text()
    assert "10 run record(s) loaded; 0 file(s) skipped" in status and "| smoke | 10 | 0 | 0 | 0 | 10 |" in status


def test_a_relaunch_of_the_old_grid_skips_its_finished_runs_and_retrains_an_interrupted_one(tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(OLD, results / "smoke")
    grid = read_grid(find_grid("smoke"))
    plan = make_plan(grid, results)
    assert not plan.submit and len(plan.skip) == 10
    assert main(["--grid", "smoke", "--results", str(results), "--status"]) == 0
    assert "10 completed" in capsys.readouterr().out

    first = results / "smoke" / f"{grid.runs[0].run_id}.json"
    record = json.loads(first.read_text())
    first.write_text(json.dumps({**record, "status": "running", "metrics": {}}))  # cut short before it finished
    plan = make_plan(grid, results)
    assert [spec.run_id for spec in plan.submit] == [grid.runs[0].run_id] and len(plan.skip) == 9
