"""A new task is one module and one registration: a toy regression task (MSE headline), registered here and nowhere
else, runs through the grid CLI to records, --status, the final table and a report table of its own."""
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, TensorDataset

from lai_bench.data import DatasetInfo
from lai_bench.models import build_model
from lai_bench.records.store import load_records
from lai_bench.report.build import build_report
from lai_bench.run import main
from lai_bench.runtime.measure import count_params
from lai_bench.tasks import Task, list_tasks, register_task
from lai_bench.tasks import registry as task_registry


class RegressionTask(Task):
    """Predict 4 x the mean of a noise image from a ResNet with one output; mean squared error."""

    headline_metric, headline_label = "mse", "MSE"
    sum_keys = ("loss", "n")

    def _split(self, split: int, size: int) -> TensorDataset:
        gen = torch.Generator().manual_seed(1000 * self.config.seed + split)
        x = torch.randn(size, 3, 16, 16, generator=gen)
        return TensorDataset(x, 4 * x.mean((1, 2, 3))[:, None])

    def build_data(self, world, batch_size, eval_batch_size):
        train = DataLoader(self._split(0, 64), batch_size, shuffle=True, drop_last=True,
                           generator=torch.Generator().manual_seed(self.config.seed))
        return train, DataLoader(self._split(1, 32), eval_batch_size), DatasetInfo("synthetic", 1, 16, 64, 32)

    def build_model(self, info):
        c = self.config
        return build_model(c.method, c.backbone, c.depth, 1, c.block, drop_path=c.drop_path, **c.model_opts)

    def measure(self, model, info, world):
        return {"params": count_params(model)}

    def to_device(self, batch, device):
        return [t.to(device) for t in batch]

    def step(self, net, batch):
        x, y = batch
        loss = F.mse_loss(net(x), y)
        return loss, {"loss": float(loss.detach()) * len(y), "n": len(y)}

    def train_metrics(self, sums):
        return {"train_loss": sums["loss"] / sums["n"]}

    @torch.no_grad()
    def evaluate(self, model, loader, world):
        model.eval()
        errors = [((model(x) - y) ** 2).sum() for x, y in loader]
        return {"eval_mse": float(sum(errors)) / len(loader.dataset)}

    def record_metrics(self, history):
        if not history:
            return {}
        mse = [h["eval_mse"] for h in history]
        return {"mse_final": mse[-1], "mse_best": min(mse)}

    def epoch_summary(self, entry):
        return f"eval MSE {entry['eval_mse']:.4f}"

    def headline(self, metrics):
        return f"MSE final {metrics.get('mse_final', math.nan):.4f}"


@pytest.fixture
def regression():
    register_task("regression")(RegressionTask)
    yield
    task_registry._TASKS.pop("regression")


def test_a_toy_task_runs_through_the_grid_cli_to_records_status_final_table_and_report(regression, tmp_path, capsys):
    assert "regression" in list_tasks()
    grid = tmp_path / "toy.yaml"
    grid.write_text(yaml.safe_dump({
        "name": "toy",
        "base": {"task": "regression", "dataset": "synthetic", "depth": 8, "recipe": "smoke", "epochs": 2,
                 "batch_size": 16, "eval_batch_size": 16},
        "grid": {"method": ["none", "se"]}}))
    results = tmp_path / "results"
    assert main(["--grid", str(grid), "--executor", "debug", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "MSE final" in out and "top-1" not in out and "top1" not in out
    records = {r["config"]["method"]: r for r in load_records(results / "toy")}
    assert set(records) == {"none", "se"} and all(r["status"] == "completed" for r in records.values())
    for record in records.values():
        assert record["metrics"]["mse_final"] == record["history"][-1]["eval_mse"]
        assert f"{record['metrics']['mse_final']:7.2f}" in out  # the final table's headline column
    assert main(["--grid", str(grid), "--results", str(results), "--status"]) == 0
    assert "2 completed" in capsys.readouterr().out
    written = build_report(results / "toy", tmp_path / "analysis")
    table = (tmp_path / "analysis" / "tables" / "regression.md").read_text()
    assert tmp_path / "analysis" / "tables" / "regression.md" in written["tables"]
    assert "MSE final" in table and "| ResNet |" in table and "| SE |" in table
    assert not (tmp_path / "analysis" / "tables" / "all_runs.md").exists()  # no classification row made of NaN
