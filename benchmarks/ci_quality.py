"""词 by 词牌 with a checkpoint (default: the bundled model), measured against the 词谱 and the 词林正韵.

    python benchmarks/ci_quality.py --songci ../shared/data/chinese-poetry/songci [--per 100]

For each of the 20 词牌 with most 词 in the Song 词 (the 词谱 knowing them; 失调名 aside), `--per` 词
in its first format, written with the default sampler: half from the model's own begin, half as
acrostics of 2 heads (春江, 风月, …). It reports, per 词牌 and over all: the share in pattern
(clauses and characters as the format), every 韵位 in its group's 部, the share of 韵位 in their 部,
the 平/仄 positions kept (an acrostic head's place keeps no tone, as in 诗), the 词 with a clause (of
4 characters or more) found verbatim in the Song 词 or the model's training corpus (`--data`,
optional) and the share of such clauses, rule failures, and the seconds. Ten 词 are printed with their 词牌.
The last line is machine-readable.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from tangshi.api import Poet
from tangshi.cli import tune_process
from tangshi.data.corpus import find_files, read_file
from tangshi.prosody import cipai

HEADS = ["春江", "风月", "花雨", "山水", "秋夜"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--songci", required=True, help="the Song 词 (chinese-poetry songci folder)")
    ap.add_argument("--data", help="the corpus the model was trained on (its lines count as copies too)")
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--per", type=int, default=100, help="词 a 词牌")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    tune_process([__file__, *sys.argv[1:]])
    torch.set_num_threads(args.threads)
    poet = Poet.load(args.checkpoint)
    raw = [p for f in find_files([args.songci]) for p in read_file(f, "auto", [])]
    counts = Counter(p.cipai for p in raw if p.cipai)
    names = [n for n, _ in counts.most_common() if cipai.known(n)][: args.top]
    known = {c for p in raw for c in cipai.clauses_of(p.content) if len(c) >= 4}
    if args.data:
        texts = [p.content for f in find_files([args.data]) for p in read_file(f, "auto", [])]
        known |= {c for t in texts for c in cipai.clauses_of(t) if len(c) >= 4}
    rows, shown, total = {}, [], []
    for k, name in enumerate(names):
        t0 = time.perf_counter()
        half = args.per // 2
        seed = args.seed + 1000 * k
        poems = list(poet.write([""], nums=[half], seed=seed, cipai=name))
        for j, heads in enumerate(HEADS):  # the acrostics, a batch a pair of heads
            n = (args.per - half) // len(HEADS) + (j < (args.per - half) % len(HEADS))
            if n:
                poems += poet.write([""], nums=[n], seed=seed + 500 + 100 * j, cipai=name, acrostic=heads)
        seconds = time.perf_counter() - t0
        reps = [p.prosody for p in poems]
        copied = sum(any(c in known for c in cipai.clauses_of(p.text) if len(c) >= 4) for p in poems)
        clauses = [c for p in poems for c in cipai.clauses_of(p.text) if len(c) >= 4]
        copied_clauses = sum(c in known for c in clauses) / len(clauses)
        rows[name] = {
            "ci": len(poems),
            "in_pattern": statistics.mean(r["in_pattern"] for r in reps),
            "rhyme_ok": statistics.mean(r["rhyme_ok"] for r in reps),
            "rhyme": statistics.mean(r["rhyme"] for r in reps),
            "tones": statistics.mean(r["tones"] for r in reps),
            "copied": copied / len(poems),
            "copied_clauses": copied_clauses,
            "failures": sum(p.failure is not None for p in poems),
            "seconds": round(seconds, 1),
        }
        total += reps
        if len(shown) < 10 and k % 2 == 0:
            shown.append((name, poems[0].text))
            if len(shown) < 10:
                shown.append((name, poems[-1].text))
        print(f"{name}: {json.dumps(rows[name], ensure_ascii=False)}", flush=True)
    head = ["词牌", "词", "in pattern", "every 韵位 in its 部", "韵位 in their 部", "平/仄 kept"]
    head += ["词 with a copied clause", "clauses copied", "failures"]
    print("\n| " + " | ".join(head) + " |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        cells = [f"{100 * r['in_pattern']:.1f} %", f"{100 * r['rhyme_ok']:.1f} %", f"{100 * r['rhyme']:.1f} %",
                 f"{r['tones']:.3f}", f"{100 * r['copied']:.1f} %", f"{100 * r['copied_clauses']:.2f} %",
                 str(r["failures"])]  # fmt: skip
        print(f"| {name} | {r['ci']} | " + " | ".join(cells) + " |")
    print()
    for name, text in shown[:10]:
        print(f"[{name}] {text}")
    n = len(total)
    print(
        f"ci_quality: ci={n} in_pattern={statistics.mean(r['in_pattern'] for r in total):.4f} "
        f"rhyme_ok={statistics.mean(r['rhyme_ok'] for r in total):.4f} "
        f"tones={statistics.mean(r['tones'] for r in total):.4f} "
        f"copied={statistics.mean(r['copied'] for r in rows.values()):.4f} "
        f"copied_clauses={statistics.mean(r['copied_clauses'] for r in rows.values()):.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
