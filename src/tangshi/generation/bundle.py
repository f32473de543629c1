"""A checkpoint and its side files, each read or made on first use, in one place under one lock.

    bundle = Bundle(checkpoint.load(folder))
    bundle.words            # words.safetensors: word statistics and the title index (None: none)
    bundle.calibration      # calibration.safetensors: the frequency calibration (None: none)
    bundle.lines            # lines.safetensors: the training lines, hashed (read with the checkpoint)
    bundle.vocab_prosody    # the vocabulary's tones and rhyme groups (平水韵)
    bundle.ci_prosody       # the same against the 词林正韵
    bundle.following()      # the next-line table of the line steering

Everything a request is resolved and decoded against, and nothing about any one request: one
bundle serves every thread of a server.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

from tangshi.data.lineindex import LineIndex
from tangshi.data.text import LINE_BREAKS
from tangshi.data.vocab import SPECIALS, Vocab
from tangshi.data.words import WordStats
from tangshi.evaluation.calibration import Calibration
from tangshi.generation.processors import Rows
from tangshi.generation.search import ContextStates
from tangshi.generation.tables import CiProsody, VocabProsody
from tangshi.model.charrnn import CharRNN
from tangshi.model.checkpoint import Checkpoint
from tangshi.options import DEFAULT_COHESION, DEFAULT_DIVERSITY, STOCK_WORDS

_UNREAD: Any = object()  # a side file not read yet (None: read, and the checkpoint has none)


def _following_rows(words: WordStats | None, vocab: Vocab) -> Rows:
    """The pairs of `words.following()` (a character, one often in the next line, their PPMI) whose
    characters the model knows, as `processors.table_rows` makes them of the (V, V) table, and equal to
    them: read from the table's arrays at once (a loop over its 140,000 pairs and `coalesce` took 0.6 s)."""
    v = len(vocab)
    table = None if words is None else words.next
    if table is None:
        return torch.zeros(v + 1, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0)
    get = vocab.index.get
    known = np.fromiter((get(w, -1) for w in words.words), dtype=np.int64, count=len(words.words))
    known[known < len(SPECIALS)] = -1  # -1: a word the model has no token of (`w in vocab` is False)
    rows = known[np.repeat(np.arange(len(table.offsets) - 1), np.diff(table.offsets))]
    cols = known[table.ids]
    keep = (rows >= 0) & (cols >= 0)
    flat, values = rows[keep] * v + cols[keep], table.ppmi[keep].astype(np.float32)
    order = np.argsort(flat, kind="stable")  # by row, then column, as `coalesce` sorts
    flat, values = flat[order], values[order]
    first = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    if len(first) < len(flat):  # a pair twice: its values added, as `coalesce` does
        flat, values = flat[first], np.add.reduceat(values, first)
    starts = np.zeros(v + 1, dtype=np.int64)
    starts[1:] = np.cumsum(np.bincount(flat // v, minlength=v))
    return torch.from_numpy(starts), torch.from_numpy(flat % v), torch.from_numpy(values)


class Bundle:
    """A loaded checkpoint with its side files and the tables made from them, made once each."""

    def __init__(self, ckpt: Checkpoint):
        self.ckpt = ckpt
        self._lock = threading.RLock()  # re-entrant: `ci_prosody` and `following` read other parts under it
        self._words: WordStats | None = _UNREAD
        self._calibration: Calibration | None = _UNREAD
        self._vocab_prosody: VocabProsody | None = None
        self._ci_prosody: CiProsody | None = None
        self._following: tuple[Rows, torch.Tensor] | None = None
        self._stock: dict[int, torch.Tensor] | None = None
        self.states = ContextStates()  # the states after contexts read (title, poet, genre), across requests

    @property
    def model(self) -> CharRNN:
        return self.ckpt.model

    @property
    def vocab(self) -> Vocab:
        return self.ckpt.vocab

    @property
    def script(self) -> str:
        """The script the model was trained in (what requests are normalised to)."""
        return self.ckpt.config.data.script

    @property
    def lines(self) -> LineIndex | None:
        """The training corpus's lines (`lines.safetensors`, read with the checkpoint), None when it has none."""
        return self.ckpt.lines

    @property
    def words(self) -> WordStats | None:
        """The word statistics for plans and steering (`words.safetensors`), None when the checkpoint has none."""
        with self._lock:
            if self._words is _UNREAD:
                self._words = WordStats.load(self.ckpt.path)
            return self._words

    @property
    def calibration(self) -> Calibration | None:
        """The frequency calibration (`calibration.safetensors`), None when the checkpoint has none."""
        with self._lock:
            if self._calibration is _UNREAD:
                self._calibration = Calibration.load(self.ckpt.path, len(self.vocab))
            return self._calibration

    @property
    def vocab_prosody(self) -> VocabProsody:
        """The vocabulary's tones and 平水韵 rhyme groups, made on first use."""
        with self._lock:
            if self._vocab_prosody is None:
                self._vocab_prosody = VocabProsody(self.vocab)
            return self._vocab_prosody

    @property
    def ci_prosody(self) -> CiProsody:
        """The vocabulary against the 词林正韵, made on first use (a second or two)."""
        with self._lock:
            if self._ci_prosody is None:
                self._ci_prosody = CiProsody(self.vocab_prosody)
            return self._ci_prosody

    def stock(self) -> dict[int, torch.Tensor]:
        """The stock phrases' table of `StockPhrases`: the `STOCK_WORDS` commonest 2-character words of the
        word statistics whose characters the model knows, first id -> the second ids."""
        with self._lock:
            if self._stock is None:
                pairs: dict[int, list[int]] = {}
                if self.words is not None:
                    for w in self.words.commonest(STOCK_WORDS, length=2):
                        if all(ch in self.vocab for ch in w):
                            pairs.setdefault(self.vocab.id(w[0]), []).append(self.vocab.id(w[1]))
                self._stock = {a: torch.tensor(b) for a, b in pairs.items()}
            return self._stock

    def following(self) -> tuple[Rows, torch.Tensor]:
        """(the next-line PPMI table in the model's ids as `table_rows`: row a, the PPMI of a
        character a of a line and each b of the next; the ids that end a line)."""
        with self._lock, torch.inference_mode(False):  # kept across calls: never an inference tensor
            if self._following is None:
                v, vocab = len(self.vocab), self.vocab
                # a row for each character of a line: its next-line neighbours, which the steering gathers
                table = _following_rows(self.words, vocab)
                breaks = torch.zeros(v, dtype=torch.bool)
                breaks[[vocab.id(ch) for ch in LINE_BREAKS if ch in vocab]] = True
                self._following = (table, breaks)
            return self._following

    @property
    def default_diversity(self) -> float:
        """The sampler's anti-LM weight unless told: DEFAULT_DIVERSITY where the checkpoint keeps its
        characters' training counts, 0 where it does not (older checkpoints; `tangshi index` adds them)."""
        return DEFAULT_DIVERSITY if self.vocab.counts is not None else 0.0

    @property
    def default_cohesion(self) -> float:
        """The line steering's weight unless told: DEFAULT_COHESION where the checkpoint's word statistics
        have the next-line table, 0 where they do not (`tangshi index` adds it)."""
        words = self.words
        return DEFAULT_COHESION if words is not None and words.next is not None else 0.0
