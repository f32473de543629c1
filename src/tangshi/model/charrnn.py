"""CharRNN: a character-level language model over rnn | lstm | gru cells.

`forward(ids, state) -> logits, state`. Softmax, loss and sampling live with the caller. With
`keep` (a bool mask over positions) the output layer runs only on those positions: the output
layer is most of the work, and padding positions need none of it.

The output layer is a full softmax over the vocabulary, or (`output = "adaptive"`) PyTorch's
adaptive softmax: the frequent characters in a head, the rare ones in smaller clusters behind it.
Both give a proper distribution; with the adaptive one `forward` returns log-probabilities, which
sampling and softmax treat exactly like logits.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tangshi.config import ModelConfig
from tangshi.model.device import cpu_has_bf16

ROW_MULTIPLE = 256  # see CharRNN.nll

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def _lstm_step(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, layer: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM cell step with packed weights (`CharRNN._packed`): gates i, f, g, o as torch.lstm_cell."""
    kind, w, bias, scales = layer
    if kind == "int8":  # int8 W_ih and W_hh, each row exact with its float32 scale: bfloat16 activations
        (w_ih, w_hh), (s_ih, s_hh), unit = w, scales, _unit_scales(w[0].shape[0])
        gates = torch._weight_int8pack_mm(x.to(torch.bfloat16), w_ih, unit).float() * s_ih
        gates = gates + torch._weight_int8pack_mm(h.to(torch.bfloat16), w_hh, unit).float() * s_hh + bias
    elif kind == "onednn":  # bfloat16 [W_ih | W_hh] in oneDNN's own layout for one row (`_onednn_packed`)
        xh = torch.cat([x, h], dim=1, out=x.new_empty(x.shape[0], x.shape[1] + h.shape[1], dtype=torch.bfloat16))
        gates = _onednn_product(xh, w) + bias  # promoted to float32
    else:  # float32
        gates = torch.addmm(bias, torch.cat([x, h], dim=1), w)
    return _lstm_cell(gates, c)


