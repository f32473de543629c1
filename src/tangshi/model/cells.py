"""The recurrent cells and what their steps carry.

`CELLS`: the rnn | lstm | gru modules `CharRNN` runs over whole sequences. `run_layer`: one layer of
them over a sequence, on given weights (the layer-by-layer training pass, with dropout between the
layers and on W_hh). `lstm_cell` and `cell_step`: one step of a cell, the math `CharRNN.step` runs
layer by layer. `StepState`: the state a writing step takes and gives, which the generation code
passes along without looking inside.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}

# The state `CharRNN.forward` takes and gives: h (L, B, H), with an LSTM's cells (h, c).
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def run_layer(
    cell: str, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor | None, weights: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One layer over x (B, T, in) from h0 (and an LSTM's c0), each (1, B, H), with `weights`
    [W_ih, W_hh, b_ih, b_hh]: the fused kernels `CELLS` run. Returns (out (B, T, H), h, c or None)."""
    if cell == "lstm":
        out, h, c = torch.lstm(x, [h0, c0], weights, True, 1, 0.0, True, False, True)
        return out, h, c
    run = torch.gru if cell == "gru" else torch.rnn_tanh
    out, h = run(x, h0, weights, True, 1, 0.0, True, False, True)
    return out, h, None


def lstm_cell(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, c) from the gates i, f, g, o (B, 4H), which it overwrites, and the cell (B, H), as
    torch.lstm_cell: one sigmoid over all four gates (g's tanh taken first), in place."""
    i, f, g, o = gates.view(gates.shape[0], 4, -1).unbind(1)
    g = torch.tanh(g)
    gates.sigmoid_()
    c = f.mul_(c).add_(i.mul_(g))
    return o.mul_(torch.tanh(c)), c


def cell_step(cell: str, x: torch.Tensor, h: torch.Tensor, weights: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """A GRU's or a plain RNN's next h (B, H) from x (B, in), h (B, H) and [W_ih, W_hh, b_ih, b_hh]."""
    step = torch.gru_cell if cell == "gru" else torch.rnn_tanh_cell
    return step(x, h, *weights)


@dataclass(slots=True)
class StepState:
    """What a writing step (`CharRNN.step`) carries to the next: each layer's h (L, B, H), an LSTM's
    cells c (L, B, H) (None for the other cells), and `carried`, each layer's W_hh h (B, 4H) that the
    "qint8" step makes one step ahead (`kernels.qint8_step`), or None: then the next step makes them
    from h, by the same products (the same numbers)."""

    h: torch.Tensor
    c: torch.Tensor | None = None
    carried: list[torch.Tensor] | None = None

    def select(self, rows: torch.Tensor) -> StepState:
        """The state of these rows, in this order, what it carries selected with it."""
        return StepState(
            self.h[:, rows],
            None if self.c is None else self.c[:, rows],
            None if self.carried is None else [products[rows] for products in self.carried],
        )

    def set_rows(self, rows: torch.Tensor, source: StepState) -> None:
        """Write the one-row state `source` into these rows, in place; what was carried is dropped
        (the next step makes it from h)."""
        self.h[:, rows] = source.h.expand(-1, len(rows), -1)
        if self.c is not None:
            self.c[:, rows] = source.c.expand(-1, len(rows), -1)
        self.carried = None

    def tensors(self) -> State:
        """h, or an LSTM's (h, c): the state as `CharRNN.forward` takes and gives it."""
        return self.h if self.c is None else (self.h, self.c)
