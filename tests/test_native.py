"""The native CPU kernels (lai_bench/models/native.py) compute PyTorch's per-sample depthwise convs."""
import shutil
import sys

import pytest
import torch
import torch.nn.functional as F

from lai_bench.models import fused, native
from lai_bench.models.layers import LightAttention

SHAPES = [(2, 3, 5, 7), (2, 3, 1, 1), (1, 2, 2, 5), (1, 2, 3, 3), (2, 3, 8, 8), (1, 2, 16, 16), (1, 2, 32, 32),
          (1, 2, 7, 7), (1, 1, 14, 14), (1, 1, 4, 20), (1, 1, 56, 56)]


pytestmark = pytest.mark.skipif(native.find_compiler() is None,
                                reason="no C++ compiler: the native kernels cannot be built")


def torch_conv(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    return F.conv2d(x.reshape(1, b * c, h, w), kernels.reshape(b * c, 1, 3, 3), padding=1, groups=b * c).view_as(x)


def test_the_kernels_build_and_load_where_a_compiler_is():
    assert native.available()


def test_a_shift_kernel_moves_each_plane_by_hand():
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    right = torch.zeros(1, 1, 3, 3)
    right[0, 0, 1, 2] = 1.0  # out[i, j] = x[i, j + 1], zero past the last column
    expected = torch.tensor([[2.0, 3.0, 0.0], [5.0, 6.0, 0.0], [8.0, 9.0, 0.0]])
    assert torch.equal(native.depthwise3x3(x, right)[0, 0], expected)
    # flipped, the same kernel reads the left neighbour: out[i, j] = x[i, j - 1]
    assert torch.equal(native.depthwise3x3(x, right, flip=True)[0, 0], torch.tensor(
        [[0.0, 1.0, 2.0], [0.0, 4.0, 5.0], [0.0, 7.0, 8.0]]))
    # the kernel gradient of tap (1, 2) for an all-ones output gradient: the sum of x[:, 1:]
    grad = native.depthwise3x3_kernel_grad(torch.ones(1, 1, 3, 3), x)
    assert grad[0, 0, 1, 2] == x[0, 0, :, 1:].sum() and grad[0, 0, 1, 1] == x.sum()


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("shape", SHAPES)
def test_conv_equals_pytorchs_with_flip_and_addend(shape, dtype, tol):
    gen = torch.Generator().manual_seed(0)
    x, addend = torch.randn(shape, generator=gen, dtype=dtype), torch.randn(shape, generator=gen, dtype=dtype)
    kernels = torch.randn(*shape[:2], 3, 3, generator=gen, dtype=dtype)
    torch.testing.assert_close(native.depthwise3x3(x, kernels), torch_conv(x, kernels), rtol=tol, atol=tol)
    torch.testing.assert_close(native.depthwise3x3(x, kernels, addend, flip=True),
                               torch_conv(x, kernels.flip((2, 3))) + addend, rtol=tol, atol=tol)
    expected = torch_conv(x, kernels) + addend
    native.depthwise3x3(x, kernels, addend, out=addend)  # in place into the addend
    torch.testing.assert_close(addend, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-11), (torch.float32, 1e-4)])
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_gradient_equals_autograds(shape, dtype, tol):
    gen = torch.Generator().manual_seed(1)
    x, grad = torch.randn(shape, generator=gen, dtype=dtype), torch.randn(shape, generator=gen, dtype=dtype)
    kernels = torch.randn(*shape[:2], 3, 3, generator=gen, dtype=dtype, requires_grad=True)
    torch_conv(x, kernels).backward(grad)
    torch.testing.assert_close(native.depthwise3x3_kernel_grad(grad, x), kernels.grad, rtol=tol, atol=tol)


def test_channels_last_inputs_give_the_same_numbers():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 16, 16, generator=gen, dtype=torch.float64)
    kernels = torch.randn(2, 4, 3, 3, generator=gen, dtype=torch.float64)
    x_cl = x.to(memory_format=torch.channels_last)
    assert torch.equal(native.depthwise3x3(x_cl, kernels), native.depthwise3x3(x, kernels))
    assert torch.equal(native.depthwise3x3_kernel_grad(x_cl, x_cl), native.depthwise3x3_kernel_grad(x, x))


def test_mismatched_shapes_are_one_clear_error():
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"kernels \(2, 3, 3\).*expected kernels \[B, C, 3, 3\]"):
        native.depthwise3x3(x, torch.randn(2, 3, 3))
    with pytest.raises(ValueError, match="must match"):
        native.depthwise3x3_kernel_grad(torch.randn(2, 3, 8, 7), x)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_the_kernels_share_pytorchs_openmp_runtime():
    """Two OpenMP runtimes would each keep a pool of spinning threads on the same cores."""
    assert native.available()
    with open("/proc/self/maps") as maps:
        runtimes = {line.split()[-1] for line in maps if "libgomp" in line or "libiomp" in line}
    assert len(runtimes) == 1, runtimes


def test_builds_are_cached_per_source_and_a_failed_build_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("LAI_BENCH_NATIVE_CACHE", str(tmp_path))
    compiler = native.find_compiler()
    path = native.build(compiler)
    assert path.parent == tmp_path and path.exists()
    stamp = path.stat().st_mtime_ns
    assert native.build(compiler) == path and path.stat().st_mtime_ns == stamp  # cached, not rebuilt
    with pytest.raises(RuntimeError, match="false failed to build depthwise3x3.cpp"):
        native.build(shutil.which("false"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no half-written files left behind


def test_switched_off_the_fused_path_uses_pytorchs_convs(monkeypatch):
    monkeypatch.setenv("LAI_BENCH_NATIVE", "0")
    native._library.cache_clear()
    try:
        assert not native.available() and not native.supports(torch.zeros(1))
    finally:
        monkeypatch.undo()
        native._library.cache_clear()
    assert native.available()


@pytest.mark.parametrize("refresh", [False, True])
def test_light_block_gives_the_same_training_step_with_and_without_native_kernels(monkeypatch, refresh):
    """MRLA-light (one conv term) and DLA-L's refreshed identity (two): whole batch slices, float64."""
    monkeypatch.setattr(fused, "MIX_SLICE_BYTES", 2 * 4 * 16 * 16 * 8)  # two samples per slice, three slices
    torch.manual_seed(0)
    attn = LightAttention(4, head_dim=2).double().train()
    conv = torch.nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False).double()
    x, o = torch.randn(6, 4, 16, 16, dtype=torch.float64), torch.randn(6, 4, 16, 16, dtype=torch.float64)
    d = torch.rand(6, 4, dtype=torch.float64)

    def step(use_native: bool):
        monkeypatch.setattr(native, "supports", native.supports if use_native else (lambda t: False))
        for p in [*attn.parameters(), *conv.parameters()]:
            p.grad = None
        xs, os_ = x.clone().requires_grad_(), o.clone().requires_grad_()
        out = attn.add_to(xs, os_, refresh=(d, conv) if refresh else None)
        out.backward(torch.cos(out.detach()))
        grads = [xs.grad, os_.grad] + [p.grad for p in [*attn.parameters(), *conv.parameters()] if p.grad is not None]
        return out.detach(), grads

    plain_out, plain_grads = step(False)
    native_out, native_grads = step(True)
    monkeypatch.undo()
    assert len(native_grads) == len(plain_grads) >= 7
    torch.testing.assert_close(native_out, plain_out, rtol=1e-10, atol=1e-10)
    for a, b in zip(native_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
