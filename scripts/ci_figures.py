"""The three genres' test figures of a checkpoint, and how its 词 read beside human ones.

    python scripts/ci_figures.py --checkpoint DIR --tang ../shared/data/chinese-poetry/quantangshi \\
        --songci ../shared/data/chinese-poetry/songci [--song DIR] [--per 200]

Test loss (nats a token, the poems' own tokens, alone and given their genre where the model has
genre tokens) of the Tang poems, the Song 词 and the Song poems (`--song`: the npm package's
dist/quantangshi), each split by the checkpoint's own rules but with poems up to 200 characters in
the test split (most 词 are longer than the 80 characters the Tang test split keeps). Then the
two-sample AUC (`readers.two_sample_auc`, as in `tangshi eval --readers`) of the model's 词 against
the human test 词 of the 20 most common 词牌: for each human test 词 in pattern (up to `--per`), the
model writes one 词 of its 词牌 and format (its first character as the begin); both sides are
written with the format's punctuation (，。), so that the classifier reads characters, not marks.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

from tangshi.api import Poet
from tangshi.data.corpus import encode_split, load_corpus
from tangshi.evaluation import readers as R
from tangshi.evaluation.losses import condition_ids, mean_loss
from tangshi.prosody import cipai


def losses(poet: Poet, paths: list[str]) -> dict:
    ckpt = poet.ckpt
    cfg = replace(ckpt.config.data, max_length=200)
    corpus = load_corpus(paths, cfg)
    seqs = encode_split(corpus, ckpt.vocab, "test")
    alone, tokens = mean_loss(ckpt.model, seqs)
    out = {"poems": len(seqs), "tokens": tokens, "alone": round(alone, 4), "perplexity": round(math.exp(alone), 1)}
    if ckpt.vocab.genres():
        test = "test"
        conds = condition_ids([""] * len(seqs), corpus.authors_of(test), ckpt.vocab, cfg.max_title, title=False,
                              author=False, genres=[g for g in corpus.genres_of(test)])  # fmt: skip
        given, _ = mean_loss(ckpt.model, seqs, conds=conds, sep=ckpt.vocab.sep)
        out["given_genre"] = round(given, 4)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--tang", required=True)
    ap.add_argument("--songci", required=True)
    ap.add_argument("--song", help="the Song poems (dist/quantangshi of chinese-poetry@2.0.1)")
    ap.add_argument("--per", type=int, default=200, help="human test 词 read at most")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    poet = Poet.load(args.checkpoint)
    report = {"tang": losses(poet, [args.tang]), "ci": losses(poet, [args.songci])}
    if args.song:
        report["song"] = losses(poet, [args.song])
    print(json.dumps(report, ensure_ascii=False), flush=True)

    corpus = load_corpus([args.songci], replace(poet.ckpt.config.data, max_length=200))
    counts = Counter(corpus.titles)  # a 词's title is its 词牌 (chinese-poetry's rhythmic)
    top = [n for n, _ in counts.most_common() if cipai.known(n)][:20]
    human, written = [], []
    for text, name in zip(corpus.texts_of("test"), corpus.titles_of("test"), strict=True):
        if name not in top or len(human) >= args.per:
            continue
        r = cipai.check(text, name)
        if not r.in_pattern:
            continue
        human.append("".join(r.parts))
        begin = r.text_clauses[0][0]
        seed = args.seed + len(human)
        begin = begin if begin in poet.vocab else ""
        written.append(poet.write(begin, seeds=[seed], nums=[1], cipai=name, format=r.format)[0].text)
    auc = R.two_sample_auc(written, human, args.seed)
    print(json.dumps({"ci_auc": round(auc, 4), "pairs": len(human), "cipai": top, "samples": written[:3],
                      "human": human[:3]}, ensure_ascii=False))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
