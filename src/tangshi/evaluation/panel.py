"""A blind reader panel: sheets of (human poem, model poem) pairs for people to rate, and their scores.

`make_panel` draws N poems of a corpus split (regular poems with a usable title, or 词 of the split's
most common 词牌), has the model write one for each under the same request (title and form, first
character and form, keywords and form, or 词牌 and format), and writes a folder:

    sheet.md                  the readers' instructions, then the numbered pairs, A and B at random
    ratings.template.jsonl    one line an item with null ratings: what each reader fills in
    key.json                  kept from the readers: which is human, the sources, the requests, the seeds

`score_panel` reads the key and one ratings file per reader, and returns each criterion's means for the
model's and the human poems with 95 % intervals (percentile bootstrap over items) and their ratio, the
share of pairs where the human poem was picked (Wilson interval), the readers' agreement on the pick,
and the share of each poem's characters that come from its title. docs/reader-panel.md is the protocol.

The corpus reader (and with it torch) and numpy are imported where they are used: the CLI's parser
reads KINDS and SET_BY_PANEL from here, and `tangshi --help` stays instant.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import re
import shlex
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tangshi import __version__
from tangshi.config import DataConfig
from tangshi.data.standard import gb2312
from tangshi.data.text import LINE_BREAKS, normalise, to_script
from tangshi.options import BY_NAME, MAX_TITLE, NAMES, OptionError, WriteOptions
from tangshi.prosody import cipai, regular

if TYPE_CHECKING:
    from tangshi.api import Poet
    from tangshi.data.corpus import RawPoem

KINDS = ("title", "begin", "keywords", "ci")
CRITERIA = ("fluency", "coherence", "relevance", "poeticness")
NAMES_ZH = {"fluency": "通顺", "coherence": "连贯", "relevance": "切题", "poeticness": "诗意"}
DEFINITIONS = {
    "fluency": "every line reads as grammatical, idiomatic classical Chinese",
    "coherence": "the lines build one scene, feeling or argument, each following from the one before",
    "relevance": "the poem is about its title, not merely repeating the title's characters",
    "poeticness": "imagery, craft, something worth reading",
}
SET_BY_PANEL = ("num", "seed", "title", "form", "cipai", "format", "keywords")  # each item's own request
REFUSED = ("theme", "template", "acrostic", "rhyme")  # would fix content the human poem does not share
TOP_CIPAI = 5  # the `ci` kind draws 词 of the split's most common 词牌
KEYWORD_MIN_COUNT = 5  # a keyword is a 2-character word seen at least this often in the training split
REDRAWS = 5  # seeds a model poem is tried with before its human poem is skipped
RESAMPLES = 10_000  # bootstrap resamples of the items
Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile
SHEET, KEY, TEMPLATE = "sheet.md", "key.json", "ratings.template.jsonl"
_NUMERAL = "一二三四五六七八九十百〇零"
_SERIES_INDEX = re.compile(rf"其?[{_NUMERAL}]+")  # "二" of "遣兴五首 二": a poem's place in its series
_SERIES_COUNT = re.compile(rf"[{_NUMERAL}]+首$")  # "五首" of "遣兴五首"
NOT_TITLES = frozenset(  # labels an editor gave where the poet gave no title: a genre, "lines", "title lost"
    ("句", "断句", "残句", "逸句", "失题", "阙题", "缺题", "诗", "五言", "七言", "五言诗", "七言诗", "绝句")
)


class PanelError(OptionError):
    """A panel that cannot be made or scored; the message names the option, file or line at fault."""

    def __init__(self, message: str, field: str = "panel"):
        super().__init__(message, field)


# ---------------------------------------------------------------- the human poems


@dataclass(frozen=True)
class Human:
    """A human poem of the split, and the request the model gets for it."""

    text: str  # as the corpus reader keeps it (normalised)
    lines: tuple[str, ...]  # as shown: a couplet (regular) or a 阕 (词) a line, ，。 only
    form: str  # 五绝 七绝 五律 七律, or the 词牌
    title: str = ""  # as shown and asked ("" where the kind has none)
    keywords: tuple[str, ...] = ()
    begin: str = ""
    format: int = 0  # the 词牌's format (0: a regular poem)
    author: str = ""
    source_title: str = ""  # the title in the corpus file, unchanged
    file: str = ""
    where: str = ""  # e.g. "poet.tang.0.json poem 12"

    def request(self) -> dict[str, Any]:
        """The begin and the `Poet.write` options that make the model's poem of this pair."""
        if self.format:
            return {"begin": "", "cipai": self.form, "format": self.format}
        out: dict[str, Any] = {"begin": self.begin, "form": self.form}
        if self.title:
            out["title"] = self.title
        if self.keywords:
            out["keywords"] = list(self.keywords)
        return out


@dataclass
class Source:
    poem: RawPoem  # normalised, as `build_poems` keeps it
    raw_title: str
    file: str
    split: int


def read_sources(data: Sequence[str | Path], cfg: DataConfig) -> list[Source]:
    """Every poem the corpus reader keeps (the checkpoint's filters), with its file, unchanged title and
    split (the checkpoint's: a hash of the text); a text found twice is kept once."""
    from tangshi.data import corpus

    out, seen = [], set()
    for path in corpus.find_files(list(data)):
        raw = corpus.read_file(path, "auto", [])
        titles = {p.where: p.title for p in raw}
        kept, _ = corpus.build_poems(raw, cfg)
        for p in kept:
            if p.content not in seen:
                seen.add(p.content)
                out.append(Source(p, titles[p.where], str(path), corpus.split_of(p.content, cfg)))
    return out


