"""Training throughput on the real corpus, against the seed's loop and this machine's roofline.

    python benchmarks/train_throughput.py --data ../shared/data/chinese-poetry/quantangshi

In one run, on the same data, with the seed-pytorch architecture (embedding 100, LSTM 128 x 2) and
batch size 100, it measures target tokens/s for
  (a) the seed's loop, reproduced here: each poem of a batch run alone at batch size 1 through
      embedding, LSTM, linear and LogSoftmax + NLLLoss, the batch's losses averaged, one backward,
      gradient clip 1, RMSprop 0.01;
  (b) tangshi's trainer, exact: full softmax in fp32 (padded masked batches, length-bucketed, the
      output layer on real positions only);
  (c) tangshi's trainer with its fast options: adaptive softmax and bf16 autocast (where the CPU
      has bf16; otherwise adaptive softmax alone).
It also measures the fp32 and bf16 matrix-multiply peak (GFLOP/s, `torch.matmul` on squares) and
the exact model's two parts alone (recurrent layers; output layer and loss), each in `--trials`
trials interleaved with the configurations (before (a), between them, after (c)), the best trial
kept: a peak measured once on a shared machine is not a yardstick. It prints per configuration
tokens/s with its spread over the windows, the ratio to (a), the share of the fp32 roofline reached
from the model's training FLOPs per token (6 x the forward multiply-adds; for (c) its own, smaller
count and its own precision's peak), and the share of the parts-alone ceiling (b) reaches. Each
figure is the median of several timed windows after a warm-up; a window in which other processes
used more than --max-foreign of the CPU (from /proc/stat) is left out. The last line is
machine-readable:
`train_throughput: exact=<x>x fast=<x>x roofline=<share> ceiling=<share>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tangshi.cli import tune_process
from tangshi.config import load_preset
from tangshi.corpus import encode_split, load_corpus
from tangshi.train import Trainer, cpu_has_bf16
from tangshi.vocab import BOS, EOS
from write_latency import median_ms  # this folder is on the path of a script run from it

# ---------------------------------------------------------------- machine


def cpu_ticks() -> tuple[int, int]:
    """(busy ticks of the whole machine, ticks of this process) so far."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # minus idle and iowait
    with open(f"/proc/{os.getpid()}/stat") as f:
        mine = f.read().rsplit(")", 1)[1].split()
    return busy, int(mine[11]) + int(mine[12])  # utime + stime


class Window:
    """Times a block and says how much of the machine's busy time was someone else's."""

    def __enter__(self) -> Window:
        self.t0, (self.b0, self.m0) = time.perf_counter(), cpu_ticks()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.t0
        b1, m1 = cpu_ticks()
        busy = max(b1 - self.b0, 1)
        self.foreign = max(0.0, (busy - (m1 - self.m0)) / busy)


def gemm_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def model_shapes(cfg, batch: int, length: int) -> list[tuple[str, float, float]]:
    """The exact model's two parts alone, forward and backward in fp32, on a batch of `batch` poems
    of `length` tokens: [(part, training FLOPs, seconds)]. What the recurrent layers reach with
    their small per-step products bounds what any trainer of this model can reach."""
    from tangshi.model import linear_cross_entropy

    torch.manual_seed(0)
    h, e, v, n = cfg.hidden_size, cfg.embedding_size, cfg.vocab_size, batch * length
    rnn = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cfg.cell](e, h, cfg.num_layers, batch_first=True)
    x = torch.randn(batch, length, e, requires_grad=True)

    def recurrent() -> None:
        rnn(x)[0].sum().backward()

    feats = torch.randn(n, h, requires_grad=True)
    head = nn.Linear(h, v)
    targets = torch.randint(0, v, (n,))

    def output() -> None:
        linear_cross_entropy(feats, head.weight, head.bias, targets).backward()

    gates = {"rnn": 1, "gru": 3, "lstm": 4}[cfg.cell]
    rnn_flops = 6.0 * n * sum(gates * h * ((e if i == 0 else h) + h) for i in range(cfg.num_layers))
    return [
        (f"recurrent layers ({cfg.cell} {cfg.num_layers} x {h}), fwd+bwd", rnn_flops, median_ms(recurrent, 7) / 1000),
        (f"output layer + softmax cross-entropy ({h} x {v:,}), fwd+bwd", 6.0 * n * h * v, median_ms(output, 7) / 1000),
    ]


