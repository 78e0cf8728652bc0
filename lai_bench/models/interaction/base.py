"""The layer-interaction interface the backbone calls, and the "none" method (plain ResNet).

A stage is a sequence of residual blocks. Block t yields a residual branch r_t and an identity
s_t; how they are merged and what is carried from block to block is the method. One
`Interaction` object per stage owns the method's per-stage and per-block parameters, and the
backbone calls it through these hooks only:

    state = inter.begin(x, carry)                 # at a stage boundary: reset or take the carry
    x_in = inter.block_input(x, state)            # what the block's first conv sees
    x, state = inter.merge(t, r_t, s_t, state)    # the method proper
    carry = inter.end(x, state)                   # what the next stage receives
    feats = last_stage_inter.head(x, carry)       # before global pooling and the classifier
"""
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..layers import DropPath, residual_relu
from ..registry import register_method


@dataclass(frozen=True)
class StageSpec:
    """What an interaction needs to know about its stage."""

    channels: int  # block output channels (planes * expansion)
    num_blocks: int
    index: int
    num_stages: int
    backbone: str  # "cifar" | "imagenet"

    @property
    def is_last(self) -> bool:
        return self.index == self.num_stages - 1


class Interaction(nn.Module):
    """Base class: plain residual merge x_t = ReLU(DropPath(r_t) + s_t), no state.

    `drop_path` acts on the branch the method adds on top of the identity path: the (gated)
    residual branch for gate methods, the attention/aggregation branch for methods that act
    after the add (MRLA, DLA, dense), as in the DLA/MRLA code.
    """

    extra_input_channels: int = 0  # channels the block's first conv receives beside x

    def __init__(self, spec: StageSpec, *, drop_path: float = 0.0) -> None:
        super().__init__()
        self.spec = spec
        self.drop_path = DropPath(drop_path)

    @classmethod
    def default_options(cls, backbone: str) -> dict:
        """Option defaults that depend on the backbone (e.g. DLA's DSU reduction)."""
        return {}

    @classmethod
    def resolve_options(cls, opts: dict) -> dict:
        """The options as the model builds them, where an unset option's meaning depends on others (DLA's paths)."""
        return opts

    def begin(self, x: Tensor, carry: Any) -> Any:
        return None

    def block_input(self, x: Tensor, state: Any) -> Tensor:
        return x

    def merge(self, t: int, residual: Tensor, identity: Tensor, state: Any) -> tuple[Tensor, Any]:
        return residual_relu(self.drop_path(residual), identity), state

    def end(self, x: Tensor, state: Any) -> Any:
        return None

    def head_channels(self, channels: int) -> int:
        return channels

    def head(self, x: Tensor, carry: Any) -> Tensor:
        return x


@register_method("none", display="ResNet", order=0, color="#555555")
class NoInteraction(Interaction):
    """Plain ResNet: the residual add and nothing else."""


class GatedInteraction(Interaction):
    """Gate methods (SE, ECA, DIANet): x_t = ReLU(DropPath(r_t * gate) + s_t)."""

    def gate(self, t: int, residual: Tensor, state: Any) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def merge(self, t: int, residual: Tensor, identity: Tensor, state: Any) -> tuple[Tensor, Any]:
        g, state = self.gate(t, residual, state)
        return residual_relu(self.drop_path(residual * g[:, :, None, None]), identity), state

