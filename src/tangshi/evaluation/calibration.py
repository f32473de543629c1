"""Frequency calibration: a fixed bias that brings the characters a model writes to human poems' rates.

A sampled model overuses the commonest characters (风 不 人 一 知 无, 1.3-1.9 times their rate in Tang
poems) and underuses the rarer ones; a simple character n-gram classifier tells its poems from human
ones by exactly that (docs/about-something.md). `calibrate` measures it and corrects it: the model
writes poems from the begin characters and in the forms of human training poems (in form and free,
with the options it will write with), each character's rate among them is compared with its rate in
the human poems of the genre, and the bias moves by -eta x log(written rate / human rate), smoothed
toward 0 for characters seen rarely; a few rounds, each writing with the bias so far (the model's
answer to a bias is not linear: steering and the forms' masks move mass elsewhere).

The bias is added to each step's character logits like the topic's (`processors.Steering`: the line
breaks and the end token keep their probability, so lines are as long as before, and the forms'
masks apply after it). It is kept per genre in the checkpoint's `calibration.safetensors`.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tangshi.data.vocab import SPECIALS, Vocab, damaged, write_atomic
from tangshi.evaluation.writer import Writer, write_each
from tangshi.model.checkpoint import CheckpointError
from tangshi.prosody import regular

FILE = "calibration.safetensors"
SMOOTHING = 5.0  # pseudo-count on both sides of a character's ratio: rare characters move little
STEP_LIMIT = 3.0  # the most a round moves a character's bias, in log units
BIAS_LIMIT = 4.0
NO_GENRE = ""  # the key of a model that knows no genres


@dataclass
class Calibration:
    """Per genre, a (V,) bias over the model's ids (0 on the specials and line breaks)."""

    biases: dict[str, torch.Tensor]
    settings: dict[str, Any] = field(default_factory=dict)  # how each genre's bias was made

    def bias(self, genre: str) -> torch.Tensor | None:
        return self.biases.get(genre)

    def save(self, folder: str | Path) -> Path:
        """Write `folder/calibration.safetensors` atomically (a temporary file, then a rename)."""
        folder = Path(folder)
        tensors = {_key(g): b.float().contiguous() for g, b in self.biases.items()}
        meta = {"settings": json.dumps(self.settings, ensure_ascii=False)}
        return write_atomic(folder / FILE, lambda tmp: save_file(tensors, tmp, metadata=meta))

    @classmethod
    def load(cls, folder: str | Path, vocab_size: int) -> Calibration | None:
        """The calibration saved in `folder` (None when there is none); a bias whose length is not the
        vocabulary's is refused, naming the file."""
        path = Path(folder) / FILE
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                biases = {_genre(k): f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118
                meta = f.metadata() or {}
            settings = json.loads(meta.get("settings", "{}"))
        except Exception as e:  # a damaged file: say which
            remake = f"tangshi calibrate --checkpoint {path.parent} --data CORPUS"
            raise CheckpointError(damaged(path, "calibration", e, remake)) from None
        for g, b in biases.items():
            if not bool(torch.isfinite(b).all()):
                raise CheckpointError(
                    f"{path}: the bias of {g or 'the model'} holds NaN or infinite values; "
                    f"calibrate again (`tangshi calibrate --checkpoint {path.parent} --data CORPUS`)"
                )
            if b.shape != (vocab_size,):
                raise CheckpointError(
                    f"{path}: the bias of {g or 'the model'} has shape {tuple(b.shape)}, the vocabulary has "
                    f"{vocab_size} ids; calibrate again (`tangshi calibrate`)"
                )
        return cls(biases, settings)


def _key(genre: str) -> str:
    return f"bias:{genre}"


def _genre(key: str) -> str:
    return key.split(":", 1)[1] if key.startswith("bias:") else key


def character_counts(texts: Sequence[str], vocab: Vocab) -> torch.Tensor:
    """(V,) how often each of the vocabulary's Chinese characters occurs in the texts; 0 for everything
    else, which the calibration leaves alone: the specials, the condition tokens, punctuation, and marks
    such as □ (the corpus's sign for a lost character: human poems have it, so a bias toward human rates
    would have the model write it)."""
    counts = torch.zeros(len(vocab), dtype=torch.float64)
    ids = [vocab.id(ch) for t in texts for ch in t if regular.is_han(ch)]
    if ids:
        counts += torch.bincount(torch.tensor(ids), minlength=len(vocab)).double()
    counts[: len(SPECIALS)] = 0
    counts[vocab.conditions] = 0
    return counts


def log_ratio(written: torch.Tensor, human: torch.Tensor) -> torch.Tensor:
    """(V,) log of each character's written rate over its human rate, both counts smoothed by
    SMOOTHING pseudo-occurrences at the human rate (a character written or read a few times moves
    little), clamped to ±STEP_LIMIT; 0 where neither side has it."""
    n = float(written.sum())
    rate = human / human.sum()
    out = torch.log((written + SMOOTHING) / (rate * n + SMOOTHING))
    out[(written == 0) & (human == 0)] = 0
    return out.clamp(-STEP_LIMIT, STEP_LIMIT)


def gap(written: torch.Tensor, human: torch.Tensor) -> float:
    """Total variation distance between the written and the human character distributions (0 = the same)."""
    return 0.5 * float((written / written.sum() - human / human.sum()).abs().sum())


def sample_prompts(texts: Sequence[str], poems: int, seed: int) -> tuple[list[str], list[str]]:
    """The first characters and forms of `poems` random regular poems among `texts`."""
    rows = [(t[0], f) for t in texts if t and (f := regular.classify(regular.split_lines(t))) != "other"]
    if not rows:
        raise ValueError("no regular poems (五绝 七绝 五律 七律) to calibrate on")
    picked = random.Random(seed).sample(rows, min(poems, len(rows)))
    return [b for b, _ in picked], [f for _, f in picked]


def calibrate(
    poet: Writer,
    human_texts: Sequence[str],
    genre: str,
    *,
    poems: int = 1500,
    rounds: int = 2,
    eta: float = 0.8,
    seed: int = 100,
    options: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """The bias that brings `poet`'s characters to `human_texts`' rates, and each round's figures.

    Each round the model writes one poem in its form and one free poem from the first character of
    each of `poems` regular human poems, sampled (`Poet.write` with `options`, the genre's context and the bias
    so far as its `calibration_bias`, in place of the checkpoint's), and the bias moves by
    -eta x `log_ratio`."""
    if rounds < 1 or poems < 1 or not 0 < eta <= 2:
        raise ValueError("calibrate needs rounds >= 1, poems >= 1 and 0 < eta <= 2")
    vocab = poet.vocab
    human = character_counts(human_texts, vocab)
    begins, forms = sample_prompts(human_texts, poems, seed)
    begins = [b if b in poet.vocab else "" for b in begins]  # a begin the model does not know: its own choice
    opts = {"beam": 0, **(options or {})}  # the calibration is the sampler's
    if genre:
        opts["genre"] = genre
    bias = torch.zeros(len(vocab), dtype=torch.float64)
    log: list[dict[str, Any]] = []
    for r in range(rounds):
        so_far = {"calibration": 1.0, "calibration_bias": bias.float()}  # the bias so far, at full weight
        in_form = write_each(poet, begins, forms, seed + 7919 * r, **so_far, **opts)
        free = write_each(poet, begins, ["free"] * len(begins), seed + 7919 * r, **so_far, **opts)
        written = character_counts(in_form + free, vocab)
        step = log_ratio(written, human)
        most = torch.argsort(step, descending=True)[:8].tolist()
        least = torch.argsort(step)[:8].tolist()
        row = {
            "round": r + 1,
            "poems": len(in_form) + len(free),
            "characters": int(written.sum()),
            "gap": round(gap(written, human), 4),
            "overused": {vocab.tokens[i]: round(math.exp(float(step[i])), 2) for i in most},
            "underused": {vocab.tokens[i]: round(math.exp(float(step[i])), 2) for i in least},
        }
        log.append(row)
        if progress:
            over = " ".join(f"{c} {v:.2f}×" for c, v in list(row["overused"].items())[:5])
            progress(
                f"round {r + 1}/{rounds}: {row['poems']:,} poems, {row['characters']:,} characters, "
                f"gap from human rates {row['gap']:.3f} (most over-used: {over})"
            )
        bias = (bias - eta * step).clamp(-BIAS_LIMIT, BIAS_LIMIT)
    return bias.float(), log
