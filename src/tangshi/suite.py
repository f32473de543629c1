"""The evaluation suite: how well models predict unseen poems and how their own poems fare.

For each checkpoint: loss, perplexity and bits per character on a split of a corpus; then N poems
per setting (free, begin characters 日 红 山 夜 湖 海 月, each regular form, acrostics), each set
measured by `poem_metrics`: form, rhyme and tone compliance (the prosody module), distinct-1 and
distinct-2, repetition (a character twice in a line, a line twice in a poem, the longest repeated
substring), the end-token rate, copying (lines and 4-character windows found verbatim in the
training split) and mean length. As many human poems of the test split, drawn at random, get the
same metrics as a reference row.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tangshi import prosody as P
from tangshi.corpus import Corpus, load_corpus

BEGINS = "日红山夜湖海月"
ACROSTICS = ["春夏秋冬", "风花雪月", "琴棋书画", "梅兰竹菊", "东南西北", "江山如画"]
SETTINGS = ("free", "begin", "五绝", "七绝", "五律", "七律", "acrostic")
WINDOW = 4  # characters of a copied window


@dataclass
class Reference:
    """What generated poems are compared against: the training split's lines and windows."""

    lines: set[str] = field(default_factory=set)
    windows: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, texts: Sequence[str]) -> Reference:
        ref = cls()
        for text in texts:
            for line in P.split_lines(text):
                ref.lines.add(line)
                ref.windows.update(line[i : i + WINDOW] for i in range(len(line) - WINDOW + 1))
        return ref


def _longest_repeat(s: str) -> int:
    """Length of the longest substring that occurs at least twice in s (occurrences may overlap)."""
    best = 0
    for shift in range(1, len(s)):
        run = 0
        for a, b in zip(s, s[shift:], strict=False):
            run = run + 1 if a == b else 0
            best = max(best, run)
    return best


def poem_metrics(texts: Sequence[str], ended: Sequence[bool] | None, ref: Reference, form: str | None = None) -> dict:
    """The generation metrics of a set of poems (see the module docstring)."""
    reports = [P.check(t) for t in texts]
    poems_lines = [r.lines for r in reports]
    lines = [ln for ls in poems_lines for ln in ls]
    chars = "".join(lines)
    unigrams = list(chars)
    bigrams = [ln[i : i + 2] for ln in lines for i in range(len(ln) - 1)]
    windows = [ln[i : i + WINDOW] for ln in lines for i in range(len(ln) - WINDOW + 1)]
    regular = [r for r in reports if r.form != "other"]
    repeated_lines = sum(len(ls) - len(set(ls)) for ls in poems_lines)
    out: dict[str, Any] = {
        "poems": len(texts),
        "regular": _share(len(regular), len(reports)),
        "form": _share(sum(r.form == form for r in reports), len(reports)) if form else None,
        "rhyme": _mean([r.rhyme for r in regular]),
        "relaxed": _mean([r.relaxed for r in regular]),
        "relaxed_full": _mean([r.relaxed_ok for r in regular]),
        "strict": _mean([r.strict for r in regular]),
        "distinct_1": _share(len(set(unigrams)), len(unigrams)),
        "distinct_2": _share(len(set(bigrams)), len(bigrams)),
        "char_repeat_lines": _share(sum(len(set(ln)) < len(ln) for ln in lines), len(lines)),
        "line_repeat": _share(repeated_lines, len(lines)),
        "longest_repeat": _mean([_longest_repeat("".join(ls)) for ls in poems_lines]),
        "end_rate": _mean(list(ended)) if ended is not None else None,
        "copied_lines": _share(sum(ln in ref.lines for ln in lines if len(ln) >= WINDOW), len(lines)),
        "copied_windows": _share(sum(w in ref.windows for w in windows), len(windows)),
        "length": _mean([len("".join(ls)) for ls in poems_lines]),
    }
    return out


