"""The Python API: load a checkpoint (or the bundled model), write poems, score texts.

    from tangshi import Poet
    poet = Poet.load()                      # the bundled model
    written = poet.write("月", num=2, seed=1, form="七绝")
    for poem in written:                    # written.notes: what was changed in the request
        print(poem.text)
    poet.loss(["床前明月光，疑是地上霜。举头望明月，低头思故乡。"])

Writing is three steps, each a function that can be read alone:
`request.resolve` (the request -> a `Request`: begin phrases in the model's characters, heads, form,
plan, seeds), `decode` (sample, rerank or beam search, writing again what `judge` rejects) and
`judge` (copied lines, broken rules, the prosody report and the reranking score).
`Poet.write` chains them over a `Bundle` (the checkpoint and its side files); the options are
`tangshi.options.WriteOptions`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from tangshi.data.lineindex import LineIndex
from tangshi.data.text import LINE_BREAKS, normalise, to_script
from tangshi.data.vocab import BOS, EOS, Vocab
from tangshi.data.words import WordStats
from tangshi.evaluation import losses
from tangshi.evaluation.calibration import Calibration
from tangshi.generation import constraints, search
from tangshi.generation.bundle import Bundle
from tangshi.generation.request import Request, resolve, templated
from tangshi.generation.sampling import Sampler
from tangshi.generation.search import Poem
from tangshi.model import checkpoint
from tangshi.model.charrnn import CharRNN
from tangshi.model.checkpoint import Checkpoint, CheckpointError
from tangshi.options import CALIBRATED_COHESION, MAX_TEMPLATE, OptionError, WriteOptions
from tangshi.prosody import regular

RETRY_STRIDE = 1 << 24  # seeds of a poem's later tries: seed + r + attempt * RETRY_STRIDE
CHUNK = 32  # poems a batch when `Poet.stream` writes many


def bundled_path() -> Path:
    """The folder of the pretrained model shipped inside the package."""
    return Path(str(resources.files("tangshi") / "bundled"))


@dataclass
class Written:
    """The poems of one call, and the notes on what was changed in the request (variants used)."""

    poems: list[Poem]
    group_notes: list[list[str]] = field(default_factory=list)  # the notes of each begin (its heads' too)

    @property
    def notes(self) -> list[str]:
        """Every note of the call, once."""
        return list(dict.fromkeys(n for notes in self.group_notes for n in notes))

    def __iter__(self) -> Iterator[Poem]:
        return iter(self.poems)

    def __len__(self) -> int:
        return len(self.poems)

    def __getitem__(self, i: int) -> Poem:
        return self.poems[i]


@dataclass
class Verdict:
    score: float  # the weighted log-likelihood, prosody score and sense bonus
    rejected: bool  # a copied line or a broken rule: written again while the budget lasts


class Poet:
    """Writes, checks and scores poems with one checkpoint: a thin front over its `Bundle`."""

    def __init__(self, bundle: Bundle):
        self.bundle = bundle

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "cpu") -> Poet:
        """A checkpoint folder, or the bundled model when `path` is None."""
        folder = Path(path) if path is not None else bundled_path()
        if path is None and not (folder / "model.safetensors").is_file():
            raise CheckpointError(f"the bundled model is missing from {folder}; reinstall tangshi")
        return cls(Bundle(checkpoint.load(folder, device=device)))

    # the bundle's parts, by the names the writing reads them

    @property
    def ckpt(self) -> Checkpoint:
        return self.bundle.ckpt

    @property
    def model(self) -> CharRNN:
        return self.bundle.model

    @property
    def vocab(self) -> Vocab:
        return self.bundle.vocab

    @property
    def words(self) -> WordStats | None:
        return self.bundle.words

    @property
    def calibration(self) -> Calibration | None:
        return self.bundle.calibration

    @property
    def vocab_prosody(self) -> constraints.VocabProsody:
        return self.bundle.vocab_prosody

    @property
    def ci_prosody(self) -> constraints.CiProsody:
        return self.bundle.ci_prosody

    def following(self) -> tuple[search.Rows, torch.Tensor]:
        return self.bundle.following()

    @property
    def default_diversity(self) -> float:
        return self.bundle.default_diversity

    @property
    def default_cohesion(self) -> float:
        return self.bundle.default_cohesion

    def write(
        self,
        begins: str | Sequence[str],
        options: WriteOptions | None = None,
        *,
        nums: Sequence[int] | None = None,
        seeds: Sequence[int] | None = None,
        stop: Callable[[], bool] | None = None,
        calibration_bias: torch.Tensor | None = None,
        **changes: Any,
    ) -> Written:
        """`num` poems for each begin character or phrase ("" = the model's choice).

        `options` and keyword `changes` are `WriteOptions` fields (form, acrostic, rhyme, tones, seed,
        temperature, beam, rerank...). `nums` and `seeds` give one count and one seed a begin: the i-th
        poem of a begin with seed s is the poem `write(begin, seed=s)` writes i-th, whatever else is
        in the call. Bad requests raise OptionError (or a subclass) whose `field` names the option.
        `stop`, called every few steps, ends the writing early with `search.Stopped` when it returns True.
        `calibration_bias` (V,) is the genre's frequency calibration to write with instead of the
        checkpoint's (what `evaluation.calibration.calibrate` fits; its weight is the `calibration` option).
        """
        opts = templated((options or WriteOptions()).replace(**changes).validate())
        request = resolve(self.bundle, begins, opts, nums, seeds, calibration_bias)
        poems = decode(self, request, opts, stop)
        begins = [request.begins[g] for g, _ in request.rows()]
        finished = [finish(p, b, opts) for p, b in zip(poems, begins, strict=True)]
        return Written(finished, request.group_notes)

    def stream(
        self, begins: str | Sequence[str], options: WriteOptions | None = None, **changes: Any
    ) -> Iterator[Written]:
        """The poems of `write(begins, options)` a few at a time, as they are finished (the same poems)."""
        opts = (options or WriteOptions()).replace(**changes).validate()
        begins = [begins] if isinstance(begins, str) else list(begins)
        seed = opts.seed if opts.seed is not None else secrets.randbits(31)
        per = opts.num if opts.beam else CHUNK  # a beam's poems come from one search
        for b, begin in enumerate(begins):
            for start in range(0, opts.num, per):
                n = min(per, opts.num - start)
                first = seed + (b * opts.num + start) * opts.rerank
                yield self.write([begin], opts.replace(num=n, seed=None), seeds=[first])

    def check(self, text: str, suggest: int = 5) -> dict[str, Any]:
        """A person's poem read by the rules: the prosody report, each broken rule in words
        (`regular.explain`), and for each broken place up to `suggest` characters that keep the rule,
        the ones that make the whole poem likeliest under the model first."""
        check_text(text, "text")
        text = normalise(text, self.ckpt.config.data.script)
        report = regular.check(text)
        problems = regular.explain(report)
        out = []
        for p in problems:
            row: dict[str, Any] = p.to_dict()
            if suggest and p.place:
                row["suggestions"] = _suggest(self, report.lines, p, suggest)
            out.append(row)
        return {"report": report.to_dict(), "problems": out}

    def lines(self, poem: str, line: int, options: WriteOptions | None = None, **changes: Any) -> list[dict[str, Any]]:
        """Alternatives for one line of a regular poem (1-based `line`), written under the same rules
        with every other character kept: `num` distinct lines, ranked by the log-likelihood of the
        whole poem with the line in place; each with its prefix-only log-likelihood (the poem up to
        and including the line) and the rank that gives. Options as `write` (seed, temperature...)."""
        check_text(poem, "poem")
        opts = (options or WriteOptions()).replace(**changes)
        if opts.beam:
            raise OptionError("--beam: other lines are sampled (give --num and --seed)", "beam")
        text = normalise(poem, self.ckpt.config.data.script)
        report = regular.check(text)
        if report.form == "other":
            shape = regular.shape(report.lines) or "no"
            raise OptionError(f"--poem has lines of {shape} characters: not a {regular.FORMS_IN_WORDS}", "poem")
        if not 1 <= line <= len(report.lines):
            raise OptionError(f"--line {line}: the poem has lines 1 to {len(report.lines)}", "line")
        opts = opts.replace(template=_open_line(report.lines, line), form=report.form).validate()
        request = resolve(self.bundle, "", opts)
        index, want = _lines(self, opts), opts.num
        original = report.lines[line - 1]
        found: dict[str, str] = {}  # new line -> the poem with it
        for attempt in range(opts.budget):
            for poem in _line_candidates(self, request, opts, report.lines, line, want + 4, attempt):
                cand = regular.split_lines(poem)[line - 1]
                if cand != original and cand not in found and not (index is not None and cand in index):
                    found[cand] = poem
            if len(found) >= want:
                break
        news, poems = list(found), list(found.values())
        if not poems:
            return []
        ids = [[*self.vocab.encode(t), EOS] for t in poems]
        scores = losses.token_logprobs(self.model, ids, [[BOS]] * len(ids))
        upto = len(regular.join_lines(report.lines[:line]))  # the tokens of the poem up to the line's punctuation
        whole = [float(s.sum()) for s in scores]
        prefix = [float(s[:upto].sum()) for s in scores]
        best = sorted(range(len(poems)), key=lambda k: -whole[k])[:want]
        by_prefix = sorted(best, key=lambda k: -prefix[k])
        return [
            {
                "line": news[k],
                "poem": to_script(poems[k], opts.script),
                "log_likelihood": round(whole[k], 4),
                "prefix_log_likelihood": round(prefix[k], 4),
                "prefix_rank": by_prefix.index(k) + 1,
            }
            for k in best
        ]

    def loss(self, texts: str | list[str]) -> dict[str, float | int]:
        """Per-character loss and perplexity of the given poem texts."""
        return losses.text_loss(self.ckpt, [texts] if isinstance(texts, str) else list(texts))

    def corpus_loss(self, paths: list[str | Path], split: str = "all") -> dict[str, float | int]:
        return losses.corpus_loss(self.ckpt, paths, split=split)


# ---------------------------------------------------------------- lines and suggestions


def check_text(text: str, field: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise OptionError(f"--{field}: give a poem's text", field)
    if len(text) > MAX_TEMPLATE:
        raise OptionError(f"--{field}: at most {MAX_TEMPLATE} characters, got {len(text)}", field)


def _open_line(lines: list[str], line: int) -> str:
    """The template of a poem with one line (1-based) open."""
    return regular.join_lines([constraints.OPEN[0] * len(ln) if i == line - 1 else ln for i, ln in enumerate(lines)])


@torch.inference_mode()
def _line_candidates(
    poet: Poet, plan: Request, opts: WriteOptions, lines: list[str], line: int, n: int, attempt: int
) -> list[str]:
    """n poems with line `line` (1-based) sampled anew: the state after the poem's text before the line
    is read once, the form's mask and the steering are brought to that point, and only the line and
    its punctuation are sampled (the rest of the poem is the person's, scored afterwards)."""
    vocab, model = poet.vocab, poet.model
    device = next(model.parameters()).device
    head = regular.join_lines(lines[: line - 1])
    tail = regular.join_lines(lines)[len(regular.join_lines(lines[:line])) :]
    before = vocab.encode(head)
    mask = _mask(poet, plan, opts, [0] * n)
    steer = _steer(poet, plan, opts, n)
    for i in before:
        ids = torch.full((n,), i, dtype=torch.long)
        mask.update(ids)
        if steer is not None:
            steer.update(ids.to(device))
    sampler = _sampler(poet, opts)
    seed = (opts.seed if opts.seed is not None else secrets.randbits(31)) + attempt * RETRY_STRIDE
    written = search.write(
        model, vocab, [""] * n, sampler, seeds=[seed + r for r in range(n)], max_length=len(lines[line - 1]) + 1,
        form=mask, contexts=[[BOS, *before]] * n, steer=steer,
    )  # fmt: skip
    return [head + p.text + tail for p in written if p.failure is None and len(p.text) == len(lines[line - 1]) + 1]


def _suggest(poet: Poet, lines: list[str], problem: regular.Problem, k: int) -> list[dict[str, Any]]:
    """Up to k characters for a broken place that keep its rule and are not elsewhere in the poem: the
    64 the model finds likeliest after the poem's text before the place, ranked by the log-likelihood
    of the whole poem with each in place."""
    vp, vocab, model = poet.vocab_prosody, poet.vocab, poet.model
    if problem.rule == "rhyme":
        if problem.need not in vp.groups:
            return []
        allowed = vp.in_group[vp.groups.index(problem.need)].clone()
    else:
        allowed = (vp.ping if problem.need == regular.PING else vp.ze) & vp.char
    used = [vocab.id(ch) for ln in lines for ch in ln]
    allowed[used] = False
    if not bool(allowed.any()):
        return []
    text = regular.join_lines(lines)
    at = sum(len(ln) + 1 for ln in lines[: problem.line - 1]) + problem.place - 1
    ids = [BOS, *vocab.encode(text[:at])]
    with torch.inference_mode():
        x, state = search.prime(model, [ids], next(model.parameters()).device)
        logits, _ = model.step(x, state)
    logits = logits.float()[0].cpu().masked_fill(~allowed, float("-inf"))
    top = [int(i) for i in logits.topk(min(64, int(allowed.sum()))).indices]
    texts = [text[:at] + vocab.tokens[i] + text[at + 1 :] for i in top]
    scores = losses.token_logprobs(model, [[*vocab.encode(t), EOS] for t in texts], [[BOS]] * len(texts))
    best = sorted(zip(top, (float(s.sum()) for s in scores), strict=True), key=lambda p: -p[1])[:k]
    return [{"char": vocab.tokens[i], "log_likelihood": round(v, 4)} for i, v in best]


def _diversity(poet: Poet, opts: WriteOptions) -> float:
    return poet.default_diversity if opts.diversity is None else opts.diversity


def _cohesion(poet: Poet, plan: Request, opts: WriteOptions) -> float:
    """The line steering's weight: as asked, else the checkpoint's default when sampling (higher where the
    frequency calibration applies, which alone loosens the lines), 0 for beam search (whose likeliest lines
    already go together: docs/about-something.md)."""
    if opts.cohesion is not None:
        return opts.cohesion
    if opts.beam or not poet.default_cohesion:
        return 0.0
    return CALIBRATED_COHESION if plan.calibration is not None else poet.default_cohesion


def _steer(poet: Poet, plan: Request, opts: WriteOptions, batch: int) -> search.Steer | None:
    """The steering of a batch of sampled poems (None: nothing to steer)."""
    cohesion = _cohesion(poet, plan, opts)
    biases = [b for b in (plan.topic, plan.calibration) if b is not None]
    if not cohesion and not biases:
        return None
    table, breaks = poet.following() if cohesion else (None, torch.zeros(len(poet.vocab), dtype=torch.bool))
    device = next(poet.model.parameters()).device
    fixed = biases[0] + biases[1] if len(biases) == 2 else biases[0] if biases else None  # topic and calibration
    return search.Steer(table, cohesion, breaks, batch, fixed, device)


# ---------------------------------------------------------------- decode


def decode(poet: Poet, plan: Request, opts: WriteOptions, stop: Callable[[], bool] | None = None) -> list[Poem]:
    """The poems of a plan, judged: by beam search, or sampled (best of `rerank`), rejected ones written again."""
    return _beam(poet, plan, opts, stop) if opts.beam else _sample(poet, plan, opts, stop)


def _mask(poet: Poet, plan: Request, opts: WriteOptions, groups: list[int]) -> constraints.FormMask | None:
    """The form's mask for rows of these groups (begins): its heads, and each group's keyword places."""
    if plan.cipai is not None:
        rows = len(groups)
        return constraints.CiMask(
            poet.ci_prosody, plan.cipai, rows, [plan.heads] * rows, opts.tones,
            fixed=[plan.fixed[g] for g in groups], allow_repeat=opts.allow_repeat,
        )  # fmt: skip
    if plan.form is None:
        return None
    rows = len(groups)
    return constraints.FormMask(
        poet.vocab_prosody, plan.form, rows, [plan.heads] * rows, opts.rhyme, opts.tones, opts.allow_repeat,
        fixed=[plan.fixed[g] for g in groups], fixed_field="template" if opts.template else "keywords",
    )  # fmt: skip


def _lines(poet: Poet, opts: WriteOptions) -> LineIndex | None:
    return None if opts.allow_copies else poet.ckpt.lines


def _beam(poet: Poet, plan: Request, opts: WriteOptions, stop: Callable[[], bool] | None) -> list[Poem]:
    lines = _lines(poet, opts)
    poems = search.beam_write(
        poet.model, poet.vocab, plan.resolved, opts.beam, plan.nums, _max_length(plan, opts),
        _mask(poet, plan, opts, [g for g in range(len(plan.resolved)) for _ in range(opts.beam)]), lines,
        opts.repetition_penalty, stop, [plan.context] * len(plan.resolved),
        _steer(poet, plan, opts, len(plan.resolved) * opts.beam),
    )  # fmt: skip
    for p in poems:
        judge(p, plan, lines, opts)
    _refuse_strict_failures(poems, opts, f"by a beam of {opts.beam}", "a wider --beam")
    return poems


def _sample(poet: Poet, plan: Request, opts: WriteOptions, stop: Callable[[], bool] | None) -> list[Poem]:
    sampler = _sampler(poet, opts)
    lines, k = _lines(poet, opts), opts.rerank
    rows = plan.rows()
    bases = [plan.seeds[g] + i * k for g, n in enumerate(plan.nums) for i in range(n)]
    best: list[tuple[Poem, Verdict] | None] = [None] * len(rows)
    for attempt in range(opts.budget):
        todo = [r for r, b in enumerate(best) if b is None or b[1].rejected]
        if not todo:
            break
        cand = [r for r in todo for _ in range(k)]
        tries = [bases[r] + c + attempt * RETRY_STRIDE for r in todo for c in range(k)]
        written = search.write(
            poet.model, poet.vocab, [rows[r][1] for r in cand], sampler, num=1, seeds=tries,
            max_length=_max_length(plan, opts), stop_at_end=not (opts.ignore_end and plan.free),
            random_state=opts.random_state and plan.free, stop=stop,
            form=_mask(poet, plan, opts, [rows[r][0] for r in cand]),
            contexts=[plan.context] * len(cand), steer=_steer(poet, plan, opts, len(cand)),
            guidance=plan.guidance, plain_contexts=[plan.plain] * len(cand) if plan.plain else None,
        )  # fmt: skip
        bonus = sense(poet, plan, written, opts) if k > 1 else [0.0] * len(written)
        for r, p, extra in zip(cand, written, bonus, strict=True):
            v = judge(p, plan, lines, opts, extra)
            if best[r] is None or (v.rejected, -v.score) < (best[r][1].rejected, -best[r][1].score):
                best[r] = (p, v)
        if opts.greedy and not opts.random_state:
            break  # greedy writes the same poem whatever the seed
    poems = [b[0] for b in best if b is not None]
    _refuse_strict_failures(poems, opts, f"in {opts.budget} tries (--budget)", "--tones relaxed")
    return poems


def _sampler(poet: Poet, opts: WriteOptions) -> Sampler:
    return Sampler(
        temperature=opts.temperature,
        top_k=opts.top_k,
        top_p=opts.top_p,
        greedy=opts.greedy,
        repetition_penalty=opts.repetition_penalty,
        diversity=_diversity(poet, opts),
    )


def _max_length(plan: Request, opts: WriteOptions) -> int:
    if plan.cipai is not None:
        return plan.cipai.chars + len(plan.cipai.clauses) + 1
    return plan.form.length + 1 if plan.form is not None else opts.max_length


def _refuse_strict_failures(poems: list[Poem], opts: WriteOptions, how: str, instead: str) -> None:
    if opts.tones != "strict" or not opts.regular:
        return
    for p in poems:
        if p.failure:
            raise constraints.FormError(
                f"--tones strict could not be met {how}: the poem for '{p.begin}' failed at {p.failure}; use {instead}",
                "tones",
            )


# ---------------------------------------------------------------- judge


def sense(poet: Poet, plan: Request, poems: list[Poem], opts: WriteOptions) -> list[float]:
    """Each candidate's reranking bonus for sense (Li et al. 2016's mutual information, per token):
    `relevance_weight` x how much likelier the poem is after its context (title, poet, prefix) than
    after <bos> alone, plus `coherence_weight` x how much likelier each line after the first is after
    the lines before it than alone, averaged over those lines."""
    bonus = [0.0] * len(poems)
    relevance = opts.relevance_weight and plan.context != [BOS]
    if not (relevance or opts.coherence_weight) or not poems:
        return bonus
    vocab, model = poet.vocab, poet.model
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
        from tangshi.prosody import cipai as ci

        report = ci.check(p.text, plan.cipai.cipai, plan.cipai.number)
        p.prosody = report.to_dict()
        score += opts.prosody_weight * (report.rhyme + report.tones) / 2
    elif plan.form is not None and not plan.form.free:
        report = regular.check(p.text)
        p.prosody = report.to_dict()
        score += opts.prosody_weight * (report.rhyme + report.relaxed + report.strict) / 3
    p.acrostic = plan.heads
    p.plan = plan.plan.to_json() if plan.plan is not None else None
    p.copied = lines.copied(p.text) if lines is not None else []
    return Verdict(score, bool(p.copied) or bool(p.failure))


def finish(p: Poem, begin: str, opts: WriteOptions) -> Poem:
    """The poem as the caller asked: its begin, title and poet as given, its prosody report, its text
    in the asked script."""
    script = opts.script
    report = p.prosody or regular.check(p.text).to_dict()
    p.begin, p.title, p.author = begin, opts.title, opts.author
    p.text = to_script(p.text, script)
    p.lines = [to_script(x, script) for x in p.lines]
    if "cipai" in report:  # a 词: its lines are its 阕
        p.lines = [to_script(x, script) for x in report["parts"]]
        p.prosody = {**report, "parts": p.lines}
        return p
    p.prosody = {**report, "lines": [to_script(x, script) for x in report.get("lines", [])]}
    return p
