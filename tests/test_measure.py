"""Tests for lai_bench.runtime.measure: exact counts, fvcore conventions, side-effect freedom."""

import logging

import pytest
import torch
import torchvision
from torch import nn

from lai_bench.runtime.measure import (
    FlopReport,
    count_flops,
    count_params,
    measure_model,
    measure_throughput,
    peak_memory,
    track_peak_memory,
)


class SortHead(nn.Module):
    """Tiny model whose forward uses ops fvcore has no FLOP formula for."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(10, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sort(self.fc(x), dim=1).values
        return torch.special.erfinv(0.5 * torch.tanh(y))


def tiny_cnn(num_classes: int = 4) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, num_classes),
    )


# --- parameters ------------------------------------------------------------


def test_resnet18_params_exact():
    assert count_params(torchvision.models.resnet18()) == 11_689_512


def test_trainable_only_skips_frozen_params():
    model = nn.Sequential(nn.Linear(10, 5), nn.Linear(5, 2))
    model[0].requires_grad_(False)
    assert count_params(model) == 55 + 12
    assert count_params(model, trainable_only=True) == 12


def test_tied_weights_counted_once():
    a = nn.Linear(4, 4, bias=False)
    b = nn.Linear(4, 4, bias=False)
    b.weight = a.weight
    assert count_params(nn.Sequential(a, b)) == 16


# --- FLOPs -----------------------------------------------------------------


def test_conv_flops_one_mac_is_one_flop():
    # Each of the 8 x 8 x 8 outputs needs 3 * 3 * 3 multiply-adds.
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    report = count_flops(conv, input_size=(3, 8, 8))
    assert isinstance(report, FlopReport)
    assert report.total == 8 * 3 * 9 * 64
    assert report.by_operator == {"conv": 8 * 3 * 9 * 64}
    assert report.unsupported == {}


def test_linear_flops_and_batch_scaling():
    linear = nn.Linear(10, 5)
    assert count_flops(linear, input_size=(10,)).total == 10 * 5
    assert count_flops(linear, input_size=(10,), batch=3).total == 3 * 10 * 5


def test_resnet50_flops_match_reference():
    report = count_flops(torchvision.models.resnet50(), input_size=(3, 224, 224))
    assert report.total == pytest.approx(4.11e9, rel=0.01)
    # Residual adds and max-pool have no fvcore formula; they must be reported, not hidden.
    assert set(report.unsupported) == {"aten::add_", "aten::max_pool2d"}


def test_unsupported_ops_listed_and_not_logged(caplog):
    with caplog.at_level(logging.WARNING):
        report = count_flops(SortHead(), input_size=(10,))
    assert report.total == 50  # only the Linear is countable
    assert report.unsupported["aten::sort"] == 1
    assert report.unsupported["aten::erfinv"] == 1
    assert not [r for r in caplog.records if r.name.startswith("fvcore")]


class WithSpare(nn.Module):
    """Registers a submodule its forward never calls, plus an Identity that is called."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(10, 5)
        self.skip = nn.Identity()
        self.spare = nn.Linear(5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(self.fc(x))


def test_uncalled_modules_reported():
    # Identity runs no ops, so it looks uncalled to the tracer; it must not be listed.
    report = count_flops(WithSpare(), input_size=(10,))
    assert report.uncalled_modules == ["spare"]


def test_flops_restore_train_mode_per_module():
    model = tiny_cnn().train()
    model[1].eval()  # e.g. a frozen BatchNorm inside a training model
    count_flops(model, input_size=(3, 8, 8))
    assert model.training
    assert not model[1].training
    assert all(m.training for i, m in enumerate(model) if i != 1)

    model.eval()
    count_flops(model, input_size=(3, 8, 8))
    assert not any(m.training for m in model.modules())


def test_flops_follow_model_dtype():
    model = nn.Linear(10, 5).double()
    assert count_flops(model, input_size=(10,)).total == 50


# --- throughput ------------------------------------------------------------


@pytest.mark.parametrize("train", [True, False])
def test_throughput_positive_and_caller_untouched(train):
    model = tiny_cnn().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = measure_throughput(model, (3, 16, 16), 8, 4, "cpu", steps=3, warmup=1, train=train)
    assert result["samples_per_s"] > 0
    assert result["step_time_s_median"] > 0
    assert len(result["step_times_s"]) == 3
    assert all(t > 0 for t in result["step_times_s"])
    assert result["samples_per_s"] == pytest.approx(8 / result["step_time_s_median"])
    # Weights, BN running stats, grads and mode all as the caller left them.
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert model.training


def test_throughput_amp_and_channels_last_on_cpu():
    result = measure_throughput(
        tiny_cnn(),
        (3, 16, 16),
        batch_size=4,
        num_classes=4,
        device="cpu",
        steps=2,
        warmup=1,
        amp_dtype=torch.bfloat16,
        channels_last=True,
    )
    assert result["samples_per_s"] > 0


# --- memory ----------------------------------------------------------------

_BIG = 256 * 2**20  # bytes


def _touch_big_tensor() -> float:
    # torch.ones writes every page, so they really become resident.
    t = torch.ones(_BIG // 4, dtype=torch.float32)
    return float(t.sum())


def test_peak_memory_sees_large_allocation():
    result = peak_memory(_touch_big_tensor, "cpu")
    assert set(result) == {"peak_rss_bytes", "rss_growth_bytes"}
    assert result["rss_growth_bytes"] >= _BIG // 2
    assert result["peak_rss_bytes"] >= result["rss_growth_bytes"]


def test_track_peak_memory_context_manager():
    with track_peak_memory("cpu") as tracker:
        _touch_big_tensor()
    assert tracker.kind == "cpu_rss_growth"
    assert tracker.peak_bytes >= _BIG // 2
    assert tracker.as_dict()["rss_growth_bytes"] == tracker.peak_bytes


# --- combined --------------------------------------------------------------


def test_measure_model_record():
    model = tiny_cnn()
    record = measure_model(
        model, (3, 16, 16), num_classes=4, device="cpu", batch_size=8, steps=2, warmup=1
    )
    assert set(record) == {
        "params",
        "flops",
        "flops_unsupported",
        "train_samples_per_s",
        "train_step_time_s",
        "infer_samples_per_s",
        "infer_step_time_s",
        "peak_memory_bytes",
        "peak_memory_kind",
        "device",
        "compile_s",
    }
    assert record["compile_s"] is None  # eager: nothing compiled
    assert record["params"] == count_params(model)
    assert record["flops"] == count_flops(model, (3, 16, 16)).total > 0
    assert record["train_samples_per_s"] > 0 and record["infer_samples_per_s"] > 0
    assert record["peak_memory_bytes"] >= 0
    assert record["peak_memory_kind"] == "cpu_rss_growth"
    assert record["device"] == "cpu"
