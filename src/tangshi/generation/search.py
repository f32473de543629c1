"""Poems from a model: begin characters or phrases, carried state, samplers, pretty lines.

Every poem of a call is decoded in one batch, one step at a time, carrying the recurrent state
(the prefix is never re-run). Poem r of a call with seed s draws its randomness from its own
generator seeded with s + r, so it repeats exactly whatever else is written beside it.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from tangshi.data.lineindex import LineIndex
from tangshi.data.text import normalise, variants
from tangshi.data.vocab import BOS, EOS, PAD, UNK, Vocab
from tangshi.generation.constraints import FormMask
from tangshi.generation.sampling import Sampler, SamplingError, penalise_repeats
from tangshi.model.charrnn import CharRNN
from tangshi.options import OptionError
from tangshi.prosody.regular import split_lines

_SENTENCE_END = re.compile(r"(?<=[。！？])")
STOP_EVERY = 8  # steps between two calls of `stop`


class Stopped(Exception):
    """Writing was stopped by the caller's `stop()` (e.g. every client of a batch has gone)."""


def _check(stop: Callable[[], bool] | None, t: int) -> None:
    if stop is not None and t % STOP_EVERY == 0 and stop():
        raise Stopped


class UnknownCharacterError(OptionError):
    """A begin character outside the model's vocabulary; the message names it, `field` the option."""


@dataclass
class Poem:
    text: str  # the poem with its punctuation, no special tokens
    lines: list[str]  # one sentence (up to 。！？) a line
    begin: str
    seed: int
    ended: bool  # True when the model wrote the end token; False when cut at the length limit
    nll: float  # mean negative log-likelihood per generated token under the model (nats)
    acrostic: str = ""  # the heads that start the lines, if any
    title: str = ""  # the title it was written for, if any
    author: str = ""  # the poet whose manner was asked, if any
    plan: list[dict[str, Any]] | None = None  # the keyword of each line, where keywords or a theme were asked
    failure: str | None = None  # where a form rule could not be met, if anywhere
    copied: list[str] = field(default_factory=list)  # lines found verbatim in the training corpus
    prosody: dict[str, Any] | None = None  # the checker's report of a poem in a regular form

    @property
    def log_likelihood(self) -> float:
        """Total log-likelihood of the poem's tokens under the model (nats), the end token included."""
        return round(-self.nll * (len(self.text) + (1 if self.ended else 0)), 4)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "log_likelihood": self.log_likelihood}


def sentences(text: str) -> list[str]:
    """One sentence a line: split after 。！？, dropping empty pieces."""
    return [s for s in _SENTENCE_END.split(text) if s]


def resolve_begin(
    vocab: Vocab, begin: str, script: str = "simplified", what: str = "begin character"
) -> tuple[str, list[str]]:
    """Normalise a begin phrase to the model's script; unknown characters are replaced by a known
    simplified/traditional variant (noted) or refused with a message that names them."""
    field_ = "acrostic" if what.startswith("acrostic") else "begin"
    text = normalise(begin, script)
    if not text:
        raise UnknownCharacterError(f"empty {what} {begin!r}", field_)
    out, notes = [], []
    for char in text:
        if char in vocab:
            out.append(char)
            continue
        known = [v for v in variants(char) if v in vocab]
        if not known:
            raise UnknownCharacterError(
                f"{what} '{char}' is not in the model's vocabulary"
                + (f" (nor its variant {'/'.join(variants(char))})" if variants(char) else ""),
                field_,
            )
        out.append(known[0])
        notes.append(f"'{char}' is not in the vocabulary; using its variant '{known[0]}'")
    return "".join(out), notes