def shown_title(raw_title: str, script: str) -> str:
    """A title as readers see it: a series' index and count taken off (遣兴五首 二 -> 遣兴); "" where the
    title is no title (无题, 句, 七言: NOT_TITLES) or has more than one part (杂曲歌辞 少年行: a book's section)."""
    parts = raw_title.split()
    if len(parts) > 1 and _SERIES_INDEX.fullmatch(parts[-1]):
        parts.pop()
    if len(parts) != 1:
        return ""
    title = normalise(_SERIES_COUNT.sub("", parts[0]), script)
    return "" if title.startswith(("无题", "無題")) or title in NOT_TITLES else title


def plain(text: str) -> bool:
    """Only Han characters of GB 2312 (the common simplified set) and ，。！？；：、 in `text` (read in
    simplified): no variant forms (劒 鴈), rare characters, missing ones (□) or notes a reader would
    notice in one poem of a pair."""
    simple = to_script(text, "simplified")
    for ch in simple:
        if ch in LINE_BREAKS:
            continue
        if not regular.is_han(ch) or not gb2312(ch):
            return False
    return True


def couplets(lines: Sequence[str]) -> tuple[str, ...]:
    """A regular poem's lines shown a couplet a line: 一宿白云根，时经采麝村。"""
    return tuple(lines[i] + "，" + lines[i + 1] + "。" for i in range(0, len(lines) - 1, 2)) + (
        (lines[-1] + "。",) if len(lines) % 2 else ()
    )


def candidates(
    sources: Sequence[Source],
    kind: str,
    split: str,
    script: str,
    known: Any = None,
    max_title: int = MAX_TITLE,
) -> tuple[list[Human], Counter]:
    """The poems of `split` a pair can be made of, and how many were left out for each reason. `known`
    (a container of characters, None: all) is the model's vocabulary: a title, begin or keyword with a
    character it lacks is left out."""
    from tangshi.data.corpus import SPLITS

    k = SPLITS.index(split)
    pool = [s for s in sources if s.split == k]
    why: Counter = Counter()
    if kind == "ci":
        return _ci_candidates(pool, why), why
    counts = Counts.of([s.poem.content for s in sources if s.split == 0]) if kind == "keywords" else None
    out = []
    for s in pool:
        human = _regular_candidate(s, kind, script, known, max_title, counts, why)
        if human is not None:
            out.append(human)
    return out, why


def _regular_candidate(
    s: Source, kind: str, script: str, known: Any, max_title: int, counts: Counts | None, why: Counter
) -> Human | None:
    text = s.poem.content
    report = regular.check(text)
    if report.form == "other":
        why["not a regular form"] += 1
        return None
    if not plain(text):
        why["notes, variant or rare characters"] += 1
        return None
    base = Human(text, couplets(report.lines), report.form, author=s.poem.author, source_title=s.raw_title,
                 file=s.file, where=s.poem.where)  # fmt: skip
    if kind == "title":
        title = shown_title(s.raw_title, script)
        if not title or len(title) > max_title or not plain(title) or not all(map(regular.is_han, title)):
            why["no usable title"] += 1
            return None
        if known is not None and any(c not in known for c in title):
            why["title characters the model does not know"] += 1
            return None
        return dataclasses.replace(base, title=title)
    if kind == "begin":
        if known is not None and text[0] not in known:
            why["first character the model does not know"] += 1
            return None
        return dataclasses.replace(base, begin=text[0])
    words = keywords_of(report.lines, counts or Counts.of([]), known)
    if not words:
        why["no keyword in some couplet"] += 1
        return None
    return dataclasses.replace(base, keywords=words)


@dataclass
class Counts:
    """How often each character and each 2-character sequence inside a line occur in some texts."""

    chars: Counter
    pairs: Counter
    total: int  # characters

    @classmethod
    def of(cls, texts: Sequence[str]) -> Counts:
        chars: Counter = Counter()
        pairs: Counter = Counter()
        for t in texts:
            for line in regular.split_lines(t):
                chars.update(line)
                pairs.update(line[i : i + 2] for i in range(len(line) - 1))
        return cls(chars, pairs, max(1, sum(chars.values())))

    def pmi(self, word: str) -> float:
        """log(P(ab) / (P(a) P(b))) of a 2-character word."""
        return math.log(self.pairs[word] * self.total / (self.chars[word[0]] * self.chars[word[1]]))


def keywords_of(lines: Sequence[str], counts: Counts, known: Any = None) -> tuple[str, ...]:
    """One keyword a couplet, in order: of the couplet's 2-character sequences inside a line seen at least
    KEYWORD_MIN_COUNT times in the training split, the one whose characters go together most (highest
    pointwise mutual information: binomes, names, set phrases before chance neighbours; the first of
    equals); () where some couplet has none."""
    out: list[str] = []
    for c in range(0, len(lines) - 1, 2):
        words = [line[i : i + 2] for line in lines[c : c + 2] for i in range(len(line) - 1)]
        words = [w for w in words if counts.pairs[w] >= KEYWORD_MIN_COUNT and w not in out
                 and (known is None or all(x in known for x in w))]  # fmt: skip
        if not words:
            return ()
        out.append(max(words, key=counts.pmi))
    return tuple(out)


