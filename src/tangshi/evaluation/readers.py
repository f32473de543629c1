"""How a reader would judge poems, by measurement: small classifiers trained on the corpus, each
read beside a human reference (docs/readers.md).

- `two_sample_auc`: can a character 1–3-gram TF-IDF + logistic regression tell the model's poems
  from human ones? Cross-validated ROC AUC; 0.5 = indistinguishable.
- `Coherence`: do a poem's lines belong together? Trained on the corpus alone: poems of the regular
  forms against the same poems with lines swapped among poems of the same form (`shuffle_lines`);
  features are the (character of a line, character of the next line) pairs. `coherence_report`
  places the model between line-shuffled and human poems.
- `title_retrieval`: is a poem about what it was written for? Its nearest real poem among the real
  one and 9 others of the same form (retrieval@1 among 10; chance 0.10).
- `PoetAttribution`: whose manner? A character n-gram classifier over the poets with most poems.
- `keyword_report`: are the asked keywords there, and in their planned lines?

Everything is deterministic in its seed; fitted judges live in memory only (`fitted`).
scikit-learn does the TF-IDF and the logistic regressions; nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline

from tangshi.data.corpus import ANONYMOUS
from tangshi.prosody import regular

RETRIEVAL_CANDIDATES = 10  # the real poem and 9 others


def form_of(text: str) -> str:
    """五绝 / 七绝 / 五律 / 七律, or "other"."""
    return regular.classify(regular.split_lines(text))


def _sample(items: Sequence, n: int, seed: int) -> list:
    """n of the items, chosen deterministically in `seed`, in their original order."""
    if n >= len(items):
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


# ---------------------------------------------------------------- (a) human or model?


def two_sample_auc(model_texts: Sequence[str], human_texts: Sequence[str], seed: int = 0, folds: int = 5) -> float:
    """Stratified `folds`-fold cross-validated ROC AUC of character 1–3-gram TF-IDF + logistic
    regression telling the two samples apart (the larger one is subsampled to the smaller's size).
    0.5: indistinguishable; 1: told apart every time. Texts are whole poems, punctuation included."""
    n = min(len(model_texts), len(human_texts))
    if n < folds:
        raise ValueError(f"two_sample_auc needs at least {folds} texts a side, got {n}")
    texts = _sample(model_texts, n, seed) + _sample(human_texts, n, seed + 1)
    labels = np.array([0] * n + [1] * n)
    clf = make_pipeline(
        TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True),
        LogisticRegression(max_iter=2000),
    )
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(clf, texts, labels, cv=cv, scoring="roc_auc")))


# ---------------------------------------------------------------- (b) lines that belong together


def shuffle_lines(texts: Sequence[str], seed: int = 0, p: float = 0.5) -> list[str]:
    """The poems with their lines swapped among poems of the same regular form: every line is
    replaced, with probability p, by the same-index line of another random poem of that form (at
    least one line a poem, so that each differs from its original). Poems of no regular form, and
    those alone in their form, are returned unchanged."""
    rng = random.Random(seed)
    lines = [regular.split_lines(t) for t in texts]
    forms = [regular.classify(ls) for ls in lines]
    by_form: dict[str, list[int]] = {}
    for i, f in enumerate(forms):
        if f != "other":
            by_form.setdefault(f, []).append(i)
    out = list(texts)
    for i, f in enumerate(forms):
        peers = by_form.get(f, [])
        if len(peers) < 2:
            continue
        swap = [rng.random() < p for _ in lines[i]]
        if not any(swap):
            swap[rng.randrange(len(swap))] = True
        new = []
        for k, (line, s) in enumerate(zip(lines[i], swap, strict=True)):
            if s:
                j = i
                while j == i:
                    j = rng.choice(peers)
                line = lines[j][k]
            new.append(line)
        out[i] = regular.join_lines(new)
    return out


def line_pairs(text: str) -> list[str]:
    """Every (character of line i, character of line i + 1) pair of a poem, as 2-character strings."""
    lines = regular.split_lines(text)
    return [a + b for upper, lower in zip(lines, lines[1:], strict=False) for a in upper for b in lower]


class Coherence:
    """P(the lines belong together) of a poem: logistic regression over TF-IDF of its line pairs
    (`line_pairs`, hashed), trained on poems of the regular forms against `shuffle_lines` of them.
    Only meaningful for poems of at least 2 lines."""

    def __init__(self, n_features: int = 2**20, C: float = 8.0):
        self.hasher = HashingVectorizer(
            analyzer=line_pairs, n_features=n_features, alternate_sign=False, norm=None, dtype=np.float32
        )
        self.tfidf = TfidfTransformer(sublinear_tf=True)
        self.clf = LogisticRegression(C=C, max_iter=1000)
        self.poems = 0  # regular poems it was trained on

    def fit(self, texts: Sequence[str], seed: int = 0) -> Coherence:
        """Train on `texts` (a corpus's train split): its poems of the regular forms are the positives."""
        regular = [t for t in texts if form_of(t) != "other"]
        if len(regular) < 2:
            raise ValueError("Coherence.fit needs at least 2 poems of a regular form")
        negatives = shuffle_lines(regular, seed)
        x = self.tfidf.fit_transform(self.hasher.transform(regular + negatives))
        self.clf.fit(x, np.array([1] * len(regular) + [0] * len(negatives)))
        self.poems = len(regular)
        return self

    def score(self, texts: Sequence[str]) -> list[float]:
        """P(coherent) of each poem."""
        if not texts:
            return []
        x = self.tfidf.transform(self.hasher.transform(list(texts)))
        return [float(p) for p in self.clf.predict_proba(x)[:, 1]]


def coherence_report(
    judge: Coherence, model_texts: Sequence[str], human_texts: Sequence[str], shuffled_texts: Sequence[str]
) -> dict[str, float | None]:
    """Mean P(coherent) of each set and the model's position from shuffled (0) to human (1):
    (model - shuffled) / (human - shuffled)."""
    model, human, shuffled = (_mean(judge.score(t)) for t in (model_texts, human_texts, shuffled_texts))
    gap = human - shuffled
    return {
        "model": round(model, 4),
        "human": round(human, 4),
        "shuffled": round(shuffled, 4),
        "position": round((model - shuffled) / gap, 4) if gap else None,
    }


def _mean(xs: Sequence[float]) -> float:
    return float(np.mean(xs)) if len(xs) else float("nan")


# ---------------------------------------------------------------- (c) about what it was written for


def _body(text: str) -> str:
    """The poem's characters without punctuation and without its first character."""
    return "".join(regular.split_lines(text))[1:]


def title_retrieval(generated: Sequence[str], real: Sequence[str], pool: Sequence[str], seed: int = 0) -> float:
    """Retrieval@1 among 10: for each i, the real poems real[i] and 9 others of its form drawn from
    `pool` are ranked by character 1–2-gram TF-IDF cosine to generated[i] (first characters left
    out, as a poem written from the real poem's first character shares it); the share of i where
    real[i] ranks first (ties count against). Chance is 0.10."""
    if len(generated) != len(real):
        raise ValueError(f"title_retrieval: {len(generated)} generated poems for {len(real)} real ones")
    if not real:
        return float("nan")
    rng = random.Random(seed)
    by_form: dict[str, list[str]] = {}
    for t in dict.fromkeys(pool):
        by_form.setdefault(form_of(t), []).append(t)
    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True)
    vec.fit([_body(t) for t in [*dict.fromkeys(pool), *real]])
    hits = 0
    for g, r in zip(generated, real, strict=True):
        others = [t for t in by_form.get(form_of(r), []) if t != r]
        if len(others) < RETRIEVAL_CANDIDATES - 1:
            raise ValueError(
                f"title_retrieval: the pool has {len(others)} other poems of the form {form_of(r)}, need 9"
            )
        candidates = [r, *rng.sample(others, RETRIEVAL_CANDIDATES - 1)]
        sims = (vec.transform([_body(t) for t in candidates]) @ vec.transform([_body(g)]).T).toarray().ravel()
        hits += bool(sims[0] > sims[1:].max())
    return hits / len(real)


# ---------------------------------------------------------------- (e) whose manner


class PoetAttribution:
    """Which of the `top` poets with most poems wrote a poem: character 1–2-gram TF-IDF + logistic
    regression (classes balanced, so chance is 1 / top), trained on those poets' poems."""

    def __init__(self, top: int = 20, ngrams: tuple[int, int] = (1, 2), C: float = 10.0):
        self.top = top
        self.vec = TfidfVectorizer(analyzer="char", ngram_range=ngrams, sublinear_tf=True, min_df=2)
        self.clf = LogisticRegression(C=C, max_iter=1000, class_weight="balanced")
        self.poets: list[str] = []
        self.counts: dict[str, int] = {}  # training poems a poet

    def fit(self, texts: Sequence[str], authors: Sequence[str]) -> PoetAttribution:
        """Train on a corpus's train split (texts and their authors, aligned)."""
        counts = Counter(a for a in authors if a not in ANONYMOUS)  # placeholders are never among those attributed
        top = counts.most_common(self.top)
        if len(top) < 2:
            raise ValueError("PoetAttribution.fit needs poems of at least 2 named poets")
        self.poets = [a for a, _ in top]
        self.counts = dict(top)
        keep = set(self.poets)
        pairs = [(t, a) for t, a in zip(texts, authors, strict=True) if a in keep]
        self.clf.fit(self.vec.fit_transform([t for t, _ in pairs]), [a for _, a in pairs])
        return self

    def predict(self, texts: Sequence[str]) -> list[str]:
        if not texts:
            return []
        return [str(a) for a in self.clf.predict(self.vec.transform(list(texts)))]

    def share(self, texts: Sequence[str], poet: str) -> float:
        """The share of `texts` attributed to `poet` (one of `.poets`)."""
        if poet not in self.poets:
            raise ValueError(f"{poet} is not among the {len(self.poets)} poets of the attribution")
        predicted = self.predict(texts)
        return sum(a == poet for a in predicted) / len(predicted) if predicted else float("nan")

    def reference(self, texts: Sequence[str], authors: Sequence[str]) -> dict[str, Any]:
        """Each poet's own poems (e.g. the test split) attributed to them: per poet and over all."""
        per: dict[str, dict[str, float | int]] = {}
        own = [(t, a) for t, a in zip(texts, authors, strict=True) if a in self.counts]
        predicted = self.predict([t for t, _ in own])
        for poet in self.poets:
            mine = [p for (_, a), p in zip(own, predicted, strict=True) if a == poet]
            if mine:
                per[poet] = {"poems": len(mine), "share": round(sum(p == poet for p in mine) / len(mine), 4)}
        right = sum(p == a for (_, a), p in zip(own, predicted, strict=True))
        return {
            "poems": len(own),
            "share": round(right / len(own), 4) if own else None,  # over all their poems
            "mean_share": round(_mean([v["share"] for v in per.values()]), 4) if per else None,  # poets alike
            "chance": round(1 / len(self.poets), 4),
            "poets": per,
        }


# ---------------------------------------------------------------- (d) keywords where asked


def keyword_report(texts: Sequence[str], plans: Sequence[Sequence[tuple[str, int]]]) -> dict[str, float | int | None]:
    """Plans give each poem's (keyword, line index) pairs: the share of keywords present anywhere in
    their poem, and the share present in their planned line."""
    if len(texts) != len(plans):
        raise ValueError(f"keyword_report: {len(texts)} poems for {len(plans)} plans")
    total = anywhere = placed = 0
    for text, plan in zip(texts, plans, strict=True):
        lines = regular.split_lines(text)
        whole = "".join(lines)
        for word, k in plan:
            total += 1
            anywhere += word in whole
            placed += 0 <= k < len(lines) and word in lines[k]
    return {
        "keywords": total,
        "present": round(anywhere / total, 4) if total else None,
        "placed": round(placed / total, 4) if total else None,
    }


# ---------------------------------------------------------------- fitted judges, once a process

_FITTED: dict[tuple, Any] = {}


def _digest(*parts: Sequence[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        for s in part:
            h.update(s.encode("utf-8"))
            h.update(b"\x00")
        h.update(b"\x01")
    return h.hexdigest()


def fitted(kind: str, texts: Sequence[str], authors: Sequence[str] = (), seed: int = 0) -> Any:
    """A `Coherence` ("coherence") or `PoetAttribution` ("attribution") fitted on these texts, kept
    in memory for the process (keyed by a digest of the texts), so that every checkpoint shares it."""
    make: dict[str, Callable[[], Any]] = {
        "coherence": lambda: Coherence().fit(texts, seed),
        "attribution": lambda: PoetAttribution().fit(texts, authors),
    }
    if kind not in make:
        raise ValueError(f"unknown judge {kind!r}; one of {', '.join(make)}")
    key = (kind, seed, _digest(texts, authors))
    if key not in _FITTED:
        _FITTED[key] = make[kind]()
    return _FITTED[key]
