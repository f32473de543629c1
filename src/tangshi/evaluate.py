"""How well a model predicts poems: per-character loss and perplexity of a corpus or of texts.

The loss is the mean cross-entropy in nats per predicted token, pad excluded and the end token
included, the same quantity the trainer validates on (the trainer imports `mean_loss`, `collate`
and `batch_loss` from here; this module imports nothing of training); this is how models are compared.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from tangshi.checkpoint import Checkpoint
from tangshi.corpus import SPLITS, CorpusError, encode_split, load_corpus, normalise
from tangshi.model import CharRNN
from tangshi.vocab import BOS, EOS, PAD

Seqs = list[np.ndarray]


def collate(seqs: Seqs, index: np.ndarray, multiple: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """inputs = <bos> + poem, targets = poem + <eos>, padded: both (B, T) int64.

    T is rounded up to a `multiple`: padding sits after the real positions, so it changes no
    result, and few distinct shapes keep oneDNN's per-shape kernel cache (and memory) small.
    """
    longest = -(-(max(len(seqs[i]) for i in index) + 1) // multiple) * multiple
    inputs = np.full((len(index), longest), PAD, dtype=np.int64)
    targets = np.full((len(index), longest), PAD, dtype=np.int64)
    for row, i in enumerate(index):
        s = seqs[i]
        inputs[row, 0] = BOS
        inputs[row, 1 : len(s) + 1] = s
        targets[row, : len(s)] = s
        targets[row, len(s)] = EOS
    return torch.from_numpy(inputs), torch.from_numpy(targets)


def batch_loss(model: CharRNN, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over real (non-pad) target positions, and their count."""
    return model.nll(inputs, targets, ignore=PAD)


@torch.no_grad()
def mean_loss(
    model: CharRNN, seqs: Seqs, batch_size: int = 128, device: str | torch.device = "cpu"
) -> tuple[float, int]:
    """Nats per predicted token (pad excluded, end token included) over `seqs`, and the count."""
    if not seqs:
        return float("nan"), 0
    was_training = model.training
    model.eval()
    lengths = np.array([len(s) for s in seqs])
    order = np.argsort(lengths, kind="stable")
    total, count = 0.0, 0
    for i in range(0, len(order), batch_size):
        inputs, targets = collate(seqs, order[i : i + batch_size])
        loss, n = batch_loss(model, inputs.to(device), targets.to(device))
        total += float(loss) * n
        count += n
    model.train(was_training)
    return total / count, count


def _report(loss: float, tokens: int, poems: int) -> dict[str, float | int]:
    return {"loss": round(loss, 5), "perplexity": round(math.exp(loss), 3), "tokens": tokens, "poems": poems}


def corpus_loss(
    ckpt: Checkpoint,
    paths: list[str | Path],
    split: str = "all",
    fmt: str = "auto",
    cache_dir: Path | None = None,
    batch_size: int = 128,
) -> dict[str, float | int]:
    """Loss of the poems at `paths` (read with the checkpoint's own normalisation and filters)."""
    if split not in ("all", *SPLITS):
        raise CorpusError(f"--split must be all, train, val or test, got {split!r}")
    corpus = load_corpus(paths, replace(ckpt.config.data), fmt=fmt, cache_dir=cache_dir)
    seqs = encode_split(corpus, ckpt.vocab, split)
    if not seqs:
        raise CorpusError(f"the {split} split of {', '.join(map(str, paths))} has no poems")
    device = next(ckpt.model.parameters()).device
    loss, tokens = mean_loss(ckpt.model, seqs, batch_size=batch_size, device=device)
    return _report(loss, tokens, len(seqs))


def text_loss(ckpt: Checkpoint, texts: list[str]) -> dict[str, float | int]:
    """Loss of raw poem texts (normalised to the model's script first)."""
    norm = [normalise(t, ckpt.config.data.script) for t in texts]
    norm = [t for t in norm if t]
    if not norm:
        raise CorpusError("no text to score")
    ids, offsets = ckpt.vocab.encode_many(norm)
    seqs = [ids[offsets[i] : offsets[i + 1]].numpy() for i in range(len(norm))]
    device = next(ckpt.model.parameters()).device
    loss, tokens = mean_loss(ckpt.model, seqs, device=device)
    return _report(loss, tokens, len(seqs))
