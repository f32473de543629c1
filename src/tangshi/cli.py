"""`tangshi` subcommands, each a thin call into one module: data, train, write, eval, presets.

Heavy modules (torch) are imported inside the commands, so `--help` is instant and the process can
re-execute itself with allocator settings before torch is loaded (see `tune_process`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from tangshi import __version__
from tangshi.config import DEVICES, SECTIONS, ConfigError, ServeConfig, apply_overrides, load_preset, preset_names
from tangshi.evaluation import EXTRA_SAMPLERS, SETTINGS
from tangshi.options import MAX_BEGIN, MAX_TEMPLATE, NAMES, SPECS, OptionError, WriteOptions
from tangshi.prosody.regular import FORMS_IN_WORDS

# glibc returns every step's activations to the kernel and faults them back in; these settings
# make its heap recycle them instead (training on CPU is much faster: docs/speed.md has the figures).
_MALLOC_ENV = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": "68719476736",
    "MALLOC_TOP_PAD_": "1073741824",
}
# oneDNN (bf16 on CPU) caches a compiled kernel per matrix and recurrent-layer shape. The output
# layer's rows are padded to a few shapes (`ROW_MULTIPLE`, `TAIL_ROW_MULTIPLE` in `model.charrnn`),
# but a step of the adaptive softmax alone uses some 20: a smaller cache compiles them again at every
# step, a larger one holds more memory (the recurrent layers' kernels grow with the sequence length).
# Speed and memory by cache size: docs/speed.md.
_ONEDNN_CACHE = "64"


def tune_process(command: list[str]) -> None:
    """Re-execute `python *command` once with the allocator settings (they act only if set before
    start-up). Benchmarks call this first thing too, so they measure what `tangshi train` runs."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", _ONEDNN_CACHE)
    if (
        sys.platform != "linux"
        or platform.libc_ver()[0] != "glibc"
        or os.environ.get("TANGSHI_NO_MALLOC_TUNING")
        or all(k in os.environ for k in _MALLOC_ENV)
    ):
        return
    env = {**os.environ, **{k: v for k, v in _MALLOC_ENV.items() if k not in os.environ}}
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *command], env)
    except OSError:
        return  # run as we are


# ---------------------------------------------------------------- options from dataclasses


def _add_fields(parser: argparse.ArgumentParser, kind: type, title: str) -> None:
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(kind):
        if f.metadata.get("cli", True) is False:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_ = f"{f.metadata.get('help', '')} (built-in default: {f.default!r})"
        kind_ = type(f.default)
        if kind_ is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        else:
            group.add_argument(flag, dest=f.name, type=kind_, default=None, metavar=kind_.__name__.upper(), help=help_)