def _lstm_cell(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, c) from the gates i, f, g, o (B, 4H), which it overwrites, and the cell (B, H), as
    torch.lstm_cell: one sigmoid over all four gates (g's tanh taken first), in place."""
    i, f, g, o = gates.view(gates.shape[0], 4, -1).unbind(1)
    g = torch.tanh(g)
    gates.sigmoid_()
    c = f.mul_(c).add_(i.mul_(g))
    return o.mul_(torch.tanh(c)), c


# "qint8" steps: uint8 activations (zero point 127) times int8 weights in oneDNN, whose integer sums are
# exact; each is scaled by a power of two, so that every kernel rounds the same float products: a row
# gets the same numbers at every batch. An LSTM's h, in [-1, 1], on a grid of 1/128.
QUANT_ZERO = 127
QUANT_H = 1 / 128
# the first layer's W_ih x + b is read by id from a float32 table (V, 4H) where it takes at most this
# much memory (the bundled model: 64 MB): one product a step fewer, and no rounding of the embedding
INPUT_TABLE_BYTES = 128 << 20
_ROUNDING = torch.tensor(QUANT_ZERO + 0.5)  # added before the truncation to uint8: rounds to nearest


def quantize_h(h: torch.Tensor) -> torch.Tensor:
    """h (B, H) in [-1, 1] as uint8 on the grid of `QUANT_H` around `QUANT_ZERO`: 127.5 + 128 h lies in
    [-0.5, 255.5], whose truncation is 0-255 (-1 is kept as -127/128), in two operations."""
    return torch.add(_ROUNDING, h, alpha=1 / QUANT_H).to(torch.uint8)


def _qpack(*ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rows of the matrices ws (each (N_i, K)), one after another, each matrix's as `int8_rows`
    rounds it (a shipped checkpoint's own int8 rows exactly), in oneDNN's layout for one row, with
    their float32 scales and zero points."""
    q, scale = (torch.cat(parts) for parts in zip(*(int8_rows(w) for w in ws), strict=True))
    packed = torch.ops.onednn.qlinear_prepack(q, [1, q.shape[1]])
    return packed, scale, torch.zeros(q.shape[0], dtype=torch.long)


def _qproduct(x: torch.Tensor, packed: tuple, x_scale: float, bias: torch.Tensor | None = None) -> torch.Tensor:
    """(x - QUANT_ZERO) x_scale @ the packed rows.T + bias, float32 (B, N)."""
    w, scale, zero = packed
    return torch.ops.onednn.qlinear_pointwise(
        x, x_scale, QUANT_ZERO, w, scale, zero, bias, 1.0, 0, torch.float32, "none", [], ""
    )


def _same_whatever_the_batch(product: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> bool:
    """Whether rows 0 and 3-9 of the batch x (64 rows) get the same numbers alone as in the batch."""
    full = product(x)
    return torch.equal(product(x[:1]), full[:1]) and torch.equal(product(x[3:10]), full[3:10])


@functools.cache
def onednn_int8_exact() -> bool:
    """Whether this torch and CPU multiply uint8 by int8 in oneDNN with exact sums (CPUs with VNNI;
    the 16-bit pairwise sums of older x86 saturate at 255 x 127 x 2): checked on those values."""
    w = torch.full((32, 256), 127.0)
    w[1::2] = -127
    x = torch.full((2, 256), 255, dtype=torch.uint8)
    x[1] = 0
    try:
        got = _qproduct(x, _qpack(w), 1.0)  # the rows' scales are 1: the integer sums themselves
    except (AttributeError, RuntimeError):
        return False
    want = (x.double() - QUANT_ZERO) @ w.double().t()
    return torch.equal(got.double(), want)


def _onednn_packed(w: torch.Tensor) -> torch.Tensor | None:
    """w (N, K) in bfloat16, reordered once into the layout oneDNN's matrix product reads for a batch
    of one row; None where this torch has no such kernel or where, on this CPU, a row's sums would
    depend on its batch (checked here on rows 0 and 3-9 of a batch of 64: packed for one row, every
    batch ran the same kernel on a Xeon with AMX; packed for 64 rows it did not). Measured there
    (2 cores): a step's two layers in 119 us against 380 with `torch.mm` on bfloat16 (which reorders
    the weights at every call) and 282 in float32; at batch 64 340 us against 1,800 in float32."""
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(w.to(torch.bfloat16).contiguous(), 1)
        x = torch.randn(64, w.shape[1], generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
        same = _same_whatever_the_batch(lambda rows: _onednn_product(rows, packed), x)
    except (AttributeError, RuntimeError):
        return None
    return packed if same else None


def _onednn_product(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """x (B, K) bfloat16 @ the weights `_onednn_packed` made, (B, N) bfloat16."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


def step_weights(device: torch.device) -> str:
    """How `CharRNN.step` holds an LSTM model's weights on `device`: "qint8" on a CPU whose oneDNN
    multiplies uint8 by int8 exactly (the LSTM layers, the embedding and the output layer in int8,
    the activations in uint8: `CharRNN._packed`), else "bfloat16" on a CPU that multiplies it in
    hardware, "int8" on other CPUs (W_ih and W_hh apart, each row with its float32 scale: the shipped
    model's own int8 weights exactly; for layers whose sizes are multiples of 16, torch's kernel fails
    on others), "float32" on a GPU (docs/speed.md)."""
    if device.type != "cpu":
        return "float32"
    if onednn_int8_exact():
        return "qint8"
    return "bfloat16" if cpu_has_bf16() else "int8"


def int8_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w (N, K) as int8 with one float32 scale a row (symmetric, round to nearest): what a shipped
    checkpoint stores (`checkpoint.quantize_int8`), so that its weights come back exactly."""
    scale = w.float().abs().amax(dim=1).clamp(min=1e-12) / 127
    return torch.round(w.float() / scale[:, None]).clamp(-127, 127).to(torch.int8).contiguous(), scale.contiguous()


@functools.cache
def _unit_scales(n: int) -> torch.Tensor:
    """Scales of 1 for torch's int8 kernel, which takes them in the activations' type: the rows' own
    float32 scales are applied after it, exactly."""
    return torch.ones(n, dtype=torch.bfloat16)


class _Steps(NamedTuple):
    """What `CharRNN._packed` makes for the steps of an LSTM: the kind ("qint8", or "layers" where each
    layer says its own: (kind, weights, bias, scales)); for qint8, each layer's one product, the first
    layer's input (`embed`) and the output layer (`head`), as `CharRNN._qint8_steps` describes."""

    kind: str
    layers: list[tuple]
    embed: tuple | None
    head: tuple | None


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
            state = self.initial_state(ids.shape[0], ids.device)
        hs, cs = [], []
        for i in range(cfg.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._layer_weights(i)
            if cfg.weight_drop:
                w_hh = F.dropout(w_hh, cfg.weight_drop, training=True)
            params = [w_ih, w_hh, b_ih, b_hh]
            if cfg.cell == "lstm":
                h0, c0 = state
                x, h, c = torch.lstm(x, [h0[i : i + 1], c0[i : i + 1]], params, True, 1, 0.0, True, False, True)
                cs.append(c)
            else:
                run = torch.gru if cfg.cell == "gru" else torch.rnn_tanh
                x, h = run(x, state[i : i + 1], params, True, 1, 0.0, True, False, True)
            hs.append(h)
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

    def prepared(self, device: torch.device | str) -> _Steps | None:
        """An LSTM's weights as `step` takes them on `device` (None for the other cells): given to each
        `step` of a poem, they spare it checking at every step that the weights have not changed."""
        return self._packed(torch.device(device)) if self.cfg.cell == "lstm" else None

    @torch.inference_mode()
    def step(
        self, ids: torch.Tensor, state: State | None = None, prepared: _Steps | None = None, shortlist: bool = False
    ) -> tuple[torch.Tensor, State]:
        """One decoding step: ids (B,) -> logits (B, V), the state carried (inference only).

        The same function as `forward` on one position, run cell by cell: for one step the fused
        multi-layer kernel costs several times more in per-call set-up than the arithmetic. An LSTM
        layer is one or two products of its weights held narrow (`_packed`: uint8 activations by int8
        weights, bfloat16, or int8 weights by bfloat16 activations, by CPU), in a way that gives a
        row the same numbers whatever its batch (docs/speed.md). `prepared`: `prepared(device)` made
        for these weights (the caller's promise that they have not changed since). `shortlist`: an
        adaptive output layer's head alone, the log-probabilities of the shortlist's ids (B, shortlist
        size), the same numbers as theirs in the whole (the clusters are not made); other output
        layers give every id as always.
        """
        cfg = self.cfg
        batch = ids.shape[0]
        if state is None:
            state = self.initial_state(batch, ids.device)
        if cfg.cell == "lstm":
            steps = prepared or self._packed(ids.device)
            if steps.kind == "qint8":
                return self._qint8_step(ids, state, steps, shortlist)
            x = self.embed(ids)
            h_all, c_all = state
            hs, cs = [], []
            for i, layer in enumerate(steps.layers):
                h, c = _lstm_step(x, h_all[i], c_all[i], layer)
                hs.append(h)
                cs.append(c)
                x = h
            new_state: State = (torch.stack(hs), torch.stack(cs))
        else:
            x = self.embed(ids)
            cell = torch.gru_cell if cfg.cell == "gru" else torch.rnn_tanh_cell
            hs = []
            for i in range(cfg.num_layers):
                x = cell(x, state[i], *self._layer_weights(i))
                hs.append(x)
            new_state = torch.stack(hs)
        return self._output(x, shortlist), new_state

    def _output(self, x: torch.Tensor, shortlist: bool = False) -> torch.Tensor:
        """The output layer at a step: logits (or log-probabilities) (B, V) from the last layer's output
        (`step`'s `shortlist`: an adaptive layer's head alone)."""
        if self.proj is not None:
            x = self.proj(x)
        if not self.adaptive:
            return self.head(x)
        if shortlist:
            return _shortlist(F.linear(x, self.head.head.weight, self.head.head.bias), self.head.shortlist_size)
        return adaptive_log_prob(self.head, x)

    def _qint8_step(
        self, ids: torch.Tensor, state: State, steps: _Steps, shortlist: bool
    ) -> tuple[torch.Tensor, State]:
        """`step` with uint8 activations (each layer's h quantized, `quantize_h`) and int8 weights, one
        product a layer: layer i's new h times [W_ih of layer i + 1 (the head's first products after
        the last layer) | W_hh of layer i], whose second part waits for the next step (`_carried`).
        The first layer's W_ih x + b is read from its table by id."""
        h_all, c_all = state
        waiting = self._carried(h_all, steps)
        first = steps.embed
        if first[0] == "table":
            gates = first[1][ids].add_(waiting[0])
        else:  # the embedding's uint8 row by W_ih: a product of its own
            _, table, x_scale, packed, bias = first
            gates = _qproduct(table[ids], packed, x_scale, bias).add_(waiting[0])
        hs, cs, waits = [], [], []
        last = len(steps.layers) - 1
        for i, (packed, bias, rows) in enumerate(steps.layers):
            h, c = _lstm_cell(gates, c_all[i])
            out = _qproduct(quantize_h(h), packed, QUANT_H, bias)
            hs.append(h)
            cs.append(c)
            waits.append(out[:, rows:])
            if i < last:
                gates = torch.add(out[:, :rows], waiting[i + 1])
        h_all = torch.stack(hs)
        self.__dict__["_carried_state"] = (h_all, waits)  # what the next step takes from this state
        state = (h_all, torch.stack(cs))
        if steps.head is None:  # a projection first: the output layer in float32
            return self._output(h, shortlist), state
        sizes, seconds, short = steps.head
        if not seconds:
            return out[:, :rows], state
        if shortlist:
            return _shortlist(out[:, : sizes[0]], short), state
        head_logits, *firsts = torch.split(out[:, :rows], sizes, dim=1)
        return _adaptive_join(head_logits, firsts, seconds, short), state

    def _carried(self, h_all: torch.Tensor, steps: _Steps) -> list[torch.Tensor]:
        """Each layer's W_hh h for this state's h: made by the step that made the state (a state is
        never written in place: the steps make a new one, as every caller here does), else made now
        by the layers' products (the same rows of the same products: the same numbers)."""
        kept = self.__dict__.get("_carried_state")
        if kept is not None and kept[0] is h_all:
            return kept[1]
        layers = zip(h_all, steps.layers, strict=True)
        return [_qproduct(quantize_h(h), packed, QUANT_H, bias)[:, rows:] for h, (packed, bias, rows) in layers]

    def set_rows(self, state: State, rows: torch.Tensor, source: State) -> None:
        """Write a one-row state `source` into these rows of `state`, in place (a batch's rows that
        start from the same context)."""
        parts = state if isinstance(state, tuple) else (state,)
        for part, got in zip(parts, source if isinstance(source, tuple) else (source,), strict=True):
            part[:, rows] = got.expand(-1, len(rows), -1)

    def select_state(self, state: State, rows: torch.Tensor) -> State:
        """The state of these rows, in this order (beam search's hypotheses), with what the steps carry
        for it (`_carried`) selected too."""
        new = tuple(s[:, rows] for s in state) if isinstance(state, tuple) else state[:, rows]
        kept = self.__dict__.get("_carried_state")
        if isinstance(state, tuple) and kept is not None and kept[0] is state[0]:
            self.__dict__["_carried_state"] = (new[0], [a[rows] for a in kept[1]])
        return new

    def _packed(self, device: torch.device) -> _Steps:
        """An LSTM's weights for `step` (`step_weights`), made again whenever the weights change (training
        writes them in place) or move. "qint8" (on a CPU whose oneDNN multiplies uint8 by int8 exactly,
        `_qint8_steps`): int8 weights in oneDNN's layout, uint8 activations. Otherwise each layer is
        (kind, weights, b_ih + b_hh, scales): on a CPU that multiplies bfloat16 in hardware, [W_ih | W_hh]
        in bfloat16 in oneDNN's layout ("onednn", `_onednn_packed`: half the bytes to stream a step); on a
        CPU without bfloat16 (or where that layout is missing or its sums depend on the batch),
        (W_ih, W_hh) in int8 with their float32 scales a row ("int8": a quarter of the bytes; kept apart,
        as the checkpoint ships them: one scale for both would round the smaller half coarser, which
        guidance by a title then amplifies); on a GPU and for shapes the int8 kernel cannot take,
        [W_ih | W_hh] transposed, (in + H, 4H), in float32. Where a qint8 product's rows would depend on
        the batch, the steps take the next kind."""
        params = self._step_params
        key = (device, tuple(w._version for w in params), tuple(w.data_ptr() for w in params))
        cached = getattr(self, "_packed_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        kind = step_weights(device)
        steps = self._qint8_steps() if kind == "qint8" else None
        if steps is None:
            if kind == "qint8":  # a product's rows would depend on the batch: the kind this CPU had before
                kind = "bfloat16" if cpu_has_bf16() else "int8"
            steps = _Steps("layers", self._layer_steps(kind), None, None)
        self._packed_cache = (key, steps)
        return steps

    def _layer_steps(self, kind: str) -> list[tuple]:
        layers = []
        for i in range(self.cfg.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._layer_weights(i)
            bias = (b_ih + b_hh).float()
            packed = _onednn_packed(torch.cat([w_ih, w_hh], dim=1)) if kind == "bfloat16" else None
            if packed is not None:
                layers.append(("onednn", packed, bias, None))
                continue
            # int8 where asked, and where oneDNN's layout is missing or depends on the batch
            if kind != "float32" and all(n % 16 == 0 for n in (*w_ih.shape, *w_hh.shape)):  # the kernel's safe shapes
                (q_ih, s_ih), (q_hh, s_hh) = int8_rows(w_ih), int8_rows(w_hh)
                layers.append(("int8", (q_ih, q_hh), bias, (s_ih, s_hh)))
                continue
            layers.append(("float32", torch.cat([w_ih, w_hh], dim=1).float().t().contiguous(), bias, None))
        return layers

    def _qint8_steps(self) -> _Steps | None:
        """The "qint8" weights (`_packed`), or None where a product's rows would depend on their batch.

        The first layer's W_ih x + b: of every id in a float32 table (`embed` ("table", (V, 4H)))
        where it takes at most `INPUT_TABLE_BYTES`, from W_ih's int8 rows (a shipped checkpoint's
        exactly); else the embedding in uint8 on one power-of-two grid and W_ih packed (("uint8",
        table, its scale, W_ih, b)). Layer i: (packed [W_ih of layer i + 1 | W_hh of layer i], the
        bias of layer i + 1 before zeros, the rows of the first part): each row of int8 as the
        checkpoint stores its matrix; after the last layer, the output layer's first products (an
        adaptive one's head and each cluster's first; none where a projection comes first) take the
        next layer's place. `head`: the sizes of those products, each cluster's second (weight,
        bias) and the shortlist's size (no clusters: a full softmax's logits), or None."""
        gen = torch.Generator().manual_seed(0)

        def steady(packed: tuple, k: int, x_scale: float) -> bool:
            x = torch.randint(0, 256, (64, k), dtype=torch.uint8, generator=gen)
            return _same_whatever_the_batch(lambda rows: _qproduct(rows, packed, x_scale), x)

        weight = self.embed.weight.detach().float()
        layers = [self._layer_weights(i) for i in range(self.cfg.num_layers)]
        w_ih, _, b_ih, b_hh = (w.detach().float() for w in layers[0])
        if weight.shape[0] * w_ih.shape[0] * 4 <= INPUT_TABLE_BYTES:
            # W_ih x + b for every id, from the weights' int8 rows (a shipped checkpoint's exactly)
            q, scale = int8_rows(w_ih)
            embed: tuple = ("table", torch.addmm(b_ih + b_hh, weight, (q.float() * scale[:, None]).t()))
        else:  # the embedding's one scale: the least power of two that keeps its largest value within 127
            x_scale = 2.0 ** math.ceil(math.log2(max(float(weight.abs().max()), 1e-30) / 127))
            table = torch.round(weight / x_scale).add_(QUANT_ZERO).clamp_(0, 255).to(torch.uint8)
            packed = _qpack(w_ih)
            if not steady(packed, w_ih.shape[1], x_scale):
                return None
            embed = ("uint8", table, x_scale, packed, b_ih + b_hh)
        head = None
        if self.proj is None:
            firsts = [self.head.head, *(proj for proj, _ in self.head.tail)] if self.adaptive else [self.head]
            seconds = [(out.weight.detach(), out.bias) for _, out in self.head.tail] if self.adaptive else []
            head = ([m.weight.shape[0] for m in firsts], seconds, self.head.shortlist_size if self.adaptive else 0)
        steps = []
        for i, (_, w_hh, _, _) in enumerate(layers):
            if i + 1 < len(layers):  # the next layer's W_ih and bias
                w_next, _, b_ih, b_hh = (w.detach().float() for w in layers[i + 1])
                ahead = [(w_next, b_ih + b_hh)]
            else:  # the output layer's first products
                ahead = [(m.weight.detach().float(), m.bias) for m in firsts] if head is not None else []
            parts = [*ahead, (w_hh.detach().float(), None)]
            packed = _qpack(*(w for w, _ in parts))
            if not steady(packed, w_hh.shape[1], QUANT_H):
                return None
            rows = sum(w.shape[0] for w, _ in ahead)
            biases = [b.detach().float() if b is not None else w.new_zeros(w.shape[0]) for w, b in parts]
            bias = torch.cat(biases) if any(b is not None for _, b in parts) else None
            steps.append((packed, bias, rows))
        return _Steps("qint8", steps, embed, head)

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


def real_rows(targets: torch.Tensor, ignore: int) -> torch.Tensor:
    """The flat indices, in order, of the positions of (B, T) `targets` that are not `ignore`."""
    return (targets.reshape(-1) != ignore).nonzero().squeeze(1)


def take_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x[keep] for x of (B, T, ...) and `rows = real_rows(...)`: the same rows in the same order. An
    index_select's backward adds the rows' gradients into zeros where a boolean mask's scatters
    them by the mask again: 0.75 against 2.0 ms forward and backward for a batch of 100 poems of
    the seed-pytorch model on a 2-core Xeon (docs/speed.md)."""
    return x.reshape(-1, *x.shape[2:]).index_select(0, rows)


CE_CHUNK = 128  # rows of logits made at once by linear_cross_entropy on a GPU (unmeasured there)
CE_CHUNK_CPU = 512  # on a CPU: the loss and gradients 1.23x faster than 128 on an AMD EPYC Zen 3, 1.11x on a Xeon


def ce_chunk(device: torch.device) -> int:
    """Rows of logits `linear_cross_entropy` makes at once on `device`: 512 on a CPU (a product of
    128 rows by the vocabulary runs below the CPU's peak; 512 was the fastest of 64-1,024 on an AMD
    EPYC Zen 3 and of 128-2,048 on a Xeon with AMX, docs/speed.md), 128 elsewhere."""
    return CE_CHUNK_CPU if device.type == "cpu" else CE_CHUNK


def linear_cross_entropy(
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    chunk: int | None = None,
) -> torch.Tensor:
    """mean(cross_entropy(h @ weight.T + bias, targets)), exactly, without the (N, V) logits.

    The rows go through in chunks (`ce_chunk` rows): each chunk's logits are made, turned into the
    loss and, when a gradient is wanted, at once into the gradient of h, weight and bias, while they
    are still in the cache. The unfused way writes and re-reads N x V floats five times (logits, log-softmax,
    its gradient, a zero-filled NLL gradient, the bias sum), which on a CPU costs as much as the
    three matrix products; here they are touched while in cache.
    """
    chunk = chunk or ce_chunk(h.device)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (h, weight, bias)):
        return _LinearCrossEntropy.apply(h, weight, bias, targets, chunk)
    return _chunked_ce(h, weight, bias, targets, chunk, grads=False)[0]


def _chunked_ce(h, weight, bias, targets, chunk, grads: bool):
    n = h.shape[0]
    total = torch.zeros((), dtype=torch.float64, device=h.device)
    gh = torch.empty_like(h) if grads else None
    gw = torch.zeros_like(weight) if grads else None
    gb = torch.zeros_like(bias) if grads and bias is not None else None
    width = min(chunk, n)
    logits_buf = h.new_empty(width, weight.shape[0])  # reused by every chunk: no fresh pages to fault in
    probs_buf = torch.empty_like(logits_buf)
    for s in range(0, n, chunk):
        hc, tc = h[s : s + chunk], targets[s : s + chunk]
        c = len(tc)
        logits, probs = logits_buf[:c], probs_buf[:c]
        if bias is not None:
            torch.addmm(bias, hc, weight.t(), out=logits)  # (c, V)
        else:
            torch.mm(hc, weight.t(), out=logits)
        # softmax in one fused kernel (one exp a logit; logsumexp and then exp would take two), and
        # the loss -log p[target]; a row whose p[target] underflows takes the logsumexp way
        torch.softmax(logits, dim=1, out=probs)
        rows = torch.arange(c, device=h.device)
        p_target = probs[rows, tc]
        loss = -torch.log(p_target)
        tiny = p_target < 1e-30
        if bool(tiny.any()):
            loss[tiny] = torch.logsumexp(logits[tiny], dim=1) - logits[tiny, tc[tiny]]
        total += loss.sum(dtype=torch.float64)
        if grads:  # d loss_sum / d logits = softmax - one_hot
            probs[rows, tc] -= 1
            torch.mm(probs, weight, out=gh[s : s + chunk])
            gw.addmm_(probs.t(), hc)
            if gb is not None:
                gb += probs.sum(dim=0)
    return (total / max(n, 1)).to(h.dtype), gh, gw, gb


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, targets, chunk):
        loss, gh, gw, gb = _chunked_ce(h, weight, bias, targets, chunk, grads=True)
        ctx.save_for_backward(gh, gw, gb)
        ctx.n = max(h.shape[0], 1)
        return loss

    @staticmethod
    def backward(ctx, grad):
        gh, gw, gb = ctx.saved_tensors
        scale = grad / ctx.n
        return gh * scale, gw * scale, None if gb is None else gb * scale, None, None


def adaptive_log_prob(head: nn.AdaptiveLogSoftmaxWithLoss, x: torch.Tensor) -> torch.Tensor:
    """`head.log_prob(x)`, the same numbers: (N, V) log-probabilities, the head's log-softmax for
    the frequent characters and each cluster's own plus its entry in the head for the rare ones.
    The module's way costs more than its products at batch 1 (seven module calls and a slice
    assignment a cluster); here the products are called directly and the parts joined once."""
    firsts = [F.linear(x, proj.weight, proj.bias) for proj, _ in head.tail]
    seconds = [(out.weight, out.bias) for _, out in head.tail]
    return _adaptive_join(F.linear(x, head.head.weight, head.head.bias), firsts, seconds, head.shortlist_size)


def _shortlist(head_logits: torch.Tensor, short: int) -> torch.Tensor:
    """The log-probabilities of the shortlist's ids from an adaptive layer's head logits: those of
    `_adaptive_join`, without the clusters."""
    return F.log_softmax(head_logits, dim=1)[:, :short]


def _adaptive_join(
    head_logits: torch.Tensor, firsts: list[torch.Tensor], seconds: list[tuple], short: int
) -> torch.Tensor:
    """`adaptive_log_prob` from the head's logits, each cluster's first product and its second
    product's (weight, bias), and the shortlist's size."""
    head_lp = F.log_softmax(head_logits, dim=1)
    parts = [head_lp[:, :short]]
    for i, (first, (weight, bias)) in enumerate(zip(firsts, seconds, strict=True)):
        parts.append(F.log_softmax(F.linear(first, weight, bias), dim=1).add_(head_lp[:, short + i, None]))
    return torch.cat(parts, dim=1)


def _clusters(head: nn.AdaptiveLogSoftmaxWithLoss, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each target's cluster (0: the head, i: tail i - 1) and its target in the head (a rare
    character's is its cluster's entry)."""
    edges = torch.tensor(head.cutoffs[:-1], device=targets.device)
    cluster = torch.bucketize(targets, edges, right=True)
    return cluster, torch.where(cluster == 0, targets, head.shortlist_size - 1 + cluster)


TAIL_ROW_MULTIPLE = 64  # see adaptive_log_likelihood


def adaptive_log_likelihood(
    head: nn.AdaptiveLogSoftmaxWithLoss, h: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """`head(h, targets).output`, each row's log-probability of its target, as the module computes it,
    but each cluster's rows padded to a multiple of `TAIL_ROW_MULTIPLE` (repeats of its first row,
    dropped after): under autocast on a CPU, oneDNN builds a kernel for every new product shape, and
    the number of rows whose character is rare changes from batch to batch (on a Xeon with AMX the
    rare cluster's product of 49 x 8 by 8 x 4,111 took 13 ms instead of microseconds; docs/speed.md)."""
    cluster, head_targets = _clusters(head, targets)
    out = h.new_zeros(targets.shape[0])
    for i, tail in enumerate(head.tail):
        rows = (cluster == i + 1).nonzero().squeeze(1)
        k = rows.numel()
        if not k:
            continue
        padded = torch.cat([rows, rows[:1].expand(-k % TAIL_ROW_MULTIPLE)])
        logp = F.log_softmax(tail(h.index_select(0, padded)), dim=1)
        inner = (targets.index_select(0, padded) - head.cutoffs[i]).unsqueeze(1)
        out.index_copy_(0, rows, logp.gather(1, inner).squeeze(1)[:k].to(out.dtype))
    head_logp = F.log_softmax(head.head(h), dim=1)
    return out + head_logp.gather(1, head_targets.unsqueeze(1)).squeeze(1)


def adaptive_cross_entropy(h: torch.Tensor, head: nn.AdaptiveLogSoftmaxWithLoss, targets: torch.Tensor) -> torch.Tensor:
    """mean(-head(h, targets).output), exactly, each part by `linear_cross_entropy` (fp32).

    The adaptive softmax's loss is the cross-entropy of the head (the frequent characters and one
    entry a cluster; a rare character's target is its cluster) plus, for the rows whose character is
    rare, the cross-entropy of its cluster's classifier on the projected features. PyTorch's module
    writes each part's logits, log-probabilities and their gradients out in full; here they stay in
    cache (72 against 83 ms a training step of the seed-pytorch architecture on a 2-core CPU; under
    bf16 autocast the module's way is the faster, and `CharRNN.nll` takes `adaptive_log_likelihood`).
    """
    cluster, head_targets = _clusters(head, targets)
    total = linear_cross_entropy(h, head.head.weight, head.head.bias, head_targets) * targets.numel()
    for i, (proj, out) in enumerate(head.tail):
        rows = (cluster == i + 1).nonzero().squeeze(1)
        if rows.numel():
            inner = targets.index_select(0, rows) - head.cutoffs[i]
            total = total + linear_cross_entropy(proj(h.index_select(0, rows)), out.weight, None, inner) * rows.numel()
    return total / max(targets.numel(), 1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
