"""A resolved request -> finished poems: the processors and the constraint of each batch, the search
(sampled and reranked, or beam), judging (copied lines, broken rules, the prosody report, the
reranking score) and `finish` (the poem as the caller asked for it).

    processors + constraint -> search.sample | search.beam_search -> judge (rerank, write again) -> finish

`decode` takes what it reads of the checkpoint from a `Bundle` (`api.Poet`: the model, its
vocabulary and side files) and the request as `api.resolve` made it (`Request`). Defaults that
depend on the decoding mode are chosen here: guidance, diversity, the line steering and the
calibration are 0 for beam search unless asked (docs/writing-pipeline.md).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tangshi.data.lineindex import LineIndex
from tangshi.data.standard import poem_map
from tangshi.data.text import LINE_BREAKS, to_script
from tangshi.data.vocab import BOS
from tangshi.evaluation import losses
from tangshi.generation import constraints, search, tables
from tangshi.generation.bundle import Bundle
from tangshi.generation.processors import (
    Blocked,
    CalibrationBias,
    CohesionBias,
    Diversity,
    Guidance,
    Processor,
    Processors,
    Repetition,
    Steering,
    StockPhrases,
    Temperature,
    TopicBias,
    TopK,
)
from tangshi.generation.request import Request
from tangshi.generation.sampling import MIN_TEMPERATURE, Draw
from tangshi.generation.search import ContextStates, Poem
from tangshi.options import BY_NAME, WriteOptions
from tangshi.prosody import regular as prosody

CALIBRATED_COHESION = 0.8  # the line steering's weight where the calibration applies (docs/about-something.md)
RETRY_STRIDE = 1 << 24  # seeds of a poem's later tries: seed + r + attempt * RETRY_STRIDE


@dataclass
class Verdict:
    score: float  # the weighted log-likelihood, prosody score and sense bonus
    rejected: bool  # a copied line or a broken rule: written again while the budget lasts

    @property
    def rank(self) -> tuple[bool, float]:
        """Sorts the better candidate first: not rejected, then the higher score."""
        return self.rejected, -self.score


Stop = Callable[[], bool] | None


def decode(
    bundle: Bundle, plan: Request, opts: WriteOptions, stop: Stop = None, states: ContextStates | None = None
) -> list[Poem]:
    """The poems of a plan, judged: by beam search, or sampled (best of `rerank`), rejected ones written
    again. `states` keeps the contexts' states across calls (a fresh one when none is given)."""
    states = states if states is not None else ContextStates()
    return _beam(bundle, plan, opts, stop, states) if opts.beam else _sample(bundle, plan, opts, stop, states)


def _beam(bundle: Bundle, plan: Request, opts: WriteOptions, stop: Stop, states: ContextStates) -> list[Poem]:
    lines, groups = copy_index(bundle, opts), len(plan.resolved)
    mask = constraint(bundle, plan, opts, [g for g in range(groups) for _ in range(opts.beam)])
    ranked = bool(opts.relevance_weight or opts.coherence_weight)  # every hypothesis, reranked for sense
    nums = [opts.beam] * groups if ranked else plan.nums
    poems = search.beam_search(
        bundle.model, bundle.vocab, plan.resolved, processors(bundle, plan, opts, groups * opts.beam, mask), opts.beam,
        nums, _max_length(plan, opts), mask, lines, [plan.context] * groups,
        [plan.plain] * groups if plan.plain else None, stop, states, plan.seeds, opts.beam_temperature,
        opts.lookahead,
    )  # fmt: skip
    bonus = sense(bundle, plan, poems, opts) if ranked else [0.0] * len(poems)
    verdicts = [judge(p, plan, lines, opts, extra) for p, extra in zip(poems, bonus, strict=True)]
    if ranked:  # each group's best `nums[g]` of its `beam` poems
        judged, poems = list(zip(poems, verdicts, strict=True)), []
        for g, n in enumerate(plan.nums):
            group = sorted(judged[g * opts.beam : (g + 1) * opts.beam], key=lambda pv: pv[1].rank)
            poems += [p for p, _ in group[:n]]
    _refuse_strict_failures(poems, opts, f"by a beam of {opts.beam}", "a wider --beam")
    return poems


