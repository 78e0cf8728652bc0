"""Bad config values are one clear error before anything runs (issue 17, points 4, 5 and the config parts of 8).

Each value below used to pass validation and fail at run time (or with a traceback): typed now by one schema,
RunConfig's field types, checked by pydantic; the message names the key path, the bad value and what is allowed.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lai_bench import data
from lai_bench.config import ConfigError, RunConfig, config_from_dict
from lai_bench.launch.grid import GridError, expand, read_grid
from lai_bench.models import list_models, model_options
from lai_bench.run import main as run_main
from lai_bench.train.cli import main as train_main
from lai_bench.validate import validate

ROOT = Path(__file__).resolve().parent.parent
CIFAR_MAX_DEPTH = 1202  # ResNet-1202, the deepest CIFAR ResNet published
SYNTH = {"num_classes": 2, "image_size": 8, "train_size": 8, "eval_size": 4}
BAD_VALUES = [  # (overrides of a dla_l config, the error it must give)
    ({"model_opts": {"reduction": "abc"}}, "model_opts.reduction must be an integer >= 1, got 'abc'"),
    ({"model_opts": {"reduction": 0}}, "model_opts.reduction must be an integer >= 1, got 0"),
    ({"method": "se", "model_opts": {"reduction": 0}}, "model_opts.reduction must be an integer >= 1, got 0"),
    ({"method": "dianet", "model_opts": {"reduction": -4}}, "model_opts.reduction must be an integer >= 1, got -4"),
    ({"model_opts": {"forward_path": "maybe"}}, "model_opts.forward_path must be true or false, got 'maybe'"),
    ({"device": "gpu0"}, "device must be auto, cpu, cuda, cuda:N (N >= 0) or mps, got 'gpu0'"),
    ({"workers": -1}, "workers must be an integer >= 0, got -1"),
    ({"momentum": -5}, "momentum must be a number in [0, 1), got -5"),
    ({"lr": float("nan")}, "lr must be a finite number > 0, got nan"),
    ({"lr": True}, "lr must be a finite number > 0, got True"),
    ({"synthetic": {"num_clases": 3}}, "unknown key 'synthetic.num_clases' (did you mean 'num_classes'?); allowed: "
                                       "num_classes, image_size, train_size, eval_size, seed, noise"),
    ({"method": "none", "model_opts": {"celll": "dsu"}}, "model_opts: unknown option 'celll': method 'none' takes no "
                                                         "options (model_opts may set only the backbone's stem)"),
]


def config(**overrides) -> dict:
    return {"method": "dla_l", "depth": 20, **overrides}


@pytest.mark.parametrize("overrides,message", BAD_VALUES)
def test_a_bad_value_is_one_line_naming_key_value_and_what_is_allowed(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate(config_from_dict(config(**overrides)))
    assert str(err.value) == message


def bad_option_values(method: str, backbone: str) -> dict[str, list]:
    """Values each typed option of the method must reject: ints are sizes (reduction, head_dim, rla_channels)."""
    out = {}
    for name, default in model_options(method, backbone).items():
        kind = bool if name in ("forward_path", "backward_path") else type(default)  # None: "unset", a bool option
        out[name] = {bool: ["maybe", 1], int: ["abc", 0, -1, 2.5, True]}.get(kind, [])
    return {name: values for name, values in out.items() if values}


@pytest.mark.parametrize("method", [m for m in list_models() if bad_option_values(m, "cifar")])
def test_method_options_are_typed_as_their_registered_defaults(method):
    for backbone, depth in (("cifar", 20), ("imagenet", 18)):
        for name, values in bad_option_values(method, backbone).items():
            for value in values:
                c = RunConfig(method=method, backbone=backbone, depth=depth, model_opts={name: value})
                with pytest.raises(ConfigError, match=rf"^model_opts\.{name} must be "):
                    validate(c)


def test_an_absurd_cifar_depth_is_rejected_at_once_naming_the_bound():
    for depth in (60002, 5_000_000, CIFAR_MAX_DEPTH + 6):
        start = time.perf_counter()
        with pytest.raises(ConfigError, match=rf"depth must be at most {CIFAR_MAX_DEPTH} .*, got {depth}"):
            validate(RunConfig(method="dla_b", depth=depth))
        assert time.perf_counter() - start < 0.5
    with pytest.raises(ConfigError, match=r"ImageNet depth 51 is not a ResNet; allowed: \[10, 14, 18"):
        validate(RunConfig(backbone="imagenet", depth=51))
    depth_help = next(f.metadata["help"] for f in RunConfig.__dataclass_fields__.values() if f.name == "depth")
    assert f"at most {CIFAR_MAX_DEPTH}" in depth_help


def test_scientific_notation_is_a_number_and_valid_values_keep_their_run_ids():
    c = validate(config_from_dict({"method": "dla_l", "lr": "1e-1", "weight_decay": "1e-4"}))
    assert (c.lr, c.weight_decay) == (0.1, 1e-4)
    assert c.run_id() == RunConfig(method="dla_l").run_id() == "9f6dd71e7b03"  # the cifar recipe's own values
    kept = validate(config_from_dict({"lr": 1, "drop_path": 0, "synthetic": {"noise": 0}}))
    assert type(kept.lr) is int and type(kept.drop_path) is int  # as written: run ids hash the value given


def test_scientific_notation_in_a_grid_yaml(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("base: {method: none, lr: 1e-3, weight_decay: 5e-4}\ngrid: {gamma: [1e-1, 0.5]}\n"
                    "include: [{lr: 1e6}]\n")
    grid = read_grid(path)
    assert {(r.config.lr, r.config.weight_decay, r.config.gamma) for r in grid.runs} == {
        (1e-3, 5e-4, 0.1), (1e-3, 5e-4, 0.5), (1e6, 5e-4, 0.1)}


def test_the_train_cli_reads_scientific_notation(tmp_path):
    argv = ["--method", "none", "--depth", "8", "--recipe", "smoke", "--epochs", "1", "--batch-size", "4",
            "--eval-batch-size", "4", "--no-measure", "--lr", "1e-3", "--weight-decay", "5e-4",
            *[f"--synthetic={k}={v}" for k, v in SYNTH.items()], "--out", str(tmp_path)]
    assert train_main(argv) == 0
    record = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert (record["config"]["lr"], record["config"]["weight_decay"]) == (1e-3, 5e-4)


@pytest.mark.parametrize("argv,message", [
    (["--device", "gpu0"], "error: device must be auto, cpu, cuda, cuda:N (N >= 0) or mps, got 'gpu0'"),
    (["--method", "dla_l", "--opt", "reduction=abc"], "error: model_opts.reduction must be an integer >= 1, got 'abc'"),
    (["--momentum", "-5"], "error: momentum must be a number in [0, 1), got -5"),
])
def test_the_train_cli_exits_2_with_one_error_line(tmp_path, capsys, argv, message):
    assert train_main([*argv, "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == message
    assert not list(tmp_path.iterdir())


def test_a_malformed_cli_pair_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        train_main(["--opt", "reduction", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "error: --opt expects KEY=VALUE, got 'reduction'" in capsys.readouterr().err


def write_grid(tmp_path: Path, base: str, slurm: str = "") -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(f"base: {{method: dla_l, depth: 20, {base}}}\n" + (f"slurm: {{{slurm}}}\n" if slurm else ""))
    return path


@pytest.mark.parametrize("base,slurm,message", [
    ("model_opts: {reduction: abc}", "", "model_opts.reduction must be an integer >= 1, got 'abc'"),
    ("model_opts: {reduction: 0}", "", "model_opts.reduction must be an integer >= 1, got 0"),
    ("device: gpu0", "", "device must be auto, cpu, cuda, cuda:N (N >= 0) or mps, got 'gpu0'"),
    ("workers: -1", "", "workers must be an integer >= 0, got -1"),
    ("momentum: -5", "", "momentum must be a number in [0, 1), got -5"),
    ("lr: .nan", "", "lr must be a finite number > 0, got nan"),
    ("synthetic: {num_clases: 3}", "", "unknown key 'synthetic.num_clases' (did you mean 'num_classes'?)"),
    ("seed: 0", "mem_gb: -4", "slurm.mem_gb must be a finite number > 0, got -4"),
    ("seed: 0", "cpus_per_task: eight", "slurm.cpus_per_task must be an integer >= 1, got 'eight'"),
])
def test_a_bad_grid_value_exits_2_naming_the_key(tmp_path, capsys, base, slurm, message):
    path = write_grid(tmp_path, base, slurm)
    assert run_main(["--grid", str(path), "--dry-run", "--results", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("base", ["model_opts: {reduction: abc}", "depth: 60002"])
def test_the_grid_cli_prints_no_traceback(tmp_path, base):
    path = write_grid(tmp_path, base)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "lai_bench.run", "--grid", str(path), "--dry-run", "--results",
                           str(tmp_path / "res")], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and ("model_opts.reduction" in proc.stderr or "depth" in proc.stderr)


def test_the_synthetic_schema_has_the_data_modules_keys():
    from lai_bench.config import SyntheticOptions

    assert list(SyntheticOptions.__annotations__) == list(data._SYNTHETIC_DEFAULTS)
    with pytest.raises(GridError, match=r"synthetic\.noise must be a finite number >= 0, got -1"):
        expand({"base": {"synthetic": {"noise": -1}}})
