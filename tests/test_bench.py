"""python -m lai_bench.bench on a tiny config: a well-formed CSV, ratios to ResNet, plots, clear errors."""
import csv
import platform

import pytest
import torch

from lai_bench.bench.cli import main
from lai_bench.bench.output import COLUMNS
from lai_bench.models import build_model
from lai_bench.runtime.measure import count_params, track_peak_memory


def test_a_tiny_benchmark_writes_a_csv_with_ratios_and_plots(tmp_path, capsys):
    code = main(["--rounds", "1", "--methods", "dla_b,dla_b_loop", "--depth", "11,20", "--batch", "2", "--steps", "1",
                 "--warmup", "0", "--num-classes", "10", "--out", str(tmp_path),
                 "--threads", "1"])  # two threads on a busy 2-core machine wait on each other at every small op
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
        ratio = float(r["train_step_s"]) / float(base["train_step_s"])
        assert float(r["train_ratio_vs_resnet"]) == pytest.approx(ratio)
        assert float(r["train_ratio_round_median"]) == pytest.approx(float(r["train_ratio_vs_resnet"]))  # one round
    assert {float(r["train_ratio_vs_resnet"]) for r in rows if r["method"] == "none"} == {1.0}
    assert all(r["machine"] and float(r["load_1min"]) >= 0 and r["variant"] == "fp32" for r in rows)
    assert {r["compile_s"] for r in rows} == {""}  # eager rows compile nothing
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == [path.with_suffix(".png").name, path.stem + "_growth.png"]
    assert all((tmp_path / p).stat().st_size > 10_000 for p in pngs)
    printed = capsys.readouterr().out
    assert "DLA-B (loop)" in printed and "x ResNet" in printed and f"wrote {path}" in printed


def test_rounds_give_one_row_per_method_with_the_median_cost(tmp_path, capsys):
    code = main(["--methods", "se", "--depth", "20", "--batch", "2", "--steps", "1", "--warmup", "0",
                 "--rounds", "3", "--num-classes", "10", "--out", str(tmp_path), "--threads", "1"])
    assert code == 0
    rows = list(csv.DictReader(next(tmp_path.glob("bench-*.csv")).open()))
    assert [r["method"] for r in rows] == ["none", "se"]
    low, high = map(float, rows[1]["train_ratio_round_range"].split("-"))
    assert low - 0.005 <= float(rows[1]["train_ratio_round_median"]) <= high + 0.005  # the range is rounded
    assert rows[0]["train_ratio_round_range"] == "1.00-1.00"
    printed = capsys.readouterr().out
    assert "[2/2 round 3] SE" in printed
    times = [float(line.split("train ")[1].split(" s/step")[0]) for line in printed.splitlines() if "] SE " in line]
    assert len(times) == 3 and float(rows[1]["train_step_s"]) == pytest.approx(sorted(times)[1], abs=1e-3)


def test_channels_last_on_cpu_adds_a_row_per_method_against_its_own_resnet(tmp_path):
    code = main(["--rounds", "1", "--methods", "mrla_light", "--depth", "20", "--batch", "2", "--steps", "1",
                 "--warmup", "0", "--num-classes", "10", "--channels-last", "--out", str(tmp_path), "--threads", "1"])
    assert code == 0
    rows = list(csv.DictReader(next(tmp_path.glob("bench-*.csv")).open()))
    assert [(r["method"], r["variant"]) for r in rows] == [
        ("none", "fp32"), ("none", "channels_last"), ("mrla_light", "fp32"), ("mrla_light", "channels_last")]
    for r in rows:
        base = next(b for b in rows if b["method"] == "none" and b["variant"] == r["variant"])
        ratio = float(r["train_step_s"]) / float(base["train_step_s"])
        assert float(r["train_ratio_vs_resnet"]) == pytest.approx(ratio)


@pytest.mark.slow
def test_compile_adds_compiled_rows_against_compiled_resnet_with_their_compile_time(tmp_path):
    code = main(["--rounds", "1", "--methods", "none", "--depth", "8", "--batch", "2", "--steps", "1", "--warmup", "0",
                 "--num-classes", "10", "--compile", "--out", str(tmp_path), "--threads", "1"])
    assert code == 0
    rows = list(csv.DictReader(next(tmp_path.glob("bench-*.csv")).open()))
    assert [(r["method"], r["variant"]) for r in rows] == [("none", "fp32"), ("none", "fp32+compile")]
    for r in rows:
        base = next(b for b in rows if b["method"] == "none" and b["variant"] == r["variant"])
        ratio = float(r["train_step_s"]) / float(base["train_step_s"])
        assert float(r["train_ratio_vs_resnet"]) == pytest.approx(ratio)
        assert (float(r["compile_s"]) > 0) if r["variant"].endswith("+compile") else r["compile_s"] == ""
    assert not list(tmp_path.glob("*-partial.csv"))  # the final CSV replaced the rows kept along the way


@pytest.mark.parametrize("args,message", [
    (["--methods", "dla_x"], "unknown method 'dla_x'; allowed: all, dense"),
    (["--methods", "se_loop"], "unknown method 'se_loop'"),
    (["--depth", "21"], "CIFAR depth 21 fits no block type"),
    (["--device", "tpu"], "unknown device 'tpu'; allowed: cpu, cuda, cuda:N"),
    (["--batch", "0"], "--batch must be >= 1"),
    (["--loop-steps", "0"], "--loop-steps must be >= 1"),
    (["--rounds", "0"], "--rounds must be >= 1"),
    (["--variants", "bf16"], "unknown variant(s) ['bf16'] for cpu; allowed: fp32"),
])
def test_bad_arguments_exit_2_with_one_clear_error_and_write_nothing(tmp_path, capsys, args, message):
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator behaviour")
def test_cpu_peak_memory_is_not_hidden_by_what_an_earlier_model_freed():
    # A 16 MB block freed raises glibc's mmap threshold (as a model's activations do), so the 8 MB
    # blocks after it live on the heap; freed, they stay resident and an RSS-growth measurement of
    # the next model would reuse them and read ~0. The tracker first returns them to the OS.
    def allocate(n):
        return [torch.ones(2 * 2**20) for _ in range(n)]  # 8 MB each

    big = torch.ones(4 * 2**20)
    del big
    earlier = allocate(40)
    pin = earlier[-1]  # the last block keeps the heap's top in use, as live tensors do
    del earlier
    with track_peak_memory("cpu") as tracker:
        held = allocate(20)
    assert tracker.peak_bytes >= 0.9 * 20 * 8 * 2**20
    del held, pin


def test_rows_measured_on_a_busy_machine_carry_a_warning():
    from lai_bench.bench.cli import add_warnings

    def row(method, ratio, load):
        return {"method": method, "impl": "fast", "display": method, "depth": 164, "variant": "fp32", "device": "cpu",
                "load_1min": load, "train_ratio_vs_resnet": ratio}

    rows = [row("none", 1.0, 0.5), row("se", 1.1, 0.5), row("dla_l", 0.4, 0.5), row("eca", 1.2, 4.8)]
    lines = add_warnings(rows, cpus=2)
    assert [r["warning"] != "" for r in rows] == [False, False, True, True]
    assert "0.40x ResNet" in rows[2]["warning"] and "load 4.8 > 2 usable CPUs" in rows[3]["warning"]
    assert len(lines) == 2 and all(line.startswith("warning: ") for line in lines)


def test_bench_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("else the backbone's: cifar 164,", "(default: classification 128,", "(default: results/bench)",
                    "(default: 3)"):
        assert default in text
