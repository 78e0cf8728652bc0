"""Dynamic Layer Attention (DLA, IJCAI 2024, arXiv 2406.13392): the DSU and DLA-L / DLA-B.

Per stage one Dynamic Sharing Unit, shared by every block and by both paths:
  forward (context) path:  after block t, (h, c) <- DSU(GAP(x_t); h, c)
  backward (refresh) path: earlier features are re-gated by DSU(descriptor; h_t, c_t).h
    DLA-L: the identity  o' = o * DSU(GAP(o)).h + DWConv3x3(o), then MRLA-light on (x_t, o')
    DLA-B: every stored key and value (cumulatively), then MRLA-base softmax attention.
On tokens the attentions are the MRLA DeiT modules (layers/token_attention.py), stochastic depth drops the block's
increment as there, and the DSU reads the mean of the raw patch tokens (the attentions read LN(x_t)'s).
Ablation options: `cell` (dsu | lstm | gru | none), `forward_path`, `backward_path`, `reduction`,
`attention` (light | base), `refresh_context` (sample0 | per_sample).

`refresh_context`: the public code's refresh calls the DSU with the batch's context [B, C] where the cell
expects a stacked state and reads its entry 0, so sample 0's (h_t, c_t) is the refresh context of every
sample (`sample0`, the default: the published numbers come from it). A sample's output then depends on the
sample that heads its batch, in training and in eval. `per_sample` is the paper's equations: each sample
refreshes under its own context.
"""
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..layers import DIALSTMCell, GateCell, align, base_attention, light_attention
from .base import Interaction, StageSpec
from .registry import register_method

Context = tuple[Tensor, ...]


class DSU(GateCell):
    """Dynamic Sharing Unit: an LSTM-like cell with input, forget and candidate gates only.

    [i, f, g] = W_ih(u) + W_hh(h);  c' = sigmoid(f) c + sigmoid(i) tanh(g);  h' = sigmoid(c').
    No output gate: h' in (0, 1) is used directly as a channel gate.
    """

    num_gates = 3

    def step(self, ih: Tensor, hh: Tensor | None, state: Context) -> tuple[Tensor, Context]:
        i, f, g = self.gates(ih, hh).chunk(3, dim=-1)
        c = torch.sigmoid(f) * align(state[1], ih) + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(c)
        return h, (h, c)


class SigmoidGRUCell(GateCell):
    """GRU-style context cell for the ablation, kept in (0, 1) so h' can gate channels.

    r, z = sigmoid(ih + hh); n = sigmoid(ih_n + r * hh_n); h' = (1 - z) n + z h.
    """

    num_gates = 3
    state_size = 1

    def step(self, ih: Tensor, hh: Tensor | None, state: Context) -> tuple[Tensor, Context]:
        ir, iz, i_n = ih.chunk(3, dim=-1)
        hr, hz, h_n = align(hh, ih).chunk(3, dim=-1) if hh is not None else (0.0, 0.0, 0.0)
        r = torch.sigmoid(ir + hr)
        z = torch.sigmoid(iz + hz)
        n = torch.sigmoid(i_n + r * h_n)
        h = (1 - z) * n + z * align(state[0], ih)
        return h, (h,)


CELLS = {"dsu": DSU, "lstm": DIALSTMCell, "gru": SigmoidGRUCell}
ATTENTIONS = ("light", "base")
REFRESH_CONTEXTS = ("sample0", "per_sample")


class LightState(NamedTuple):
    """DLA-L's carry from block t to block t+1."""

    context: Context | None  # (h_t, c_t); None without the forward path
    hidden_gates: Tensor | None  # W_hh(h_t), shared by block t's refresh and block t+1's context update


