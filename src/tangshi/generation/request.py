"""A request normalised once: title, keywords, theme, begins, form and 词牌 checked against the model.

`resolve` turns `WriteOptions` and the begins into one typed `Request`: the begin phrases and the
acrostic heads in the model's characters (variants noted), the regular form or the 词牌's format the
masks keep, the plan (one keyword a line) and where its keywords go, the context read before each
poem (prefix, genre, poet, title), the fixed steering biases (topic and manner; the frequency
calibration) and one seed a group of poems. Every bad request is refused here, before anything is
written, by an OptionError naming the option.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from tangshi.data.text import normalise
from tangshi.data.vocab import BOS, EOS, UNK, Vocab, author_token, genre_token
from tangshi.evaluation.calibration import NO_GENRE
from tangshi.generation import constraints, planner, processors, tables
from tangshi.generation.bundle import Bundle
from tangshi.generation.search import resolve_begin
from tangshi.generation.tables import Form, FormError
from tangshi.options import GUIDANCE, PLANNED_GUIDANCE, OptionError, WriteOptions, check_begin
from tangshi.prosody import cipai
from tangshi.prosody.cipai import CiFormat

THEME_WORDS = 4  # a 词's keywords from its theme, at most


@dataclass
class Request:
    """A request resolved against the model: what the decoding writes."""

    begins: list[str]  # one a group of poems, as asked
    resolved: list[str]  # the same in the model's characters
    nums: list[int]  # poems a group
    seeds: list[int]  # each group's first seed
    heads: str  # acrostic heads in the model's characters, or ""
    form: Form | None  # the form the masks keep, None for free poems without heads (and for a 词)
    group_notes: list[list[str]]  # what was changed in each begin and in the heads
    context: list[int] = field(default_factory=lambda: [BOS])  # ids read before each poem (title, poet, prefix)
    plan: planner.Plan | None = None  # one keyword a line, where asked (--keywords, --theme, a title)
    fixed: list[dict[tuple[int, int], str]] = field(default_factory=list)  # each group's keyword places
    topic: torch.Tensor | None = None  # (V,) the fixed steering bias: topic (title, keywords, theme) and manner
    calibration: torch.Tensor | None = None  # (V,) weight x the genre's calibration bias (None: weight 0)
    plain: list[int] | None = None  # the context without the title, for guidance (None: no title)
    cipai: CiFormat | None = None  # the 词牌's format when a 词 is written
    guidance: float = 0.0  # classifier-free guidance by the title (0: none)

    @property
    def notes(self) -> list[str]:
        return list(dict.fromkeys(n for notes in self.group_notes for n in notes))

    @property
    def free(self) -> bool:
        """Neither a regular form nor a 词牌: what the seed-tf options may change."""
        return self.form is None and self.cipai is None

    def rows(self) -> list[tuple[int, str]]:
        """(group, resolved begin) of every poem, in order."""
        return [(g, b) for g, (b, n) in enumerate(zip(self.resolved, self.nums, strict=True)) for _ in range(n)]


def resolve(
    bundle: Bundle,
    begins: str | Sequence[str],
    opts: WriteOptions,
    nums: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    calibration_bias: torch.Tensor | None = None,
) -> Request:
    """Check a request against the model: begin phrases and heads in its characters (variants noted),
    the form and its masks' options, one seed a group. `calibration_bias` (V,) is the genre's frequency
    calibration to write with instead of the checkpoint's (what `evaluation.calibration.calibrate` fits)."""
    begins = [begins] if isinstance(begins, str) else list(begins)
    if not begins:
        raise OptionError('no begin given (use "" for the model\'s choice)', "begin")
    nums = list(nums) if nums is not None else [opts.num] * len(begins)
    if len(nums) != len(begins) or (seeds is not None and len(seeds) != len(begins)):
        raise ValueError("nums and seeds must give one value per begin")
    for n in nums:
        WriteOptions(num=n, beam=opts.beam).validate()
    resolved, notes = zip(*(_known(bundle, b, "begin character") for b in begins), strict=True)
    resolved = list(resolved)
    heads, head_notes = _known(bundle, opts.acrostic, "acrostic head")
    cifmt = _ci_format(bundle, opts, heads) if opts.cipai else None
    form = None if cifmt is not None else _form(bundle, opts, resolved, heads)
    genre = resolve_genre(bundle.vocab, opts.genre, bundle.script, bool(opts.cipai))
    plan, form = (None, None) if cifmt is not None else _plan(bundle, opts, form, heads, resolved, genre)
    context, plain, context_notes = _context(bundle, opts, genre)
    guidance = opts.guidance if opts.guidance is not None else PLANNED_GUIDANCE if plan is not None else GUIDANCE
    topic, steer_notes = _topic(bundle, opts)
    calibration = _calibration(bundle, opts, genre, calibration_bias)
    head_notes = head_notes + context_notes + steer_notes
    _check_diversity(bundle, opts)
    if seeds is None:
        seed = opts.seed if opts.seed is not None else secrets.randbits(31)
        seeds = [seed + sum(nums[:g]) * opts.rerank for g in range(len(begins))]
    fixed: list[dict[tuple[int, int], str]] = [{} for _ in begins]
    if cifmt is not None:
        fixed = [_ci_keywords(bundle, opts, cifmt, heads, b) for b in resolved]
    if opts.template:
        fixed = [_template(bundle, opts, form, heads, resolved) for _ in begins]
    if plan is not None:
        plan, fixed = _placed(bundle, opts, plan, form, heads, resolved, seeds)
    return Request(
        begins=begins,
        resolved=resolved,
        nums=nums,
        seeds=list(seeds),
        heads=heads,
        form=form,
        group_notes=[n + head_notes for n in notes],
        context=context,
        plan=plan,
        fixed=fixed,
        topic=topic,
        calibration=calibration,
        plain=plain if guidance else None,
        cipai=cifmt,
        guidance=guidance,
    )


