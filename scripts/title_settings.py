"""Poems written for test titles under several settings: title retrieval, AUC and coherence side by side.

    python scripts/title_settings.py '{"default": {}, "guidance 4": {"guidance": 4}}' [--poems 400] [--seeds 1 1001]

Each setting is a JSON object of `Poet.write` options; two extra keys build the request from the
title: "theme_title": true passes the title as --theme too, "kw_title": true passes its first two
words (n: its first n) (`WordStats.words_in`, no character shared) as --keywords (the title alone where the form
cannot place them). For the first `--poems` regular test poems of `suite.human_sample` (seed 1), the
bundled model writes one poem for each one's title in its form (seed s + i for each of `--seeds` s,
default 1; no begin character). Printed per setting: retrieval@1 of the poem's own real poem among
10 (`readers.title_retrieval`), the two-sample AUC against as many other test poems and against the
real poems of the same titles, and coherence from shuffled (0 %) to human (100 %). With several
seeds each figure is the mean, each seed's beside it: a poem changes with any change to how it is
written, so a figure moves by about ±0.02 (400 poems) between draws that are equally good.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from tangshi import api
from tangshi.data.corpus import load_corpus
from tangshi.evaluation import readers as R
from tangshi.evaluation import suite
from tangshi.options import OptionError


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("settings", help="a JSON object: name -> options")
    ap.add_argument("--poems", type=int, default=200)
    ap.add_argument("--data", default="../shared/data/chinese-poetry/quantangshi")
    ap.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the bundled model)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1], help="the poems' base seeds")
    args = ap.parse_args()
    settings = json.loads(args.settings)
    poet = api.Poet.load(args.checkpoint)
    corpus = load_corpus([args.data], poet.ckpt.config.data)
    n = args.poems
    human = suite.human_sample(corpus, "test", n, 1)
    judges = suite.Judges(human, corpus.texts_of("test"), list(range(n)), None, None, {}, 1)
    coherence = R.fitted("coherence", corpus.texts_of("train"), seed=0)
    h = statistics.mean(coherence.score(human.texts))
    s = statistics.mean(coherence.score(R.shuffle_lines(human.texts, 1)))
    for name, options in settings.items():
        t0, figures = time.perf_counter(), []
        for seed in args.seeds:
            texts = [
                written_for(poet, title, form, seed + i, options)
                for i, (title, form) in enumerate(zip(human.titles, human.forms, strict=True))
            ]
            c = (statistics.mean(coherence.score(texts)) - s) / (h - s)
            figures.append(
                (
                    suite._retrieval(judges, texts),
                    R.two_sample_auc(texts, human.control, 1),
                    R.two_sample_auc(texts, human.texts, 1),
                    c,
                )
            )
        parts = []
        for k, (label, fmt) in enumerate(
            (("retrieval", ".3f"), ("auc_other", ".3f"), ("auc_same", ".3f"), ("coherence", ".0%"))
        ):
            values = [f[k] for f in figures]
            each = f" ({' '.join(format(v, fmt) for v in values)})" if len(values) > 1 else ""
            parts.append(f"{label} {format(statistics.mean(values), fmt)}{each}")
        print(f"{name}: {' '.join(parts)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


def written_for(poet, title: str, form: str, seed: int, options: dict) -> str:
    """One poem for a title in its form under a setting (its "theme_title" and "kw_title" keys built here)."""
    opts = dict(options)
    if opts.pop("theme_title", False):
        opts["theme"] = title[:20]
    if kw := opts.pop("kw_title", False):
        words, seen = [], set()
        for w in poet.words.words_in(title):
            if not seen & set(w) and len(words) < (2 if kw is True else kw):
                words.append(w)
                seen |= set(w)
        opts["keywords"] = tuple(words)
    try:
        written = poet.write("", seeds=[seed], nums=[1], form=form, title=title[:20], **opts)
    except OptionError:  # keywords the form cannot place: the title alone
        opts.pop("keywords", None)
        written = poet.write("", seeds=[seed], nums=[1], form=form, title=title[:20], **opts)
    return written[0].text


if __name__ == "__main__":
    sys.exit(main())