@torch.inference_mode()
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
    seeds: list[int] | None = None,
    stop: Callable[[], bool] | None = None,
    contexts: list[list[int]] | None = None,
    steer: Steer | None = None,
    guidance: float = 0.0,
    plain_contexts: list[list[int]] | None = None,
) -> list[Poem]:
    """Write `num` poems for each begin phrase (already resolved to known characters).

    Row r (begin r // num) draws from seed `seed + r`, or from `seeds[r]` when given.

    `stop_at_end=False` and `random_state=True` give the seed-tf way: a random initial state and
    exactly `max_length` steps, end tokens dropped from the text. With `form`, the logits are
    masked at each step to what the form allows (the sampler sees only those ids); `nll` stays the
    model's own, unmasked log-likelihood. `contexts` (one a begin) are token ids read before each
    poem, from <bos> on (e.g. <bos>, a poet's token, a title, <sep>): what the poem is about.
    `steer` biases each step's logits before sampling (`nll` stays the model's own).
    `guidance` g with `plain_contexts` (each begin's context without what the poem is about) is
    classifier-free guidance: the model also reads each poem after its plain context, and the
    sampler sees log p(x | context) + g (log p(x | context) - log p(x | plain)).
    """
    sampler = sampler or Sampler()
    sampler.validate()
    if num < 1:
        raise SamplingError(f"--num must be >= 1, got {num}")
    if max_length < 1:
        raise SamplingError(f"--max-length must be >= 1, got {max_length}")
    rows = [b for b in begins for _ in range(num)]
    if seeds is None:
        seed = secrets.randbits(31) if seed is None else seed
        seeds = [seed + r for r in range(len(rows))]
    elif len(seeds) != len(rows):
        raise ValueError(f"{len(seeds)} seeds for {len(rows)} poems")
    prefixes = [vocab.encode(b) for b in rows]
    if any(UNK in p for p in prefixes):
        raise UnknownCharacterError("begin phrases must be resolved with resolve_begin first", "begin")
    device = next(model.parameters()).device
    log_prior = vocab.log_prior() if sampler.diversity else None
    if sampler.diversity and log_prior is None:
        raise SamplingError(
            "--diversity needs the character counts of the training data, which this checkpoint's vocab.json "
            "lacks; add them with `tangshi index --checkpoint DIR --data CORPUS`"
        )
    log_prior = log_prior.to(device) if log_prior is not None else None
    prior_shift = sampler.diversity * log_prior if log_prior is not None else None
    batch = len(rows)
    uniforms = torch.stack([torch.rand(max_length, generator=torch.Generator().manual_seed(s)) for s in seeds]).to(
        device
    )  # (B, L)
    longest = max(len(p) for p in prefixes)
    forced = torch.full((batch, max(longest, 1)), -1, dtype=torch.long)
    for r, p in enumerate(prefixes):
        forced[r, : len(p)] = torch.tensor(p, dtype=torch.long)
    forced = forced.to(device)
    never = torch.tensor([PAD, UNK, BOS, *vocab.conditions], device=device)
    guided = False
    if random_state:
        state = model.initial_state(batch, device, torch.Generator().manual_seed(seeds[0]))
        x = torch.full((batch,), BOS, dtype=torch.long, device=device)
    else:
        rows_ctx = [c for c in (contexts or [[BOS]] * len(begins)) for _ in range(num)]
        guided = bool(guidance) and plain_contexts is not None
        if guided:  # the plain rows after the poems' rows, stepped in the same batch
            rows_ctx += [c for c in plain_contexts for _ in range(num)]
        x, state = prime(model, rows_ctx, device)
    written_ids, written_logps = [], []  # each step's ids (B,) and their log-likelihoods (B, 1)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    every = torch.arange(batch, device=device)
    # which ids each poem has used; only tracked when the sampler penalises repeats and the form lets them come
    penalise = sampler.repetition_penalty != 1 and not (form is not None and form.masks_repeats)
    seen = torch.zeros(batch, len(vocab), dtype=torch.bool, device=device) if penalise else None
    was_training = model.training
    if was_training:  # (a walk over the modules: not at every poem of a server)
        model.eval()
    prepared = model.prepared(device)
    try:
        for t in range(max_length):
            _check(stop, t)
            allowed = form.allowed().to(device) if form is not None else None
            single = form is not None and form.single
            if single:  # each row's one id is its draw, whatever the bias and sampler
                next_ids = allowed.to(torch.uint8).argmax(dim=1)
            # then the output layer is read at those ids only: an adaptive one's head alone, where they are in it
            shortlist = single and t >= longest and model.adaptive and int(next_ids.max()) < model.head.shortlist_size
            logits, state = model.step(x, state, prepared, shortlist=shortlist)  # (B, V), (2B, V) guided
            logits = logits.float()
            # each id's log-likelihood, the model's own (an adaptive output layer gives log-probabilities; the
            # fill below shares that tensor but touches only ids never written)
            own = logits if model.adaptive else torch.log_softmax(logits, dim=-1)
            if not single:
                logits.index_fill_(1, never, float("-inf"))
                if guided:
                    logits, plain = logits[:batch], logits[batch:]
                choose = logits
                if guided:
                    gap = torch.log_softmax(logits, -1) - torch.log_softmax(plain, -1)
                    choose = logits + guidance * torch.nan_to_num(gap, nan=0.0, posinf=0.0, neginf=0.0)
                if steer is not None:  # the line ends' shift only matters where a row may choose one
                    choose = steer.apply(choose, shift=form is None or form.mixed)
                if form is not None:
                    choose = torch.where(allowed, choose, float("-inf"))  # (2x masked_fill's speed)
                next_ids = sampler(choose, uniforms[:, t], seen, prior_shift=prior_shift)
            if t < longest:
                force = forced[:, t] >= 0
                next_ids = torch.where(force, forced[:, t], next_ids)
            if form is not None:
                form.update(next_ids)
            if steer is not None:
                steer.update(next_ids)
            written_logps.append(own[:batch].gather(-1, next_ids.unsqueeze(-1)))
            written_ids.append(next_ids)
            if seen is not None:
                seen[every, next_ids] = True
            if stop_at_end:
                if form is not None:  # the mask knows which rows have written their end, without a sync
                    if form.all_finished:
                        break
                else:
                    done |= next_ids == EOS
                    if bool(done.all()):
                        break
            x = torch.cat([next_ids, next_ids]) if guided else next_ids
    finally:
        if was_training:
            model.train()
    out = torch.full((batch, max_length), PAD, dtype=torch.long, device=device)
    logps = torch.zeros(batch, max_length, device=device)  # log-likelihood of each written id
    out[:, : len(written_ids)] = torch.stack(written_ids, dim=1)
    logps[:, : len(written_logps)] = torch.cat(written_logps, dim=1)
    if stop_at_end:  # what a row writes after its end token is padding
        ends = (out == EOS).long()
        after = (ends.cumsum(dim=1) - ends) > 0
        out.masked_fill_(after, PAD)
        logps.masked_fill_(after, 0.0)
    written = (out != PAD).sum(dim=1)
    nll = -logps.sum(dim=1)
    poems = []
    for r, begin in enumerate(rows):
        ids = [i for i in out[r].tolist() if i != PAD]
        ended = EOS in ids
        if stop_at_end and ended:
            ids = ids[: ids.index(EOS)]
        text = vocab.decode(ids)
        failure = form.failures[r] if form is not None else None
        nll_r = round(float(nll[r] / written[r].clamp(min=1)), 4)
        poems.append(Poem(text, sentences(text), begin, seeds[r], ended, nll_r, failure=failure))
    return poems