def templated(opts: WriteOptions) -> WriteOptions:
    """The options with the form a template's shape gives, when no form is asked."""
    if not opts.template or opts.regular:
        return opts
    return opts.replace(form=tables.parse_template(opts.template)[0].name)


def resolve_genre(vocab: Vocab, asked: str | None, script: str, ci: bool = False) -> str:
    """The genre a poem is written in: `asked`, else 宋词 for a 词 and 唐诗 otherwise (tangshi writes Tang
    poems unless told); NO_GENRE for a model that knows none (or not the default). A genre asked for
    that the model does not know is refused, naming --genre."""
    kinds = vocab.genres()
    genre = normalise(asked or "", script) or ("宋词" if ci else "唐诗")
    if kinds:
        if genre in kinds:
            return genre
        if asked:
            raise OptionError(f"--genre {asked}: this model knows no such genre ({'、'.join(kinds)})", "genre")
    elif asked:
        raise OptionError(f"--genre {asked}: this model knows no genres (train one with --genres)", "genre")
    return NO_GENRE


def _check_diversity(bundle: Bundle, opts: WriteOptions) -> None:
    """A diversity asked or by default needs the checkpoint's character counts: refused now, by name."""
    if bundle.default_diversity if opts.diversity is None else opts.diversity:
        processors.log_prior(bundle.vocab)


def _known(bundle: Bundle, text: str, what: str) -> tuple[str, list[str]]:
    """A begin phrase or the heads in the model's characters, and notes on the variants used."""
    if not text:
        return "", []
    check_begin(text, "acrostic" if what.startswith("acrostic") else "begin")
    return resolve_begin(bundle.vocab, text, bundle.script, what=what)


# ---------------------------------------------------------------- forms


def _form(bundle: Bundle, opts: WriteOptions, resolved: list[str], heads: str) -> Form | None:
    """The form the masks keep (None: free poems without heads), the heads and rules checked against it."""
    for b in resolved:
        if heads and b and b[0] != heads[0]:
            raise OptionError(
                f"begin '{b}' and --acrostic '{heads}': the first line must start with '{heads[0]}'", "acrostic"
            )
    form = tables.get_form(opts.form) if opts.regular else tables.free_form(len(heads)) if heads else None
    if heads and form is not None and 0 < len(heads) < form.lines:
        raise OptionError(
            f"acrostic '{heads}' has {len(heads)} heads but a {form.name} has {form.lines} lines: give one head a line",
            "acrostic",
        )
    if form is not None:  # the masks check heads, rhyme and tones now, before anything is written
        constraints.FormMask(bundle.vocab_prosody, form, 1, [heads], opts.rhyme, opts.tones, opts.allow_repeat)
    return form


