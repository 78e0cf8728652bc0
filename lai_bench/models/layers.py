"""Building blocks shared by the layer-interaction methods (each exists once, as in timm/layers)."""
import math
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


def gap(x: Tensor) -> Tensor:
    """Global average pool [B, C, H, W] -> [B, C]."""
    return x.mean((2, 3))


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive kernel: the odd number nearest above int((log2 C + b) / gamma)."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


def num_heads(channels: int, head_dim: int) -> int:
    """Heads of width `head_dim`; a stage narrower than one head uses a single head."""
    if channels <= head_dim:
        return 1
    if channels % head_dim:
        raise ValueError(f"channels ({channels}) must be a multiple of head_dim ({head_dim})")
    return channels // head_dim


class DropPath(nn.Module):
    """Per-sample stochastic depth on a branch (identity in eval mode or when p == 0)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {p}")
        self.p = p

    def sample_scale(self, x: Tensor) -> Optional[Tensor]:
        """Per-sample factors [B, 1, ...]: 0 for a dropped sample, 1 / keep otherwise; None when inactive."""
        if self.p == 0.0 or not self.training:
            return None
        keep = 1.0 - self.p
        return x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep).div_(keep)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.sample_scale(x)
        return x if scale is None else x * scale

    def extra_repr(self) -> str:
        return f"p={self.p}"


class GateMLP(nn.Sequential):
    """Linear(C, C/r) -> ReLU -> Linear(C/r, out): the gate projection of DIA-LSTM and the DSU."""

    def __init__(self, channels: int, out_features: int, reduction: int) -> None:
        hidden = max(1, channels // reduction)
        super().__init__(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_features))


class ChannelConv1d(nn.Module):
    """ECA-style 1-D conv over the channel descriptor [B, C] -> [B, C] (no bias)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = eca_kernel_size(channels)
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, y: Tensor) -> Tensor:
        return self.conv(y.unsqueeze(1)).squeeze(1)


class _DepthwiseConv3x3Grad(torch.autograd.Function):
    """Depthwise 3x3 conv (stride 1, padding 1) whose input gradient is itself a depthwise conv.

    On CPU, PyTorch's backward of a depthwise conv spends ~6x the forward's time on the input gradient. For
    stride 1 and 'same' padding that gradient is the depthwise conv of the output gradient with the kernel
    flipped, which runs at forward speed. The weight gradient stays PyTorch's own.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, padding=1, groups=weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        x, weight = ctx.saved_tensors
        channels = weight.shape[0]
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            # A flipped view is non-contiguous and sends conv2d down a slow path: copy the 9 C weights.
            grad_x = F.conv2d(grad, weight.flip((2, 3)).contiguous(), padding=1, groups=channels)
        if ctx.needs_input_grad[1]:
            grad_w = depthwise_weight_grad(grad, x, weight)
        return grad_x, grad_w


def depthwise_weight_grad(grad: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """PyTorch's weight gradient of a depthwise 3x3 conv (stride 1, padding 1), weight [C, 1, 3, 3]."""
    return torch.ops.aten.convolution_backward(grad, x, weight, None, (1, 1), (1, 1), (1, 1), False, (0, 0),
                                               weight.shape[0], (False, True, False))[1]


