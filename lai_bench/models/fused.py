"""CPU training paths of the light attentions (MRLA-light, DLA-L): the same numbers in fewer passes over memory.

On CPU these layers are bound by memory traffic, not arithmetic: every [B, C, H, W] tensor written and read
again costs about as much as a 3x3 depthwise conv. So the value conv and its channel scores (and DLA-L's
refreshed identity) are folded into per-sample 3x3 kernels, and the sum, its BatchNorm and the residual add are
computed over batch slices of a few MB that stay in cache between the terms. Every Function here is tested
against the plain expression (tests/test_fast_paths.py).
"""
import math
from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from . import native

# Bytes per batch slice: slices of a few MB stay in cache between the terms of a sum (2 MB measured best of
# 1, 2, 4, 8 and 64 MB for MRLA-light ResNet-164 blocks on 2 cores, allocator keeping freed memory).
MIX_SLICE_BYTES = 2 * 2**20

Pair = Tuple[Tensor, Tensor]


def depthwise_weight_grad(grad: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """PyTorch's weight gradient of a depthwise 3x3 conv (stride 1, padding 1), weight [C, 1, 3, 3]."""
    return torch.ops.aten.convolution_backward(grad, x, weight, None, (1, 1), (1, 1), (1, 1), False, (0, 0),
                                               weight.shape[0], (False, True, False))[1]


def per_sample_depthwise(x: Tensor, kernels: Tensor, addend: Optional[Tensor] = None, flip: bool = False,
                         out: Optional[Tensor] = None) -> Tensor:
    """3x3 conv (stride 1, padding 1) of each sample's channel c with its own kernel, plus `addend`.

    x [B, C, H, W], kernels [B, C, 3, 3]; `flip` turns the kernels by 180 degrees (the conv's input gradient);
    `out` (contiguous, may be `addend`) receives the result. The native kernels (native.py) when built, else
    PyTorch's grouped conv over the batch.
    """
    if native.supports(x):
        return native.depthwise3x3(x, kernels, addend, flip, out)
    b, c, h, w = x.shape
    kernels = kernels.flip((2, 3)) if flip else kernels
    conv = F.conv2d(x.reshape(1, b * c, h, w), kernels.reshape(b * c, 1, 3, 3), padding=1, groups=b * c)
    conv = conv.view(b, c, h, w)
    if addend is not None:
        return torch.add(conv, addend, out=out) if out is not None else conv.add_(addend)
    return out.copy_(conv) if out is not None else conv


def _per_sample_kernel_grad(grad: Tensor, x: Tensor, kernels: Tensor) -> Tensor:
    """The kernels' gradient of `per_sample_depthwise`: [B, C, 3, 3].

    The native kernel for planes at least 16 wide; oneDNN is faster on narrower ones (measured on 8 x 8).
    """
    if x.shape[-1] >= 16 and native.supports(x):
        return native.depthwise3x3_kernel_grad(grad, x)
    b, c, h, w = x.shape
    flat = depthwise_weight_grad(grad.reshape(1, b * c, h, w), x.reshape(1, b * c, h, w), kernels.reshape(b * c, 1, 3, 3))
    return flat.view(b, c, 3, 3)


def _slices(batch: int, sample_bytes: int) -> List[slice]:
    rows = max(1, MIX_SLICE_BYTES // max(1, sample_bytes))
    return [slice(i, min(i + rows, batch)) for i in range(0, batch, rows)]


def _rows_of(coeff: Tensor, rows: slice) -> Tensor:
    """A coefficient's rows for a batch slice: per-sample ones [B, C, 1, 1] are sliced, per-channel ones shared."""
    return coeff[rows] if coeff.dim() == 4 and coeff.shape[0] > 1 else coeff


def _flat_pairs(convs: Sequence[Pair], scaled: Sequence[Pair]) -> List[Tensor]:
    return [t for pair in convs for t in pair] + [t for pair in scaled for t in pair]


def _mix_rows(tensors: Sequence[Tensor], n_convs: int, rows: slice) -> Tensor:
    """The mix of the samples `rows`: conv terms (x_i, kernels_i) first, then scaled terms (a_j, m_j)."""
    part = None
    for i in range(n_convs):
        part = per_sample_depthwise(tensors[2 * i][rows], tensors[2 * i + 1][rows], addend=part, out=part)
    for j in range(2 * n_convs, len(tensors), 2):
        part.addcmul_(tensors[j + 1][rows], _rows_of(tensors[j], rows))
    return part


def _mix_grads_rows(tensors: Sequence[Tensor], n: int, needs: Sequence[bool], g: Tensor, rows: slice,
                    gathered: "_Gathered", residual: Optional[Tensor] = None) -> List[Optional[Tensor]]:
    """The gradients of the maps and per-sample kernels for the samples `rows` (g: their output gradient).

    The scaled terms' map gradients are written straight into `gathered`, and their coefficients' dot products
    collected there while g is in cache; the convs' gradients are returned. With `residual`, the first map
    is also added to the output unchanged: its gradient, plus `residual`, goes straight into `gathered`.
    """
    grads: List[Optional[Tensor]] = [None] * len(tensors)
    for i in range(n):
        x, k = tensors[2 * i][rows], tensors[2 * i + 1][rows]
        if needs[2 * i]:  # the input gradient of a stride-1 'same' conv: the conv with the flipped kernel
            if i == 0 and residual is not None:
                per_sample_depthwise(g, k, addend=residual, flip=True, out=gathered.rows(0, rows))
            else:
                grads[2 * i] = per_sample_depthwise(g, k, flip=True)
        if needs[2 * i + 1]:
            grads[2 * i + 1] = _per_sample_kernel_grad(g, x, k)
    for j in range(2 * n, len(tensors), 2):
        if needs[j]:
            gathered.dots[j].append(_channel_dots(g, tensors[j + 1][rows]))
        if needs[j + 1]:
            torch.mul(g, _rows_of(tensors[j], rows), out=gathered.rows(j + 1, rows))
    return grads


def _channel_dots(g: Tensor, m: Tensor) -> Tensor:
    """sum over H, W of g * m: [b, C]."""
    b, c = g.shape[:2]
    return torch.linalg.vecdot(g.reshape(b, c, -1), m.reshape(b, c, -1))


class _Gathered:
    """Per-slice gradients gathered into whole-batch tensors (no copy when the batch is one slice)."""

    def __init__(self, tensors: Sequence[Tensor], one_slice: bool) -> None:
        self.tensors, self.one_slice = tensors, one_slice
        self.grads: List[Optional[Tensor]] = [None] * len(tensors)
        self.dots: List[List[Tensor]] = [[] for _ in tensors]  # per slice, [b, C], for scaled terms' coefficients

    def rows(self, i: int, rows: slice) -> Tensor:
        """Where the gradient of tensor i for the samples `rows` goes: an op writes it there with out=."""
        if self.grads[i] is None:
            self.grads[i] = torch.empty_like(self.tensors[i], memory_format=torch.contiguous_format)
        return self.grads[i][rows]

    def put(self, i: int, rows: slice, part: Optional[Tensor]) -> None:
        if part is None:
            return
        if self.one_slice:
            self.grads[i] = part
        else:
            self.rows(i, rows).copy_(part)

    def finish(self) -> List[Optional[Tensor]]:
        """The gradients, with each scaled term's coefficient gradient summed from its dot products."""
        for j, dots in enumerate(self.dots):
            if dots:
                dots = torch.cat(dots)
                self.grads[j] = dots.view(*dots.shape, 1, 1).sum_to_size(self.tensors[j].shape)
        return self.grads


def depthwise_mix(convs: Sequence[Pair], scaled: Sequence[Pair] = ()) -> Tensor:
    """sum_i per_sample_depthwise(x_i, kernels_i) + sum_j a_j * m_j, with a_j per channel ([C, 1, 1] or [B, C, 1, 1]).

    One Function on CPU under autograd: one output buffer, input gradients as convs with the flipped kernels
    (forward speed), coefficient gradients as dot products.
    """
    return _DepthwiseMix.apply(len(convs), *_flat_pairs(convs, scaled))


class _DepthwiseMix(torch.autograd.Function):
    """`depthwise_mix`, computed over batch slices (each sample is independent) into one output buffer."""

    @staticmethod
    def forward(ctx: Any, n_convs: int, *tensors: Tensor) -> Tensor:
        first = tensors[0]
        slices = _slices(first.shape[0], first[0].numel() * first.element_size())
        out = torch.empty_like(first, memory_format=torch.contiguous_format) if len(slices) > 1 else None
        for rows in slices:
            part = _mix_rows(tensors, n_convs, rows)
            if out is None:  # one slice: the part is the output
                out = part
            else:
                out[rows] = part
        ctx.n_convs = n_convs
        ctx.save_for_backward(*tensors)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tuple[Optional[Tensor], ...]:
        tensors, n, needs = ctx.saved_tensors, ctx.n_convs, ctx.needs_input_grad[1:]
        grad = grad.contiguous()
        slices = _slices(grad.shape[0], grad[0].numel() * grad.element_size())
        gathered = _Gathered(tensors, len(slices) == 1)
        for rows in slices:
            for i, part in enumerate(_mix_grads_rows(tensors, n, needs, grad[rows], rows, gathered)):
                gathered.put(i, rows, part)
        return (None, *gathered.finish())


def light_block(convs: Sequence[Pair], scaled: Sequence[Pair], bn: nn.BatchNorm2d,
                scale: Optional[Tensor] = None) -> Tensor:
    """x + scale * bn(depthwise_mix(convs, scaled)) in training mode, where x = convs[0][0] (the block output).

    One Function: BN statistics are gathered per slice while the slice of the mix is in cache, and the backward
    forms BN's input gradient slice by slice and feeds it straight to the mix's backward, so neither the
    normalised map nor its gradient is ever a whole tensor. `scale` is drop-path's per-sample factor or None.
    Updates the running statistics (and num_batches_tracked) as nn.BatchNorm2d does.
    """
    momentum = bn.momentum
    if bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        if momentum is None:  # cumulative moving average
            momentum = 1.0 / float(bn.num_batches_tracked)
    tensors = _flat_pairs(convs, scaled)
    spec = (len(convs), len(tensors), momentum or 0.0, bn.eps)
    return _LightBlock.apply(spec, *tensors, bn.weight, bn.bias, bn.running_mean, bn.running_var, scale)


class _LightBlock(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, spec: Tuple[int, int, float, float], *inputs: Optional[Tensor]) -> Tensor:
        n_convs, n_mix, momentum, eps = spec
        tensors, (weight, bias, running_mean, running_var, scale) = inputs[:n_mix], inputs[n_mix:]
        x = tensors[0]
        b, c, h, w = x.shape
        slices = _slices(b, x[0].numel() * x.element_size())
        z = [_mix_rows(tensors, n_convs, rows) for rows in slices]  # kept as slices: never copied into one tensor
        n = b * h * w
        mean, var = _batch_moments(z, n)
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
            running_var.mul_(1 - momentum).add_(var * (n / max(n - 1, 1)), alpha=momentum)
        invstd = (var + eps).rsqrt()
        gain = invstd if weight is None else weight * invstd  # bn(z) = gain * z + shift
        shift = -mean * gain if bias is None else bias - mean * gain
        gain, shift = gain.view(1, c, 1, 1), shift.view(1, c, 1, 1)
        if scale is not None:
            gain, shift = gain * scale, shift * scale
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        for rows, part in zip(slices, z):  # (addcmul is ~3x slower when its first operand is the broadcast one)
            torch.addcmul(x[rows], part, _rows_of(gain, rows), out=out[rows]).add_(_rows_of(shift, rows))
        ctx.spec = spec
        ctx.save_for_backward(*tensors, weight, mean, invstd, scale, *z)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tuple[Optional[Tensor], ...]:
        n_convs, n_mix = ctx.spec[:2]
        saved = ctx.saved_tensors
        tensors, (weight, mean, invstd, scale), z = saved[:n_mix], saved[n_mix:n_mix + 4], saved[n_mix + 4:]
        needs = ctx.needs_input_grad[1:]
        grad = grad.contiguous()
        b, c, h, w = grad.shape
        slices = _slices(b, grad[0].numel() * grad.element_size())
        # BN's backward needs per-channel sums of g and g * z over the batch (g = scale * grad): one pass first.
        sum_g = _channel_sums(grad)  # [B, C]
        sum_gz = torch.cat([_channel_dots(grad[rows], z_rows) for rows, z_rows in zip(slices, z)])
        if scale is not None:
            sum_g, sum_gz = sum_g * scale.view(b, 1), sum_gz * scale.view(b, 1)
        sum_g, sum_gz = sum_g.sum(0), sum_gz.sum(0)
        grad_bias = sum_g  # sum of g
        grad_weight = invstd * (sum_gz - mean * sum_g)  # sum of g * normalised z
        gain = invstd if weight is None else weight * invstd
        n = b * h * w
        # dL/dz = gain * (g - sum_g / n - zhat * grad_weight / n), written as a * g + k1 * z + k0 per channel
        k1 = (-gain * invstd * grad_weight / n).view(1, c, 1, 1)
        k0 = (gain * (mean * invstd * grad_weight - sum_g) / n).view(1, c, 1, 1)
        a = gain.view(1, c, 1, 1) if scale is None else gain.view(1, c, 1, 1) * scale

        gathered = _Gathered(tensors, len(slices) == 1)
        for rows, z_rows in zip(slices, z):
            g = grad[rows]
            grad_z = torch.mul(g, _rows_of(a, rows)).addcmul_(z_rows, k1).add_(k0)
            # x is also the residual: its gradient passes through unchanged
            parts = _mix_grads_rows(tensors, n_convs, needs, grad_z, rows, gathered, residual=g)
            for i, part in enumerate(parts):
                gathered.put(i, rows, part)
        grads = gathered.finish()
        grad_weight = grad_weight if weight is not None and needs[n_mix] else None
        grad_bias = grad_bias if needs[n_mix + 1] else None
        return (None, *grads, grad_weight, grad_bias, None, None, None)


def _batch_moments(parts: Sequence[Tensor], n: int) -> Tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance of the whole batch from its slices (n values per channel).

    Shifted sums: d = z - shift with shift the first slice's mean, which is close to the batch mean, so
    var = mean(d^2) - mean(d)^2 does not cancel (torch.var_mean over dims 0, 2, 3 is ~10x slower). Each slice is
    centred and squared in place while it is in cache.
    """
    c = parts[0].shape[1]
    shift = (_channel_sums(parts[0]).sum(0) / (parts[0].numel() // c)).view(1, c, 1, 1)
    sums, squares = [], []
    for part in parts:
        d = part - shift
        sums.append(_channel_sums(d))
        squares.append(_channel_sums(d.square_()))
    mean_d = torch.cat(sums).sum(0) / n
    var = (torch.cat(squares).sum(0) / n - mean_d * mean_d).clamp_min_(0)
    return shift.view(c) + mean_d, var


def _channel_sums(x: Tensor) -> Tensor:
    """sum over H, W: [b, C] (a sum over the last, contiguous dim is faster than over dims (2, 3))."""
    return x.view(x.shape[0], x.shape[1], -1).sum(-1)


def scored_kernels(y: Tensor, query: Tensor, key: Tensor, value: Tensor, heads: int) -> Tensor:
    """The per-sample value kernels of MRLA-light and DLA-L, value[c] * sigmoid(q_h . k_h / sqrt(d)): [B, C, 3, 3].

    q and k are the 1-D channel convs of y [B, C] with kernels `query`, `key` [k] (padding k // 2), h is channel
    c's head of d = C / heads channels; `value` is the DWConv weight [C, 1, 3, 3]. One Function: as plain autograd
    this is ~25 small nodes per block, whose fixed costs add up to more than their arithmetic.
    """
    return _ScoredKernels.apply(y, query, key, value, heads)


def _channel_windows(y: Tensor, size: int) -> Tensor:
    """[B, C] -> [B * C, size]: the zero-padded windows of a 1-D cross-correlation over channels."""
    return F.pad(y, (size // 2, size // 2)).unfold(1, size, 1).reshape(-1, size)


def channel_correlate(y: Tensor, kernel: Tensor) -> Tensor:
    """The 1-D cross-correlation over channels of y [B, C] with `kernel` [k] (zero padding k // 2): [B, C].

    Windows @ kernel: 2-5x faster than a 1-channel conv1d on CPU, forward + backward. The windows are copied
    into a [B * C, k] matrix first: a matmul of the 3-D window view runs as a batched matmul over B, ~10x slower.
    """
    return (_channel_windows(y, kernel.numel()) @ kernel).view(y.shape)


class _ScoredKernels(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, y: Tensor, query: Tensor, key: Tensor, value: Tensor, heads: int) -> Tensor:
        b, c = y.shape
        windows = _channel_windows(y, query.numel())
        q, k = (windows @ query).view(b, c), (windows @ key).view(b, c)
        s = torch.sigmoid((q * k).view(b, heads, -1).sum(-1) / math.sqrt(c // heads))  # [B, heads]
        ctx.heads = heads
        ctx.save_for_backward(y, query, key, value, q, k, s)
        return (value.view(1, heads, -1) * s.view(b, heads, 1)).view(b, c, 3, 3)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tuple[Optional[Tensor], ...]:
        y, query, key, value, q, k, s = ctx.saved_tensors
        b, c = y.shape
        heads = ctx.heads
        grad = grad.reshape(b, heads, -1)  # [B, heads, d * 9]
        grad_value = (grad * s.view(b, heads, 1)).sum(0).view_as(value)
        grad_s = (grad * value.view(1, heads, -1)).sum(-1)  # [B, heads] (a broadcast vecdot loops over B)
        grad_logit = (grad_s * s * (1 - s) / math.sqrt(c // heads)).view(b, heads, 1)
        grad_q = (grad_logit * k.view(b, heads, -1)).view(b, c)
        grad_k = (grad_logit * q.view(b, heads, -1)).view(b, c)
        windows = _channel_windows(y, query.numel()).t()  # [k, B * C]
        grad_query, grad_key = windows @ grad_q.view(-1), windows @ grad_k.view(-1)
        # The input gradient of a 'same' cross-correlation is the cross-correlation with the flipped kernel.
        grad_y = channel_correlate(grad_q, query.flip(0)).add_(channel_correlate(grad_k, key.flip(0)))
        return grad_y, grad_query, grad_key, grad_value, None
