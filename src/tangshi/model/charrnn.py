"""CharRNN: a character-level language model over rnn | lstm | gru cells.

`forward(ids, state) -> logits, state`. Softmax, loss and sampling live with the caller. With
`keep` (a bool mask over positions) the output layer runs only on those positions: the output
layer is most of the work, and padding positions need none of it.

The output layer is a full softmax over the vocabulary, or (`output = "adaptive"`) PyTorch's
adaptive softmax: the frequent characters in a head, the rare ones in smaller clusters behind it.
Both give a proper distribution; with the adaptive one `forward` returns log-probabilities, which
sampling and softmax treat exactly like logits.

Writing goes one `step` at a time on a `StepState` (`initial_state`, `select_state`, `set_rows`),
an LSTM's weights held narrow as `prepared(device)` makes them (`model.kernels`); training reads
`features`, `forward`, `objective` and `nll` (the losses: `model.losses`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tangshi.config import ModelConfig
from tangshi.model import kernels
from tangshi.model.cells import CELLS, State, StepState, cell_step, run_layer
from tangshi.model.kernels import OutputWeights, Steps
from tangshi.model.losses import (
    adaptive_cross_entropy,
    adaptive_join,
    adaptive_log_likelihood,
    adaptive_log_prob,
    linear_cross_entropy,
    real_rows,
    shortlist_log_prob,
    take_rows,
)

ROW_MULTIPLE = 256  # see CharRNN.nll


class CharRNN(nn.Module):
    """Embedding, recurrent layers (`cfg.cell`), an optional projection and the output layer."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        if cfg.vocab_size < 5:
            raise ValueError(f"vocab_size must be set from a vocabulary, got {cfg.vocab_size}")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embedding_size)
        self.rnn = CELLS[cfg.cell](
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
        cutoffs = cfg.cutoff_list() if cfg.output == "adaptive" else []
        self.adaptive = bool(cutoffs)
        self.head: nn.Module
        if self.adaptive:
            self.head = nn.AdaptiveLogSoftmaxWithLoss(out_size, cfg.vocab_size, cutoffs, div_value=cfg.div_value)
        else:
            self.head = nn.Linear(out_size, cfg.vocab_size)
        if cfg.tie_weights:
            self.head.weight = self.embed.weight
        self._init()
        # the parameters `_packed` watches: written in place by training and loading, moved by `.to()`
        self._step_params = tuple(self.parameters())
        self._packed_cache: tuple | None = None  # (what the weights were, the `Steps` made of them)

    def _init(self) -> None:
        nn.init.normal_(self.embed.weight, std=0.05 if self.cfg.tie_weights else 1.0)
        if not self.adaptive:
            nn.init.zeros_(self.head.bias)
        if self.cfg.cell == "lstm":  # forget-gate bias 1: remember by default
            h = self.cfg.hidden_size
            for name, p in self.rnn.named_parameters():
                if name.startswith("bias_ih"):
                    with torch.no_grad():
                        p[h : 2 * h].fill_(1.0)

    def features(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        out, state, _, _ = self._features(ids, state)
        return out, state

    def _features(
        self, ids: torch.Tensor, state: State | None
    ) -> tuple[torch.Tensor, State, torch.Tensor, torch.Tensor]:
        """The output features, the state, and the last layer's output before and after its
        dropout (what the activation penalties of `objective` look at)."""
        if self.training and (self.cfg.variational or self.cfg.weight_drop):
            raw, state = self._regularised(ids, state)
            dropped = self._dropout(raw)
        else:
            x = self.drop(self._embed(ids))  # (B, T, E)
            raw, state = self.rnn(x, state)  # (B, T, H)
            dropped = self.drop(raw)
        out = dropped if self.proj is None else self.proj(dropped)  # (B, T, H or E)
        return out, state, raw, dropped

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        """The embeddings of `ids`; while training with `embed_drop`, whole characters dropped (each
        row of the table zeroed with that probability, for the whole batch) and the rest scaled up."""
        p = self.cfg.embed_drop
        if not (self.training and p):
            return self.embed(ids)
        weight = self.embed.weight
        keep = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p)
        return F.embedding(ids, weight * keep / (1 - p))

    def _dropout(self, x: torch.Tensor) -> torch.Tensor:
        """Dropout on (B, T, F); with `variational`, one mask a sequence for all its time steps."""
        p = self.cfg.dropout
        if not p:
            return x
        if not self.cfg.variational:
            return F.dropout(x, p, training=True)
        keep = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - p)
        return x * keep / (1 - p)

    def _regularised(self, ids: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """Training pass layer by layer: variational dropout between layers, DropConnect on W_hh.
        Returns the last layer's output before its dropout.

        Runs the same kernels as `self.rnn`, on the same parameters, one layer a call."""
        cfg = self.cfg
        x = self._dropout(self._embed(ids))
        if state is None:
            state = self._zeros(ids.shape[0], ids.device)
        h0, c0 = state if cfg.cell == "lstm" else (state, None)
        hs, cs = [], []
        for i in range(cfg.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._layer_weights(i)
            if cfg.weight_drop:
                w_hh = F.dropout(w_hh, cfg.weight_drop, training=True)
            c_i = c0[i : i + 1] if c0 is not None else None
            x, h, c = run_layer(cfg.cell, x, h0[i : i + 1], c_i, [w_ih, w_hh, b_ih, b_hh])  # (B, T, H)
            hs.append(h)
            cs.append(c)
            if i < cfg.num_layers - 1:
                x = self._dropout(x)
        new_state: State = (torch.cat(hs), torch.cat(cs)) if cfg.cell == "lstm" else torch.cat(hs)
        return x, new_state

    def forward(
        self, ids: torch.Tensor, state: State | None = None, keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """ids (B, T) -> logits (B, T, V), or (N, V) for the N positions where `keep` is True."""
        out, state = self.features(ids, state)
        if keep is not None:
            out = out[keep]  # (N, H)
        if self.adaptive:
            flat = out.reshape(-1, out.shape[-1])
            return adaptive_log_prob(self.head, flat).reshape(*out.shape[:-1], -1), state
        return self.head(out), state

    def prepared(self, device: torch.device | str) -> Steps | None:
        """An LSTM's weights as `step` takes them on `device` (None for the other cells): given to each
        `step` of a poem, they spare it checking at every step that the weights have not changed."""
        return self._packed(torch.device(device)) if self.cfg.cell == "lstm" else None

    @torch.inference_mode()
    def step(
        self, ids: torch.Tensor, state: StepState | None = None, prepared: Steps | None = None, shortlist: bool = False
    ) -> tuple[torch.Tensor, StepState]:
        """One decoding step: ids (B,) -> logits (B, V), the state carried (inference only).

        The same function as `forward` on one position, run cell by cell: for one step the fused
        multi-layer kernel costs several times more in per-call set-up than the arithmetic. An LSTM
        layer is one or two products of its weights held narrow (`model.kernels`: uint8 activations by
        int8 weights, bfloat16, or int8 weights by bfloat16 activations, by CPU), in a way that gives a
        row the same numbers whatever its batch. `state`: what the step before gave (None: zeros).
        `prepared`: `prepared(device)` made for these weights (the caller's promise that they have not
        changed since). `shortlist`: an adaptive output layer's head alone, the log-probabilities of the
        shortlist's ids (B, shortlist size), the same numbers as theirs in the whole (the clusters are
        not made); other output layers give every id as always.
        """
        if state is None:
            state = self.initial_state(ids.shape[0], ids.device)
        if self.cfg.cell != "lstm":
            x = self.embed(ids)  # (B, E)
            hs = []
            for i in range(self.cfg.num_layers):
                x = cell_step(self.cfg.cell, x, state.h[i], self._layer_weights(i))  # (B, H)
                hs.append(x)
            return self._output(x, shortlist), StepState(torch.stack(hs))
        steps = prepared or self._packed(ids.device)
        if steps.kind == "qint8":
            products, h, state = kernels.qint8_step(ids, state, steps)
            return self._qint8_output(products, h, steps, shortlist), state
        x = self.embed(ids)
        hs, cs = [], []
        for i, layer in enumerate(steps.layers):
            x, c = kernels.lstm_layer_step(x, state.h[i], state.c[i], layer)  # (B, H) each
            hs.append(x)
            cs.append(c)
        return self._output(x, shortlist), StepState(torch.stack(hs), torch.stack(cs))

    def _output(self, x: torch.Tensor, shortlist: bool = False) -> torch.Tensor:
        """The output layer at a step: logits (or log-probabilities) (B, V) from the last layer's output
        (`step`'s `shortlist`: an adaptive layer's head alone)."""
        if self.proj is not None:
            x = self.proj(x)
        if not self.adaptive:
            return self.head(x)
        if shortlist:
            return shortlist_log_prob(F.linear(x, self.head.head.weight, self.head.head.bias), self.head.shortlist_size)
        return adaptive_log_prob(self.head, x)

    def _qint8_output(self, products: torch.Tensor, h: torch.Tensor, steps: Steps, shortlist: bool) -> torch.Tensor:
        """The output layer after a qint8 step, from its first products (B, their rows), made with the
        last layer's product (a full softmax's logits; an adaptive one's head and each cluster's first),
        or from the last layer's h (B, H) where a projection comes first (then in float32)."""
        if steps.head is None:
            return self._output(h, shortlist)
        sizes, seconds, short = steps.head
        if not seconds:
            return products
        if shortlist:
            return shortlist_log_prob(products[:, : sizes[0]], short)
        head_logits, *firsts = torch.split(products, sizes, dim=1)
        return adaptive_join(head_logits, firsts, seconds, short)

    def initial_state(
        self, batch: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> StepState:
        """The writing steps' first state: zeros, or a random normal state (the seed-tf way) when a
        generator is given."""
        state = self._zeros(batch, device, generator)
        return StepState(*state) if isinstance(state, tuple) else StepState(state)

    def _zeros(self, batch: int, device: torch.device | str, generator: torch.Generator | None = None) -> State:
        """A state as `forward` takes it: h (L, B, H), an LSTM's (h, c); zeros, or random normal values
        drawn from `generator`."""
        shape = (self.cfg.num_layers, batch, self.cfg.hidden_size)

        def make() -> torch.Tensor:
            if generator is None:
                return torch.zeros(shape, device=device)
            return torch.randn(shape, generator=generator).to(device)

        return (make(), make()) if self.cfg.cell == "lstm" else make()

    def set_rows(self, state: StepState, rows: torch.Tensor, source: StepState) -> None:
        """Write a one-row state `source` into these rows of `state`, in place (a batch's rows that
        start from the same context)."""
        state.set_rows(rows, source)

    def select_state(self, state: StepState, rows: torch.Tensor) -> StepState:
        """The state of these rows, in this order (beam search's hypotheses), with what the steps carry
        for it selected too."""
        return state.select(rows)

    def _packed(self, device: torch.device) -> Steps:
        """An LSTM's weights for `step` (`kernels.prepare_steps`), made again whenever the weights change
        (training writes them in place) or move."""
        params = self._step_params
        key = (device, tuple(w._version for w in params), tuple(w.data_ptr() for w in params))
        cached = self._packed_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        layers = [self._layer_weights(i) for i in range(self.cfg.num_layers)]
        steps = kernels.prepare_steps(device, self.embed.weight, layers, self._output_weights())
        self._packed_cache = (key, steps)
        return steps

    def _output_weights(self) -> OutputWeights | None:
        """The output layer's products for the qint8 steps; None where a projection comes first."""
        if self.proj is not None:
            return None
        if not self.adaptive:
            return OutputWeights([(self.head.weight, self.head.bias)], [], 0)
        firsts = [self.head.head, *(proj for proj, _ in self.head.tail)]
        seconds = [(out.weight, out.bias) for _, out in self.head.tail]
        return OutputWeights([(m.weight, m.bias) for m in firsts], seconds, self.head.shortlist_size)

    def _layer_weights(self, i: int) -> tuple[torch.Tensor, ...]:
        """W_ih, W_hh, b_ih, b_hh of layer i: the recurrent module's own flat list, which it keeps
        current through `.to()` and `load_state_dict` (four `getattr`s cost more than a step's gates)."""
        return tuple(self.rnn._flat_weights[4 * i : 4 * i + 4])

    def nll(self, inputs: torch.Tensor, targets: torch.Tensor, ignore: int) -> tuple[torch.Tensor, int]:
        """Mean negative log-likelihood of `targets` over positions whose target is not `ignore`."""
        rows = real_rows(targets, ignore)
        out, _ = self.features(inputs)
        return self._nll(take_rows(out, rows), take_rows(targets, rows), ignore)

    def objective(self, inputs: torch.Tensor, targets: torch.Tensor, ignore: int) -> tuple[torch.Tensor, torch.Tensor]:
        """What training minimises: the mean NLL plus, with `ar` / `tar`, AWD-LSTM's activation
        penalties over the real positions; returns (objective, the NLL alone)."""
        rows = real_rows(targets, ignore)
        out, _, raw, dropped = self._features(inputs, None)
        loss, _ = self._nll(take_rows(out, rows), take_rows(targets, rows), ignore)
        total = loss
        cfg = self.cfg
        if self.training and cfg.ar:
            total = total + cfg.ar * take_rows(dropped, rows).float().pow(2).mean()
        if self.training and cfg.tar:
            keep = targets != ignore  # (B, T)
            # h_t - h_{t-1} where position t is real (padding only trails, so t - 1 is real too)
            step = (raw[:, 1:] - raw[:, :-1])[keep[:, 1:]]
            if step.numel():
                total = total + cfg.tar * step.float().pow(2).mean()
        return total, loss

    def _nll(self, out: torch.Tensor, gold: torch.Tensor, ignore: int) -> tuple[torch.Tensor, int]:
        n = int(gold.numel())
        if torch.is_autocast_enabled(out.device.type):
            # Round the rows up with zero rows whose target is `ignore` (a frequent id): the output
            # layer then sees few distinct shapes, so oneDNN's per-shape kernels are reused.
            extra = -n % ROW_MULTIPLE
            out = torch.cat([out, out.new_zeros(extra, out.shape[1])])
            gold = torch.cat([gold, gold.new_full((extra,), ignore)])
            if not self.adaptive:
                return F.cross_entropy(self.head(out).float(), gold, ignore_index=ignore), n
            # the adaptive layer needs its input in the dtype its log_softmax returns under
            # autocast: the low precision on CPUs, fp32 on CUDA
            low = torch.get_autocast_dtype(out.device.type)
            out = out.to(torch.log_softmax(out[:1, :1].to(low), dim=-1).dtype)
            return -adaptive_log_likelihood(self.head, out, gold)[:n].float().mean(), n
        # fp32: the fused losses, which never write out the logits (on a GPU, the module's kernels)
        if not self.adaptive:
            return linear_cross_entropy(out, self.head.weight, self.head.bias, gold), n
        if out.device.type == "cpu":
            return adaptive_cross_entropy(out, self.head, gold), n
        return -self.head(out, gold).output.mean(), n


def count_parameters(model: nn.Module) -> int:
    """The model's parameters, a tied matrix counted once."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
