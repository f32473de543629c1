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
The configurations run in interleaved rounds: in each round one timed window of each (in an order
that rotates from round to round), then one trial of the yardsticks: the fp32 and bf16
matrix-multiply peak (GFLOP/s, `torch.matmul` on squares) and the exact model's two parts alone
(recurrent layers; output layer and loss), on one batch of the mean poem length and on every second
batch of (b)'s window just run (their shapes: poems, padded positions, target tokens). On a shared
machine whose speed drifts by a third within minutes, figures taken in separate phases compare
different machines; figures taken in one round compare the same one. So every ratio is the median
over the rounds of that round's ratio, with its spread (slowest to fastest round): (b) and (c)
against (a), and the share of the parts-alone ceiling (b) reaches: its window's tokens/s against its
parts' on the same batches, right after (the batches' lengths change the cost a token by some 6 %,
so a single shape is not the same work; that share is printed too). It also prints per configuration
tokens/s with its spread over the windows, and the share of the fp32 roofline (the best peak of all
rounds) reached from the model's training FLOPs per token (6 x the forward multiply-adds; for (c)
its own, smaller count and its own precision's peak). A window in which other processes used more
than --max-foreign of the CPU (from /proc/stat) is left out, with its round's ratios.
The last line is machine-readable:
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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tangshi.cli import tune_process
from tangshi.config import load_preset
from tangshi.data.corpus import encode_split, load_corpus
from tangshi.data.vocab import BOS, EOS, PAD
from tangshi.evaluation.losses import collate
from tangshi.model.cells import CELLS
from tangshi.model.device import cpu_has_bf16
from tangshi.model.losses import linear_cross_entropy
from tangshi.training.train import Trainer
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


class Parts:
    """The exact model's two parts alone, forward and backward in fp32: its recurrent layers and its
    output layer with the loss. What the recurrent layers reach with their small per-step products
    bounds what any trainer of this model can reach."""

    def __init__(self, cfg):
        torch.manual_seed(0)
        self.cfg = cfg
        self.rnn = CELLS[cfg.cell](cfg.embedding_size, cfg.hidden_size, cfg.num_layers, batch_first=True)
        self.head = nn.Linear(cfg.hidden_size, cfg.vocab_size)

    def runs(self, batch: int, length: int, n: int) -> tuple[Callable[[], None], Callable[[], None]]:
        """(recurrent layers, output layer), each a call forward and backward, on `batch` poems of
        `length` positions and `n` target tokens."""
        x = torch.randn(batch, length, self.cfg.embedding_size, requires_grad=True)
        feats = torch.randn(n, self.cfg.hidden_size, requires_grad=True)
        targets = torch.randint(0, self.cfg.vocab_size, (n,))

        def recurrent() -> None:
            self.rnn(x)[0].sum().backward()

        def output() -> None:
            linear_cross_entropy(feats, self.head.weight, self.head.bias, targets).backward()

        return recurrent, output

    def one_batch(self, batch: int, length: int) -> list[tuple[str, float, float]]:
        """On a batch of `batch` poems of `length` tokens: [(part, training FLOPs, seconds)]."""
        cfg = self.cfg
        h, e, v, n = cfg.hidden_size, cfg.embedding_size, cfg.vocab_size, batch * length
        gates = {"rnn": 1, "gru": 3, "lstm": 4}[cfg.cell]
        rnn_flops = 6.0 * n * sum(gates * h * ((e if i == 0 else h) + h) for i in range(cfg.num_layers))
        rnn_s, out_s = (median_ms(run, 7) / 1000 for run in self.runs(batch, length, n))
        return [
            (f"recurrent layers ({cfg.cell} {cfg.num_layers} x {h}), fwd+bwd", rnn_flops, rnn_s),
            (f"output layer + softmax cross-entropy ({h} x {v:,}), fwd+bwd", 6.0 * n * h * v, out_s),
        ]

    def tokens_per_s(self, shapes: list[tuple[int, int, int]], repeats: int = 3) -> float:
        """On the shapes of batches a trainer ran, (poems, positions, target tokens) each: the
        recurrent layers on its padded positions, as the trainer runs them, the output layer on its
        real target tokens. On the same work as the trainer's window, the shapes' own costs (short
        batches cost more a token than long ones) are in both: its ceiling. Each batch's two parts
        back to back, as a step runs them, timed `repeats` times, the median kept."""
        seconds = 0.0
        for batch, length, n in shapes:
            recurrent, output = self.runs(batch, length, n)
            seconds += median_ms(lambda recurrent=recurrent, output=output: (recurrent(), output()), repeats) / 1000
        return sum(n for *_, n in shapes) / seconds


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


