"""Every option of writing, defined once: name, type, default, bounds, help.

`tangshi write`'s flags, `Poet.write`'s keyword arguments, the HTTP request schema of
`POST /v1/poems` (the server's limits applied on top) and the page's defaults are all made from
`WriteOptions` below; `tests/test_options.py` checks that they agree. Nothing here imports torch.

    opts = WriteOptions(form="七绝", seed=1)     # bad values raise OptionError naming the field
    opts.validate()
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from tangshi.data.text import SCRIPTS, in_words
from tangshi.prosody import regular

TONES = ("relaxed", "strict", "off")
MAX_BEGIN = 16  # characters of a begin phrase or of the acrostic heads
MAX_SEED = 2**31 - 1
MAX_TITLE = 256  # characters of a title: every Tang title fits (the longest has 250); a model reads its max_title
MAX_THEME = 32  # characters of a theme
MAX_PREFIX = 80  # characters of a mood-setting prefix
MAX_TEMPLATE = 128  # characters of a template, punctuation included
# the defaults of the options whose default depends on the checkpoint (their field says when each applies)
DEFAULT_DIVERSITY = 0.1  # --diversity, with the checkpoint's character counts (docs/readers.md)
DEFAULT_COHESION = 0.5  # --cohesion, with its word statistics (docs/about-something.md)
CALIBRATED_COHESION = 0.8  # --cohesion where its frequency calibration applies too (docs/about-something.md)
GUIDANCE = 2.0  # --guidance with a title, for a poem without a plan (docs/about-something.md)
PLANNED_GUIDANCE = 4.0  # --guidance for a poem with a plan (from its title, keywords or theme)
STOCK_WORDS = 200  # --stock: the commonest 2-character words of the corpus, its stock phrases
DEFAULT_BEAM = 8  # --beam unless a sampling option is given (docs/reader-panel.md: what readers followed best)
DEFAULT_BEAM_TEMPERATURE = 0.5  # --beam-temperature: the stochastic beam's (docs/reader-panel.md)
DEFAULT_LOOKAHEAD = 0  # --lookahead: off by default (readers found no difference: docs/reader-panel.md)
# options of sampling: given any of them (and no --beam), the poems are sampled
SAMPLING = ("temperature", "top_k", "top_p", "greedy", "rerank", "random_state", "ignore_end")


class OptionError(ValueError):
    """A writing request that cannot be met; `field` names the option (or `begin`) at fault."""

    def __init__(self, message: str, field: str = "form"):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Spec:
    """What one option accepts; read from the field's metadata."""

    name: str
    kind: type  # bool, int, float, str, or tuple (of strings)
    default: Any
    help: str
    nullable: bool = False  # None is allowed (and means: the model's or a random choice)
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | None = None
    max_length: int | None = None  # characters of a string (of each string of a tuple)
    items: int | None = None  # strings of a tuple at most

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def bounds(self) -> str:
        """The accepted range in words, e.g. '> 0 and <= 10'."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        parts = [f"{op} {_number(v)}" for op, v in ((">=", self.ge), (">", self.gt), ("<=", self.le)) if v is not None]
        if self.items is not None:
            parts.append(f"at most {self.items}")
        if self.max_length is not None:
            parts.append(f"at most {self.max_length} characters{' each' if self.items else ''}")
        return " and ".join(parts)

    def check(self, value: Any) -> None:
        """Raise OptionError (naming the option) unless `value` is acceptable."""
        if value is None:
            if self.nullable:
                return
            raise OptionError(f"{self.flag} is required", self.name)
        if self.kind is tuple:
            return self._check_tuple(value)
        kind_ok = isinstance(value, self.kind) and not (self.kind is not bool and isinstance(value, bool))
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            kind_ok = True
        if not kind_ok:
            raise OptionError(f"{self.flag} must be {self.kind.__name__}, got {_echo(value)}", self.name)
        if self.kind is float and not math.isfinite(value):
            raise OptionError(f"{self.flag} must be a finite number ({self.bounds()}), got {value}", self.name)
        low = (self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
        if self.kind in (int, float) and not (low and (self.le is None or value <= self.le)):
            shown = f"{value:g}" if isinstance(value, float) else value
            raise OptionError(f"{self.flag} must be {self.bounds()}, got {shown}", self.name)
        if self.choices and value not in self.choices:
            raise OptionError(f"{self.flag} must be {self.bounds()}, got {_echo(value)}", self.name)
        if self.max_length is not None and len(value) > self.max_length:
            raise OptionError(f"{self.flag} must be at most {self.max_length} characters, got {len(value)}", self.name)

    def _check_tuple(self, value: Any) -> None:
        if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
            raise OptionError(f"{self.flag} must be a tuple of strings, got {_echo(value)}", self.name)
        if self.items is not None and len(value) > self.items:
            raise OptionError(f"{self.flag} takes at most {self.items}, got {len(value)}", self.name)
        for v in value:
            if not v or (self.max_length is not None and len(v) > self.max_length):
                got = f"'{v}'" if len(v) <= MAX_ECHO else f"'{v[:MAX_ECHO]}…' ({len(v):,} characters)"
                raise OptionError(f"{self.flag} {got}: each must have 1 to {self.max_length} characters", self.name)


MAX_ECHO = 16  # characters of a bad value shown in an error message


def _number(v: float) -> str:
    """A bound in words: integers whole (2147483647, not 2.14748e+09), other numbers short."""
    return str(v) if isinstance(v, int) else f"{v:g}"


def _echo(value: Any) -> str:
    """A bad value for a message: its repr, cut to a bounded prefix saying how long it was."""
    shown = repr(value)
    return shown if len(shown) <= 4 * MAX_ECHO else f"{shown[: 4 * MAX_ECHO]}… ({len(shown):,} characters)"


def _o(default: Any, kind: type, help: str, **limits: Any) -> Any:
    return field(default=default, metadata={"kind": kind, "help": help, **limits})


@dataclass(frozen=True)
class WriteOptions:
    """How poems are written. Every field is an option of `tangshi write`, `Poet.write` and the HTTP API."""

    num: int = _o(1, int, "poems per begin", ge=1, le=1000)
    title: str = _o("", str, "write for this title (a model trained with --titles)", max_length=MAX_TITLE)
    author: str = _o("", str, "in this poet's manner (`tangshi authors` lists the model's poets)", max_length=MAX_BEGIN)
    prefix: str = _o("", str, "a text read before the poem to set its mood, not written", max_length=MAX_PREFIX)
    genre: str = _o(
        "",
        str,
        "唐诗, 宋诗 or 宋词: write in this genre (a model trained with --genres; none: 宋词 with --cipai, else 唐诗)",
        max_length=MAX_BEGIN,
    )
    keywords: tuple[str, ...] = _o(
        (), tuple, "words the poem must hold, one a line in order (a plan fills the other lines)", items=8, max_length=4
    )
    plan: bool = _o(
        False,
        bool,
        "with a title in a form: give each line a keyword from the title's words and the corpus statistics, "
        "placed as with --keywords (by default the title conditions the model and steers it, and no title "
        "character is forced: what readers followed better, docs/reader-panel.md)",
    )
    theme: str = _o(
        "", str, "a word or sentence the poem is about, turned into keywords by the plan", max_length=MAX_THEME
    )
    seed: int | None = _o(None, int, "the same seed writes the same poems (none: a random one)", ge=0, le=MAX_SEED)
    form: str = _o(
        "free", str, "free, or a regular form that rhymes and keeps its tone template", choices=("free", *regular.FORMS)
    )
    cipai: str = _o(
        "", str, "write a 词 of this 词牌 (a name or alias; `tangshi cipai` lists them)", max_length=MAX_BEGIN
    )
    format: int = _o(1, int, "with --cipai: which of the 词牌's formats (`tangshi cipai NAME` shows them)", ge=1, le=64)
    template: str = _o(
        "",
        str,
        "a poem to complete: its characters stay, each ＿ or _ is written under the form's rules "
        "(the form from its shape unless --form)",
        max_length=MAX_TEMPLATE,
    )
    acrostic: str = _o(
        "", str, "藏头诗: one head character a line (with a form: one for each of its lines)", max_length=MAX_BEGIN
    )
    rhyme: str | None = _o(
        None, str, "rhyme group: 阳, 下平声七阳 or a character of it (none: the model's choice)", max_length=MAX_BEGIN
    )
    tones: str = _o("relaxed", str, "tone template: relaxed (一三五不论), strict, or off", choices=TONES)
    allow_repeat: bool = _o(False, bool, "in a form, let a character appear twice in a poem")
    temperature: float = _o(0.9, float, "sampling temperature; lower is more conservative", gt=0, le=10)
    top_k: int = _o(0, int, "sample from the k most likely characters (0 = all)", ge=0, le=100_000)
    top_p: float = _o(1.0, float, "nucleus sampling: keep this much probability mass (1 = off)", gt=0, le=1)
    greedy: bool = _o(False, bool, "always the most likely character (the seeds' argmax)")
    repetition_penalty: float = _o(1.3, float, "discourage characters already in the poem (1 = off)", ge=1, le=10)
    diversity: float | None = _o(
        None,
        float,
        "lower each character's score by this times its log training frequency, less generic poems "
        f"(none: when sampling {DEFAULT_DIVERSITY:g} where the checkpoint keeps its character counts, else 0; "
        "0 for beam search)",
        ge=0,
        le=2,
    )
    stock: float = _o(
        0.0,
        float,
        f"lower the second character of each of the corpus's {STOCK_WORDS} commonest 2-character words "
        "(不知 春风 人间 何处 ...) by this after its first: fewer stock phrases (needs the word statistics)",
        ge=0,
        le=10,
    )
    cohesion: float | None = _o(
        None,
        float,
        "steer each line toward the characters that follow the previous line's in the corpus, lines that "
        "belong together (none: when sampling where the checkpoint keeps its word statistics, "
        f"{CALIBRATED_COHESION:g} with its frequency calibration and {DEFAULT_COHESION:g} without, else 0)",
        ge=0,
        le=5,
    )
    calibration: float | None = _o(
        None,
        float,
        "weight of the checkpoint's frequency calibration, which brings the characters written to human poems' "
        "rates (none: 1 when sampling without a title, keywords or theme where the checkpoint has one for "
        "the genre, else 0)",
        ge=0,
        le=5,
    )
    topic: float = _o(
        0.5,
        float,
        "with a title, keywords or a theme: steer toward the characters of poems about them in the corpus",
        ge=0,
        le=5,
    )
    guidance: float | None = _o(
        None,
        float,
        "with a title: classifier-free guidance, how much more the title's own effect on the model counts "
        "(each step the model also reads the poem without its title; 0 = off; none: "
        f"{PLANNED_GUIDANCE:g} for a poem with a plan and {GUIDANCE:g} without)",
        ge=0,
        le=10,
    )
    manner: float = _o(
        1.0, float, "with --author: steer toward the characters the poet uses more than others do", ge=0, le=5
    )
    beam: int | None = _o(
        None,
        int,
        "beam search with this many hypotheses (0 = sample; none: "
        f"{DEFAULT_BEAM}, or --num if more; sampling for over 64 poems or where a sampling option is given: "
        + ", ".join("--" + n.replace("_", "-") for n in SAMPLING)
        + ")",
        ge=0,
        le=64,
    )
    beam_temperature: float = _o(
        DEFAULT_BEAM_TEMPERATURE,
        float,
        "with beam search: the hypotheses are drawn at this temperature (a stochastic beam), so each seed "
        "writes other poems, the likeliest found kept; 0 = the deterministic beam, one poem whatever the seed",
        ge=0,
        le=10,
    )
    lookahead: int = _o(
        DEFAULT_LOOKAHEAD,
        int,
        "with beam search in a form or 词牌: before a rhyme or a fixed character, each hypothesis's this "
        "many likeliest characters are weighed by how likely what may follow them is, so a line's last "
        "words are chosen with its rhyme in view; 0 = off",
        ge=0,
        le=1024,
    )
    rerank: int = _o(1, int, "sample this many candidates a poem and keep the best", ge=1, le=64)
    likelihood_weight: float = _o(
        1.0,
        float,
        "reranking: weight of the poem's mean log-likelihood (0: rank by prosody and sense alone)",
        ge=0,
        le=10,
    )
    prosody_weight: float = _o(
        1.0, float, "reranking: weight of the prosody score beside the log-likelihood", ge=0, le=100
    )
    relevance_weight: float = _o(
        1.0,
        float,
        "reranking: weight of how much likelier the poem is after its title and poet than without",
        ge=0,
        le=10,
    )
    coherence_weight: float = _o(
        1.0,
        float,
        "reranking: weight of how much likelier each line is after the lines before it than alone",
        ge=0,
        le=10,
    )
    budget: int = _o(20, int, "tries a poem when a rule or the copy check fails", ge=1, le=100)
    allow_copies: bool = _o(False, bool, "keep lines copied verbatim from the training corpus")
    max_length: int = _o(80, int, "most characters of a free poem", ge=1, le=1000)
    ignore_end: bool = _o(False, bool, "seed-tf style: run exactly --max-length steps, end tokens dropped")
    random_state: bool = _o(False, bool, "seed-tf style: a random initial state")
    script: str = _o("simplified", str, f"script of the poems written: {in_words(SCRIPTS)}", choices=SCRIPTS)

    def validate(self) -> WriteOptions:
        """Check every field, then the combinations; returns the options with `beam` decided (`decided`)."""
        for spec in SPECS:
            spec.check(getattr(self, spec.name))
        self = self.decided()
        if self.beam and self.num > self.beam:
            raise OptionError(f"--num {self.num} must be at most --beam {self.beam}", "num")
        if self.rhyme and self.form == "free" and not self.template:
            raise OptionError(f"--rhyme needs --form ({regular.FORMS_IN_WORDS})", "rhyme")
        if self.cipai:
            for name, off in (("form", self.regular), ("template", self.template), ("rhyme", self.rhyme)):
                if off:
                    raise OptionError(f"--cipai writes a 词 by its 词牌's pattern: give --{name} without it", name)
        if self.template and (self.keywords or self.theme):
            raise OptionError(
                "--template fixes the characters itself: give --keywords or --theme without it", "template"
            )
        return self

    def decided(self, most: int | None = None) -> WriteOptions:
        """`beam` as given, else DEFAULT_BEAM (widened to `most` poems of a begin, `num` unless told), or 0
        (sampling) where a sampling option is given or more poems are asked than a beam holds."""
        if self.beam is not None:
            return self
        if any(getattr(self, name) != BY_NAME[name].default for name in SAMPLING):
            return dataclasses.replace(self, beam=0)
        most = self.num if most is None else most
        return dataclasses.replace(self, beam=max(DEFAULT_BEAM, most) if most <= int(BY_NAME["beam"].le) else 0)

    def replace(self, **changes: Any) -> WriteOptions:
        unknown = sorted(set(changes) - set(NAMES))
        if unknown:
            raise OptionError(f"unknown writing option '{unknown[0]}'", unknown[0])
        return dataclasses.replace(self, **changes)

    @property
    def regular(self) -> bool:
        return self.form != "free"


def _spec(f: dataclasses.Field) -> Spec:
    meta = dict(f.metadata)
    return Spec(
        name=f.name,
        kind=meta.pop("kind"),
        default=f.default,
        help=meta.pop("help"),
        nullable=f.default is None,
        **meta,
    )


SPECS: tuple[Spec, ...] = tuple(_spec(f) for f in dataclasses.fields(WriteOptions))
NAMES: tuple[str, ...] = tuple(s.name for s in SPECS)
BY_NAME: dict[str, Spec] = {s.name: s for s in SPECS}


def check_begin(begin: str, field: str = "begin") -> None:
    """A begin phrase (or the acrostic heads, `field` "acrostic") is at most MAX_BEGIN characters."""
    if len(begin) > MAX_BEGIN:
        raise OptionError(f"{field} '{begin[:MAX_BEGIN]}…' has {len(begin)} characters, at most {MAX_BEGIN}", field)