# ---------------------------------------------------------------- FLOPs


def flops_per_token(cfg, head_share: float = 1.0, tail: list[tuple[int, int, float]] | None = None) -> float:
    """Training FLOPs per predicted token: 6 x forward multiply-adds (matrix products only)."""
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[cfg.cell]
    h, e = cfg.hidden_size, cfg.embedding_size
    macs = sum(gates * h * ((e if i == 0 else h) + h) for i in range(cfg.num_layers))
    if tail is None:
        macs += h * cfg.vocab_size
    else:  # adaptive: the head for every token, a cluster's projection and output for its tokens
        macs += h * head_share + sum(share * (h * size_h + size_h * size_v) for size_h, size_v, share in tail)
    return 6.0 * macs


def adaptive_shape(cfg, counts: np.ndarray) -> tuple[int, list[tuple[int, int, float]]]:
    """(head outputs, [(cluster hidden, cluster vocabulary, share of tokens)]) for an adaptive model."""
    cuts = [*cfg.cutoff_list(), cfg.vocab_size]
    total = counts.sum()
    tail = []
    for i in range(len(cuts) - 1):
        size_h = max(1, int(cfg.hidden_size // (cfg.div_value ** (i + 1))))
        tail.append((size_h, cuts[i + 1] - cuts[i], float(counts[cuts[i] : cuts[i + 1]].sum() / total)))
    return cuts[0] + len(cuts) - 1, tail


# ---------------------------------------------------------------- (a) the seed's loop


class SeedPoetryModel(nn.Module):
    """The seed's network: embedding, LSTM, linear, LogSoftmax, run one poem at a time."""

    def __init__(self, vocab: int, emb: int = 100, hidden: int = 128, layers: int = 2):
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, num_layers=layers)
        self.linear = nn.Linear(hidden, vocab)
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, sentence: torch.Tensor) -> torch.Tensor:
        x = self.embedding(sentence).view(len(sentence), 1, -1)
        out, _ = self.lstm(x)
        return self.softmax(self.linear(out.view(len(sentence), -1)))


def seed_loop(seqs: list[np.ndarray], vocab: int, batch: int, steps: int) -> list[tuple[int, Window]]:
    torch.manual_seed(0)
    model = SeedPoetryModel(vocab)
    opt = torch.optim.RMSprop(model.parameters(), lr=0.01)
    loss_fn = nn.NLLLoss()
    order = np.random.default_rng(0).permutation(len(seqs))
    windows = []
    for step in range(steps):
        index = order[step * batch : (step + 1) * batch]
        with Window() as w:
            loss, tokens = 0.0, 0
            for i in index:
                s = torch.from_numpy(seqs[i].astype(np.int64))
                x = torch.cat([torch.tensor([BOS]), s])
                y = torch.cat([s, torch.tensor([EOS])])
                loss = loss + loss_fn(model(x), y)
                tokens += len(y)
            loss = loss / len(index)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        windows.append((tokens, w))
    return windows


# ---------------------------------------------------------------- (b), (c) tangshi's trainer