def _ci_candidates(pool: Sequence[Source], why: Counter) -> list[Human]:
    """词 of the TOP_CIPAI most common 词牌 of the split (ties by name) that fit a format of it clause by
    clause, shown a 阕 a line in that format's punctuation."""
    fitting: list[tuple[str, Source, cipai.CiReport]] = []
    for s in pool:
        name = s.poem.cipai.split("・")[0].strip()
        if not name or not cipai.known(name):
            why["no 词牌 of the 词谱"] += 1
            continue
        if not plain(s.poem.content):
            why["notes, variant, rare or missing characters"] += 1
            continue
        report = cipai.check(s.poem.content, name)
        if not report.format or not report.in_pattern:
            why["fits no format of its 词牌"] += 1
            continue
        fitting.append((cipai.find(name).name, s, report))
    counts = Counter(name for name, _, _ in fitting)
    top = {name for name, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CIPAI]}
    why["not of the most common 词牌"] += sum(1 for name, _, _ in fitting if name not in top)
    out = []
    for name, s, r in fitting:
        if name in top:
            out.append(Human(s.poem.content, tuple(r.parts), name, format=r.format, author=s.poem.author,
                             source_title=s.raw_title, file=s.file, where=s.poem.where))  # fmt: skip
    return out


# ---------------------------------------------------------------- the model's poems


@dataclass
class Item:
    number: int
    human: str  # "A" or "B": where the human poem is
    pair: Human
    model_lines: tuple[str, ...]  # as shown
    model_text: str  # as written
    seed: int
    failure: str | None = None  # a rule the model's poem could not keep (never shown)
    redrawn: list[dict[str, Any]] = field(default_factory=list)  # seeds whose poems had rare characters

    def shown(self, side: str, script: str) -> tuple[str, ...]:
        lines = self.pair.lines if side == self.human else self.model_lines
        return tuple(to_script(x, script) for x in lines)


def model_lines(text: str, pair: Human, fallback: Sequence[str]) -> tuple[str, ...]:
    """The model's poem shown as the human one is: couplets, or 阕 in the format's punctuation."""
    if pair.format:
        report = cipai.check(text, pair.form, pair.format)
        return tuple(report.parts) if report.format else tuple(fallback)
    lines = regular.split_lines(text)
    return couplets(lines) if lines else tuple(fallback)


def write_pair(poet: Poet, pair: Human, options: WriteOptions, seed: int) -> tuple[str, tuple[str, ...], str | None]:
    """(text, lines as shown, failure) of the model's poem for a pair, written with `seed`."""
    request = pair.request()
    begin = request.pop("begin")
    if "keywords" in request:
        request["keywords"] = tuple(request["keywords"])
    poem = poet.write(begin, options, num=1, seed=seed, **request)[0]
    text = normalise(poem.text, poet.ckpt.config.data.script)
    return text, model_lines(text, pair, poem.lines), poem.failure


# ---------------------------------------------------------------- making a panel


@dataclass
class Panel:
    kind: str
    seed: int
    split: str
    items: list[Item]
    options: WriteOptions
    data: list[str]
    checkpoint: dict[str, str]
    skipped: list[dict[str, str]] = field(default_factory=list)  # drawn, but the model could not take the request
    left_out: dict[str, int] = field(default_factory=dict)  # poems of the split no pair could be made of
    exclude: list[str] = field(default_factory=list)
    out: str = ""

    @property
    def criteria(self) -> tuple[str, ...]:
        return criteria_of(self.kind)


def criteria_of(kind: str) -> tuple[str, ...]:
    """Every criterion; relevance only where the readers see a title."""
    return CRITERIA if kind == "title" else tuple(c for c in CRITERIA if c != "relevance")


def check_request(kind: str, pairs: int, seed: int, split: str, options: WriteOptions) -> None:
    """Refuse what the panel cannot make, naming the option."""
    from tangshi.data.corpus import SPLITS

    if kind not in KINDS:
        raise PanelError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}", "kind")
    if not isinstance(pairs, int) or pairs < 1:
        raise PanelError(f"--pairs must be >= 1, got {pairs}", "pairs")
    if not isinstance(seed, int) or not 0 <= seed <= BY_NAME["seed"].le:
        raise PanelError(f"--seed must be >= 0 and <= {BY_NAME['seed'].le:g}, got {seed}", "seed")
    if split not in SPLITS:
        raise PanelError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}", "split")
    default = WriteOptions()
    for name in (*SET_BY_PANEL, *REFUSED):
        if getattr(options, name) != getattr(default, name):
            why = "is set for each pair from its human poem" if name in SET_BY_PANEL else "would fix every poem"
            raise PanelError(f"{BY_NAME[name].flag} {why}: leave it out of `panel make`", name)
    options.validate()


def panel_options(values: Mapping[str, Any]) -> WriteOptions:
    """The writing options among `values` (e.g. `vars(args)` of `panel make`), the names the panel sets
    or refuses left out (a `--seed` there is the sheet's)."""
    skip = (*SET_BY_PANEL, *REFUSED)
    return WriteOptions(**{k: v for k, v in values.items() if k in NAMES and k not in skip}).validate()


