"""torch.compile captures every method's training step whole, and compiled runs compute what eager ones do."""
import json

import pytest
import torch
import torch.nn.functional as F

from lai_bench.models import build_model, list_models, method_info
from lai_bench.train.cli import main as train_main


def train_loss(model):
    def loss(x, y):
        return F.cross_entropy(model(x), y)

    return loss


def batch(size=16, n=4, classes=10):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, size, size, generator=gen), torch.randint(0, classes, (n,), generator=gen)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.parametrize("method", list_models())
def test_the_train_step_of_every_method_is_one_graph(method):
    """Forward and loss in one graph with no break; AOTAutograd derives the backward from it, so the whole
    train step (forward + backward) is captured. Drop-path on, as in training."""
    model = build_model(method, "cifar", 20, 10, drop_path=0.1).train()
    explanation = torch._dynamo.explain(train_loss(model))(*batch())
    assert explanation.graph_break_count == 0, [str(b.reason) for b in explanation.break_reasons]
    assert explanation.graph_count == 1


ON_TOKENS = [m for m in list_models() if "tokens" in method_info(m).cls.layouts]


@pytest.mark.parametrize("method", ON_TOKENS)
def test_the_train_step_of_every_vit_method_is_one_graph(method):
    """The same on a tiny ViT (2 stages: the stage carry crosses once), drop path on, SDPA attention inside."""
    model = build_model(method, "vit_cifar_tiny", 5, 10, drop_path=0.1).train()
    explanation = torch._dynamo.explain(train_loss(model))(*batch(size=32, n=2))
    assert explanation.graph_break_count == 0, [str(b.reason) for b in explanation.break_reasons]
    assert explanation.graph_count == 1


@pytest.mark.slow
@pytest.mark.parametrize("method", list_models())
def test_compiled_outputs_and_gradients_equal_eager(method):
    """Dynamo's graph + AOTAutograd's backward (backend aot_eager: the graphs inductor would compile, run by
    PyTorch's kernels), train mode, against eager; float64 so any difference is a different computation."""
    torch.manual_seed(0)
    eager = build_model(method, "cifar", 20, 10).double().train()
    compiled = build_model(method, "cifar", 20, 10).double().train()
    compiled.load_state_dict(eager.state_dict())
    x, y = batch()
    x = x.double()
    loss_eager = train_loss(eager)(x, y)
    loss_eager.backward()
    loss_compiled = torch.compile(train_loss(compiled), backend="aot_eager", fullgraph=True)(x, y)
    loss_compiled.backward()
    torch.testing.assert_close(loss_compiled, loss_eager, rtol=1e-12, atol=1e-12)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-9, atol=1e-12, msg=name)
    for (name, a), b in zip(eager.named_buffers(), compiled.buffers()):  # BN running statistics
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dla_l"])
def test_inductor_compiled_step_equals_eager(method):
    """The real compiler (inductor, C++ on CPU; minutes per model on 2 cores, so one method here, every method in
    scripts/gpu-check.sh): float32, kernel fusion may reorder sums."""
    torch.manual_seed(0)
    eager = build_model(method, "cifar", 8, 10).train()
    compiled = build_model(method, "cifar", 8, 10).train()
    compiled.load_state_dict(eager.state_dict())
    x, y = batch(size=8)
    loss_eager = train_loss(eager)(x, y)
    loss_eager.backward()
    loss_compiled = torch.compile(train_loss(compiled), fullgraph=True)(x, y)
    loss_compiled.backward()
    torch.testing.assert_close(loss_compiled, loss_eager, rtol=1e-4, atol=1e-5)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.slow
def test_a_compiled_run_records_its_compile_time_and_trains_like_eager(tmp_path):
    args = ["--method", "none", "--depth", "8", "--dataset", "synthetic", "--recipe", "smoke", "--epochs", "1",
            "--batch-size", "8", "--max-steps-per-epoch", "3", "--synthetic", "image_size=8",
            "--synthetic", "num_classes=4", "--no-measure", "--device", "cpu"]
    assert train_main(args + ["--out", str(tmp_path / "eager")]) == 0
    assert train_main(args + ["--compile", "--out", str(tmp_path / "compiled")]) == 0
    eager, = [json.loads(p.read_text()) for p in (tmp_path / "eager").glob("*.json")]
    compiled, = [json.loads(p.read_text()) for p in (tmp_path / "compiled").glob("*.json")]
    assert eager["run_id"] == compiled["run_id"]  # compiling is how a run executes, not what it computes
    assert compiled["config"]["compile"] is True and compiled["compile_s"] > 0
    assert eager["compile_s"] is None
    for a, b in zip(eager["history"], compiled["history"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
        assert b["eval_loss"] == pytest.approx(a["eval_loss"], rel=1e-3)
