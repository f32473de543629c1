"""A reader-panel trial (docs/reader-panel.md, round 3): a `title` sheet whose model poems are each
written after reading, as `--prefix`, the training poem of the same form whose title is nearest the
sheet's title (cosine of character 1–2-gram TF-IDF vectors of the titles). Not a tangshi option: the
readers found it worse (fluency -0.30), and it would need the training poems shipped with the model.

    python scripts/prefix_trial.py --data ../shared/data/chinese-poetry/quantangshi --split val \\
        --seed 95 --out panels/prefix-s95 [--exclude PANEL ...]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from tangshi.api import Poet
from tangshi.evaluation import panel as pn
from tangshi.prosody import regular


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--split", default="val", choices=["val", "test"])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--pairs", type=int, default=48)
    ap.add_argument("--out", required=True)
    ap.add_argument("--exclude", nargs="+", action="extend", default=[])
    args = ap.parse_args()
    poet = Poet.load()
    cfg = poet.ckpt.config.data
    train = []  # (title, text, form) of the training split's titled poems with a form ("other" too)
    for s in pn.read_sources(args.data, cfg):
        title = pn.shown_title(s.raw_title, cfg.script) if s.split == 0 else ""
        form = regular.check(s.poem.content).form if title else None
        if form is not None:
            train.append((title, s.poem.content, form))
    vectors = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True)
    table = vectors.fit_transform([t for t, _, _ in train])

    def nearest(title: str, form: str) -> str:
        near = np.argsort(-(table @ vectors.transform([title]).T).toarray().ravel())
        return next((train[i][1] for i in near[:50] if train[i][2] == form), train[int(near[0])][1])

    plain_write = pn.write_pair

    def write_pair(poet, pair, options, seed):
        return plain_write(poet, pair, dataclasses.replace(options, prefix=nearest(pair.title, pair.form)), seed)

    pn.write_pair = write_pair
    pn.make_panel(args.data, args.out, pairs=args.pairs, seed=args.seed, kind="title", split=args.split,
                  poet=poet, exclude=args.exclude)  # fmt: skip
    print(f"{args.pairs} pairs in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
