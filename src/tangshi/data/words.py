"""Corpus word statistics for plans and steering: words, their associations, the title index.

`WordStats` holds statistics made from the train split: a word list and, for each word, the words
most associated with it; it is built by `WordStats.of_texts` and saved beside a checkpoint as
`words.safetensors` (`FILE`). The planner (`tangshi.generation.planner`) reads it to give each line
a keyword; the steering reads its topic, manner and next-line tables.

Words are single characters and 2-character words. A 2-character word is a character bigram inside
a line that is
- frequent: at least `min_count` (20) occurrences, so that its associations rest on data;
- a collocation: PMI (natural log) of at least `min_pmi` (1.5) between its two characters, i.e.
  at least 4.5 times as frequent as chance; the bigrams with a PMI between 0 and 1.5 are mostly
  pieces of two words (是不, 处去, 能得);
- mostly at a word boundary of the line (`min_boundary`, 70 % of its occurrences): 5-character
  lines read 2+2+1 or 2+1+2, so words start at characters 1, 3 or 4; 7-character lines at 1, 3,
  5 or 6. Bigrams across the caesura (寄相 of 寄相思, 后相) are left out.
Association is the positive PMI of co-occurrence within a poem (its words as a set):
PPMI(a, b) = max(0, log P(a, b) / (P(a) P_α(b))) with the context distribution smoothed (α = 0.75,
Levy et al. 2015) so that rare words do not dominate, pairs seen in fewer than `min_cooc` (10)
poems left out, and words that share a character with a word left out of its neighbours (they
co-occur by construction, and a poem does not repeat a character). A second table relates a
title's words to the words of the poems under such titles (pairs seen 10 times or more): folding
titles into the poems' own sets instead lets title formulas (奉和, 判官, 十首) crowd out what poems
say. Each word keeps its `k` (30) best neighbours in each table, a sparse table: about 1.5 MB for the
Tang corpus in `words.safetensors` (word list and settings in the file's metadata, never pickle).
The title index (`Kin`: each training poem's title and words, 3.1 MB for the Tang poems) is saved
in the same file.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections import Counter
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from tangshi.data.text import STOP, normalise, split_at_breaks, word_starts
from tangshi.data.vocab import damaged, write_atomic
from tangshi.prosody import regular

FILE = "words.safetensors"
VERSION = 2


_NUMERAL = "一二三四五六七八九十百千两〇零"
# what a title says about its poem's place in a series or its length, not what the poem is about
_SERIES = re.compile(rf"[（(【\[][^）)】\]]*[）)】\]]|其[{_NUMERAL}]+|第[{_NUMERAL}]+|[{_NUMERAL}]+[首章篇韵则]")
_TRAILING = re.compile(rf"[{_NUMERAL}]+$")


def subject(title: str) -> str:
    """A title without what numbers the poem in its series or counts it: notes in brackets (（并序）),
    其二, 第五, 八首, 十韵, and a number at its end (宫词一百首八十八 → 宫词, 元日楼前观仗一 → 元日楼前观仗).
    Numbers inside it stay (九日登高, 十五夜望月)."""
    return _TRAILING.sub("", _SERIES.sub("", title))


@dataclass(eq=False)
class Neighbours:
    """A sparse table: word w's neighbours are ids[offsets[w]:offsets[w + 1]], best first."""

    offsets: np.ndarray  # (W + 1,) int64
    ids: np.ndarray  # (nnz,) word ids
    ppmi: np.ndarray  # (nnz,) float16

    def of(self, w: int) -> tuple[list[int], list[float]]:
        a, b = int(self.offsets[w]), int(self.offsets[w + 1])
        return self.ids[a:b].tolist(), self.ppmi[a:b].tolist()

    def tensors(self, prefix: str, small: bool) -> dict[str, np.ndarray]:
        sizes = np.diff(self.offsets)  # a word's count of neighbours (offsets are their running sum)
        return {
            f"{prefix}sizes": sizes.astype(np.uint8 if sizes.max(initial=0) < 256 else np.int32),
            f"{prefix}ids": self.ids.astype(np.uint16 if small else np.int32),
            f"{prefix}ppmi": self.ppmi.astype(np.float16),
        }

    @classmethod
    def of_tensors(cls, t: dict[str, np.ndarray], prefix: str) -> Neighbours:
        if f"{prefix}sizes" in t:
            offsets = np.concatenate([[0], np.cumsum(t[f"{prefix}sizes"], dtype=np.int64)])
        else:  # files of earlier versions
            offsets = t[f"{prefix}offsets"].astype(np.int64)
        return cls(offsets, t[f"{prefix}ids"].astype(np.int32), t[f"{prefix}ppmi"])

    def pruned(self, k: int) -> Neighbours:
        """Each word's k best neighbours (they are kept best first)."""
        sizes = np.diff(self.offsets)
        rank = np.arange(len(self.ids)) - np.repeat(self.offsets[:-1], sizes)  # 0 for each word's best
        keep = rank < k
        offsets = np.concatenate([[0], np.cumsum(np.minimum(sizes, k))]).astype(np.int64)
        return Neighbours(offsets, self.ids[keep], self.ppmi[keep])