def _sample(bundle: Bundle, plan: Request, opts: WriteOptions, stop: Stop, states: ContextStates) -> list[Poem]:
    lines, k = copy_index(bundle, opts), opts.rerank
    rows = plan.rows()
    bases = [plan.seeds[g] + i * k for g, n in enumerate(plan.nums) for i in range(n)]
    best: list[tuple[Poem, Verdict] | None] = [None] * len(rows)
    seed_tf = opts.random_state and plan.free
    for attempt in range(opts.budget):
        todo = [r for r, b in enumerate(best) if b is None or b[1].rejected]
        if not todo:
            break
        cand = [r for r in todo for _ in range(k)]
        tries = [bases[r] + c + attempt * RETRY_STRIDE for r in todo for c in range(k)]
        mask = constraint(bundle, plan, opts, [rows[r][0] for r in cand])
        written = search.sample(
            bundle.model, bundle.vocab, [rows[r][1] for r in cand],
            processors(bundle, plan, opts, len(cand), mask, guided=not seed_tf), tries,
            max_length=_max_length(plan, opts), stop_at_end=not (opts.ignore_end and plan.free),
            random_state=seed_tf, constraint=mask, contexts=[plan.context] * len(cand),
            plain_contexts=[plan.plain] * len(cand) if plan.plain else None, stop=stop, states=states,
        )  # fmt: skip
        bonus = sense(bundle, plan, written, opts) if k > 1 else [0.0] * len(written)
        for r, p, extra in zip(cand, written, bonus, strict=True):
            v = judge(p, plan, lines, opts, extra)
            if best[r] is None or v.rank < best[r][1].rank:
                best[r] = (p, v)
        if opts.greedy and not opts.random_state:
            break  # greedy writes the same poem whatever the seed
    poems = [b[0] for b in best if b is not None]
    _refuse_strict_failures(poems, opts, f"in {opts.budget} tries (--budget)", "--tones relaxed")
    return poems


# ---------------------------------------------------------------- a batch's constraint and processors


def constraint(bundle: Bundle, plan: Request, opts: WriteOptions, groups: list[int]) -> constraints.Constraint | None:
    """The constraint for rows of these groups (begins): the 词牌's or the form's mask with its heads and
    each group's fixed characters (keywords, a template); None for a free poem without heads."""
    rows = len(groups)
    if plan.cipai is not None:
        return constraints.CiMask(
            bundle.ci_prosody, plan.cipai, rows, [plan.heads] * rows, opts.tones,
            fixed=[plan.fixed[g] for g in groups], allow_repeat=opts.allow_repeat,
        )  # fmt: skip
    if plan.form is None:
        return None
    return constraints.FormMask(
        bundle.vocab_prosody, plan.form, rows, [plan.heads] * rows, opts.rhyme, opts.tones, opts.allow_repeat,
        fixed=[plan.fixed[g] for g in groups], fixed_field="template" if opts.template else "keywords",
    )  # fmt: skip


def processors(
    bundle: Bundle,
    plan: Request,
    opts: WriteOptions,
    batch: int,
    mask: constraints.Constraint | None,
    guided: bool = True,
) -> Processors:
    """The processors of a batch of `batch` rows, in `processors.ORDER`; the ones a request asks for,
    each with its weight (or its default for the mode). Sampling's own options given with --beam are
    refused by name; `guided=False`: no guidance (the rows are not read after the plain context)."""
    device = next(bundle.model.parameters()).device
    items: list[Processor] = [Blocked(bundle.vocab, device)]
    weight = _guidance(plan, opts)
    if guided and weight and plan.plain is not None:
        items.append(Guidance(weight, batch))
    steering = _steering(bundle, plan, opts, batch, device)
    if steering is not None:
        items.append(steering)
    diversity = _diversity(bundle, opts)
    if diversity:
        items.append(Diversity(diversity, bundle.vocab, device))
    if opts.stock and bundle.words is not None:
        items.append(StockPhrases(opts.stock, bundle.stock(), batch, device))
    # under a mask that never offers a written character a sampled draw has nothing to penalise; a beam
    # normalises its scores before the mask, where the penalty still counts
    if opts.repetition_penalty != 1 and (opts.beam or mask is None or not mask.masks_repeats):
        items.append(Repetition(opts.repetition_penalty, batch, len(bundle.vocab), device))
    if opts.beam:  # sampling's options, where asked: refused by the list
        items += [p for p in (Temperature(opts.temperature), TopK(opts.top_k)) if _asked(opts, p.option)]
        draw = Draw(opts.greedy, opts.top_p) if _asked(opts, "greedy") or _asked(opts, "top_p") else None
        return Processors(items, "beam", draw)
    greedy = opts.greedy or opts.temperature < MIN_TEMPERATURE
    if not greedy:
        items += [Temperature(opts.temperature), *([TopK(opts.top_k)] if opts.top_k else [])]
    return Processors(items, "sample", Draw(greedy, opts.top_p))


