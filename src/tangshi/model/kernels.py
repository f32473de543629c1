"""The writing steps' weights held narrow, and the steps that multiply by them.

How `CharRNN.step` holds an LSTM's weights on a device (`step_weights`): "qint8" (uint8 activations
by int8 weights in oneDNN, whose integer sums are exact), "bfloat16" (oneDNN's one-row layout),
"int8" (int8 rows by bfloat16 activations) or "float32". Here: the int8 rows a checkpoint stores
(`int8_rows`), oneDNN's packing and the checks that a row's sums do not depend on its batch, the
weights each kind prepares (`prepare_steps` -> `Steps`), an LSTM layer's step on them
(`lstm_layer_step`) and the qint8 step (`qint8_step`). Every kind gives a row the same numbers
whatever its batch; why each kind, and what it costs: docs/speed.md, "Writing" and "Writing steps".
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from tangshi.model.cells import StepState, lstm_cell
from tangshi.model.device import cpu_has_bf16

# "qint8" steps: uint8 activations (zero point 127) times int8 weights in oneDNN, whose integer sums are
# exact; each is scaled by a power of two, so that every kernel rounds the same float products: a row
# gets the same numbers at every batch. An LSTM's h, in [-1, 1], on a grid of 1/128.
QUANT_ZERO = 127
QUANT_H = 1 / 128
# the first layer's W_ih x + b is read by id from a float32 table (V, 4H) where it takes at most this
# much memory (the bundled model: 64 MB): one product a step fewer, and no rounding of the embedding
INPUT_TABLE_BYTES = 128 << 20
_ROUNDING = torch.tensor(QUANT_ZERO + 0.5)  # added before the truncation to uint8: rounds to nearest


class LayerWeights(NamedTuple):
    """An LSTM layer's weights for the steps of kind "layers" (`layer_steps`): `kind` "int8" (weights
    (W_ih, W_hh) in int8, `scales` their float32 scales a row), "onednn" ([W_ih | W_hh] in bfloat16 in
    oneDNN's layout) or "float32" ([W_ih | W_hh] transposed, (in + H, 4H)); `bias` b_ih + b_hh."""

    kind: str
    weights: torch.Tensor | tuple[torch.Tensor, torch.Tensor]
    bias: torch.Tensor
    scales: tuple[torch.Tensor, torch.Tensor] | None


class QInput(NamedTuple):
    """The qint8 steps' first layer's W_ih x + b: `kind` "table" (`table` (V, 4H) float32, of every id)
    or "uint8" (`table` the embedding (V, E) in uint8 on a grid of `scale`, by `packed` W_ih, + `bias`)."""

    kind: str
    table: torch.Tensor
    scale: float | None = None
    packed: tuple | None = None
    bias: torch.Tensor | None = None


class QLayer(NamedTuple):
    """A qint8 layer's one product (`qpack`): its h times [W_ih of the next layer (or the output layer's
    first products) | its own W_hh]; `bias` the first part's bias before zeros (None where it has none);
    `rows` the first part's rows."""

    packed: tuple
    bias: torch.Tensor | None
    rows: int


class QHead(NamedTuple):
    """The output layer after the qint8 steps' last product: the sizes of its first products (an adaptive
    layer's head and each cluster's first; a full one's logits), each cluster's second (weight, bias),
    and the adaptive layer's shortlist size (0 for a full softmax)."""

    sizes: list[int]
    seconds: list[tuple]
    shortlist: int


class Steps(NamedTuple):
    """An LSTM's weights as the steps take them (`CharRNN.prepared`): `kind` "qint8" (`layers` are
    `QLayer`s, `embed` the first layer's input, `head` the output layer's rest or None where a projection
    comes first) or "layers" (each `LayerWeights` says its own kind; `embed` and `head` None)."""

    kind: str
    layers: list
    embed: QInput | None
    head: QHead | None


class OutputWeights(NamedTuple):
    """The output layer as the qint8 steps read it: its first products' (weight, bias) (an adaptive
    layer's head and each cluster's projection; a full layer's one), each cluster's second (weight,
    bias), and the shortlist size (0 for a full softmax)."""

    firsts: list[tuple]
    seconds: list[tuple]
    shortlist: int


def quantize_h(h: torch.Tensor) -> torch.Tensor:
    """h (B, H) in [-1, 1] as uint8 on the grid of `QUANT_H` around `QUANT_ZERO`: 127.5 + 128 h lies in
    [-0.5, 255.5], whose truncation is 0-255 (-1 is kept as -127/128), in two operations."""
    return torch.add(_ROUNDING, h, alpha=1 / QUANT_H).to(torch.uint8)


def int8_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w (N, K) as int8 with one float32 scale a row (symmetric, round to nearest): what a shipped
    checkpoint stores (`checkpoint.quantize_int8`), so that its weights come back exactly."""
    scale = w.float().abs().amax(dim=1).clamp(min=1e-12) / 127
    return torch.round(w.float() / scale[:, None]).clamp(-127, 127).to(torch.int8).contiguous(), scale.contiguous()


def qpack(*ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rows of the matrices ws (each (N_i, K)), one after another, each matrix's as `int8_rows`
    rounds it (a shipped checkpoint's own int8 rows exactly), in oneDNN's layout for one row, with
    their float32 scales and zero points."""
    q, scale = (torch.cat(parts) for parts in zip(*(int8_rows(w) for w in ws), strict=True))
    packed = torch.ops.onednn.qlinear_prepack(q, [1, q.shape[1]])
    return packed, scale, torch.zeros(q.shape[0], dtype=torch.long)


def qproduct(x: torch.Tensor, packed: tuple, x_scale: float, bias: torch.Tensor | None = None) -> torch.Tensor:
    """(x - QUANT_ZERO) x_scale @ the packed rows.T + bias: x (B, K) uint8 -> (B, N) float32."""
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
        got = qproduct(x, qpack(w), 1.0)  # the rows' scales are 1: the integer sums themselves
    except (AttributeError, RuntimeError):
        return False
    want = (x.double() - QUANT_ZERO) @ w.double().t()
    return torch.equal(got.double(), want)


def onednn_packed(w: torch.Tensor) -> torch.Tensor | None:
    """w (N, K) in bfloat16, reordered once into the layout oneDNN's matrix product reads for a batch
    of one row (`torch.mm` on bfloat16 reorders the weights at every call); None where this torch has
    no such kernel or where, on this CPU, a row's sums would depend on its batch (checked here on rows
    0 and 3-9 of a batch of 64: packed for one row, every batch ran the same kernel on a Xeon with AMX;
    packed for 64 rows it did not)."""
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(w.to(torch.bfloat16).contiguous(), 1)
        x = torch.randn(64, w.shape[1], generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
        same = _same_whatever_the_batch(lambda rows: onednn_product(rows, packed), x)
    except (AttributeError, RuntimeError):
        return None
    return packed if same else None


def onednn_product(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """x (B, K) bfloat16 @ the weights `onednn_packed` made, (B, N) bfloat16."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


@functools.cache
def _unit_scales(n: int) -> torch.Tensor:
    """Scales of 1 for torch's int8 kernel, which takes them in the activations' type: the rows' own
    float32 scales are applied after it, exactly."""
    return torch.ones(n, dtype=torch.bfloat16)


def step_weights(device: torch.device) -> str:
    """How `CharRNN.step` holds an LSTM model's weights on `device`: "qint8" on a CPU whose oneDNN
    multiplies uint8 by int8 exactly (the LSTM layers, the embedding and the output layer in int8,
    the activations in uint8: `qint8_steps`), else "bfloat16" on a CPU that multiplies it in
    hardware, "int8" on other CPUs (W_ih and W_hh apart, each row with its float32 scale: the shipped
    model's own int8 weights exactly; for layers whose sizes are multiples of 16, torch's kernel fails
    on others), "float32" on a GPU (docs/speed.md)."""
    if device.type != "cpu":
        return "float32"
    if onednn_int8_exact():
        return "qint8"
    return "bfloat16" if cpu_has_bf16() else "int8"


def prepare_steps(
    device: torch.device, embed: torch.Tensor, layers: list[tuple], output: OutputWeights | None
) -> Steps:
    """The steps' weights on `device` (`step_weights`) from the embedding (V, E), each layer's
    (W_ih, W_hh, b_ih, b_hh) and the output layer (None where a projection comes first). Where a qint8
    product's rows would depend on the batch, the steps take the kind this CPU would have without
    qint8."""
    kind = step_weights(device)
    steps = qint8_steps(embed, layers, output) if kind == "qint8" else None
    if steps is None:
        if kind == "qint8":  # a product's rows would depend on the batch
            kind = "bfloat16" if cpu_has_bf16() else "int8"
        steps = Steps("layers", layer_steps(layers, kind), None, None)
    return steps


def layer_steps(layers: list[tuple], kind: str) -> list[LayerWeights]:
    """Each layer's weights for `lstm_layer_step`: [W_ih | W_hh] in bfloat16 in oneDNN's layout where
    `kind` is "bfloat16" (half the bytes to stream a step); (W_ih, W_hh) in int8 with their float32
    scales a row where it is "int8" or where that layout is missing or its sums depend on the batch (a
    quarter of the bytes; kept apart, as the checkpoint ships them: one scale for both would round the
    smaller half coarser, which guidance by a title then amplifies); [W_ih | W_hh] in float32 on a GPU
    and for shapes the int8 kernel cannot take."""
    steps = []
    for w_ih, w_hh, b_ih, b_hh in layers:
        bias = (b_ih + b_hh).float()
        packed = onednn_packed(torch.cat([w_ih, w_hh], dim=1)) if kind == "bfloat16" else None
        if packed is not None:
            steps.append(LayerWeights("onednn", packed, bias, None))
            continue
        if kind != "float32" and all(n % 16 == 0 for n in (*w_ih.shape, *w_hh.shape)):  # the kernel's safe shapes
            (q_ih, s_ih), (q_hh, s_hh) = int8_rows(w_ih), int8_rows(w_hh)
            steps.append(LayerWeights("int8", (q_ih, q_hh), bias, (s_ih, s_hh)))
            continue
        steps.append(LayerWeights("float32", torch.cat([w_ih, w_hh], dim=1).float().t().contiguous(), bias, None))
    return steps


def lstm_layer_step(
    x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, layer: LayerWeights
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM layer's step with its `layer_steps` weights: x (B, in), h and c (B, H) -> (h, c)."""
    kind, w, bias, scales = layer
    if kind == "int8":  # int8 W_ih and W_hh, each row exact with its float32 scale: bfloat16 activations
        (w_ih, w_hh), (s_ih, s_hh), unit = w, scales, _unit_scales(w[0].shape[0])
        gates = torch._weight_int8pack_mm(x.to(torch.bfloat16), w_ih, unit).float() * s_ih
        gates = gates + torch._weight_int8pack_mm(h.to(torch.bfloat16), w_hh, unit).float() * s_hh + bias
    elif kind == "onednn":  # bfloat16 [W_ih | W_hh] in oneDNN's own layout for one row
        xh = torch.cat([x, h], dim=1, out=x.new_empty(x.shape[0], x.shape[1] + h.shape[1], dtype=torch.bfloat16))
        gates = onednn_product(xh, w) + bias  # promoted to float32
    else:  # float32
        gates = torch.addmm(bias, torch.cat([x, h], dim=1), w)  # (B, 4H)
    return lstm_cell(gates, c)


def qint8_steps(embed: torch.Tensor, layers: list[tuple], output: OutputWeights | None) -> Steps | None:
    """The "qint8" weights (`prepare_steps`), or None where a product's rows would depend on their batch.

    The first layer's W_ih x + b: of every id in a float32 table where it takes at most
    `INPUT_TABLE_BYTES`, from W_ih's int8 rows (a shipped checkpoint's exactly); else the embedding in
    uint8 on one power-of-two grid and W_ih packed. Layer i: one product, [W_ih of layer i + 1 | W_hh
    of layer i], each matrix's rows in int8 as the checkpoint stores it; after the last layer, the
    output layer's first products (none where a projection comes first) take the next layer's place."""
    gen = torch.Generator().manual_seed(0)

    def steady(packed: tuple, k: int, x_scale: float) -> bool:
        x = torch.randint(0, 256, (64, k), dtype=torch.uint8, generator=gen)
        return _same_whatever_the_batch(lambda rows: qproduct(rows, packed, x_scale), x)

    weight = embed.detach().float()
    w_ih, _, b_ih, b_hh = (w.detach().float() for w in layers[0])
    if weight.shape[0] * w_ih.shape[0] * 4 <= INPUT_TABLE_BYTES:
        # W_ih x + b for every id, from the weights' int8 rows (a shipped checkpoint's exactly)
        q, scale = int8_rows(w_ih)
        first = QInput("table", torch.addmm(b_ih + b_hh, weight, (q.float() * scale[:, None]).t()))  # (V, 4H)
    else:  # the embedding's one scale: the least power of two that keeps its largest value within 127
        x_scale = 2.0 ** math.ceil(math.log2(max(float(weight.abs().max()), 1e-30) / 127))
        table = torch.round(weight / x_scale).add_(QUANT_ZERO).clamp_(0, 255).to(torch.uint8)
        packed = qpack(w_ih)
        if not steady(packed, w_ih.shape[1], x_scale):
            return None
        first = QInput("uint8", table, x_scale, packed, b_ih + b_hh)
    head = None
    if output is not None:
        seconds = [(w.detach(), b) for w, b in output.seconds]
        head = QHead([w.shape[0] for w, _ in output.firsts], seconds, output.shortlist)
    steps = []
    for i, (_, w_hh, _, _) in enumerate(layers):
        if i + 1 < len(layers):  # the next layer's W_ih and bias
            w_next, _, b_ih, b_hh = (w.detach().float() for w in layers[i + 1])
            ahead = [(w_next, b_ih + b_hh)]
        else:  # the output layer's first products
            ahead = [(w.detach().float(), b) for w, b in output.firsts] if output is not None else []
        parts = [*ahead, (w_hh.detach().float(), None)]
        packed = qpack(*(w for w, _ in parts))
        if not steady(packed, w_hh.shape[1], QUANT_H):
            return None
        rows = sum(w.shape[0] for w, _ in ahead)
        biases = [b.detach().float() if b is not None else w.new_zeros(w.shape[0]) for w, b in parts]
        bias = torch.cat(biases) if any(b is not None for _, b in parts) else None
        steps.append(QLayer(packed, bias, rows))
    return Steps("qint8", steps, first, head)


def qint8_step(ids: torch.Tensor, state: StepState, steps: Steps) -> tuple[torch.Tensor, torch.Tensor, StepState]:
    """An LSTM's step with uint8 activations (each layer's h quantized, `quantize_h`) and int8 weights,
    one product a layer: layer i's new h times [W_ih of layer i + 1 (the output layer's first products
    after the last layer) | W_hh of layer i], whose second part the new state carries to the next step.
    The first layer's W_ih x + b is read from its table by id.

    ids (B,) -> (the output layer's first products (B, sum of `steps.head.sizes`; (B, 0) without a
    head), the last layer's h (B, H), the new state)."""
    carried = state.carried if state.carried is not None else _carried(state.h, steps)
    first = steps.embed
    if first.kind == "table":
        gates = first.table[ids].add_(carried[0])  # (B, 4H)
    else:  # the embedding's uint8 row by W_ih: a product of its own
        gates = qproduct(first.table[ids], first.packed, first.scale, first.bias).add_(carried[0])
    hs, cs, ahead = [], [], []
    last = len(steps.layers) - 1
    for i, (packed, bias, rows) in enumerate(steps.layers):
        h, c = lstm_cell(gates, state.c[i])
        out = qproduct(quantize_h(h), packed, QUANT_H, bias)  # (B, rows + 4H)
        hs.append(h)
        cs.append(c)
        ahead.append(out[:, rows:])
        if i < last:
            gates = torch.add(out[:, :rows], carried[i + 1])
    return out[:, :rows], h, StepState(torch.stack(hs), torch.stack(cs), ahead)


def _carried(h_all: torch.Tensor, steps: Steps) -> list[torch.Tensor]:
    """Each layer's W_hh h (B, 4H) for a state that carries none (a new one, or one whose rows were
    written): the same rows of the same products the step before would have made, the same numbers."""
    layers = zip(h_all, steps.layers, strict=True)
    return [qproduct(quantize_h(h), packed, QUANT_H, bias)[:, rows:] for h, (packed, bias, rows) in layers]
