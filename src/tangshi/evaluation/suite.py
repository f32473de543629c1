"""The evaluation suite: how well models predict unseen poems and how their own poems fare.

For each checkpoint: loss, perplexity and bits per character on a split of a corpus; then N poems
per setting (free, begin characters 日 红 山 夜 湖 海 月, each regular form, acrostics), each set
measured by `poem_metrics`: form, rhyme and tone compliance (the prosody module), distinct-1 and
distinct-2, repetition (a character twice in a line, a line twice in a poem, the longest repeated
substring), the end-token rate, copying (lines and 4-character windows found verbatim in the
training split) and mean length. As many human poems of the test split, drawn at random, get the
same metrics as a reference row.

With `readers` (`tangshi eval --readers`), how a reader would judge each model's poems, by the
measures of `tangshi.evaluation.readers`, for each sampler setting (temperature:diversity): N human poems of
the regular forms are drawn from the split, and the model writes one poem for each from its first
character, in its form and free. Per row: the two-sample classifier AUC against those human poems,
coherence between their line-shuffled versions (0) and them (1), and title retrieval@1 of the
in-form poems (the begin-character baseline). Rows for `title=` and `author=` are measured where the
options exist and the checkpoint was trained with them; the human references (human vs human AUC,
coherence of human and shuffled poems, the poets' own test poems attributed to them) always.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tangshi.data.corpus import Corpus, load_corpus
from tangshi.evaluation import EXTRA_SAMPLERS, SETTINGS
from tangshi.evaluation.writer import Poems, Writer, WrittenPoem, write_each
from tangshi.prosody import regular

BEGINS = "日红山夜湖海月"
ACROSTICS = ["春夏秋冬", "风花雪月", "琴棋书画", "梅兰竹菊", "东南西北", "江山如画"]
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
            for line in regular.split_lines(text):
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
    reports = [regular.check(t) for t in texts]
    poems_lines = [r.lines for r in reports]
    lines = [ln for ls in poems_lines for ln in ls]
    chars = "".join(lines)
    unigrams = list(chars)
    bigrams = [ln[i : i + 2] for ln in lines for i in range(len(ln) - 1)]
    windows = [ln[i : i + WINDOW] for ln in lines for i in range(len(ln) - WINDOW + 1)]
    in_form = [r for r in reports if r.form != "other"]
    repeated_lines = sum(len(ls) - len(set(ls)) for ls in poems_lines)
    out: dict[str, Any] = {
        "poems": len(texts),
        "regular": _share(len(in_form), len(reports)),
        "form": _share(sum(r.form == form for r in reports), len(reports)) if form else None,
        "rhyme": _mean([r.rhyme for r in in_form]),
        "relaxed": _mean([r.relaxed for r in in_form]),
        "relaxed_full": _mean([r.relaxed_ok for r in in_form]),
        "strict": _mean([r.strict for r in in_form]),
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


def generate(poet: Writer, setting: str, n: int, seed: int) -> Poems | list[WrittenPoem]:
    """n poems for a setting, deterministic in `seed`, sampled (the suite's figures are the sampler's; the
    default writing is judged by readers: docs/reader-panel.md)."""
    if setting == "free":
        return poet.write([""], num=n, seed=seed, beam=0)
    if setting == "begin" or setting in regular.FORMS:  # the begin characters in turn (those the model knows)
        begins = [b for b in BEGINS if b in poet.vocab]
        if not begins:
            return []
        per = [(b, n // len(begins) + (i < n % len(begins)), seed + 1000 * i) for i, b in enumerate(begins)]
        per = [x for x in per if x[1]]
        form = setting if setting in regular.FORMS else "free"
        nums, seeds = [k for _, k, _ in per], [s for *_, s in per]
        return poet.write([b for b, _, _ in per], nums=nums, seeds=seeds, form=form, beam=0)
    if setting == "acrostic":
        poems = []
        known = [h for h in ACROSTICS if all(c in poet.vocab for c in h)]
        for i in range(n if known else 0):
            heads = known[i % len(known)]
            poems += poet.write("", acrostic=heads, form="七绝" if i % 2 else "五绝", seed=seed + i, beam=0)
        return poems
    raise ValueError(f"unknown setting {setting!r}; one of {', '.join(SETTINGS)}")


def evaluate_model(
    poet: Writer,
    name: str,
    corpus: Corpus,
    ref: Reference,
    split: str = "test",
    poems: int = 100,
    settings: Sequence[str] = SETTINGS,
    seed: int = 1,
) -> dict:
    """Loss on the split and generation metrics per setting, for one loaded model."""
    from tangshi.data.corpus import encode_split
    from tangshi.evaluation.losses import mean_loss

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
        metrics = poem_metrics([p.text for p in written], ended, ref, setting if setting in regular.FORMS else None)
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


# ---------------------------------------------------------------- how a reader would judge them

MODES = ("form", "free")


def parse_samplers(spec: str) -> list[tuple[float, float]]:
    """ "0.8:0.35,1.0:0" -> [(0.8, 0.35), (1.0, 0.0)]: temperature:diversity pairs."""
    out = []
    for part in (x.strip() for x in spec.split(",")):
        if not part:
            continue
        try:
            t, d = (float(x) for x in part.split(":"))
        except ValueError:
            raise ValueError(f"--samplers: '{part}' is not temperature:diversity, e.g. 0.8:0.35") from None
        if not (0 < t <= 10 and 0 <= d <= 2):
            raise ValueError(f"--samplers: '{part}': temperature must be > 0 and <= 10, diversity >= 0 and <= 2")
        out.append((t, d))
    return list(dict.fromkeys(out))


def default_samplers(poet: Writer) -> list[tuple[float, float]]:
    """The checkpoint's default sampler, then EXTRA_SAMPLERS."""
    from tangshi.options import WriteOptions

    return list(dict.fromkeys([(WriteOptions().temperature, poet.default_diversity), *EXTRA_SAMPLERS]))


