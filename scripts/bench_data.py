"""Data pipeline throughput next to model training throughput: does the loader keep up with the model?

    python scripts/bench_data.py --device cpu --batch 128 --batches 50 --workers 0,2
    python scripts/bench_data.py --device cuda --workers 0,4,8 --gpu-resident

Writes a CIFAR-10-format set to a temp dir, times the train loader (batches moved to --device included), then
times forward + backward + SGD step of lai_bench.models.build_model(method, "cifar", depth, 10) in the same
process, and prints loader/model: above 1 the loader is not the bottleneck.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # lai_bench without installing; the CIFAR writer of the tests

from datasets import write_cifar10  # noqa: E402  (tests/datasets.py)

from lai_bench.data import build_loaders  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_rate(root: str, args: argparse.Namespace, workers: int, gpu_resident: bool) -> float:
    """Train-loader samples/s over --batches batches, after one warm-up batch (worker start-up excluded)."""
    train, _, _ = build_loaders("cifar10", args.batch, args.batch, data_root=root, workers=workers,
                                device=args.device, gpu_resident=gpu_resident)
    device = torch.device(args.device)
    it = iter(train)
    next(it)
    sync(device)
    start = time.perf_counter()
    for _ in range(args.batches):
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    sync(device)
    return args.batches * args.batch / (time.perf_counter() - start)


def model_rate(args: argparse.Namespace) -> float | None:
    """Training samples/s of the model on random CIFAR-shaped batches, or None when it cannot be built."""
    try:
        from lai_bench.models import build_model
    except ImportError as e:
        print(f"model: cannot import lai_bench.models.build_model ({e}); skipping the model measurement")
        return None
    device = torch.device(args.device)
    model = build_model(args.method, "cifar", args.depth, 10).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(2):  # warm-up: allocator, cudnn autotuning
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(args.model_steps):
        step()
    sync(device)
    return args.model_steps * args.batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--batches", type=int, default=50, help="timed loader batches")
    p.add_argument("--workers", default="0,2", help="comma-separated worker counts to compare")
    p.add_argument("--gpu-resident", action="store_true", help="also time DeviceCifarLoader on --device")
    p.add_argument("--method", default="none")
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--model-steps", type=int, default=10, help="timed training steps")
    args = p.parse_args()

    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, batch {args.batch}")
    with tempfile.TemporaryDirectory() as root:
        write_cifar10(root, n_train=(args.batches + 2) * args.batch, n_test=args.batch, seed=0)
        rates = {f"loader workers={w}": loader_rate(root, args, int(w), False) for w in args.workers.split(",")}
        if args.gpu_resident:
            rates["loader gpu-resident"] = loader_rate(root, args, 0, True)
    model = model_rate(args)
    name = f"model {args.method}-{args.depth} train"
    for key, rate in rates.items():
        ratio = f"  loader/model {rate / model:6.2f}" if model else ""
        print(f"{key:24s} {rate:10.0f} samples/s{ratio}")
    if model:
        print(f"{name:24s} {model:10.0f} samples/s")


if __name__ == "__main__":
    main()
