"""Characters <-> ids: special tokens, frequency order, save/load as JSON.

Ids 0-3 are the special tokens <pad>, <unk>, <bos>, <eos>; characters follow by descending
training frequency (ties by code point), so the id order is also a frequency order. A vocabulary
built from texts keeps each token's training count (<eos>: one a text; <unk>: the characters left
out), saved beside the tokens, for the unigram prior of `log_prior`.

A model trained on what poems are about has condition tokens after the characters (`with_conditions`):
<sep>, which ends the conditions read before a poem (its author, its title), and one <@name> token a
poet. They are read, never written, and are not characters (`in` and `decode` skip them).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
SEP = "<sep>"  # after the conditions (author, title), before the poem


def author_token(name: str) -> str:
    return f"<@{name}>"


def genre_token(name: str) -> str:
    return f"<#{name}>"


def is_condition(token: str) -> bool:
    return len(token) > 1 and token.startswith("<") and token.endswith(">")


class VocabError(ValueError):
    """A vocabulary file that cannot be used; the message names the file."""


class Vocab:
    def __init__(self, tokens: list[str], counts: list[int] | None = None):
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise VocabError(f"a vocabulary must start with {', '.join(SPECIALS)}")
        if counts is not None and (len(counts) != len(tokens) or any(c < 0 for c in counts)):
            raise VocabError(f"{len(counts)} counts for {len(tokens)} tokens, or a negative count")
        self.tokens = list(tokens)
        self.counts = None if counts is None else [int(c) for c in counts]
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            dup = next(t for t, n in Counter(self.tokens).items() if n > 1)
            raise VocabError(f"token {dup!r} appears twice in the vocabulary")
        self._table: np.ndarray | None = None
        self._log_prior: torch.Tensor | None = None
        # the condition tokens, once: `write` masks them at every call
        self._conditions = [i for i, t in enumerate(self.tokens) if i >= len(SPECIALS) and is_condition(t)]

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, char: str) -> bool:
        return len(char) == 1 and char in self.index and self.index[char] >= len(SPECIALS)

    @property
    def sep(self) -> int | None:
        """The id of <sep>, or None in a vocabulary without conditions."""
        return self.index.get(SEP)

    @property
    def conditions(self) -> list[int]:
        """Ids of the condition tokens (<sep>, <@poet>...), read before a poem, never written."""
        return list(self._conditions)

    def authors(self) -> dict[str, int]:
        """The poets this vocabulary has a token for, with their training poems."""
        out = {}
        for i in self._conditions:
            if self.tokens[i].startswith("<@"):
                out[self.tokens[i][2:-1]] = self.counts[i] if self.counts else 0
        return out

    def genres(self) -> dict[str, int]:
        """The genres (唐诗, 宋诗, 宋词) this vocabulary has a token for, with their training poems."""
        return {self.tokens[i][2:-1]: self.counts[i] if self.counts else 0
                for i in self._conditions if self.tokens[i].startswith("<#")}  # fmt: skip

    def with_conditions(self, authors: dict[str, int], genres: dict[str, int] | None = None) -> Vocab:
        """The same tokens, then those it lacks of <sep>, a token a poet (`authors`: name -> training
        poems) and a token a genre (`genres`: name -> training poems)."""
        wanted = [(SEP, self.counts[EOS] if self.counts else 0)]
        wanted += [(author_token(a), n) for a, n in authors.items()]
        wanted += [(genre_token(g), n) for g, n in (genres or {}).items()]
        extra = [(t, n) for t, n in wanted if t not in self.index]
        counts = None if self.counts is None else [*self.counts, *(n for _, n in extra)]
        return Vocab([*self.tokens, *(t for t, _ in extra)], counts)

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1, max_size: int = 0) -> Vocab:
        counts, n_texts = _count(texts)
        chars = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
        if max_size:
            chars = chars[:max_size]
        unknown = sum(counts.values()) - sum(counts[c] for c in chars)
        return cls([*SPECIALS, *chars], [0, unknown, 0, n_texts, *(counts[c] for c in chars)])

    def with_counts(self, texts: Iterable[str]) -> Vocab:
        """The same tokens, with their counts in `texts` (for a vocabulary saved without them); condition
        tokens keep the counts they have (their poems: the texts do not say)."""
        counts, n_texts = _count(texts)
        conditions = set(self._conditions)
        known = [
            (self.counts[i] if self.counts else 0) if i in conditions else counts.get(t, 0)
            for i, t in enumerate(self.tokens[len(SPECIALS) :], start=len(SPECIALS))
        ]
        chars = sum(k for i, k in enumerate(known, start=len(SPECIALS)) if i not in conditions)
        return Vocab(self.tokens, [0, sum(counts.values()) - chars, 0, n_texts, *known])

    def log_prior(self) -> torch.Tensor | None:
        """(V,) log unigram probabilities of the training counts, add-one smoothed; None without counts."""
        if self.counts is None:
            return None
        if self._log_prior is None:  # made once: a poem's writing asks for it
            counts = torch.tensor(self.counts, dtype=torch.float64) + 1
            self._log_prior = (counts.log() - math.log(float(counts.sum()))).float()
        return self._log_prior

    def id(self, char: str) -> int:
        return self.index.get(char, UNK)

    def _lookup(self) -> np.ndarray:
        if self._table is None:
            chars = [(i, t) for i, t in enumerate(self.tokens) if i >= len(SPECIALS) and len(t) == 1]
            table = np.full(max((ord(t) for _, t in chars), default=0) + 1, UNK, dtype=np.int32)
            for i, t in chars:
                table[ord(t)] = i
            self._table = table
        return self._table

    def encode(self, text: str) -> list[int]:
        return [self.index.get(c, UNK) for c in text]

    def encode_many(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """All texts as one int32 id array and (N + 1,) offsets; vectorised over code points."""
        table = self._lookup()
        points = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
        ids = np.full(len(points), UNK, dtype=np.int32)
        inside = points < len(table)
        ids[inside] = table[points[inside]]
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum([len(t) for t in texts], out=offsets[1:])
        return torch.from_numpy(ids), torch.from_numpy(offsets)

    def decode(self, ids: Iterable[int], keep_special: bool = False) -> str:
        out = []
        for i in ids:
            if (i >= len(SPECIALS) and len(self.tokens[i]) == 1) or keep_special:
                out.append(self.tokens[i])
        return "".join(out)

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, {"tokens": self.tokens, **({"counts": self.counts} if self.counts else {})})

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        path = Path(path)
        try:
            raw = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            raise VocabError(f"{path}: no such file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise VocabError(f"{path}: not valid JSON ({e})") from None
        tokens = raw.get("tokens") if isinstance(raw, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise VocabError(f'{path}: expected {{"tokens": [...strings]}}')
        counts = raw.get("counts")
        if counts is not None and (
            not isinstance(counts, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in counts)
        ):
            raise VocabError(f'{path}: "counts" must be a list of integers, one a token')
        try:
            return cls(tokens, counts)
        except VocabError as e:
            raise VocabError(f"{path}: {e}") from None


def _count(texts: Iterable[str]) -> tuple[Counter, int]:
    """(occurrences of each character, number of texts)."""
    counts: Counter = Counter()
    n_texts = 0
    for t in texts:
        counts.update(t)
        n_texts += 1
    return counts, n_texts


def write_json_atomic(path: str | Path, obj: object) -> None:
    """Write JSON to a temp file beside `path`, then rename: never a half-written file."""

    def dump(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=1)
            f.flush()
            os.fsync(f.fileno())

    write_atomic(path, dump)


def damaged(path: str | Path, what: str, error: BaseException, remake: str) -> str:
    """The message for a side file of a checkpoint that cannot be read (truncated, garbled): the file,
    what is wrong (the reader's first line, cut short) and how to make it again."""
    why = (str(error).splitlines() or [type(error).__name__])[0]
    why = why if len(why) <= 120 else f"{why[:117]}..."
    return f"{path}: not a readable {what} file, truncated or damaged ({why}); make it again: {remake}"


def write_atomic(path: str | Path, write: Callable[[str], None]) -> Path:
    """`write(tmp)` a temporary file beside `path` (e.g. `safetensors`' save_file), then rename it into
    place, readable by all: never a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a checkpoint is meant to be shared
        os.replace(tmp, path)
    except Exception as e:
        # safetensors reports a full disk or a file-size limit (ulimit -f) as its own error: say it as an OSError
        code = re.search(r"\(os error (\d+)\)", str(e))
        if isinstance(e, OSError) or code is None:
            raise
        raise OSError(int(code.group(1)), f"cannot write {path}: {os.strerror(int(code.group(1)))}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
