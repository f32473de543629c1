"""Test loss of the Tang poems, alone and given what writing gives the model: the figures of docs/ci.md.

    python scripts/tang_loss.py src/tangshi/bundled runs/mixed-tang35/best [--data TANG]

For each checkpoint: `losses.corpus_loss` on the test split of the Tang poems (read with the
checkpoint's own filters: the same poems for every model of this project), the poems' own tokens, alone,
given the title, given the genre, given genre and title (the columns a model was not trained for: –).
"""

from __future__ import annotations

import argparse
import sys

from tangshi.evaluation import losses
from tangshi.model import checkpoint


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--data", default="../shared/data/chinese-poetry/quantangshi")
    args = ap.parse_args()
    print("| checkpoint | tokens | alone | given the title | given the genre | given genre and title |")
    print("|---|---:|---:|---:|---:|---:|")
    for path in args.checkpoints:
        ckpt = checkpoint.load(path)
        d, cells, tokens = ckpt.config.data, [], 0
        for given in ((), ("title",), ("genre",), ("genre", "title")):
            if ("title" in given and not d.titles) or ("genre" in given and not d.genres):
                cells.append("–")
                continue
            r = losses.corpus_loss(ckpt, [args.data], split="test", given=given)
            cells.append(f"{r['loss']:.4f}")
            tokens = r["tokens"]
        print(f"| {path} | {tokens:,} | {' | '.join(cells)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