def _asked(opts: WriteOptions, name: str) -> bool:
    """The option has another value than its default: the caller asked for it."""
    return getattr(opts, name) != BY_NAME[name].default


def _steering(bundle: Bundle, plan: Request, opts: WriteOptions, batch: int, device: torch.device) -> Steering | None:
    """The steering biases of a batch: topic and manner, calibration, line cohesion (None: nothing to steer)."""
    fixed = [TopicBias(plan.topic)] if plan.topic is not None else []
    fixed += [CalibrationBias(plan.calibration)] if plan.calibration is not None else []
    cohesion = _cohesion(bundle, plan, opts)
    if not cohesion and not fixed:
        return None
    line = None
    if cohesion:
        table, breaks = bundle.following()
        line = CohesionBias(table, cohesion, breaks, batch, device)
    return Steering(fixed, line, batch, len(bundle.vocab), device)


def _guidance(plan: Request, opts: WriteOptions) -> float:
    """Classifier-free guidance's weight: as asked, else the plan's default (docs/writing-pipeline.md), in
    sampling and beam search alike (readers found a guided beam's poems more about their title:
    docs/reader-panel.md)."""
    return plan.guidance


def _diversity(bundle: Bundle, opts: WriteOptions) -> float:
    """The anti-LM prior's weight: as asked, else the checkpoint's default when sampling, 0 for beam search."""
    if opts.diversity is not None:
        return opts.diversity
    return 0.0 if opts.beam else bundle.default_diversity


def _cohesion(bundle: Bundle, plan: Request, opts: WriteOptions) -> float:
    """The line steering's weight: as asked, else the checkpoint's default when sampling (higher where the
    frequency calibration applies, which alone loosens the lines), 0 for beam search (whose likeliest lines
    already go together: docs/about-something.md)."""
    if opts.cohesion is not None:
        return opts.cohesion
    if opts.beam or not bundle.default_cohesion:
        return 0.0
    return CALIBRATED_COHESION if plan.calibration is not None else bundle.default_cohesion


def copy_index(bundle: Bundle, opts: WriteOptions) -> LineIndex | None:
    """The corpus's lines that a poem may not copy (None: copies allowed, or no index)."""
    return None if opts.allow_copies else bundle.lines


def _max_length(plan: Request, opts: WriteOptions) -> int:
    if plan.cipai is not None:
        return plan.cipai.chars + len(plan.cipai.clauses) + 1
    return plan.form.length + 1 if plan.form is not None else opts.max_length


def _refuse_strict_failures(poems: list[Poem], opts: WriteOptions, how: str, instead: str) -> None:
    if opts.tones != "strict" or not opts.regular:
        return
    for p in poems:
        if p.failure:
            raise tables.FormError(
                f"--tones strict could not be met {how}: the poem for '{p.begin}' failed at {p.failure}; use {instead}",
                "tones",
            )


@torch.inference_mode()
def line_candidates(
    bundle: Bundle, plan: Request, opts: WriteOptions, lines: list[str], line: int, n: int, attempt: int
) -> list[str]:
    """n poems with line `line` (1-based) sampled anew: the state after the poem's text before the line
    is read once, the form's mask and the processors are brought to that point, and only the line and
    its punctuation are sampled (the rest of the poem is the person's, scored afterwards)."""
    vocab = bundle.vocab
    device = next(bundle.model.parameters()).device
    head = prosody.join_lines(lines[: line - 1])
    tail = prosody.join_lines(lines)[len(prosody.join_lines(lines[:line])) :]
    before = vocab.encode(head)
    mask = constraint(bundle, plan, opts, [0] * n)
    steps = processors(bundle, plan, opts, n, mask, guided=False)  # the context is the poem's text, not the title
    for i in before:
        ids = torch.full((n,), i, dtype=torch.long)
        mask.update(ids)
        steps.update(ids.to(device))
    seed = (opts.seed if opts.seed is not None else secrets.randbits(31)) + attempt * RETRY_STRIDE
    written = search.sample(
        bundle.model, vocab, [""] * n, steps, [seed + r for r in range(n)], max_length=len(lines[line - 1]) + 1,
        constraint=mask, contexts=[[BOS, *before]] * n,
    )  # fmt: skip
    return [head + p.text + tail for p in written if p.failure is None and len(p.text) == len(lines[line - 1]) + 1]


