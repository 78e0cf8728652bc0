"""python -m lai_bench.bench on a tiny config: a well-formed CSV, ratios to ResNet, plots, clear errors."""
import csv

import pytest

from lai_bench.bench import COLUMNS, main
from lai_bench.measure import count_params
from lai_bench.models import build_model


def test_a_tiny_benchmark_writes_a_csv_with_ratios_and_plots(tmp_path, capsys):
    code = main(["--methods", "dla_b,dla_b_loop", "--depth", "11,20", "--batch", "2", "--steps", "1",
                 "--warmup", "0", "--num-classes", "10", "--out", str(tmp_path)])
    assert code == 0
    [path] = tmp_path.glob("bench-*.csv")
    rows = list(csv.DictReader(path.open()))
    assert tuple(rows[0]) == COLUMNS
    assert [(r["method"], r["impl"], int(r["depth"])) for r in rows] == [
        (m, impl, d) for d in (11, 20) for m, impl in (("none", "fast"), ("dla_b", "fast"), ("dla_b_loop", "loop"))]
    for r in rows:
        block = "bottleneck" if r["depth"] == "11" else "basic"
        assert int(r["params"]) == count_params(build_model(r["method"].removesuffix("_loop"), "cifar",
                                                            int(r["depth"]), 10, block))
        assert int(r["flops"]) > 0 and float(r["train_step_s"]) > 0 and float(r["infer_samples_per_s"]) > 0
        base = next(b for b in rows if b["method"] == "none" and b["depth"] == r["depth"])
        assert float(r["train_ratio_vs_resnet"]) == pytest.approx(float(r["train_step_s"]) / float(base["train_step_s"]))
    assert {float(r["train_ratio_vs_resnet"]) for r in rows if r["method"] == "none"} == {1.0}
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == [path.with_suffix(".png").name, path.stem + "_growth.png"]
    assert all((tmp_path / p).stat().st_size > 10_000 for p in pngs)
    printed = capsys.readouterr().out
    assert "DLA-B (loop)" in printed and "x ResNet" in printed and f"wrote {path}" in printed


@pytest.mark.parametrize("args,message", [
    (["--methods", "dla_x"], "unknown method 'dla_x'; allowed: all, dense"),
    (["--methods", "se_loop"], "unknown method 'se_loop'"),
    (["--depth", "21"], "CIFAR depth 21 fits no block type"),
    (["--device", "tpu"], "unknown device 'tpu'; allowed: cpu, cuda, cuda:N"),
    (["--batch", "0"], "--batch must be >= 1"),
])
def test_bad_arguments_exit_2_with_one_clear_error_and_write_nothing(tmp_path, capsys, args, message):
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
