"""词 (ci): the rhyme 部 of the 词林正韵, the 词谱 of the 词牌, and how well a 词 keeps its pattern.

The 词林正韵 (戈载, 1821) puts 平, 上 and 去 of a rhyme together in 14 部 and the 入声 in 5 more.
A character's 部 is derived from its 平水韵 readings (`regular.readings`, with their fallbacks) by
the standard mapping (docs/prosody.md#词林正韵), group by group; where the mapping splits a 平水韵
group (灰 贿 队, 泰, 佳 蟹 卦, 元 阮 愿, 叶), the character's 廣韻 rhyme (tshet-uinh) decides, and a
character the 廣韻 lacks keeps both halves. A 仄 rhyme is 上去 of one 部 (1–14) or 入声 of one 部
(15–19), never the two mixed.

The 词谱 is `cipu.json` (built by scripts/make_cipu.py from the couyun project's 钦定词谱 and
龙榆生's formats): for each 词牌 its names and formats, each format a tone a character (平, 仄, 中
either), clauses ending in 句/读/韵/叶/换, and rhyme groups (a tone and the positions that rhyme
together; a position of the other tone rhymes by 叶韵: the same 部, either tone).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from tangshi.data.text import converter, normalise
from tangshi.options import OptionError
from tangshi.prosody import regular

NUMERALS = "一二三四五六七八九十"


class CiError(OptionError):
    """A 词牌 or format that does not exist or cannot be written; `field` names the option."""


# ---------------------------------------------------------------- 词林正韵


@dataclass(frozen=True, order=True)
class CiRhyme:
    bu: int  # 1 to 19
    kind: str  # 平, 仄 (上 and 去) or 入

    @property
    def name(self) -> str:
        return f"第{bu_numeral(self.bu)}部{'上去' if self.kind == regular.ZE else self.kind}"


def bu_numeral(n: int) -> str:
    return NUMERALS[n - 1] if n <= 10 else "十" + NUMERALS[n - 11]


# 平水韵 groups (their last character) that go whole into one 部, by 平 / 上 / 去 / 入
_WHOLE = {
    "平": dict(东=1, 冬=1, 江=2, 阳=2, 支=3, 微=3, 齐=3, 鱼=4, 虞=4, 真=6, 文=6, 寒=7, 删=7, 先=7, 萧=8, 肴=8,
               豪=8, 歌=9, 麻=10, 庚=11, 青=11, 蒸=11, 尤=12, 侵=13, 覃=14, 盐=14, 咸=14),
    "上": dict(董=1, 肿=1, 讲=2, 养=2, 纸=3, 尾=3, 荠=3, 语=4, 麌=4, 轸=6, 吻=6, 旱=7, 潸=7, 铣=7, 筿=8, 筱=8,
               巧=8, 皓=8, 哿=9, 马=10, 梗=11, 迥=11, 有=12, 寝=13, 感=14, 琰=14, 豏=14),
    "去": dict(送=1, 宋=1, 绛=2, 漾=2, 寘=3, 未=3, 霁=3, 御=4, 遇=4, 震=6, 问=6, 翰=7, 谏=7, 霰=7, 啸=8, 效=8,
               号=8, 个=9, 祃=10, 敬=11, 径=11, 宥=12, 沁=13, 勘=14, 艳=14, 陷=14),
    "入": dict(屋=15, 沃=15, 觉=16, 药=16, 质=17, 陌=17, 锡=17, 职=17, 缉=17, 物=18, 月=18, 曷=18, 黠=18,
               屑=18, 合=19, 洽=19),
}  # fmt: skip
# the split groups: both halves, kept where the 廣韻 does not say
_SPLIT = {"灰": (3, 5), "贿": (3, 5), "队": (3, 5), "泰": (3, 5), "佳": (5, 10), "蟹": (5, 10), "卦": (5, 10),
          "元": (6, 7), "阮": (6, 7), "愿": (6, 7), "叶": (18, 19)}  # fmt: skip
# 廣韻 rhymes (tshet-uinh names them by their 平声, simplified here) -> 部: 平上去, then 入
_GUANGYUN = {
    **dict.fromkeys("东冬钟", 1), **dict.fromkeys("江阳唐", 2), **dict.fromkeys("支脂之微齐灰祭废", 3),
    **dict.fromkeys("鱼虞模", 4), **dict.fromkeys("佳皆咍夬", 5), **dict.fromkeys("真谆臻文欣殷魂痕", 6),
    **dict.fromkeys("元寒桓删山先仙", 7), **dict.fromkeys("萧宵肴豪", 8), **dict.fromkeys("歌戈", 9),
    "麻": 10, **dict.fromkeys("庚耕清青蒸登", 11), **dict.fromkeys("尤侯幽", 12), "侵": 13,
    **dict.fromkeys("覃谈盐添严咸衔凡", 14),
}  # fmt: skip
_GUANGYUN_RU = {
    **dict.fromkeys("东冬钟", 15), **dict.fromkeys("江阳唐", 16), **dict.fromkeys("真谆臻庚耕清青蒸登侵", 17),
    **dict.fromkeys("文欣殷元魂痕寒桓删山先仙盐添", 18), **dict.fromkeys("覃谈严咸衔凡", 19),
}  # fmt: skip
# 佳 蟹 卦 (and 夬) characters the 词林正韵 puts in 第十部 with 麻 (read -a): the rest of them are 第五部
TENTH = frozenset("佳涯崖厓娃蛙洼哇娲騧蜗鼃卦挂画话罣絓罢")
# characters tshet-uinh keeps under another form
_GUANGYUN_FORMS = {"魂": "䰟"}


def _kind(tone: str) -> str:
    return regular.PING if tone == "平" else "入" if tone == "入" else regular.ZE


def _guangyun_bu(ch: str, kind: str) -> set[int]:
    """The 部 of a character's 廣韻 readings of this kind (平, 仄 or 入)."""
    import tshet_uinh

    out = set()
    forms = {ch, converter("s2t").convert(ch), *regular._variant_index().get(ch, ())}
    forms |= {_GUANGYUN_FORMS[f] for f in list(forms) if f in _GUANGYUN_FORMS}
    for form in forms:
        for hit in tshet_uinh.資料.query字頭(form):
            status = hit.音韻地位
            if _kind(status.聲) != kind:
                continue
            rhyme = normalise(status.韻)
            if kind == "入":
                bu = _GUANGYUN_RU.get(rhyme)
            elif rhyme == "泰":
                bu = 3 if status.呼 == "合" else 5
            elif rhyme in "佳夬" and ch in TENTH:
                bu = 10
            else:
                bu = _GUANGYUN.get(rhyme)
            if bu:
                out.add(bu)
    return out