def _add_write_options(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Every WriteOptions field as a flag (but those in `skip`), with its default and bounds in --help."""
    group = parser.add_argument_group("writing options")
    for spec in SPECS:
        if spec.name in skip:
            continue
        shown = "none" if spec.default is None else spec.default
        limits = spec.bounds()
        help_ = f"{spec.help} (default: {shown}{'; ' + limits if limits else ''})"
        if spec.kind is bool:
            group.add_argument(spec.flag, dest=spec.name, action="store_true", default=spec.default, help=help_)
            continue
        if spec.kind is tuple:
            group.add_argument(spec.flag, dest=spec.name, nargs="+", default=spec.default, metavar="WORD", help=help_)
            continue
        metavar = None if spec.choices else spec.kind.__name__.upper()
        group.add_argument(
            spec.flag, dest=spec.name, type=spec.kind, default=spec.default, choices=spec.choices, metavar=metavar,
            help=help_,
        )  # fmt: skip


def write_options(args: argparse.Namespace, sampled: bool = False) -> WriteOptions:
    """The writing options of the command line, checked; `sampled`: sampling unless --beam is given (what
    `tangshi lines` writes)."""
    values = {name: getattr(args, name) for name in NAMES}
    if sampled and values["beam"] is None:
        values["beam"] = 0
    return WriteOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}).validate()


def _overrides(args: argparse.Namespace, sections: tuple[str, ...]) -> dict[str, Any]:
    names = {f.name for s in sections for f in dataclasses.fields(SECTIONS[s])}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        default="auto",
        choices=["auto", "poems-txt", "json", "plain"],
        help="input format (auto: .json is chinese-poetry, .txt with ':' is poems.txt)",
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="prepared-corpus cache (default ~/.cache/tangshi)")


def _add_panel(sub: argparse._SubParsersAction) -> None:
    from tangshi.evaluation.panel import KINDS, REFUSED, SET_BY_PANEL  # no torch

    pn = sub.add_parser("panel", help="a blind reader panel: make a sheet of human/model pairs, score the ratings")
    pn_sub = pn.add_subparsers(dest="action", required=True, metavar="ACTION")
    mk = pn_sub.add_parser("make", help="draw N poems of a split, write the model's for each: sheet, key, template")
    mk.add_argument("--data", nargs="+", required=True, help="corpus files or folders (the human poems)")
    mk.add_argument("--split", default="test", choices=["train", "val", "test"], help="split the poems come from")
    mk.add_argument("--pairs", type=int, required=True, help="items of the sheet (at least 48 a setting)")
    mk.add_argument("--seed", type=int, required=True, help="draws the poems, the A/B order and the model's seeds")
    mk.add_argument("--kind", default="title", choices=KINDS, help="what both poems of a pair share (default: title)")
    mk.add_argument("--out", type=Path, required=True, help="folder for sheet.md, key.json, ratings.template.jsonl")
    mk.add_argument("--force", action="store_true", help="write over the panel in a non-empty --out")
    mk.add_argument(
        "--exclude",
        action="extend",
        nargs="+",
        default=[],
        metavar="PANEL",
        help="leave out the poems of these panels (the flag may be given again: every panel named counts)",
    )
    mk.add_argument("--checkpoint", type=Path, help="checkpoint folder (default: the bundled model)")
    mk.add_argument("--device", default="cpu", choices=DEVICES)
    _add_write_options(mk, skip=(*SET_BY_PANEL, *REFUSED))
    sc = pn_sub.add_parser("score", help="each reader's and the pooled scores of a panel")
    sc.add_argument("panel", type=Path, help="the folder `panel make` wrote")
    sc.add_argument("ratings", type=Path, nargs="+", help="one ratings file (JSON lines) a reader")
    sc.add_argument("--json", action="store_true", help="print the scores as JSON")
    cp = pn_sub.add_parser(
        "compare", help="settings compared by the same readers: one panel a setting, every reader reading each"
    )
    cp.add_argument("panels", type=Path, nargs="+", help="the panels' folders, one a setting (the first: the baseline)")
    cp.add_argument(
        "--reader",
        dest="ratings",
        type=Path,
        nargs="+",
        action="append",
        required=True,
        metavar="FILE",
        help="one reader's ratings files, one a panel in the panels' order (the flag again for each reader)",
    )
    cp.add_argument("--json", action="store_true", help="print the comparison as JSON")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tangshi", description="Chinese classical poetry with RNN, LSTM and GRU models.")
    p.add_argument("--version", action="version", version=f"tangshi {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_panel(sub)

    data = sub.add_parser("data", help="read a corpus: counts, dropped poems, vocabulary")
    data_sub = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, help_ in (("stats", "print corpus statistics"), ("prepare", "prepare and cache the corpus")):
        a = data_sub.add_parser(action, help=help_)
        a.add_argument("paths", nargs="+", help="poems.txt, chinese-poetry JSON or plain text files/folders")
        _common(a)
        a.add_argument("--no-cache", action="store_true", help="read everything again, write no cache")
        a.add_argument("--json", action="store_true", help="print JSON")
        _add_fields(a, SECTIONS["data"], "corpus options")

    tr = sub.add_parser("train", help="train a model")
    tr.add_argument("--data", nargs="+", help="corpus files or folders")
    tr.add_argument("--preset", default="default", help=f"one of: {', '.join(preset_names())}")
    tr.add_argument("--out", type=Path, help="run folder (checkpoints, metrics, loss.png)")
    tr.add_argument("--resume", type=Path, help="continue a run folder (or one step-* checkpoint)")
    _common(tr)
    for name, title in (("data", "corpus options"), ("model", "model options"), ("train", "training options")):
        _add_fields(tr, SECTIONS[name], title)

    wr = sub.add_parser(
        "write",
        help="write poems from begin characters",
        description="Write poems. Poems are printed as they are finished. With --form and --acrostic, give one "
        "head a line of the form (fewer heads are refused); without --form, each head starts one free line.",
    )
    wr.add_argument(
        "begins", nargs="*", help=f"begin characters or phrases (at most {MAX_BEGIN} characters), one set of poems each"
    )
    wr.add_argument("--checkpoint", type=Path, help="checkpoint folder (default: the bundled model)")
    wr.add_argument("--json", action="store_true", help="one JSON object a poem (with its prosody report)")
    wr.add_argument("--explain", action="store_true", help="print each line's tones and the rhyme group")
    wr.add_argument("--device", default="cpu", choices=DEVICES)
    _add_write_options(wr)

    ch = sub.add_parser(
        "check",
        help="a person's poem read by the rules: what it breaks, in words, and characters that would keep them",
    )
    ch.add_argument("texts", nargs="+", help="poem texts ('-': one poem a line on stdin)")
    ch.add_argument("--checkpoint", type=Path, help="checkpoint folder (default: the bundled model)")
    ch.add_argument(
        "--suggest", type=int, default=5, help="characters suggested a broken place (default: %(default)s; 0: none)"
    )
    ch.add_argument(
        "--rank",
        choices=("corpus", "model"),
        default="corpus",
        help="how suggestions are ranked: corpus, by the words they make with their neighbours and the poem in the "
        "corpus (words.safetensors, no torch); model, by the whole poem's likelihood under the model (loads it, "
        "slower) (default: %(default)s)",
    )
    ch.add_argument("--json", action="store_true", help="one JSON object a poem")
    ch.add_argument("--device", default="cpu", choices=DEVICES)

    li = sub.add_parser(
        "lines",
        help="alternatives for one line of a regular poem, ranked by the whole poem's likelihood",
        description="Write --num alternatives for line --line of --poem under the same rules (form, rhyme, "
        "tones), every other character kept; ranked by the log-likelihood of the whole poem with the line in "
        "place, the prefix-only rank beside.",
    )
    li.add_argument("--poem", required=True, help=f"the poem (a {FORMS_IN_WORDS})")
    li.add_argument("--line", type=int, required=True, help="the line to rewrite, from 1")
    li.add_argument("--checkpoint", type=Path, help="checkpoint folder (default: the bundled model)")
    li.add_argument("--json", action="store_true", help="one JSON object an alternative")
    li.add_argument("--device", default="cpu", choices=DEVICES)
    _add_write_options(li)

    ev = sub.add_parser(
        "eval", help="the evaluation suite: loss on a split, and metrics of generated poems against human ones"
    )
    ev.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="[NAME=]DIR",
        help="a checkpoint to measure, repeatable (default: the bundled model)",
    )
    ev.add_argument("--data", nargs="+", required=True, help="corpus files or folders")
    ev.add_argument("--split", default="test", choices=["all", "train", "val", "test"], help="split for the loss")
    ev.add_argument("--poems", type=int, default=100, help="poems per setting (0: the loss only)")
    ev.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated, from: " + ", ".join(SETTINGS))
    ev.add_argument("--seed", type=int, default=1)
    ev.add_argument("--json", action="store_true", help="print JSON instead of Markdown tables")
    ev.add_argument("--plots", type=Path, help="write PNG plots (loss curves, compliance, diversity) here")
    ev.add_argument("--device", default="cpu", choices=DEVICES)
    ev.add_argument(
        "--readers",
        action="store_true",
        help="also how a reader would judge the poems (docs/readers.md): two-sample classifier AUC, coherence, "
        "title retrieval, poet attribution, beside human references; --poems N human poems (200+ for figures)",
    )
    ev.add_argument(
        "--samplers",
        metavar="T:D,...",
        help="with --readers: temperature:diversity pairs to compare, e.g. 0.8:0.35,1.0:0 "
        f"(default: the checkpoint's default sampler, {' and '.join(f'{t}:{d:g}' for t, d in EXTRA_SAMPLERS)})",
    )
    _common(ev)

    ix = sub.add_parser(
        "index",
        help="(re)build what a checkpoint knows of its corpus: the index of its lines (copied lines are rejected) "
        "its characters' training counts (for --diversity) and its word statistics (for --keywords, --theme)",
    )
    ix.add_argument("--checkpoint", type=Path, required=True, help="checkpoint folder")
    ix.add_argument("--data", nargs="+", required=True, help="the corpus the model was trained on")
    ix.add_argument(
        "--titles-only",
        action="store_true",
        help="rebuild only the index of titles in its word statistics (what poems under titles like a new one "
        "hold, for --title) from the training split of --data, e.g. of one genre; the rest is kept",
    )
    _common(ix)

    ca = sub.add_parser(
        "calibrate",
        help="measure which characters a checkpoint writes more or less often than human poems and save the "
        "bias that corrects it (calibration.safetensors, applied when sampling)",
    )
    ca.add_argument("--checkpoint", type=Path, required=True, help="checkpoint folder")
    ca.add_argument("--data", nargs="+", required=True, help="the corpus the model was trained on")
    ca.add_argument("--genre", default=None, help="the genre to calibrate (default: 唐诗 where the model knows genres)")
    ca.add_argument("--poems", type=int, default=1500, help="human training poems whose begins and forms are written")
    ca.add_argument("--rounds", type=int, default=2, help="measure-and-correct rounds")
    ca.add_argument("--eta", type=float, default=0.8, help="share of the measured log-ratio corrected a round")
    ca.add_argument("--seed", type=int, default=100)
    _common(ca)

    sv = sub.add_parser("serve", help="serve poems over HTTP: JSON API, OpenAPI docs at /docs, web page at /")
    sv.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="[NAME=]DIR",
        help="a checkpoint to serve, repeatable; the first is the default (none: the bundled model)",
    )
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    sv.add_argument("--port", type=int, default=8000)
    for f in dataclasses.fields(ServeConfig):
        sv.add_argument(
            "--" + f.name.replace("_", "-"), type=type(f.default), default=f.default, help=f"(default {f.default})"
        )

    au = sub.add_parser("authors", help="the poets a model writes like (--author), with their training poems")
    au.add_argument("--checkpoint", type=Path, help="checkpoint folder (default: the bundled model)")
    au.add_argument("--json", action="store_true", help="print JSON")

    cp = sub.add_parser("cipai", help="the 词牌 of the 词谱 (--cipai): list, search, or one with its formats")
    cp.add_argument("query", nargs="?", default="", help="a name or alias (or part of one), or a character count")
    cp.add_argument("--json", action="store_true", help="print JSON")

    pr = sub.add_parser("presets", help="show the named presets")
    pr.add_argument("name", nargs="?", help="show one preset in full")

    ps = sub.add_parser("prosody", help="form, rhyme and tones (平水韵) of poems")
    ps_sub = ps.add_subparsers(dest="action", required=True, metavar="ACTION")
    ck = ps_sub.add_parser("check", help="score poems: texts, '-' for stdin, or corpus files/folders")
    ck.add_argument("inputs", nargs="+", help="poem texts, '-' (one poem a line on stdin), or paths")
    ck.add_argument("--json", action="store_true", help="JSON: one report a poem (texts) or the summary (paths)")
    ck.add_argument("--format", default="auto", choices=["auto", "json", "poems-txt", "plain"])
    ck.add_argument("--cipai", help="read every poem as a 词 of this 词牌 (name or alias; else found from the text)")
    ck.add_argument("--cipai-format", dest="format_number", type=int, help="with --cipai: this format (1, 2, …)")
    ck.add_argument("--top", type=int, default=20, help="corpus files: a row for each of the N 词牌 with most 词")
    return p


# ---------------------------------------------------------------- commands


def cmd_data(args: argparse.Namespace) -> int:
    from tangshi.config import DataConfig
    from tangshi.data.corpus import load_corpus

    cfg = DataConfig()
    for k, v in _overrides(args, ("data",)).items():
        setattr(cfg, k, v)
    t0 = time.perf_counter()
    corpus = load_corpus(args.paths, cfg, fmt=args.format, cache_dir=args.cache_dir, use_cache=not args.no_cache)
    stats = {**corpus.stats(), "seconds": round(time.perf_counter() - t0, 3)}
    if args.json:
        print(json.dumps(stats, ensure_ascii=False, indent=1))
        return 0
    if args.action == "prepare":
        print(f"prepared {stats['kept']} poems, vocabulary {stats['vocabulary']} ({stats['seconds']} s)")
        return 0
    rows = [
        ("poems read", stats["read"]),
        ("malformed", stats["malformed"]),
        (f"dropped: contains one of {cfg.drop_chars}", stats["dropped_chars"]),
        (f"dropped: shorter than {cfg.min_length}", stats["dropped_short"]),
        (f"dropped: longer than {cfg.max_length}", stats["dropped_long"]),
        *([("kept once cleaned of editors' notes", stats["cleaned_notes"])] if cfg.clean_notes else []),
        ("dropped: duplicate", stats["dropped_duplicate"]),
        ("kept", stats["kept"]),
        ("characters", stats["characters"]),
        ("vocabulary (incl. 4 special tokens)", stats["vocabulary"]),
    ]
    rows += [(f"split {k}", v) for k, v in stats["splits"].items()]
    for name, value in rows:
        print(f"{name:<40}{value:>10,}")
    print("length histogram (characters incl. punctuation):")
    top = max(stats["length_histogram"].values())
    for bucket, n in stats["length_histogram"].items():
        print(f"  {bucket:>6} {n:>8,} {'#' * round(40 * n / top)}")
    for example in stats["malformed_examples"]:
        print(f"malformed: {example}")
    print(f"time: {stats['seconds']} s")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from tangshi.training import train

    if args.resume is not None:
        run_dir, step_dir, cfg, data = train.resume_plan(args.resume)
        changed = _overrides(args, ("data", "model"))
        if changed:
            raise ConfigError(
                f"--resume keeps the run's corpus and model; cannot change --{next(iter(changed)).replace('_', '-')}"
            )
        apply_overrides(cfg, _overrides(args, ("train",)))
        data = args.data or data
    else:
        if not args.data or args.out is None:
            raise ConfigError("train needs --data PATH and --out FOLDER (or --resume FOLDER)")
        cfg = apply_overrides(load_preset(args.preset), _overrides(args, ("data", "model", "train")))
        run_dir, step_dir, data = args.out, None, args.data
    trainer = train.train(cfg, data, run_dir, resume_from=step_dir, cache_dir=args.cache_dir)
    s, report = trainer.state, trainer.report()
    if trainer.world.main:
        print(
            f"stopped ({s.stopped}) at step {s.step}, epoch {s.tokens / trainer.epoch_tokens:.2f}, "
            f"{s.elapsed / 60:.1f} min; best validation loss {s.best_val:.4f} at step {s.best_step}; "
            f"checkpoints in {run_dir}\n"
            f"peak memory {report['peak_rss_mb']:,.0f} MB (this process); "
            f"step time outside the model {100 * report['outside_model_share']:.1f} %"
        )
    return 0


def _load_poet(path: Path | None, device: str):
    from tangshi.api import Poet
    from tangshi.model.device import resolve_device

    return Poet.load(path, device=str(resolve_device(device)))


def _chinese(text: str, what: str, field: str) -> None:
    """Refuse letters and digits that are not Chinese characters (`tangshi write moon`), before any loading."""
    import unicodedata

    for ch in text:
        if unicodedata.category(ch)[0] in "LN" and not unicodedata.name(ch, "").startswith(("CJK ", "IDEOGRAPHIC")):
            hint = "; --theme takes a word or sentence the poem is about" if field == "begin" else ""
            raise OptionError(f"{what} '{text}': '{ch}' is not a Chinese character (give e.g. 月){hint}", field)


def precheck(begins: list[str], opts: WriteOptions) -> None:
    """What a request can be refused for without the model, checked before it is loaded (no torch):
    begin phrases and acrostic heads in Chinese characters and not too long, the 词牌 and its format."""
    from tangshi.options import check_begin

    for b in begins:
        check_begin(b)
        _chinese(b, "begin", "begin")
    if opts.acrostic:
        check_begin(opts.acrostic, "acrostic")
        _chinese(opts.acrostic, "--acrostic", "acrostic")
    if opts.cipai:
        from tangshi.prosody import cipai

        cipai.find(opts.cipai).format(opts.format)


def cmd_write(args: argparse.Namespace) -> int:
    opts = write_options(args)
    precheck(args.begins, opts)
    poet = _load_poet(args.checkpoint, args.device)
    noted: set[str] = set()
    count = 0
    for written in poet.stream(args.begins or [""], opts):
        for note in written.notes:
            if note not in noted:
                noted.add(note)
                _note(note)
        for poem in written:
            count += 1
            if args.json:
                print(json.dumps(poem.to_dict(), ensure_ascii=False), flush=True)
            else:
                print(("\n" if count > 1 else "") + "\n".join(poem.lines), flush=True)
                if args.explain:
                    _explain(poem.text)
            if poem.failure:
                _note(f"poem {count}: a rule could not be met at {poem.failure}")
            if poem.copied:
                _note(f"poem {count}: copied from the corpus: {'，'.join(poem.copied)}")
            if not poem.ended and not opts.ignore_end:
                _note(f"poem {count} was cut at --max-length {opts.max_length} before its end")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    if args.suggest < 0:
        raise OptionError(f"--suggest must be >= 0, got {args.suggest}", "suggest")
    texts = [ln.strip() for ln in sys.stdin.read().splitlines() if ln.strip()] if args.texts == ["-"] else args.texts
    ruled = [_rules(text, args.checkpoint) for text in texts]
    poet = stats = None  # what ranks suggestions, read when a broken place wants some
    if args.suggest and any(p.place for _, problems in ruled for p in problems):
        if args.rank == "model":
            poet = _load_poet(args.checkpoint, args.device)  # torch and the model
        else:
            stats = _corpus_stats(args.checkpoint)
    for i, text in enumerate(texts):
        if poet is not None:
            checked = poet.check(text, suggest=args.suggest)
        else:  # what `Poet.check` gives, the suggestions ranked by the corpus statistics, without the model
            report, problems = ruled[i]
            checked = {"report": report.to_dict(), "problems": []}
            for p in problems:
                row = p.to_dict()
                if stats is not None and p.place:
                    from tangshi.prosody import suggest

                    row["suggestions"] = suggest.suggest(stats, report.lines, p, args.suggest)
                checked["problems"].append(row)
        if args.json:
            print(json.dumps(checked, ensure_ascii=False), flush=True)
            continue
        r = checked["report"]
        marks = r["actual"] or [""] * len(r["lines"])
        print(("\n" if i else "") + "\n".join(f"{ln}  {m}".rstrip() for ln, m in zip(r["lines"], marks, strict=True)))
        if r["form"] != "other":
            rhyme = f"rhymes in {r['rhyme_group']}" if r["rhyme"] else "does not rhyme"
            tones = f"tones relaxed {r['relaxed']:.3f}, strict {r['strict']:.3f}"
            print(f"{r['form']}; {rhyme}; {r['template_name']}; {tones}")
        for p in checked["problems"]:
            better = "、".join(s["char"] for s in p.get("suggestions", []))
            print(f"- {p['message']}" + (f" (try: {better})" if better else ""))
        if not checked["problems"]:
            print("- keeps every rule, strict tones included")
    return 0


def _rules(text: str, folder: Path | None) -> tuple[Any, list[Any]]:
    """A poem's prosody report and the rules it breaks (`Poet.check` without suggestions), read without
    torch: the text in the script of the checkpoint's config.json."""
    from importlib import resources

    from tangshi.data.text import normalise
    from tangshi.prosody import regular

    if not isinstance(text, str) or not text.strip():
        raise OptionError("--text: give a poem's text", "text")
    if len(text) > MAX_TEMPLATE:
        raise OptionError(f"--text: at most {MAX_TEMPLATE} characters, got {len(text)}", "text")
    config = (folder if folder is not None else Path(str(resources.files("tangshi") / "bundled"))) / "config.json"
    try:
        script = json.loads(config.read_text("utf-8"))["data"]["script"]
    except (OSError, ValueError, KeyError, TypeError):
        script = "simplified"  # the checkpoint's own load names what is wrong with it, if it is needed
    report = regular.check(normalise(text, script))
    return report, regular.explain(report)


def _corpus_stats(folder: Path | None) -> Any:
    """The checkpoint's word statistics for ranking suggestions without torch (`prosody.suggest`)."""
    from importlib import resources

    from tangshi.prosody import suggest

    folder = folder if folder is not None else Path(str(resources.files("tangshi") / "bundled"))
    if not (folder / "config.json").is_file():
        run = (
            f"; a run folder: give --checkpoint {folder / 'best'}"
            if (folder / "best" / "config.json").is_file()
            else ""
        )
        raise OptionError(f"--checkpoint {folder}: no config.json, not a checkpoint folder{run}", "checkpoint")
    try:
        return suggest.CorpusStats.load(folder)
    except suggest.StatsError as e:
        raise OptionError(f"--checkpoint {e}", "checkpoint") from None


def cmd_lines(args: argparse.Namespace) -> int:
    opts = write_options(args, sampled=True)
    poet = _load_poet(args.checkpoint, args.device)
    for k, alt in enumerate(poet.lines(args.poem, args.line, opts)):
        if args.json:
            print(json.dumps(alt, ensure_ascii=False), flush=True)
        else:
            print(
                f"{k + 1}. {alt['line']}  whole poem {alt['log_likelihood']:.2f}, prefix only "
                f"{alt['prefix_log_likelihood']:.2f} (rank {alt['prefix_rank']})"
            )
    return 0


def _note(text: str) -> None:
    print(f"tangshi: note: {text}", file=sys.stderr, flush=True)


def _explain(text: str) -> None:
    from tangshi.prosody.regular import check

    r = check(text)
    print("  --")
    marks, needs = r.actual or [""] * len(r.lines), r.patterns or [""] * len(r.lines)
    for line, mark, need in zip(r.lines, marks, needs, strict=True):
        print(f"  {line}  {mark}" + (f"  (template {need})" if need else ""))
    if r.form == "other":
        print("  form: other")
        return
    rhyme = f"rhyme {r.rhyme_group}" if r.rhyme else "no rhyme"
    tones = f"tones relaxed {r.relaxed:.2f}, strict {r.strict:.2f} (* = either tone)"
    print(f"  {r.form}, {rhyme}, {r.template_name}; {tones}")


def _named_checkpoints(specs: list[str]) -> dict[str, Path | None]:
    """[NAME=]DIR options -> {name: folder}; none given: the bundled model."""
    from tangshi.model.checkpoint import CheckpointError

    out: dict[str, Path | None] = {}
    for spec in specs:
        name, _, path = spec.rpartition("=")
        folder = Path(path)
        if not name:  # runs/tang/best -> tang
            run = folder.name == "best" or folder.name.startswith("step-")
            name = folder.resolve().parent.name if run else folder.name
        if name in out:
            raise ConfigError(f"--checkpoint {spec}: the name '{name}' is given twice")
        if not folder.is_dir():
            raise CheckpointError(f"--checkpoint {spec}: {folder} is not a checkpoint folder")
        out[name] = folder
    return out or {"bundled": None}


def cmd_eval(args: argparse.Namespace) -> int:
    from tangshi.evaluation.suite import markdown, parse_samplers, plots, run_suite

    settings = [x.strip() for x in args.settings.split(",") if x.strip()]
    for x in settings:
        if x not in SETTINGS:
            raise ConfigError(f"--settings: unknown setting '{x}'; choose from {', '.join(SETTINGS)}")
    if args.poems < 0:
        raise ConfigError(f"--poems must be >= 0, got {args.poems}")
    if args.readers and args.poems < 10:
        raise ConfigError(f"--readers needs --poems >= 10 (200+ for figures), got {args.poems}")
    if args.samplers is not None and not args.readers:
        raise ConfigError("--samplers is for --readers")
    try:
        samplers = parse_samplers(args.samplers) if args.samplers is not None else None
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if samplers == []:
        raise ConfigError("--samplers: give at least one temperature:diversity pair")
    checkpoints = _named_checkpoints(args.checkpoint)
    result = run_suite(
        {name: _load_poet(path, args.device) for name, path in checkpoints.items()}, args.data, args.split,
        args.poems, settings, args.seed, fmt=args.format, cache_dir=args.cache_dir, readers=args.readers,
        samplers=samplers,
    )  # fmt: skip
    if args.plots is not None:
        runs = {n: p.resolve().parent for n, p in checkpoints.items() if p is not None}
        result["plots"] = [str(p) for p in plots(result, args.plots, runs)]
    print(json.dumps(result, ensure_ascii=False, indent=1) if args.json else markdown(result))
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from tangshi.data.corpus import load_corpus
    from tangshi.data.lineindex import FILE, LineIndex
    from tangshi.model import checkpoint

    ckpt = checkpoint.load(args.checkpoint)
    corpus = load_corpus(args.data, ckpt.config.data, fmt=args.format, cache_dir=args.cache_dir)
    if args.titles_only:
        return _index_titles(args.checkpoint, corpus, args.data)
    index = LineIndex.of_texts(corpus.texts)
    index.save(args.checkpoint)
    print(f"{len(index):,} distinct lines of {len(corpus.texts):,} poems -> {args.checkpoint / FILE}")
    from tangshi.data.words import FILE as WORDS
    from tangshi.training.train import word_stats

    words = word_stats(corpus, ckpt.vocab)
    words.save(args.checkpoint)
    print(f"{len(words):,} words and their associations for plans -> {args.checkpoint / WORDS}")
    counted = ckpt.vocab.with_counts(corpus.texts_of("train"))
    counted.save(args.checkpoint / "vocab.json")
    print(f"training counts of {len(counted) - 4:,} characters -> {args.checkpoint / 'vocab.json'}")
    return 0


def _index_titles(folder: Path, corpus, data: list[str]) -> int:
    from tangshi.data.words import FILE, Kin, WordStats

    words = WordStats.load(folder)
    if words is None:
        raise ConfigError(f"--titles-only: {folder} has no {FILE} to add titles to; run tangshi index without it")
    if not any(corpus.titles_of("train")):
        raise ConfigError(f"--titles-only: the training poems of --data {' '.join(data)} have no titles")
    genres = corpus.genres_of("train") if corpus.genres else None
    words.kin = Kin.of(words, corpus.texts_of("train"), corpus.titles_of("train"), genres)
    words.save(folder)
    kinds = f" ({', '.join(words.kin.genre_names)})" if genres is not None else ""
    print(f"{len(words.kin):,} titles of training poems{kinds} and their words -> {folder / FILE}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from tangshi.serve import run

    checkpoints = _named_checkpoints(args.checkpoint)
    settings = ServeConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig)})
    for f in dataclasses.fields(ServeConfig):
        value = getattr(settings, f.name)
        if not math.isfinite(value) or value < (0 if f.name == "threads" else 1):
            raise ConfigError(f"--{f.name.replace('_', '-')} must be >= 1, got {getattr(settings, f.name)}")
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be 1-65535, got {args.port}")
    run(checkpoints, args.host, args.port, settings)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from tangshi import api
    from tangshi.data.corpus import load_corpus
    from tangshi.evaluation.calibration import Calibration, calibrate
    from tangshi.generation.request import resolve_genre

    if args.poems < 1 or args.rounds < 1 or not 0 < args.eta <= 2:
        raise OptionError("--poems and --rounds must be >= 1 and --eta in (0, 2]", "poems")
    poet = api.Poet.load(args.checkpoint)
    genre = resolve_genre(poet.vocab, args.genre, poet.ckpt.config.data.script)
    corpus = load_corpus(args.data, poet.ckpt.config.data, fmt=args.format, cache_dir=args.cache_dir)
    texts = corpus.texts_of("train")
    if genre:
        texts = [t for t, g in zip(texts, corpus.genres_of("train"), strict=True) if g == genre]
    try:
        bias, log = calibrate(
            poet, texts, genre, poems=args.poems, rounds=args.rounds, eta=args.eta, seed=args.seed, progress=print
        )
    except ValueError as e:  # no regular poems of the genre to write from
        raise OptionError(f"--data: {e} in the training split{f' of {genre}' if genre else ''}", "data") from None
    old = poet.calibration
    biases = {**(old.biases if old else {}), genre: bias}
    made = {"poems": args.poems, "rounds": log, "eta": args.eta, "seed": args.seed, "data": [str(d) for d in args.data]}
    settings = {**(old.settings if old else {}), genre or "model": made}
    path = Calibration(biases, settings).save(args.checkpoint)
    print(f"the bias of {genre or 'the model'} -> {path}")
    return 0


