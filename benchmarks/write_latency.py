"""Time to write a poem with a checkpoint (default: the bundled model), on this machine.

    python benchmarks/write_latency.py [--checkpoint DIR] [--threads 2] [--repeats 15] [--device cpu|cuda]

Writes exactly 24 characters (a 五绝 with its punctuation) and 64 (a 七律), one poem alone and 64
poems at once, with tangshi's writer (the recurrent state carried from step to step) and with the
seed's way of re-running the whole prefix at every step, greedy, so every variant does the same
work. Then the same lengths as real forms with their masks on (`Poet.write(form=..., beam=0)`: 五绝 and
七律 with rhyme, relaxed tones, no repeats, the copy check), sampled; then one poem with the default
options (a stochastic beam of 8 reranked for sense), from the begin character and for `--title`. One warm-up call,
then the median of --repeats calls. The steps' weights as tangshi holds them on this machine
(qint8, int8 or bfloat16, `model.kernels.step_weights`) and in float32 are timed in alternation, call by
call, so the ratio between them is measured on the same machine state (`--step-weights float32`
times float32 alone); each kind has its own model, its weights packed once, as a program that
writes keeps them (packing anew for every call would also read every prompt's context anew). The
last line is machine-readable (the first kind's medians; the 64s are a whole batch):
`write_latency: wujue_ms=<ms> qilv_ms=<ms> qilv64_ms=<ms> form_wujue_ms=<ms> form_qilv_ms=<ms>
form_qilv64_ms=<ms> default_wujue_ms=<ms> default_qilv_ms=<ms>` (the default rows with a title)
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
from tangshi.data.vocab import BOS
from tangshi.generation import processors
from tangshi.generation.search import sample
from tangshi.model.device import DeviceError, resolve_device


def sync() -> None:
    """Wait for the GPU's queued work (a no-op without CUDA), so that a call's time is its own."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def alternating_ms(fns: list, repeats: int) -> list[float]:
    """The median ms of each of `fns` (one a kind of step weights, each with its own model), taking
    turns call by call (each after a warm-up call)."""
    times: list[list[float]] = [[] for _ in fns]
    for i in range(repeats + 1):
        for k, fn in enumerate(fns):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if i:
                times[k].append(time.perf_counter() - t0)
    return [1000 * statistics.median(t) for t in times]