@cache
def rhymes(ch: str) -> frozenset[CiRhyme]:
    """Every 词林正韵 reading of a character (simplified or traditional); empty when unknown."""
    out: set[CiRhyme] = set()
    for r in regular.readings(ch):
        tone = "平" if "平" in r.group else r.group[:1]
        kind = _kind(tone) if r.group else None
        if not r.group:  # a reading from the 廣韻 without a 平水韵 group: the 廣韻 says
            for k in (regular.PING,) if r.tone == regular.PING else (regular.ZE, "入"):
                out |= {CiRhyme(b, k) for b in _guangyun_bu(ch, k)}
            continue
        name = r.rhyme
        if name in _SPLIT:
            bus = _guangyun_bu(ch, kind) & set(_SPLIT[name]) or set(_SPLIT[name])
        else:
            bus = {_WHOLE[tone][name]} if name in _WHOLE[tone] else set()
        out |= {CiRhyme(b, kind) for b in bus}
    return frozenset(out)


def rhyme_classes() -> list[CiRhyme]:
    """Every 部 and kind a rhyme can be: 平 and 上去 of 部 1–14, 入 of 部 15–19."""
    return [CiRhyme(b, k) for b in range(1, 15) for k in (regular.PING, regular.ZE)] + [
        CiRhyme(b, "入") for b in range(15, 20)
    ]


