"""The Python API: load a checkpoint (or the bundled model), write poems, score texts.

    from tangshi import Poet
    poet = Poet.load()                      # the bundled model
    written = poet.write("月", num=2, seed=1, form="七绝")
    for poem in written:                    # written.notes: what was changed in the request
        print(poem.text)
    poet.loss(["床前明月光，疑是地上霜。举头望明月，低头思故乡。"])

Writing is two steps, each a function that can be read alone:
`resolve` (the request -> a `Plan`: begin phrases in the model's characters, heads, form, seeds) and
`generation.decode.decode` (the processors and the constraint of each batch, sampling and reranking
or beam search, writing again what `judge` rejects; docs/writing-pipeline.md).
`Poet.write` chains them; the options are `tangshi.options.WriteOptions`.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from tangshi.data.text import LINE_BREAKS, normalise, to_script
from tangshi.data.vocab import BOS, EOS, UNK, author_token, genre_token
from tangshi.evaluation import losses as evaluate
from tangshi.evaluation.calibration import NO_GENRE, Calibration
from tangshi.generation import constraints as forms
from tangshi.generation import planner as planning
from tangshi.generation.decode import copy_index, decode, finish, line_candidates
from tangshi.generation.processors import DEFAULT_DIVERSITY, Rows, table_rows
from tangshi.generation.search import Poem, prime, resolve_begin
from tangshi.model import checkpoint
from tangshi.model.checkpoint import Checkpoint, CheckpointError
from tangshi.options import MAX_TEMPLATE, OptionError, WriteOptions, check_begin
from tangshi.prosody import regular as prosody

DEFAULT_COHESION = 0.5  # the line steering's weight unless told (docs/about-something.md)
GUIDANCE = 2.0  # title guidance unless told, for a poem without a plan (docs/about-something.md)
PLANNED_GUIDANCE = 4.0  # the same for a poem with a plan (from its title, keywords or theme)

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
        return _once(self.group_notes)

    def __iter__(self) -> Iterator[Poem]:
        return iter(self.poems)

    def __len__(self) -> int:
        return len(self.poems)

    def __getitem__(self, i: int) -> Poem:
        return self.poems[i]


def _once(groups: list[list[str]]) -> list[str]:
    return list(dict.fromkeys(n for notes in groups for n in notes))


@dataclass
class Plan:
    """A request resolved against the model: what `decode` writes."""

    begins: list[str]  # one a group of poems, as asked
    resolved: list[str]  # the same in the model's characters
    nums: list[int]  # poems a group
    seeds: list[int]  # each group's first seed
    heads: str  # acrostic heads in the model's characters, or ""
    form: forms.Form | None  # the form the masks keep, None for free poems without heads
    group_notes: list[list[str]]  # what was changed in each begin and in the heads
    context: list[int] = field(default_factory=lambda: [BOS])  # ids read before each poem (title, poet, prefix)
    plan: planning.Plan | None = None  # one keyword a line, where asked (--keywords, --theme)
    fixed: list[dict[tuple[int, int], str]] = field(default_factory=list)  # each group's keyword places
    topic: torch.Tensor | None = None  # (V,) the topic (title, keywords, theme) and manner bias
    plain: list[int] | None = None  # the context without the title, for guidance (None: no title)
    cipai: Any = None  # the 词牌's format (cipai.CiFormat) when a 词 is written
    calibration: torch.Tensor | None = None  # (V,) weight x the checkpoint's calibration bias (None: weight 0)
    guidance: float = 0.0  # classifier-free guidance by the title (0: none)

    @property
    def notes(self) -> list[str]:
        return _once(self.group_notes)

    @property
    def free(self) -> bool:
        """Neither a regular form nor a 词牌: what the seed-tf options may change."""
        return self.form is None and self.cipai is None

    def rows(self) -> list[tuple[int, str]]:
        """(group, resolved begin) of every poem, in order."""
        return [(g, b) for g, (b, n) in enumerate(zip(self.resolved, self.nums, strict=True)) for _ in range(n)]


class Poet:
    def __init__(self, ckpt: Checkpoint):
        self.ckpt = ckpt
        self._prosody: forms.VocabProsody | None = None
        self._ci_prosody: forms.CiProsody | None = None
        self._words: planning.WordStats | None | bool = False  # False: not read yet
        self._calibration: Calibration | None | bool = False
        self._following: tuple[Rows, torch.Tensor] | None = None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "cpu") -> Poet:
        """A checkpoint folder, or the bundled model when `path` is None."""
        folder = Path(path) if path is not None else bundled_path()
        if path is None and not (folder / "model.safetensors").is_file():
            raise CheckpointError(f"the bundled model is missing from {folder}; reinstall tangshi")
        return cls(checkpoint.load(folder, device=device))

    @property
    def model(self):
        return self.ckpt.model

    @property
    def vocab(self):
        return self.ckpt.vocab

    @property
    def default_diversity(self) -> float:
        """The sampler's anti-LM weight unless told: DEFAULT_DIVERSITY where the checkpoint keeps its
        characters' training counts, 0 where it does not (older checkpoints; `tangshi index` adds them)."""
        return DEFAULT_DIVERSITY if self.vocab.counts is not None else 0.0

    @property
    def words(self) -> planning.WordStats | None:
        """The checkpoint's word statistics for plans (`words.safetensors`), None when it has none."""
        with self._lock:
            if self._words is False:
                self._words = planning.WordStats.load(self.ckpt.path)
            return self._words

    @property
    def calibration(self) -> Calibration | None:
        """The checkpoint's frequency calibration (`calibration.safetensors`), None when it has none."""
        with self._lock:
            if self._calibration is False:
                self._calibration = Calibration.load(self.ckpt.path, len(self.vocab))
            return self._calibration

    @calibration.setter
    def calibration(self, value: Calibration | None) -> None:
        with self._lock:
            self._calibration = value

    @property
    def default_cohesion(self) -> float:
        """The line steering's weight unless told: DEFAULT_COHESION where the checkpoint's word statistics
        have the next-line table, 0 where they do not (`tangshi index` adds it)."""
        words = self.words
        return DEFAULT_COHESION if words is not None and words.next is not None else 0.0

    def following(self) -> tuple[Rows, torch.Tensor]:
        """(the next-line PPMI table in the model's ids as `processors.table_rows`: row a, the PPMI of a
        character a of a line and each b of the next; the ids that end a line)."""
        words = self.words
        with self._lock, torch.inference_mode(False):  # kept across calls: never an inference tensor
            if self._following is None:
                v, vocab = len(self.vocab), self.vocab
                pairs = [(vocab.id(a), vocab.id(b), s) for a, b, s in words.following() if a in vocab and b in vocab]
                rows, cols, vals = zip(*pairs, strict=True) if pairs else ((), (), ())
                ids = torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1)
                values = torch.tensor(vals, dtype=torch.float32)
                # a row for each character of a line: its next-line neighbours, which the steering gathers
                table = table_rows(torch.sparse_coo_tensor(ids, values, (v, v), check_invariants=True))
                breaks = torch.zeros(v, dtype=torch.bool)
                breaks[[vocab.id(ch) for ch in LINE_BREAKS if ch in vocab]] = True
                self._following = (table, breaks)
            return self._following

    @property
    def ci_prosody(self) -> forms.CiProsody:
        """The vocabulary against the 词林正韵, made on first use (a second or two)."""
        vp = self.vocab_prosody  # takes the lock itself
        with self._lock:
            if self._ci_prosody is None:
                self._ci_prosody = forms.CiProsody(vp)
            return self._ci_prosody

    @property
    def vocab_prosody(self) -> forms.VocabProsody:
        with self._lock:
            if self._prosody is None:
                self._prosody = forms.VocabProsody(self.vocab)
            return self._prosody

    def write(
        self,
        begins: str | Sequence[str],
        options: WriteOptions | None = None,
        *,
        nums: Sequence[int] | None = None,
        seeds: Sequence[int] | None = None,
        stop: Callable[[], bool] | None = None,
        **changes: Any,
    ) -> Written:
        """`num` poems for each begin character or phrase ("" = the model's choice).

        `options` and keyword `changes` are `WriteOptions` fields (form, acrostic, rhyme, tones, seed,
        temperature, beam, rerank...). `nums` and `seeds` give one count and one seed a begin: the i-th
        poem of a begin with seed s is the poem `write(begin, seed=s)` writes i-th, whatever else is
        in the call. Bad requests raise OptionError (or a subclass) whose `field` names the option.
        `stop`, called every few steps, ends the writing early with `search.Stopped` when it returns True.
        """
        opts = _templated((options or WriteOptions()).replace(**changes).validate())
        plan = resolve(self, begins, opts, nums, seeds)
        poems = decode(self, plan, opts, stop)
        begins = [plan.begins[g] for g, _ in plan.rows()]
        finished = [finish(p, b, opts) for p, b in zip(poems, begins, strict=True)]
        return Written(finished, plan.group_notes)

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
        (`prosody.explain`), and for each broken place up to `suggest` characters that keep the rule,
        the ones that make the whole poem likeliest under the model first."""
        check_text(text, "text")
        text = normalise(text, self.ckpt.config.data.script)
        report = prosody.check(text)
        problems = prosody.explain(report)
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
        report = prosody.check(text)
        if report.form == "other":
            shape = prosody.shape(report.lines) or "no"
            raise OptionError(f"--poem has lines of {shape} characters: not a 五绝, 七绝, 五律 or 七律", "poem")
        if not 1 <= line <= len(report.lines):
            raise OptionError(f"--line {line}: the poem has lines 1 to {len(report.lines)}", "line")
        opts = opts.replace(template=_open_line(report.lines, line), form=report.form).validate()
        plan = resolve(self, "", opts)
        index, want = copy_index(self, opts), opts.num
        original = report.lines[line - 1]
        found: dict[str, str] = {}  # new line -> the poem with it
        for attempt in range(opts.budget):
            for poem in line_candidates(self, plan, opts, report.lines, line, want + 4, attempt):
                cand = prosody.split_lines(poem)[line - 1]
                if cand != original and cand not in found and not (index is not None and cand in index):
                    found[cand] = poem
            if len(found) >= want:
                break
        news, poems = list(found), list(found.values())
        if not poems:
            return []
        ids = [[*self.vocab.encode(t), EOS] for t in poems]
        scores = evaluate.token_logprobs(self.model, ids, [[BOS]] * len(ids))
        upto = len(prosody.join_lines(report.lines[:line]))  # the tokens of the poem up to the line's punctuation
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
        return evaluate.text_loss(self.ckpt, [texts] if isinstance(texts, str) else list(texts))

    def corpus_loss(self, paths: list[str | Path], split: str = "all") -> dict[str, float | int]:
        return evaluate.corpus_loss(self.ckpt, paths, split=split)


# ---------------------------------------------------------------- resolve


def resolve(
    poet: Poet,
    begins: str | Sequence[str],
    opts: WriteOptions,
    nums: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
) -> Plan:
    """Check a request against the model: begin phrases and heads in its characters (variants noted),
    the form and its masks' options, one seed a group."""
    begins = [begins] if isinstance(begins, str) else list(begins)
    if not begins:
        raise OptionError('no begin given (use "" for the model\'s choice)', "begin")
    nums = list(nums) if nums is not None else [opts.num] * len(begins)
    if len(nums) != len(begins) or (seeds is not None and len(seeds) != len(begins)):
        raise ValueError("nums and seeds must give one value per begin")
    for n in nums:
        WriteOptions(num=n, beam=opts.beam).validate()
    resolved, notes = zip(*(_known(poet, b, "begin character") for b in begins), strict=True)
    heads, head_notes = _known(poet, opts.acrostic, "acrostic head")
    cifmt = _ci_format(poet, opts, heads) if opts.cipai else None
    shape = None if cifmt is not None else _shape(poet, opts, list(resolved), heads)
    keywords, shape = (None, None) if cifmt is not None else _plan(poet, opts, shape, heads, list(resolved))
    context, plain, context_notes = _context(poet, opts)
    guidance = opts.guidance if opts.guidance is not None else PLANNED_GUIDANCE if keywords is not None else GUIDANCE
    topic, steer_notes = _topic(poet, opts)
    genre = _genre(poet, opts)
    weight = _calibration(poet, opts, genre)
    calibration = weight * poet.calibration.bias(genre) if weight else None
    head_notes = head_notes + context_notes + steer_notes
    if seeds is None:
        seed = opts.seed if opts.seed is not None else secrets.randbits(31)
        seeds = [seed + sum(nums[:g]) * opts.rerank for g in range(len(begins))]
    fixed = [{} for _ in begins]
    if cifmt is not None:
        fixed = [_ci_keywords(poet, opts, cifmt, heads, b) for b in resolved]
    if opts.template:
        fixed = [_template(poet, opts, shape, heads, list(resolved)) for _ in begins]
    if keywords is not None:  # each begin phrase is forced at the start of line 1: the keywords go elsewhere
        where = {"heads": heads, "rhyme": opts.rhyme, "tones": opts.tones, "allow_repeat": opts.allow_repeat}
        for b in dict.fromkeys(resolved):  # the planner's words that fit with every begin
            keywords = planning.placeable(keywords, poet.vocab_prosody, shape, begin=b, **where)
        placed = {}
        for g, b in enumerate(resolved):
            if b not in placed:
                placed[b] = planning.place(keywords, poet.vocab_prosody, shape, begin=b, seed=seeds[g], **where)
            fixed[g] = placed[b]
    group_notes = [n + head_notes for n in notes]
    return Plan(
        begins,
        list(resolved),
        nums,
        list(seeds),
        heads,
        shape,
        group_notes,
        context,
        keywords,
        fixed,
        topic,
        plain if guidance else None,
        cifmt,
        calibration,
        guidance,
    )