def _ci_format(bundle: Bundle, opts: WriteOptions, heads: str) -> CiFormat:
    """The 词牌's format to write, checked against the model: heads, and enough rhymes of each tone."""
    fmt = cipai.find(opts.cipai).format(opts.format)
    cp = bundle.ci_prosody
    for g in fmt.groups:
        best = int((cp.member[cp.tone_classes[g.tone]].sum(dim=1)).max())
        if best < len(g.at):
            raise FormError(
                f"--cipai {opts.cipai}: a rhyme group of {len(g.at)} {g.tone} rhymes, but the model knows at most "
                f"{best} characters of one 部 of that tone",
                "cipai",
            )
    constraints.CiMask(cp, fmt, 1, [heads], opts.tones)  # heads checked now, before anything is written
    return fmt


def _template(
    bundle: Bundle, opts: WriteOptions, form: Form, heads: str, resolved: list[str]
) -> dict[tuple[int, int], str]:
    """The characters a template fixes, checked now against the begins, the heads and the form's rules."""
    _, fixed = tables.parse_template(normalise(opts.template, bundle.script), form.name)
    for b in resolved:
        for k, ch in enumerate(b):
            if fixed.get((0, k), ch) != ch:
                raise OptionError(
                    f"begin '{b}' and --template: line 1, place {k + 1} of the template is '{fixed[(0, k)]}'",
                    "template",
                )
    constraints.FormMask(
        bundle.vocab_prosody, form, 1, [heads], opts.rhyme, opts.tones, opts.allow_repeat, fixed=[fixed],
        fixed_field="template",
    )  # fmt: skip
    return fixed


# ---------------------------------------------------------------- keywords


def _plan(
    bundle: Bundle, opts: WriteOptions, form: Form | None, heads: str, resolved: list[str], genre: str
) -> tuple[planner.Plan | None, Form | None]:
    """One keyword a line when keywords, a theme or a title are asked (the title's words and the corpus
    statistics fill the lines left over; a regular poem's title alone is planned from where `plan` is asked,
    where the checkpoint keeps word statistics and the title has words to plan: not 无题), and the form
    that holds them (free: one line a keyword)."""
    regular = form is not None and not form.free
    asked = opts.keywords or opts.theme or (opts.title and regular and opts.plan and not opts.template)
    stats, script = bundle.words if asked else None, bundle.script  # the word statistics read only if needed
    titled = opts.title and regular and opts.plan and not opts.template and stats is not None
    from_title = titled and bool(planner.title_words(stats, normalise(opts.title, script)))
    if not opts.keywords and not opts.theme and not from_title:
        return None, form
    if stats is None and opts.theme:
        raise OptionError(
            "--theme needs the checkpoint's word statistics (words.safetensors); add them with "
            "`tangshi index --checkpoint DIR --data CORPUS`",
            "theme",
        )
    keywords = [normalise(k, script) for k in opts.keywords]
    _check_keywords(bundle, keywords)
    if form is None:
        form = tables.free_form(max(len(keywords), 4))
    known = planner.writable(bundle.vocab_prosody)
    avoid = heads + "".join(resolved)
    alone = not keywords and not opts.theme  # a title alone: its words may take every line
    made = planner.make_plan(
        stats, form.lines, keywords, normalise(opts.title, script), normalise(opts.theme, script), avoid, known,
        from_text=form.lines if alone else None, genre=genre,
    )  # fmt: skip
    return made, form


def _placed(
    bundle: Bundle,
    opts: WriteOptions,
    plan: planner.Plan,
    form: Form,
    heads: str,
    resolved: list[str],
    seeds: Sequence[int],
) -> tuple[planner.Plan, list[dict[tuple[int, int], str]]]:
    """The plan less the planner's words that fit with no begin, and each group's keyword places
    (each begin phrase is forced at the start of line 1: the keywords go elsewhere)."""
    where = {"heads": heads, "rhyme": opts.rhyme, "tones": opts.tones, "allow_repeat": opts.allow_repeat}
    vp = bundle.vocab_prosody
    for b in dict.fromkeys(resolved):  # the planner's words that fit with every begin
        plan = planner.placeable(plan, vp, form, begin=b, **where)
    placed: dict[str, dict[tuple[int, int], str]] = {}
    for g, b in enumerate(resolved):
        if b not in placed:
            placed[b] = planner.place(plan, vp, form, begin=b, seed=seeds[g], **where)
    return plan, [placed[b] for b in resolved]


