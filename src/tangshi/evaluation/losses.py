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

from tangshi.data.corpus import SPLITS, CorpusError, encode_split, load_corpus
from tangshi.data.text import normalise
from tangshi.data.vocab import BOS, EOS, PAD, Vocab, author_token, genre_token
from tangshi.model.charrnn import CharRNN
from tangshi.model.checkpoint import Checkpoint
from tangshi.model.losses import adaptive_log_likelihood

Seqs = list[np.ndarray]


def collate(
    seqs: Seqs, index: np.ndarray, multiple: int = 8, conds: Seqs | None = None, sep: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """inputs = <bos> + poem, targets = poem + <eos>, padded: both (B, T) int64.

    With conditions (`conds[i]`, e.g. a poet token and a title's characters, and the vocabulary's
    `sep`): inputs = <bos> + condition + <sep> + poem, and the condition's positions are not targets,
    so the loss is over the same tokens (poem + <eos>) with or without conditions.
    T is 1 + the longest row after its <bos> rounded up to a `multiple`: padding sits after the real
    positions, so it changes no result, and few distinct shapes keep oneDNN's per-shape kernel cache
    (and memory) small. The regular forms' poems are 24, 32, 48 and 64 characters with their
    punctuation: a batch of them has no padding at all (rounding T itself up to 8 padded 25 to 32).
    """
    heads = [len(conds[i]) + 1 if conds is not None and len(conds[i]) else 0 for i in index]  # condition + <sep>
    longest = 1 + -(-max(len(seqs[i]) + h for i, h in zip(index, heads, strict=True)) // multiple) * multiple
    inputs = np.full((len(index), longest), PAD, dtype=np.int64)
    targets = np.full((len(index), longest), PAD, dtype=np.int64)
    for row, (i, h) in enumerate(zip(index, heads, strict=True)):
        s = seqs[i]
        inputs[row, 0] = BOS
        if h:
            inputs[row, 1:h] = conds[i]
            inputs[row, h] = sep
        inputs[row, h + 1 : h + len(s) + 1] = s
        targets[row, h : h + len(s)] = s
        targets[row, h + len(s)] = EOS
    return torch.from_numpy(inputs), torch.from_numpy(targets)


def condition_ids(
    titles: list[str],
    authors: list[str],
    vocab: Vocab,
    max_title: int,
    title: bool = True,
    author: bool = True,
    genres: list[str] | None = None,
) -> Seqs:
    """Each poem's condition as ids: its genre's token (where `genres` is given and the vocabulary has
    one), its poet's token (likewise) and its title's first `max_title` characters; empty where none
    is asked or known."""
    known, kinds = vocab.authors(), vocab.genres()
    out = []
    for k, (t, a) in enumerate(zip(titles, authors, strict=True)):
        g = genres[k] if genres else ""
        ids = [vocab.id(genre_token(g))] if g in kinds else []
        ids += [vocab.id(author_token(a))] if author and a in known else []
        ids += [i for i in vocab.encode(t[:max_title])] if title else []
        out.append(np.array(ids, dtype=np.int64))
    return out


def batch_loss(model: CharRNN, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over real (non-pad) target positions, and their count."""
    return model.nll(inputs, targets, ignore=PAD)


@torch.no_grad()
def mean_loss(
    model: CharRNN,
    seqs: Seqs,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    conds: Seqs | None = None,
    sep: int | None = None,
) -> tuple[float, int]:
    """Nats per predicted token (pad excluded, end token included) over `seqs` (read after `conds`
    where given), and the count."""
    if not seqs:
        return float("nan"), 0
    was_training = model.training
    model.eval()
    lengths = np.array([len(s) for s in seqs])
    order = np.argsort(lengths, kind="stable")
    total, count = 0.0, 0
    for i in range(0, len(order), batch_size):
        inputs, targets = collate(seqs, order[i : i + batch_size], conds=conds, sep=sep)
        loss, n = batch_loss(model, inputs.to(device), targets.to(device))
        total += float(loss) * n
        count += n
    model.train(was_training)
    return total / count, count


@torch.no_grad()
def token_logprobs(model: CharRNN, seqs: list[list[int]], prefixes: list[list[int]]) -> list[np.ndarray]:
    """Each sequence's tokens' log-probabilities under the model, read after its prefix (from <bos> on:
    e.g. [<bos>] alone, or <bos>, a title and <sep>), in one padded batch; float64 arrays."""
    was_training = model.training
    model.eval()
    rows = [[*pre, *seq] for pre, seq in zip(prefixes, seqs, strict=True)]
    longest = max(len(r) for r in rows)
    inputs = torch.full((len(rows), longest), PAD, dtype=torch.long)
    targets = torch.full((len(rows), longest), PAD, dtype=torch.long)
    for i, (pre, seq) in enumerate(zip(prefixes, seqs, strict=True)):
        inputs[i, : len(rows[i])] = torch.tensor(rows[i])
        targets[i, len(pre) - 1 : len(pre) - 1 + len(seq)] = torch.tensor(seq)
    device = next(model.parameters()).device
    inputs, targets = inputs.to(device), targets.to(device)
    keep = targets != PAD
    wanted = targets[keep]
    if model.adaptive:  # each target's log-probability from the head and its own cluster alone
        h = model.features(inputs)[0][keep].float()
        picked = adaptive_log_likelihood(model.head, h, wanted).double().cpu().numpy()
    else:
        scores = torch.log_softmax(model(inputs, keep=keep)[0].float(), dim=-1)  # (N, V)
        picked = scores.gather(-1, wanted[:, None]).squeeze(-1).double().cpu().numpy()
    model.train(was_training)
    out, start = [], 0
    for seq in seqs:
        out.append(picked[start : start + len(seq)])
        start += len(seq)
    return out


def _report(loss: float, tokens: int, poems: int) -> dict[str, float | int]:
    return {"loss": round(loss, 5), "perplexity": round(math.exp(loss), 3), "tokens": tokens, "poems": poems}


def corpus_loss(
    ckpt: Checkpoint,
    paths: list[str | Path],
    split: str = "all",
    fmt: str = "auto",
    cache_dir: Path | None = None,
    batch_size: int = 128,
    given: tuple[str, ...] = (),
) -> dict[str, float | int]:
    """Loss of the poems at `paths` (read with the checkpoint's own normalisation and filters), over
    the poems' own tokens; `given` ("genre", "title", "author") reads those first (a model trained
    with them)."""
    if split not in ("all", *SPLITS):
        raise CorpusError(f"--split must be all, train, val or test, got {split!r}")
    corpus = load_corpus(paths, replace(ckpt.config.data), fmt=fmt, cache_dir=cache_dir)
    seqs = encode_split(corpus, ckpt.vocab, split)
    if not seqs:
        raise CorpusError(f"the {split} split of {', '.join(map(str, paths))} has no poems")
    conds = None
    if given:
        if ckpt.vocab.sep is None:
            raise CorpusError(f"{ckpt.path} was not trained with titles or poets (--titles, --authors)")
        conds = condition_ids(
            corpus.titles_of(split), corpus.authors_of(split), ckpt.vocab, ckpt.config.data.max_title,
            title="title" in given, author="author" in given,
            genres=corpus.genres_of(split) if "genre" in given else None,
        )  # fmt: skip
    device = next(ckpt.model.parameters()).device
    loss, tokens = mean_loss(ckpt.model, seqs, batch_size=batch_size, device=device, conds=conds, sep=ckpt.vocab.sep)
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