def fits_tone(rhyme: CiRhyme, tone: str) -> bool:
    """Whether a reading can fill a rhyme of this tone (平; 仄 takes 上去 and 入)."""
    return rhyme.kind == regular.PING if tone == regular.PING else rhyme.kind != regular.PING


# ---------------------------------------------------------------- 词谱

RHYME_MARKS = "韵叶换"


@dataclass(frozen=True)
class RhymeGroup:
    tone: str  # 平 or 仄
    at: tuple[int, ...]  # 0-based positions in the format; a 叶 position is written -p


@dataclass(frozen=True)
class CiFormat:
    cipai: str
    number: int  # 1-based, among the 词牌's formats
    source: str  # 钦定词谱 or 龙榆生
    tones: str  # 平, 仄 or 中 a character
    clauses: tuple[tuple[int, str], ...]  # (characters, the mark that ends it: 句 读 韵 叶 换)
    groups: tuple[RhymeGroup, ...]
    parts: int = 2  # 阕: 1 (单调), 2 (双调), 3 or 4

    @property
    def chars(self) -> int:
        return len(self.tones)

    @property
    def lengths(self) -> list[int]:
        return [n for n, _ in self.clauses]

    @property
    def starts(self) -> list[int]:
        """The position of each clause's first character."""
        out, n = [], 0
        for k, _ in self.clauses:
            out.append(n)
            n += k
        return out

    @property
    def ends(self) -> list[int]:
        """The position of each clause's last character."""
        return [s + k - 1 for s, (k, _) in zip(self.starts, self.clauses, strict=True)]

    @property
    def rhyme_at(self) -> dict[int, tuple[int, bool]]:
        """position -> (rhyme group index, whether it rhymes by 叶韵 there)."""
        out = {}
        for g, group in enumerate(self.groups):
            for p in group.at:
                pos = abs(p)
                out[pos] = (g, p < 0 or (self.tones[pos] in "平仄" and self.tones[pos] != group.tone))
        return out

    @property
    def breaks(self) -> list[int]:
        """The clauses after which a new 阕 starts: for k parts, the rhyming clause ends nearest to each
        k-th of the characters (the 词谱 marks no 阕; the parts of a 词牌 are about equally long)."""
        if self.parts < 2:
            return []
        ends = self.ends
        rhyming = [c for c, (_, mark) in enumerate(self.clauses[:-1]) if mark in RHYME_MARKS]
        out: list[int] = []
        for k in range(1, self.parts):
            target = self.chars * k / self.parts - 1
            options = [c for c in rhyming if not out or c > out[-1]]
            if options:
                out.append(min(options, key=lambda c: abs(ends[c] - target)))
        return out

    def punctuation(self, clause: int) -> str:
        """，after a clause that does not rhyme, 。 after one that does and after the last."""
        last = clause == len(self.clauses) - 1
        return "。" if last or self.clauses[clause][1] in RHYME_MARKS else "，"

    def describe(self) -> str:
        """The pattern, a line a 阕, clauses split by their punctuation, rhymes marked ◎ (叶 ◇)."""
        at, out, part, pos = self.rhyme_at, [], "", 0
        breaks = set(self.breaks)
        for c, (n, _) in enumerate(self.clauses):
            for _ in range(n):
                part += self.tones[pos] + ("◇" if at.get(pos, (0, False))[1] else "◎" if pos in at else "")
                pos += 1
            part += self.punctuation(c)
            if c in breaks:
                out.append(part)
                part = ""
        return "\n".join([*out, part])


