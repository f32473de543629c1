"""Characters outside GB 2312 in written and human poems, before and after the standard forms.

    python benchmarks/variants.py --data ../shared/data/chinese-poetry/quantangshi

Writes 500 poems with the bundled model (100 begin characters of the test split's poems, each in
五绝 七绝 五律 七律 and free form, fixed seeds), with OpenCC t2s alone ("before": `data.standard`
switched off) and as `decode.finish` writes them ("after": the same poems through `standard.poem_map`,
which is what `finish` applies). Beside them, 500 human poems of the test split after the same
normalisation. Reports the share of characters outside GB 2312 (`ch.encode("gb2312")` fails) and
the share of poems with one. The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from tangshi.api import Poet
from tangshi.cli import tune_process
from tangshi.data import standard
from tangshi.data.corpus import load_corpus
from tangshi.data.standard import gb2312
from tangshi.generation import decode
from tangshi.prosody.regular import FORMS, is_han

FORMS_OF = [*FORMS, ""]  # the four regular forms and free form


def outside(text: str) -> list[str]:
    return [ch for ch in text if is_han(ch) and not gb2312(ch)]


def shares(texts: list[str]) -> dict:
    chars = sum(sum(map(is_han, t)) for t in texts)
    odd = [outside(t) for t in texts]
    return {
        "poems": len(texts),
        "chars_outside": round(100 * sum(map(len, odd)) / max(chars, 1), 3),
        "poems_with_one": round(100 * sum(1 for o in odd if o) / max(len(texts), 1), 1),
    }


def after(texts: list[str]) -> list[str]:
    out = []
    for t in texts:
        mapping = standard.poem_map(t)
        out.append("".join(mapping.get(ch, ch) for ch in t))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the corpus the model was trained on (its test split)")
    ap.add_argument("--begins", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    tune_process([__file__, *sys.argv[1:]])
    torch.set_num_threads(args.threads)
    poet = Poet.load()
    corpus = load_corpus([args.data], poet.ckpt.config.data)
    human = corpus.texts_of("test")[:500]
    begins = []
    for t in corpus.texts_of("test"):
        if t and t[0] in poet.ckpt.vocab and is_han(t[0]) and t[0] not in begins:
            begins.append(t[0])
        if len(begins) == args.begins:
            break
    decode.poem_map = lambda text, regular=True: {}  # "before": OpenCC t2s alone
    written = []
    for i, begin in enumerate(begins):
        for f, form in enumerate(FORMS_OF):
            written += [p.text for p in poet.write([begin], seed=1000 * i + f, **({"form": form} if form else {}))]
    odd = sorted({ch for t in written for ch in outside(t)})
    kept = sorted({ch for t in after(written) for ch in outside(t)})
    print("written, outside GB 2312 before:", "".join(odd))
    print("written, outside GB 2312 after: ", "".join(kept))
    row = {
        "written_before": shares(written),
        "written_after": shares(after(written)),
        "human_before": shares(human),
        "human_after": shares(after(human)),
    }
    for k, v in row.items():
        print(f"{k:15} {v}")
    print(json.dumps(row, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