@dataclass
class HumanSample:
    """Human poems of the regular forms drawn from a split: what the model writes beside."""

    texts: list[str]
    titles: list[str]
    forms: list[str]
    control: list[str]  # as many others, for the human vs human AUC

    @property
    def begins(self) -> list[str]:
        return [t[0] for t in self.texts]


def human_sample(corpus: Corpus, split: str, n: int, seed: int) -> HumanSample:
    """n random regular poems of the split (their forms in the split's proportions) and n others."""
    import random

    rows = [(t, ti) for t, ti in zip(corpus.texts_of(split), corpus.titles_of(split), strict=True)]
    rows = [(t, ti, f) for t, ti in rows if (f := regular.classify(regular.split_lines(t))) != "other"]
    order = random.Random(seed).sample(range(len(rows)), len(rows))
    take, rest = order[:n], order[n : 2 * n]
    return HumanSample(
        [rows[i][0] for i in take], [rows[i][1] for i in take], [rows[i][2] for i in take], [rows[i][0] for i in rest]
    )


def write_texts(
    poet: Writer, begins: Sequence[str], forms: Sequence[str], seed: int, **opts: Any
) -> tuple[list[str], int]:
    """One poem a begin, each in its form ("free" for none) with seed `seed + i` (`write_each`); a begin
    the model does not know becomes "" (the model's choice).
    Returns the texts in order and the number of begins replaced."""
    from tangshi.generation.search import resolve_begin
    from tangshi.options import OptionError

    known, unknown = [], 0
    for b in begins:
        try:
            if b:
                resolve_begin(poet.vocab, b, poet.ckpt.config.data.script)
            known.append(b)
        except OptionError:
            known.append("")
            unknown += 1
    return write_each(poet, known, forms, seed, **opts), unknown


def _timed(f, *args, **kwargs) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = f(*args, **kwargs)
    return out, round(time.perf_counter() - t0, 2)


@dataclass
class Judges:
    """What every checkpoint is read by: fitted once on the train split, with the human references."""

    human: HumanSample
    pool: list[str]  # the split's poems: distractors of title retrieval
    retrievable: list[int]  # the human poems whose form has 9 others in the pool
    coherence: Any  # readers.Coherence
    attribution: Any  # readers.PoetAttribution, None where the train split has too few named poets
    reference: dict  # the human rows
    seed: int


