"""Logits -> next ids: the draw (greedy, top-p, inverse CDF), top-k, the repetition penalty; pure functions.

Every function takes a batch of logits (B, V) and returns a new tensor. Sampling draws through
inverse-CDF lookups of uniforms supplied by the caller, so each row can have its own seeded stream
(a poem repeats under its seed whatever else is in the batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")
MIN_TEMPERATURE = 1e-4  # below this, sampling is the argmax it tends to


class SamplingError(ValueError):
    """An option out of range; the message names it."""


@dataclass(frozen=True)
class Draw:
    """Scores (B, V) and uniforms (B,) in [0, 1) -> one id a row: the argmax (`greedy`), or a draw by
    inverse CDF from the nucleus of probability `top_p` (1: every id). Sampling's last step."""

    greedy: bool = False
    top_p: float = 1.0

    modes = ("sample",)  # beam search ranks; it draws nothing

    @property
    def option(self) -> str:
        return "greedy" if self.greedy else "top_p"

    def __call__(self, scores: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
        if self.greedy:  # scores / a tiny temperature would overflow to inf: the argmax it tends to
            return scores.max(dim=-1).indices  # the same ids (ties: the first), 2-3x faster
        if self.top_p < 1:
            return sample_top_p(scores, uniforms, self.top_p)
        return sample(scores, uniforms)


def penalise_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style: a seen id's logit is divided by `penalty` when positive, multiplied when negative."""
    scaled = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, scaled, logits)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row, -inf elsewhere."""
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return torch.where(logits < kth, NEG_INF, logits)  # (masked_fill's kernel is 2x slower)


EXPONENT_BINS = 64  # probabilities binned by binary exponent: [1/2, 1), [1/4, 1/2), ... and the rest


def sample_top_p(logits: torch.Tensor, uniforms: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus sampling by inverse CDF over the ids sorted by probability: the kept ids are a
    prefix of that order, so the draw runs on the prefix's cumulative sum (the same distribution as
    keeping the nucleus, -inf elsewhere, then `sample`), without sorting whole rows.

    A histogram of each row's probability mass by binary exponent (one pass) gives the power of two
    t at which the ids with probability >= t first hold mass p: the nucleus lies among them, and
    they are few (the nucleus and at most one octave more). Those candidates of every row are
    sorted together in one flat sort by (row, -probability), and each row draws from its own
    stretch of one running sum. Probabilities come from `softmax`, whose kernel takes the -inf of
    masked ids at full speed (`exp` and `logsumexp` of -inf take a slow path on x86).
    """
    probs = torch.softmax(logits.float(), dim=-1)  # (B, V)
    batch = probs.shape[0]
    # 1. per row, the bin of the first octave where the mass from the top reaches p
    # the IEEE-754 exponent field E of a probability in [2^(E-127), 2^(E-126)): bin 127 - E, lower edge 2^-bin
    bins = (127 - (probs.view(torch.int32) >> 23)).clamp_(0, EXPONENT_BINS - 1).long()
    mass = probs.new_zeros(batch, EXPONENT_BINS).scatter_add_(1, bins, probs)
    edge_bin = (mass.cumsum(dim=1) < p).sum(dim=1)  # (B,)
    # past the last bin but one, every id of non-zero probability is a candidate
    exponent = (127 - edge_bin).clamp(min=127 - (EXPONENT_BINS - 2)).to(torch.int32) << 23
    threshold = torch.where(edge_bin >= EXPONENT_BINS - 1, 1, exponent).view(torch.float32)  # 1: the least subnormal
    # a p below float32's least value compares as 0: the most likely id is a candidate whatever p is
    threshold = torch.minimum(threshold, probs.max(dim=1).values)
    # 2. the candidates of all rows, sorted by row, then by probability descending (ties: lower id first)
    rows, ids = (probs >= threshold[:, None]).nonzero(as_tuple=True)
    values = probs[rows, ids].double()
    order = torch.sort(rows.double() + (1 - values), stable=True).indices
    rows, ids, values = rows[order], ids[order], values[order]
    # 3. inverse CDF on each row's stretch of one running sum
    cdf = torch.cumsum(values, dim=0)
    counts = torch.bincount(rows, minlength=batch)
    starts = torch.cumsum(counts, dim=0) - counts
    base = (cdf - values)[starts.clamp(max=len(values) - 1)]  # (B,): the sum before each row's stretch
    before = cdf - values - base[rows]  # mass before each candidate within its row
    kept = torch.bincount(rows, weights=(before < p).double(), minlength=batch).long().clamp(min=1)
    end = starts + kept - 1  # the last id of each row's nucleus
    total = cdf[end] - base  # (B,): the mass of each nucleus
    target = base + uniforms.double() * total
    idx = torch.searchsorted(cdf, target, right=True)
    return ids[torch.minimum(torch.maximum(idx, starts), end)]


def sample(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Draw one id per row from softmax(logits) by inverse CDF: logits (B, V), uniforms (B,) in [0, 1)."""
    probs = torch.softmax(logits.float(), dim=-1)
    cdf = torch.cumsum(probs, dim=-1)  # (B, V)
    target = (uniforms.to(cdf.dtype) * cdf[:, -1]).unsqueeze(-1)  # (B, 1)
    ids = torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_(max=logits.shape[-1] - 1)
    if ids.device.type == "cpu":
        # a uniform below 1 puts the target below the row's total, which a CPU's cumsum reaches adding
        # the probabilities in order: the first id whose cdf passes the target has a probability > 0
        return ids
    # never land on an id of zero probability (a GPU's scan may round a flat tail differently)
    bad = probs.gather(-1, ids.unsqueeze(-1)).squeeze(-1) <= 0
    if bad.any():
        ids[bad] = probs[bad].argmax(dim=-1)
    return ids