# names in the author field that are no poet: the 乐府 sections that collections file their anonymous
# songs under (郊庙朝会歌辞, 相和歌辞, 近代曲辞…: every one ends in 辞) and the marks of an unknown author
_ANONYMOUS = frozenset({"无名氏", "無名氏", "佚名", "不详", "不詳"})


def is_poet(name: str) -> bool:
    """Whether an author name is a poet's, not a section heading (…辞) or an unknown author (无名氏)."""
    return bool(name) and not name.endswith(("辞", "辭")) and name not in _ANONYMOUS


def cmd_authors(args: argparse.Namespace) -> int:
    from tangshi.api import checkpoint_folder
    from tangshi.data.vocab import Vocab

    folder = checkpoint_folder(args.checkpoint)
    every = Vocab.load(folder / "vocab.json").authors()
    authors = {name: n for name, n in every.items() if is_poet(name)}
    others = [name for name in every if name not in authors]
    if args.json:
        print(json.dumps(authors, ensure_ascii=False))
        return 0
    if not authors:
        print("this model knows no poets (train one with --authors N)")
    else:
        print("poet\ttraining poems")
    for name, poems in authors.items():
        print(f"{name}\t{poems}")
    if others:
        _note(f"left out, not poets (section headings, unknown authors): {'、'.join(others)}")
    return 0