@dataclass(frozen=True)
class Cipai:
    name: str
    aliases: tuple[str, ...]
    kind: str  # 单调, 双调, 三段, 四段
    chars: int  # of the first format
    formats: tuple[CiFormat, ...]

    def format(self, number: int | None = None) -> CiFormat:
        if number is None:
            return self.formats[0]
        if not 1 <= number <= len(self.formats):
            raise CiError(
                f"format {number}: {self.name} has formats 1 to {len(self.formats)} "
                f"(`tangshi cipai {self.name}` shows them)",
                "format",
            )
        return self.formats[number - 1]


_PARTS = {"单调": 1, "双调": 2, "三段": 3, "四段": 4}


@cache
def catalogue() -> tuple[Cipai, ...]:
    """Every 词牌 of the 词谱, in its order."""
    data = json.loads(resources.files("tangshi.prosody").joinpath("cipu.json").read_text("utf-8"))
    out = []
    for c in data["cipai"]:
        name, parts = c["names"][0], _PARTS.get(c["type"], 2)
        formats = tuple(
            CiFormat(
                name,
                k + 1,
                f["source"],
                f["tones"],
                tuple((n, m) for n, m in f["clauses"]),
                tuple(RhymeGroup(g["tone"], tuple(g["at"])) for g in f["rhymes"]),
                parts,
            )  # fmt: skip
            for k, f in enumerate(c["formats"])
        )
        out.append(Cipai(name, tuple(c["names"][1:]), c["type"], c["chars"], formats))
    return tuple(out)


@cache
def _by_name() -> dict[str, Cipai]:
    out: dict[str, Cipai] = {}
    for c in catalogue():
        for n in (c.name, *c.aliases):
            out.setdefault(n, c)
    return out


def find(name: str) -> Cipai:
    """The 词牌 of this name or alias (simplified or traditional); a CiError names the nearest ones."""
    key = normalise(name.strip())
    found = _by_name().get(key)
    if found is None:
        near = difflib.get_close_matches(key, list(_by_name()), n=5, cutoff=0.4)
        near = near or [n for n in _by_name() if key and (key in n or n in key)][:5]
        hint = f"; nearest: {'、'.join(near)}" if near else ""
        raise CiError(f"--cipai {name}: no such 词牌 in the 词谱 (`tangshi cipai` lists them){hint}", "cipai")
    return found


def known(name: str) -> bool:
    """Whether the 词谱 has a 词牌 of this name or alias."""
    return normalise(name.strip()) in _by_name()


def search(query: str = "") -> list[Cipai]:
    """The 词牌 whose name or an alias contains `query` (all of them for ""), or of that many characters."""
    q = normalise(query.strip())
    if q.isdigit():
        return [c for c in catalogue() if any(f.chars == int(q) for f in c.formats)]
    return [c for c in catalogue() if not q or any(q in n for n in (c.name, *c.aliases))]


def to_dicts(found: Sequence[Cipai], *, patterns: bool) -> list[dict[str, Any]]:
    """These 词牌 as JSON objects (`tangshi cipai --json`, GET /v1/cipai): names, type, and each format's
    source, character count, clause lengths and number of rhymes; its pattern (`describe`) where `patterns`."""
    return [
        {
            "name": c.name,
            "aliases": list(c.aliases),
            "type": c.kind,
            "formats": [
                {
                    "format": f.number,
                    "source": f.source,
                    "chars": f.chars,
                    "clauses": f.lengths,
                    "rhymes": len(f.rhyme_at),
                    **({"pattern": f.describe()} if patterns else {}),
                }
                for f in c.formats
            ],
        }
        for c in found
    ]


# ---------------------------------------------------------------- a 词 against its pattern


def clauses_of(text: str) -> list[str]:
    """A 词's clauses: the runs of Han characters between punctuation (notes and quotes left out)."""
    return regular.split_lines(normalise(text))


@dataclass
class RhymeReport:
    position: int  # 0-based, in the 词
    char: str
    group: int
    ye: bool  # rhymes by 叶韵 here
    ok: bool
    bu: str  # the group's 部 (name), "" when the group has none