@torch.inference_mode()
def prime(model: CharRNN, contexts: list[list[int]], device: torch.device) -> tuple[torch.Tensor, Any]:
    """(the last id of each row's context, the state after reading the rest): where writing starts.

    Each distinct context is read once; a context of <bos> alone leaves the zero state."""
    batch = len(contexts)
    x = torch.tensor([c[-1] for c in contexts], dtype=torch.long, device=device)
    if all(len(c) == 1 for c in contexts):
        return x, None
    state = model.initial_state(batch, device)
    prepared = model.prepared(device)
    for ctx in {tuple(c) for c in contexts if len(c) > 1}:
        rows = torch.tensor([r for r, c in enumerate(contexts) if tuple(c) == ctx], device=device)
        model.set_rows(state, rows, _read(model, ctx[:-1], device, prepared))
    return x, state


READ_KEPT = 64  # contexts whose state `_read` keeps, the latest read


def _read(model: CharRNN, tokens: tuple[int, ...], device: torch.device, prepared: Any) -> Any:
    """The state (one row) after reading `tokens` from the zero state. With an LSTM's prepared weights,
    the states of the last READ_KEPT contexts read with those very weights are kept: a genre's, a
    poet's or a title's context comes back request after request (made again with new weights)."""
    if prepared is not None:
        with _READ_LOCK:  # one server's threads share the model
            kept = model.__dict__.get("_read_kept")
            if kept is None or kept[0] is not prepared:
                kept = model.__dict__["_read_kept"] = (prepared, OrderedDict())
            if tokens in kept[1]:
                kept[1].move_to_end(tokens)
                return kept[1][tokens]
    s = None
    for token in tokens:
        _, s = model.step(torch.tensor([token], device=device), s, prepared)
    if prepared is not None:
        with _READ_LOCK:
            kept[1][tokens] = s
            if len(kept[1]) > READ_KEPT:
                kept[1].popitem(last=False)
    return s