def check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise PanelError(f"--out {out}: a file, not a folder", "out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise PanelError(f"--out {out}: the folder is not empty (give --force to write over its panel)", "out")


def excluded_texts(folders: Sequence[str | Path]) -> set[str]:
    """The human poems of earlier panels (their key.json), which a fresh sheet leaves out."""
    return {item["source"]["text"] for f in folders for item in load_key(Path(f))["items"]}


def make_panel(
    data: Sequence[str | Path],
    out: str | Path,
    *,
    pairs: int,
    seed: int,
    kind: str = "title",
    split: str = "test",
    options: WriteOptions | None = None,
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    poet: Poet | None = None,
    exclude: Sequence[str | Path] = (),
    force: bool = False,
) -> Panel:
    """Draw `pairs` poems of `split`, have the model write one for each, write sheet.md, key.json and
    ratings.template.jsonl under `out`, and return the panel. The same seed (and checkpoint, corpus and
    options) makes the same files. The model is `checkpoint` (None: the bundled one) loaded on `device`
    once the request is checked, or `poet` when the caller has it loaded."""
    options = options or WriteOptions()
    check_request(kind, pairs, seed, split, options)
    out = Path(out)
    check_out(out, force)
    gone = excluded_texts(exclude)
    if poet is None:
        from tangshi.api import Poet

        poet = Poet.load(checkpoint, device=device)
    from tangshi.data.corpus import CorpusError

    cfg = poet.ckpt.config.data
    try:
        sources = read_sources(data, cfg)
    except CorpusError as e:
        raise PanelError(f"--data: {e}", "data") from None
    max_title = min(MAX_TITLE, cfg.max_title) if cfg.titles else MAX_TITLE
    pool, left_out = candidates(sources, kind, split, cfg.script, poet.vocab, max_title)
    pool = [h for h in pool if h.text not in gone]
    if len(pool) < pairs:
        raise PanelError(
            f"--pairs {pairs}: the {split} split of {', '.join(map(str, data))} has {len(pool)} usable poems for "
            f"--kind {kind}{f' once {len(gone)} of earlier panels are left out' if gone else ''} "
            f"(left out: {_reasons(left_out)})",
            "pairs",
        )
    panel = Panel(kind, seed, split, [], options, [str(d) for d in data], _checkpoint_id(poet, checkpoint),
                  left_out=dict(left_out), exclude=[str(e) for e in exclude], out=str(out))  # fmt: skip
    _draw(panel, poet, pool, pairs)
    save_panel(panel, out)
    return panel


def _reasons(why: Counter) -> str:
    return "; ".join(f"{n} {reason}" for reason, n in why.most_common()) or "none"


def _draw(panel: Panel, poet: Poet, pool: list[Human], pairs: int) -> None:
    """Shuffle the pool by the seed and write a poem for each poem drawn until `pairs` are made; the
    human poem is A in half the items (the odd one at random), in an order drawn from the seed."""
    rng = random.Random(panel.seed)
    order = sorted(pool, key=lambda h: (h.file, h.where))
    rng.shuffle(order)
    sides = ["A", "B"] * (pairs // 2) + ([rng.choice("AB")] if pairs % 2 else [])
    rng.shuffle(sides)
    for pair in order:
        if len(panel.items) == pairs:
            break
        try:
            written, redrawn = _write_plain(poet, pair, panel.options, rng)
        except OptionError as e:  # a keyword that fits no line, a title the model cannot take
            panel.skipped.append({"file": pair.file, "poem": pair.where, "why": str(e)})
            continue
        if written is None:
            why = f"the model's poems of {REDRAWS} seeds had characters outside GB 2312"
            panel.skipped.append({"file": pair.file, "poem": pair.where, "why": why, "redrawn": redrawn})
            continue
        text, lines, failure, seed = written
        n = len(panel.items)
        panel.items.append(Item(n + 1, sides[n], pair, lines, text, seed, failure, redrawn))
    if len(panel.items) < pairs:
        raise PanelError(
            f"--pairs {pairs}: only {len(panel.items)} pairs could be made ({len(panel.skipped)} poems drawn were "
            f"skipped, e.g. {panel.skipped[0]['why'] if panel.skipped else '-'})",
            "pairs",
        )


def _write_plain(poet: Poet, pair: Human, options: WriteOptions, rng: random.Random) -> tuple[Any, list]:
    """((text, lines, failure, seed) of the model's poem for a pair, the seeds tried before it and the
    characters that ruled them out): written again with the next seed drawn while it has a character
    the human poems may not have (outside GB 2312: a variant form such as 疎 or 劒 would tell the
    readers which poem is the model's); (None, the seeds tried) after REDRAWS seeds."""
    redrawn: list[dict[str, Any]] = []
    for _ in range(REDRAWS):
        seed = rng.randrange(2**30)
        text, lines, failure = write_pair(poet, pair, options, seed)
        odd = "".join(c for c in dict.fromkeys("".join(lines)) if not plain(c))
        if not odd:
            return (text, lines, failure, seed), redrawn
        redrawn.append({"seed": seed, "characters": odd})
    return None, redrawn


def _checkpoint_id(poet: Poet, checkpoint: str | Path | None) -> dict[str, str]:
    folder = Path(poet.ckpt.path)
    weights = folder / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else ""
    return {"path": "bundled" if checkpoint is None else str(checkpoint), "model_sha256": digest}


# ---------------------------------------------------------------- the files


def command_line(panel: Panel) -> str:
    """The `tangshi panel make` command that makes this panel again."""
    args = ["tangshi", "panel", "make", "--data", *panel.data, "--split", panel.split, "--pairs",
            str(len(panel.items)), "--seed", str(panel.seed), "--kind", panel.kind]  # fmt: skip
    if panel.checkpoint["path"] != "bundled":
        args += ["--checkpoint", panel.checkpoint["path"]]
    for e in panel.exclude:
        args += ["--exclude", e]
    default = WriteOptions()
    for spec in BY_NAME.values():
        value = getattr(panel.options, spec.name)
        if value == getattr(default, spec.name):
            continue
        if spec.kind is bool:
            args.append(spec.flag)
        else:
            args += [spec.flag, *(value if isinstance(value, tuple) else [str(value)])]
    return shlex.join([*args, "--out", panel.out])


def sheet_text(panel: Panel) -> str:
    """The readers' instructions, then every item: its heading, title or keywords, form, A and B."""
    script = panel.options.script
    parts = [_instructions(panel)]
    for item in panel.items:
        parts.append(f"---\n\n## {item.number}\n\n{_heading(panel.kind, item.pair, script)}\n")
        for side in "AB":
            poem = "\n".join("    " + line for line in item.shown(side, script))
            parts.append(f"**{side}**\n\n{poem}\n")
    return "\n".join(parts)


def _heading(kind: str, pair: Human, script: str) -> str:
    if kind == "ci":
        return f"词牌: {to_script(pair.form, script)}"
    form = f"Form 体裁: {to_script(pair.form, script)}"
    if kind == "title":
        return f"Title 题目: {to_script(pair.title, script)} · {form}"
    if kind == "keywords":
        return f"Keywords 关键词: {' '.join(to_script(k, script) for k in pair.keywords)} · {form}"
    return form


_INTROS = {
    "title": "Each item gives a title and a form, then two poems, A and B, written for that title in that form.",
    "begin": "Each item gives a form, then two poems, A and B, in that form, which begin with the same character.",
    "keywords": "Each item gives keywords and a form, then two poems, A and B, in that form, which hold those "
    "keywords in that order.",
    "ci": "Each item gives a 词牌, then two 词, A and B, written to it.",
}


def _instructions(panel: Panel) -> str:
    criteria = "\n".join(f"- **{c} {NAMES_ZH[c]}** — {DEFINITIONS[c]}." for c in panel.criteria)
    n = len(panel.items)
    return f"""# Reader panel

This sheet has {n} items. {_INTROS[panel.kind]}

**Exactly one poem of each pair is by a poet**; the other was written by a computer program. Which of
the two is A and which is B was decided at random for each item.

Rate every poem on each criterion with a whole number from 1 (poor) to 5 (excellent):

{criteria}

Then pick the poem you think is by the poet: A or B (pick one even when unsure).

- Keeping the form (line lengths, rhyme, tones) is no merit by itself.
- Do not assume every poem is bad: read each one as you would any poem, and use the whole scale.
- Every poem is shown the same way: simplified characters, and only ， and 。 as punctuation.
- Work alone: do not discuss the poems with anyone, or look them up, until you have handed in your ratings.

How to record: make a copy of `{TEMPLATE}` named after you. It has one line an item. On each line,
replace every `null` under "A" and "B" by your rating of that poem (1 to 5), and the `null` after
"human" by "A" or "B". Keep the rest of the line as it is; you may add `"comment": "..."` to a line.
Hand in that file only.
"""


def template_text(panel: Panel) -> str:
    empty = {c: None for c in panel.criteria}
    return "".join(
        json.dumps({"item": item.number, "A": empty, "B": empty, "human": None}, ensure_ascii=False) + "\n"
        for item in panel.items
    )


def key_data(panel: Panel) -> dict[str, Any]:
    script = panel.options.script
    items = []
    for item in panel.items:
        p = item.pair
        request = p.request() | {"seed": item.seed, "num": 1}
        items.append({
            "item": item.number,
            "human": item.human,
            "A": "\n".join(item.shown("A", script)),
            "B": "\n".join(item.shown("B", script)),
            "title": p.title,
            "form": p.form,
            "source": {"author": p.author, "title": p.source_title, "file": p.file, "poem": p.where, "text": p.text},
            "model": {"request": request, "text": item.model_text, "failure": item.failure, "redrawn": item.redrawn},
        })  # fmt: skip
    return {
        "tangshi_version": __version__,
        "command": command_line(panel),
        "kind": panel.kind,
        "seed": panel.seed,
        "split": panel.split,
        "data": panel.data,
        "checkpoint": panel.checkpoint,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(panel.options).items()},
        "criteria": list(panel.criteria),
        "selection": {
            "left_out": panel.left_out,
            "skipped": panel.skipped,
            "exclude": panel.exclude,
            "model_redrawn": sum(len(i.redrawn) for i in panel.items),
            "human_in_A": sum(i.human == "A" for i in panel.items),
        },
        "items": items,
    }


def save_panel(panel: Panel, out: Path) -> None:
    """sheet.md, ratings.template.jsonl and key.json, each written whole or not at all."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / SHEET, sheet_text(panel))
    write_atomic(out / TEMPLATE, template_text(panel))
    write_atomic(out / KEY, json.dumps(key_data(panel), ensure_ascii=False, indent=1) + "\n")


def write_atomic(path: Path, text: str) -> None:
    """`text` into `path` through a temporary file in the same folder and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_key(folder: Path) -> dict[str, Any]:
    path = folder / KEY
    try:
        key = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise PanelError(f"{folder}: no {KEY} (a folder made by `tangshi panel make`)", "panel") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PanelError(f"{path}: cannot read ({e})", "panel") from None
    if not isinstance(key, dict) or not isinstance(key.get("items"), list) or "criteria" not in key:
        raise PanelError(f"{path}: not a panel key (no items or criteria)", "panel")
    return key


# ---------------------------------------------------------------- ratings


@dataclass
class Rating:
    model: dict[str, int]  # criterion -> 1..5
    human: dict[str, int]
    picked_human: bool
    pick: str  # "A" or "B"


MAX_SHOWN = 12  # problems of one file shown in a message


def read_ratings(path: Path, key: dict[str, Any]) -> dict[int, Rating]:
    """One reader's ratings by item; a PanelError lists every problem, each with the file and line."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise PanelError(f"{path}: no such file", "ratings") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PanelError(f"{path}: cannot read ({e})", "ratings") from None
    sides = {item["item"]: item["human"] for item in key["items"]}
    criteria = list(key["criteria"])
    ratings: dict[int, Rating] = {}
    lines_of: dict[int, int] = {}
    problems: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        errors, item, rating = _parse_line(line, sides, criteria)
        if item is not None and item in lines_of:
            errors.insert(0, f"item {item} is rated twice (first on line {lines_of[item]})")
        problems += [f"{path} line {n}: {e}" for e in errors]
        if not errors and item is not None:
            ratings[item], lines_of[item] = rating, n
        elif item is not None:
            lines_of.setdefault(item, n)
    missing = [i for i in sides if i not in lines_of]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", …" if len(missing) > 10 else "")
        problems.append(f"{path}: {len(missing)} of {len(sides)} items not rated (items {shown})")
    if problems:
        more = f"\n  … and {len(problems) - MAX_SHOWN} more" if len(problems) > MAX_SHOWN else ""
        raise PanelError("bad ratings:\n  " + "\n  ".join(problems[:MAX_SHOWN]) + more, "ratings")
    return ratings


def _parse_line(line: str, sides: dict[int, str], criteria: list[str]) -> tuple[list[str], int | None, Any]:
    """(problems, item number, Rating) of one line of a ratings file."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        return [f"not JSON ({e.msg} at column {e.colno})"], None, None
    if not isinstance(row, dict):
        return [f"not a JSON object: {line.strip()[:40]}"], None, None
    item = row.get("item")
    if not isinstance(item, int) or isinstance(item, bool):
        return [f'"item" must be an item number, got {item!r}'], None, None
    if item not in sides:
        return [f"item {item} is not on the sheet (items {min(sides)} to {max(sides)})"], item, None
    errors = [f'unknown field "{k}" (fields: item, A, B, human, comment)'
              for k in row if k not in ("item", "A", "B", "human", "comment")]  # fmt: skip
    scores = {}
    for side in "AB":
        got, side_errors = _scores(row.get(side), side, criteria)
        scores[side] = got
        errors += side_errors
    pick = row.get("human")
    pick = pick.strip().upper() if isinstance(pick, str) else pick
    if pick not in ("A", "B"):
        errors.append(f'"human" must be "A" or "B", got {row.get("human")!r}')
    if errors:
        return errors, item, None
    human = sides[item]
    model = "B" if human == "A" else "A"
    return [], item, Rating(scores[model], scores[human], pick == human, pick)


def _scores(ratings: Any, side: str, criteria: list[str]) -> tuple[dict[str, int], list[str]]:
    """One poem's ratings; relevance given where the sheet has no title is ignored."""
    if not isinstance(ratings, dict):
        return {}, [f'"{side}" must be an object of ratings ({", ".join(criteria)}), got {ratings!r}']
    errors, out = [], {}
    for c in criteria:
        v = ratings.get(c)
        if c not in ratings:
            errors.append(f"{side}: no {c} rating")
        elif v is None:
            errors.append(f"{side} {c}: not rated (null)")
        elif not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 5:
            errors.append(f"{side} {c} must be an integer from 1 to 5, got {v!r}")
        else:
            out[c] = v
    for c in ratings:
        if c not in criteria and c not in CRITERIA:
            errors.append(f'{side}: unknown criterion "{c}" (the sheet\'s: {", ".join(criteria)})')
    return out, errors


# ---------------------------------------------------------------- statistics


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial share (`successes` may be fractional: a mean of picks)."""
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap(
    model_ratings: Sequence[float], human_ratings: Sequence[float], resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Means of the model's and the human ratings (one value an item each) and their ratio, each with a
    95 % percentile bootstrap interval over items (the same resamples for all three)."""
    import numpy as np

    model, human = np.asarray(model_ratings, dtype=float), np.asarray(human_ratings, dtype=float)  # (N,)
    n = len(model)
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))  # (R, N)
    m, h = model[idx].mean(axis=1), human[idx].mean(axis=1)  # (R,)
    out = {}
    for name, point, draws in (("model", model.mean(), m), ("human", human.mean(), h),
                               ("ratio", model.mean() / human.mean(), m / h)):  # fmt: skip
        low, high = np.percentile(draws, [2.5, 97.5])
        out[name] = {"mean": float(point), "low": float(low), "high": float(high)}
    return out


