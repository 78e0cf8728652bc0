"""Recurrent gate cells: the shared base of DIA-LSTM, the DSU and the GRU variant, and DIA-LSTM itself (DIANet's
gate, one of DLA's cells)."""

import torch
from torch import Tensor, nn


class GateMLP(nn.Sequential):
    """Linear(C, C/r) -> ReLU -> Linear(C/r, out): the gate projection of DIA-LSTM and the DSU."""

    def __init__(self, channels: int, out_features: int, reduction: int) -> None:
        hidden = max(1, channels // reduction)
        super().__init__(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_features))


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

    def initial_state(self, u: Tensor) -> tuple[Tensor, ...]:
        zeros = u.new_zeros(u.shape[0], u.shape[-1])
        return (zeros,) * self.state_size

    def forward(self, u: Tensor, state: tuple[Tensor, ...] | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One step on u ([B, C] or [B, n, C]) from `state` (zeros when None): (new h, new state)."""
        state = state if state is not None else self.initial_state(u)
        return self.step(self.input_proj(u), self.project_hidden(state[0]), state)

    def project_hidden(self, h: Tensor) -> Tensor | None:
        """W_hh(h) [B, num_gates * C]; None without the recurrent input."""
        return None if self.hidden_proj is None else self.hidden_proj(h)

    def step(self, ih: Tensor, hh: Tensor | None, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The update from the projections ih = W_ih(u) and hh = W_hh(h), so a caller can reuse them."""
        raise NotImplementedError

    @staticmethod
    def gates(ih: Tensor, hh: Tensor | None) -> Tensor:
        """W_ih(u) + W_hh(h), the state's term broadcast over u's descriptors."""
        return ih if hh is None else ih + align(hh, ih)


def align(state: Tensor, u: Tensor) -> Tensor:
    """View a per-sample state [B, C] so it broadcasts against u of shape [B, n, C]."""
    return state.unsqueeze(1) if u.dim() == 3 else state


LSTMState = tuple[Tensor, Tensor]  # (h, c)


class DIALSTMCell(GateCell):
    """gates [i, f, g, o] = W_ih(m) + W_hh(h), each W = Linear(C, C/r) -> ReLU -> Linear(C/r, 4C).

    c' = sigmoid(f) c + sigmoid(i) tanh(g);  h' = sigmoid(o) * sigmoid(c')  (sigmoid, not tanh,
    so h' is a channel gate in (0, 1)).
    """

    num_gates = 4

    def step(self, ih: Tensor, hh: Tensor | None, state: LSTMState) -> tuple[Tensor, LSTMState]:
        i, f, g, o = self.gates(ih, hh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * align(state[1], ih) + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.sigmoid(c)
        return h, (h, c)
