"""RLA-Net (Recurrence along Depth, NeurIPS 2021): a recurrent map h carried through the whole network.

Block input cat(x, h); y_t = residual output; x_t = ReLU(y_t + s_t);
h <- RecConv(tanh(BN_t(h + ConvOut(y_t)))), ConvOut 1x1 (C -> k) and RecConv 3x3 (k -> k) shared
per stage, BN per block. h starts at zeros after the stem, is carried across stages and 2x2
average-pooled at a strided block. Head: cat(x, ReLU(BN(h))) -> GAP -> FC.

`recurrent_input` says what ConvOut reads. The paper's y_t is the residual branch (`residual`), but the
public block keeps `y = out` as an alias of that tensor and then adds the identity and applies the ReLU in
place, so its update reads the block output ReLU(y_t + s_t) (`output`, the default: the published numbers
come from it).

Feature maps only: the recurrent map is concatenated into the block's first conv, which a token block lacks.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import residual_relu
from .base import Interaction, StageSpec
from .registry import register_method

RECURRENT_INPUTS = ("output", "residual")


@register_method("rla", display="RLA-Net", order=7, color="#bcbd22")
class RLA(Interaction):
    layouts = ("maps",)

    def __init__(self, spec: StageSpec, *, rla_channels: int = 32, recurrent_input: str = "output", **kw) -> None:
        super().__init__(spec, **kw)
        if recurrent_input not in RECURRENT_INPUTS:
            raise ValueError(f"RLA recurrent_input must be one of {RECURRENT_INPUTS}, got {recurrent_input!r}")
        self.recurrent_input = recurrent_input
        k = rla_channels
        self.extra_input_channels = k
        self.conv_out = nn.Conv2d(spec.channels, k, 1, bias=False)
        self.recurrent_conv = nn.Conv2d(k, k, 3, padding=1, bias=False)
        self.bns = nn.ModuleList(nn.BatchNorm2d(k) for _ in range(spec.num_blocks))
        self.head_bn = nn.BatchNorm2d(k) if spec.is_last else None

    def begin(self, x: Tensor, carry) -> Tensor:
        if carry is None:
            return x.new_zeros(x.shape[0], self.extra_input_channels, *x.shape[2:])
        return carry

    def block_input(self, x: Tensor, h: Tensor) -> Tensor:
        return torch.cat([x, h], dim=1)

    def merge(self, t: int, residual: Tensor, identity: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        x = residual_relu(self.drop_path(residual), identity)
        if h.shape[-2:] != residual.shape[-2:]:
            h = F.avg_pool2d(h, 2)
        y = x if self.recurrent_input == "output" else residual
        h = self.recurrent_conv(torch.tanh(self.bns[t](h + self.conv_out(y))))
        return x, h

    def end(self, x: Tensor, h: Tensor) -> Tensor:
        return h

    def head_channels(self, channels: int) -> int:
        return channels + self.extra_input_channels

    def head(self, x: Tensor, h: Tensor) -> Tensor:
        return torch.cat([x, F.relu(self.head_bn(h))], dim=1)
