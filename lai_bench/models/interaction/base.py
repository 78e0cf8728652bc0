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

Everything that depends on the tensor layout (descriptor, per-channel gate, norm, value mixer, the activation after
the add) comes from `spec.layout` (models/layers/layout.py). A method that needs more than the contract gives
declares the layouts it supports in `layouts`; build_model rejects it elsewhere.
"""
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..layers import DropPath
from ..layers.layout import FEATURE_MAPS, Layout
from .registry import register_method


@dataclass(frozen=True)
class StageSpec:
    """What an interaction needs to know about its stage."""

    channels: int  # block output channels (planes * expansion)
    num_blocks: int
    index: int = 0
    num_stages: int = 1
    layout: Layout = FEATURE_MAPS
    first_block: int = 0  # the network-wide index of the stage's first block (methods whose state spans stages)

    @property
    def is_last(self) -> bool:
        return self.index == self.num_stages - 1


class Interaction(nn.Module):
    """Base class: plain residual merge x_t = act(DropPath(r_t) + s_t) (ReLU on maps, none on tokens), no state.

    `drop_path` acts on the branch the method adds on top of the identity path: the (gated)
    residual branch for gate methods, the attention/aggregation branch for methods that act
    after the add (MRLA, DLA, dense), as in the DLA/MRLA code.
    """

    extra_input_channels: int = 0  # channels the block's first conv receives beside x
    # The layouts the method works on. A method opts into the causal layout itself (only `none` so far): a method
    # written for maps and tokens may pool over the sequence, which on a causal model would leak the future.
    layouts: tuple[str, ...] = ("maps", "tokens")
    layout_defaults: dict[str, dict] = {}  # on every backbone of a layout (the DeiT MRLA heads)

    def __init__(self, spec: StageSpec, *, drop_path: float = 0.0) -> None:
        super().__init__()
        self.spec = spec
        self.layout = spec.layout
        self.drop_path = DropPath(drop_path)

    @classmethod
    def default_options(cls, layout: str | None) -> dict:
        """Option defaults that depend on the backbone's layout (`layout_defaults`; None: unknown). A backbone's
        own defaults for a method (the public ImageNet models') are the backbone's `method_defaults`; the caller
        looks both up: the backbones sit above the methods."""
        return dict(cls.layout_defaults.get(layout, {}))

    @classmethod
    def resolve_options(cls, opts: dict) -> dict:
        """The options as the model builds them, where an unset option's meaning depends on others (DLA's paths)."""
        return opts

    def block_output(self, residual: Tensor, identity: Tensor) -> Tensor:
        """x_t for a method that adds a branch after the block: the block's increment is dropped (stochastic depth)
        where the layout says so (`drops_block`: tokens), never on maps."""
        if self.layout.drops_block:
            residual = self.drop_path(residual)
        return self.layout.residual_add(residual, identity)

    def add_branch(self, x: Tensor, branch: Tensor) -> Tensor:
        """x_t + the method's branch, dropped (stochastic depth) unless the layout drops the block instead."""
        return x + (branch if self.layout.drops_block else self.drop_path(branch))

    def begin(self, x: Tensor, carry: Any) -> Any:
        return None

    def block_input(self, x: Tensor, state: Any) -> Tensor:
        return x

    def merge(self, t: int, residual: Tensor, identity: Tensor, state: Any) -> tuple[Tensor, Any]:
        return self.layout.residual_add(self.drop_path(residual), identity), state

    def end(self, x: Tensor, state: Any) -> Any:
        return None

    def head_channels(self, channels: int) -> int:
        return channels

    def head(self, x: Tensor, carry: Any) -> Tensor:
        return x


SPANS = ("stage", "network")


def check_span(method: str, span: str, layout: Layout) -> None:
    """`span`: what a method's stored outputs cover: its stage, or (tokens only) the whole network through the
    stages' carry. ResNet stages change shape, so on maps a span is a stage."""
    if span not in SPANS:
        raise ValueError(f"{method} span must be one of {SPANS}, got {span!r}")
    if span == "network" and layout.name != "tokens":
        raise ValueError(f"{method} span='network' needs the tokens layout: a ResNet stage changes the shape "
                         f"(allowed on {layout.name}: stage)")


@register_method("none", display="ResNet", order=0, color="#555555")
class NoInteraction(Interaction):
    """Plain ResNet: the residual add and nothing else."""

    layouts = ("maps", "tokens", "causal")  # the add reads no other position: causal as it is


class GatedInteraction(Interaction):
    """Gate methods (SE, ECA, DIANet): x_t = act(DropPath(r_t * gate) + s_t), the gate [B, C] per channel."""

    def gate(self, t: int, residual: Tensor, state: Any) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def merge(self, t: int, residual: Tensor, identity: Tensor, state: Any) -> tuple[Tensor, Any]:
        g, state = self.gate(t, residual, state)
        return self.layout.residual_add(self.drop_path(residual * self.layout.per_channel(g)), identity), state

