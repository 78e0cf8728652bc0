"""KCLA (Key-Correlated Layer Attention; Xiong et al., arXiv 2606.28405; code bgx666/KCLA): layer attention at
linear cost in depth, a running key-weighted sum of the block outputs carried through the whole network.

After the residual add (and its ReLU), block t of a stage with G heads of d channels computes, per sample:

    y = GAP(x_t);  q = Conv1d_q(y), k = Conv1d_k(y)  (ECA-style 1-D convs over channels, split into G heads)
    s_t = exp(min(|k|_g / tau_g, 10))                (per head: the key's norm; tau_g = 1 / a log-uniform 0.7..1/0.7)
    u_t = u_{t-1} + s_t x_t,  z_t = z_{t-1} + s_t    (u_0 = 0, z_0 = 0 at the network's first block)
    v_t = DWConv3x3(u_t / (z_t + 1e-3))
    a_t = sigmoid(W_h (q.k / |k|)_g)                 (W_h: G x G, no bias)
    x_t <- x_t + DropPath(ReLU(BN(a_t v_t)))

(u, z) is the carry: at the first block of every later stage it is re-projected before the block adds to it:
m = BN_u(Conv1x1_grouped,stride 2(u / z)) (the conv only where the channels differ), s = exp(min(|Conv1d_u(GAP(m))|_g
/ tau_g, 10)), u = s m, z = s. `reproject_at` repeats that (without the conv) at one later block of each stage: the
public ImageNet code does it at block 11 (0-based), which only ResNet-101/152's third stage reaches.

The public CIFAR file has bottleneck blocks only; on basic blocks the same module acts after the block (this suite's
extension). Feature maps only: the paper gives no token form (it reports image recognition, detection and medical
segmentation on CNNs). `public_parameters=True` also builds the public models' parameters that no forward pass uses
(the first stage's re-projection, the unused conv of the mid-stage one, tau as a frozen parameter per block), so the
count equals theirs; docs/faithfulness.md, section E.
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import ChannelConv1d, gap, num_heads
from ..layers.ops import per_map_channel
from .base import Interaction, StageSpec
from .registry import register_method

State = tuple[Tensor, Tensor]  # u [B, C, H, W] (the weighted sum, unnormalised), z [B, G] (the sum of weights)
MAX_EXPONENT = 10.0  # exp is clamped at e^10
EPS = 1e-3  # in u / (z + eps); the re-projection divides by z alone, as the public code does


def key_conv(channels: int) -> ChannelConv1d:
    conv = ChannelConv1d(channels)
    nn.init.xavier_uniform_(conv.conv.weight)  # the public code's init of its Conv1d
    return conv


def head_temperatures(heads: int) -> Tensor:
    """tau_g = 1 / exp(linspace(log 0.7, log(1 / 0.7), G)), in the default dtype, as the public code computes it."""
    start, stop = (torch.tensor(v, device="cpu").log().item() for v in (0.7, 1 / 0.7))  # on CPU: meta builds too
    return 1 / torch.linspace(start, stop, heads).exp()


def key_weight(key: Tensor, tau: Tensor, heads: int) -> tuple[Tensor, Tensor]:
    """s = exp(min(|k|_g / tau_g, 10)) and |k|_g, both [B, G], for a key [B, C]."""
    norm = key.view(key.shape[0], heads, -1).norm(dim=-1)
    return (norm / tau).clamp(max=MAX_EXPONENT).exp(), norm


def per_channel(v: Tensor, channels: int) -> Tensor:
    """A per-head [B, G] tensor as a view over maps [B, C, H, W] (each head's value on its d channels)."""
    return per_map_channel(v.repeat_interleave(channels // v.shape[1], dim=1))


class KCLALayer(nn.Module):
    """One block's KCLA: adds s_t x_t to the carried sum and returns ReLU(BN(a_t DWConv(u_t / z_t)))."""

    def __init__(self, channels: int, heads: int, public_parameters: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.query = key_conv(channels)
        self.key = key_conv(channels)
        self.value = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.head_att = nn.Linear(heads, heads, bias=False)
        nn.init.xavier_uniform_(self.head_att.weight)
        self.bn = nn.BatchNorm2d(channels)
        tau = head_temperatures(heads)
        if public_parameters:  # the public code keeps tau as a frozen nn.Parameter, counted in its totals
            self.tau = nn.Parameter(tau, requires_grad=False)
        else:
            self.register_buffer("tau", tau)

    def forward(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        c = x.shape[1]
        y = gap(x)
        q, k = self.query(y), self.key(y)
        s, k_norm = key_weight(k, self.tau, self.heads)
        u, z = (x * per_channel(s, c), s) if state is None else (state[0] + x * per_channel(s, c), state[1] + s)
        v = self.value(u / per_channel(z + EPS, c))
        score = (q * k).view(-1, self.heads, c // self.heads).sum(-1) / k_norm
        a = torch.sigmoid(self.head_att(score))
        return F.relu(self.bn(v * per_channel(a, c))), (u, z)


class Reprojection(nn.Module):
    """The carried (u, z) restarted from its normalised sum: m = BN(adjust(u / z)), re-weighted by its own key."""

    def __init__(self, channels: int, heads: int, adjust_from: int | None) -> None:
        super().__init__()
        self.channels, self.heads = channels, heads
        # From the previous stage's channels and twice its resolution; applied only where the channels differ.
        self.adjust = (None if adjust_from is None else
                       nn.Conv2d(adjust_from, channels, 1, stride=2, groups=heads, bias=False))
        self.bn = nn.BatchNorm2d(channels)
        self.key = key_conv(channels)

    def forward(self, state: State, tau: Tensor) -> State:
        u, z = state
        m = u / per_channel(z, u.shape[1])
        if m.shape[1] != self.channels:
            m = self.adjust(m)
        m = self.bn(m)
        s, _ = key_weight(self.key(gap(m)), tau, self.heads)
        return m * per_channel(s, m.shape[1]), s


@register_method("kcla", display="KCLA", order=10, color="#393b79")
class KCLA(Interaction):
    """x_t <- x_t + DropPath(ReLU(BN(a_t DWConv(u_t / z_t)))), (u, z) carried across blocks and stages."""

    layouts = ("maps",)

    def __init__(self, spec: StageSpec, *, head_dim: int = 16, reproject_at: int | None = None,
                 public_parameters: bool = False, **kw) -> None:
        super().__init__(spec, **kw)
        if reproject_at is not None and reproject_at < 1:
            raise ValueError(f"KCLA reproject_at must be a block index >= 1 (block 0 always re-projects) or None, "
                             f"got {reproject_at}")
        c = spec.channels
        self.heads = num_heads(c, head_dim)
        self.layers = nn.ModuleList(KCLALayer(c, self.heads, public_parameters) for _ in range(spec.num_blocks))
        # The carry comes from a stage of half the channels (the ResNets' widths double); the first stage has
        # none, and builds the public code's unused re-projection only for its parameter count.
        first = spec.index > 0 or public_parameters
        self.reproject = Reprojection(c, self.heads, c // 2) if first else None
        self.reproject_at = reproject_at if reproject_at is not None and reproject_at < spec.num_blocks else None
        self.reproject_mid = (None if self.reproject_at is None else
                              Reprojection(c, self.heads, c // 2 if public_parameters else None))

    def begin(self, x: Tensor, carry: State | None) -> State | None:
        if carry is None:
            return None
        return self.reproject(carry, self.layers[0].tau)

    def merge(self, t: int, residual: Tensor, identity: Tensor, state: State | None) -> tuple[Tensor, State]:
        x = self.block_output(residual, identity)
        if t == self.reproject_at:
            state = self.reproject_mid(state, self.layers[t].tau)
        out, state = self.layers[t](x, state)
        return self.add_branch(x, out), state

    def end(self, x: Tensor, state: State) -> State:
        return state
