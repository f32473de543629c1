"""Poems from human poems' first characters under several writing settings: AUC and coherence side by side.

    python scripts/sampler_settings.py '{"default": {}, "t1.0": {"temperature": 1.0}}' [--poems 200] [--draws 3]

Each setting is a JSON object of `Poet.write` options. For each of `--draws` draws (seeds 1, 2, …) of
`--poems` regular test poems (`suite.human_sample`), the model (`--checkpoint`, default the bundled
one) writes one poem from each poem's first character, in its form and free (`suite.write_texts`,
seed 1 + i). Printed per setting: the two-sample AUC against as many other test poems of the draw
(`readers.two_sample_auc`) and coherence from line-shuffled (0 %) to human (100 %) (the judge
`tangshi eval --readers` uses, fitted on the train split), in form and free, the mean over the draws
with each draw's value beside it. One draw's AUC moves by about ±0.05, hence several.
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("settings", help="a JSON object: name -> options")
    ap.add_argument("--poems", type=int, default=200)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--data", default="../shared/data/chinese-poetry/quantangshi")
    args = ap.parse_args()
    settings = json.loads(args.settings)
    poet = api.Poet.load(args.checkpoint)
    corpus = load_corpus([args.data], poet.ckpt.config.data)
    coherence = R.fitted("coherence", corpus.texts_of("train"), seed=0)
    draws = [suite.human_sample(corpus, "test", args.poems, seed) for seed in range(1, args.draws + 1)]
    refs = []
    for human in draws:
        h = statistics.mean(coherence.score(human.texts))
        s = statistics.mean(coherence.score(R.shuffle_lines(human.texts, 1)))
        refs.append((h, s))
    for name, options in settings.items():
        t0 = time.perf_counter()
        rows: dict[str, list[tuple[float, float]]] = {"in form": [], "free": []}
        for human, (h, s) in zip(draws, refs, strict=True):
            begins = [t[0] for t in human.texts]
            for kind, forms in (("in form", human.forms), ("free", ["free"] * len(human.forms))):
                texts, _ = suite.write_texts(poet, begins, forms, 1, **options)
                auc = R.two_sample_auc(texts, human.control, 1)
                rows[kind].append((auc, (statistics.mean(coherence.score(texts)) - s) / (h - s)))
        parts = []
        for kind, values in rows.items():
            aucs, cohs = [a for a, _ in values], [c for _, c in values]
            parts.append(
                f"AUC {kind} {statistics.mean(aucs):.3f} ({' '.join(f'{a:.3f}' for a in aucs)}) "
                f"coherence {statistics.mean(cohs):.0%} ({' '.join(f'{c:.0%}' for c in cohs)})"
            )
        print(f"{name}: {'; '.join(parts)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