@dataclass
class CiReport:
    cipai: str
    format: int  # 0: no format of the 词牌 fits
    source: str = ""
    text_clauses: list[str] = field(default_factory=list)
    in_pattern: bool = False  # as many characters as the format, clause ends where it has some
    tones_checked: int = 0
    tones_matched: int = 0
    tones: float = 0.0
    rhymes: list[RhymeReport] = field(default_factory=list)
    rhyme: float = 0.0  # share of 韵位 in their group's 部
    rhyme_ok: bool = False
    groups: list[str] = field(default_factory=list)  # each rhyme group's 部: more than one is 换韵
    parts: list[str] = field(default_factory=list)  # the 词 split into its 阕
    pattern: str = ""  # the format, described
    unknown: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _clause_fit(lengths: Sequence[int], f: CiFormat) -> bool:
    """Same characters, and every clause end of the text is a clause end of the format."""
    if sum(lengths) != f.chars:
        return False
    ends, n = set(f.ends), 0
    for k in lengths:
        n += k
        if n - 1 not in ends:
            return False
    return True


def group_bu(chars: Sequence[str], tone: str, ye: Sequence[bool]) -> tuple[CiRhyme | None, list[bool]]:
    """The 部 (and kind) most of a rhyme group's characters share, and which of them are in it: its own
    positions need a reading of the group's tone in it, a 叶 position any reading of the same 部."""
    best: tuple[int, CiRhyme | None, list[bool]] = (0, None, [False] * len(chars))
    for cls in rhyme_classes():
        if not fits_tone(cls, tone):
            continue
        oks = [
            any(r.bu == cls.bu for r in rhymes(ch)) if y else cls in rhymes(ch) for ch, y in zip(chars, ye, strict=True)
        ]
        if sum(oks) > best[0]:
            best = (sum(oks), cls, oks)
    return best[1], best[2]


def score(text_chars: str, f: CiFormat) -> CiReport:
    """Tones and rhymes of a 词's characters (as many as the format has) against the format."""
    report = CiReport(f.cipai, f.number, f.source, pattern=f.describe())
    marks = "".join(regular.tone_mark(ch) for ch in text_chars)
    report.unknown = sorted({ch for ch, m in zip(text_chars, marks, strict=True) if m == "?"})
    for need, m in zip(f.tones, marks, strict=True):
        if need in "平仄" and m != "?":
            report.tones_checked += 1
            report.tones_matched += m == "*" or m == need
    report.tones = report.tones_matched / report.tones_checked if report.tones_checked else 1.0
    at = f.rhyme_at
    for g, group in enumerate(f.groups):
        pos = [abs(p) for p in group.at]
        ye = [at[p][1] for p in pos]
        cls, oks = group_bu([text_chars[p] for p in pos], group.tone, ye)
        report.groups.append(cls.name if cls else "")
        for p, y, ok in zip(pos, ye, oks, strict=True):
            report.rhymes.append(RhymeReport(p, text_chars[p], g, y, ok, cls.name if cls else ""))
    report.rhymes.sort(key=lambda r: r.position)
    n = len(report.rhymes)
    report.rhyme = sum(r.ok for r in report.rhymes) / n if n else 1.0
    report.rhyme_ok = all(r.ok for r in report.rhymes)
    return report


def check(text: str, cipai: str, number: int | None = None) -> CiReport:
    """A 词 against its 词牌 (name or alias): the format asked for, else the best one: in pattern, then
    the most rhymes and tones kept. A 词 no format fits (other lengths) is reported with format 0."""
    c = find(cipai)
    clauses = clauses_of(text)
    chars = "".join(clauses)
    lengths = [len(x) for x in clauses]
    candidates = [c.format(number)] if number else list(c.formats)
    best: tuple | None = None
    for f in candidates:
        if len(chars) != f.chars:
            continue
        r = score(chars, f)
        r.in_pattern = _clause_fit(lengths, f)
        key = (r.in_pattern, r.rhyme, r.tones)
        if best is None or key > best[0]:
            best = (key, r, f)
    if best is None:
        return CiReport(c.name, 0, text_clauses=clauses)
    _, report, f = best
    report.text_clauses = clauses
    report.parts = _parts(chars, f)
    return report


