"""MRLA (Cross-Layer Retrospective Retrieving via Layer Attention, ICLR 2023): light and base.

Both act on the block output x_t after the add (and the ReLU on maps), with no parameter shared across blocks. On
maps they are the public ResNet modules; on tokens the public DeiT modules (layers/token_attention.py): LayerNorms
on x_t (and o_{t-1}), GELU on the light value, no norm or ReLU after the base attention, heads of 16 channels, the
class token of LN(x_t) added to x_t's, and stochastic depth on the block's increment, not on the attention.
"""

import torch
from torch import Tensor, nn

from ..layers import base_attention, light_attention
from .base import Interaction, StageSpec
from .registry import register_method

BaseState = tuple[Tensor, list[Tensor]]  # keys [B, t, C], values: the t value outputs (maps or tokens)
DEIT_DEFAULTS = {"head_dim": 16}  # the public DeiT models' heads (dim_mrla=16)


@register_method("mrla_light", display="MRLA-light", order=4, color="#9467bd")
class MRLALight(Interaction):
    """o_t = sigmoid(q.k / sqrt(d)) * DWConv(x_t) + lambda_t * s_t;  x_t <- x_t + DropPath(BN(o_t)).

    As in the public code, o_{t-1} is the block's own identity s_t (after downsampling).
    """

    def __init__(self, spec: StageSpec, *, head_dim: int = 32, **kw) -> None:
        super().__init__(spec, **kw)
        self.attn = nn.ModuleList(light_attention(spec.channels, head_dim, spec.layout)
                                  for _ in range(spec.num_blocks))

    layout_defaults = {"tokens": DEIT_DEFAULTS}

    def merge(self, t: int, residual: Tensor, identity: Tensor, state: None) -> tuple[Tensor, None]:
        x = self.block_output(residual, identity)
        return self.add_branch(x, self.attn[t](x, identity)), state


@register_method("mrla_base", display="MRLA-base", order=5, color="#8c564b")
class MRLABase(Interaction):
    """Softmax attention of q_t over the keys/values of all blocks so far in the stage.

    x_t <- x_t + DropPath(ReLU(BN(sum_j softmax_j(q_t.k_j / sqrt(d)) v_j))). Every public ResNet copy applies that
    ReLU (the MRLA code, and the DLA code's CIFAR mrla_base.py and dla_b.py); `out_relu=False` drops it, an
    ablation no public code runs. The DeiT code has neither BN nor ReLU there (out_relu is False on tokens).
    """

    def __init__(self, spec: StageSpec, *, head_dim: int = 32, out_relu: bool = True, **kw) -> None:
        super().__init__(spec, **kw)
        self.attn = nn.ModuleList(
            base_attention(spec.channels, head_dim, spec.layout, relu=out_relu) for _ in range(spec.num_blocks)
        )

    layout_defaults = {"tokens": {**DEIT_DEFAULTS, "out_relu": False}}

    def merge(self, t: int, residual: Tensor, identity: Tensor,
              state: BaseState | None) -> tuple[Tensor, BaseState]:
        x = self.block_output(residual, identity)
        attn = self.attn[t]
        q, k, v = attn.project(x)
        keys, values = state if state is not None else (k[:, :0], [])
        keys = torch.cat([keys, k], dim=1)  # [B, t, C]: small, unlike the maps, which are never re-copied
        values = values + [v]
        return self.add_branch(x, attn(q, keys, values, x=x)), (keys, values)
