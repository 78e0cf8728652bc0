"""Building blocks shared by the layer-interaction methods (each exists once, as in timm/layers)."""
import math
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .fused import channel_correlate, depthwise_mix, depthwise_weight_grad, light_block, scored_kernels


def gap(x: Tensor) -> Tensor:
    """Global average pool [B, C, H, W] -> [B, C]."""
    if x.requires_grad and torch.is_grad_enabled() and not torch.jit.is_tracing():
        return _GlobalAvgPool.apply(x)
    return x.mean((2, 3))


class _GlobalAvgPool(torch.autograd.Function):
    """x.mean((2, 3)) whose gradient is a broadcast view, not a [B, C, H, W] tensor (autograd's mean writes one).

    The view is summed into x's other gradients in one pass; every method pools once or twice per block.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.shape = x.shape
        return x.mean((2, 3))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        h, w = ctx.shape[2:]
        return (grad / (h * w))[:, :, None, None].expand(ctx.shape)


def residual_relu(branch: Tensor, identity: Tensor) -> Tensor:
    """ReLU(branch + identity), the ReLU applied in the sum's own buffer (torchvision's `out += identity;
    relu(out)` without mutating an input): one full-size tensor less written per block."""
    return (branch + identity).relu_()


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
        if torch.jit.is_tracing():  # fvcore counts the conv's multiply-adds from the trace
            return self.conv(y.unsqueeze(1)).squeeze(1)
        # The same cross-correlation as windows @ kernel (a 1-channel conv1d over 64 x 256 took 2.2 ms fwd + bwd on
        # CPU, a third of a light attention block at that stage).
        return channel_correlate(y, self.conv.weight.view(-1))


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


class LightAttention(nn.Module):
    """MRLA-light for one block: o = sigmoid(q.k / sqrt(d)) * DWConv(x) + lambda * o_prev, then BN.

    q and k come from ECA-style 1-D convs over GAP(x); the score is one scalar per head.
    Training on CPU takes the fused Functions of fused.py (same numbers, fewer full-size tensors); ``fused = False`` forces the
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
        if self.fast_path(x):
            return self.bn(depthwise_mix(*self._terms(x, previous, self.value_kernels(y), refresh)))
        s = self.scores(y)
        o = previous
        if refresh is not None:
            d, conv = refresh
            o = torch.addcmul(conv(previous), previous, d[:, :, None, None])
        return self.bn(torch.addcmul(self.lambda_t * o, self.value(x), s[:, :, None, None]))

    def value_kernels(self, y: Tensor) -> Tensor:
        """DWConv(x) * scores as per-sample kernels [B, C, 3, 3] (one Function: fused.scored_kernels)."""
        return scored_kernels(y, self.query.conv.weight.view(-1), self.key.conv.weight.view(-1), self.value.weight,
                              self.heads)

    def _terms(self, x: Tensor, o: Tensor, value_kernels: Tensor, refresh: Optional[Tuple[Tensor, nn.Conv2d]]):
        """The sum as (conv terms, scaled terms) for `depthwise_mix`: DWConv(x) * s as one per-sample kernel,
        then lambda * o, or DLA-L's lambda * (o * d + DWConv(o)) as a second kernel."""
        b, c = value_kernels.shape[:2]
        if refresh is None:
            return [(x, value_kernels)], [(self.lambda_t, o)]
        d, conv = refresh
        lam = self.lambda_t.view(1, c, 1, 1)
        # lambda * w plus lambda * d at the centre tap.
        refresh_kernels = lam * conv.weight.view(1, c, 3, 3) + F.pad((lam * d.view(b, c, 1, 1)), (1, 1, 1, 1))
        return [(x, value_kernels), (o, refresh_kernels)], []

    def add_to(self, x: Tensor, previous: Tensor, y: Optional[Tensor] = None,
               refresh: Optional[Tuple[Tensor, nn.Conv2d]] = None, drop_path: Optional[DropPath] = None) -> Tensor:
        """x + drop_path(self(x, previous, y, refresh)); training on CPU computes it as one Function."""
        if not (self.fast_path(x) and self.bn.training):
            out = self(x, previous, y, refresh)
            return x + (out if drop_path is None else drop_path(out))
        y = gap(x) if y is None else y
        convs, scaled = self._terms(x, previous, self.value_kernels(y), refresh)
        return light_block(convs, scaled, self.bn, None if drop_path is None else drop_path.sample_scale(x))


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

    def forward(self, u: Tensor, state: Optional[Tuple[Tensor, ...]]) -> Tuple[Tensor, Tuple[Tensor, ...]]:
        """One step on u ([B, C] or [B, n, C]) from `state` (zeros when None): (new h, new state)."""
        state = state if state is not None else self.initial_state(u)
        return self.step(self.input_proj(u), self.project_hidden(state[0]), state)

    def project_hidden(self, h: Tensor) -> Optional[Tensor]:
        """W_hh(h) [B, num_gates * C]; None without the recurrent input."""
        return None if self.hidden_proj is None else self.hidden_proj(h)

    def step(self, ih: Tensor, hh: Optional[Tensor], state: Tuple[Tensor, ...]) -> Tuple[Tensor, Tuple[Tensor, ...]]:
        """The update from the projections ih = W_ih(u) and hh = W_hh(h), so a caller can reuse them."""
        raise NotImplementedError

    @staticmethod
    def gates(ih: Tensor, hh: Optional[Tensor]) -> Tensor:
        """W_ih(u) + W_hh(h), the state's term broadcast over u's descriptors."""
        return ih if hh is None else ih + align(hh, ih)


def align(state: Tensor, u: Tensor) -> Tensor:
    """View a per-sample state [B, C] so it broadcasts against u of shape [B, n, C]."""
    return state.unsqueeze(1) if u.dim() == 3 else state
