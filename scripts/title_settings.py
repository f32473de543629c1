"""Poems written for test titles under several settings: title retrieval, AUC and coherence side by side.

    python scripts/title_settings.py '{"default": {}, "guidance 4": {"guidance": 4}}' [--poems 400]

Each setting is a JSON object of `Poet.write` options; two extra keys build the request from the
title: "theme_title": true passes the title as --theme too, "kw_title": true passes its first two
words (`WordStats.words_in`, no character shared) as --keywords (the title alone where the form
cannot place them). For the first `--poems` regular
test poems of `suite.human_sample` (seed 1), the bundled model writes one poem for each one's title
in its form (seed 1 + i, no begin character). Printed per setting: retrieval@1 of the poem's own
real poem among 10 (`readers.title_retrieval`), the two-sample AUC against as many other test poems
and against the real poems of the same titles, and coherence from shuffled (0 %) to human (100 %).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from tangshi import api, suite
from tangshi import readers as R
from tangshi.corpus import load_corpus
from tangshi.options import OptionError


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("settings", help="a JSON object: name -> options")
    ap.add_argument("--poems", type=int, default=200)
    ap.add_argument("--data", default="../shared/data/chinese-poetry/quantangshi")
    args = ap.parse_args()
    settings = json.loads(args.settings)
    poet = api.Poet.load()
    corpus = load_corpus([args.data], poet.ckpt.config.data)
    n = args.poems
    human = suite.human_sample(corpus, "test", n, 1)
    judges = suite.Judges(human, corpus.texts_of("test"), list(range(n)), None, None, {}, 1)
    coherence = R.fitted("coherence", corpus.texts_of("train"), seed=0)
    h = statistics.mean(coherence.score(human.texts))
    s = statistics.mean(coherence.score(R.shuffle_lines(human.texts, 1)))
    for name, options in settings.items():
        t0, texts = time.perf_counter(), []
        for i, (title, form) in enumerate(zip(human.titles, human.forms, strict=True)):
            opts = dict(options)
            if opts.pop("theme_title", False):
                opts["theme"] = title[:20]
            if opts.pop("kw_title", False):
                words, seen = [], set()
                for w in poet.words.words_in(title):
                    if not seen & set(w) and len(words) < 2:
                        words.append(w)
                        seen |= set(w)
                opts["keywords"] = tuple(words)
            try:
                written = poet.write("", seeds=[1 + i], nums=[1], form=form, title=title[:20], **opts)
            except OptionError:  # keywords the form cannot place: the title alone
                opts.pop("keywords", None)
                written = poet.write("", seeds=[1 + i], nums=[1], form=form, title=title[:20], **opts)
            texts.append(written[0].text)
        retrieval = suite._retrieval(judges, texts)
        auc_other = R.two_sample_auc(texts, human.control, 1)
        auc_same = R.two_sample_auc(texts, human.texts, 1)
        c = (statistics.mean(coherence.score(texts)) - s) / (h - s)
        print(
            f"{name}: retrieval {retrieval:.3f} auc_other {auc_other:.3f} auc_same {auc_same:.3f} "
            f"coherence {c:.0%} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
