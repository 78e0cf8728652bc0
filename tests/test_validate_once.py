"""A run is validated once in the launcher (before anything is submitted) and once in its job (which may run on
another machine, with other plug-ins), and a launch computes its plan once."""
import yaml

import lai_bench.launch.grid as grid_module
import lai_bench.launch.launcher as launcher_module
import lai_bench.run as run_module
import lai_bench.train.lifecycle as lifecycle_module
from lai_bench.run import main
from lai_bench.validate import validate


def test_each_run_is_validated_once_by_the_launcher_and_once_by_its_job_and_planned_once(tmp_path, monkeypatch):
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({
        "name": "g", "base": {"depth": 8, "recipe": "smoke", "epochs": 1, "batch_size": 8, "eval_batch_size": 8,
                              "synthetic": {"train_size": 16, "eval_size": 8, "image_size": 8}, "measure": False},
        "grid": {"method": ["none", "se"]}}))
    calls: dict[str, list[str]] = {"launcher": [], "job": []}

    def counting(where):
        def check(config):
            done = validate(config)
            calls[where].append(done.run_id())
            return done
        return check

    monkeypatch.setattr(grid_module, "validate", counting("launcher"))
    monkeypatch.setattr(lifecycle_module, "validate", counting("job"))
    plans = []
    real_plan = run_module.make_plan

    def planning(*args, **kwargs):
        plans.append(args[0].name)
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(run_module, "make_plan", planning)
    monkeypatch.setattr(launcher_module, "make_plan", planning)
    assert main(["--grid", str(grid), "--executor", "debug", "--results", str(tmp_path / "res")]) == 0
    assert len(calls["launcher"]) == 2 and sorted(calls["launcher"]) == sorted(calls["job"])
    assert len(set(calls["job"])) == 2  # each run once, in its own job
    assert plans == ["g"]