# how many training titles nearest a new one are read for its poem's words (`Kin.ranked`)
KIN = 200
# a character found in more than this share of the training poems is not kept in the title index (`Kin.of`):
# 2 % halves its size (2.4 of 5 MB for the Tang poems) at no cost (retrieval@1 0.434 both; 1 %: 0.423)
KIN_SHARE = 0.02


@dataclass(eq=False)
class Kin:
    """The training poems' titles (their `subject`) and each poem's words (`Kin.of`): the poems
    under the titles nearest a new one say what a poem under it holds (retrieval@1 of poems written
    for test titles 0.395 → 0.434 against a table of each title word's neighbours; docs/about-something.md).
    Nearness is the cosine of character 1–2-gram TF-IDF vectors (sublinear counts), so a whole title
    counts, its rare words most (送李判官之润州行营: poems to 判官 and about 润州 before farewells)."""

    titles: list[str]
    offsets: np.ndarray  # (P + 1,) int64: poem p's words are ids[offsets[p]:offsets[p + 1]]
    ids: np.ndarray  # (nnz,) word ids of `WordStats.words`
    genres: np.ndarray  # (P,) uint8: each poem's genre, an index into `genre_names`
    genre_names: list[str]

    def __post_init__(self):
        self._vectors = None  # fitted on first use: (vectorizer, (P, F) sparse matrix)
        self._scopes: dict[str, tuple] = {}

    def _of_genre(self, genre: str) -> tuple[np.ndarray, np.ndarray]:
        """(P,) bool: the poems of a genre the index knows; (nnz,) bool: their words in `ids`."""
        mine = self.genres == self.genre_names.index(genre)
        return mine, np.repeat(mine, np.diff(self.offsets))

    def _scope(self, genre: str) -> tuple[np.ndarray | None, np.ndarray, int]:
        """The poems a query reads (a mask; None: all), each word's count of poems among them, how many."""
        if genre not in self.genre_names or len(self.genre_names) == 1:
            genre = ""
        if genre not in self._scopes:
            width = int(self.ids.max(initial=0)) + 1
            if not genre:
                self._scopes[genre] = None, np.bincount(self.ids, minlength=width), len(self.titles)
            else:
                mine, words = self._of_genre(genre)
                self._scopes[genre] = mine, np.bincount(self.ids[words], minlength=width), int(mine.sum())
        return self._scopes[genre]

    def __len__(self) -> int:
        return len(self.titles)

    @classmethod
    def of(
        cls,
        stats: WordStats,
        texts: Sequence[str],
        titles: Sequence[str],
        genres: Sequence[str] | None = None,
        max_share: float = KIN_SHARE,
    ) -> Kin:
        """The poems with a title (subject), each with its words (characters and 2-character words)
        but function characters, bound characters (萸 of 茱萸) and the characters found in more than
        `max_share` of the poems (to fit a size)."""  # fmt: skip
        keep = [i for i, t in enumerate(titles) if subject(t)]
        names = sorted({genres[i] for i in keep}) if genres is not None else [""]
        out = {stats.index[w] for w in STOP | stats.bound if w in stats.index}
        bags = [[w for w in stats._bag(split_at_breaks(texts[i])) if w not in out] for i in keep]
        df = np.bincount([w for b in bags for w in b], minlength=len(stats.words))
        out = {w for w in np.flatnonzero(df > max_share * len(keep)).tolist() if len(stats.words[w]) == 1}
        bags = [[w for w in b if w not in out] for b in bags]
        return cls(
            [subject(titles[i]) for i in keep],
            np.concatenate([[0], np.cumsum([len(b) for b in bags], dtype=np.int64)]),
            np.array([w for b in bags for w in b], dtype=np.int32),
            np.array([names.index(genres[i]) if genres is not None else 0 for i in keep], dtype=np.uint8),
            names,
        )

    def only(self, genre: str) -> Kin:
        """The poems of one genre (all of them where the index knows no such genre)."""
        if genre not in self.genre_names:
            return self
        mine, words = self._of_genre(genre)
        keep = np.flatnonzero(mine)
        offsets = np.concatenate([[0], np.cumsum(np.diff(self.offsets)[keep], dtype=np.int64)])
        return Kin([self.titles[p] for p in keep], offsets, self.ids[words], np.zeros(len(keep), np.uint8), [genre])

    def tensors(self, small: bool) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        alphabet = sorted({ch for t in self.titles for ch in t})
        code = {ch: i for i, ch in enumerate(alphabet)}
        lengths, sizes = np.array([len(t) for t in self.titles], dtype=np.int64), np.diff(self.offsets)
        tensors = {
            "kin_title_sizes": lengths.astype(np.uint8 if lengths.max(initial=0) < 256 else np.int32),
            "kin_title_chars": np.array([code[ch] for t in self.titles for ch in t], dtype=np.uint16),
            "kin_sizes": sizes.astype(np.uint8 if sizes.max(initial=0) < 256 else np.int32),
            "kin_ids": self.ids.astype(np.uint16 if small else np.int32),
            "kin_genres": self.genres,
        }
        meta = {"kin_alphabet": "".join(alphabet), "kin_genres": json.dumps(self.genre_names, ensure_ascii=False)}
        return tensors, meta

    @classmethod
    def of_tensors(cls, t: dict[str, np.ndarray], meta: dict[str, str]) -> Kin:
        alphabet = meta["kin_alphabet"]
        chars = "".join(alphabet[c] for c in t["kin_title_chars"].tolist())
        ends = np.cumsum(t["kin_title_sizes"], dtype=np.int64).tolist()
        titles = [chars[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]
        offsets = np.concatenate([[0], np.cumsum(t["kin_sizes"], dtype=np.int64)])
        return cls(titles, offsets, t["kin_ids"].astype(np.int32), t["kin_genres"], json.loads(meta["kin_genres"]))

    def ranked(self, title: str, genre: str = "", k: int = KIN) -> list[int]:
        """Word ids for a poem under `title`, best first: over the k poems whose titles are nearest
        (cosine s_i > 0; those of `genre` where the index has it), a word's share p of the summed
        nearness (Σ s_i over the poems holding it / Σ s_i), scored p · log(p / g), g its share of
        all the poems: common among the kin and rarer elsewhere. A word needs Σ s_i ≥ 2."""
        title = subject(title)
        if not self.titles or not title:
            return []
        if self._vectors is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True)
            self._vectors = vec, vec.fit_transform(self.titles).tocsr()
        vec, matrix = self._vectors
        sims = (matrix @ vec.transform([title]).T).toarray().ravel()
        mine, df, n = self._scope(genre)
        if mine is not None:
            sims = np.where(mine, sims, 0.0)
        top = [p for p in np.argsort(-sims, kind="stable")[:k].tolist() if sims[p] > 0]
        if not top:
            return []
        score: Counter[int] = Counter()
        for p in top:
            for w in self.ids[self.offsets[p] : self.offsets[p + 1]].tolist():
                score[w] += float(sims[p])
        total = float(sims[top].sum())
        best = [(s / total * math.log(s / total / (df[w] / n)), w) for w, s in score.items() if s >= 2]
        return [w for _, w in sorted(best, key=lambda b: (-b[0], b[1]))]