_READ_LOCK = threading.Lock()


COPY_PENALTY = 1e4  # a hypothesis with a copied line sinks below every other, but the search goes on


@torch.inference_mode()
def beam_write(
    model: CharRNN,
    vocab: Vocab,
    begins: list[str],
    width: int,
    num: int | list[int] = 1,
    max_length: int = 80,
    form: FormMask | None = None,
    lines: LineIndex | None = None,
    repetition_penalty: float = 1.0,
    stop: Callable[[], bool] | None = None,
    contexts: list[list[int]] | None = None,
    steer: Steer | None = None,
) -> list[Poem]:
    """Beam search: for each begin phrase, the `num` most likely poems found with `width` hypotheses
    (`num` may be a list: poems per begin). With `steer`, the search ranks by the steered scores and
    each poem's `nll` is the model's own.

    `form` is a mask over len(begins) * width rows (hypothesis k of begin g is row g * width + k).
    A hypothesis that completes a line found in `lines` is pushed below every other. Poems in a form
    all have one length; free poems are ranked by mean log-likelihood per token.
    """
    if width < 1:
        raise SamplingError(f"--beam must be >= 1, got {width}")
    nums = list(num) if isinstance(num, list | tuple) else [num] * len(begins)
    for n in nums:
        if not 1 <= n <= width:
            raise SamplingError(f"--num {n} must be between 1 and --beam {width}")
    if repetition_penalty < 1:
        raise SamplingError(f"--repetition-penalty must be >= 1, got {repetition_penalty}")
    device = next(model.parameters()).device
    groups, k, v = len(begins), width, len(vocab)
    batch = groups * k
    prefixes = [vocab.encode(b) for b in begins]
    longest = max(len(p) for p in prefixes)
    forced = torch.full((batch, max(longest, 1)), -1, dtype=torch.long)
    for g, p in enumerate(prefixes):
        forced[g * k : (g + 1) * k, : len(p)] = torch.tensor(p, dtype=torch.long)
    forced = forced.to(device)
    score = torch.zeros(groups, k, device=device)
    score[:, 1:] = float("-inf")  # all hypotheses start equal: expand only the first
    steps = torch.zeros(batch, device=device)
    copies = torch.zeros(batch, device=device)  # lines found in the corpus, per hypothesis
    own = torch.zeros(batch, device=device)  # the model's own log-likelihood, when steered
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    seqs = torch.zeros(batch, 0, dtype=torch.long, device=device)
    seen = torch.zeros(batch, v, dtype=torch.bool, device=device)
    never = torch.tensor([PAD, UNK, BOS, *vocab.conditions], device=device)
    pad_only = torch.full((v,), float("-inf"), device=device)
    pad_only[PAD] = 0.0
    x, state = prime(model, [c for c in (contexts or [[BOS]] * groups) for _ in range(k)], device)
    punct = torch.tensor([vocab.id(c) for c in "，。！？；" if c in vocab], device=device)
    was_training = model.training
    if was_training:
        model.eval()
    prepared = model.prepared(device)
    try:
        for t in range(max_length):
            _check(stop, t)
            logits, state = model.step(x, state, prepared)
            logits = logits.float()
            if repetition_penalty != 1:
                logits = penalise_repeats(logits, seen, repetition_penalty)
            if steer is not None:
                base = torch.log_softmax(logits, dim=-1)  # the model's own
                logits = steer.apply(logits)
            logp = torch.log_softmax(logits, dim=-1)
            logp[:, never] = float("-inf")
            if form is not None:
                logp = torch.where(form.allowed().to(device), logp, float("-inf"))
            if t < longest:
                f = forced[:, t]
                only = torch.full_like(logp, float("-inf")).scatter(1, f.clamp(min=0)[:, None], 0.0)
                logp = torch.where((f >= 0)[:, None], logp + only, logp)
            logp = torch.where(done[:, None], pad_only, logp)  # a finished poem stays as it is
            cand = (score.reshape(batch, 1) + logp).reshape(groups, k * v)
            score, flat = cand.topk(k, dim=-1)  # (G, K)
            rows = (torch.arange(groups, device=device)[:, None] * k + flat // v).flatten()
            ids = (flat % v).flatten()
            state = model.select_state(state, rows)
            seqs = torch.cat([seqs[rows], ids[:, None]], dim=1)
            seen = seen[rows]
            seen[torch.arange(batch, device=device), ids] = True
            live = ~done[rows]
            if steer is not None:
                own = own[rows] + torch.where(live, base[rows, ids], 0.0)
                steer.select(rows)
                steer.update(ids)
            steps = steps[rows] + live.float()
            copies = copies[rows]
            done = done[rows] | (ids == EOS)
            if form is not None:
                form.select(rows.tolist())
                form.update(ids)
                ended = form.ended_line.to(device)
            else:
                ended = live & (torch.isin(ids, punct) | (ids == EOS))
            if lines is not None and bool(ended.any()):
                flat_score = score.flatten()
                for r in ended.nonzero().flatten().tolist():
                    last = _last_line(vocab, seqs[r].tolist())
                    if last in lines:
                        flat_score[r] -= COPY_PENALTY
                        copies[r] += 1
                score = flat_score.reshape(groups, k)
            if bool(done.all()):
                break
            x = torch.where(done, torch.full_like(ids, EOS), ids)
    finally:
        if was_training:
            model.train()
    loglik = score.flatten() + COPY_PENALTY * copies  # (B,) the search's score without the penalty
    if steer is not None:
        loglik = own
    mean = loglik / steps.clamp(min=1)
    rank = score if form is not None else mean.reshape(groups, k) - COPY_PENALTY * copies.reshape(groups, k)
    poems = []
    for g, begin in enumerate(begins):
        for j in rank[g].argsort(descending=True)[: nums[g]].tolist():
            r = g * k + j
            ids = [i for i in seqs[r].tolist() if i != PAD]
            ended = EOS in ids
            ids = ids[: ids.index(EOS)] if ended else ids
            text = vocab.decode(ids)
            failure = form.failures[r] if form is not None else None
            poems.append(Poem(text, sentences(text), begin, 0, ended, round(float(-mean[r]), 4), failure=failure))
    return poems


def _last_line(vocab: Vocab, ids: list[int]) -> str:
    """The line a sequence has just closed (its text before the final punctuation or end token)."""
    text = vocab.decode([i for i in ids if i not in (PAD, EOS, BOS)])
    parts = split_lines(text)
    return parts[-1] if parts else ""


Rows = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def table_rows(table: torch.Tensor) -> Rows:
    """A (V, V) sparse table as flat rows, (starts (V + 1,), columns, values): row a's entries are at
    starts[a]:starts[a + 1] (what `Steer` gathers; made once a model, by `Poet.following`)."""
    table = table.coalesce()  # entries sorted by row
    first, col = table.indices()
    starts = torch.zeros(table.shape[0] + 1, dtype=torch.long)
    starts[1:] = torch.cumsum(torch.bincount(first, minlength=table.shape[0]), 0)
    return starts, col, table.values()


FEW_CHARACTERS = 16  # `Steer._following` adds up to this many rows of the table one by one (fewer operations)


class Steer:
    """A bias added to each step's logits, one row a poem: a fixed `topic` bias (V,) for every row,
    and a line bias: when a row ends a line, `weight` x the mean over that line's characters a of
    row a of `table` (`table_rows` of a (V, V) table, [a, b]: how much more often b is in the line
    after a line with a than chance), until its next line ends. `breaks` (V,) marks the ids that end
    a line. The bias moves probability among the characters only: the line breaks and the end token
    keep the model's probability, so a steered poem's lines are as long as the model would write them."""

    def __init__(
        self,
        table: Rows | None,
        weight: float,
        breaks: torch.Tensor,
        batch: int,
        topic: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
    ):
        v = breaks.numel()
        self.weight, self.breaks = weight, breaks.to(device)
        self.structure = self.breaks.clone()
        self.structure[EOS] = True
        self.table = tuple(t.to(device) for t in table) if table is not None and weight else None
        self.fixed = (topic.to(device) if topic is not None else torch.zeros(v, device=device)).expand(batch, v)
        self.active = topic is not None  # no bias at all until a topic is given or a line has ended
        self.line_bias = torch.zeros(batch, v, device=device)
        self.line = torch.zeros(batch, v, device=device)  # the characters of each row's current line, counted
        self.break_ids = self.breaks.tolist()  # the same, for a step's few ids looked up in Python
        self.rows = torch.arange(batch, device=device)
        self.ones = torch.ones(batch, 1, device=device)

    def apply(self, logits: torch.Tensor, shift: bool = True) -> torch.Tensor:
        """(B, V) logits with the bias on the characters, the breaks and end shifted to keep their
        probability; with `shift=False` the breaks and end are biased as the characters are, for a mask
        under which no row chooses between a character and a break or the end (a regular form's): the
        shift would change no draw there."""
        if not self.active:
            return logits
        steered = logits + self.fixed + self.line_bias
        if not shift:
            return steered
        # the characters' mass with and without the bias, both in one call (a row's sums are its own)
        chars = torch.where(self.structure, float("-inf"), torch.cat([steered, logits]))
        mass = torch.logsumexp(chars, dim=-1)
        shift = torch.nan_to_num(mass[: len(logits)] - mass[len(logits) :], nan=0.0, posinf=0.0, neginf=0.0)
        return torch.where(self.structure, logits + shift.unsqueeze(-1), steered)

    def select(self, rows: torch.Tensor) -> None:
        """Keep these rows, in this order (beam search's surviving hypotheses)."""
        self.fixed, self.line, self.line_bias = self.fixed[rows], self.line[rows], self.line_bias[rows]
        self.rows, self.ones = torch.arange(len(rows), device=self.line.device), self.ones[:1].expand(len(rows), 1)

    def _following(self, share: torch.Tensor) -> torch.Tensor:
        """(n, V): each row's sum over its characters a of share[a] x table[a] (the few characters of a
        line: their rows of the table gathered and added, where a sparse product would visit all of it)."""
        crow, col, val = self.table
        row, a = share.nonzero(as_tuple=True)
        if a.numel() <= FEW_CHARACTERS:  # a few rows of the table, each added in turn: the same sums, in the same order
            out = torch.zeros_like(share)
            for r, c in zip(row.tolist(), a.tolist(), strict=True):
                start, end = crow[c : c + 2].tolist()
                out[r].index_add_(0, col[start:end], val[start:end] * share[r, c])
            return out
        start, count = crow[a], crow[a + 1] - crow[a]
        of = torch.repeat_interleave(torch.arange(a.numel(), device=a.device), count)  # each entry's (row, a)
        first = torch.cumsum(count, 0) - count
        at = start[of] + torch.arange(of.numel(), device=a.device) - first[of]  # each entry's place in the table
        out = torch.zeros_like(share)
        return out.index_put_((row[of], col[at]), val[at] * share[row[of], a[of]], accumulate=True)

    def update(self, ids: torch.Tensor) -> None:
        if self.table is None:
            return
        breaks = [self.break_ids[i] for i in ids.tolist()]
        if not any(breaks):  # most steps: one more character in each row's line
            self.line.scatter_add_(1, ids.unsqueeze(1), self.ones)
            return
        if all(breaks):  # every row ends its line (a regular form's lines end together)
            length = self.line.sum(dim=1)  # the line's characters (whole counts: the sum is exact)
            if bool((length > 0).all()):
                self.line_bias = self.weight * self._following(self.line / length.unsqueeze(1))
                self.line.zero_()
                self.active = True
                return
        ends = self.breaks[ids]
        rows = self.rows[~ends]
        self.line[rows, ids[~ends]] += 1
        ended = self.rows[ends]
        length = self.line[ended].sum(dim=1)
        done, length = ended[length > 0], length[length > 0]
        if done.numel():
            self.line_bias[done] = self.weight * self._following(self.line[done] / length.unsqueeze(1))
            self.line[done] = 0
            self.active = True
