"""A plug-in task in one file, outside lai_bench: regression of a noise image's scaled mean (MSE headline), with an
option of its own (`task_opts.scale`) and a data set of its own (`noise_means`). A grid names this module in
`plugins:`; nothing in lai_bench names it."""
import math

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, with_config
from torch.utils.data import DataLoader, TensorDataset
from typing_extensions import TypedDict

from lai_bench.config import ConfigError
from lai_bench.config.run_config import Positive
from lai_bench.data import DatasetInfo
from lai_bench.models import build_model
from lai_bench.runtime.measure import count_params
from lai_bench.tasks import DataSet, Task, register_task

IMAGE = 16


@with_config(ConfigDict(extra="forbid"))
class RegressionOptions(TypedDict, total=False):
    scale: Positive  # the target is scale x the image's mean


@register_task("toy_regression")
class RegressionTask(Task):
    """Predict `scale` x the mean of a noise image from a network with one output; mean squared error."""

    headline_metric, headline_label = "mse", "MSE"
    sum_keys = ("loss", "n")
    options = RegressionOptions
    option_defaults = {"scale": 4.0}
    datasets = (DataSet("noise_means", "noise images and their scaled means, built from the seed; no files",
                        synthetic=True),)
    bench_defaults = {"batch": 8, "num_classes": 1}

    @classmethod
    def check_config(cls, config):
        if config.task_opts["scale"] > 100:
            raise ConfigError(f"task_opts.scale {config.task_opts['scale']} is too large; allowed: <= 100")

    def _split(self, split: int, size: int) -> TensorDataset:
        gen = torch.Generator().manual_seed(1000 * self.config.seed + split)
        x = torch.randn(size, 3, IMAGE, IMAGE, generator=gen)
        return TensorDataset(x, self.config.task_opts["scale"] * x.mean((1, 2, 3))[:, None])

    def build_data(self, world, batch_size, eval_batch_size):
        train = DataLoader(self._split(0, 64), batch_size, shuffle=True, drop_last=True,
                           generator=torch.Generator().manual_seed(self.config.seed))
        return train, DataLoader(self._split(1, 32), eval_batch_size), DatasetInfo("noise_means", 1, IMAGE, 64, 32)

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
