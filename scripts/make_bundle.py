"""Copy a run's best checkpoint into the package as the bundled model, with its model card.

    python scripts/make_bundle.py runs/bundled --command "tangshi train ..."

The weights are shipped as float32 when the folder fits in 18 MB, else as float16, else as int8
with a scale a row (loaded back as float32); a precision that costs 0.5 % of validation loss or
more is refused. The card records the data, preset, steps, training time and the validation / test loss of
the shipped weights; for float16 also their cost against float32, measured, not assumed. Then the
calibration (`tangshi calibrate`, with the suite's data) is saved beside the weights; then the
evaluation suite (`tangshi eval`, test split, 100 poems a setting) measures the shipped model: its
tables go into the card, and its result, with the 7 begin-character samples, to
docs/results/bundled.json, where `scripts/compare.py` finds it for the comparison table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from tangshi.data.corpus import encode_split, load_corpus
from tangshi.data.words import WordStats
from tangshi.evaluation.losses import condition_ids, mean_loss
from tangshi.evaluation.suite import BEGINS, markdown, run_suite
from tangshi.model import checkpoint
from tangshi.model.charrnn import count_parameters
from tangshi.model.checkpoint import model_tensors, quantize_int8, save_with_checksum
from tangshi.options import DEFAULT_DIVERSITY, WriteOptions

# bytes the bundled model's folder may take (weights, line index, plan statistics and title index, vocabulary, card)
LIMIT = 18 * 10**6
ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "src" / "tangshi" / "bundled"
RESULT = ROOT / "docs" / "results" / "bundled.json"


def losses(ckpt: checkpoint.Checkpoint, data: list[str]) -> dict[str, float]:
    """Validation and test loss of the poems alone; for a model trained with titles and poets, the test
    loss given the title ("test_title") and given the title and the poet ("test_both") too."""
    corpus = load_corpus(data, ckpt.config.data)
    out = {split: mean_loss(ckpt.model, encode_split(corpus, ckpt.vocab, split))[0] for split in ("val", "test")}
    d = ckpt.config.data
    if d.genres:  # each genre's test poems apart (the Tang ones compare with a model of the Tang poems alone)
        seqs, genres = encode_split(corpus, ckpt.vocab, "test"), corpus.genres_of("test")
        for g in sorted(set(genres) - {""}):
            mine = [x for x, k in zip(seqs, genres, strict=True) if k == g]
            out[f"test {g}"] = mean_loss(ckpt.model, mine)[0]
    for name, title, author in (("test_title", True, False), ("test_both", True, True)):
        if d.titles and (author is False or d.authors):
            conds = condition_ids(
                corpus.titles_of("test"), corpus.authors_of("test"), ckpt.vocab, d.max_title, title, author
            )
            seqs = encode_split(corpus, ckpt.vocab, "test")
            out[name] = mean_loss(ckpt.model, seqs, conds=conds, sep=ckpt.vocab.sep)[0]
    return out


def _files(path: str) -> str:
    """A corpus path as the card names it: the folder and the files read from it (find_files)."""
    from tangshi.data.corpus import find_files

    files = [f.name for f in find_files([path])]
    kinds = sorted({".".join(f.split(".")[:2]) + ".*" + Path(f).suffix for f in files})
    where = (
        " (the npm package chinese-poetry@2.0.1, dist/quantangshi: these files only)"
        if "poet.song.*.json" in kinds
        else ""
    )
    return f"`{Path(path).name}`: {', '.join(kinds)}, {len(files)} files{where}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="run folder with best/ and metrics.jsonl")
    ap.add_argument("--command", required=True, help="the command that trained it (for the card)")
    ap.add_argument(
        "--suite-data",
        nargs="+",
        help="the corpus the evaluation suite reads (default: the training data; "
        "for a model of three genres, the Tang poems, so that its tables compare with a Tang model's)",
    )
    args = ap.parse_args()
    best = checkpoint.load(args.run / "best")
    step_dir = checkpoint.latest_step_dir(args.run)
    trainer = checkpoint.load(step_dir, with_trainer=True).trainer["state"]
    rows = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines()]
    best_row = min((r for r in rows if r["kind"] == "val"), key=lambda r: r["val_loss"])
    data = trainer["data"]
    fp32 = losses(best, data)

    tmp = Path(tempfile.mkdtemp())
    words = WordStats.load(args.run / "best")
    if words is not None and words.kin is not None and best.vocab.genres():
        words = words.pruned(int(words.settings.get("k", 30)), genre="唐诗")  # the titles of what it writes unless told
    extras = [words] if words is not None else []
    checkpoint.write(tmp / "m", best.model, best.vocab, best.config, lines=best.lines, extras=extras)
    others = sum(f.stat().st_size for f in (tmp / "m").iterdir() if f.name != "model.safetensors") + 8192  # + card
    shipped, dtype = fp32, "float32"
    for smaller, convert in (("float16", lambda ts: {k: v.half() for k, v in ts.items()}), ("int8", quantize_int8)):
        if (tmp / "m" / "model.safetensors").stat().st_size + others <= LIMIT:
            break
        save_with_checksum(
            convert(model_tensors(best.model)), tmp / "m" / "model.safetensors",
            metadata={"format": "pt", "dtype": smaller},
        )  # fmt: skip
        shipped, dtype = losses(checkpoint.load(tmp / "m"), data), smaller
    pruned = ""
    if words is not None:  # then the plan statistics keep fewer neighbours a word (the best ones) until it fits
        for k in (24, 20, 16, 12, 10):
            if (tmp / "m" / "model.safetensors").stat().st_size + others <= LIMIT:
                break
            before = (tmp / "m" / "words.safetensors").stat().st_size
            words.pruned(k).save(tmp / "m")
            others += (tmp / "m" / "words.safetensors").stat().st_size - before
            pruned = f"; the plan statistics keep {k} neighbours a word (of {words.settings.get('k')}) to fit"
    if (tmp / "m" / "model.safetensors").stat().st_size + others > LIMIT:
        sys.exit(f"make_bundle: {args.run / 'best'} does not fit in {LIMIT / 1e6:g} MB even as int8")
    cost = 100 * (shipped["val"] / fp32["val"] - 1)
    if cost >= 0.5:
        sys.exit(f"make_bundle: {dtype} weights cost {cost:.2f} % of validation loss (the limit is 0.5 %)")

    m, t, d = best.config.model, best.config.train, best.config.data
    size = (tmp / "m" / "model.safetensors").stat().st_size
    regularised = f"dropout {m.dropout:g}{' (variational)' if m.variational else ''}"
    regularised += f", DropConnect {m.weight_drop:g} on W_hh" if m.weight_drop else ""
    regularised += f", embedding dropout {m.embed_drop:g}" if m.embed_drop else ""
    regularised += f", activation penalties AR {m.ar:g} and TAR {m.tar:g}" if m.ar or m.tar else ""
    longer = f"; training also on poems up to {d.train_max_length} characters" if d.train_max_length else ""
    longer += " and on the poems whose editors' notes and marks were removed (`--clean-notes`)" if d.clean_notes else ""
    reads = "the poem alone"
    if d.conditioned:
        parts = [f"its title (left out for {d.title_drop:.0%} of training poems)"] if d.titles else []
        parts += (
            [f"its poet, one of the {d.authors} with most poems (left out for {d.author_drop:.0%})"]
            if d.authors
            else []
        )
        if d.genres:
            parts.insert(0, f"its genre (唐诗, 宋诗 or 宋词, from its file's name; left out for {d.genre_drop:.0%})")
        reads = ", ".join(parts) + ", then the poem"
    given = ""
    if "test_title" in fp32:
        given = f"; given the title {fp32['test_title']:.4f} (perplexity {torch.tensor(fp32['test_title']).exp():.1f})"
    if "test_both" in fp32:
        given += f", given the title and the poet {fp32['test_both']:.4f} ({torch.tensor(fp32['test_both']).exp():.1f})"
    genre_losses = "; ".join(
        f"{k[5:]} {v:.4f} ({torch.tensor(v).exp():.1f})" for k, v in fp32.items() if k.startswith("test ")
    )
    if genre_losses:
        given += f"; by genre, alone: {genre_losses}"
    card = f"""# The bundled tangshi model