def cmd_cipai(args: argparse.Namespace) -> int:
    """Every 词牌 (or those matching the query) a line; one exact name shows its formats' patterns."""
    from tangshi.prosody import cipai

    exact = None
    if args.query and not args.query.isdigit():
        try:
            exact = cipai.find(args.query)
        except cipai.CiError:
            pass
    found = [exact] if exact is not None else cipai.search(args.query)
    if not found and args.query.isdigit():
        raise cipai.CiError(f"no 词牌 of {args.query} characters in the 词谱", "cipai")
    if not found:
        cipai.find(args.query)  # names the nearest ones
    if args.json:
        print(json.dumps(cipai.to_dicts(found, patterns=True), ensure_ascii=False))
        return 0
    for c in found:
        counts = "/".join(dict.fromkeys(str(f.chars) for f in c.formats))
        aliases = f" ({'、'.join(c.aliases)})" if c.aliases else ""
        plural = "s" if len(c.formats) > 1 else ""
        print(f"{c.name}{aliases}\t{c.kind}\t{counts} characters\t{len(c.formats)} format{plural}")
    if exact is not None:
        for f in exact.formats:
            print(f"\nformat {f.number} ({f.source}), {f.chars} characters, {len(f.rhyme_at)} rhymes (◎; 叶 ◇):")
            print(f.describe())
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    names = [args.name] if args.name else preset_names()
    for name in names:
        cfg = load_preset(name)
        if args.name:
            print(json.dumps(cfg.to_dict(), ensure_ascii=False, indent=1))
        else:
            m, t = cfg.model, cfg.train
            print(
                f"{name:<14}{m.cell} {m.num_layers}x{m.hidden_size} emb {m.embedding_size}"
                f"{' tied' if m.tie_weights else ''}; {t.optimizer} {t.lr:g} {t.schedule}, batch {t.batch_size}"
            )
    return 0