class SeedLoop:
    """The seed's training loop, a window of batches at a time."""

    def __init__(self, seqs: list[np.ndarray], vocab: int, batch: int):
        torch.manual_seed(0)
        self.seqs, self.batch = seqs, batch
        self.model = SeedPoetryModel(vocab)
        self.opt = torch.optim.RMSprop(self.model.parameters(), lr=0.01)
        self.loss_fn = nn.NLLLoss()
        self.order = np.random.default_rng(0).permutation(len(seqs))
        self.step = 0

    def window(self, steps: int) -> tuple[int, Window]:
        tokens = 0
        with Window() as w:
            for _ in range(steps):
                start = (self.step * self.batch) % (len(self.order) - self.batch)
                index = self.order[start : start + self.batch]
                self.step += 1
                loss = 0.0
                for i in index:
                    s = torch.from_numpy(self.seqs[i].astype(np.int64))
                    x = torch.cat([torch.tensor([BOS]), s])
                    y = torch.cat([s, torch.tensor([EOS])])
                    loss = loss + self.loss_fn(self.model(x), y)
                    tokens += len(y)
                loss = loss / len(index)
                self.opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                self.opt.step()
        return tokens, w


# ---------------------------------------------------------------- (b), (c) tangshi's trainer


class TrainerLoop:
    """tangshi's Trainer, a window of steps at a time (its checkpoints in a folder removed at exit)."""

    def __init__(self, corpus, cfg, folder: str):
        cfg.train.max_steps, cfg.train.progress = 0, False
        cfg.train.eval_every = cfg.train.checkpoint_every = cfg.train.log_every = 10**9
        self.cfg = cfg
        self.trainer = Trainer(cfg, Path(folder), corpus, corpus.vocab)
        self.batches: list[np.ndarray] = []  # the last window's batches (poem indices)
        next_batch = self.trainer._next_batch

        def recorded() -> np.ndarray:
            batch = next_batch()
            self.batches.append(batch)
            return batch

        self.trainer._next_batch = recorded

    def window(self, steps: int) -> tuple[int, Window]:
        self.cfg.train.max_steps += steps
        tokens0 = self.trainer.state.tokens
        self.batches = []
        with Window() as w:
            self.trainer.run_steps()
        return self.trainer.state.tokens - tokens0, w

    def shapes(self, every: int = 2) -> list[tuple[int, int, int]]:
        """(poems, positions, target tokens) of every `every`-th batch of the last window."""
        out = []
        for batch in self.batches[::every]:
            inputs, targets = collate(self.trainer.train_seqs, batch)
            out.append((inputs.shape[0], inputs.shape[1], int((targets != PAD).sum())))
        return out