@dataclass(eq=False)
class WordStats:
    """Words (characters and 2-character words) and the words most associated with each (PPMI):
    within a poem (`poem`), and from a title's word to the poem's words (`title`)."""

    words: list[str]
    counts: np.ndarray  # (W,) int32: occurrences in the lines of the train split
    poem: Neighbours  # word -> the words most often in the same poem (beyond chance)
    title: Neighbours  # word of a title -> the words most often in poems with that title word
    settings: dict = field(default_factory=dict)
    # character of a line -> the characters most often in the next line (beyond chance): cohesion
    next: Neighbours | None = None
    # poet -> the characters the poet uses most beyond the corpus's rate (PPMI): the poet's manner
    poets: list[str] = field(default_factory=list)
    manner: Neighbours | None = None
    # the training poems' titles and their common words: what poems under a title like a new one hold
    kin: Kin | None = None

    def __post_init__(self):
        self.index = {w: i for i, w in enumerate(self.words)}
        inside: Counter[str] = Counter()  # a character's occurrences inside its most frequent word
        for w, n in zip(self.words, self.counts.tolist(), strict=True):
            for ch in set(w) if len(w) == 2 else ():
                inside[ch] = max(inside[ch], n)
        # characters that are mostly half of one word (萸 of 茱萸): no keyword alone
        self.bound = {ch for ch, n in inside.items() if n >= 0.7 * self.counts[self.index[ch]]}

    def pruned(self, k: int, genre: str = "") -> WordStats:
        """The same statistics with at most k neighbours a word in the poem and title tables, and with
        `genre`, the titles of that genre's poems only (to fit a size; the cohesion and manner tables are
        kept whole)."""
        settings = {**self.settings, "k": min(k, self.settings.get("k", k))}
        kin = self.kin.only(genre) if self.kin is not None and genre else self.kin
        if kin is not self.kin:
            settings["kin_genre"] = genre
        return replace(self, poem=self.poem.pruned(k), title=self.title.pruned(k), settings=settings, kin=kin)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __len__(self) -> int:
        return len(self.words)

    # ---------------------------------------------------------------- building

    @classmethod
    def of_texts(
        cls,
        texts: Sequence[str],
        titles: Sequence[str] | None = None,
        *,
        min_count: int = 20,
        min_pmi: float = 1.5,
        min_boundary: float = 0.7,
        min_cooc: int = 10,
        min_title_cooc: int = 10,
        alpha: float = 0.75,
        k: int = 30,
        authors: Sequence[str] | None = None,
        poets: Sequence[str] = (),
        k_next: int = 50,
        k_manner: int = 300,
        min_manner: int = 5,
        genres: Sequence[str] | None = None,
    ) -> WordStats:
        """Statistics of poem texts (the train split) and, when given, their titles (and the index of
        titles, `Kin`, with each poem's genre from `genres`); with `authors` (aligned with `texts`), the
        manner of each poet of `poets`."""
        lines = [split_at_breaks(t) for t in texts]
        words, counts = _word_list(lines, min_count, min_pmi, min_boundary)
        empty = Neighbours(np.zeros(len(words) + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float16))
        stats = cls(words, counts, empty, empty)
        bags = [stats._bag(ls) for ls in lines]
        stats.poem = _neighbours(stats, bags, bags, min_cooc, alpha, k)
        if titles is not None:
            heads = [sorted({stats.index[w] for w in stats.words_in(t, stop=False)}) for t in titles]
            stats.title = _neighbours(stats, heads, bags, min_title_cooc, alpha, k)
            stats.kin = Kin.of(stats, texts, titles, genres)
        chars = [[sorted({stats.index[ch] for ch in ln if ch in stats.index}) for ln in ls] for ls in lines]
        upper = [ln for ls in chars for ln in ls[:-1]]
        lower = [ln for ls in chars for ln in ls[1:]]
        stats.next = _neighbours(stats, upper, lower, min_cooc, alpha, k_next) if upper else empty
        if authors is not None and poets:
            stats.poets, stats.manner = list(poets), _manner(stats, lines, authors, list(poets), k_manner, min_manner)
        stats.settings = {
            "version": VERSION,
            "poems": len(texts),
            "titles": titles is not None,
            "min_count": min_count,
            "min_pmi": min_pmi,
            "min_boundary": min_boundary,
            "min_cooc": min_cooc,
            "min_title_cooc": min_title_cooc,
            "alpha": alpha,
            "k": k,
            "k_next": k_next,
            "k_manner": k_manner,
            "min_manner": min_manner,
        }
        return stats

    def _bag(self, lines: list[str]) -> list[int]:
        """The word ids of a poem: every character and every known 2-character word, once."""
        ids = {self.index[ch] for ln in lines for ch in ln if ch in self.index}
        ids.update(self.index[ln[i : i + 2]] for ln in lines for i in range(len(ln) - 1) if ln[i : i + 2] in self.index)
        return sorted(ids)

    # ---------------------------------------------------------------- storage

    def save(self, folder: str | Path) -> Path:
        """Write `folder/words.safetensors` atomically (a temporary file, then a rename)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        small = len(self.words) < 2**16
        tensors = {"counts": self.counts.astype(np.int32)}
        tensors |= self.poem.tensors("poem_", small) | self.title.tensors("title_", small)
        if self.next is not None:
            tensors |= self.next.tensors("next_", small)
        if self.manner is not None:
            tensors |= self.manner.tensors("manner_", small)
        meta = {"words": json.dumps(self.words, ensure_ascii=False), "settings": json.dumps(self.settings)}
        meta["poets"] = json.dumps(self.poets, ensure_ascii=False)
        if self.kin is not None:
            kin, kin_meta = self.kin.tensors(small)
            tensors |= kin
            meta |= kin_meta
        return write_atomic(folder / FILE, lambda tmp: save_file(tensors, tmp, metadata=meta))

    @classmethod
    def load(cls, folder: str | Path) -> WordStats | None:
        """The statistics saved in `folder`, or None when there are none."""
        path = Path(folder) / FILE
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="np") as f:
                meta = f.metadata() or {}
                t = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
            words = json.loads(meta["words"])
            return cls(
                words, t["counts"], Neighbours.of_tensors(t, "poem_"), Neighbours.of_tensors(t, "title_"),
                json.loads(meta.get("settings", "{}")),
                Neighbours.of_tensors(t, "next_") if "next_ids" in t else None,
                json.loads(meta.get("poets", "[]")),
                Neighbours.of_tensors(t, "manner_") if "manner_ids" in t else None,
                Kin.of_tensors(t, meta) if "kin_ids" in t else None,
            )  # fmt: skip
        except Exception as e:  # noqa: BLE001 - a truncated or garbled file is named, never a traceback
            from tangshi.model.checkpoint import CheckpointError

            remake = f"tangshi index --checkpoint {path.parent} --data CORPUS"
            raise CheckpointError(damaged(path, "word statistics", e, remake)) from None

    # ---------------------------------------------------------------- reading

    def commonest(self, n: int, length: int = 2) -> list[str]:
        """The `n` commonest words of `length` characters, commonest first."""
        ids = [i for i, w in enumerate(self.words) if len(w) == length]
        ids.sort(key=lambda i: -int(self.counts[i]))
        return [self.words[i] for i in ids[:n]]

    def neighbours_of(self, word: str, table: str = "poem") -> dict[str, float]:
        """word -> PPMI of the word's stored neighbours, best first (empty for an unknown word);
        `table` "title": the words of poems whose title has `word`."""
        w = self.index.get(word)
        if w is None:
            return {}
        ids, scores = (self.title if table == "title" else self.poem).of(w)
        return {self.words[n]: s for n, s in zip(ids, scores, strict=True)}

    def following(self) -> Iterator[tuple[str, str, float]]:
        """(character, a character often in the next line, PPMI) for every pair of the `next` table."""
        if self.next is None:
            return
        for w, word in enumerate(self.words):
            if len(word) == 1:
                for n, v in zip(*self.next.of(w), strict=True):
                    yield word, self.words[n], v

    def manner_of(self, poet: str) -> dict[str, float]:
        """The characters `poet` uses most beyond the corpus's rate, with their PPMI (empty: unknown poet)."""
        if self.manner is None or poet not in self.poets:
            return {}
        ids, scores = self.manner.of(self.poets.index(poet))
        return {self.words[n]: s for n, s in zip(ids, scores, strict=True)}

    def topic(self, title: str, words: Sequence[str] = ()) -> dict[str, float]:
        """The characters a poem under `title` (and about `words`: keywords, a theme's words) holds beyond
        chance: the mean over the title's words of their title-table neighbours, plus the mean over
        `words` of their poem-table neighbours, a neighbour word's PPMI shared among its characters."""
        out: Counter[str] = Counter()
        titled = self.words_in(subject(title), stop=False) if title else []
        for table, ws in (("title", titled), ("poem", list(words))):
            for w in ws:
                for nb, v in self.neighbours_of(w, table).items():
                    for ch in nb:
                        out[ch] += v / len(nb) / len(ws)
        return dict(out)

    def neighbours(self, word: str, k: int = 10, table: str = "poem") -> list[str]:
        """The k words most associated with `word` (PPMI within a poem), best first."""
        return list(self.neighbours_of(word, table))[:k]

    def words_in(self, text: str, stop: bool = True) -> list[str]:
        """The known words of a free text (a title, a theme), longest first: the 2-character words,
        overlaps settled by the stronger collocation (more frequent), in text order; then the single
        characters not inside one, in text order, without function characters (`stop`)."""
        text = "".join(ch for ch in normalise(text) if regular.is_han(ch))
        pairs = [(i, text[i : i + 2]) for i in range(len(text) - 1) if text[i : i + 2] in self.index]
        taken: dict[int, str] = {}
        for i, w in sorted(pairs, key=lambda p: -int(self.counts[self.index[p[1]]])):
            if i not in taken and i + 1 not in taken:
                taken[i] = taken[i + 1] = w
        two = list(dict.fromkeys(taken[i] for i in sorted(taken)))
        one = [ch for i, ch in enumerate(text) if i not in taken and ch in self.index and not (stop and ch in STOP)]
        return two + [ch for ch in dict.fromkeys(one) if ch not in two]

    def expand(
        self,
        seed_words: Iterable[str],
        n: int,
        exclude: Iterable[str] = (),
        length: int | None = None,
        title_words: Iterable[str] = (),
        known: Container[str] | None = None,
        min_count: int = 0,
    ) -> list[str]:
        """The n words most associated with all the seeds together (summed PPMI), best first.

        A seed the statistics do not know counts through its known words (`words_in`);
        `title_words` count by the title table (the words of poems with such a title). No word
        returned shares a character with a seed, a title word, a string of `exclude` or a word
        before it (a poem does not repeat characters); function characters and characters that are
        mostly half of one word (萸 of 茱萸) are left out; `length` keeps only words of that many
        characters; `known`, when given, holds the characters a word may have; `min_count`: only words
        seen that often."""
        seeds = []
        for s in seed_words:
            seeds.extend([s] if s in self.index else self.words_in(s))
        titled = list(title_words)
        banned = {ch for s in [*seeds, *titled, *exclude] for ch in s}
        score: Counter[str] = Counter()
        for table, words in (("poem", seeds), ("title", titled)):
            for s in words:
                for w, v in self.neighbours_of(s, table).items():
                    score[w] += v
        out: list[str] = []
        for w, _ in sorted(score.items(), key=lambda p: (-p[1], p[0])):
            if len(out) >= n:
                break
            if (length and len(w) != length) or w in STOP or w in self.bound or banned & set(w):
                continue
            if len(set(w)) < len(w) or (known is not None and not all(ch in known for ch in w)):
                continue
            if self.counts[self.index[w]] < min_count:
                continue
            out.append(w)
            banned.update(w)
        return out