| | |
|---|---|
| data | {", ".join(_files(x) for x in data)} ({len(best.vocab) - 4:,} characters + 4 special tokens), simplified with OpenCC, the seed's filters (poems of {d.min_length}–{d.max_length} characters{longer}), duplicates dropped, 95 / 2.5 / 2.5 % split by text hash |
| preset | `{best.config.preset}`: {m.cell.upper()} {m.num_layers} × {m.hidden_size}, embedding {m.embedding_size}, {regularised}, {m.output} softmax, {count_parameters(best.model):,} parameters; {t.optimizer} lr {t.lr:g}, {t.schedule} over the last {t.decay_fraction:.0%}, warm-up {t.warmup_steps}, batch {t.batch_size}, clip {t.clip_grad:g}, precision {t.precision}, seed {t.seed} |
| reads | {reads} |
| command | `{args.command}` |
| steps | {best_row["step"]:,} (best validation loss; the run stopped at {trainer["step"]:,}), {best_row["epoch"]:.2f} epochs |
| training time | {best_row["elapsed"] / 60:.1f} minutes on a 2-core CPU (torch {torch.__version__}) |
| validation loss | {fp32["val"]:.4f} nats per character (perplexity {torch.tensor(fp32["val"]).exp():.1f}), float32 weights |
| test loss | {fp32["test"]:.4f} nats per character (perplexity {torch.tensor(fp32["test"]).exp():.1f}) of the poems alone{given}; float32 weights |
| shipped weights | {dtype}, {size / 2**20:.1f} MiB: validation loss {shipped["val"]:.4f}, test loss {shipped["test"]:.4f} ({100 * (shipped["val"] / fp32["val"] - 1):+.3f} % against float32){pruned} |