def _exists(s: str) -> bool:
    """Whether a command-line word names a file or folder (a long poem text is no path)."""
    try:
        return Path(s).exists()
    except OSError:
        return False


def _poem_texts(inputs: list[str], fmt: str) -> tuple[list[tuple[str, str]], bool]:
    """((text, 词牌 or "") of each poem, whether they came from corpus paths) for `prosody check`."""
    from tangshi.data.corpus import CorpusError, find_files, read_file
    from tangshi.data.text import normalise

    if inputs == ["-"]:
        return [(ln.strip(), "") for ln in sys.stdin.read().splitlines() if ln.strip()], False
    paths = [s for s in inputs if _exists(s)]
    for s in inputs:
        if s not in paths and ("/" in s or s.endswith((".json", ".txt"))):
            raise CorpusError(f"{s}: no such file or folder")
    if not paths:
        return [(normalise(s), "") for s in inputs], False
    if len(paths) != len(inputs):
        missing = next(s for s in inputs if s not in paths)
        raise CorpusError(f"{missing}: no such file or folder (give either poem texts or paths, not both)")
    bad: list = []
    raw = [p for f in find_files(paths) for p in read_file(f, fmt, bad)]
    return [(normalise(p.content), normalise(p.cipai)) for p in raw], True


def cmd_prosody(args: argparse.Namespace) -> int:
    from tangshi.prosody import cipai
    from tangshi.prosody.regular import Summary, check

    poems, from_paths = _poem_texts(args.inputs, args.format)
    if args.cipai:
        cipai.find(args.cipai)  # an unknown 词牌 is named before anything is read
        poems = [(t, args.cipai) for t, _ in poems]
    shi = [t for t, c in poems if not c]
    cis = [(t, c) for t, c in poems if c]
    if from_paths or len(poems) > 20:
        out: dict = {}
        if shi:
            summary = Summary.of([check(t) for t in shi])
            out["shi"] = {"poems": summary.poems, "other": summary.other, "rows": summary.rows}
            if not args.json:
                print(summary.table())
        if cis:
            cs = cipai.CiSummary.of(cis, top=args.top)
            out["ci"] = {"ci": cs.ci, "unknown_cipai": cs.unknown_cipai, "rows": cs.rows}
            if not args.json:
                print(("\n" if shi else "") + cs.table())
        if args.json:
            print(json.dumps(out.get("shi", out) if not cis else out, ensure_ascii=False))
        return 0
    for i, (text, name) in enumerate(poems):
        report = check(text)
        found = cipai.check(text, name, args.format_number) if name else None
        if found is None and report.form == "other":
            found = cipai.identify(text)
        if found is not None:
            _print_ci(found, args.json, i)
        else:
            _print_shi(report, args.json, i)
    return 0


