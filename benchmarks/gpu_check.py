"""Train on a CUDA GPU for a minute per precision and report tokens/s (the GPU check of the speed issue).

    python benchmarks/gpu_check.py --data ../shared/data/chinese-poetry/quantangshi --minutes 1

For each precision (fp32, bf16, fp16 autocast) it trains the `default` preset with
`--device cuda` for --minutes and prints tokens/s and the validation loss reached; then a
one-process torchrun (nccl) run for a few steps, to check the distributed path on CUDA. Uses the
cuDNN recurrent kernels (torch's default on CUDA). The last line is machine-readable:
`gpu_check: fp32=<tok/s> bf16=<tok/s> fp16=<tok/s> nccl=<ok|failed>`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch


def last(run: Path, kind: str) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind][-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=Path("runs/gpu_check"))
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `tangshi train` options")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device", file=sys.stderr)
        return 1
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, cuDNN {torch.backends.cudnn.version()}")
    args.out.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "tangshi", "train", "--data", args.data, "--device", "cuda", "--no-progress"]
    rates = {}
    for precision in ("fp32", "bf16", "fp16"):
        run = args.out / precision
        cmd = [*base, "--out", str(run), "--precision", precision, "--max-minutes", str(args.minutes), *args.extra]
        print("+", " ".join(cmd), flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        print(done.stdout.strip() or done.stderr[-2000:], flush=True)
        if done.returncode:
            rates[precision] = 0
            continue
        train, val = last(run, "train"), last(run, "val")
        rates[precision] = round(train["tokens"] / train["elapsed"])
        loss = f"validation loss {val['val_loss']:.4f} at step {val['step']}"
        print(f"{precision}: {rates[precision]:,} tokens/s, {loss}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "tangshi"]
    cmd += ["train", "--data", args.data, "--device", "cuda", "--out", str(args.out / "nccl"), "--max-steps", "50"]
    cmd += ["--no-progress", "--eval-every", "25", "--checkpoint-every", "25"]
    print("+", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    print(done.stdout.strip()[-1500:] or done.stderr[-2000:], flush=True)
    nccl = "ok" if done.returncode == 0 and (args.out / "nccl" / "step-000050").is_dir() else "failed"
    print(f"gpu_check: fp32={rates['fp32']} bf16={rates['bf16']} fp16={rates['fp16']} nccl={nccl}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