def fleiss_kappa(picks: Sequence[Sequence[str]]) -> float | None:
    """Fleiss' kappa of the readers' picks (one list of "A"/"B" an item, one entry a reader); None where
    chance agreement is 1 (every pick the same)."""
    n_readers = len(picks[0])
    agree = [(sum(p.count(s) ** 2 for s in "AB") - n_readers) / (n_readers * (n_readers - 1)) for p in picks]
    shares = [sum(p.count(s) for p in picks) / (len(picks) * n_readers) for s in "AB"]
    chance = sum(s * s for s in shares)
    if chance >= 1:
        return None
    return (sum(agree) / len(agree) - chance) / (1 - chance)


def pick_agreement(picks: Sequence[Sequence[str]]) -> float:
    """The share of pairs of readers who picked the same poem, averaged over items."""
    n = len(picks[0])
    return sum((sum(p.count(s) ** 2 for s in "AB") - n) / (n * (n - 1)) for p in picks) / len(picks)


def _summary(ratings: Sequence[dict[int, Rating]], items: list[int], criteria: list[str]) -> dict[str, Any]:
    """Means with intervals (each item's mean over the readers, resampled by item) and the human-picked
    share: with one reader, k of n and its Wilson interval; pooled, the share over every pick and the
    Wilson interval with n = items (each item counted once: readers who read the same items are not
    independent draws)."""
    out: dict[str, Any] = {"criteria": {}}
    for c in criteria:
        model = [sum(r[i].model[c] for r in ratings) / len(ratings) for i in items]
        human = [sum(r[i].human[c] for r in ratings) / len(ratings) for i in items]
        out["criteria"][c] = bootstrap(model, human)
    picked = sum(r[i].picked_human for r in ratings for i in items)
    share = picked / (len(items) * len(ratings))
    low, high = wilson(share * len(items), len(items))
    out["picked"] = {"human": picked, "picks": len(items) * len(ratings), "share": share, "low": low, "high": high}
    return out