def _parts(chars: str, f: CiFormat) -> list[str]:
    """The 词 in its 阕, each clause followed by the format's punctuation."""
    out, part, pos = [], "", 0
    breaks = set(f.breaks)
    for c, (n, _) in enumerate(f.clauses):
        part += chars[pos : pos + n] + f.punctuation(c)
        pos += n
        if c in breaks:
            out.append(part)
            part = ""
    return [*out, part]


def identify(text: str) -> CiReport | None:
    """The 词牌 and format a 词 without its 词牌 keeps best: among the formats whose clauses it has,
    the most rhymes, then tones kept (None: no format of any 词牌 has its clauses)."""
    clauses = clauses_of(text)
    chars, lengths = "".join(clauses), [len(x) for x in clauses]
    best = None
    for c in catalogue():
        for f in c.formats:
            if f.chars == len(chars) and _clause_fit(lengths, f):
                r = score(chars, f)
                if best is None or (r.rhyme, r.tones) > (best.rhyme, best.tones):
                    best = r
                    best.in_pattern, best.text_clauses = True, clauses
                    best.parts = _parts(chars, f)
    return best


# ---------------------------------------------------------------- many 词


@dataclass
class CiSummary:
    """Per 词牌, over many 词: found in a pattern, rhymes and tones kept (the baseline of docs/prosody.md)."""

    rows: dict[str, dict[str, float]] = field(default_factory=dict)
    ci: int = 0
    unknown_cipai: int = 0  # 词 whose 词牌 the 词谱 lacks (失调名 and others)

    @classmethod
    def of(cls, pairs: Sequence[tuple[str, str]], top: int = 20) -> CiSummary:
        """`pairs`: (text, 词牌 as given). The `top` 词牌 with most 词, then all of them together."""
        from collections import Counter

        s = cls(ci=len(pairs))
        counts = Counter(c for _, c in pairs)
        listed = {name for name in counts if known(name)}
        s.unknown_cipai = sum(n for name, n in counts.items() if name not in listed)
        chosen = [name for name, _ in counts.most_common() if name in listed][:top]
        everything: list[CiReport] = []
        for name in chosen:
            reports = [check(t, name) for t, c in pairs if c == name]
            everything += reports
            s.rows[name] = _row(reports)
        s.rows[f"these {len(chosen)}"] = _row(everything)
        return s

    def table(self) -> str:
        out = [
            "| 词牌 | 词 | in pattern | every 韵位 in its 部 | 韵位 in their 部 | 平/仄 positions kept | all kept |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in self.rows.items():
            out.append(
                f"| {name} | {r['ci']:,} | {100 * r['in_pattern']:.1f} % | {100 * r['rhyme_ok']:.1f} % | "
                f"{100 * r['rhyme']:.1f} % | {r['tones']:.3f} | {100 * r['all']:.1f} % |"
            )
        out.append(
            f"\n{self.ci:,} 词 read, {self.unknown_cipai:,} under a 词牌 the 词谱 lacks; rhymes and tones over the 词 "
            "in pattern"
        )
        return "\n".join(out)


def _row(reports: Sequence[CiReport]) -> dict[str, float]:
    fit = [r for r in reports if r.in_pattern]
    n = len(fit)
    return {
        "ci": len(reports),
        "in_pattern": n / len(reports) if reports else 0.0,
        "rhyme_ok": sum(r.rhyme_ok for r in fit) / n if n else 0.0,
        "rhyme": sum(r.rhyme for r in fit) / n if n else 0.0,
        "tones": sum(r.tones for r in fit) / n if n else 0.0,
        "all": sum(r.rhyme_ok and r.tones == 1.0 for r in fit) / n if n else 0.0,
    }
