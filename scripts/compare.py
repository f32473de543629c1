"""The model comparison, unattended and resumable: train every run, measure it, publish the table.

    python scripts/compare.py --data ../shared/data/chinese-poetry/quantangshi

Runs, in order (each under 2 hours of wall time):
  seed-tf        the seed-tf recipe, 10 epochs
  seed-pytorch   the seed-pytorch recipe, 30 epochs or 110 minutes, whichever comes first
  {rnn,lstm,gru}-{small,large}   the default recipe with that cell at 2 x 256 (embedding 128) and
                 2 x 512 (embedding 256), 20 minutes each (equal wall-clock budgets)

Each run trains into runs/compare/NAME (resumed with `--resume` if a previous invocation was
interrupted), then `tangshi eval` measures its best checkpoint (test split, 100 poems a setting)
and the 7 begin characters are written with seed 1; the result goes to docs/results/NAME.json with
a copy of the run's metrics.jsonl, and docs/results.md and its plots are written again from every
result so far. A run whose result exists is skipped; `--only NAME` runs one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
RUNS = ROOT / "runs" / "compare"
BEGINS = "日红山夜湖海月"

SIZES = {
    "small": ["--hidden-size", "256", "--embedding-size", "128"],
    "large": ["--hidden-size", "512", "--embedding-size", "256"],
}
CELLS = ("rnn", "lstm", "gru")
PLAN: dict[str, list[str]] = {
    "seed-tf": ["--preset", "seed-tf", "--max-epochs", "10"],
    "seed-pytorch": ["--preset", "seed-pytorch", "--max-epochs", "30", "--max-minutes", "110"],
}
for _cell in CELLS:
    for _size, _args in SIZES.items():
        PLAN[f"{_cell}-{_size}"] = ["--preset", "default", "--cell", _cell, "--num-layers", "2", *_args]
        PLAN[f"{_cell}-{_size}"] += ["--max-minutes", "20"]


def tangshi(*args: str, capture: bool = False) -> str:
    cmd = [sys.executable, "-m", "tangshi", *args]
    print("+ " + " ".join(cmd[2:]), flush=True)
    out = subprocess.run(cmd, check=True, text=True, stdout=subprocess.PIPE if capture else None)
    return out.stdout if capture else ""


def run_one(name: str, data: list[str]) -> None:
    out = RUNS / name
    if (out / "best").is_dir() and any(p.name.startswith("step-") for p in out.iterdir()):
        state = json.loads(sorted(out.glob("step-*"))[-1].joinpath("trainer.json").read_text())["state"]
        if state.get("stopped"):
            print(f"{name}: trained ({state['stopped']} at step {state['step']})", flush=True)
        else:
            tangshi("train", "--resume", str(out))
    else:
        tangshi("train", "--data", *data, "--out", str(out), "--no-progress", *PLAN[name])
    evaluate(name, data)


def evaluate(name: str, data: list[str]) -> None:
    """Measure a trained run's best checkpoint into docs/results/NAME.json."""
    out = RUNS / name
    if json.loads((out / "best" / "vocab.json").read_text("utf-8")).get("counts") is None:
        tangshi("index", "--checkpoint", str(out / "best"), "--data", *data)  # counts for --diversity
    t0 = time.time()
    best = f"{name}={out / 'best'}"
    result = json.loads(tangshi("eval", "--checkpoint", best, "--data", *data, "--json", capture=True))
    result["eval_seconds"] = round(time.time() - t0, 1)
    samples = tangshi("write", *BEGINS, "--checkpoint", str(out / "best"), "--seed", "1", "--json", capture=True)
    result["samples"] = [json.loads(line)["text"] for line in samples.splitlines()]
    result["command"] = "tangshi train --data ... " + " ".join(PLAN[name])
    trainer = json.loads(sorted(out.glob("step-*"))[-1].joinpath("trainer.json").read_text())["state"]
    result["training"] = {k: trainer.get(k) for k in ("step", "tokens", "elapsed", "stopped", "best_val", "best_step")}
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    result["training"]["epochs"] = max((r.get("epoch", 0) for r in rows), default=0)
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(out / "metrics.jsonl", RESULTS / f"{name}.metrics.jsonl")
    tmp = RESULTS / f".{name}.json.tmp"
    tmp.write_text(json.dumps(result, ensure_ascii=False, indent=1), "utf-8")
    tmp.replace(RESULTS / f"{name}.json")


EQUAL_STEP = 2000  # where the cells are compared step for step


