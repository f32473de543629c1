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

import torch

from tangshi.data.lineindex import LineIndex
from tangshi.data.text import LINE_BREAKS
from tangshi.data.vocab import Vocab
from tangshi.data.words import WordStats
from tangshi.evaluation.calibration import Calibration
from tangshi.generation.processors import Rows, table_rows
from tangshi.generation.search import ContextStates
from tangshi.generation.tables import CiProsody, VocabProsody
from tangshi.model.charrnn import CharRNN
from tangshi.model.checkpoint import Checkpoint
from tangshi.options import DEFAULT_COHESION, DEFAULT_DIVERSITY

_UNREAD: Any = object()  # a side file not read yet (None: read, and the checkpoint has none)


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

    def following(self) -> tuple[Rows, torch.Tensor]:
        """(the next-line PPMI table in the model's ids as `table_rows`: row a, the PPMI of a
        character a of a line and each b of the next; the ids that end a line)."""
        with self._lock, torch.inference_mode(False):  # kept across calls: never an inference tensor
            if self._following is None:
                v, vocab = len(self.vocab), self.vocab
                pairs = [
                    (vocab.id(a), vocab.id(b), s) for a, b, s in self.words.following() if a in vocab and b in vocab
                ]
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
