"""CharRNN: a character-level language model over rnn | lstm | gru cells.

`forward(ids, state) -> logits, state`. Softmax, loss and sampling live with the caller. With
`keep` (a bool mask over positions) the output layer runs only on those positions: the output
layer is most of the work, and padding positions need none of it.
"""

from __future__ import annotations

import torch
from torch import nn

from tangshi.config import ModelConfig

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class CharRNN(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        if cfg.vocab_size < 5:
            raise ValueError(f"vocab_size must be set from a vocabulary, got {cfg.vocab_size}")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embedding_size)
        self.rnn = _CELLS[cfg.cell](
            cfg.embedding_size,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.drop = nn.Dropout(cfg.dropout)
        # With tied weights the output works in embedding space; project if sizes differ.
        out_size = cfg.embedding_size if cfg.tie_weights else cfg.hidden_size
        self.proj = (
            nn.Linear(cfg.hidden_size, out_size, bias=False)
            if cfg.tie_weights and cfg.hidden_size != cfg.embedding_size
            else None
        )
        self.head = nn.Linear(out_size, cfg.vocab_size)
        if cfg.tie_weights:
            self.head.weight = self.embed.weight
        self._init()

    def _init(self) -> None:
        nn.init.normal_(self.embed.weight, std=0.05 if self.cfg.tie_weights else 1.0)
        nn.init.zeros_(self.head.bias)
        if self.cfg.cell == "lstm":  # forget-gate bias 1: remember by default
            h = self.cfg.hidden_size
            for name, p in self.rnn.named_parameters():
                if name.startswith("bias_ih"):
                    with torch.no_grad():
                        p[h : 2 * h].fill_(1.0)

    def features(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        x = self.drop(self.embed(ids))  # (B, T, E)
        out, state = self.rnn(x, state)  # (B, T, H)
        out = self.drop(out)
        if self.proj is not None:
            out = self.proj(out)  # (B, T, E)
        return out, state

    def forward(
        self, ids: torch.Tensor, state: State | None = None, keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """ids (B, T) -> logits (B, T, V), or (N, V) for the N positions where `keep` is True."""
        out, state = self.features(ids, state)
        if keep is not None:
            out = out[keep]  # (N, H)
        return self.head(out), state

    def initial_state(
        self, batch: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> State:
        """Zeros, or a random normal state (the seed-tf way) when a generator is given."""
        shape = (self.cfg.num_layers, batch, self.cfg.hidden_size)

        def make() -> torch.Tensor:
            if generator is None:
                return torch.zeros(shape, device=device)
            return torch.randn(shape, generator=generator).to(device)

        return (make(), make()) if self.cfg.cell == "lstm" else make()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
