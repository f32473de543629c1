"""Plans: what each line is about (Wang et al. 2016: one keyword a line), and where it goes.

`make_plan` gives each line of a poem one keyword from the corpus word statistics
(`tangshi.data.words.WordStats`): the given keywords first, in order, the lines left over from the
title's and the theme's words (half of them at most; all of them for a title alone), then from the
words of the training poems under the titles nearest the title (`Kin`), then from the common words
most associated with everything chosen so far. `place` puts each keyword of a regular or free poem
inside its line where the form's rules allow it, `place_in_clauses` each keyword of a 词 in a
clause of its own where the 词牌's tones take it; both return the characters a mask fixes (`fixed=`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Container, Sequence
from dataclasses import asdict, dataclass, field

import torch

from tangshi.data.text import normalise
from tangshi.data.words import WordStats, subject, word_starts
from tangshi.generation.tables import ALL_TYPES, FREE_MAX, Form, FormError, VocabProsody, template_fits
from tangshi.prosody import regular
from tangshi.prosody.cipai import CiFormat

# the planner's own words are common ones: seen at least once in 1,500 poems of the train split (200
# times in the bundled model's 300,000 poems); rarer associations read as odd (思兮, 直谅, 万像)
FILL_SHARE = 1 / 1500


# words of a title that name its occasion or kind, not its subject: poems under such titles hardly ever
# hold them (under 3.5 % of the Tang poems do: 绝句 0.2 %, 应制 0.1 %, 题 3.4 %), so no line is planned on them
FORMULA = set(
    "无题 失题 题 句 绝句 杂诗 杂咏 即事 有感 感怀 偶作 偶题 偶成 应制 应教 联句 五言 七言 古意 赋得 "
    "咏 赠 酬 答 呈 词 谣 辞 奉 和".split()
)


# ---------------------------------------------------------------- plans


@dataclass
class PlanEntry:
    line: int  # 0-based
    word: str
    given: bool  # asked for (--keywords), or chosen by the planner


@dataclass
class Plan:
    """One keyword a line (lines without one are left out), in line order."""

    lines: int
    entries: list[PlanEntry] = field(default_factory=list)

    def to_json(self) -> list[dict]:
        return [asdict(e) for e in self.entries]

    @property
    def words(self) -> list[str]:
        return [e.word for e in self.entries]


def writable(vp: VocabProsody) -> set[str]:
    """The characters a model can write inside a line: single Han characters with a known reading."""
    return {vp.vocab.tokens[i] for i in vp.char.nonzero().flatten().tolist()}


def title_words(stats: WordStats, title: str) -> list[str]:
    """The words of a title a plan may give a line: those of its `subject`, less the bound characters
    and the words that name its kind or occasion (`FORMULA`); none for 无题."""
    text = subject(title)
    for f in sorted(FORMULA, key=len, reverse=True):
        text = text.replace(f, "|")
    words = [w for part in text.split("|") for w in stats.words_in(part)]
    return [w for w in dict.fromkeys(words) if w not in stats.bound]


def make_plan(
    stats: WordStats | None,
    form_lines: int,
    keywords: Sequence[str] = (),
    title: str = "",
    theme: str = "",
    avoid: str = "",
    known: Container[str] | None = None,
    from_text: int | None = None,
    genre: str = "",
) -> Plan:
    """A keyword for each of `form_lines` lines: the given keywords on the first lines, in order;
    the lines left over from the title's words, then the theme's words (2-character words first, at
    most `from_text` of them: half the lines left over unless told, since a title's single
    characters are often names or formulas), then the words of the poems under the titles nearest
    the title (`Kin.ranked`, of `genre` where the index has it), then `stats.expand` of every word so
    far and of the title's words (by the title table), 2-character words first, among the common words
    (`FILL_SHARE`).

    No word twice; a chosen word shares no character with another word of the plan or with `avoid`
    (heads, begin phrase), repeats none of its own (依依) and has only characters in `known` (the
    characters the model can write: `writable(vocab_prosody)`) when given. Without statistics only
    the keywords given are planned. The title's words are those of its `subject` (no series numbers),
    less the words that name its kind or occasion (`FORMULA`: 无题, 绝句, 赠)."""
    keywords = [k for k in (k.strip() for k in keywords) if k]
    if len(keywords) > form_lines:
        raise FormError(f"{len(keywords)} keywords but the poem has {form_lines} lines: one a line at most", "keywords")
    for i, w in enumerate(keywords):
        if w in keywords[:i]:
            raise FormError(f"keyword '{w}' is given twice", "keywords")
    entries = [PlanEntry(i, w, True) for i, w in enumerate(keywords)]
    banned = set(avoid) | {ch for w in keywords for ch in w}
    left = form_lines - len(entries)
    if stats is None or left == 0:
        return Plan(form_lines, entries)

    def fits(w: str) -> bool:
        return len(set(w)) == len(w) and not banned & set(w) and (known is None or all(ch in known for ch in w))

    chosen: list[str] = []

    def take(w: str) -> None:
        chosen.append(w)
        banned.update(w)

    title = subject(title)
    texts = [*title_words(stats, title), *(w for w in stats.words_in(theme) if w not in stats.bound)]
    for w in sorted(texts, key=lambda w: -len(w)):
        if len(chosen) < (from_text if from_text is not None else (left + 1) // 2) and fits(w):
            take(w)
    if stats.kin is not None and title:  # then the words of the poems under the nearest titles
        kin = [stats.words[i] for i in stats.kin.ranked(title, genre)]
        for w in sorted(kin, key=lambda w: len(w) != 2):  # 2-character words first, each kind in rank order
            if len(chosen) < left and fits(w):
                take(w)
    titled = stats.words_in(title, stop=False)
    common = math.ceil(FILL_SHARE * stats.settings.get("poems", 0))
    for length in (2, None):
        seeds = [*keywords, *chosen]
        more = stats.expand(seeds, left - len(chosen), banned, length, titled, known, common)
        chosen.extend(more)
        banned.update(ch for w in more for ch in w)
    entries += [PlanEntry(len(keywords) + i, w, False) for i, w in enumerate(chosen)]
    return Plan(form_lines, entries)


# ---------------------------------------------------------------- placing


@dataclass
class _State:
    types: int  # the tone templates open (4 bits)
    groups: torch.Tensor  # (G,) bool: the rhyme groups open
    places: dict[tuple[int, int], str]  # every character fixed so far: heads, begin, keywords


def place(
    plan: Plan,
    vp: VocabProsody,
    form: Form,
    *,
    heads: str = "",
    begin: str = "",
    rhyme: str | None = None,
    tones: str = "relaxed",
    allow_repeat: bool = False,
    seed: int | None = None,
) -> dict[tuple[int, int], str]:
    """(line, position) -> character for every keyword of the plan, each inside its line, such that
    some tone template takes every fixed character (and the heads and the begin phrase) at the
    checked positions, an even line's last character is a 平 rhyme of a group still open, nothing
    overlaps the heads or the begin phrase (unless it is the same character) and, unless
    `allow_repeat`, no character is fixed twice. Pass the result to `FormMask(..., fixed=[...])`.

    In a free form (`forms.free_form`) each keyword starts its line (after the head, if the line has
    a different one). Positions where a word starts in a line (characters 1, 3, 4 of 5; 1, 3, 5, 6
    of 7) are tried first, the first line's start first; `seed` shuffles them for variety.
    A keyword that fits nowhere raises FormError(..., "keywords") naming it and its line."""
    _check_words(plan, vp, form, allow_repeat)
    start = _start(vp, form, heads, begin, rhyme, tones)
    rng = random.Random(seed) if seed is not None else None
    state = _search(plan.entries, 0, start, vp, form, tones, allow_repeat, rng)
    if state is not None:
        occupied = _occupied(form, heads, begin)
        return {p: ch for p, ch in state.places.items() if p not in occupied}
    _blame(plan, start, vp, form, tones, allow_repeat)
    raise AssertionError("unreachable: a plan that fails has a first keyword that fails")


def placeable(plan: Plan, vp: VocabProsody, form: Form, **where) -> Plan:
    """The plan less the planner's words (not given) that cannot be placed with the others (`place`'s
    keyword arguments in `where`): the given keywords must all fit (else FormError naming the first
    that does not), then each planned word is kept if it fits with those kept before it."""
    try:
        place(plan, vp, form, **where)
        return plan
    except FormError:
        kept = Plan(plan.lines, [e for e in plan.entries if e.given])
        place(kept, vp, form, **where)
    for e in (e for e in plan.entries if not e.given):
        trial = Plan(plan.lines, sorted([*kept.entries, e], key=lambda x: x.line))
        try:
            place(trial, vp, form, **where)
            kept = trial
        except FormError:
            continue
    return kept


def place_in_clauses(
    words: Sequence[str], vp: VocabProsody, fmt: CiFormat, *, heads: str = "", begin: str = ""
) -> dict[tuple[int, int], str]:
    """(clause, position) -> character for the keywords of a 词, each in a clause of its own, spread over
    the clauses in order, at the first place where its tones take the word and no rhyme falls inside it
    (the start of a clause where it can); the clauses of the heads and of the begin phrase are taken.
    Pass the result to `CiMask(..., fixed=[...])`. A keyword that fits no clause left raises
    FormError(..., "keywords") naming it."""
    clauses, starts, rhyming = fmt.clauses, fmt.starts, set(fmt.rhyme_at)
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
            raise FormError(
                f"keyword '{w}' fits no clause left of {fmt.cipai} (format {fmt.number}): none long enough whose "
                "tones take it without a rhyme inside it",
                "keywords",
            )
        c, j = spot
        fixed.update({(c, j + i): ch for i, ch in enumerate(w)})
        taken.add(c)
    return fixed


def _has_tone(vp: VocabProsody, ch: str, tone: str) -> bool:
    i = vp.vocab.id(ch)
    return bool(vp.ping[i] if tone == regular.PING else vp.ze[i])


def _check_words(plan: Plan, vp: VocabProsody, form: Form, allow_repeat: bool) -> None:
    width = form.chars or FREE_MAX
    seen: dict[str, str] = {}
    lines = [e.line for e in plan.entries]
    for e in plan.entries:
        where = f"keyword '{e.word}' (line {e.line + 1})"
        if not 0 <= e.line < form.lines:
            raise FormError(f"{where}: a {form.name} has {form.lines} lines", "keywords")
        if lines.count(e.line) > 1:
            raise FormError(f"{where}: one keyword a line", "keywords")
        if len(e.word) > width:
            raise FormError(f"{where} has {len(e.word)} characters but a {form.name} line has {width}", "keywords")
        for ch in e.word:
            if ch not in vp.vocab or not bool(vp.char[vp.vocab.id(ch)]):
                raise FormError(f"{where}: '{ch}' is not a character the model can write", "keywords")
            if not allow_repeat and seen.get(ch, e.word) != e.word:
                raise FormError(
                    f"{where} repeats '{ch}' of keyword '{seen[ch]}'; a poem has no character twice "
                    "(use --allow-repeat, or other keywords)",
                    "keywords",
                )
            seen[ch] = e.word


def _occupied(form: Form, heads: str, begin: str) -> dict[tuple[int, int], str]:
    """The places the heads and the begin phrase take (the begin phrase may run over lines)."""
    out = {(i, 0): ch for i, ch in enumerate(heads)}
    line, pos = 0, 0
    for ch in normalise(begin):
        if not regular.is_han(ch) or (form.chars and pos >= form.chars):
            line, pos = line + 1, 0
            if not regular.is_han(ch):
                continue
        out[(line, pos)] = ch
        pos += 1
    return out


def _start(vp: VocabProsody, form: Form, heads: str, begin: str, rhyme: str | None, tones: str) -> _State:
    enough = vp.in_group.sum(dim=1) >= form.lines // 2 + 1
    groups = enough.clone()
    if rhyme:
        g = regular.find_group(rhyme)
        groups = torch.zeros_like(enough)
        if g is not None:
            groups[vp.groups.index(g)] = True
    state = _State(ALL_TYPES, groups, {})
    for (i, j), ch in _occupied(form, heads, begin).items():
        if ch in vp.vocab and bool(vp.char[vp.vocab.id(ch)]) and i < form.lines:
            nxt = _put(state, i, j, ch, vp, form, tones, allow_repeat=True)
            state = nxt if isinstance(nxt, _State) else state  # heads and begin are checked by the mask
        state.places[(i, j)] = ch
    return state


def _put(
    state: _State, i: int, j: int, ch: str, vp: VocabProsody, form: Form, tones: str, allow_repeat: bool
) -> _State | str:
    """The state with `ch` fixed at (i, j), or why it cannot be."""
    if (i, j) in state.places:
        return state if state.places[(i, j)] == ch else f"'{state.places[(i, j)]}' is already there"
    if not allow_repeat and ch in state.places.values():
        return f"'{ch}' is already in the poem"
    if form.free:
        return _State(state.types, state.groups, {**state.places, (i, j): ch})
    c = vp.vocab.id(ch)
    fits = template_fits(vp, form, tones, i, j, ch)
    if not state.types & fits:
        need = regular.ZE if vp.ping[c] else regular.PING
        return f"'{ch}' is {vp.tone_name(c)} where the tone templates still open need {need}"
    groups = state.groups
    if j == form.chars - 1 and i % 2 == 1:
        groups = groups & vp.in_group[:, c]
        if not bool(groups.any()):
            return f"'{ch}' ends a rhyming line but is not a 平 rhyme of a group still open"
    return _State(state.types & fits, groups, {**state.places, (i, j): ch})


def _positions(state: _State, form: Form, line: int, word: str, rng: random.Random | None) -> list[int]:
    if form.free:  # at the line's start, or after its head or begin characters
        taken = next(j for j in range(FREE_MAX + 1) if (line, j) not in state.places)
        return [0] if taken == 0 else [0, taken]
    last = form.chars - len(word)
    starts = word_starts(form.chars) or set()
    good = [p for p in range(last + 1) if p in starts or len(word) != 2]
    rest = [p for p in range(last + 1) if p not in good]
    if rng is not None:
        rng.shuffle(good)
        rng.shuffle(rest)
    return good + rest


def _try(
    state: _State, line: int, pos: int, word: str, vp: VocabProsody, form: Form, tones: str, allow_repeat: bool
) -> _State | str:
    if form.free and pos + len(word) > FREE_MAX:
        return f"a free line has at most {FREE_MAX} characters"
    for t, ch in enumerate(word):  # a keyword's own reduplication (萧萧) is kept as asked
        nxt = _put(state, line, pos + t, ch, vp, form, tones, allow_repeat or ch in word[:t])
        if isinstance(nxt, str):
            return f"at character {pos + t + 1}, {nxt}"
        state = nxt
    return state


def _search(
    entries: list[PlanEntry],
    n: int,
    state: _State,
    vp: VocabProsody,
    form: Form,
    tones: str,
    allow_repeat: bool,
    rng: random.Random | None,
    failed: set | None = None,
) -> _State | None:
    """Depth-first: a place for entries[n:] given the state, or None. Whether the rest can be placed
    depends only on the templates and groups open (each entry has its own line, and the characters
    used are the same wherever they go), so the states that failed are remembered."""
    if n == len(entries):
        return state
    failed = set() if failed is None else failed
    key = (n, state.types, state.groups.numpy().tobytes())
    if key in failed:
        return None
    e = entries[n]
    for pos in _positions(state, form, e.line, e.word, rng):
        nxt = _try(state, e.line, pos, e.word, vp, form, tones, allow_repeat)
        if isinstance(nxt, _State):
            done = _search(entries, n + 1, nxt, vp, form, tones, allow_repeat, rng, failed)
            if done is not None:
                return done
    failed.add(key)
    return None


def _blame(plan: Plan, start: _State, vp: VocabProsody, form: Form, tones: str, allow_repeat: bool) -> None:
    """Raise FormError for the first keyword that cannot be placed with those before it."""
    for n, e in enumerate(plan.entries):
        if _search(plan.entries[: n + 1], 0, start, vp, form, tones, allow_repeat, None) is not None:
            continue
        alone = [
            _try(start, e.line, p, e.word, vp, form, tones, allow_repeat)
            for p in _positions(start, form, e.line, e.word, None)
        ]
        why = [r for r in alone if isinstance(r, str)]
        if len(why) < len(alone):
            reason = (
                "not together with the keywords before it (" + ", ".join(f"'{x.word}'" for x in plan.entries[:n]) + ")"
            )
        else:
            reason = "; ".join(dict.fromkeys(why))
        mode = "" if form.free else f" (--tones {tones})"
        raise FormError(
            f"keyword '{e.word}' cannot be placed in line {e.line + 1} of a {form.name}{mode}: {reason}", "keywords"
        )