Loss is the mean cross-entropy per predicted token: pad excluded, end token included.
"""
    (tmp / "m" / "model.safetensors").chmod(0o644)  # save_file keeps the temp folder's private mode
    (tmp / "m" / "README.md").write_text(card, "utf-8")
    (tmp / "m" / "README.md").chmod(0o644)
    if DEST.exists():
        shutil.rmtree(DEST)
    shutil.copytree(tmp / "m", DEST)
    shutil.rmtree(tmp)

    suite_data = args.suite_data or data
    from tangshi.cli import main as tangshi_main

    if tangshi_main(["calibrate", "--checkpoint", str(DEST), "--data", *map(str, suite_data)]) != 0:
        raise SystemExit("calibration failed")  # the message is above
    from tangshi.api import Poet

    t0 = time.perf_counter()
    result = run_suite({"bundled": Poet.load(DEST)}, suite_data)
    seconds = time.perf_counter() - t0
    card += (
        f"\n## The evaluation suite\n\n`tangshi eval --data {' '.join(suite_data)}` ({seconds:.0f} s on the machine above; "
        f"free poems with the default sampler: temperature {WriteOptions.temperature:g}, top-p {WriteOptions.top_p:g}, "
        f"diversity {DEFAULT_DIVERSITY:g}):\n\n" + markdown(result)
    )
    (DEST / "README.md").write_text(card, "utf-8")

    result["eval_seconds"] = round(seconds, 1)
    result["samples"] = [p.text for p in Poet.load(DEST).write(list(BEGINS), seed=1)]
    result["command"] = args.command
    result["training"] = {k: trainer.get(k) for k in ("step", "tokens", "elapsed", "stopped", "best_val", "best_step")}
    result["training"]["epochs"] = max((r.get("epoch", 0) for r in rows), default=0)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(args.run / "metrics.jsonl", RESULT.with_suffix(".metrics.jsonl"))
    tmp_result = RESULT.with_name(".bundled.json.tmp")
    tmp_result.write_text(json.dumps(result, ensure_ascii=False, indent=1), "utf-8")
    tmp_result.replace(RESULT)
    print(card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