class DepthwiseConv3x3(nn.Conv2d):
    """Depthwise 3x3 conv, no bias; on CPU under autograd it takes the faster backward above (same numbers)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 3, padding=1, groups=channels, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == "cpu" and torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _DepthwiseConv3x3Grad.apply(x, self.weight)
        return super().forward(x)


def depthwise3x3(channels: int) -> nn.Conv2d:
    return DepthwiseConv3x3(channels)


def weighted_sum(weights: Tensor, maps: Sequence[Tensor]) -> Tensor:
    """sum_j weights[:, j, :] * maps[j] for maps [B, C, H, W] and weights [B, t, C].

    Accumulates instead of stacking: a stack would copy every stored map at every block,
    and autograd would keep all those copies (quadratic memory in depth). For a stage's
    growing memory of maps, `MapMemory` does the same sum faster.
    """
    out = None
    for j, m in enumerate(maps):
        term = weights[:, j, :, None, None] * m
        out = term if out is None else out + term
    return out


def matmul_weighted_sum(weights: Tensor, maps: Sequence[Tensor]) -> Tensor:
    """The same sum as one batched matmul over the stacked maps, as the public MRLA code computes it.

    Copies every map: for references and FLOP counting (fvcore counts a matmul's multiply-adds,
    not those of the elementwise products in `weighted_sum`).
    """
    b, t, c = weights.shape
    stacked = torch.stack(list(maps), 2)  # [B, C, t, H, W]
    h, w = stacked.shape[-2:]
    out = torch.bmm(weights.transpose(1, 2).reshape(b * c, 1, t), stacked.reshape(b * c, t, h * w))
    return out.view(b, c, h, w)


class MapMemory:
    """A stage's stored maps v_j [B, C, H, W] and their weighted sums sum_j w[:, j, :] v_j.

    The maps are kept once, never stacked or copied: a stack per block would re-copy all
    earlier maps (the public MRLA-base code's quadratic cost). The sum is fused into one
    accumulator (addcmul_) and the backward accumulates each map's gradient from every
    later block in place, in one buffer per map, instead of one fresh tensor per (block, map)
    pair that autograd then adds up. Both are exact; together they halve the O(n^2) part.

    How the gradients meet their maps: `append` passes each map through `_StoreMap`, which
    returns a scalar token; every later sum takes the tokens of the maps it reads as inputs.
    Autograd therefore runs a map's `_StoreMap.backward` only after every sum that read it,
    and that backward hands over the accumulated gradient. Not for double backward or
    activation checkpointing (a re-run forward would append again).
    """

    def __init__(self) -> None:
        self.store = _MapStore()
        self.tokens: List[Tensor] = []

    def __len__(self) -> int:
        return len(self.store.maps)

    def append(self, v: Tensor) -> None:
        if torch.jit.is_tracing():
            # fvcore counts FLOPs from a trace, where a custom Function would be one opaque op.
            self.store.maps.append(v)
            return
        self.tokens.append(_StoreMap.apply(v, self.store))

    def weighted_sum(self, weights: Tensor) -> Tensor:
        """sum_j weights[:, j, :] v_j over the first weights.shape[1] stored maps."""
        t = weights.shape[1]
        if torch.jit.is_tracing():
            return matmul_weighted_sum(weights, self.store.maps[:t])
        return _WeightedMaps.apply(weights, self.store, *self.tokens[:t])


class _MapStore:
    """The maps (detached) and their gradient buffers, shared by the autograd nodes of one stage.

    It holds no tensor with a grad_fn: the nodes refer to it, so a reference back into the
    graph would make a cycle through C++ objects that Python's collector cannot free.
    """

    def __init__(self) -> None:
        self.maps: List[Tensor] = []
        self.grads: List[Optional[Tensor]] = []

    def add_grad(self, j: int, grad: Tensor, weight: Tensor) -> None:
        if self.grads[j] is None:
            self.grads[j] = grad * weight
        else:
            self.grads[j].addcmul_(grad, weight)

    def take_grad(self, j: int) -> Optional[Tensor]:
        grad, self.grads[j] = self.grads[j], None  # handed over once: a second backward starts afresh
        return grad


class _StoreMap(torch.autograd.Function):
    """Stores a map; its backward returns the gradient that the later sums accumulated for it."""

    @staticmethod
    def forward(ctx, v: Tensor, store: _MapStore) -> Tensor:
        ctx.store, ctx.index = store, len(store.maps)
        store.maps.append(v.detach())
        store.grads.append(None)
        return v.new_zeros(())

    @staticmethod
    @once_differentiable
    def backward(ctx, _: Tensor) -> Tuple[Optional[Tensor], None]:
        return ctx.store.take_grad(ctx.index), None


class _WeightedMaps(torch.autograd.Function):
    """sum_j w[:, j, :] v_j over stored maps; map gradients go into the store, not to the tokens."""

    @staticmethod
    def forward(ctx, weights: Tensor, store: _MapStore, *tokens: Tensor) -> Tensor:
        maps = store.maps[:len(tokens)]
        out = maps[0] * weights[:, 0, :, None, None]
        for j in range(1, len(maps)):
            out.addcmul_(maps[j], weights[:, j, :, None, None])
        ctx.store, ctx.count = store, len(maps)
        ctx.save_for_backward(weights)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tuple[Optional[Tensor], ...]:
        (weights,) = ctx.saved_tensors
        store = ctx.store
        grad_weights = None
        if ctx.needs_input_grad[0]:
            maps = store.maps[:ctx.count]
            grad_weights = torch.stack([(grad * m).sum((2, 3)) for m in maps], 1).to(weights.dtype)
        for j in range(ctx.count):
            if ctx.needs_input_grad[2 + j]:
                store.add_grad(j, grad, weights[:, j, :, None, None])
        return (grad_weights, None) + (None,) * ctx.count


def per_sample_depthwise(x: Tensor, kernels: Tensor) -> Tensor:
    """3x3 conv (stride 1, padding 1) of each sample's channel c with its own kernel: x [B, C, H, W], kernels [B, C, 3, 3]."""
    b, c, h, w = x.shape
    out = F.conv2d(x.reshape(1, b * c, h, w), kernels.reshape(b * c, 1, 3, 3), padding=1, groups=b * c)
    return out.view(b, c, h, w)


def depthwise_mix(convs: Sequence[Tuple[Tensor, Tensor]], scaled: Sequence[Tuple[Tensor, Tensor]] = ()) -> Tensor:
    """sum_i per_sample_depthwise(x_i, kernels_i) + sum_j a_j * m_j, with a_j per channel ([C, 1, 1] or [B, C, 1, 1]).

    The light attentions' value map and channel scores (and DLA-L's refreshed identity) are folded into per-sample
    3x3 kernels, a few KB, so that the sum is computed without the [B, C, H, W] intermediates the plain expression
    leaves (v, v * s, lambda * o, the refreshed o...). On CPU under autograd this is one Function: one output
    buffer, input gradients as convs with the flipped kernels (forward speed), coefficient gradients as dot
    products. Memory traffic, not arithmetic, bounds these layers on CPU, so each tensor not written counts.
    Meant for CPU training (`LightAttention.fast_path`); elsewhere the plain expression is as good.
    """
    tensors = [t for pair in convs for t in pair] + [t for pair in scaled for t in pair]
    return _DepthwiseMix.apply(len(convs), *tensors)


def _per_sample_kernel_grad(grad: Tensor, x: Tensor, kernels: Tensor) -> Tensor:
    """The weight gradient of `per_sample_depthwise`: [B, C, 3, 3]."""
    b, c, h, w = x.shape
    flat = depthwise_weight_grad(grad.reshape(1, b * c, h, w), x.reshape(1, b * c, h, w), kernels.reshape(b * c, 1, 3, 3))
    return flat.view(b, c, 3, 3)


# Bytes per batch slice in `_DepthwiseMix`: slices of a few MB stay in cache between the terms of the sum
# (8 MB measured best of 2 / 4 / 8 MB for MRLA-light ResNet-164 on 2 cores; a smaller tensor is one slice).
MIX_SLICE_BYTES = 8 * 2**20


def _slices(batch: int, sample_bytes: int) -> List[slice]:
    rows = max(1, MIX_SLICE_BYTES // max(1, sample_bytes))
    return [slice(i, min(i + rows, batch)) for i in range(0, batch, rows)]


def _rows_of(coeff: Tensor, rows: slice) -> Tensor:
    """A coefficient's rows for a batch slice: per-sample ones [B, C, 1, 1] are sliced, per-channel ones shared."""
    return coeff[rows] if coeff.dim() == 4 and coeff.shape[0] > 1 else coeff


class _DepthwiseMix(torch.autograd.Function):
    """`depthwise_mix` on CPU, computed over batch slices (each sample is independent) into one output buffer.

    Per slice the terms meet while in cache; on the whole batch every term would be a separate pass over memory.
    """

    @staticmethod
    def forward(ctx: Any, n_convs: int, *tensors: Tensor) -> Tensor:
        first = tensors[0]
        slices = _slices(first.shape[0], first[0].numel() * first.element_size())
        out = torch.empty_like(first, memory_format=torch.contiguous_format) if len(slices) > 1 else None
        for rows in slices:
            part = None
            for i in range(n_convs):
                term = per_sample_depthwise(tensors[2 * i][rows], tensors[2 * i + 1][rows])
                part = term if part is None else part.add_(term)
            for j in range(2 * n_convs, len(tensors), 2):
                a, m = tensors[j], tensors[j + 1]
                part.addcmul_(m[rows], _rows_of(a, rows))
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
        if len(slices) == 1:  # one slice: each gradient is computed whole, no buffer to copy into
            grads = _DepthwiseMix.slice_gradients(tensors, n, needs, grad, slice(None))
        else:
            grads = [None] * len(tensors)
            for rows in slices:
                for i, part in enumerate(_DepthwiseMix.slice_gradients(tensors, n, needs, grad[rows], rows)):
                    if part is not None:
                        if grads[i] is None:
                            grads[i] = torch.empty_like(tensors[i], memory_format=torch.contiguous_format)
                        grads[i][rows] = part
        _DepthwiseMix.coefficient_gradients(tensors, n, needs, grad, grads)
        return (None, *grads)

    @staticmethod
    def slice_gradients(tensors: Sequence[Tensor], n: int, needs: Sequence[bool], g: Tensor,
                        rows: slice) -> List[Optional[Tensor]]:
        """The gradients of the maps and per-sample kernels for the samples `rows` (g: their output gradient)."""
        grads: List[Optional[Tensor]] = [None] * len(tensors)
        for i in range(n):
            x, k = tensors[2 * i][rows], tensors[2 * i + 1][rows]
            if needs[2 * i]:  # the input gradient of a stride-1 'same' conv: the conv with the flipped kernel
                grads[2 * i] = per_sample_depthwise(g, k.flip((2, 3)))
            if needs[2 * i + 1]:
                grads[2 * i + 1] = _per_sample_kernel_grad(g, x, k)
        for j in range(2 * n, len(tensors), 2):
            if needs[j + 1]:
                grads[j + 1] = g * _rows_of(tensors[j], rows)
        return grads

    @staticmethod
    def coefficient_gradients(tensors: Sequence[Tensor], n: int, needs: Sequence[bool], grad: Tensor,
                              grads: List[Optional[Tensor]]) -> None:
        """The scaled terms' coefficient gradients, as dot products over the whole batch."""
        b, c = grad.shape[:2]
        for j in range(2 * n, len(tensors), 2):
            a, m = tensors[j], tensors[j + 1]
            if needs[j]:
                dots = torch.linalg.vecdot(grad.view(b, c, -1), m.reshape(b, c, -1))
                grads[j] = dots.view(b, c, 1, 1).sum_to_size(a.shape)


class LightAttention(nn.Module):
    """MRLA-light for one block: o = sigmoid(q.k / sqrt(d)) * DWConv(x) + lambda * o_prev, then BN.

    q and k come from ECA-style 1-D convs over GAP(x); the score is one scalar per head.
    Training on CPU takes `_mix` (same numbers, fewer full-size tensors); ``fused = False`` forces the
    plain expression (the tests' oracle).
    """

    fused = True

    def __init__(self, channels: int, head_dim: int = 32) -> None:
        super().__init__()
        self.heads = num_heads(channels, head_dim)
        self.query = ChannelConv1d(channels)
        self.key = ChannelConv1d(channels)
        self.value = depthwise3x3(channels)
        self.lambda_t = nn.Parameter(torch.randn(channels, 1, 1))
        self.bn = nn.BatchNorm2d(channels)

    def scores(self, y: Tensor) -> Tensor:
        """Per-head sigmoid scores expanded to channels: [B, C]."""
        b, c = y.shape
        q = self.query(y).view(b, self.heads, -1)
        k = self.key(y).view(b, self.heads, -1)
        s = torch.sigmoid((q * k).sum(-1) / math.sqrt(q.shape[-1]))
        return s.unsqueeze(-1).expand(b, self.heads, c // self.heads).reshape(b, c)

    def fast_path(self, x: Tensor) -> bool:
        """Training on CPU (autograd on, no fvcore trace): the fused Functions apply."""
        return self.fused and x.device.type == "cpu" and torch.is_grad_enabled() and not torch.jit.is_tracing()

    def forward(self, x: Tensor, previous: Tensor, y: Optional[Tensor] = None,
                refresh: Optional[Tuple[Tensor, nn.Conv2d]] = None) -> Tensor:
        """`refresh` = (d [B, C], conv): DLA-L's previous' = previous * d + conv(previous) in place of previous."""
        y = gap(x) if y is None else y
        s = self.scores(y)
        if self.fast_path(x):
            return self.bn(self._mix(x, previous, s, refresh))
        o = previous
        if refresh is not None:
            d, conv = refresh
            o = torch.addcmul(conv(previous), previous, d[:, :, None, None])
        return self.bn(torch.addcmul(self.lambda_t * o, self.value(x), s[:, :, None, None]))

    def _mix(self, x: Tensor, o: Tensor, s: Tensor, refresh: Optional[Tuple[Tensor, nn.Conv2d]]) -> Tensor:
        """The same sum with DWConv(x) * s as one per-sample kernel (and lambda * o' as another)."""
        b, c = s.shape
        value_kernels = self.value.weight.view(1, c, 3, 3) * s.view(b, c, 1, 1)
        if refresh is None:
            return depthwise_mix([(x, value_kernels)], [(self.lambda_t, o)])
        d, conv = refresh
        lam = self.lambda_t.view(1, c, 1, 1)
        # lambda * (o * d + DWConv(o)): one kernel, lambda * w plus lambda * d at the centre tap.
        refresh_kernels = lam * conv.weight.view(1, c, 3, 3) + F.pad((lam * d.view(b, c, 1, 1)), (1, 1, 1, 1))
        return depthwise_mix([(x, value_kernels), (o, refresh_kernels)])

    def add_to(self, x: Tensor, previous: Tensor, y: Optional[Tensor] = None,
               refresh: Optional[Tuple[Tensor, nn.Conv2d]] = None, drop_path: Optional[DropPath] = None) -> Tensor:
        """x + drop_path(self(x, previous, y, refresh)); training on CPU fuses the BN with the add."""
        if not (self.fast_path(x) and self.bn.training):
            out = self(x, previous, y, refresh)
            return x + (out if drop_path is None else drop_path(out))
        y = gap(x) if y is None else y
        z = self._mix(x, previous, self.scores(y), refresh)
        return batch_norm_add(self.bn, z, x, None if drop_path is None else drop_path.sample_scale(z))


def batch_norm_add(bn: nn.BatchNorm2d, z: Tensor, residual: Tensor, scale: Optional[Tensor] = None) -> Tensor:
    """residual + scale * bn(z) in training mode, as one output tensor (CPU); `scale` per sample or None.

    Updates the running statistics (and num_batches_tracked) as nn.BatchNorm2d does.
    """
    momentum = bn.momentum
    if bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        if momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    return _BatchNormAdd.apply(z, residual, bn.weight, bn.bias, bn.running_mean, bn.running_var, scale,
                               momentum or 0.0, bn.eps)


class _BatchNormAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: Tensor, residual: Tensor, weight: Tensor, bias: Tensor, running_mean: Optional[Tensor],
                running_var: Optional[Tensor], scale: Optional[Tensor], momentum: float, eps: float) -> Tensor:
        out, mean, invstd = torch.ops.aten.native_batch_norm(z, weight, bias, running_mean, running_var, True,
                                                              momentum, eps)
        if scale is not None:
            out.mul_(scale)
        out.add_(residual)
        ctx.eps = eps
        ctx.save_for_backward(z, weight, mean, invstd, scale)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tuple[Optional[Tensor], ...]:
        z, weight, mean, invstd, scale = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_bn = grad if scale is None else grad * scale
        grad_z, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
            grad_bn, z, weight, None, None, mean, invstd, True, ctx.eps, [needs[0], needs[2], needs[3]])
        return grad_z, grad if needs[1] else None, grad_w, grad_b, None, None, None, None, None


class BaseAttention(nn.Module):
    """MRLA-base for one block: softmax attention of the current query over the stage's stored keys/values.

    The caller keeps keys [B, t, C] and values (a MapMemory, or a list of t maps [B, C, H, W]);
    `value_scales` [B, t, C] are per-channel factors already applied to the stored values
    (DLA-B's refresh), kept apart so the maps themselves are never rewritten.
    """

    def __init__(self, channels: int, head_dim: int = 32, relu: bool = True) -> None:
        super().__init__()
        self.heads = num_heads(channels, head_dim)
        self.query = ChannelConv1d(channels)
        self.key = ChannelConv1d(channels)
        self.value = depthwise3x3(channels)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = relu

    def attention(self, q: Tensor, keys: Tensor) -> Tensor:
        """Softmax over the t stored layers, per head, expanded to channels: [B, t, C]."""
        b, t, c = keys.shape
        qh = q.view(b, 1, self.heads, -1)
        kh = keys.view(b, t, self.heads, -1)
        logits = (qh * kh).sum(-1) / math.sqrt(qh.shape[-1])  # [B, t, G]
        attn = logits.softmax(dim=1)
        return attn.unsqueeze(-1).expand(b, t, self.heads, c // self.heads).reshape(b, t, c)

    def forward(self, q: Tensor, keys: Tensor, values: Union[MapMemory, Sequence[Tensor]],
                value_scales: Optional[Tensor] = None) -> Tensor:
        w = self.attention(q, keys)
        if value_scales is not None:
            w = w * value_scales
        out = values.weighted_sum(w) if isinstance(values, MapMemory) else weighted_sum(w, values)
        out = self.bn(out)
        return F.relu(out) if self.relu else out


class GateCell(nn.Module):
    """Base of the recurrent gate cells (DIA-LSTM, DSU, GRU variant): gate projections and state shapes.

    gates = W_ih(u) + W_hh(h), each W a GateMLP to `num_gates * C`. With `recurrent=False` the
    W_hh projection does not exist and the cell sees a zero state (a plain gate on u).
    Inputs u may be [B, C] or [B, n, C]: n descriptors refreshed under one state in one call.
    """

    num_gates = 3
    state_size = 2

    def __init__(self, channels: int, reduction: int, recurrent: bool = True) -> None:
        super().__init__()
        self.input_proj = GateMLP(channels, self.num_gates * channels, reduction)
        self.hidden_proj = GateMLP(channels, self.num_gates * channels, reduction) if recurrent else None

    def initial_state(self, u: Tensor) -> Tuple[Tensor, ...]:
        zeros = u.new_zeros(u.shape[0], u.shape[-1])
        return (zeros,) * self.state_size

    def hidden_gates(self, h: Tensor, u: Tensor) -> Optional[Tensor]:
        """W_hh(h), broadcastable against W_ih(u); None without the recurrent input."""
        if self.hidden_proj is None:
            return None
        return align(self.hidden_proj(h), u)


def align(state: Tensor, u: Tensor) -> Tensor:
    """View a per-sample state [B, C] so it broadcasts against u of shape [B, n, C]."""
    return state.unsqueeze(1) if u.dim() == 3 else state
