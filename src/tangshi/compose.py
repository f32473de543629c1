"""Poems from a model: begin characters or phrases, carried state, samplers, pretty lines.

Every poem of a call is decoded in one batch, one step at a time, carrying the recurrent state
(the prefix is never re-run). Poem r of a call with seed s draws its randomness from its own
generator seeded with s + r, so it repeats exactly whatever else is written beside it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass, field

import torch

from tangshi.corpus import normalise, variants
from tangshi.forms import FormMask
from tangshi.model import CharRNN
from tangshi.sampling import Sampler, SamplingError
from tangshi.vocab import BOS, EOS, PAD, UNK, Vocab

_SENTENCE_END = re.compile(r"(?<=[。！？])")


class UnknownCharacterError(ValueError):
    """A begin character outside the model's vocabulary; the message names it."""


@dataclass
class Poem:
    text: str  # the poem with its punctuation, no special tokens
    lines: list[str]  # one sentence (up to 。！？) a line
    begin: str
    seed: int
    ended: bool  # True when the model wrote the end token
    nll: float  # mean negative log-likelihood per generated token under the model (nats)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d


def sentences(text: str) -> list[str]:
    """One sentence a line: split after 。！？, dropping empty pieces."""
    return [s for s in _SENTENCE_END.split(text) if s]


def resolve_begin(vocab: Vocab, begin: str, script: str = "simplified") -> tuple[str, list[str]]:
    """Normalise a begin phrase to the model's script; unknown characters are replaced by a known
    simplified/traditional variant (noted) or refused with a message that names them."""
    text = normalise(begin, script)
    if not text:
        raise UnknownCharacterError(f"empty begin phrase {begin!r}")
    out, notes = [], []
    for char in text:
        if char in vocab:
            out.append(char)
            continue
        known = [v for v in variants(char) if v in vocab]
        if not known:
            raise UnknownCharacterError(
                f"begin character '{char}' is not in the model's vocabulary"
                + (f" (nor its variant {'/'.join(variants(char))})" if variants(char) else "")
            )
        out.append(known[0])
        notes.append(f"'{char}' is not in the vocabulary; using its variant '{known[0]}'")
    return "".join(out), notes


@torch.no_grad()
def write(
    model: CharRNN,
    vocab: Vocab,
    begins: list[str],
    sampler: Sampler | None = None,
    num: int = 1,
    seed: int | None = None,
    max_length: int = 80,
    stop_at_end: bool = True,
    random_state: bool = False,
    form: FormMask | None = None,
) -> list[Poem]:
    """Write `num` poems for each begin phrase (already resolved to known characters).

    `stop_at_end=False` and `random_state=True` give the seed-tf way: a random initial state and
    exactly `max_length` steps, end tokens dropped from the text. With `form`, the logits are
    masked at each step to what the form allows (the sampler sees only those ids); `nll` stays the
    model's own, unmasked log-likelihood.
    """
    sampler = sampler or Sampler()
    sampler.validate()
    if num < 1:
        raise SamplingError(f"--num must be >= 1, got {num}")
    if max_length < 1:
        raise SamplingError(f"--max-length must be >= 1, got {max_length}")
    seed = secrets.randbits(31) if seed is None else seed
    rows = [b for b in begins for _ in range(num)]
    prefixes = [vocab.encode(b) for b in rows]
    if any(UNK in p for p in prefixes):
        raise UnknownCharacterError("begin phrases must be resolved with resolve_begin first")
    device = next(model.parameters()).device
    batch = len(rows)
    uniforms = torch.stack(
        [torch.rand(max_length, generator=torch.Generator().manual_seed(seed + r)) for r in range(batch)]
    ).to(device)  # (B, L)
    longest = max(len(p) for p in prefixes)
    forced = torch.full((batch, max(longest, 1)), -1, dtype=torch.long)
    for r, p in enumerate(prefixes):
        forced[r, : len(p)] = torch.tensor(p, dtype=torch.long)
    forced = forced.to(device)
    never = torch.tensor([PAD, UNK, BOS], device=device)
    state = model.initial_state(batch, device, torch.Generator().manual_seed(seed)) if random_state else None
    x = torch.full((batch,), BOS, dtype=torch.long, device=device)
    out = torch.full((batch, max_length), PAD, dtype=torch.long, device=device)
    nll = torch.zeros(batch, device=device)
    steps = torch.zeros(batch, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    # which ids each poem has used; only tracked when the sampler penalises repeats
    seen = torch.zeros(batch, len(vocab), dtype=torch.bool, device=device) if sampler.repetition_penalty != 1 else None
    was_training = model.training
    model.eval()
    try:
        for t in range(max_length):
            logits, state = model.step(x, state)  # (B, V)
            logits = logits.float()
            logits[:, never] = float("-inf")
            choose = logits
            if form is not None:
                choose = logits.masked_fill(~form.allowed().to(device), float("-inf"))
            next_ids = sampler(choose, uniforms[:, t], seen)
            if t < longest:
                force = forced[:, t] >= 0
                next_ids = torch.where(force, forced[:, t], next_ids)
            if form is not None:
                next_ids = form.with_heads(next_ids)
                form.update(next_ids)
            logp = torch.log_softmax(logits, dim=-1).gather(-1, next_ids.unsqueeze(-1)).squeeze(-1)
            live = ~done
            nll += torch.where(live, -logp, torch.zeros_like(logp))
            steps += live.float()
            out[:, t] = torch.where(live, next_ids, torch.full_like(next_ids, PAD))
            if seen is not None:
                seen[torch.arange(batch, device=device), next_ids] = True
            if stop_at_end:
                done |= next_ids == EOS
                if bool(done.all()):
                    break
            x = next_ids
    finally:
        model.train(was_training)
    poems = []
    for r, begin in enumerate(rows):
        ids = [i for i in out[r].tolist() if i != PAD]
        ended = EOS in ids
        if stop_at_end and ended:
            ids = ids[: ids.index(EOS)]
        text = vocab.decode(ids)
        poems.append(
            Poem(text, sentences(text), begin, seed + r, ended, round(float(nll[r] / steps[r].clamp(min=1)), 4))
        )
    return poems
