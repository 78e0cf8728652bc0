"""Grid files: expansion, validation before anything runs, and local launching that skips finished runs."""
import json
from pathlib import Path

import pytest
import yaml

from lai_bench.launch.grid import GridError, expand, read_grid, smoke
from lai_bench.launch.launcher import launch, make_plan
from lai_bench.run import main

EXPERIMENTS = Path(__file__).resolve().parent.parent / "lai_bench" / "grids"
TINY_BASE = {"depth": 8, "dataset": "synthetic", "recipe": "smoke", "epochs": 1, "batch_size": 8,
             "eval_batch_size": 8, "measure": False,
             "synthetic": {"num_classes": 3, "image_size": 16, "train_size": 16, "eval_size": 8}}


def write(tmp_path: Path, data, name="g.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_cartesian_product_with_include_exclude_and_bundles():
    grid = expand({
        "name": "g", "base": {"method": "dla_l", "depth": 20},
        "grid": {"seed": [0, 1], "variant": [{}, {"model_opts.cell": "gru"}, {"model_opts.forward_path": False}]},
        "include": [{"method": "none", "seed": 7}],
        "exclude": [{"model_opts.cell": "gru", "seed": 1}],
    })
    names = sorted(r.name for r in grid.runs)
    assert len(grid.runs) == 2 * 3 - 1 + 1
    assert "none-synthetic-d20-s7" in names and "dla_l-cell=gru-synthetic-d20-s0" in names
    assert "dla_l-cell=gru-synthetic-d20-s1" not in names
    assert len({r.run_id for r in grid.runs}) == len(grid.runs)
    assert expand({"base": {"method": "dla_l", "depth": 20}, "grid": {"seed": [0, 1]}}).runs[1].run_id == \
        [r for r in grid.runs if r.name == "dla_l-synthetic-d20-s1"][0].run_id  # ids are stable


def test_duplicate_points_are_merged_and_counted():
    grid = expand({"base": {"depth": 20}, "grid": {"seed": [0, 0, 1]}})
    assert len(grid.runs) == 2 and grid.duplicates == 1


@pytest.mark.parametrize("data,match", [
    ({"bsae": {}}, r"unknown top-level key 'bsae' \(did you mean 'base'\?\)"),
    ({"base": {"method": "none", "epoch": 3}}, r"base: unknown key 'epoch' \(did you mean 'epochs'\?\)"),
    ({"grid": {"methd": ["none"]}}, r"grid: unknown key 'methd' \(did you mean 'method'\?\)"),
    ({"grid": {"method": ["none", "dla_x"]}}, r"run 1 \(method=dla_x\): method must be one of dense, .*, got 'dla_x'"),
    ({"base": {"depth": 21}}, r"run 0 \(base\): CIFAR depth 21 fits no block type"),
    ({"base": {"depth": "deep"}}, r"depth must be an integer >= 1, got 'deep'"),
    ({"grid": {"seed": []}}, r"grid axis 'seed' must be a non-empty list"),
    ({"grid": {"seed": 3}}, r"grid axis 'seed' must be a non-empty list"),
    ({"grid": {"seed": [0]}, "exclude": [{"seed": 0}]}, r"the grid is empty"),
    ({"base": {"model_opts": {"cel": "dsu"}, "method": "dla_l"}}, r"did you mean 'cell'"),
    ({"slurm": {"partiton": "gpu"}}, r"unknown key 'slurm.partiton' \(did you mean 'partition'\?\)"),
    ({"slurm": {"mem_gb": "lots"}}, r"slurm.mem_gb must be a finite number > 0, got 'lots'"),
    ({"base": {"lr.x": 1}}, r"'lr' takes no sub-keys"),
])
def test_bad_grids_name_the_file_and_key(tmp_path, data, match):
    path = write(tmp_path, data)
    with pytest.raises(GridError, match=match) as err:
        read_grid(path)
    assert str(path) in str(err.value)


def test_bad_grid_exits_2_and_runs_nothing(tmp_path, capsys):
    path = write(tmp_path, {"base": {**TINY_BASE, "methdo": "none"}})
    assert main(["--grid", str(path), "--executor", "debug", "--results", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'methdo'" in err and "did you mean 'method'" in err
    assert not (tmp_path / "res").exists()
    assert main(["--grid", str(tmp_path / "nope.yaml")]) == 2
    assert "no such grid file" in capsys.readouterr().err
    assert main(["--grid", write(tmp_path, "base: [unclosed", "broken.yaml").as_posix()]) == 2
    assert "not valid YAML" in capsys.readouterr().err


@pytest.mark.parametrize("name,count", [("demo", 18), ("smoke", 10), ("cifar", 60), ("imagenet", 14),
                                        ("ablation_dsu", 54), ("coco", 25), ("variance", 10), ("deit", 54),
                                        ("vit_cifar", 18), ("modern", 78)])
def test_shipped_grids_expand(name, count):
    grid = read_grid(EXPERIMENTS / f"{name}.yaml")
    assert len(grid.runs) == count and grid.duplicates == 0


def test_the_ablation_grid_covers_every_dsu_setting():
    grid = read_grid(EXPERIMENTS / "ablation_dsu.yaml")
    opts = {tuple(sorted(r.config.model_opts.items())) for r in grid.runs}
    cells = {dict(o).get("cell") for o in opts}
    assert cells >= {"dsu", "lstm", "gru", "none"}
    assert any(dict(o).get("forward_path") is False for o in opts)
    assert {dict(o).get("reduction") for o in opts} >= {2, 8, 16}
    assert {dict(o)["attention"] for o in opts} == {"light", "base"}
    # the public code's sample-0 refresh against the paper's per-sample one, for both attentions
    settings = {(dict(o)["attention"], dict(o).get("refresh_context")) for o in opts}
    pair = settings - {(a, None) for a in ("light", "base")}
    assert pair == {(a, m) for a in ("light", "base") for m in ("sample0", "per_sample")}
    assert {r.config.seed for r in grid.runs} == {0, 1, 2}
    assert all(r.config.drop_path == 0.2 and r.config.epochs == 180 for r in grid.runs)


def test_the_imagenet_grid_states_its_stems():
    """Every method on the 7x7 stem except MRLA-base, which runs its public model's deep stem."""
    grid = read_grid(EXPERIMENTS / "imagenet.yaml")
    stems = {(r.config.method, r.config.model_opts.get("stem", "standard")) for r in grid.runs}
    standard = ("none", "se", "eca", "rla", "mrla_light", "dla_l")
    assert stems == {(m, "standard") for m in standard} | {("mrla_base", "deep")}


def test_smoke_turns_a_grid_into_quick_synthetic_runs_of_the_same_shape():
    grid = smoke(read_grid(EXPERIMENTS / "cifar.yaml"))
    assert grid.name == "cifar-smoke" and len(grid.runs) == 60
    for spec in grid.runs:
        c = spec.config
        assert c.dataset == "synthetic" and c.depth == 164 and c.epochs == 1 and c.max_steps_per_epoch == 2
        assert c.synthetic["image_size"] == 32
        assert c.synthetic["num_classes"] == (10 if "cifar10-" in spec.name else 100)
    imagenet = smoke(read_grid(EXPERIMENTS / "imagenet.yaml"))
    shapes = {(r.config.synthetic["num_classes"], r.config.synthetic["image_size"]) for r in imagenet.runs}
    assert shapes == {(1000, 224)}


def test_the_coco_grid_is_the_papers_detection_table_and_smokes_on_small_shapes():
    grid = read_grid(EXPERIMENTS / "coco.yaml")
    points = {(r.config.task_opts["detector"], r.config.depth, r.config.method) for r in grid.runs}
    papers = ("none", "se", "eca", "mrla_light", "dla_l")
    for detector, depth in (("faster_rcnn", 50), ("faster_rcnn", 101), ("mask_rcnn", 50), ("retinanet", 50)):
        assert {(detector, depth, m) for m in papers} <= points
    assert all(r.config.task == "detection" and r.config.recipe == "coco_1x" and r.config.dataset == "coco"
               for r in grid.runs)
    assert grid.slurm["gpus_per_node"] == 8 and all(r.config.batch_size == 16 for r in grid.runs)
    quick = smoke(grid)
    for spec in quick.runs:
        c = spec.config
        assert c.dataset == "synthetic" and c.pretrained is None and c.task_opts["min_size"] == 128 and c.epochs == 1
        assert c.batch_size % 8 == 0 and c.task == "detection"


def test_dry_run_prints_every_run_and_submits_nothing(tmp_path, capsys):
    assert main(["--grid", str(EXPERIMENTS / "ablation_dsu.yaml"), "--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "54 run(s)" in out and out.count("submit") >= 54 and "model_opts.cell=gru" in out
    assert "model_opts.refresh_context=per_sample" in out
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_local_launch_records_failures_skips_finished_and_reruns_failed(tmp_path, capsys):
    # The third run cannot make one batch of 64 from 16 samples: it raises inside the job.
    path = write(tmp_path, {"name": "tiny", "base": {**TINY_BASE, "method": "none"},
                            "grid": {"variant": [{"seed": 0}, {"method": "eca"}, {"batch_size": 64}]}})
    results = tmp_path / "res"
    assert main(["--grid", str(path), "--executor", "local", "--parallel", "3", "--results", str(results)]) == 1
    out = capsys.readouterr().out
    assert "[3/3]" in out and "failed" in out and "smaller than one batch" in out
    records = {p.name: json.loads(p.read_text()) for p in (results / "tiny").glob("*.json") if p.name != "jobs.json"}
    statuses = sorted(r["status"] for r in records.values())
    assert statuses == ["completed", "completed", "failed"]
    failed = next(r for r in records.values() if r["status"] == "failed")
    assert "Traceback" in failed["error"] and "smaller than one batch" in failed["error"]
    before = {name: (results / "tiny" / name).stat().st_mtime_ns for name in records}

    grid = read_grid(path)
    plan = make_plan(grid, results)
    assert plan.submit == [] and [why.split(" ")[0] for _, why in plan.skip].count("completed") == 2
    assert main(["--grid", str(path), "--executor", "local", "--results", str(results)]) == 1
    assert "nothing to submit" in capsys.readouterr().out
    assert before == {name: (results / "tiny" / name).stat().st_mtime_ns for name in records}  # untouched

    plan, outcomes = launch(grid, results, "local", rerun_failed=True, log=lambda s: None)
    assert len(plan.submit) == 1 and [o.status for o in outcomes] == ["failed"]
    for name, record in records.items():
        if record["status"] == "completed":
            assert (results / "tiny" / name).stat().st_mtime_ns == before[name]

    assert main(["--grid", str(path), "--status", "--results", str(results)]) == 0
    assert "2 completed, 0 running, 0 cancelled, 1 failed, 0 diverged, 0 corrupt, 0 missing" in capsys.readouterr().out


def test_status_counts_missing_runs(tmp_path, capsys):
    path = write(tmp_path, {"name": "s", "base": {**TINY_BASE, "method": "none"}, "grid": {"seed": [0, 1, 2]}})
    assert main(["--grid", str(path), "--status", "--results", str(tmp_path)]) == 0
    assert "0 completed, 0 running, 0 cancelled, 0 failed, 0 diverged, 0 corrupt, 3 missing" in capsys.readouterr().out


def test_compile_is_a_grid_key_that_keeps_the_run_ids(tmp_path):
    """compile: true says how runs execute, not what they compute: same runs, same ids, the flag in each config."""
    plain = read_grid(write(tmp_path, {"name": "g", "base": {**TINY_BASE, "method": "dla_l"},
                                       "grid": {"seed": [0, 1]}}, "plain.yaml"))
    compiled = read_grid(write(tmp_path, {"name": "g", "base": {**TINY_BASE, "method": "dla_l", "compile": True},
                                          "grid": {"seed": [0, 1]}}, "compiled.yaml"))
    assert [r.run_id for r in compiled.runs] == [r.run_id for r in plain.runs]
    assert all(r.config.compile for r in compiled.runs) and not any(r.config.compile for r in plain.runs)


def test_dla_b_points_of_the_ablation_grid_are_named_dla_b():
    grid = read_grid(EXPERIMENTS / "ablation_dsu.yaml")
    base = [r for r in grid.runs if r.config.model_opts.get("attention") == "base"]
    assert base and all(r.name.startswith("dla_b-") and "attention=" not in r.name for r in base)
    light = [r for r in grid.runs if r.config.model_opts.get("attention") == "light"]
    assert light and all(r.name.startswith("dla_l-") for r in light)
    assert len({r.name for r in grid.runs}) == len(grid.runs)  # names still tell every run apart
