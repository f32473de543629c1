"""The Python API: load a checkpoint (or the bundled model), write poems, score texts.

    from tangshi import Poet
    poet = Poet.load()                      # the bundled model
    written = poet.write("月", num=2, seed=1, form="七绝")
    for poem in written:                    # written.notes: what was changed in the request
        print(poem.text)
    poet.loss(["床前明月光，疑是地上霜。举头望明月，低头思故乡。"])

Writing is two steps, each a function that can be read alone:
`generation.request.resolve` (the request -> a `Request`: begin phrases in the model's characters, heads,
form, plan, seeds) and `generation.decode.decode` (the processors and the constraint of each batch,
sampling and reranking or beam search, writing again what `judge` rejects; docs/writing-pipeline.md).
`Poet.write` chains them over a `Bundle` (the checkpoint and its side files); the options are
`tangshi.options.WriteOptions`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from tangshi.data.text import normalise, to_script
from tangshi.data.vocab import BOS, EOS, Vocab
from tangshi.data.words import WordStats
from tangshi.evaluation import losses
from tangshi.evaluation.calibration import Calibration
from tangshi.generation import search, tables
from tangshi.generation.bundle import Bundle
from tangshi.generation.decode import copy_index, decode, finish, line_candidates
from tangshi.generation.processors import Rows
from tangshi.generation.request import resolve, templated
from tangshi.generation.search import Poem
from tangshi.model import checkpoint
from tangshi.model.charrnn import CharRNN
from tangshi.model.checkpoint import Checkpoint, CheckpointError
from tangshi.options import MAX_TEMPLATE, OptionError, WriteOptions
from tangshi.prosody import regular

CHUNK = 32  # poems a batch when `Poet.stream` writes many
SCORE_CHUNK = 256  # poems scored a batch by `Poet.lines` (a bound on memory; the usual num is one batch)


def bundled_path() -> Path:
    """The folder of the pretrained model shipped inside the package."""
    return Path(str(resources.files("tangshi") / "bundled"))


def checkpoint_folder(path: str | Path | None) -> Path:
    """The checkpoint folder to load: `path`, or the bundled model's when None. A run folder (the
    `--out` of `tangshi train`, no config.json of its own) is refused naming its best checkpoint."""
    folder = Path(path) if path is not None else bundled_path()
    if path is None and not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"the bundled model is missing from {folder}; reinstall tangshi")
    if folder.is_dir() and not (folder / "config.json").is_file():
        inside = [folder / "best"] + sorted(folder.glob("step-*"), key=lambda p: p.stat().st_mtime, reverse=True)
        inside = [p for p in inside if (p / "config.json").is_file()]
        if inside:
            which = "its best checkpoint" if inside[0].name == "best" else "its latest step"
            raise CheckpointError(
                f"{folder}: missing config.json; a run folder: give --checkpoint {inside[0]} ({which})"
            )
    return folder


@dataclass
class Written:
    """The poems of one call, and the notes on what was changed in the request (variants used)."""

    poems: list[Poem]
    group_notes: list[list[str]] = field(default_factory=list)  # the notes of each begin (its heads' too)

    @property
    def notes(self) -> list[str]:
        """Every note of the call, once."""
        return list(dict.fromkeys(n for notes in self.group_notes for n in notes))

    def __iter__(self) -> Iterator[Poem]:
        return iter(self.poems)

    def __len__(self) -> int:
        return len(self.poems)

    def __getitem__(self, i: int) -> Poem:
        return self.poems[i]


class Poet:
    """Writes, checks and scores poems with one checkpoint: a thin front over its `Bundle`."""

    def __init__(self, bundle: Bundle):
        self.bundle = bundle

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "cpu") -> Poet:
        """A checkpoint folder, or the bundled model when `path` is None."""
        return cls(Bundle(checkpoint.load(checkpoint_folder(path), device=device)))

    # the bundle's parts, by the names the writing reads them

    @property
    def ckpt(self) -> Checkpoint:
        return self.bundle.ckpt

    @property
    def model(self) -> CharRNN:
        return self.bundle.model

    @property
    def vocab(self) -> Vocab:
        return self.bundle.vocab

    @property
    def words(self) -> WordStats | None:
        return self.bundle.words

    @property
    def calibration(self) -> Calibration | None:
        return self.bundle.calibration

    @property
    def vocab_prosody(self) -> tables.VocabProsody:
        return self.bundle.vocab_prosody

    def following(self) -> tuple[Rows, torch.Tensor]:
        return self.bundle.following()

    @property
    def default_diversity(self) -> float:
        return self.bundle.default_diversity

    def write(
        self,
        begins: str | Sequence[str],
        options: WriteOptions | None = None,
        *,
        nums: Sequence[int] | None = None,
        seeds: Sequence[int] | None = None,
        stop: Callable[[], bool] | None = None,
        calibration_bias: torch.Tensor | None = None,
        **changes: Any,
    ) -> Written:
        """`num` poems for each begin character or phrase ("" = the model's choice).

        `options` and keyword `changes` are `WriteOptions` fields (form, acrostic, rhyme, tones, seed,
        temperature, beam, rerank...). `nums` and `seeds` give one count and one seed a begin: the i-th
        poem of a begin with seed s is the poem `write(begin, seed=s)` writes i-th, whatever else is
        in the call. Bad requests raise OptionError (or a subclass) whose `field` names the option.
        `stop`, called every few steps, ends the writing early with `search.Stopped` when it returns True.
        `calibration_bias` (V,) is the genre's frequency calibration to write with instead of the
        checkpoint's (what `evaluation.calibration.calibrate` fits; its weight is the `calibration` option).
        """
        opts = (options or WriteOptions()).replace(**changes)
        if nums is not None:  # a beam as wide as the most poems asked of a begin
            opts = opts.decided(most=max(nums, default=1))
        opts = templated(opts.validate())
        request = resolve(self.bundle, begins, opts, nums, seeds, calibration_bias)
        poems = decode(self.bundle, request, opts, stop, states=self.bundle.states)
        begins = [request.begins[g] for g, _ in request.rows()]
        finished = [finish(p, b, opts) for p, b in zip(poems, begins, strict=True)]
        return Written(finished, request.group_notes)

    def stream(
        self, begins: str | Sequence[str], options: WriteOptions | None = None, **changes: Any
    ) -> Iterator[Written]:
        """The poems of `write(begins, options)` a few at a time, as they are finished (the same poems)."""
        opts = (options or WriteOptions()).replace(**changes).validate()
        begins = [begins] if isinstance(begins, str) else list(begins)
        seed = opts.seed if opts.seed is not None else secrets.randbits(31)
        per = opts.num if opts.beam else CHUNK  # a beam's poems come from one search
        for b, begin in enumerate(begins):
            for start in range(0, opts.num, per):
                n = min(per, opts.num - start)
                first = seed + (b * opts.num + start) * opts.rerank
                yield self.write([begin], opts.replace(num=n, seed=None), seeds=[first])

    def check(self, text: str, suggest: int = 5) -> dict[str, Any]:
        """A person's poem read by the rules: the prosody report, each broken rule in words
        (`regular.explain`), and for each broken place up to `suggest` characters that keep the rule,
        the ones that make the whole poem likeliest under the model first."""
        check_text(text, "text")
        text = normalise(text, self.ckpt.config.data.script)
        report = regular.check(text)
        problems = regular.explain(report)
        out = []
        for p in problems:
            row: dict[str, Any] = p.to_dict()
            if suggest and p.place:
                row["suggestions"] = _suggest(self, report.lines, p, suggest)
            out.append(row)
        return {"report": report.to_dict(), "problems": out}

    def lines(self, poem: str, line: int, options: WriteOptions | None = None, **changes: Any) -> list[dict[str, Any]]:
        """Alternatives for one line of a regular poem (1-based `line`), written under the same rules
        with every other character kept: `num` distinct lines, ranked by the log-likelihood of the
        whole poem with the line in place; each with its prefix-only log-likelihood (the poem up to
        and including the line) and the rank that gives. Options as `write` (seed, temperature...)."""
        check_text(poem, "poem")
        opts = (options or WriteOptions()).replace(**changes)
        if opts.beam:
            raise OptionError("--beam: other lines are sampled (give --num and --seed)", "beam")
        text = normalise(poem, self.ckpt.config.data.script)
        report = regular.check(text)
        if report.form == "other":
            shape = regular.shape(report.lines)
            got = f"has lines of {shape} characters" if shape else "has no line"
            raise OptionError(f"--poem {got}: not a {regular.FORMS_IN_WORDS}", "poem")
        if not 1 <= line <= len(report.lines):
            raise OptionError(f"--line {line}: the poem has lines 1 to {len(report.lines)}", "line")
        opts = opts.replace(template=_open_line(report.lines, line), form=report.form, beam=0).validate()
        request = resolve(self.bundle, "", opts)
        index, want = copy_index(self.bundle, opts), opts.num
        original = report.lines[line - 1]
        found: dict[str, str] = {}  # new line -> the poem with it
        for attempt in range(opts.budget):
            for poem in line_candidates(self.bundle, request, opts, report.lines, line, want + 4, attempt):
                cand = regular.split_lines(poem)[line - 1]
                if cand != original and cand not in found and not (index is not None and cand in index):
                    found[cand] = poem
            if len(found) >= want:
                break
        news, poems = list(found), list(found.values())
        if not poems:
            return []
        ids = [[*self.vocab.encode(t), EOS] for t in poems]
        chunks = [ids[k : k + SCORE_CHUNK] for k in range(0, len(ids), SCORE_CHUNK)]  # 1,000 at once took gigabytes
        scores = [s for c in chunks for s in losses.token_logprobs(self.model, c, [[BOS]] * len(c))]
        upto = len(regular.join_lines(report.lines[:line]))  # the tokens of the poem up to the line's punctuation
        whole = [float(s.sum()) for s in scores]
        prefix = [float(s[:upto].sum()) for s in scores]
        best = sorted(range(len(poems)), key=lambda k: -whole[k])[:want]
        by_prefix = sorted(best, key=lambda k: -prefix[k])
        return [
            {
                "line": news[k],
                "poem": to_script(poems[k], opts.script),
                "log_likelihood": round(whole[k], 4),
                "prefix_log_likelihood": round(prefix[k], 4),
                "prefix_rank": by_prefix.index(k) + 1,
            }
            for k in best
        ]

    def loss(self, texts: str | list[str]) -> dict[str, float | int]:
        """Per-character loss and perplexity of the given poem texts."""
        return losses.text_loss(self.ckpt, [texts] if isinstance(texts, str) else list(texts))

    def corpus_loss(self, paths: list[str | Path], split: str = "all") -> dict[str, float | int]:
        return losses.corpus_loss(self.ckpt, paths, split=split)


# ---------------------------------------------------------------- lines and suggestions


def check_text(text: str, field: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise OptionError(f"--{field}: give a poem's text", field)
    if len(text) > MAX_TEMPLATE:
        raise OptionError(f"--{field}: at most {MAX_TEMPLATE} characters, got {len(text)}", field)


def _open_line(lines: list[str], line: int) -> str:
    """The template of a poem with one line (1-based) open."""
    return regular.join_lines([tables.OPEN[0] * len(ln) if i == line - 1 else ln for i, ln in enumerate(lines)])


def _suggest(poet: Poet, lines: list[str], problem: regular.Problem, k: int) -> list[dict[str, Any]]:
    """Up to k characters for a broken place that keep its rule and are not elsewhere in the poem: the
    64 the model finds likeliest after the poem's text before the place, ranked by the log-likelihood
    of the whole poem with each in place."""
    vp, vocab, model = poet.vocab_prosody, poet.vocab, poet.model
    if problem.rule == "rhyme":
        if problem.need not in vp.groups:
            return []
        allowed = vp.in_group[vp.groups.index(problem.need)].clone()
    else:
        allowed = (vp.ping if problem.need == regular.PING else vp.ze) & vp.char
    used = [vocab.id(ch) for ln in lines for ch in ln]
    allowed[used] = False
    if not bool(allowed.any()):
        return []
    text = regular.join_lines(lines)
    at = sum(len(ln) + 1 for ln in lines[: problem.line - 1]) + problem.place - 1
    ids = [BOS, *vocab.encode(text[:at])]
    with torch.inference_mode():
        x, state = search.prime(model, [ids], next(model.parameters()).device)
        logits, _ = model.step(x, state)
    logits = logits.float()[0].cpu().masked_fill(~allowed, float("-inf"))
    top = [int(i) for i in logits.topk(min(64, int(allowed.sum()))).indices]
    texts = [text[:at] + vocab.tokens[i] + text[at + 1 :] for i in top]
    scores = losses.token_logprobs(model, [[*vocab.encode(t), EOS] for t in texts], [[BOS]] * len(texts))
    best = sorted(zip(top, (float(s.sum()) for s in scores), strict=True), key=lambda p: -p[1])[:k]
    return [{"char": vocab.tokens[i], "log_likelihood": round(v, 4)} for i, v in best]