def _print_shi(r, as_json: bool, i: int) -> None:
    if as_json:
        print(json.dumps(r.to_dict(), ensure_ascii=False))
        return
    marks = r.actual or [""] * len(r.lines)
    print(("\n" if i else "") + "\n".join(f"{ln}  {m}".rstrip() for ln, m in zip(r.lines, marks, strict=True)))
    if r.form == "other":
        print(f"form: other ({len(r.lines)} lines of {', '.join(str(len(ln)) for ln in r.lines)} characters)")
        return
    rhyme = f"rhymes in {r.rhyme_group}" if r.rhyme else "does not rhyme"
    print(
        f"{r.form}; {rhyme}; {r.template_name}; tones relaxed {r.relaxed:.3f}, strict {r.strict:.3f}, "
        f"wildcards {100 * r.wildcard:.0f} %" + (f"; unknown: {''.join(r.unknown)}" if r.unknown else "")
    )


def _print_ci(r, as_json: bool, i: int) -> None:
    """A 词 against its pattern: each 阕 beside the format's tones, the 韵位 and their 部."""
    if as_json:
        print(json.dumps(r.to_dict(), ensure_ascii=False))
        return
    lead = "\n" if i else ""
    if not r.format:
        lengths = " + ".join(str(len(c)) for c in r.text_clauses)
        print(f"{lead}{r.cipai}: no format of it has {sum(map(len, r.text_clauses))} characters ({lengths})")
        return
    print(f"{lead}{r.cipai}, format {r.format} ({r.source}){'' if r.in_pattern else ', clauses off the pattern'}")
    for part, pattern in zip(r.parts, r.pattern.splitlines(), strict=False):
        print(f"  {part}\n  {pattern}")
    bad = [f"{x.char} (position {x.position + 1})" for x in r.rhymes if not x.ok]
    groups = list(dict.fromkeys(g for g in r.groups if g))
    rhyme = ("换韵: " if len(groups) > 1 else "rhymes in ") + " → ".join(groups) if groups else "no rhyme group"
    print(
        f"{rhyme}; 韵位 kept {sum(x.ok for x in r.rhymes)}/{len(r.rhymes)}"
        + (f" (off: {', '.join(bad)})" if bad else "")
        + f"; 平/仄 positions kept {r.tones_matched}/{r.tones_checked}"
        + (f"; unknown: {''.join(r.unknown)}" if r.unknown else "")
    )