def _word_list(lines: list[list[str]], min_count: int, min_pmi: float, min_boundary: float) -> tuple[list, np.ndarray]:
    """Every character of the lines, then the collocations (module docstring); with their counts."""
    uni: Counter[str] = Counter()
    bi: Counter[str] = Counter()
    at_boundary: Counter[str] = Counter()
    for poem in lines:
        for ln in poem:
            uni.update(ln)
            starts = word_starts(len(ln))
            for i in range(len(ln) - 1):
                w = ln[i : i + 2]
                bi[w] += 1
                at_boundary[w] += starts is None or i in starts
    n1, n2 = sum(uni.values()), max(sum(bi.values()), 1)
    chars = sorted(ch for ch in uni if regular.is_han(ch))

    def collocation(w: str, n: int) -> bool:
        if n < min_count or not all(map(regular.is_han, w)) or at_boundary[w] < min_boundary * n:
            return False
        return math.log(n / n2) - math.log(uni[w[0]] / n1) - math.log(uni[w[1]] / n1) >= min_pmi

    pairs = sorted(w for w, n in bi.items() if collocation(w, n))
    words = chars + pairs
    return words, np.array([uni[w] if len(w) == 1 else bi[w] for w in words], dtype=np.int32)


def _neighbours(stats: WordStats, rows: list[list[int]], cols: list[list[int]], min_cooc: int, alpha: float, k: int):
    """For each word of `rows` bags, its k best neighbours among the words of the same poem's `cols`
    bag, by PPMI (context distribution smoothed by `alpha`), as a sparse table."""
    n_words = len(stats.words)
    x, y = _matrix(rows, n_words), _matrix(cols, n_words)
    with warnings.catch_warnings():  # torch calls its sparse CSR support beta
        warnings.simplefilter("ignore", UserWarning)
        c = torch.sparse.mm(x.t().coalesce(), y).coalesce()  # (W, W): poems with both words
    (a, b), v = c.indices().numpy(), c.values().numpy().astype(np.float64)
    keep = v >= min_cooc
    a, b, v = a[keep], b[keep], v[keep]
    chars = np.array([[stats.index[w[0]], stats.index[w[-1]]] for w in stats.words])  # (W, 2) a word's characters
    share = (chars[a][:, :, None] == chars[b][:, None, :]).any(axis=(1, 2))
    a, b, v = a[~share], b[~share], v[~share]
    df_rows = np.bincount(np.concatenate([np.array(r, dtype=np.int64) for r in rows]), minlength=n_words)
    smoothed = np.bincount(np.concatenate([np.array(r, dtype=np.int64) for r in cols]), minlength=n_words) ** alpha
    pmi = np.log(v) - np.log(df_rows[a]) - np.log(smoothed[b] / smoothed.sum())
    keep = pmi > 0
    a, b, pmi = a[keep], b[keep], pmi[keep]
    order = np.lexsort((b, -pmi, a))  # by word, then best first
    a, b, pmi = a[order], b[order], pmi[order]
    rank = np.arange(len(a)) - np.searchsorted(a, np.arange(n_words + 1))[a]
    top = rank < k
    a, b, pmi = a[top], b[top], pmi[top]
    offsets = np.searchsorted(a, np.arange(n_words + 1)).astype(np.int64)
    return Neighbours(offsets, b.astype(np.int32), pmi.astype(np.float16))