def spread(values: list[float]) -> tuple[float, float, float]:
    """(median, least, most)."""
    return statistics.median(values), min(values), max(values)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--windows", type=int, default=7, help="rounds: timed windows of each configuration")
    ap.add_argument("--window-steps", type=int, default=20, help="steps of tangshi's trainer a window")
    ap.add_argument("--seed-steps", type=int, default=5, help="batches of the seed loop a window")
    ap.add_argument("--max-foreign", type=float, default=0.1, help="discard windows with more foreign CPU use")
    args = ap.parse_args()
    if args.windows < 1:
        ap.error("--windows must be >= 1")
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
    length = int(np.mean([len(q) for q in seqs]))
    label = "adaptive softmax, bf16" if bf16 else "adaptive softmax (no bf16 on this CPU)"
    names = [
        "(a) seed loop, batch 1 per poem, fp32",
        "(b) tangshi exact: full softmax, fp32",
        f"(c) tangshi fast: {label}",
    ]

    with tempfile.TemporaryDirectory() as tmp_b, tempfile.TemporaryDirectory() as tmp_c:
        loops = [
            (SeedLoop(seqs, vocab, args.batch_size), args.seed_steps),
            (TrainerLoop(corpus, exact, tmp_b), args.window_steps),
            (TrainerLoop(corpus, fast, tmp_c), args.window_steps),
        ]
        for loop, steps in loops:  # warm-up: allocator, kernels, buckets
            loop.window(max(1, steps // 4))
        rates: list[list[float]] = [[], [], []]  # kept windows' tokens/s, by configuration
        rounds = []  # (rates of the round or None where left out, parts GFLOP/s right after)
        peak32, peak16, parts_trials, same_work = [], [], [], []
        parts_alone = Parts(exact.model)
        for r in range(args.windows):
            got: list[float | None] = [None, None, None]
            for k in (r + j for j in range(3)):  # the order rotates from round to round
                loop, steps = loops[k % 3]
                tokens, w = loop.window(steps)
                if w.foreign <= args.max_foreign:
                    got[k % 3] = tokens / w.seconds
                    rates[k % 3].append(tokens / w.seconds)
            parts = parts_alone.one_batch(args.batch_size, length)
            parts_trials.append(parts)
            if got[1]:  # (b)'s window against its parts on the same batches
                same_work.append(got[1] / parts_alone.tokens_per_s(loops[1][0].shapes()))
            peak32.append(gemm_gflops(torch.float32))
            if bf16:  # without bf16 hardware torch multiplies bf16 at ~1 GFLOP/s: no peak to measure
                peak16.append(gemm_gflops(torch.bfloat16))
            both = sum(f for _, f, _ in parts) / sum(t for *_, t in parts) / 1e9
            rounds.append((got, both))
            shown = "  ".join(f"{x:,.0f}" if x else "left out" for x in got)
            print(f"round {r + 1}: tokens/s {shown}; parts alone {both:.0f} GFLOP/s", flush=True)
    if any(not x for x in rates):  # everything was disturbed: say so
        print("every window of a configuration shared the CPU with other processes; no figures", flush=True)
        return 1

    def ratios(k: int) -> list[float]:
        return [got[k] / got[0] for got, _ in rounds if got[k] and got[0]] or [float("nan")]

    one_shape = [got[1] * f_exact / 1e9 / both for got, both in rounds if got[1]]
    best32 = max(peak32)
    best16 = max(peak16) if peak16 else float("nan")
    bf16_peak = (
        f"bf16 {best16:.0f} GFLOP/s (rounds {min(peak16):.0f}–{max(peak16):.0f})"
        if peak16
        else "bf16 not measured (no bf16 hardware)"
    )
    print(
        f"matrix-multiply peak, best of {len(peak32)} rounds: fp32 {best32:.0f} GFLOP/s "
        f"(rounds {min(peak32):.0f}–{max(peak32):.0f}), {bf16_peak}"
    )
    print()
    print(
        "| configuration | tokens/s | spread over windows | vs (a), median of rounds (spread) | MFLOP/token "
        "| GFLOP/s | roofline share | windows |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    flops = [f_exact, f_exact, f_fast]
    peaks = [best32, best32, best16 if bf16 else best32]
    vs = [(1.0, 1.0, 1.0), spread(ratios(1)), spread(ratios(2))]
    for k in range(3):
        rate, lo, hi = spread(rates[k])
        v, vlo, vhi = vs[k]
        print(
            f"| {names[k]} | {rate:,.0f} | {lo:,.0f}–{hi:,.0f} | {v:.2f}x ({vlo:.2f}–{vhi:.2f}) | "
            f"{flops[k] / 1e6:.2f} | {rate * flops[k] / 1e9:.0f} | {rate * flops[k] / 1e9 / peaks[k]:.0%} of "
            f"{peaks[k]:.0f} | {len(rates[k])} |"
        )
    print()
    print(
        f"The exact model's parts alone, fp32, a batch of {args.batch_size} poems of {length} tokens "
        f"(median of {len(parts_trials)} rounds, spread):"
    )
    print()
    print("| part | GFLOP a batch | ms | GFLOP/s | share of the fp32 peak |")
    print("|---|---:|---:|---:|---:|")
    for k, (name, part_flops, _) in enumerate(parts_trials[0]):
        ms, ms_lo, ms_hi = spread([1e3 * trial[k][2] for trial in parts_trials])
        gflops = part_flops / ms * 1e3 / 1e9
        print(
            f"| {name} | {part_flops / 1e9:.2f} | {ms:.1f} ({ms_lo:.1f}–{ms_hi:.1f}) | {gflops:.0f} | "
            f"{gflops / best32:.0%} |"
        )
    both, both_lo, both_hi = spread([b for _, b in rounds])
    print(
        f"| both, back to back (the most a trainer of this model can reach) | | | {both:.0f} "
        f"({both_lo:.0f}–{both_hi:.0f}) | {both / best32:.0%} |"
    )
    ceiling, c_lo, c_hi = spread(same_work)
    shape, s_lo, s_hi = spread(one_shape)
    exact_x, fast_x = vs[1][0], vs[2][0]
    print()
    print(
        f"(b) reaches {ceiling:.0%} (rounds {c_lo:.0%}–{c_hi:.0%}) of what its two parts reach alone on "
        f"the same batches, measured right after its window (the ceiling); {shape:.0%} "
        f"({s_lo:.0%}–{s_hi:.0%}) of their rate on the one batch of {length} tokens above."
    )
    print(
        f"train_throughput: exact={exact_x:.2f}x fast={fast_x:.2f}x "
        f"roofline={statistics.median(rates[1]) * f_exact / 1e9 / best32:.3f} ceiling={ceiling:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