def cmd_panel(args: argparse.Namespace) -> int:
    from tangshi.evaluation import panel

    if args.action == "compare":
        report = panel.compare_panels(args.panels, args.ratings)
        print(json.dumps(report, ensure_ascii=False, indent=1) if args.json else panel.format_comparison(report))
        return 0
    if args.action == "score":
        report = panel.score_panel(args.panel, args.ratings)
        print(json.dumps(report, ensure_ascii=False, indent=1) if args.json else panel.format_report(report))
        return 0
    from tangshi.model.device import resolve_device

    made = panel.make_panel(
        args.data, args.out, pairs=args.pairs, seed=args.seed, kind=args.kind, split=args.split,
        options=panel.panel_options(vars(args)), checkpoint=args.checkpoint, device=str(resolve_device(args.device)),
        exclude=args.exclude, force=args.force,
    )  # fmt: skip
    failed = sum(item.failure is not None for item in made.items)
    redrawn = sum(len(item.redrawn) for item in made.items)
    _note(f"{len(made.items)} pairs in {args.out}: give readers {panel.SHEET} and {panel.TEMPLATE} only")
    if redrawn:
        _note(f"{redrawn} of the model's poems had characters outside GB 2312 and were written again (key.json)")
    if made.skipped:
        _note(f"{len(made.skipped)} poems drawn were skipped (key.json says why)")
    if failed:
        _note(f"{failed} of the model's poems broke a rule of the form (shown as written; key.json names them)")
    return 0


