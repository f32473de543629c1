"""Validation loss after the same wall-clock budget for the seed presets and `default` per cell.

    python benchmarks/time_to_quality.py --data ../shared/data/chinese-poetry/quantangshi --minutes 10

Runs each configuration in turn with `tangshi train --max-minutes M` (one process at a time, so
each gets the whole machine), records each result in OUT/results.json as it finishes (a re-run
skips finished ones), and prints a Markdown table. The last line is machine-readable.

`--only default-lstm-no-fast default-lstm-adaptive-only default-lstm-bf16-only` runs the default
LSTM without its fast options, with the adaptive softmax alone and with bf16 alone, to show that
each one loses nothing at equal wall time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RUNS = {
    "seed-tf": ["--preset", "seed-tf"],
    "seed-pytorch": ["--preset", "seed-pytorch"],
    "default-lstm": ["--preset", "default", "--cell", "lstm"],
    "default-gru": ["--preset", "default", "--cell", "gru"],
    "default-rnn": ["--preset", "default", "--cell", "rnn"],
    # the fast options one at a time (run with --only): each must do no worse than without it
    "default-lstm-no-fast": ["--preset", "default", "--cell", "lstm", "--output", "full", "--precision", "fp32"],
    "default-lstm-adaptive-only": ["--preset", "default", "--cell", "lstm", "--precision", "fp32"],
    "default-lstm-bf16-only": ["--preset", "default", "--cell", "lstm", "--output", "full"],
}
FAST_VARIANTS = ("default-lstm-no-fast", "default-lstm-adaptive-only", "default-lstm-bf16-only")


def last_rows(metrics: Path) -> tuple[dict, dict]:
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    return train[-1], val[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=Path("runs/time_to_quality"))
    ap.add_argument("--only", nargs="*", choices=list(RUNS), help="run only these")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in args.only or [n for n in RUNS if n not in FAST_VARIANTS]:
        if name in results:
            continue
        run = args.out / name
        cmd = [
            sys.executable,
            "-m",
            "tangshi",
            "train",
            "--data",
            args.data,
            "--out",
            str(run),
            "--max-minutes",
            str(args.minutes),
            "--eval-every",
            "500",
            "--no-progress",
            *RUNS[name],
        ]
        if run.exists():
            cmd = [sys.executable, "-m", "tangshi", "train", "--resume", str(run), "--no-progress"]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        train, val = last_rows(run / "metrics.jsonl")
        tokens_s = train["tokens"] / train["elapsed"]
        results[name] = {
            "val_loss": val["val_loss"],
            "val_ppl": val["val_ppl"],
            "steps": val["step"],
            "epochs": val["epoch"],
            "minutes": round(val["elapsed"] / 60, 2),
            "tokens_per_s": round(tokens_s),
        }
        results_path.write_text(json.dumps(results, indent=1))
    print("| run | validation loss (nats/char) | perplexity | steps | epochs | tokens/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        cells = (name, f"{r['val_loss']:.4f}", f"{r['val_ppl']:.1f}", r["steps"], f"{r['epochs']:.2f}")
        print("| " + " | ".join(map(str, cells)) + f" | {r['tokens_per_s']:,} |")
    defaults = [n for n in results if n.startswith("default") and n not in FAST_VARIANTS]
    best = min(defaults, key=lambda n: results[n]["val_loss"], default=None)
    seeds = [results[n]["val_loss"] for n in ("seed-tf", "seed-pytorch") if n in results]
    if best and seeds:
        print(
            f"time_to_quality: best={best} loss={results[best]['val_loss']:.4f} "
            f"margin_vs_best_seed={min(seeds) - results[best]['val_loss']:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