def _manner(
    stats: WordStats, lines: list[list[str]], authors: Sequence[str], poets: list[str], k: int, min_count: int
) -> Neighbours:
    """For each poet, the k characters with the highest PPMI between poet and character (log of the
    character's rate in the poet's lines over its rate in all lines), each seen `min_count` times or more."""
    total: Counter[str] = Counter()
    per: dict[str, Counter[str]] = {p: Counter() for p in poets}
    for ls, a in zip(lines, authors, strict=True):
        chars = [ch for ln in ls for ch in ln if ch in stats.index]
        total.update(chars)
        if a in per:
            per[a].update(chars)
    n_all = sum(total.values())
    offsets, ids, vals = [0], [], []
    for p in poets:
        n = sum(per[p].values())
        scored = [(math.log(c / n) - math.log(total[ch] / n_all), ch) for ch, c in per[p].items() if c >= min_count]
        best = sorted((v, ch) for v, ch in scored if v > 0)[::-1][:k]
        ids += [stats.index[ch] for _, ch in best]
        vals += [v for v, _ in best]
        offsets.append(len(ids))
    return Neighbours(np.array(offsets, np.int64), np.array(ids, np.int32), np.array(vals, np.float16))


def _matrix(bags: list[list[int]], n_words: int) -> torch.Tensor:
    """(poems, W) sparse 0/1: which words each poem's bag holds."""
    rows = torch.tensor([d for d, bag in enumerate(bags) for _ in bag], dtype=torch.long)
    cols = torch.tensor([w for bag in bags for w in bag], dtype=torch.long)
    shape = (len(bags), n_words)
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.ones(len(cols)), shape, check_invariants=False)
