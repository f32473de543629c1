"""Copy a run's best checkpoint into the package as the bundled model, with its model card.

    python scripts/make_bundle.py runs/bundled --command "tangshi train ..."

The weights are shipped as float32 when they fit in 15 MB, else as float16 (loaded back as
float32). The card records the data, preset, steps, training time and the validation / test loss of
the shipped weights; for float16 also their cost against float32, measured, not assumed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from tangshi import checkpoint
from tangshi.checkpoint import model_tensors
from tangshi.corpus import encode_split, load_corpus
from tangshi.model import count_parameters
from tangshi.train import mean_loss

LIMIT = 15 * 10**6  # bytes the package may carry
DEST = Path(__file__).resolve().parents[1] / "src" / "tangshi" / "bundled"


def losses(ckpt: checkpoint.Checkpoint, data: list[str]) -> dict[str, float]:
    corpus = load_corpus(data, ckpt.config.data)
    return {split: mean_loss(ckpt.model, encode_split(corpus, ckpt.vocab, split))[0] for split in ("val", "test")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="run folder with best/ and metrics.jsonl")
    ap.add_argument("--command", required=True, help="the command that trained it (for the card)")
    args = ap.parse_args()
    best = checkpoint.load(args.run / "best")
    step_dir = checkpoint.latest_step_dir(args.run)
    trainer = checkpoint.load(step_dir, with_trainer=True).trainer["state"]
    rows = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines()]
    best_row = min((r for r in rows if r["kind"] == "val"), key=lambda r: r["val_loss"])
    data = trainer["data"]
    fp32 = losses(best, data)

    tmp = Path(tempfile.mkdtemp())
    checkpoint.write(tmp / "m", best.model, best.vocab, best.config, lines=best.lines)
    shipped, dtype = fp32, "float32"
    if (tmp / "m" / "model.safetensors").stat().st_size > LIMIT:
        half = {k: v.half() for k, v in model_tensors(best.model).items()}
        save_file(half, str(tmp / "m" / "model.safetensors"), metadata={"format": "pt", "dtype": "float16"})
        shipped, dtype = losses(checkpoint.load(tmp / "m"), data), "float16"

    m, t = best.config.model, best.config.train
    size = (tmp / "m" / "model.safetensors").stat().st_size
    card = f"""# The bundled tangshi model

| | |
|---|---|
| data | {", ".join(f"`{Path(d).name}`" for d in data)} ({len(best.vocab) - 4:,} characters + 4 special tokens), simplified with OpenCC, the seed's filters, duplicates dropped, 95 / 2.5 / 2.5 % split by text hash |
| preset | `{best.config.preset}`: {m.cell.upper()} {m.num_layers} × {m.hidden_size}, embedding {m.embedding_size}, dropout {m.dropout:g}, {m.output} softmax, {count_parameters(best.model):,} parameters; {t.optimizer} lr {t.lr:g}, {t.schedule} over the last {t.decay_fraction:.0%}, warm-up {t.warmup_steps}, batch {t.batch_size}, clip {t.clip_grad:g}, precision {t.precision}, seed {t.seed} |
| command | `{args.command}` |
| steps | {best_row["step"]:,} (best validation loss; the run stopped at {trainer["step"]:,}), {best_row["epoch"]:.2f} epochs |
| training time | {best_row["elapsed"] / 60:.1f} minutes on a 2-core CPU (torch {torch.__version__}) |
| validation loss | {fp32["val"]:.4f} nats per character (perplexity {torch.tensor(fp32["val"]).exp():.1f}), float32 weights |
| test loss | {fp32["test"]:.4f} nats per character (perplexity {torch.tensor(fp32["test"]).exp():.1f}), float32 weights |
| shipped weights | {dtype}, {size / 2**20:.1f} MiB: validation loss {shipped["val"]:.4f}, test loss {shipped["test"]:.4f} ({100 * (shipped["val"] / fp32["val"] - 1):+.3f} % against float32) |

Loss is the mean cross-entropy per predicted token: pad excluded, end token included.
"""
    (tmp / "m" / "README.md").write_text(card, "utf-8")
    (tmp / "m" / "README.md").chmod(0o644)
    if DEST.exists():
        shutil.rmtree(DEST)
    shutil.copytree(tmp / "m", DEST)
    shutil.rmtree(tmp)
    print(card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
