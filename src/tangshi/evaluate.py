"""How well a model predicts poems: per-character loss and perplexity of a corpus or of texts.

The loss is the mean cross-entropy in nats per predicted token, pad excluded and the end token
included, the same quantity the trainer validates on; this is how models are compared.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from tangshi.checkpoint import Checkpoint
from tangshi.corpus import SPLITS, CorpusError, encode_split, load_corpus, normalise
from tangshi.train import mean_loss


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