def trainer_windows(corpus, cfg, steps: int, window: int) -> list[tuple[int, Window]]:
    """Run tangshi's Trainer step by step, timing each window of `window` steps."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg.train.max_steps, cfg.train.progress = steps, False
        cfg.train.eval_every = cfg.train.checkpoint_every = cfg.train.log_every = 10**9
        trainer = Trainer(cfg, Path(tmp), corpus, corpus.vocab)
        out = []
        done = 0
        while done < steps:
            cfg.train.max_steps = done + window
            tokens0 = trainer.state.tokens
            with Window() as w:
                trainer.run_steps()
            out.append((trainer.state.tokens - tokens0, w))
            done += window
        return out


def rate(windows: list[tuple[int, Window]], warmup: int, max_foreign: float) -> tuple[float, int, float, float]:
    """(median tokens/s, windows kept, slowest, fastest) over the windows after `warmup`, skipping
    busy-machine windows."""
    kept = [t / w.seconds for t, w in windows[warmup:] if w.foreign <= max_foreign]
    if not kept:  # everything was disturbed: report all, and say so
        kept = [t / w.seconds for t, w in windows[warmup:]]
        print("  (every window shared the CPU with other processes; figures are low)", flush=True)
    return statistics.median(kept), len(kept), min(kept), max(kept)


class Yardsticks:
    """The peaks and the parts-alone ceiling, measured in trials spread over the run; best kept."""

    def __init__(self, model_cfg, batch: int, length: int, bf16: bool):
        self.model_cfg, self.batch, self.length, self.has_bf16 = model_cfg, batch, length, bf16
        self.fp32: list[float] = []
        self.bf16: list[float] = []
        self.parts: list[list[tuple[str, float, float]]] = []

    def trial(self) -> None:
        self.fp32.append(gemm_gflops(torch.float32))
        if self.has_bf16:  # without bf16 hardware torch multiplies bf16 at ~1 GFLOP/s: no peak to measure
            self.bf16.append(gemm_gflops(torch.bfloat16))
        self.parts.append(model_shapes(self.model_cfg, self.batch, self.length))

    @property
    def peak32(self) -> float:
        return max(self.fp32)

    @property
    def peak16(self) -> float:
        return max(self.bf16) if self.bf16 else float("nan")

    def best_parts(self) -> list[tuple[str, float, float]]:
        """Each part's fastest trial."""
        return [min((trial[k] for trial in self.parts), key=lambda p: p[2]) for k in range(len(self.parts[0]))]

    def attainable(self) -> float:
        parts = self.best_parts()
        return sum(f for _, f, _ in parts) / sum(t for *_, t in parts) / 1e9

    def attainable_spread(self) -> tuple[float, float]:
        each = [sum(f for _, f, _ in t) / sum(s for *_, s in t) / 1e9 for t in self.parts]
        return min(each), max(each)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--windows", type=int, default=7, help="timed windows per configuration")
    ap.add_argument("--window-steps", type=int, default=20)
    ap.add_argument("--seed-steps", type=int, default=6, help="timed batches of the seed loop")
    ap.add_argument("--max-foreign", type=float, default=0.1, help="discard windows with more foreign CPU use")
    ap.add_argument(
        "--trials", type=int, default=4, help="trials of the peaks and the parts alone, spread over the run"
    )
    args = ap.parse_args()
    tune_process([__file__, *sys.argv[1:]])  # the allocator settings `tangshi train` runs with
    torch.set_num_threads(args.threads)

    base = load_preset("seed-pytorch")
    corpus = load_corpus([args.data], base.data)
    seqs = encode_split(corpus, corpus.vocab, "train")
    vocab = len(corpus.vocab)
    print(f"corpus: {len(seqs):,} training poems, vocabulary {vocab:,}")
    print(f"torch {torch.__version__}, {args.threads} threads")

    exact = dataclasses.replace(base)
    exact.model = dataclasses.replace(base.model, vocab_size=vocab)
    exact.train = dataclasses.replace(base.train, batch_size=args.batch_size, bucket=True, precision="fp32")
    bf16 = cpu_has_bf16()
    fast = dataclasses.replace(exact)
    fast.model = dataclasses.replace(exact.model, output="adaptive")
    fast.train = dataclasses.replace(exact.train, precision="bf16" if bf16 else "fp32")

    counts = np.bincount(np.concatenate(seqs).astype(np.int64), minlength=vocab).astype(np.float64)
    counts[EOS] += len(seqs)
    head, tail = adaptive_shape(fast.model, counts)
    f_exact, f_fast = flops_per_token(exact.model), flops_per_token(fast.model, head, tail)

    steps = (args.windows + 1) * args.window_steps
    length = int(np.mean([len(q) for q in seqs]))
    sticks = Yardsticks(exact.model, args.batch_size, length, bf16)
    if args.trials < 1:
        ap.error("--trials must be >= 1")
    early = min(args.trials, 3)  # one before each configuration, the rest after (c)
    if early > 0:
        sticks.trial()
    measured = []
    seed_windows = seed_loop(seqs, vocab, args.batch_size, args.seed_steps + 1)
    measured.append(("(a) seed loop, batch 1 per poem, fp32", rate(seed_windows, 1, args.max_foreign), f_exact, 32))
    print(f"(a) {measured[-1][1][0]:,.0f} tokens/s", flush=True)
    if early > 1:
        sticks.trial()
    exact_w = trainer_windows(corpus, exact, steps, args.window_steps)
    measured.append(("(b) tangshi exact: full softmax, fp32", rate(exact_w, 1, args.max_foreign), f_exact, 32))
    print(f"(b) {measured[-1][1][0]:,.0f} tokens/s", flush=True)
    if early > 2:
        sticks.trial()
    fast_w = trainer_windows(corpus, fast, steps, args.window_steps)
    label = "adaptive softmax, bf16" if bf16 else "adaptive softmax (no bf16 on this CPU)"
    measured.append((f"(c) tangshi fast: {label}", rate(fast_w, 1, args.max_foreign), f_fast, 16 if bf16 else 32))
    print(f"(c) {measured[-1][1][0]:,.0f} tokens/s", flush=True)
    for _ in range(args.trials - early):
        sticks.trial()
    peak32, peak16 = sticks.peak32, sticks.peak16
    bf16_peak = (
        f"bf16 {peak16:.0f} GFLOP/s (trials {min(sticks.bf16):.0f}–{max(sticks.bf16):.0f})"
        if sticks.bf16
        else "bf16 not measured (no bf16 hardware)"
    )
    print(
        f"matrix-multiply peak, best of {len(sticks.fp32)} trials: fp32 {peak32:.0f} GFLOP/s "
        f"(trials {min(sticks.fp32):.0f}–{max(sticks.fp32):.0f}), {bf16_peak}"
    )
    rows = [(name, r, f, peak32 if bits == 32 else peak16, n, lo, hi) for name, (r, n, lo, hi), f, bits in measured]
    seed_rate, exact_rate, fast_rate = (r for _, r, *_ in rows)

    print()
    print(
        "| configuration | tokens/s | spread over windows | vs (a) | MFLOP/token | GFLOP/s | roofline share | windows |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r, f, peak, n, lo, hi in rows:
        print(
            f"| {name} | {r:,.0f} | {lo:,.0f}–{hi:,.0f} | {r / seed_rate:.2f}x | {f / 1e6:.2f} | {r * f / 1e9:.0f} | "
            f"{r * f / 1e9 / peak:.0%} of {peak:.0f} | {n} |"
        )
    parts = sticks.best_parts()
    print()
    print(
        f"The exact model's parts alone, fp32, a batch of {args.batch_size} poems of {length} tokens "
        f"(each part's best of {len(sticks.parts)} trials):"
    )
    print()
    print("| part | GFLOP a batch | ms | GFLOP/s | share of the fp32 peak |")
    print("|---|---:|---:|---:|---:|")
    for name, flops, sec in parts:
        gflops = flops / sec / 1e9
        print(f"| {name} | {flops / 1e9:.2f} | {sec * 1e3:.1f} | {gflops:.0f} | {gflops / peak32:.0%} |")
    attainable = sticks.attainable()
    lo, hi = sticks.attainable_spread()
    print(
        f"| both, back to back (the most a trainer of this model can reach) | | | {attainable:.0f} "
        f"(trials {lo:.0f}–{hi:.0f}) | {attainable / peak32:.0%} |"
    )
    ceiling = exact_rate * f_exact / 1e9 / attainable
    print()
    print(f"(b) reaches {ceiling:.0%} of what its two parts reach alone (the ceiling, measured in this run).")
    print(
        f"train_throughput: exact={exact_rate / seed_rate:.2f}x fast={fast_rate / seed_rate:.2f}x "
        f"roofline={exact_rate * f_exact / 1e9 / peak32:.3f} ceiling={ceiling:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