# ---------------------------------------------------------------- judge


def sense(bundle: Bundle, plan: Request, poems: list[Poem], opts: WriteOptions) -> list[float]:
    """Each candidate's reranking bonus for sense (Li et al. 2016's mutual information, per token):
    `relevance_weight` x how much likelier the poem is after its context (title, poet, prefix: where
    one is given) than after <bos> alone, plus `coherence_weight` x how much likelier each line after
    the first is after the lines before it than alone, averaged over those lines."""
    bonus = [0.0] * len(poems)
    relevance = opts.relevance_weight and (opts.title or opts.author or opts.prefix)  # a context beyond the genre
    if not (relevance or opts.coherence_weight) or not poems:
        return bonus
    vocab, model = bundle.vocab, bundle.model
    seqs = [vocab.encode(p.text) for p in poems]
    plain = losses.token_logprobs(model, seqs, [[BOS]] * len(seqs))
    if relevance:
        given = losses.token_logprobs(model, seqs, [plan.context] * len(seqs))
        for i, (a, b) in enumerate(zip(given, plain, strict=True)):
            bonus[i] += opts.relevance_weight * float(a.mean() - b.mean())
    if opts.coherence_weight:
        spans = [_line_spans(p.text) for p in poems]
        alone_seqs = [vocab.encode(p.text[a:b]) for p, sp in zip(poems, spans, strict=True) for a, b in sp[1:]]
        alone = iter(losses.token_logprobs(model, alone_seqs, [[BOS]] * len(alone_seqs)) if alone_seqs else [])
        for i, sp in enumerate(spans):
            gains = [float(plain[i][a:b].mean() - next(alone).mean()) for a, b in sp[1:]]
            bonus[i] += opts.coherence_weight * (sum(gains) / len(gains) if gains else 0.0)
    return bonus


def _line_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each line's characters in a poem's text, punctuation left out."""
    spans, start = [], 0
    for i, ch in enumerate(text + "。"):
        if ch in LINE_BREAKS:
            if i > start:
                spans.append((start, i))
            start = i + 1
    return spans


def judge(p: Poem, plan: Request, lines: LineIndex | None, opts: WriteOptions, bonus: float = 0.0) -> Verdict:
    """Fill in a candidate's prosody report, heads and copied lines; score it (`likelihood_weight` x
    mean log-likelihood, `prosody_weight` x prosody, and the `bonus` for sense) and say whether it is
    rejected."""
    score = -opts.likelihood_weight * p.nll + bonus
    if plan.cipai is not None:
        from tangshi.prosody import cipai

        report = cipai.check(p.text, plan.cipai.cipai, plan.cipai.number)
        p.prosody = report.to_dict()
        score += opts.prosody_weight * (report.rhyme + report.tones) / 2
    elif plan.form is not None and not plan.form.free:
        report = prosody.check(p.text)
        p.prosody = report.to_dict()
        score += opts.prosody_weight * (report.rhyme + report.relaxed + report.strict) / 3
    p.acrostic = plan.heads
    p.plan = plan.plan.to_json() if plan.plan is not None else None
    p.copied = lines.copied(p.text) if lines is not None else []
    return Verdict(score, bool(p.copied) or bool(p.failure))


def finish(p: Poem, begin: str, opts: WriteOptions) -> Poem:
    """The poem as the caller asked: its begin, title and poet as given, its prosody report, its text
    in the asked script (simplified: its variants in their GB 2312 form where no rule breaks,
    `data.standard`)."""
    script = opts.script
    report = p.prosody or prosody.check(p.text).to_dict()
    p.begin, p.title, p.author = begin, opts.title, opts.author
    mapping = poem_map(to_script(p.text, script), "cipai" not in report) if script == "simplified" else {}

    def write(x: str) -> str:
        x = to_script(x, script)
        return "".join(mapping.get(ch, ch) for ch in x) if mapping else x

    p.text = write(p.text)
    p.lines = [write(x) for x in p.lines]
    if "cipai" in report:  # a 词: its lines are its 阕
        p.lines = [write(x) for x in report["parts"]]
        p.prosody = {**report, "parts": p.lines}
        return p
    p.prosody = {**report, "lines": [write(x) for x in report.get("lines", [])]}
    return p