@torch.no_grad()
def rerun_prefix(model, begin_id: int, batch: int, length: int) -> torch.Tensor:
    """The seed's way: feed the whole poem so far through the network for every new character."""
    ids = torch.tensor([[BOS, begin_id]] * batch, device=next(model.parameters()).device)
    while ids.shape[1] - 1 < length:
        logits, _ = model(ids)
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: the bundled model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--begin", default="月")
    ap.add_argument("--title", default="秋夜", help="the title of the default-options rows")
    ap.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu", help="where the model writes")
    ap.add_argument(
        "--step-weights",
        choices=["auto", "float32", "int8", "bfloat16", "qint8"],
        default="auto",
        help="how the steps hold the LSTM model's weights (auto: by CPU, as tangshi writes), timed beside float32",
    )
    args = ap.parse_args()
    import tangshi.model.kernels

    try:
        device = resolve_device(args.device)
    except DeviceError as e:
        ap.error(str(e))
    chosen = tangshi.model.kernels.step_weights(device) if args.step_weights == "auto" else args.step_weights
    tangshi.model.kernels.step_weights = lambda device: chosen
    tune_process([__file__, *sys.argv[1:]])  # the allocator settings `tangshi train` runs with
    torch.set_num_threads(args.threads)
    poet = Poet.load(args.checkpoint, device=str(device))
    model, vocab = poet.model.eval(), poet.vocab
    begin_id = vocab.encode(args.begin)[0]
    lstm = model.cfg.cell == "lstm"  # the other cells step in float32 whatever the machine
    kinds = [chosen, *(["float32"] if chosen != "float32" else [])] if lstm else ["float32"]
    # one model a kind, its weights packed once for it, as a program that writes keeps them
    poets = [poet]
    for kind in kinds[1:]:
        tangshi.model.kernels.step_weights = lambda device, kind=kind: kind
        poets.append(Poet.load(args.checkpoint, device=str(device)))
        poets[-1].model.eval().prepared(device)
    tangshi.model.kernels.step_weights = lambda device: chosen
    model.prepared(device)

    def ours(p: Poet, batch: int, length: int):
        return lambda: sample(
            p.model, vocab, [args.begin] * batch, processors.sampling(vocab, greedy=True), list(range(batch)),
            max_length=length, stop_at_end=False,
        )  # fmt: skip

    def seeds(batch: int, length: int):
        return lambda: rerun_prefix(model, begin_id, batch, length)

    # both ways compute the same distributions (the step's weights may be int8: close, not equal)
    ids = rerun_prefix(model, begin_id, 1, 24)
    with torch.inference_mode():
        full, _ = model(ids)
        state, worst = None, 0.0
        for t in range(ids.shape[1]):
            logits, state = model.step(ids[:, t], state)
            p, q = torch.softmax(logits.float(), -1), torch.softmax(full[:, t].float(), -1)
            worst = max(worst, 0.5 * float((p - q).abs().sum()))  # total variation distance
    assert worst < 0.05, worst

    def timed(make) -> list[float]:
        return alternating_ms([make(p) for p in poets], args.repeats)

    results = {}
    print(f"checkpoint: {args.checkpoint or 'bundled'}  threads: {args.threads}  repeats: {args.repeats}")
    print(
        f"step weights: {chosen if lstm else 'float32'}; largest total variation distance from the float "
        f"forward's next-character distribution along the seed's greedy poem: {worst:.4f}"
    )
    beside = len(kinds) > 1
    head = f"| tangshi, {kinds[0]} steps |" + (f" {kinds[1]} steps | {kinds[1]} / {kinds[0]} |" if beside else "")
    rule = "---:|" * (3 if beside else 1)
    print(f"| poems | characters {head} prefix re-run (seed) | seed / tangshi |")
    print(f"|---:|---:|{rule}---:|---:|")
    for batch, length in [(1, 24), (1, 64), (64, 24), (64, 64)]:
        got = timed(lambda p, b=batch, n=length: ours(p, b, n))
        rerun = median_ms(seeds(batch, length), max(3, args.repeats // 5))
        results[(batch, length)] = got[0]
        side = f" {got[1]:.1f} ms | {got[1] / got[0]:.2f}x |" if beside else ""
        print(f"| {batch} | {length} | {got[0]:.1f} ms |{side} {rerun:.1f} ms | {rerun / got[0]:.1f}x |", flush=True)
    print()
    print(f"| poems | form (tokens), masks on, sampled {head}")
    print(f"|---:|---|{rule}")
    masked = {}
    for batch, form in [(1, "五绝"), (1, "七律"), (64, "五绝"), (64, "七律")]:
        got = timed(lambda p, b=batch, f=form: lambda: p.write([args.begin], num=b, seed=0, form=f, beam=0))
        masked[(batch, form)] = got[0]
        side = f" {got[1]:.1f} ms | {got[1] / got[0]:.2f}x |" if beside else ""
        print(f"| {batch} | {form} ({24 if form == '五绝' else 64}) | {got[0]:.1f} ms |{side}", flush=True)
    print()
    print(f"| default options (a stochastic beam of 8, reranked) | poem {head}")
    print(f"|---|---:|{rule}")
    default = {}
    asks = [dict(form=f) for f in ("五绝", "七律")] + [dict(form=f, title=args.title) for f in ("五绝", "七律")]
    asks += [dict(form=f, title=args.title, lookahead=16) for f in ("五绝", "七律")]  # an option, not the default
    for ask in asks:
        got = timed(lambda p, a=ask: lambda: p.write([args.begin if "title" not in a else ""], seed=0, **a))
        default[tuple(ask.items())] = got[0]
        what = f"{ask['form']}" + (f" --title {ask['title']}" if "title" in ask else f", begin {args.begin}")
        what += f" --lookahead {ask['lookahead']}" if "lookahead" in ask else ""
        side = f" {got[1]:.1f} ms | {got[1] / got[0]:.2f}x |" if beside else ""
        print(f"| {what} | 1 | {got[0]:.1f} ms |{side}", flush=True)
    titled = {f: default[(("form", f), ("title", args.title))] for f in ("五绝", "七律")}
    print(
        f"write_latency: wujue_ms={results[(1, 24)]:.2f} qilv_ms={results[(1, 64)]:.2f} "
        f"qilv64_ms={results[(64, 64)]:.2f} form_wujue_ms={masked[(1, '五绝')]:.2f} "
        f"form_qilv_ms={masked[(1, '七律')]:.2f} form_qilv64_ms={masked[(64, '七律')]:.2f} "
        f"default_wujue_ms={titled['五绝']:.2f} default_qilv_ms={titled['七律']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