def title_share(key: dict[str, Any]) -> dict[str, Any] | None:
    """The share of the poems' characters that are characters of their title, model's against human,
    over the sheet's items (None where the sheet has no titles)."""
    counts = {"model": [0, 0], "human": [0, 0]}
    titled = [item for item in key["items"] if item.get("title")]
    if not titled:
        return None
    for item in titled:
        title = set(item["title"])
        for side in "AB":
            who = "human" if side == item["human"] else "model"
            chars = [c for c in item[side] if regular.is_han(c)]
            counts[who][0] += sum(c in title for c in chars)
            counts[who][1] += len(chars)
    return {who: a / b if b else 0.0 for who, (a, b) in counts.items()} | {"items": len(titled)}


def score_panel(folder: str | Path, ratings: Sequence[str | Path]) -> dict[str, Any]:
    """Each reader's and the pooled scores of a panel (see the module's docstring); a PanelError names
    the file and line of every bad rating."""
    folder = Path(folder)
    key = load_key(folder)
    if not ratings:
        raise PanelError("give at least one ratings file (one a reader)", "ratings")
    read, problems = [], []
    for path in map(Path, ratings):
        try:
            read.append((path, read_ratings(path, key)))
        except PanelError as e:
            problems.append(str(e).removeprefix("bad ratings:\n  "))
    if problems:
        raise PanelError("bad ratings:\n  " + "\n  ".join(problems), "ratings")
    items = [item["item"] for item in key["items"]]
    criteria = list(key["criteria"])
    names = _reader_names([p for p, _ in read])
    readers = [{"reader": name, "file": str(p)} | _summary([r], items, criteria)
               for name, (p, r) in zip(names, read, strict=True)]  # fmt: skip
    pooled = _summary([r for _, r in read], items, criteria) | {"readers": len(read)}
    if len(read) > 1:
        picks = [[r[i].pick for _, r in read] for i in items]
        pooled["agreement"] = {"pick": pick_agreement(picks), "fleiss_kappa": fleiss_kappa(picks)}
    return {
        "panel": str(folder),
        "kind": key["kind"],
        "seed": key["seed"],
        "items": len(items),
        "criteria": criteria,
        "intervals": {
            "level": 0.95,
            "means": f"percentile bootstrap over items ({RESAMPLES} resamples, seed 0); pooled: each item's mean "
            "over the readers, resampled by item",
            "picked": "Wilson score interval; pooled: n = items (readers of the same items are not independent)",
        },
        "readers": readers,
        "pooled": pooled,
        "title_characters": title_share(key),
    }


