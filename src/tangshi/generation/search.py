"""The two search loops: sampling and beam search, over one `Processors` list and one `Constraint`.

Every poem of a call is decoded in one batch, one step at a time, carrying the recurrent state
(the prefix is never re-run). A step: the model's scores -> the processors before the constraint
(`processors.ORDER`) -> the constraint's mask -> sampling's draw, or beam search's ranking.
Sampled row r draws its randomness from its own generator seeded with `seeds[r]`, so it repeats
exactly whatever else is written beside it. Also here: what a loop starts from (`prime`, with the
`ContextStates` a caller keeps) and what it returns (`Poem`).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from tangshi.data.lineindex import LineIndex
from tangshi.data.text import normalise, variants
from tangshi.data.vocab import BOS, EOS, PAD, UNK, Vocab
from tangshi.generation.constraints import Constraint
from tangshi.generation.processors import Processors, Step
from tangshi.generation.sampling import SamplingError
from tangshi.model.cells import StepState
from tangshi.model.charrnn import CharRNN
from tangshi.model.kernels import Steps
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
def sample(
    model: CharRNN,
    vocab: Vocab,
    begins: list[str],
    processors: Processors,
    seeds: list[int],
    max_length: int = 80,
    stop_at_end: bool = True,
    random_state: bool = False,
    constraint: Constraint | None = None,
    contexts: list[list[int]] | None = None,
    plain_contexts: list[list[int]] | None = None,
    stop: Callable[[], bool] | None = None,
    states: ContextStates | None = None,
) -> list[Poem]:
    """One poem a begin phrase (already resolved to known characters), row r drawn with `seeds[r]`.

    `contexts` (one a row) are the ids read before each poem, from <bos> on (e.g. <bos>, a poet's
    token, a title, <sep>): what the poem is about; `plain_contexts` the same without the title, which
    guided `processors` read too. `stop_at_end=False` and `random_state=True` give the seed-tf way: a
    random initial state and exactly `max_length` steps, end tokens dropped from the text. Each poem's
    `nll` is the model's own, whatever the processors and the constraint did to its draws.
    """
    batch, device = len(begins), next(model.parameters()).device
    _check_request(processors, "sample", max_length)
    if len(seeds) != batch:
        raise ValueError(f"{len(seeds)} seeds for {batch} poems")
    forced, longest = _forced(vocab, begins, device)
    uniforms = torch.stack([torch.rand(max_length, generator=torch.Generator().manual_seed(s)) for s in seeds])
    uniforms = uniforms.to(device)  # (B, L)
    x, state = _start(model, batch, device, seeds, random_state, contexts, plain_contexts, processors.guided, states)
    written_ids, written_logps = [], []  # each step's ids (B,) and their log-likelihoods (B, 1)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    prepared = model.prepared(device)
    with _evaluating(model):
        for t in range(max_length):
            _check(stop, t)
            allowed = constraint.allowed() if constraint is not None else None
            single = allowed is not None and allowed.single
            if allowed is not None:
                mask = allowed.ids.to(device)
            if single:  # each row's one id is its draw, whatever the processors
                next_ids = mask.to(torch.uint8).argmax(dim=1)
            # then the output layer is read at those ids only: an adaptive one's head alone, where they are in it
            shortlist = single and t >= longest and model.adaptive and int(next_ids.max()) < model.head.shortlist_size
            logits, state = model.step(x, state, prepared, shortlist=shortlist)  # (B, V), (2B, V) guided
            logits = logits.float()
            # each id's log-likelihood, the model's own (an adaptive output layer gives log-probabilities; the
            # blocked ids' fill shares that tensor but touches only ids never written)
            own = logits if model.adaptive else torch.log_softmax(logits, dim=-1)
            if not single:
                step = Step(t, may_end=allowed is None or allowed.may_end)
                scores = processors(logits, step)  # (B, V)
                if allowed is not None:
                    scores = torch.where(mask, scores, float("-inf"))  # (2x masked_fill's speed)
                next_ids = processors.draw(processors.warp(scores, step), uniforms[:, t])
            if t < longest:
                next_ids = torch.where(forced[:, t] >= 0, forced[:, t], next_ids)
            if constraint is not None:
                constraint.update(next_ids)
            processors.update(next_ids)
            written_logps.append(own[:batch].gather(-1, next_ids.unsqueeze(-1)))
            written_ids.append(next_ids)
            if stop_at_end:
                if constraint is not None:  # the mask knows which rows have written their end, without a sync
                    if constraint.all_finished:
                        break
                else:
                    done |= next_ids == EOS
                    if bool(done.all()):
                        break
            x = torch.cat([next_ids, next_ids]) if processors.guided else next_ids
    return _sampled(vocab, begins, seeds, written_ids, written_logps, max_length, stop_at_end, constraint)


def _check_request(processors: Processors, mode: str, max_length: int) -> None:
    if processors.mode != mode:
        raise ValueError(f"{mode} needs processors built for it, got {processors!r}")
    if max_length < 1:
        raise SamplingError(f"--max-length must be >= 1, got {max_length}")


def _forced(vocab: Vocab, begins: list[str], device: torch.device) -> tuple[torch.Tensor, int]:
    """(each row's begin ids, -1 past its end (B, longest), the longest begin): the ids forced first."""
    prefixes = [vocab.encode(b) for b in begins]
    if any(UNK in p for p in prefixes):
        raise UnknownCharacterError("begin phrases must be resolved with resolve_begin first", "begin")
    longest = max(len(p) for p in prefixes)
    forced = torch.full((len(begins), max(longest, 1)), -1, dtype=torch.long)
    for r, p in enumerate(prefixes):
        forced[r, : len(p)] = torch.tensor(p, dtype=torch.long)
    return forced.to(device), longest


def _start(
    model: CharRNN,
    batch: int,
    device: torch.device,
    seeds: list[int],
    random_state: bool,
    contexts: list[list[int]] | None,
    plain_contexts: list[list[int]] | None,
    guided: bool,
    states: ContextStates | None,
) -> tuple[torch.Tensor, StepState | None]:
    """(the first input ids, the state) of a batch: a random state (seed-tf), or its contexts read
    (guided: the plain contexts' rows after the poems' rows)."""
    if guided and (random_state or plain_contexts is None):
        raise ValueError("guidance reads each poem after its plain context: give plain_contexts, no random state")
    if random_state:
        state = model.initial_state(batch, device, torch.Generator().manual_seed(seeds[0]))
        return torch.full((batch,), BOS, dtype=torch.long, device=device), state
    rows = list(contexts or [[BOS]] * batch)
    return prime(model, rows + (list(plain_contexts) if guided else []), device, states)


@contextmanager
def _evaluating(model: CharRNN) -> Iterator[None]:
    """The model in eval mode while a loop runs (a walk over the modules: only where it was training)."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def _sampled(
    vocab: Vocab,
    begins: list[str],
    seeds: list[int],
    written_ids: list[torch.Tensor],
    written_logps: list[torch.Tensor],
    max_length: int,
    stop_at_end: bool,
    constraint: Constraint | None,
) -> list[Poem]:
    """The poems of a sampled batch from each step's ids and their log-likelihoods."""
    batch, device = len(begins), written_ids[0].device
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
    for r, begin in enumerate(begins):
        ids = [i for i in out[r].tolist() if i != PAD]
        ended = EOS in ids
        if stop_at_end and ended:
            ids = ids[: ids.index(EOS)]
        text = vocab.decode(ids)
        failure = constraint.failures[r] if constraint is not None else None
        nll_r = round(float(nll[r] / written[r].clamp(min=1)), 4)
        poems.append(Poem(text, sentences(text), begin, seeds[r], ended, nll_r, failure=failure))
    return poems


@torch.inference_mode()
def prime(
    model: CharRNN, contexts: list[list[int]], device: torch.device | str, states: ContextStates | None = None
) -> tuple[torch.Tensor, StepState | None]:
    """(the last id of each row's context, the state after reading the rest): where writing starts.

    Each distinct context is read once (and kept in `states`, where given); a context of <bos> alone
    leaves the zero state."""
    batch = len(contexts)
    x = torch.tensor([c[-1] for c in contexts], dtype=torch.long, device=device)
    if all(len(c) == 1 for c in contexts):
        return x, None
    states = states if states is not None else ContextStates()
    state = model.initial_state(batch, device)
    prepared = model.prepared(device)
    for ctx in {tuple(c) for c in contexts if len(c) > 1}:
        rows = torch.tensor([r for r, c in enumerate(contexts) if tuple(c) == ctx], device=device)
        model.set_rows(state, rows, states.read(model, ctx[:-1], device, prepared))
    return x, state


READ_KEPT = 64  # contexts whose state `ContextStates` keeps, the latest read


class ContextStates:
    """The states (one row) after reading contexts from the zero state, kept for the model's prepared
    weights they were read with (an LSTM's `model.prepared`): the last `size` contexts read with those
    very weights. A genre's, a poet's or a title's context comes back request after request; the
    caller that writes them keeps one of these (made again with new weights). Threads may share it."""

    def __init__(self, size: int = READ_KEPT):
        self.size = size
        self._lock = threading.Lock()
        self._prepared: Steps | None = None
        self._kept: OrderedDict[tuple[int, ...], StepState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def read(
        self, model: CharRNN, tokens: tuple[int, ...], device: torch.device | str, prepared: Steps | None
    ) -> StepState:
        """The state after reading `tokens` (kept ones are not read again; without prepared weights none is kept)."""
        if prepared is not None:
            with self._lock:
                if self._prepared is not prepared:  # new weights: what was kept no longer holds
                    self._prepared, self._kept = prepared, OrderedDict()
                if tokens in self._kept:
                    self._kept.move_to_end(tokens)
                    return self._kept[tokens]
        s = None
        for token in tokens:
            _, s = model.step(torch.tensor([token], device=device), s, prepared)
        if prepared is not None:
            with self._lock:
                if self._prepared is prepared:
                    self._kept[tokens] = s
                    if len(self._kept) > self.size:
                        self._kept.popitem(last=False)
        return s


DRAWN = 64  # a stochastic beam draws among each hypothesis's likeliest children
COPY_PENALTY = 1e4  # a hypothesis with a copied line sinks below every other, but the search goes on


@torch.inference_mode()
def beam_search(
    model: CharRNN,
    vocab: Vocab,
    begins: list[str],
    processors: Processors,
    width: int,
    nums: list[int],
    max_length: int = 80,
    constraint: Constraint | None = None,
    lines: LineIndex | None = None,
    contexts: list[list[int]] | None = None,
    plain_contexts: list[list[int]] | None = None,
    stop: Callable[[], bool] | None = None,
    states: ContextStates | None = None,
    seeds: list[int] | None = None,
    drawn: float = 0.0,
    lookahead: int = 0,
) -> list[Poem]:
    """For each begin phrase, the `nums[g]` most likely poems found with `width` hypotheses.

    `lookahead` > 0: where a hypothesis's next character is narrowed (a rhyme, a fixed character:
    `Constraint.ahead`), its `lookahead` likeliest characters now are each scored with what they leave
    for the next place (log of the probability the narrowed set gets after them), and the next step is
    normalised over that set, so a finished poem's score is unchanged but the line's last words are
    chosen with its rhyme in view (docs/writing-pipeline.md).

    `drawn` > 0: a stochastic beam (Kool et al. 2019, Gumbel-top-k): the hypotheses kept each step are
    drawn without replacement from the processed distribution at that temperature, group g's noise from
    its own generator seeded with `seeds[g]`, so each seed finds other poems; the likeliest found are
    returned. 0: the deterministic beam, the same poems whatever the seed.

    `constraint` has len(begins) * width rows (hypothesis k of begin g is row g * width + k); a
    hypothesis that completes a line found in `lines` is pushed below every other. The scores are
    normalised before the mask (a forced or narrowed step keeps its cost); the search ranks by the
    processed scores, and each poem's `nll` is the model's own.
    """
    _check_request(processors, "beam", max_length)
    if width < 1:
        raise SamplingError(f"--beam must be >= 1, got {width}")
    if len(nums) != len(begins):
        raise ValueError(f"{len(nums)} counts for {len(begins)} begins")
    for n in nums:
        if not 1 <= n <= width:
            raise SamplingError(f"--num {n} must be between 1 and --beam {width}")
    device, k = next(model.parameters()).device, width
    rows_of = [g for g in range(len(begins)) for _ in range(k)]
    forced, longest = _forced(vocab, [begins[g] for g in rows_of], device)
    beam = BeamScorer(vocab, len(begins), k, device)
    if drawn:
        beam.draw(drawn, seeds if seeds is not None else [0] * len(begins))
    contexts = [(contexts or [[BOS]] * len(begins))[g] for g in rows_of]
    plain = [plain_contexts[g] for g in rows_of] if processors.guided and plain_contexts is not None else None
    x, state = _start(model, beam.batch, device, [0], False, contexts, plain, processors.guided, states)
    prepared = model.prepared(device)
    renorm: torch.Tensor | None = None  # rows whose step was looked ahead at: normalised over their set
    with _evaluating(model):
        for t in range(max_length):
            _check(stop, t)
            logits, state = model.step(x, state, prepared)  # (B, V), (2B, V) guided
            logits = logits.float()
            own = torch.log_softmax(logits[: beam.batch], dim=-1)  # the model's own, for each poem's nll
            logp = torch.log_softmax(processors(logits, Step(t, may_end=True)), dim=-1)  # (B, V)
            if constraint is not None:
                logp = torch.where(constraint.allowed().ids.to(device), logp, float("-inf"))
            if t < longest:
                f = forced[:, t]
                only = torch.full_like(logp, float("-inf")).scatter(1, f.clamp(min=0)[:, None], 0.0)
                logp = torch.where((f >= 0)[:, None], logp + only, logp)
            if renorm is not None:
                sub = logp[renorm]
                norm = torch.logsumexp(sub, dim=-1, keepdim=True)
                logp[renorm] = torch.where(torch.isfinite(norm), sub - norm, sub)
                renorm = None
            looked = None
            if lookahead and constraint is not None and state is not None:
                ahead, masks = constraint.ahead()
                keep = [k for k, r in enumerate(ahead) if not (t < longest and int(forced[r, t]) >= 0)]
                if keep:
                    look = torch.tensor([ahead[k] for k in keep], device=device)
                    logp = _look_ahead(model, prepared, state, logp, look, masks[keep].to(device), processors,
                                       Step(t + 1, may_end=True), lookahead)  # fmt: skip
                    looked = torch.zeros(beam.batch, dtype=torch.bool, device=device)
                    looked[look] = True
            rows, ids, live = beam.advance(logp, own)
            if looked is not None:
                renorm = looked[rows] & live
            state = model.select_state(state, torch.cat([rows, rows + beam.batch]) if processors.guided else rows)
            processors.select(rows)
            processors.update(ids)
            if constraint is not None:
                constraint.select(rows.tolist())
                constraint.update(ids)
                ended = constraint.ended_line.to(device)
            else:
                ended = live & (torch.isin(ids, beam.punct) | (ids == EOS))
            if lines is not None and bool(ended.any()):
                beam.penalise_copies(ended, lines)
            if bool(beam.done.all()):
                break
            x = torch.where(beam.done, torch.full_like(ids, EOS), ids)
            x = torch.cat([x, x]) if processors.guided else x
    failures = constraint.failures if constraint is not None else [None] * beam.batch
    return beam.poems(begins, nums, failures, ranked_by_score=constraint is not None, seeds=seeds)


LOOK_FLOOR = -30.0  # a look-ahead with nothing allowed after it (the constraint will note the failure)


def _look_ahead(
    model: CharRNN,
    prepared: Steps | None,
    state: StepState,
    logp: torch.Tensor,
    rows: torch.Tensor,
    masks: torch.Tensor,
    processors: Processors,
    step: Step,
    width: int,
) -> torch.Tensor:
    """`logp` (B, V) with these rows' `width` likeliest ids each given what the next step leaves them:
    + log sum of the probabilities of `masks`' ids (R, V) after them (the id itself left out: it is
    used), read after the poems' own contexts (not the plain ones of guidance: an estimate at half the
    cost); the rows' other ids -inf. One model step of R * width rows."""
    top, ids = logp[rows].topk(min(width, logp.shape[1]), dim=-1)  # (R, M)
    m = ids.shape[1]
    x = ids.flatten()
    logits, _ = model.step(x, model.select_state(state, rows.repeat_interleave(m)), prepared)
    nxt = torch.log_softmax(processors.ahead(logits.float(), step), dim=-1)  # (R*M, V)
    allowed = masks.repeat_interleave(m, dim=0)
    allowed[torch.arange(len(x), device=x.device), x] = False
    gain = torch.logsumexp(nxt.masked_fill(~allowed, float("-inf")), dim=-1).clamp(min=LOOK_FLOOR)
    out = logp.clone()
    out[rows] = torch.full_like(logp[rows], float("-inf")).scatter(1, ids, top + gain.view(-1, m))
    return out


class BeamScorer:
    """The hypotheses of a beam search, `width` a group (begin): their scores, lengths, copied lines,
    the model's own log-likelihood (what each poem's nll reports, whatever the processors and the mask
    did to the scores) and ids."""

    def __init__(self, vocab: Vocab, groups: int, width: int, device: torch.device):
        self.vocab, self.groups, self.width, self.batch = vocab, groups, width, groups * width
        v = len(vocab)
        self.score = torch.zeros(groups, width, device=device)
        self.score[:, 1:] = float("-inf")  # all hypotheses start equal: expand only the first
        self.steps = torch.zeros(self.batch, device=device)
        self.copies = torch.zeros(self.batch, device=device)  # lines found in the corpus, per hypothesis
        self.own = torch.zeros(self.batch, device=device)
        self.done = torch.zeros(self.batch, dtype=torch.bool, device=device)
        self.seqs = torch.zeros(self.batch, 0, dtype=torch.long, device=device)
        self.pad_only = torch.full((v,), float("-inf"), device=device)
        self.pad_only[PAD] = 0.0
        self.punct = torch.tensor([vocab.id(c) for c in "，。！？；" if c in vocab], device=device)
        self.group_rows = torch.arange(groups, device=device)[:, None] * width
        self.temperature = 0.0  # > 0: a stochastic beam (`draw`)
        self.generators: list[torch.Generator] = []
        self.perturbed = self.score.clone()  # the stochastic beam's Gumbel-perturbed scores, (G, K)

    def draw(self, temperature: float, seeds: list[int]) -> None:
        """Keep hypotheses drawn by Gumbel-top-k at `temperature`, group g's noise seeded by `seeds[g]`."""
        self.temperature = temperature
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def _perturb(self, logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The children's perturbed scores (G, K*M) and their places in (G, K*V): each parent's `DRAWN`
        likeliest children, their Gumbel-max conditioned on the parent's own perturbed score (Kool et al.
        2019, appendix B, the stable form; the children left out are too unlikely to be drawn)."""
        g, k, v = self.groups, self.width, logp.shape[1]
        m = min(DRAWN, v)
        scaled = torch.log_softmax(logp / self.temperature, dim=-1).nan_to_num(nan=float("-inf"))  # dead rows
        scaled, ids = scaled.topk(m, dim=-1)  # (B, M)
        phi = self.score.reshape(g, k, 1) + scaled.reshape(g, k, m)
        uniform = torch.stack([torch.rand(k, m, generator=gen) for gen in self.generators]).to(phi.device)
        gphi = phi - torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
        z = gphi.max(dim=-1, keepdim=True).values
        top = self.perturbed.reshape(g, k, 1)
        x = (gphi - z).clamp(max=0.0)  # log1mexp(gphi - z) below; -inf at the maximum, which keeps `top`
        gap = top - gphi + torch.where(x > -0.693, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))
        out = top - gap.clamp(min=0) - torch.log1p(torch.exp(-gap.abs()))
        out = torch.where(torch.isfinite(gphi) & torch.isfinite(top), out, float("-inf"))
        places = (torch.arange(k, device=ids.device)[None, :, None] * v + ids.reshape(g, k, m)).reshape(g, k * m)
        return out.reshape(g, k * m), places

    def advance(self, logp: torch.Tensor, own: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """logp (B, V) -> (the rows kept (B,), their new ids (B,), which were not finished before)."""
        v = logp.shape[1]
        logp = torch.where(self.done[:, None], self.pad_only, logp)  # a finished poem stays as it is
        cand = (self.score.reshape(self.batch, 1) + logp).reshape(self.groups, self.width * v)
        if self.temperature:
            perturbed, places = self._perturb(logp)
            self.perturbed, chosen = perturbed.topk(self.width, dim=-1)
            flat = places.gather(1, chosen)
            dead = ~torch.isfinite(self.perturbed[:, :1])  # a group with nothing left to draw: the plain beam's
            if bool(dead.any()):
                flat = torch.where(dead, cand.topk(self.width, dim=-1).indices, flat)
            self.score = cand.gather(1, flat)
        else:
            self.score, flat = cand.topk(self.width, dim=-1)  # (G, K)
        rows = (self.group_rows + flat // v).flatten()
        ids = (flat % v).flatten()
        self.seqs = torch.cat([self.seqs[rows], ids[:, None]], dim=1)
        live = ~self.done[rows]
        self.own = self.own[rows] + torch.where(live, own[rows, ids], 0.0)
        self.steps = self.steps[rows] + live.float()
        self.copies = self.copies[rows]
        self.done = self.done[rows] | (ids == EOS)
        return rows, ids, live

    def penalise_copies(self, ended: torch.Tensor, lines: LineIndex) -> None:
        """Push the hypotheses whose line just ended as a line of the corpus below every other."""
        flat_score = self.score.flatten()
        for r in ended.nonzero().flatten().tolist():
            if _last_line(self.vocab, self.seqs[r].tolist()) in lines:
                flat_score[r] -= COPY_PENALTY
                self.perturbed.view(-1)[r] -= COPY_PENALTY
                self.copies[r] += 1
        self.score = flat_score.reshape(self.groups, self.width)

    def poems(
        self,
        begins: list[str],
        nums: list[int],
        failures: list[str | None],
        ranked_by_score: bool,
        seeds: list[int] | None = None,
    ) -> list[Poem]:
        """The best `nums[g]` poems of each group: by score (a form's poems have one length), else by
        mean log-likelihood per token, copies last."""
        mean = self.own / self.steps.clamp(min=1)  # the model's own mean log-likelihood
        shape = (self.groups, self.width)
        rank = self.score if ranked_by_score else mean.reshape(shape) - COPY_PENALTY * self.copies.reshape(shape)
        poems = []
        for g, begin in enumerate(begins):
            for j in rank[g].argsort(descending=True)[: nums[g]].tolist():
                r = g * self.width + j
                ids = [i for i in self.seqs[r].tolist() if i != PAD]
                ended = EOS in ids
                ids = ids[: ids.index(EOS)] if ended else ids
                text, nll = self.vocab.decode(ids), round(float(-mean[r]), 4)
                seed = seeds[g] if seeds else 0
                poems.append(Poem(text, sentences(text), begin, seed, ended, nll, failure=failures[r]))
        return poems


def _last_line(vocab: Vocab, ids: list[int]) -> str:
    """The line a sequence has just closed (its text before the final punctuation or end token)."""
    text = vocab.decode([i for i in ids if i not in (PAD, EOS, BOS)])
    parts = split_lines(text)
    return parts[-1] if parts else ""
