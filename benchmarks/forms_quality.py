"""Poems in form with a checkpoint (default: the bundled model), measured against the prosody spec.

    python benchmarks/forms_quality.py --data ../shared/data/chinese-poetry/quantangshi

For each of 五绝 七绝 五律 七律: 100 poems — 70 from the begin characters 日 红 山 夜 湖 海 月 in turn
and 30 acrostics of 4 or 8 heads — written with the default options (a stochastic beam; `--beam 0`:
the sampler) and `--tones relaxed`. It
reports the share in the right form, rhyming, the relaxed tone score (mean and share fully
compliant), the strict score, lines copied verbatim from the training split, acrostic heads in
place, and the mean per-token negative log-likelihood under the model against unconstrained samples
of the same length from the same begin characters. Then the time to write one 七律 (median of 15).
With `--beam K` or `--rerank N` the poems are written by a beam of K or sample-then-rerank instead.
The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from tangshi.api import Poet
from tangshi.cli import tune_process
from tangshi.data.corpus import load_corpus
from tangshi.prosody.regular import FORMS, check, split_lines

BEGINS = "日红山夜湖海月"
HEADS4 = ["春夏秋冬", "风花雪月", "琴棋书画", "梅兰竹菊", "东南西北", "江山如画"]
HEADS8 = ["春江花月夜明山水", "天地玄黄宇宙洪荒"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the corpus the model was trained on (for copied lines)")
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--show", type=int, default=5, help="poems to print per form")
    ap.add_argument(
        "--beam", type=int, default=None, help="beam width, 0 to sample (none: the default writing, a stochastic beam)"
    )
    ap.add_argument("--rerank", type=int, default=1, help="sample this many candidates a poem and keep the best")
    args = ap.parse_args()
    tune_process([__file__, *sys.argv[1:]])
    torch.set_num_threads(args.threads)
    poet = Poet.load(args.checkpoint)
    corpus = load_corpus([args.data], poet.ckpt.config.data)
    train_lines = {ln for text in corpus.texts_of("train") for ln in split_lines(text)}
    print(f"{len(train_lines):,} distinct lines in the training split")

    rows, summary = [], {}
    for f, (form, (n_lines, _)) in enumerate(FORMS.items()):
        seed = args.seed + 10_000 * f  # each form its own seeds: a 五律 would otherwise open as the 五绝 did
        poems = []
        for i, begin in enumerate(BEGINS):
            beam = max(args.beam, 10) if args.beam else args.beam  # ten poems of one beam
            poems += poet.write([begin], num=10, seed=seed + 100 * i, form=form, beam=beam, rerank=args.rerank)
        heads = HEADS4 if n_lines == 4 else HEADS8  # one head a line
        for i in range(30):
            h = heads[i % len(heads)]
            poems += poet.write(
                [""], num=1, seed=seed + 1000 + i, form=form, acrostic=h, beam=args.beam, rerank=args.rerank
            )
        free = []
        length = len(poems[0].text)  # characters and punctuation of one poem in this form
        for i, begin in enumerate(BEGINS):
            free += poet.write([begin], num=10, seed=seed + 100 * i, max_length=length, ignore_end=True)
        reports = [check(p.text) for p in poems]
        lines = [ln for r in reports for ln in r.lines]
        acro = [p for p in poems if p.acrostic]
        heads_ok = sum(
            all(r.lines[k][0] == h for k, h in enumerate(p.acrostic))
            for p, r in zip(poems, reports, strict=True)
            if p.acrostic
        )
        nll = statistics.mean(p.nll for p in poems)
        nll_free = statistics.mean(p.nll for p in free)
        s = {
            "form": sum(r.form == form for r in reports) / len(reports),
            "rhyme": sum(r.rhyme for r in reports) / len(reports),
            "relaxed_mean": statistics.mean(r.relaxed for r in reports),
            "relaxed_full": sum(r.relaxed_ok for r in reports) / len(reports),
            "strict_mean": statistics.mean(r.strict for r in reports),
            "copied_lines": sum(ln in train_lines for ln in lines) / len(lines),
            "heads": heads_ok / len(acro),
            "nll": nll,
            "nll_free": nll_free,
        }
        summary[form] = s
        rows.append(
            f"| {form} | {len(reports)} | {100 * s['form']:.0f} % | {100 * s['rhyme']:.0f} % | "
            f"{s['relaxed_mean']:.3f} | "
            f"{100 * s['relaxed_full']:.0f} % | {s['strict_mean']:.3f} | {100 * s['copied_lines']:.1f} % | "
            f"{100 * s['heads']:.0f} % | {nll:.3f} / {nll_free:.3f} = {nll / nll_free:.2f} |"
        )
        for p in poems[:: max(1, len(poems) // max(args.show, 1))][: args.show]:
            print(f"[{form}{' 藏头 ' + p.acrostic if p.acrostic else ''}] {p.text}")

    print()
    print(
        "| form | poems | in form | rhyme | relaxed tone, mean | relaxed = 1 | strict, mean | copied lines "
        "| heads in place | NLL form / free |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))

    times = []
    opts = {"beam": args.beam, "rerank": args.rerank}
    poet.write(["月"], num=1, seed=0, form="七律", **opts)
    for i in range(15):
        t0 = time.perf_counter()
        poet.write(["月"], num=1, seed=i, form="七律", **opts)
        times.append(time.perf_counter() - t0)
    qilv = 1000 * statistics.median(times)
    how = (
        f"beam {args.beam}" if args.beam else f"rerank {args.rerank}" if args.rerank > 1
        else "sampled" if args.beam == 0 else "the default writing"
    )  # fmt: skip
    print(f"\none 七律, relaxed tones, {how}, single: {qilv:.1f} ms (median of 15)")
    values = list(summary.values())
    print(
        f"forms_quality: form={min(s['form'] for s in values):.3f} rhyme={min(s['rhyme'] for s in values):.3f} "
        f"relaxed_full_min={min(s['relaxed_full'] for s in values):.3f} "
        f"copied_max={max(s['copied_lines'] for s in values):.3f} "
        f"nll_ratio_max={max(s['nll'] / s['nll_free'] for s in values):.3f} qilv_ms={qilv:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