def _reader_names(paths: Sequence[Path]) -> list[str]:
    stems = [p.stem for p in paths]
    return stems if len(set(stems)) == len(stems) else [str(p) for p in paths]


def format_report(report: dict[str, Any]) -> str:
    """`score_panel`'s report as the text `tangshi panel score` prints."""
    names = ", ".join(r["reader"] for r in report["readers"])
    out = [f"panel {report['panel']}: kind {report['kind']}, seed {report['seed']}, {report['items']} items; "
           f"readers: {names}",
           f"95 % intervals: means and model/human by a {report['intervals']['means']};",
           f"human picked: {report['intervals']['picked']}"]  # fmt: skip
    for r in report["readers"]:
        out += ["", f"reader {r['reader']} ({r['file']})", *_table(r)]
    if len(report["readers"]) > 1:
        pooled = report["pooled"]
        out += ["", f"pooled, {pooled['readers']} readers", *_table(pooled)]
        agree = pooled["agreement"]
        kappa = "undefined (every pick the same)" if agree["fleiss_kappa"] is None else f"{agree['fleiss_kappa']:.2f}"
        out.append(f"  agreement on the pick: {100 * agree['pick']:.1f} % of pairs of readers; Fleiss' kappa {kappa}")
    share = report["title_characters"]
    if share is not None:
        out += ["", f"title characters (share of a poem's characters found in its title, {share['items']} items): "
                    f"model {100 * share['model']:.1f} %, human {100 * share['human']:.1f} %"]  # fmt: skip
    return "\n".join(out)


def _table(summary: dict[str, Any]) -> list[str]:
    def cell(v: dict[str, float]) -> str:
        return f"{v['mean']:.2f} [{v['low']:.2f}, {v['high']:.2f}]"

    rows = [f"  {'criterion':<12}{'model':<20}{'human':<20}model/human"]
    for c, v in summary["criteria"].items():
        rows.append(f"  {c:<12}{cell(v['model']):<20}{cell(v['human']):<20}{cell(v['ratio'])}")
    p = summary["picked"]
    rows.append(f"  human picked {p['human']} of {p['picks']}: {100 * p['share']:.1f} % "
                f"[{100 * p['low']:.1f}, {100 * p['high']:.1f}]")  # fmt: skip
    return rows


# ---------------------------------------------------------------- settings compared by the same readers


