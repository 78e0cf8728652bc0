"""What only a CUDA GPU can check: AMP (bf16, fp16 with GradScaler), channels_last, compile, nccl, the GPU-resident
CIFAR loader, checkpoint/resume on the GPU. Skipped without CUDA; scripts/gpu-check.sh runs them."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

# A bare GPU machine may lack what lai_bench imports: skip, naming the package (scripts/gpu-prepare.sh carries it).
for _package in ("pydantic", "submitit", "fvcore"):
    pytest.importorskip(_package, reason=f"{_package} is not installed (bash scripts/gpu-prepare.sh carries it)")

from data_files import make_separable_cifar  # noqa: E402
from test_train import StopAfter  # noqa: E402

from lai_bench.config import RunConfig  # noqa: E402
from lai_bench.models import build_model, list_models  # noqa: E402
from lai_bench.train.lifecycle import Interrupted, Run  # noqa: E402

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu-check.sh)")]

SYNTH = {"num_classes": 4, "image_size": 16, "train_size": 96, "eval_size": 37}


def tiny(**kw) -> RunConfig:
    base = dict(method="dla_l", depth=20, dataset="synthetic", synthetic=SYNTH, recipe="smoke", epochs=2,
                batch_size=16, eval_batch_size=16, measure=False, drop_path=0.1, device="cuda")
    return RunConfig(**{**base, **kw})


@pytest.mark.parametrize("amp", ["bf16", "fp16", "none"])
@pytest.mark.parametrize("method", ["dla_l", "dla_b", "mrla_base"])
def test_amp_runs_train_and_stay_finite(tmp_path, amp, method):
    record = Run(tiny(method=method, amp=amp), tmp_path).run()
    assert record["status"] == "completed", record.get("error")
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in record["history"])


@pytest.mark.parametrize("method", list_models())
def test_channels_last_computes_what_nchw_computes(method):
    torch.manual_seed(0)
    model = build_model(method, "cifar", 20, 10).cuda().eval()
    x = torch.randn(8, 3, 32, 32, device="cuda")
    with torch.no_grad():
        nchw = model(x)
        nhwc = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(nhwc, nchw, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("method", list_models())
def test_compiled_train_step_on_cuda_is_one_graph_and_equals_eager(method):
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = build_model(method, "cifar", 20, 10, drop_path=0.0).cuda().train()
    compiled = build_model(method, "cifar", 20, 10, drop_path=0.0).cuda().train()
    compiled.load_state_dict(eager.state_dict())
    x, y = torch.randn(8, 3, 32, 32, device="cuda"), torch.randint(0, 10, (8,), device="cuda")

    def loss_of(model):
        return lambda a, b: F.cross_entropy(model(a), b)

    explanation = torch._dynamo.explain(loss_of(compiled))(x, y)
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0
    torch._dynamo.reset()
    loss_of(eager)(x, y).backward()
    torch.compile(loss_of(compiled), fullgraph=True)(x, y).backward()
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=2e-2, atol=2e-3, msg=name)


def test_a_compiled_bf16_channels_last_run_trains(tmp_path):
    record = Run(tiny(compile=True, amp="bf16", channels_last=True), tmp_path).run()
    assert record["status"] == "completed" and record["compile_s"] > 0


def test_nccl_with_one_process_trains_a_ddp_step():
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        model = build_model("dla_l", "cifar", 20, 10).cuda()
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0], static_graph=True)
        x, y = torch.randn(8, 3, 32, 32, device="cuda"), torch.randint(0, 10, (8,), device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(ddp(x), y)
        loss.backward()
        assert dist.get_backend() == "nccl"
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        t = torch.ones(1, device="cuda")
        dist.all_reduce(t)
        assert t.item() == 1.0
    finally:
        dist.destroy_process_group()


def test_the_gpu_resident_cifar_loader_trains_on_the_gpu(tmp_path):
    make_separable_cifar(tmp_path / "data", num_classes=10, n_train=640, n_test=200)
    c = RunConfig(method="dla_l", depth=20, dataset="cifar10", data_root=str(tmp_path / "data"), recipe="smoke",
                  epochs=3, batch_size=16, eval_batch_size=100, lr=0.05, measure=False, gpu_resident=True,
                  device="cuda")
    record = Run(c, tmp_path / "out").run()
    assert record["status"] == "completed"
    assert record["metrics"]["top1_final"] > 30.0, record["history"]  # chance is 10%


def test_a_run_interrupted_on_the_gpu_resumes_and_completes(tmp_path):
    reference = Run(tiny(amp="none"), tmp_path / "ref").run()
    with pytest.raises(Interrupted):
        Run(tiny(amp="none"), tmp_path / "cut", stop=StopAfter(8)).run()  # mid-epoch 2 (6 steps per epoch)
    resumed = Run(tiny(amp="none"), tmp_path / "cut").run()
    assert resumed["status"] == "completed" and len(resumed["history"]) == 2
    # cuDNN is not bitwise deterministic: the same run, resumed, lands within float noise of the uninterrupted one.
    for got, want in zip(resumed["history"], reference["history"]):
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-2)


@pytest.mark.parametrize("detector", ["faster_rcnn", "mask_rcnn", "retinanet"])
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_a_detection_run_trains_and_evaluates_under_amp(tmp_path, detector, amp):
    pytest.importorskip("pycocotools", reason="pycocotools is not installed (bash scripts/gpu-prepare.sh carries it)")
    config = RunConfig(task="detection", task_opts={"detector": detector, "min_size": 128, "max_size": 192},
                       method="dla_l", backbone="imagenet", depth=18, dataset="synthetic",
                       synthetic={"image_size": 128, "train_size": 8, "eval_size": 4}, recipe="smoke", batch_size=4,
                       eval_batch_size=4, amp=amp, device="cuda", measure_steps=2)
    record = Run(config, tmp_path).run()
    assert record["status"] == "completed" and record["throughput"]["infer_images_per_s"] > 0
    assert all(v == v for k, v in record["history"][0].items() if k.startswith("train_"))  # finite losses