def make_judges(corpus: Corpus, split: str, poems: int, seed: int) -> Judges:
    """Fit the coherence and attribution judges on the train split; measure the human references."""
    from tangshi.evaluation import readers as R

    human = human_sample(corpus, split, poems, seed)
    pool = corpus.texts_of(split)
    per_form = Counter(R.form_of(t) for t in dict.fromkeys(pool))
    retrievable = [i for i, f in enumerate(human.forms) if per_form[f] >= R.RETRIEVAL_CANDIDATES]
    seconds: dict[str, float] = {}
    coherence, seconds["fit_coherence"] = _timed(R.fitted, "coherence", corpus.texts_of("train"), seed=0)
    shuffled = R.shuffle_lines(human.texts, seed)
    ref: dict[str, Any] = {"poems": len(human.texts), "forms": dict(Counter(human.forms))}
    ref["auc_human_vs_human"], seconds["auc"] = (
        _timed(R.two_sample_auc, human.control, human.texts, seed) if len(human.control) >= 5 else (None, 0.0)
    )
    ref["control_poems"] = len(human.control)
    ref["coherence_human"] = round(statistics.mean(coherence.score(human.texts)), 4)
    ref["coherence_shuffled"] = round(statistics.mean(coherence.score(shuffled)), 4)
    ref["retrieval_chance"] = 1 / R.RETRIEVAL_CANDIDATES
    ref["retrieval_poems"] = len(retrievable)
    try:
        attribution, seconds["fit_attribution"] = _timed(
            R.fitted, "attribution", corpus.texts_of("train"), corpus.authors_of("train")
        )
        ref["attribution"], seconds["attribution_reference"] = _timed(
            attribution.reference, pool, corpus.authors_of(split)
        )
    except ValueError as e:  # a corpus without authors
        attribution, ref["attribution"] = None, {"note": f"not measured: {e}"}
    ref["seconds"] = seconds
    return Judges(human, pool, retrievable, coherence, attribution, ref, seed)


def _retrieval(judges: Judges, texts: Sequence[str]) -> float | None:
    """title_retrieval over the human poems whose form has enough others in the pool."""
    from tangshi.evaluation import readers as R

    idx = judges.retrievable
    if not idx:
        return None
    real = [judges.human.texts[i] for i in idx]
    return round(R.title_retrieval([texts[i] for i in idx], real, judges.pool, judges.seed), 4)


def _coherence(judges: Judges, texts: list[str]) -> dict:
    """Mean P(coherent) of the poems and their position from shuffled (0) to human (1)."""
    ref = judges.reference
    model = statistics.mean(judges.coherence.score(texts))
    gap = ref["coherence_human"] - ref["coherence_shuffled"]
    return {"mean": round(model, 4), "position": round((model - ref["coherence_shuffled"]) / gap, 4) if gap else None}