class LayerMemory(NamedTuple):
    """DLA-B's stored layers of the current stage.

    The value maps are never rewritten: a refresh multiplies `value_scales` and the value
    descriptors, since GAP(v * s) = s * GAP(v) for a per-channel scale s. The maps meet their
    accumulated scale only inside the attention's weighted sum.
    """

    keys: Tensor  # [B, t, C], refreshed in place of the maps' keys
    value_desc: Tensor  # [B, t, C] = GAP of the (refreshed) values
    value_scales: Tensor  # [B, t, C] accumulated refresh of each value map
    values: list[Tensor]  # t raw value outputs (maps or tokens), stored once


@register_method("dla_l", display="DLA-L", order=8, color="#d62728", attention="light")
@register_method("dla_b", display="DLA-B", order=9, color="#17becf", attention="base")
class DLA(Interaction):
    """DLA for one stage; `attention` selects DLA-L (light) or DLA-B (base)."""

    def __init__(self, spec: StageSpec, *, attention: str = "light", cell: str = "dsu",
                 forward_path: bool | None = None, backward_path: bool | None = None,
                 reduction: int = 4, head_dim: int = 32, out_relu: bool = True,
                 refresh_context: str = "sample0", **kw) -> None:
        super().__init__(spec, **kw)
        forward_path, backward_path = check_dla_options(attention, cell, forward_path, backward_path)
        if refresh_context not in REFRESH_CONTEXTS:
            raise ValueError(f"DLA refresh_context must be one of {REFRESH_CONTEXTS}, got {refresh_context!r}")
        self.attention, self.forward_path, self.backward_path = attention, forward_path, backward_path
        self.refresh_context = refresh_context
        c, layout = spec.channels, spec.layout
        self.cell = CELLS[cell](c, reduction, recurrent=forward_path) if backward_path else None
        if attention == "light":
            self.attn = nn.ModuleList(light_attention(c, head_dim, layout) for _ in range(spec.num_blocks))
            self.refresh_conv = layout.value_mixer(c) if backward_path else None
        else:
            self.attn = nn.ModuleList(base_attention(c, head_dim, layout, relu=out_relu)
                                      for _ in range(spec.num_blocks))

    # On tokens, the MRLA DeiT modules' defaults (heads of 16, no ReLU after the base attention) and the ImageNet DSU.
    layout_defaults = {"tokens": {"head_dim": 16, "out_relu": False, "reduction": 16}}

    @classmethod
    def resolve_options(cls, opts: dict) -> dict:
        """Unset paths read as what they mean: on when a cell exists, off without one."""
        try:
            paths = check_dla_options(opts["attention"], opts["cell"], opts["forward_path"], opts["backward_path"])
        except (KeyError, ValueError):  # options no model was built from: left as given
            return opts
        return {**opts, "forward_path": paths[0], "backward_path": paths[1]}

    def update_context(self, y: Tensor, context: Context | None) -> Context | None:
        """Forward path: (h, c) <- DSU(GAP(x_t); h, c)."""
        if self.cell is None or not self.forward_path:
            return context
        return self.cell(y, context)[1]

    def refresh(self, descriptors: Tensor, context: Context | None) -> Tensor:
        """Backward path: DSU(descriptor; h_t, c_t).h for any number of descriptors; the new state is discarded."""
        return self.cell(descriptors, self.refresh_state(context))[0]

    def refresh_state(self, context: Context | None) -> Context | None:
        """The context the refresh reads: each sample's own, or sample 0's for the whole batch (public code)."""
        if context is None or self.refresh_context == "per_sample":
            return context
        return tuple(s[:1] for s in context)

    def merge(self, t: int, residual: Tensor, identity: Tensor, state):
        x = self.block_output(residual, identity)
        y = self.layout.descriptor(x)
        if self.attention == "light":
            return self.merge_light(t, x, y, identity, state)
        context, memory = state if state is not None else (None, None)
        context = self.update_context(y, context)
        out, memory = self.attend_base(t, x, y, context, memory)
        return self.add_branch(x, out), (context, memory)

    def merge_light(self, t: int, x: Tensor, y: Tensor, identity: Tensor,
                    state: LightState | None) -> tuple[Tensor, LightState | None]:
        """DLA-L: context update from GAP(x_t), refresh of the identity o under the new context, light attention
        with o' = o * d + DWConv(o).

        W_hh(h_t) is computed once and carried: the refresh at block t and the context update at block t+1
        both use it (the public code computes it twice).
        """
        attn = self.attn[t]
        if not self.backward_path:  # no DSU: MRLA-light
            return self.add_branch(x, attn(x, identity, y)), None
        cell = self.cell
        context, hidden_gates = state if state is not None else (None, None)
        if self.forward_path:
            previous = context if context is not None else cell.initial_state(y)
            if hidden_gates is None:
                hidden_gates = cell.project_hidden(previous[0])
            context = cell.step(cell.input_proj(y), hidden_gates, previous)[1]
        current = context if context is not None else cell.initial_state(y)
        hidden_gates = cell.project_hidden(current[0])
        refresh_gates = hidden_gates
        if self.refresh_context == "sample0" and hidden_gates is not None:
            refresh_gates = hidden_gates[:1]  # W_hh(h_t) of sample 0 = W_hh(sample 0's h_t)
        d = cell.step(cell.input_proj(self.layout.descriptor(identity)), refresh_gates, self.refresh_state(current))[0]
        refreshed = torch.addcmul(self.refresh_conv(identity), identity, self.layout.per_channel(d))
        return self.add_branch(x, attn(x, refreshed, y)), LightState(context, hidden_gates)

    def attend_base(self, t: int, x: Tensor, y: Tensor, context: Context | None,
                    memory: LayerMemory | None) -> tuple[Tensor, LayerMemory]:
        """DLA-B: refresh all stored keys and value descriptors in ONE batched DSU call, then attend."""
        attn = self.attn[t]
        q, k, v = attn.project(x, y)
        if memory is None:
            memory = LayerMemory(k[:, :0], k[:, :0], k[:, :0], [])
        keys, value_desc, value_scales = memory.keys, memory.value_desc, memory.value_scales
        if self.backward_path:
            if keys.shape[1] > 0:
                d = self.refresh(torch.cat([keys, value_desc], dim=1), context)
                d_keys, d_values = d.chunk(2, dim=1)
                keys, value_desc, value_scales = keys * d_keys, value_desc * d_values, value_scales * d_values
            v_desc = self.layout.descriptor(v).unsqueeze(1)
            value_desc = torch.cat([value_desc, v_desc], 1)
            value_scales = torch.cat([value_scales, torch.ones_like(v_desc)], 1)
        memory = LayerMemory(torch.cat([keys, k], 1), value_desc, value_scales, memory.values + [v])
        scales = memory.value_scales if self.backward_path else None
        return attn(q, memory.keys, memory.values, scales, x=x), memory


def check_dla_options(attention: str, cell: str, forward_path: bool | None,
                      backward_path: bool | None) -> tuple[bool, bool]:
    """Validate the ablation switches; unset paths are on when a cell exists."""
    if attention not in ATTENTIONS:
        raise ValueError(f"DLA attention must be one of {ATTENTIONS}, got {attention!r}")
    if cell not in (*CELLS, "none"):
        raise ValueError(f"DLA cell must be one of {(*CELLS, 'none')}, got {cell!r}")
    if cell == "none":
        if forward_path or backward_path:
            raise ValueError("cell='none' has no context or refresh path: "
                             "leave forward_path/backward_path unset or False")
        return False, False
    forward_path = True if forward_path is None else bool(forward_path)
    backward_path = True if backward_path is None else bool(backward_path)
    if forward_path and not backward_path:
        raise ValueError(
            "forward_path=True with backward_path=False: the context is read only by the refresh; "
            "turn both off (or use cell='none') for DLA without the DSU"
        )
    return forward_path, backward_path
