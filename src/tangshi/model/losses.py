"""The output layer's distributions and the losses over them.

`linear_cross_entropy`: a full softmax's mean cross-entropy without writing out the (N, V) logits, its
gradients made chunk by chunk while they are in cache. The adaptive softmax (`nn.AdaptiveLogSoftmaxWithLoss`):
its log-probabilities (`adaptive_log_prob`, `adaptive_join`, `shortlist_log_prob`), each row's
log-likelihood of its target (`adaptive_log_likelihood`, under autocast) and its cross-entropy
(`adaptive_cross_entropy`, fp32). `real_rows` / `take_rows`: the positions a loss reads (not padding).
Why each is shaped as it is, with the figures: docs/speed.md, "The model's losses".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def real_rows(targets: torch.Tensor, ignore: int) -> torch.Tensor:
    """The flat indices, in order, of the positions of (B, T) `targets` that are not `ignore`."""
    return (targets.reshape(-1) != ignore).nonzero().squeeze(1)


def take_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x[keep] for x of (B, T, ...) and `rows = real_rows(...)`: the same rows in the same order. An
    index_select's backward adds the rows' gradients into zeros, where a boolean mask's scatters
    them by the mask again (the cheaper of the two)."""
    return x.reshape(-1, *x.shape[2:]).index_select(0, rows)


CE_CHUNK = 128  # rows of logits made at once by linear_cross_entropy on a GPU (not timed there)
CE_CHUNK_CPU = 512  # on a CPU: the fastest chunk on the CPUs timed


def ce_chunk(device: torch.device) -> int:
    """Rows of logits `linear_cross_entropy` makes at once on `device`: 512 on a CPU (a product of
    128 rows by the vocabulary runs below the CPU's peak), 128 elsewhere."""
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
    return adaptive_join(F.linear(x, head.head.weight, head.head.bias), firsts, seconds, head.shortlist_size)


def shortlist_log_prob(head_logits: torch.Tensor, short: int) -> torch.Tensor:
    """The log-probabilities of the shortlist's ids from an adaptive layer's head logits: those of
    `adaptive_join`, without the clusters."""
    return F.log_softmax(head_logits, dim=1)[:, :short]


def adaptive_join(
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
    the number of rows whose character is rare changes from batch to batch, and a new kernel costs
    far more than the product."""
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
    cache (under bf16 autocast the module's way is the faster, and `CharRNN.nll` takes
    `adaptive_log_likelihood`).
    """
    cluster, head_targets = _clusters(head, targets)
    total = linear_cross_entropy(h, head.head.weight, head.head.bias, head_targets) * targets.numel()
    for i, (proj, out) in enumerate(head.tail):
        rows = (cluster == i + 1).nonzero().squeeze(1)
        if rows.numel():
            inner = targets.index_select(0, rows) - head.cutoffs[i]
            total = total + linear_cross_entropy(proj(h.index_select(0, rows)), out.weight, None, inner) * rows.numel()
    return total / max(targets.numel(), 1)