def reader_row(poet: Writer, judges: Judges, mode: str, temperature: float, diversity: float) -> dict:
    """One sampler in one mode (form: each human poem's form; free): the poems written from the human
    poems' first characters, and what the readers make of them."""
    from tangshi.evaluation import readers as R

    h = judges.human
    forms = h.forms if mode == "form" else ["free"] * len(h.texts)
    (texts, unknown), t_write = _timed(
        write_texts, poet, h.begins, forms, judges.seed, temperature=temperature, diversity=diversity
    )
    auc, t_auc = _timed(R.two_sample_auc, texts, h.texts, judges.seed)
    coherence, t_coh = _timed(_coherence, judges, texts)
    row: dict[str, Any] = {"poems": len(texts), "unknown_begins": unknown, "auc": round(auc, 4)}
    row["coherence"] = coherence
    seconds = {"write": t_write, "auc": t_auc, "coherence": t_coh}
    if mode == "form":
        row["retrieval"], seconds["retrieval"] = _timed(_retrieval, judges, texts)
    row["samples"] = texts[:: max(1, len(texts) // 3)][:3]
    row["seconds"] = seconds
    return row


def title_row(poet: Writer, judges: Judges, temperature: float, diversity: float) -> dict:
    """Poems written for the human poems' titles (no begin character), in their forms: retrieval@1
    of each one's own poem among 10, beside the begin-character baseline. Measured only where
    `Poet.write` takes `title=` and the checkpoint was trained with titles; else a note says why."""
    from tangshi.options import MAX_TITLE, NAMES, OptionError

    if "title" not in NAMES:
        return {"note": "Poet.write takes no title= yet"}
    h = judges.human
    t0 = time.perf_counter()
    texts = []
    try:
        for i, (title, form) in enumerate(zip(h.titles, h.forms, strict=True)):
            opts = {"title": title[:MAX_TITLE]} if title else {}  # the model reads at most max_title of it anyway
            written = poet.write("", seeds=[judges.seed + i], nums=[1], form=form, **opts,
                                 temperature=temperature, diversity=diversity)  # fmt: skip
            texts.append(written[0].text)
    except OptionError as e:
        if e.field != "title":
            raise
        return {"note": f"not measured: {e}"}
    t_write = round(time.perf_counter() - t0, 2)
    retrieval, t_ret = _timed(_retrieval, judges, texts)
    return {
        "poems": len(texts),
        "untitled": sum(not t for t in h.titles),
        "retrieval": retrieval,
        "samples": [f"{h.titles[i]}: {texts[i]}" for i in range(0, len(texts), max(1, len(texts) // 3))][:3],
        "seconds": {"write": t_write, "retrieval": t_ret},
    }


def _asked_keywords(text: str) -> tuple[str, ...]:
    """Two keywords from a human poem: the first two characters (a word in a 2+3 or 2+2+3 line) of
    its second and fourth lines, where they share no character and are Han characters."""
    lines = regular.split_lines(text)
    words = [ln[:2] for ln in lines[1:4:2] if len(ln) >= 2 and all(regular.is_han(ch) for ch in ln[:2])]
    return tuple(words) if len(words) == 2 and not set(words[0]) & set(words[1]) else ()


def keyword_row(poet: Writer, judges: Judges, temperature: float, diversity: float) -> dict:
    """Poems written with two keywords taken from each human poem (`_asked_keywords`, no begin
    character), in its form: the share of keywords present in the poem and in the line the plan
    gave them (`readers.keyword_report`), and the share of poems in their form, rhymed and with every
    relaxed tone kept (`prosody.check`); keywords the model cannot place are counted (the writer names
    them), not written."""
    from tangshi.evaluation import readers as R
    from tangshi.options import NAMES, OptionError

    if "keywords" not in NAMES:
        return {"note": "Poet.write takes no keywords= yet"}
    h = judges.human
    t0 = time.perf_counter()
    texts, plans, in_form, refused = [], [], [], []
    for i, (text, form) in enumerate(zip(h.texts, h.forms, strict=True)):
        if not (asked := _asked_keywords(text)):
            continue
        try:
            written = poet.write("", seeds=[judges.seed + i], nums=[1], form=form, keywords=asked,
                                 temperature=temperature, diversity=diversity)  # fmt: skip
        except OptionError as e:
            if e.field != "keywords":
                raise
            refused.append(str(e))
            continue
        poem = written[0]
        texts.append(poem.text)
        plans.append([(e["word"], e["line"]) for e in poem.plan or [] if e["given"]])
        checked = regular.check(poem.text)
        in_form.append(checked.form == form and checked.rhyme and checked.relaxed_ok)
    if not texts:
        return {"note": f"not measured: {len(refused)} requests refused, none written"}
    report = R.keyword_report(texts, plans)
    return {
        "poems": len(texts),
        **report,
        "asked": 2 * len(texts),
        "in_form": round(sum(in_form) / len(in_form), 4),
        "refused": len(refused),
        "refusals": refused[:5],
        "samples": texts[:: max(1, len(texts) // 3)][:3],
        "seconds": round(time.perf_counter() - t0, 2),
    }


def author_row(poet: Writer, judges: Judges, poems: int, temperature: float, diversity: float) -> dict:
    """Poems written as each of the attribution's poets (`author=`), in the human sample's forms:
    the share attributed to the poet asked for, per poet and over all (chance 1/20), beside the
    poets' own poems (the reference). Poets the checkpoint does not know are listed, not measured."""
    from tangshi.options import NAMES, OptionError

    if "author" not in NAMES:
        return {"note": "Poet.write takes no author= yet"}
    if judges.attribution is None:
        return {"note": judges.reference["attribution"]["note"]}
    att, h = judges.attribution, judges.human
    per_poet = max(1, poems // len(att.poets))
    t0 = time.perf_counter()
    per: dict[str, dict] = {}
    unknown = []
    for k, name in enumerate(att.poets):
        forms = [h.forms[(k * per_poet + j) % len(h.forms)] for j in range(per_poet)]
        try:
            texts, _ = write_texts(poet, [""] * per_poet, forms, judges.seed + 1000 * k, author=name,
                                   temperature=temperature, diversity=diversity)  # fmt: skip
        except OptionError as e:
            if e.field != "author":
                raise
            unknown.append(name)
            continue
        per[name] = {"poems": len(texts), "share": round(att.share(texts, name), 4)}
    if not per:
        return {"note": "not measured: the checkpoint knows none of the poets (train with --authors N)"}
    total = sum(v["poems"] for v in per.values())
    return {
        "poems": total,
        "share": round(sum(v["share"] * v["poems"] for v in per.values()) / total, 4),
        "chance": round(1 / len(att.poets), 4),
        "poets": per,
        "unknown_poets": unknown,
        "seconds": {"write_and_attribute": round(time.perf_counter() - t0, 2)},
    }


def readers_model(
    poet: Writer, name: str, judges: Judges, samplers: Sequence[tuple[float, float]] | None = None
) -> dict:
    """Every reader's measure of one checkpoint, a row per sampler and mode; the title and author
    rows with the first sampler (the checkpoint's default unless `samplers` says otherwise)."""
    samplers = list(samplers or default_samplers(poet))
    rows = []
    for temperature, diversity in samplers:
        row: dict[str, Any] = {"temperature": temperature, "diversity": diversity}
        row["default"] = (temperature, diversity) == default_samplers(poet)[0]
        for mode in MODES:
            row[mode] = reader_row(poet, judges, mode, temperature, diversity)
        rows.append(row)
    t, d = samplers[0]
    n = len(judges.human.texts)
    return {
        "model": name,
        "rows": rows,
        "title": {"temperature": t, "diversity": d, **title_row(poet, judges, t, d)},
        "author": {"temperature": t, "diversity": d, **author_row(poet, judges, n, t, d)},
        "keywords": {"temperature": t, "diversity": d, **keyword_row(poet, judges, t, d)},
    }


def run_suite(
    poets: Mapping[str, Writer],
    data: list[str | Path],
    split: str = "test",
    poems: int = 100,
    settings: Sequence[str] = SETTINGS,
    seed: int = 1,
    fmt: str = "auto",
    cache_dir: Path | None = None,
    readers: bool = False,
    samplers: Sequence[tuple[float, float]] | None = None,
) -> dict:
    """Every loaded checkpoint (name -> poet, e.g. `api.Poet.load(folder)`) and the human reference; with
    `readers`, how a reader would judge each (`samplers`: temperature:diversity pairs, None for each
    checkpoint's default and EXTRA_SAMPLERS)."""
    from tangshi.data.corpus import SPLITS, CorpusError

    if split not in ("all", *SPLITS):
        raise CorpusError(f"--split must be all, train, val or test, got {split!r}")
    first = next(iter(poets.values()))
    corpus = load_corpus(data, first.ckpt.config.data, fmt=fmt, cache_dir=cache_dir)
    if not corpus.texts_of(split):
        raise CorpusError(f"the {split} split of {', '.join(map(str, data))} has no poems (try --split all)")
    ref = Reference.of(corpus.texts_of("train"))
    rows = [evaluate_model(p, name, corpus, ref, split, poems, settings, seed) for name, p in poets.items()]
    result = {
        "split": split,
        "poems_per_setting": poems,
        "models": rows,
        "human": human_row(corpus, ref, split, poems, seed),
    }
    if readers:
        judges = make_judges(corpus, split, poems, seed)
        models = [readers_model(p, name, judges, samplers) for name, p in poets.items()]
        result["readers"] = {"split": split, "human": judges.reference, "models": models}
    return result


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
    if "readers" in result:
        out += ["", *readers_markdown(result["readers"])]
    return "\n".join(out) + "\n"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.0f} %"


def readers_markdown(r: dict) -> list[str]:
    """The readers' tables: a row per model and sampler, the human references beneath."""
    h = r["human"]
    forms = ", ".join(f"{f} {n}" for f, n in h["forms"].items())
    out = [
        f"How a reader would judge them: {h['poems']} human poems of the regular forms from the {r['split']} split "
        f"({forms}); the model writes one from each one's first character, in its form and free. "
        "AUC: two-sample classifier (0.5 = indistinguishable); coherence: mean P(coherent) and the position "
        "from line-shuffled (0 %) to human (100 %); retrieval@1 among 10 (in form, first characters left out).",
        "",
        "| model | temperature | diversity | AUC in form | AUC free | coherence in form | position | "
        "coherence free | position | retrieval@1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in r["models"]:
        for row in m["rows"]:
            f, fr = row["form"], row["free"]
            name = m["model"] + (" (default)" if row.get("default") else "")
            out.append(
                f"| {name} | {row['temperature']:g} | {row['diversity']:g} | {f['auc']:.3f} | {fr['auc']:.3f} | "
                f"{f['coherence']['mean']:.3f} | {_pct(f['coherence']['position'])} | {fr['coherence']['mean']:.3f} | "
                f"{_pct(fr['coherence']['position'])} | {_cell(f['retrieval'])} |"
            )
    hh = h["auc_human_vs_human"]
    out.append(
        f"| human vs human ({h['control_poems']} others) | | | {_cell(hh and round(hh, 4))} | | "
        f"{h['coherence_human']:.3f} | 100 % | | | |"
    )
    out.append(f"| human, lines shuffled | | | | | {h['coherence_shuffled']:.3f} | 0 % | | | |")
    out.append(f"| chance | | | 0.5 | 0.5 | | | | | {h['retrieval_chance']:.3f} |")
    out += ["", "Titles, keywords and poets (the first sampler):", ""]
    out += ["| model | row | poems | measure | value | reference |", "|---|---|---:|---|---:|---|"]
    a = h["attribution"]
    for m in r["models"]:
        t, au = m["title"], m["author"]
        if "note" in t:
            out.append(f"| {m['model']} | title | – | retrieval@1 | – | {t['note']} |")
        else:
            base = next((x["form"]["retrieval"] for x in m["rows"]), None)
            out.append(
                f"| {m['model']} | title | {t['poems']} | retrieval@1 | {_cell(t['retrieval'])} | "
                f"begin-character baseline {_cell(base)}, chance 0.100 |"
            )
        kw = m.get("keywords", {"note": "not measured"})
        if "note" in kw:
            out.append(f"| {m['model']} | keywords | – | present, in the planned line, in form | – | {kw['note']} |")
        else:
            out.append(
                f"| {m['model']} | keywords | {kw['poems']} | present, in the planned line, in form | "
                f"{_pct(kw['present'])}, {_pct(kw['placed'])}, {_pct(kw['in_form'])} (rhymed, tones kept) | "
                f"{kw['keywords']} of {kw['asked']} planned (2 a poem, from the human poem's 2nd and 4th lines); "
                f"{kw['refused']} requests refused with the keyword named |"
            )
        if "note" in au:
            out.append(f"| {m['model']} | author | – | attributed to the poet asked | – | {au['note']} |")
        else:
            out.append(
                f"| {m['model']} | author | {au['poems']} | attributed to the poet asked | {_pct(au['share'])} | "
                f"the poets' own poems {_pct(a.get('share'))}, chance {_pct(au['chance'])} |"
            )
    if "note" in a:
        out.append(f"| human | own poems | – | attributed to their poet | – | {a['note']} |")
    else:
        out.append(
            f"| human | own poems | {a['poems']} | attributed to their poet ({round(1 / a['chance'])} poets) | "
            f"{_pct(a['share'])} | poets alike {_pct(a['mean_share'])}, chance {_pct(a['chance'])} |"
        )
    return out


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
                ax.plot(xs, [r["val_loss"] for r in rows], "o-", ms=4, label=name)  # one point shows too
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