def check_text(text: str, field: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise OptionError(f"--{field}: give a poem's text", field)
    if len(text) > MAX_TEMPLATE:
        raise OptionError(f"--{field}: at most {MAX_TEMPLATE} characters, got {len(text)}", field)


def _open_line(lines: list[str], line: int) -> str:
    """The template of a poem with one line (1-based) open."""
    return prosody.join_lines([forms.OPEN[0] * len(ln) if i == line - 1 else ln for i, ln in enumerate(lines)])


def _suggest(poet: Poet, lines: list[str], problem: prosody.Problem, k: int) -> list[dict[str, Any]]:
    """Up to k characters for a broken place that keep its rule and are not elsewhere in the poem: the
    64 the model finds likeliest after the poem's text before the place, ranked by the log-likelihood
    of the whole poem with each in place."""
    vp, vocab, model = poet.vocab_prosody, poet.vocab, poet.model
    if problem.rule == "rhyme":
        if problem.need not in vp.groups:
            return []
        allowed = vp.in_group[vp.groups.index(problem.need)].clone()
    else:
        allowed = (vp.ping if problem.need == prosody.PING else vp.ze) & vp.char
    used = [vocab.id(ch) for ln in lines for ch in ln]
    allowed[used] = False
    if not bool(allowed.any()):
        return []
    text = prosody.join_lines(lines)
    at = sum(len(ln) + 1 for ln in lines[: problem.line - 1]) + problem.place - 1
    ids = [BOS, *vocab.encode(text[:at])]
    with torch.inference_mode():
        x, state = prime(model, [ids], next(model.parameters()).device)
        logits, _ = model.step(x, state)
    logits = logits.float()[0].cpu().masked_fill(~allowed, float("-inf"))
    top = [int(i) for i in logits.topk(min(64, int(allowed.sum()))).indices]
    texts = [text[:at] + vocab.tokens[i] + text[at + 1 :] for i in top]
    scores = evaluate.token_logprobs(model, [[*vocab.encode(t), EOS] for t in texts], [[BOS]] * len(texts))
    best = sorted(zip(top, (float(s.sum()) for s in scores), strict=True), key=lambda p: -p[1])[:k]
    return [{"char": vocab.tokens[i], "log_likelihood": round(v, 4)} for i, v in best]


def _templated(opts: WriteOptions) -> WriteOptions:
    """The options with the form a template's shape gives, when no form is asked."""
    if not opts.template or opts.regular:
        return opts
    return opts.replace(form=forms.parse_template(opts.template)[0].name)


def _template(
    poet: Poet, opts: WriteOptions, shape: forms.Form, heads: str, resolved: list[str]
) -> dict[tuple[int, int], str]:
    """The characters a template fixes, checked now against the begins, the heads and the form's rules."""
    _, fixed = forms.parse_template(normalise(opts.template, poet.ckpt.config.data.script), shape.name)
    for b in resolved:
        for k, ch in enumerate(b):
            if fixed.get((0, k), ch) != ch:
                raise OptionError(
                    f"begin '{b}' and --template: line 1, place {k + 1} of the template is '{fixed[(0, k)]}'",
                    "template",
                )
    forms.FormMask(
        poet.vocab_prosody, shape, 1, [heads], opts.rhyme, opts.tones, opts.allow_repeat, fixed=[fixed],
        fixed_field="template",
    )  # fmt: skip
    return fixed


def _known(poet: Poet, text: str, what: str) -> tuple[str, list[str]]:
    """A begin phrase or the heads in the model's characters, and notes on the variants used."""
    if not text:
        return "", []
    check_begin(text, "acrostic" if what.startswith("acrostic") else "begin")
    return resolve_begin(poet.vocab, text, poet.ckpt.config.data.script, what=what)


def _plan(
    poet: Poet, opts: WriteOptions, shape: forms.Form | None, heads: str, resolved: list[str]
) -> tuple[planning.Plan | None, forms.Form | None]:
    """One keyword a line when keywords, a theme or a title are asked (the title's words and the corpus
    statistics fill the lines left over; a regular poem's title alone is planned from unless `no_plan`,
    where the checkpoint keeps word statistics and the title has words to plan: not 无题), and the form
    that holds them (free: one line a keyword)."""
    stats, script = poet.words, poet.ckpt.config.data.script
    regular = shape is not None and not shape.free
    titled = opts.title and regular and not opts.no_plan and not opts.template and stats is not None
    from_title = titled and bool(planning.title_words(stats, normalise(opts.title, script)))
    if not opts.keywords and not opts.theme and not from_title:
        return None, shape
    if stats is None and opts.theme:
        raise OptionError(
            "--theme needs the checkpoint's word statistics (words.safetensors); add them with "
            "`tangshi index --checkpoint DIR --data CORPUS`",
            "theme",
        )
    keywords = [normalise(k, script) for k in opts.keywords]
    _check_keywords(poet, keywords)
    if shape is None:
        shape = forms.free_form(max(len(keywords), 4))
    known = planning.writable(poet.vocab_prosody)
    avoid = heads + "".join(resolved)
    alone = not keywords and not opts.theme  # a title alone: its words may take every line
    made = planning.make_plan(
        stats, shape.lines, keywords, normalise(opts.title, script), normalise(opts.theme, script), avoid, known,
        from_text=shape.lines if alone else None, genre=_genre(poet, opts),
    )  # fmt: skip
    return made, shape


def _context(poet: Poet, opts: WriteOptions) -> tuple[list[int], list[int] | None, list[str]]:
    """The ids read before each poem: a mood-setting prefix (a poem of its own), then the genre's token,
    the poet's token and the title (a 词's title is its 词牌, as in training) between <bos> and <sep>;
    the same without the title (None: no title), what guidance compares with; and notes on title
    characters the model does not know."""
    vocab, script, notes = poet.vocab, poet.ckpt.config.data.script, []
    context = [BOS]
    if opts.prefix:
        prefix = normalise(opts.prefix, script)
        context = [BOS, *(i for i in vocab.encode(prefix) if i != UNK), EOS, BOS]
    cond, titled = [], []
    genre = _genre(poet, opts)
    if genre:
        cond.append(vocab.id(genre_token(genre)))
    if opts.author:
        known = vocab.authors()
        name = normalise(opts.author, script)
        if name not in known:
            shown = "、".join(list(known)[:8]) or "none: train with --authors N"
            raise OptionError(
                f"--author {opts.author}: this model knows no such poet (`tangshi authors` lists them: {shown}…)",
                "author",
            )
        cond.append(vocab.id(author_token(name)))
    title = opts.title
    if not title and opts.cipai and poet.ckpt.config.data.titles:  # a 词 was read after its 词牌, as its title
        from tangshi.prosody import cipai as ci

        title = ci.find(opts.cipai).name
    if title:
        if vocab.sep is None or not poet.ckpt.config.data.titles:
            raise OptionError("--title needs a model trained with titles (tangshi train --titles)", "title")
        title = normalise(title, script)[: poet.ckpt.config.data.max_title]
        unknown = "".join(c for c in title if c not in vocab)
        if unknown:
            notes.append(f"title characters the model does not know are left out: {unknown}")
        titled = [vocab.id(c) for c in title if c in vocab]
    plain = [*context, *cond, vocab.sep] if cond else context
    if cond or titled:
        context = [*context, *cond, *titled, vocab.sep]
    return context, plain if titled else None, notes


def _genre(poet: Poet, opts: WriteOptions) -> str:
    """The genre a poem is written in (tangshi writes Tang poems unless told, 词 for a 词牌), NO_GENRE for a
    model that knows none; a genre the model does not know is refused."""
    kinds = poet.vocab.genres()
    genre = normalise(opts.genre, poet.ckpt.config.data.script) or ("宋词" if opts.cipai else "唐诗")
    if kinds:
        if genre in kinds:
            return genre
        if opts.genre:
            raise OptionError(f"--genre {opts.genre}: this model knows no such genre ({'、'.join(kinds)})", "genre")
    elif opts.genre:
        raise OptionError(f"--genre {opts.genre}: this model knows no genres (train one with --genres)", "genre")
    return NO_GENRE


def _calibration(poet: Poet, opts: WriteOptions, genre: str) -> float:
    """The frequency calibration's weight: as asked, else 1 when sampling a poem about nothing in particular
    where the checkpoint has a calibration for the genre; 0 for beam search and for a poem with a title,
    keywords or a theme (the calibration was measured without them: a topic means other characters, and
    correcting them costs relevance, docs/about-something.md); 0 wherever there is none to apply."""
    calibration = poet.calibration
    if calibration is None or calibration.bias(genre) is None:
        return 0.0
    if opts.calibration is not None:
        return opts.calibration
    return 0.0 if opts.beam or opts.title or opts.keywords or opts.theme else 1.0


def _topic(poet: Poet, opts: WriteOptions) -> tuple[torch.Tensor | None, list[str]]:
    """The fixed steering bias (V,): `topic` x the characters of poems about the title, keywords and
    theme, plus `manner` x the characters the poet favours (`WordStats.topic`, `.manner_of`)."""
    about = opts.topic and (opts.title or opts.keywords or opts.theme)
    manner = opts.manner and opts.author
    if not (about or manner):
        return None, []
    words, script = poet.words, poet.ckpt.config.data.script
    if words is None:
        return None, ["no word statistics in this checkpoint: the title, keywords, theme and poet steer nothing "
                      "(add them with `tangshi index --checkpoint DIR --data CORPUS`)"]  # fmt: skip
    bias: dict[str, float] = {}
    if about:
        told = [normalise(k, script) for k in opts.keywords]
        if opts.theme:
            told += words.words_in(normalise(opts.theme, script))
        for ch, v in words.topic(normalise(opts.title, script), told).items():
            bias[ch] = bias.get(ch, 0.0) + opts.topic * v
    notes = []
    if manner:
        favoured = words.manner_of(normalise(opts.author, script))
        if not favoured:
            notes.append(f"no manner of {opts.author} in this checkpoint's word statistics: `tangshi index` adds it")
        for ch, v in favoured.items():
            bias[ch] = bias.get(ch, 0.0) + opts.manner * v
    vec = torch.zeros(len(poet.vocab))
    for ch, v in bias.items():
        if ch in poet.vocab:
            vec[poet.vocab.id(ch)] = v
    return vec, notes


def _shape(poet: Poet, opts: WriteOptions, resolved: list[str], heads: str) -> forms.Form | None:
    """The form the masks keep (None: free poems without heads), the heads and rules checked against it."""
    for b in resolved:
        if heads and b and b[0] != heads[0]:
            raise OptionError(
                f"begin '{b}' and --acrostic '{heads}': the first line must start with '{heads[0]}'", "acrostic"
            )
    shape = forms.get_form(opts.form) if opts.regular else forms.free_form(len(heads)) if heads else None
    if heads and shape is not None and 0 < len(heads) < shape.lines:
        raise OptionError(
            f"acrostic '{heads}' has {len(heads)} heads but a {shape.name} has {shape.lines} lines: "
            "give one head a line",
            "acrostic",
        )
    if shape is not None:  # the masks check heads, rhyme and tones now, before anything is written
        forms.FormMask(poet.vocab_prosody, shape, 1, [heads], opts.rhyme, opts.tones, opts.allow_repeat)
    return shape


def _ci_format(poet: Poet, opts: WriteOptions, heads: str):
    """The 词牌's format to write, checked against the model: heads, and enough rhymes of each tone."""
    from tangshi.prosody import cipai as ci

    fmt = ci.find(opts.cipai).format(opts.format)
    cp = poet.ci_prosody
    for g in fmt.groups:
        best = int((cp.member[cp.tone_classes[g.tone]].sum(dim=1)).max())
        if best < len(g.at):
            raise forms.FormError(
                f"--cipai {opts.cipai}: a rhyme group of {len(g.at)} {g.tone} rhymes, but the model knows at most "
                f"{best} characters of one 部 of that tone",
                "cipai",
            )
    forms.CiMask(cp, fmt, 1, [heads], opts.tones)  # heads checked now, before anything is written
    return fmt


def _ci_keywords(poet: Poet, opts: WriteOptions, fmt, heads: str, begin: str) -> dict[tuple[int, int], str]:
    """The keywords (and the theme's words) of a 词, each in a clause of its own, spread over the
    clauses in order, at the first place where its tones take the word and no rhyme falls inside it
    (the start of a clause where it can); a keyword that fits no clause left is named."""
    script = poet.ckpt.config.data.script
    words = [normalise(k, script) for k in opts.keywords]
    if opts.theme and poet.words is not None:
        words += [w for w in poet.words.words_in(normalise(opts.theme, script)) if w not in words][:4]
    _check_keywords(poet, words)
    if not words:
        return {}
    vp, clauses, starts = poet.vocab_prosody, fmt.clauses, fmt.starts
    rhyming = set(fmt.rhyme_at)
    taken = {0} if begin else set()
    taken |= set(range(len(heads)))
    fixed: dict[tuple[int, int], str] = {}
    for k, w in enumerate(words):
        want = round(k * len(clauses) / len(words))
        order = sorted(range(len(clauses)), key=lambda c: (c < want, abs(c - want)))
        spot = next(
            (
                (c, j)
                for c in order
                if c not in taken
                for j in range(clauses[c][0] - len(w) + 1)
                if not any(starts[c] + j + i in rhyming for i in range(len(w)))
                and all(
                    fmt.tones[starts[c] + j + i] not in "平仄" or _has_tone(vp, ch, fmt.tones[starts[c] + j + i])
                    for i, ch in enumerate(w)
                )
            ),
            None,
        )
        if spot is None:
            raise forms.FormError(
                f"keyword '{w}' fits no clause left of {fmt.cipai} (format {fmt.number}): none long enough whose "
                "tones take it without a rhyme inside it",
                "keywords",
            )
        c, j = spot
        fixed.update({(c, j + i): ch for i, ch in enumerate(w)})
        taken.add(c)
    return fixed


def _check_keywords(poet: Poet, words: Sequence[str]) -> None:
    """Every keyword's characters are the model's; the first that is not is named."""
    for k in words:
        unknown = [c for c in k if c not in poet.vocab]
        if unknown:
            raise OptionError(f"keyword '{k}': '{unknown[0]}' is not in the model's vocabulary", "keywords")


def _has_tone(vp, ch: str, tone: str) -> bool:
    i = vp.vocab.id(ch)
    return bool(vp.ping[i] if tone == prosody.PING else vp.ze[i])