def _ci_keywords(
    bundle: Bundle, opts: WriteOptions, fmt: CiFormat, heads: str, begin: str
) -> dict[tuple[int, int], str]:
    """The keywords of a 词 (and up to THEME_WORDS of its theme's words), placed in its clauses
    (`planner.place_in_clauses`)."""
    script = bundle.script
    words = [normalise(k, script) for k in opts.keywords]
    if opts.theme and bundle.words is not None:
        words += [w for w in bundle.words.words_in(normalise(opts.theme, script)) if w not in words][:THEME_WORDS]
    _check_keywords(bundle, words)
    if not words:
        return {}
    return planner.place_in_clauses(words, bundle.vocab_prosody, fmt, heads=heads, begin=begin)


def _check_keywords(bundle: Bundle, words: Sequence[str]) -> None:
    """Every keyword's characters are the model's; the first that is not is named."""
    for k in words:
        unknown = [c for c in k if c not in bundle.vocab]
        if unknown:
            raise OptionError(f"keyword '{k}': '{unknown[0]}' is not in the model's vocabulary", "keywords")


# ---------------------------------------------------------------- context and steering


def _context(bundle: Bundle, opts: WriteOptions, genre: str) -> tuple[list[int], list[int] | None, list[str]]:
    """The ids read before each poem: a mood-setting prefix (a poem of its own), then the genre's token,
    the poet's token and the title (a 词's title is its 词牌, as in training) between <bos> and <sep>;
    the same without the title (None: no title), what guidance compares with; and notes on title
    characters the model does not know."""
    vocab, script, data, notes = bundle.vocab, bundle.script, bundle.ckpt.config.data, []
    context = [BOS]
    if opts.prefix:
        prefix = normalise(opts.prefix, script)
        context = [BOS, *(i for i in vocab.encode(prefix) if i != UNK), EOS, BOS]
    cond, titled = [], []
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
    if not title and opts.cipai and data.titles:  # a 词 was read after its 词牌, as its title
        title = cipai.find(opts.cipai).name
    if title:
        if vocab.sep is None or not data.titles:
            raise OptionError("--title needs a model trained with titles (tangshi train --titles)", "title")
        title = normalise(title, script)
        if len(title) > data.max_title:
            notes.append(
                f"--title: the model reads the first {data.max_title} characters of a title: "
                f"{title[: data.max_title]} (the rest, {len(title) - data.max_title} characters, is left out)"
            )
            title = title[: data.max_title]
        unknown = "".join(c for c in title if c not in vocab)
        if unknown:
            notes.append(f"title characters the model does not know are left out: {unknown}")
        titled = [vocab.id(c) for c in title if c in vocab]
    plain = [*context, *cond, vocab.sep] if cond else context
    if cond or titled:
        context = [*context, *cond, *titled, vocab.sep]
    return context, plain if titled else None, notes


def _topic(bundle: Bundle, opts: WriteOptions) -> tuple[torch.Tensor | None, list[str]]:
    """The fixed steering bias (V,): `topic` x the characters of poems about the title, keywords and
    theme, plus `manner` x the characters the poet favours (`WordStats.topic`, `.manner_of`)."""
    about = opts.topic and (opts.title or opts.keywords or opts.theme)
    manner = opts.manner and opts.author
    if not (about or manner):
        return None, []
    words, script = bundle.words, bundle.script
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
    vec = torch.zeros(len(bundle.vocab))
    for ch, v in bias.items():
        if ch in bundle.vocab:
            vec[bundle.vocab.id(ch)] = v
    return vec, notes


def _calibration(bundle: Bundle, opts: WriteOptions, genre: str, bias: torch.Tensor | None) -> torch.Tensor | None:
    """(V,) the frequency calibration to add: its weight x the genre's bias (`bias` where given, else the
    checkpoint's); None where the weight is 0 or there is no bias. The weight is as asked, else 1 when
    sampling a poem about nothing in particular; 0 for beam search and for a poem with a title, keywords
    or a theme (the calibration was measured without them: a topic means other characters, and correcting
    them costs relevance, docs/about-something.md)."""
    if bias is None:
        calibration = bundle.calibration
        bias = calibration.bias(genre) if calibration is not None else None
    if bias is None:
        return None
    if opts.calibration is not None:
        weight = opts.calibration
    else:
        weight = 0.0 if opts.beam or opts.title or opts.keywords or opts.theme else 1.0
    return weight * bias if weight else None