COMMANDS = {
    "data": cmd_data,
    "train": cmd_train,
    "write": cmd_write,
    "eval": cmd_eval,
    "index": cmd_index,
    "calibrate": cmd_calibrate,
    "serve": cmd_serve,
    "presets": cmd_presets,
    "panel": cmd_panel,
    "authors": cmd_authors,
    "cipai": cmd_cipai,
    "prosody": cmd_prosody,
    "check": cmd_check,
    "lines": cmd_lines,
}


# the errors a user's input or files can raise, by module: a module not imported yet raised none of them,
# so a usage error is reported without importing torch (`tangshi write 月 --temperature 0` stays fast)
_USER_ERRORS = (
    ("tangshi.data.corpus", "CorpusError"),
    ("tangshi.data.vocab", "VocabError"),
    ("tangshi.generation.sampling", "SamplingError"),
    ("tangshi.generation.search", "UnknownCharacterError"),
    ("tangshi.generation.tables", "FormError"),
    ("tangshi.model.checkpoint", "CheckpointError"),
    ("tangshi.training.train", "TrainError"),
)


def _user_errors() -> tuple[type[BaseException], ...]:
    loaded = [getattr(sys.modules[m], name) for m, name in _USER_ERRORS if m in sys.modules]
    return (OptionError, ConfigError, OSError, *loaded)


# positional arguments by how an error names them
_POSITIONALS = {
    "begins": "begin characters",
    "texts": "poem text",
    "query": "the 词牌 query",
    "inputs": "input",
    "paths": "path",
    "name": "preset name",
    "panel": "panel",
    "ratings": "ratings",
}


_PATHS = frozenset({"data", "paths", "checkpoint", "ratings", "panel", "exclude", "out", "resume", "plots"})


def _not_utf8(args: argparse.Namespace) -> str | None:
    """A message naming the first argument that was not valid UTF-8 (Python hands such bytes over
    as lone surrogates, which OpenCC and every writer of text refuse), or None."""
    for dest, value in vars(args).items():
        if dest in _PATHS:
            continue
        for v in value if isinstance(value, list | tuple) else [value]:
            s = v if isinstance(v, str) else None  # a Path may be any bytes (Linux file names need not be UTF-8)
            if s is None or (dest == "inputs" and _exists(s)):
                continue
            try:
                s.encode("utf-8")
            except UnicodeEncodeError:
                raw = s.encode("utf-8", "surrogateescape")
                shown = raw[:24].decode("ascii", "backslashreplace") + ("…" if len(raw) > 24 else "")
                name = _POSITIONALS.get(dest, "--" + dest.replace("_", "-"))
                return f"{name}: not UTF-8 text (b'{shown}'); give it in UTF-8 (e.g. set a UTF-8 locale)"
    return None


def main(argv: list[str] | None = None) -> int:
    as_program = argv is None  # re-executing is only for a real process, never inside a caller
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    bad = _not_utf8(args)
    if bad is not None:
        print(f"tangshi: error: {bad}", file=sys.stderr)
        return 2
    if as_program and args.command in ("train", "eval"):
        tune_process(["-m", "tangshi", *argv])
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", _ONEDNN_CACHE)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("tangshi: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`tangshi write ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        if isinstance(e, _user_errors()):
            # a file name's stray bytes (not UTF-8) as \xNN
            shown = str(e).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            print(f"tangshi: error: {shown}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
