"""Characters for a broken place of a person's poem, ranked by the corpus statistics beside a checkpoint
(`words.safetensors`), without torch: what `tangshi check` suggests by default.

For a place that breaks a rule (`regular.Problem`), the candidates are the characters that keep the rule
(the 平 or 仄 the template needs there, or a 平 reading in the rhyme group) and are nowhere else in the
poem, each ranked by how well it goes with the poem in the corpus:
- the 2-character words it makes with the character before and the one after, where a word may stand
  (`WORD_STARTS`: 5-character lines read 2+2+1 or 2+1+2): log of the word's count in the training
  poems; the words are the corpus's collocations (`tangshi.data.words`: 20 occurrences or more, PMI of
  1.5 or more, mostly at a word boundary), so a character that makes none gets nothing here;
- `ASSOC` for each of the poem's other characters and words it goes with: one of the other's
  neighbours in a poem (the word table's best 16 by PPMI of co-occurring in a poem) or the other among
  its own; the characters that carry no subject (`STOP`: 之, 不, 无...) go with everything and count
  for nothing here;
- `FREQ` times the log of its own count, which orders the rest by how common they are.
The candidates come from those words and neighbour lists and the `COMMON` commonest characters; a
character seen fewer than `MIN_COUNT` times is left out. The readings are the 平水韵 table's
(`regular.table_readings`): a character the table lacks is not suggested.

The model's ranking (the likelihood of the whole poem with each candidate in place) is `Poet.check`'s
(`tangshi check --rank model`): it imports torch and loads the model, 1.5 s or more on a small CPU.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
import sys
from array import array
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from tangshi.data.text import STOP, WORD_STARTS
from tangshi.prosody import regular

FILE = "words.safetensors"  # tangshi.data.words.FILE (that module imports torch)
COMMON = 500
MIN_COUNT = 20
FREQ = 0.2
ASSOC = 0.5
# the tensors read, their safetensors dtype and `array` type code
TENSORS = {"counts": ("I32", "i"), "poem_sizes": ("U8", "B"), "poem_ids": ("U16", "H")}


class StatsError(ValueError):
    """words.safetensors is missing or unreadable."""


@dataclass(eq=False)
class CorpusStats:
    """The counts of characters and 2-character words and each word's neighbours in a poem, read from
    `words.safetensors` with the standard library (in 0.055 s; numpy's import alone would add 0.04–0.09 s)."""

    counts: dict[str, int]
    index: dict[str, int]
    words: list[str]
    offsets: list[int]  # word i's poem neighbours are ids[offsets[i]:offsets[i + 1]]
    ids: array
    by_first: dict[str, list[str]]  # first character -> the 2-character words it starts
    by_second: dict[str, list[str]]
    common: list[str]
    _near: dict[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path) -> CorpusStats:
        return _load(Path(folder).resolve())

    def near(self, word: str) -> frozenset[str]:
        """A word's neighbours in a poem (its best 16 by PPMI), as a set; empty for a word not in the list."""
        got = self._near.get(word)
        if got is None:
            i = self.index.get(word)
            ids = () if i is None else self.ids[self.offsets[i] : self.offsets[i + 1]]
            got = self._near[word] = frozenset(self.words[j] for j in ids)
        return got


def _read(path: Path) -> tuple[dict[str, str], dict[str, array]]:
    """The metadata and the `TENSORS` of a safetensors file (an 8-byte little-endian header length, a JSON
    header naming each tensor's dtype, shape and byte range, then the data)."""
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100_000_000:
            raise ValueError(f"a header of {n} bytes")
        header = json.loads(f.read(n))
        out = {}
        for name, (dtype, code) in TENSORS.items():
            t = header[name]
            a, b = t["data_offsets"]
            if t["dtype"] != dtype or len(t["shape"]) != 1:
                raise ValueError(f"{name} is {t['dtype']} {t['shape']}, not a {dtype} vector")
            f.seek(8 + n + a)
            data = array(code, f.read(b - a))
            if len(data) != t["shape"][0]:
                raise ValueError(f"{name} holds {len(data)} values, not {t['shape'][0]}")
            if sys.byteorder == "big":
                data.byteswap()
            out[name] = data
    return header.get("__metadata__") or {}, out


@cache
def _load(folder: Path) -> CorpusStats:
    path = folder / FILE
    if not path.is_file():
        raise StatsError(f"{path}: no word statistics to rank suggestions by (give --rank model)")
    try:
        metadata, tensors = _read(path)
        words = json.loads(metadata["words"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StatsError(f"{path}: unreadable word statistics ({e})") from None
    counts, sizes, ids = tensors["counts"], tensors["poem_sizes"], tensors["poem_ids"]
    offsets = [0, *itertools.accumulate(sizes)]
    if len(counts) != len(words) or len(sizes) != len(words) or offsets[-1] != len(ids) or max(ids) >= len(words):
        raise StatsError(f"{path}: the word list, counts and neighbour table do not match")
    by_first: dict[str, list[str]] = {}
    by_second: dict[str, list[str]] = {}
    for w in words:
        if len(w) == 2:
            by_first.setdefault(w[0], []).append(w)
            by_second.setdefault(w[1], []).append(w)
    count = dict(zip(words, counts, strict=True))
    common = sorted((w for w in words if len(w) == 1), key=lambda w: -count[w])[:COMMON]
    index = {w: i for i, w in enumerate(words)}
    return CorpusStats(count, index, words, offsets, ids, by_first, by_second, common)


def keeps(ch: str, problem: regular.Problem) -> bool:
    """Whether `ch` keeps the rule `problem` breaks (by the 平水韵 table's readings)."""
    rs = regular.table_readings(ch)
    if problem.rule == "rhyme":
        return any(r.tone == regular.PING and r.group == problem.need for r in rs)
    return any(r.tone == problem.need for r in rs)


def suggest(stats: CorpusStats, lines: list[str], problem: regular.Problem, k: int) -> list[dict[str, object]]:
    """Up to k characters for `problem`'s place (1-based line and place) that keep its rule and are not
    elsewhere in the poem, best first, each with its score (higher is better)."""
    if k <= 0 or not problem.place or problem.rule == "form":
        return []
    line = lines[problem.line - 1]
    j = problem.place - 1
    starts = WORD_STARTS.get(len(line), range(len(line)))
    before = line[j - 1] if j > 0 and j - 1 in starts else ""  # word (before, c)
    after = line[j + 1] if j + 1 < len(line) and j in starts else ""  # word (c, after)
    used = {ch for ln in lines for ch in ln}
    # the poem's characters and the 2-character words at word starts, the place's own character left out
    context = [
        ch
        for i, ln in enumerate(lines)
        for p, ch in enumerate(ln)
        if (i, p) != (problem.line - 1, j) and ch not in STOP
    ]
    for i, ln in enumerate(lines):
        for s in WORD_STARTS.get(len(ln), ()):
            w = ln[s : s + 2]
            if len(w) == 2 and w in stats.index and not (i == problem.line - 1 and s <= j <= s + 1):
                context.append(w)
    near = [stats.near(w) for w in context]

    pool: set[str] = set(stats.common)
    pool.update(w[1] for w in stats.by_first.get(before, ()))
    pool.update(w[0] for w in stats.by_second.get(after, ()))
    for row in near:
        pool.update(w for w in row if len(w) == 1)
    scored = []
    for c in pool:
        n = stats.counts.get(c, 0)
        if c in used or n < MIN_COUNT or not regular.is_han(c) or not keeps(c, problem):
            continue
        score = FREQ * math.log(n)
        for w in (before + c if before else "", c + after if after else ""):
            if w in stats.index:
                score += math.log(stats.counts[w])
        if c not in STOP:
            own = stats.near(c)
            score += ASSOC * sum(1 for w, row in zip(context, near, strict=True) if w in own or c in row)
        scored.append((score, c))
    scored.sort(key=lambda p: (-p[0], p[1]))
    return [{"char": c, "score": round(s, 4)} for s, c in scored[:k]]