def compare_panels(
    folders: Sequence[str | Path], readers: Sequence[Sequence[str | Path]], resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """Settings compared by the same readers: one panel a setting (of one kind, different human poems),
    each reader rating every panel (`readers[k]`: reader k's files, in the panels' order). Readers differ
    in how severe they are by more than a sheet's items vary (docs/reader-panel.md), so each setting's
    difference from the first is taken reader by reader, then averaged; its 95 % interval is a
    percentile bootstrap resampling readers, and each panel's items within a resample. A PanelError
    names the panel, reader or file and line at fault."""
    import numpy as np

    folders = [Path(f) for f in folders]
    if len(folders) < 2:
        raise PanelError("compare needs at least 2 panels (one a setting)", "panel")
    if not readers:
        raise PanelError("give each reader's ratings: --reader FILE... (one file a panel, in their order)", "ratings")
    keys = [load_key(f) for f in folders]
    kinds = {k["kind"] for k in keys}
    if len(kinds) > 1:
        shown = ", ".join(f"{f} ({k['kind']})" for f, k in zip(folders, keys, strict=True))
        raise PanelError(f"the panels compared must be of one kind, got {shown}", "panel")
    criteria = [c for c in keys[0]["criteria"] if all(c in k["criteria"] for k in keys)]
    problems, read = [], []
    for n, files in enumerate(readers, 1):
        if len(files) != len(folders):
            problems.append(f"--reader {n} gives {len(files)} files for {len(folders)} panels (one a panel, in order)")
            continue
        row = []
        for path, key in zip(map(Path, files), keys, strict=True):
            try:
                row.append(read_ratings(path, key))
            except PanelError as e:
                problems.append(str(e).removeprefix("bad ratings:\n  "))
        read.append(row)
    if problems:
        raise PanelError("bad ratings:\n  " + "\n  ".join(problems), "ratings")
    names = _compare_names([[Path(f) for f in files] for files in readers])
    items = [[item["item"] for item in k["items"]] for k in keys]
    # scores[p][c]: (readers, items) arrays of the model's and the human ratings on panel p
    scores = [
        {c: (np.array([[read[r][p][i].model[c] for i in items[p]] for r in range(len(read))], dtype=float),
             np.array([[read[r][p][i].human[c] for i in items[p]] for r in range(len(read))], dtype=float))
         for c in criteria}
        for p in range(len(keys))
    ]  # fmt: skip
    rng = np.random.default_rng(seed)
    who = rng.integers(0, len(read), size=(resamples, len(read)))  # readers drawn, (R, readers)
    which = [rng.integers(0, len(it), size=(resamples, len(it))) for it in items]  # each panel's items drawn
    base = {c: (scores[0][c][0].mean(axis=1), _drawn_means(scores[0][c][0], who, which[0])) for c in criteria}
    out_panels = []
    for p, (folder, key) in enumerate(zip(folders, keys, strict=True)):
        entry: dict[str, Any] = {"panel": str(folder), "seed": key["seed"], "command": key.get("command", ""),
                                 "items": len(items[p]), "criteria": {}}  # fmt: skip
        for c in criteria:
            model, human = scores[p][c]
            per_reader = model.mean(axis=1)
            got = {"model": float(per_reader.mean()), "human": float(human.mean()),
                   "readers": [float(v) for v in per_reader]}  # fmt: skip
            if p:
                diff = per_reader - base[c][0]
                draws = _drawn_means(model, who, which[p]) - base[c][1]  # (R,)
                low, high = np.percentile(draws, [2.5, 97.5])
                got["difference"] = {"mean": float(diff.mean()), "low": float(low), "high": float(high),
                                     "readers": [float(v) for v in diff]}  # fmt: skip
            entry["criteria"][c] = got
        picks = sum(read[r][p][i].picked_human for r in range(len(read)) for i in items[p])
        entry["picked"] = {"human": picks, "picks": len(read) * len(items[p])}
        entry["title_characters"] = title_share(key)
        out_panels.append(entry)
    return {
        "kind": keys[0]["kind"],
        "readers": names,
        "criteria": criteria,
        "intervals": f"95 %: percentile bootstrap ({resamples} resamples, seed {seed}) over readers and, within "
        "a resample, each panel's items; a difference is taken reader by reader",
        "panels": out_panels,
    }


def _drawn_means(ratings: Any, who: Any, which: Any) -> Any:
    """(R,) the mean over resampled readers of each one's mean over resampled items: ratings (readers,
    items), who (R, readers), which (R, items)."""
    import numpy as np

    per_reader = ratings[:, which].mean(axis=2).T  # (readers, R, items) -> (R, readers)
    return np.take_along_axis(per_reader, who, axis=1).mean(axis=1)


def _compare_names(files: list[list[Path]]) -> list[str]:
    """Each reader's name: the folder their files share, where that tells the readers apart."""
    names = []
    for row in files:
        try:
            common = Path(os.path.commonpath([str(p.resolve()) for p in row]))
        except ValueError:
            common = Path()
        names.append(common.name if len(row) > 1 else row[0].stem)
    return names if len(set(names)) == len(names) and all(names) else [f"reader {k}" for k in range(1, len(files) + 1)]


def format_comparison(report: dict[str, Any]) -> str:
    """`compare_panels`'s report as the text `tangshi panel compare` prints."""
    out = [f"{len(report['panels'])} panels of kind {report['kind']}, each read by: {', '.join(report['readers'])}",
           report["intervals"]]  # fmt: skip
    for k, p in enumerate(report["panels"]):
        out += ["", f"panel {k + 1}: {p['panel']} (seed {p['seed']}, {p['items']} items)", f"  {p['command']}"]
        head = f"  {'criterion':<12}{'model':>7}{'human':>7}"
        out.append(head + ("   model minus panel 1 [95 %]   by reader" if k else ""))
        for c, v in p["criteria"].items():
            row = f"  {c:<12}{v['model']:>7.2f}{v['human']:>7.2f}"
            if k:
                d = v["difference"]
                each = " ".join(f"{x:+.2f}" for x in d["readers"])
                row += f"   {d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]".ljust(31) + each
            out.append(row)
        pk = p["picked"]
        out.append(f"  human picked {pk['human']} of {pk['picks']}")
        if p["title_characters"] is not None:
            t = p["title_characters"]
            out.append(f"  title characters: model {100 * t['model']:.1f} %, human {100 * t['human']:.1f} %")
    return "\n".join(out)