def cells_section(results: dict) -> list[str]:
    """RNN vs LSTM vs GRU at equal wall time: the table, and what the curves say about why."""
    if not all(f"{c}-{s}" in results for c in CELLS for s in SIZES):
        return []
    out = [
        "",
        "## Which cell wins at equal time",
        "",
        f"Each run had 20 minutes. Tokens/s is the median of the run's logged windows; the validation loss at step"
        f" {EQUAL_STEP:,} compares the cells step for step (each run's schedule decays over its last 40 % of *time*,",
        "so the slower run is further into its decay there, which favours it).",
        "",
        "| size | cell | test loss | test perplexity | vs LSTM | tokens/s | steps "
        f"| validation loss at step {EQUAL_STEP:,} |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for size in SIZES:
        lstm = results[f"lstm-{size}"]["models"][0]["perplexity"]
        for cell in CELLS:
            r = results[f"{cell}-{size}"]
            rows = [json.loads(x) for x in (RESULTS / f"{cell}-{size}.metrics.jsonl").read_text().splitlines()]
            speed = sorted(x["tokens_per_s"] for x in rows if x["kind"] == "train")
            at = next((x["val_loss"] for x in rows if x["kind"] == "val" and x["step"] == EQUAL_STEP), None)
            m = r["models"][0]
            out.append(
                f"| {size} | {cell.upper()} | {m['loss']:.4f} | {m['perplexity']:.1f} "
                f"| {m['perplexity'] / lstm - 1:+.0%} | "
                f"{speed[len(speed) // 2]:,.0f} | {r['training']['step']:,} | {'–' if at is None else f'{at:.3f}'} |"
            )
    out += [
        "",
        "**The LSTM wins at both sizes**, for two reasons the table separates. *Per step* it learns more: at equal",
        "steps its validation loss is the lowest, though the GRU is as far or further into its decay. *Per second*",
        "it runs more steps: on a CPU PyTorch runs the LSTM as oneDNN's fused layer kernel (`mkldnn_rnn_layer`, bf16",
        "on AMX under autocast, one call forward and one backward a layer), while the GRU and the vanilla RNN are",
        "unrolled into a matrix product and a few element-wise operations a time step, each recorded for autograd, so",
        "the GRU, with three quarters of the LSTM's arithmetic, trains slower. The vanilla RNN is the fastest per step",
        "and the worst: without gates its gradient through poems of up to 80 steps vanishes or explodes (clipped at",
        "1); the wider one is worse than the smaller one, the sign of an optimisation problem rather than of capacity.",
    ]
    return out


def publish() -> None:
    """docs/results.md and docs/results/*.png from every result so far."""
    sys.path.insert(0, str(ROOT / "src"))
    from tangshi.evaluation.suite import plots

    results = {p.stem: json.loads(p.read_text("utf-8")) for p in sorted(RESULTS.glob("*.json"))}
    results = {n: results[n] for n in [*PLAN, "bundled"] if n in results}  # bundled: by scripts/make_bundle.py
    if not results:
        return
    rows = [r["models"][0] for r in results.values()]
    human = next(iter(results.values()))["human"]["settings"]["human"]
    lines = [
        "# The comparison",
        "",
        "Made by `python scripts/compare.py --data ../shared/data/chinese-poetry/quantangshi` (resumable; each",
        "run's full result is `docs/results/NAME.json`; the bundled model's is written by `scripts/make_bundle.py`).",
        "Test split of the Tang corpus; 100 poems a setting; free poems with the default sampler (temperature 0.8,",
        "no nucleus cut, diversity 0.35: each character's score lowered by 0.35 x its log training frequency).",
        "Compliance is over the free poems that are regular;",
        "七绝 columns are poems written with `--form 七绝`.",
        "",
        "| run | recipe | steps | epochs | minutes | test loss | test perplexity | free: regular | free: rhyme "
        "| 七绝 strict | free: distinct-2 | free: line repeated | free: copied lines | free: copied 4-grams "
        "| free: end token |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def f(v, fmt="{:.3f}"):
        return "–" if v is None else fmt.format(v)

    for name, r in results.items():
        m, t = r["models"][0], r["training"]
        recipe = " ".join(PLAN[name]) if name in PLAN else r["command"]
        free, q = m["settings"]["free"], m["settings"]["七绝"]
        lines.append(
            f"| {name} | `{recipe}` | {t['step']:,} | {t['epochs']:.2f} | {t['elapsed'] / 60:.0f} | "
            f"{m['loss']:.4f} | {m['perplexity']:.1f} | {f(free['regular'])} | {f(free['rhyme'])} | {f(q['strict'])} | "
            f"{f(free['distinct_2'])} | {f(free['line_repeat'])} | {f(free['copied_lines'])} | "
            f"{f(free['copied_windows'])} | {f(free['end_rate'])} |"
        )
    lines.append(
        f"| human (test split, 100 poems) | – | – | – | – | – | – | {f(human['regular'])} | {f(human['rhyme'])} | – | "
        f"{f(human['distinct_2'])} | {f(human['line_repeat'])} | {f(human['copied_lines'])} | "
        f"{f(human['copied_windows'])} | – |"
    )
    lines += cells_section(results)
    lines += ["", "## Poems from 日 红 山 夜 湖 海 月 (seed 1)", ""]
    lines += ["| run | " + " | ".join(BEGINS) + " |", "|---|" + "---|" * 7]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(s.replace("|", "/") for s in r["samples"]) + " |")
    combined = {"split": "test", "poems_per_setting": 100, "models": rows, "human": {"settings": {"human": human}}}
    runs = {}
    for name in results:
        folder = RESULTS / f".curves-{name}"
        folder.mkdir(exist_ok=True)
        shutil.copy(RESULTS / f"{name}.metrics.jsonl", folder / "metrics.jsonl")
        runs[name] = folder
    for p in plots(combined, RESULTS, runs):
        lines += ["", f"![{p.stem}](results/{p.name})"]
    for folder in runs.values():
        shutil.rmtree(folder)
    (ROOT / "docs" / "results.md").write_text("\n".join(lines) + "\n", "utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--only", choices=list(PLAN), help="run (or resume) just this one")
    ap.add_argument("--publish", action="store_true", help="only write docs/results.md from the results so far")
    ap.add_argument(
        "--reevaluate", action="store_true", help="measure the trained runs again (after the suite or decoding changed)"
    )
    args = ap.parse_args()
    if args.reevaluate:
        for name in [args.only] if args.only else PLAN:
            if (RESULTS / f"{name}.json").is_file():
                evaluate(name, args.data)
    elif not args.publish:
        for name in [args.only] if args.only else PLAN:
            if (RESULTS / f"{name}.json").is_file():
                print(f"{name}: done", flush=True)
                continue
            run_one(name, args.data)
            publish()
    publish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
