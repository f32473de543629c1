"""Logits -> next ids: greedy, temperature, top-k, top-p, and masks; pure functions.

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


@dataclass
class Sampler:
    temperature: float = 0.8  # > 0; lower is more conservative
    top_k: int = 0  # keep the k most likely characters (0 = all)
    top_p: float = 0.9  # keep the smallest set with this much probability (1 = all)
    greedy: bool = False  # always take the most likely character
    repetition_penalty: float = 1.0  # > 1 discourages characters already in the poem (1 = off)

    def validate(self) -> None:
        if not self.temperature > 0:
            raise SamplingError(f"--temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise SamplingError(f"--top-k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise SamplingError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty < 1:
            raise SamplingError(f"--repetition-penalty must be >= 1, got {self.repetition_penalty}")

    def __call__(self, logits: torch.Tensor, uniforms: torch.Tensor, seen: torch.Tensor | None = None) -> torch.Tensor:
        """logits (B, V), uniforms (B,) in [0, 1), seen (B, V) bool of ids already used -> ids (B,)."""
        if seen is not None and self.repetition_penalty != 1:
            logits = penalise_repeats(logits, seen, self.repetition_penalty)
        if self.greedy or self.temperature < MIN_TEMPERATURE:  # logits / 1e-300 would overflow to inf
            return logits.argmax(dim=-1)
        logits = logits / self.temperature
        if self.top_k:
            logits = top_k_filter(logits, self.top_k)
        if self.top_p < 1:
            return sample_top_p(logits, uniforms, self.top_p)
        return sample(logits, uniforms)


def mask_ids(logits: torch.Tensor, ids: list[int] | torch.Tensor) -> torch.Tensor:
    """Forbid the given ids in every row."""
    out = logits.clone()
    out[:, ids] = NEG_INF
    return out


def penalise_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style: a seen id's logit is divided by `penalty` when positive, multiplied when negative."""
    scaled = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, scaled, logits)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row, -inf elsewhere."""
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely ids whose probability reaches p (nucleus)."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # mass strictly before each id
    drop_sorted = before >= p  # the first id is always kept
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


TOP_STAGES = (256, 2048)  # ids sorted first; rows whose nucleus reaches further take the next stage


def sample_top_p(
    logits: torch.Tensor, uniforms: torch.Tensor, p: float, stages: tuple[int, ...] = TOP_STAGES
) -> torch.Tensor:
    """Nucleus sampling by inverse CDF over the ids sorted by probability: the kept ids are a
    prefix of that order, so the draw runs on the prefix's cumulative sum (the same distribution as
    `top_p_filter` followed by `sample`). A row sorts only its k most likely ids (`topk`, k from
    `stages`) once they hold mass p (under a form the nucleus has a median of ~80 ids and rarely
    over 700); a row that no stage covers sorts everything."""
    logits = logits.float()
    v = logits.shape[-1]
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (B, 1): probabilities over the whole row
    sizes = [k for k in stages if k < v] + [v]
    todo: torch.Tensor | None = None  # rows still to draw (None: all)
    ids = None
    for k in sizes:
        rows = logits if todo is None else logits[todo]
        row_lse = lse if todo is None else lse[todo]
        top, order = torch.topk(rows, k, dim=-1) if k < v else torch.sort(rows, dim=-1, descending=True)
        covered = torch.exp(top - row_lse).sum(dim=-1) >= p if k < v else None
        if covered is None or bool(covered.all()):
            drawn = _draw(top, order, row_lse, uniforms if todo is None else uniforms[todo], p)
            if todo is None:
                return drawn
            ids[todo] = drawn
            return ids
        if ids is None:
            ids = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
            todo = torch.arange(logits.shape[0], device=logits.device)
        if bool(covered.any()):
            ids[todo[covered]] = _draw(top[covered], order[covered], row_lse[covered], uniforms[todo[covered]], p)
        todo = todo[~covered]
    raise AssertionError("unreachable: the last stage sorts every id")


def _draw(top: torch.Tensor, order: torch.Tensor, lse: torch.Tensor, uniforms: torch.Tensor, p: float) -> torch.Tensor:
    """Inverse-CDF draw from the nucleus of logits sorted descending (`top`, their ids `order`)."""
    probs = torch.exp(top - lse)
    cdf = torch.cumsum(probs, dim=-1)
    kept = ((cdf - probs) < p).sum(dim=-1, keepdim=True).clamp(min=1)  # the first id is always kept
    total = cdf.gather(-1, kept - 1)  # (B, 1): the mass of the nucleus
    target = uniforms.to(cdf.dtype).unsqueeze(-1) * total
    idx = torch.minimum(torch.searchsorted(cdf, target, right=True), kept - 1)
    return order.gather(-1, idx).squeeze(-1)


def sample(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Draw one id per row from softmax(logits) by inverse CDF: logits (B, V), uniforms (B,)."""
    probs = torch.softmax(logits.float(), dim=-1)
    cdf = torch.cumsum(probs, dim=-1)  # (B, V)
    target = (uniforms.to(cdf.dtype) * cdf[:, -1]).unsqueeze(-1)  # (B, 1)
    ids = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    ids = ids.clamp_(max=logits.shape[-1] - 1)
    # never land on an id of zero probability (possible at the cdf's flat tail)
    bad = probs.gather(-1, ids.unsqueeze(-1)).squeeze(-1) <= 0
    if bad.any():
        ids[bad] = probs[bad].argmax(dim=-1)
    return ids