def _share(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def _mean(xs: list) -> float | None:
    return round(statistics.mean(float(x) for x in xs), 4) if xs else None


# ---------------------------------------------------------------- one model


def generate(poet, setting: str, n: int, seed: int):
    """n poems for a setting, deterministic in `seed`."""
    if setting == "free":
        return poet.write([""], num=n, seed=seed)
    if setting == "begin" or setting in P.FORMS:  # the begin characters in turn (those the model knows)
        begins = [b for b in BEGINS if b in poet.vocab]
        if not begins:
            return []
        per = [(b, n // len(begins) + (i < n % len(begins)), seed + 1000 * i) for i, b in enumerate(begins)]
        per = [x for x in per if x[1]]
        form = setting if setting in P.FORMS else "free"
        return poet.write([b for b, _, _ in per], nums=[k for _, k, _ in per], seeds=[s for *_, s in per], form=form)
    if setting == "acrostic":
        poems = []
        known = [h for h in ACROSTICS if all(c in poet.vocab for c in h)]
        for i in range(n if known else 0):
            heads = known[i % len(known)]
            poems += poet.write("", acrostic=heads, form="七绝" if i % 2 else "五绝", seed=seed + i)
        return poems
    raise ValueError(f"unknown setting {setting!r}; one of {', '.join(SETTINGS)}")


def evaluate_model(
    poet,
    name: str,
    corpus: Corpus,
    ref: Reference,
    split: str = "test",
    poems: int = 100,
    settings: Sequence[str] = SETTINGS,
    seed: int = 1,
) -> dict:
    """Loss on the split and generation metrics per setting, for one loaded model."""
    from tangshi.corpus import encode_split
    from tangshi.evaluate import mean_loss

    t0 = time.perf_counter()
    seqs = encode_split(corpus, poet.vocab, split)
    loss, tokens = mean_loss(poet.model, seqs, device=next(poet.model.parameters()).device)
    row: dict[str, Any] = {
        "model": name,
        "path": str(poet.ckpt.path),
        "cell": poet.ckpt.config.model.cell,
        "split": split,
        "loss": round(loss, 5),
        "perplexity": round(math.exp(loss), 3),
        "bits_per_char": round(loss / math.log(2), 4),
        "tokens": tokens,
        "poems": len(seqs),
        "settings": {},
    }
    t_loss = time.perf_counter() - t0
    for setting in settings if poems else ():
        written = generate(poet, setting, poems, seed)
        if not written:
            row["settings"][setting] = {"poems": 0, "note": "the model knows none of the begin or head characters"}
            continue
        ended = [p.ended for p in written] if setting in ("free", "begin") else None
        metrics = poem_metrics([p.text for p in written], ended, ref, setting if setting in P.FORMS else None)
        metrics["nll"] = _mean([p.nll for p in written])
        metrics["samples"] = [p.text for p in written[:: max(1, len(written) // 3)][:3]]
        row["settings"][setting] = metrics
    row["seconds"] = {"loss": round(t_loss, 2), "poems": round(time.perf_counter() - t0 - t_loss, 2)}
    return row


def human_row(corpus: Corpus, ref: Reference, split: str = "test", poems: int = 100, seed: int = 1) -> dict:
    """The same metrics for `poems` human poems drawn from the split (all when poems is 0): distinct-n
    falls as a sample grows, so the reference is as large as each model's sample."""
    import random

    texts = corpus.texts_of(split)
    if poems and poems < len(texts):
        texts = random.Random(seed).sample(texts, poems)
    return {
        "model": f"human ({split} split)",
        "split": split,
        "settings": {"human": poem_metrics(texts, None, ref)},
    }


def run_suite(
    checkpoints: dict[str, str | Path | None],
    data: list[str | Path],
    split: str = "test",
    poems: int = 100,
    settings: Sequence[str] = SETTINGS,
    seed: int = 1,
    device: str = "cpu",
    fmt: str = "auto",
    cache_dir: Path | None = None,
) -> dict:
    """Every checkpoint (name -> folder, None for the bundled model) and the human reference."""
    from tangshi.api import Poet
    from tangshi.corpus import SPLITS, CorpusError

    if split not in ("all", *SPLITS):
        raise CorpusError(f"--split must be all, train, val or test, got {split!r}")
    poets = {name: Poet.load(path, device=device) for name, path in checkpoints.items()}
    first = next(iter(poets.values()))
    corpus = load_corpus(data, first.ckpt.config.data, fmt=fmt, cache_dir=cache_dir)
    if not corpus.texts_of(split):
        raise CorpusError(f"the {split} split of {', '.join(map(str, data))} has no poems (try --split all)")
    ref = Reference.of(corpus.texts_of("train"))
    rows = [evaluate_model(p, name, corpus, ref, split, poems, settings, seed) for name, p in poets.items()]
    return {
        "split": split,
        "poems_per_setting": poems,
        "models": rows,
        "human": human_row(corpus, ref, split, poems, seed),
    }


# ---------------------------------------------------------------- output

COLUMNS = [
    ("regular", "regular"),
    ("form", "in form"),
    ("rhyme", "rhyme"),
    ("relaxed", "relaxed"),
    ("relaxed_full", "relaxed = 1"),
    ("strict", "strict"),
    ("distinct_1", "distinct-1"),
    ("distinct_2", "distinct-2"),
    ("char_repeat_lines", "char twice in a line"),
    ("line_repeat", "line repeated"),
    ("longest_repeat", "longest repeat"),
    ("end_rate", "end token"),
    ("copied_lines", "copied lines"),
    ("copied_windows", "copied 4-grams"),
    ("length", "length"),
]


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def markdown(result: dict) -> str:
    out = [f"Loss on the {result['split']} split (nats per character, pad excluded, end token included):", ""]
    out += ["| model | cell | loss | perplexity | bits/char |", "|---|---|---:|---:|---:|"]
    for r in result["models"]:
        out.append(
            f"| {r['model']} | {r['cell']} | {r['loss']:.4f} | {r['perplexity']:.1f} | {r['bits_per_char']:.3f} |"
        )
    out += ["", f"Generated poems ({result['poems_per_setting']} a setting) and the human poems of the split:", ""]
    out.append("| model | setting | " + " | ".join(title for _, title in COLUMNS) + " |")
    out.append("|---|---|" + "---:|" * len(COLUMNS))
    rows = [(r["model"], s, m) for r in result["models"] for s, m in r["settings"].items()]
    rows += [(result["human"]["model"], "–", result["human"]["settings"]["human"])]
    for model, setting, m in rows:
        out.append(f"| {model} | {setting} | " + " | ".join(_cell(m.get(k)) for k, _ in COLUMNS) + " |")
    return "\n".join(out) + "\n"


def plots(result: dict, folder: Path, runs: dict[str, Path] | None = None) -> list[Path]:
    """PNG plots: loss curves of the runs (against wall-clock time and steps) and bars of
    compliance and diversity per model. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    curves = {}
    for name, run in (runs or {}).items():
        path = Path(run) / "metrics.jsonl"
        if path.is_file():
            rows = [json.loads(x) for x in path.read_text("utf-8").splitlines() if x.strip()]
            curves[name] = [r for r in rows if r.get("kind") == "val"]
    if curves:
        for x_key, label, fname in (("elapsed", "minutes", "loss_time.png"), ("step", "steps", "loss_steps.png")):
            fig, ax = plt.subplots(figsize=(7, 4.5))
            for name, rows in curves.items():
                xs = [r[x_key] / 60 if x_key == "elapsed" else r[x_key] for r in rows]
                ax.plot(xs, [r["val_loss"] for r in rows], label=name)
            ax.set_xlabel(label)
            ax.set_ylabel("validation loss (nats/char)")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
            fig.tight_layout()
            fig.savefig(folder / fname, dpi=110)
            plt.close(fig)
            written.append(folder / fname)
    models = [r["model"] for r in result["models"]]
    for keys, fname, setting in (
        (("rhyme", "relaxed", "strict"), "compliance.png", "七绝"),
        (("distinct_1", "distinct_2", "copied_lines", "line_repeat"), "diversity.png", "free"),
    ):
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(models) * len(keys) / 2), 4.5))
        width = 0.8 / len(keys)
        for k, key in enumerate(keys):
            values = [(r["settings"].get(setting) or {}).get(key) or 0 for r in result["models"]]
            ax.bar([i + k * width for i in range(len(models))], values, width, label=key)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(models))], models, rotation=20, fontsize=8)
        what = "compliance" if "rhyme" in keys else "diversity and copying"
        ax.set_title(f"{what} ({'qijue, --form' if setting == '七绝' else setting} poems)")  # DejaVu has no CJK
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / fname, dpi=110)
        plt.close(fig)
        written.append(folder / fname)
    return written
