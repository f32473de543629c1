"""Every hyperparameter as a typed dataclass field, and the named presets.

A run is described by one `RunConfig` = `DataConfig` + `ModelConfig` + `TrainConfig`. Each field
carries a one-line meaning in its metadata; the CLI turns fields into `--options` and their meaning
into `--help`. Presets (`seed-tf`, `seed-pytorch`, `default`) are small JSON files in `presets/`
that override the dataclass defaults; the resolved config is saved with every checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from tangshi.data.text import SCRIPTS, in_words


class ConfigError(ValueError):
    """A config value or preset that cannot be used; the message names the field."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


# The largest lengths and counts of the data section (a poem of 100,000 characters is far past any corpus's).
DATA_SIZES = {"max_length": 100_000, "train_max_length": 100_000, "max_title": 1_000, "authors": 1_000_000}


@dataclass
class DataConfig:
    script: str = _f("simplified", "output script: simplified (OpenCC t2s) or traditional")
    min_length: int = _f(5, "drop poems shorter than this many characters (punctuation counts)")
    max_length: int = _f(80, "drop poems longer than this many characters (punctuation counts)")
    train_max_length: int = _f(
        0, "also train on longer poems, up to this many characters; validation and test keep --max-length (0 = off)"
    )
    drop_chars: str = _f("_(（《[", "drop poems containing any of these characters")
    clean_notes: bool = _f(
        False,
        "also train on poems whose only fault is an editor's mark: notes in （…） removed, [字] and 《…》"
        " unwrapped; validation and test keep --drop-chars",
    )
    dedupe: bool = _f(True, "drop exact duplicate poems (after normalisation)")
    val_fraction: float = _f(0.025, "share of poems in the validation split (by text hash)")
    test_fraction: float = _f(0.025, "share of poems in the test split (by text hash)")
    min_count: int = _f(1, "characters seen fewer times in training become <unk>")
    max_vocab: int = _f(0, "keep at most this many characters, most frequent first (0 = all)")
    titles: bool = _f(False, "read each poem's title before the poem (then writing can take --title)")
    authors: int = _f(0, "a token for each of the N poets with most training poems, read before the poem (--author)")
    title_drop: float = _f(0.25, "with --titles: share of training poems shown without their title (untitled writing)")
    author_drop: float = _f(0.25, "with --authors: share of training poems shown without their poet")
    max_title: int = _f(16, "with --titles: characters of a title read at most")
    genres: bool = _f(False, "read a token for each poem's genre (唐诗, 宋诗, 宋词: from its file's name) first")
    genre_drop: float = _f(0.2, "with --genres: share of training poems shown without their genre")
    genre_weights: str = _f(
        "",
        "with --genres: how often an epoch shows a genre's training poems, e.g. 唐诗=3,宋诗=0.5"
        " (a fraction: that share of them, drawn anew each epoch; unnamed genres 1)",
    )

    def validate(self) -> None:
        if self.script not in SCRIPTS:
            raise ConfigError(f"--script must be {in_words(SCRIPTS)}, got {self.script!r}")
        if self.min_length < 1 or self.max_length < self.min_length:
            raise ConfigError(
                f"--min-length/--max-length must satisfy 1 <= min <= max, got {self.min_length} and {self.max_length}"
            )
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1):
            raise ConfigError("--val-fraction and --test-fraction must be in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError("--val-fraction + --test-fraction must be < 1")
        if self.train_max_length and self.train_max_length < self.max_length:
            raise ConfigError(
                f"--train-max-length must be 0 or >= --max-length ({self.max_length}), got {self.train_max_length}"
            )
        if self.min_count < 1:
            raise ConfigError(f"--min-count must be >= 1, got {self.min_count}")
        if self.max_vocab < 0:
            raise ConfigError(f"--max-vocab must be >= 0, got {self.max_vocab}")
        if self.authors < 0:
            raise ConfigError(f"--authors must be >= 0, got {self.authors}")
        for name in ("title_drop", "author_drop", "genre_drop"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}")
        for name, top in DATA_SIZES.items():
            if (value := getattr(self, name)) > top:
                raise ConfigError(f"--{name.replace('_', '-')} must be at most {top:,}, got {_short(value)}")
        if self.max_title < 1:
            raise ConfigError(f"--max-title must be >= 1, got {self.max_title}")
        self.weights_of_genres()

    def weights_of_genres(self) -> dict[str, float]:
        """--genre-weights as {genre: weight}; a ConfigError names the part at fault."""
        if not self.genre_weights.strip():
            return {}
        if not self.genres:
            raise ConfigError("--genre-weights needs --genres (the genre of each poem comes from its file)")
        out: dict[str, float] = {}
        for part in self.genre_weights.replace("，", ",").split(","):
            name, eq, value = part.strip().partition("=")
            try:
                weight = float(value)
            except ValueError:
                weight = -1.0
            if not eq or not name.strip() or not weight >= 0 or weight == float("inf"):
                raise ConfigError(f"--genre-weights: {part.strip()!r} is not GENRE=WEIGHT (a weight >= 0), e.g. 唐诗=3")
            out[name.strip()] = weight
        return out

    @property
    def conditioned(self) -> bool:
        """Poems are read after conditions (genre, poet, title)."""
        return self.titles or self.authors > 0 or self.genres


CELLS = ("rnn", "lstm", "gru")
# The largest sizes a model may have: far past any character model worth training (the bundled one is
# 2 layers of 1,024), small enough that a config.json cannot make the loader build for minutes or hours.
MODEL_SIZES = {"num_layers": 64, "hidden_size": 65_536, "embedding_size": 65_536, "vocab_size": 2_000_000}
MAX_CUTOFFS = 16


def _short(value: Any) -> str:
    """A value for a message, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


OUTPUTS = ("full", "adaptive")


@dataclass
class ModelConfig:
    cell: str = _f("lstm", f"recurrent cell: {in_words(CELLS)}")
    embedding_size: int = _f(256, "size of the character embedding")
    hidden_size: int = _f(256, "size of each recurrent layer")
    num_layers: int = _f(2, "number of stacked recurrent layers")
    dropout: float = _f(0.0, "dropout on embeddings, between layers and before the output layer")
    variational: bool = _f(False, "variational dropout: one dropout mask a sequence, shared by all its time steps")
    weight_drop: float = _f(0.0, "DropConnect on the hidden-to-hidden weights while training (AWD-LSTM)")
    embed_drop: float = _f(
        0.0, "embedding dropout while training: drop whole characters (rows of the embedding) a batch (AWD-LSTM)"
    )
    ar: float = _f(
        0.0, "activation regularisation: add this x the mean squared (dropped) last-layer output to the loss"
    )
    tar: float = _f(
        0.0, "temporal activation regularisation: add this x the mean squared step-to-step change of the last layer"
    )
    tie_weights: bool = _f(False, "share the embedding matrix with the output layer")
    output: str = _f("full", "output layer: full softmax, or adaptive (smaller clusters for rare characters)")
    cutoffs: str = _f("1000,3000", "adaptive output: vocabulary ranks where the rarer clusters start")
    div_value: float = _f(4.0, "adaptive output: each rarer cluster's size shrinks by this factor")
    vocab_size: int = _f(0, "set from the vocabulary; not an option", cli=False)

    def validate(self, where: str = "") -> None:
        """Check every field; `where` (a config.json) names fields as `model.hidden_size` instead of options."""
        if self.cell not in CELLS:
            raise ConfigError(f"--cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        for name, top in MODEL_SIZES.items():
            value = getattr(self, name)
            low = 0 if name == "vocab_size" else 1
            if not low <= value <= top:
                label = f"{where}: model.{name}" if where else f"--{name.replace('_', '-')}"
                raise ConfigError(f"{label} must be between {low} and {top:,}, got {_short(value)}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.weight_drop < 1:
            raise ConfigError(f"--weight-drop must be in [0, 1), got {self.weight_drop}")
        if not 0 <= self.embed_drop < 1:
            raise ConfigError(f"--embed-drop must be in [0, 1), got {self.embed_drop}")
        if self.ar < 0 or self.tar < 0:
            raise ConfigError(f"--ar and --tar must be >= 0, got {self.ar} and {self.tar}")
        if self.output not in OUTPUTS:
            raise ConfigError(f"--output must be one of {', '.join(OUTPUTS)}, got {self.output!r}")
        if self.output == "adaptive":
            if self.tie_weights:
                raise ConfigError("--tie-weights works with --output full only")
            clusters = len(self.cutoff_list())
            if not 1 <= self.div_value <= 1000:
                raise ConfigError(f"--div-value must be between 1 and 1000, got {self.div_value}")
            if self.hidden_size // self.div_value**clusters < 1:
                raise ConfigError(
                    f"--div-value {self.div_value:g}: the rarest of {clusters} clusters would get a "
                    f"{self.hidden_size}/{self.div_value:g}^{clusters} < 1 wide projection; lower it or fewer --cutoffs"
                )

    def cutoff_list(self) -> list[int]:
        """The adaptive cut-offs as integers, those at or past the vocabulary size left out."""
        bad = f"--cutoffs must be increasing integers (up to {MAX_CUTOFFS}) such as 1000,3000, got "
        bad += _short(self.cutoffs)
        parts = self.cutoffs.split(",")
        if len(parts) > MAX_CUTOFFS:
            raise ConfigError(bad)
        try:
            cuts = [int(c) for c in parts if c.strip()]
        except ValueError:
            raise ConfigError(bad) from None
        if not cuts or cuts != sorted(set(cuts)) or cuts[0] < 1:
            raise ConfigError(bad)
        return [c for c in cuts if not self.vocab_size or c < self.vocab_size - 1]


OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULES = ("constant", "cosine", "linear")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
METRICS_FORMATS = ("jsonl", "csv")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    optimizer: str = _f("adamw", in_words(OPTIMIZERS))
    lr: float = _f(3e-3, "peak learning rate")
    weight_decay: float = _f(0.0, "weight decay (decoupled for adamw)")
    schedule: str = _f("cosine", f"learning-rate schedule after warm-up: {', '.join(SCHEDULES)}")
    warmup_steps: int = _f(0, "linear warm-up steps")
    min_lr_ratio: float = _f(0.0, "final learning rate as a share of --lr (cosine/linear)")
    decay_fraction: float = _f(1.0, "decay over this last share of the budget, constant before (1 = all)")
    batch_size: int = _f(64, "poems per batch")
    bucket: bool = _f(True, "batch poems of similar length together (less padding)")
    clip_grad: float = _f(1.0, "clip the gradient norm to this (0 = off)")
    max_steps: int = _f(0, "stop after this many optimizer steps in all (a --resume counts those done; 0 = no limit)")
    max_minutes: float = _f(
        0.0, "stop after this many minutes of training in all (a --resume counts those done; 0 = no limit)"
    )
    max_epochs: float = _f(0.0, "stop after this many epochs in all (a --resume counts those done; 0 = no limit)")
    eval_every: int = _f(200, "validate every N steps")
    checkpoint_every: int = _f(200, "write a resumable checkpoint every N steps")
    keep_checkpoints: int = _f(2, "how many step checkpoints to keep besides best/")
    patience: int = _f(0, "early stopping: evaluations without improvement (0 = off)")
    log_every: int = _f(20, "append training metrics every N steps")
    metrics_format: str = _f("jsonl", f"metrics file format: {in_words(METRICS_FORMATS)}")
    seed: int = _f(1234, "random seed: the same seed repeats the run exactly")
    init_from: str = _f(
        "",
        "start from this checkpoint's weights and vocabulary (the same model; characters it lacks become <unk>, "
        "condition tokens it lacks are added and start fresh)",
    )
    device: str = _f("auto", in_words(DEVICES))
    precision: str = _f(
        "fp32", "fp32, or autocast to bf16 (CPUs with AVX512-BF16/AMX, recent GPUs) or fp16 (CUDA); auto = bf16 if any"
    )
    threads: int = _f(0, "CPU threads for torch (0 = torch's default)")
    progress: bool = _f(True, "show a progress bar")

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"--schedule must be one of {', '.join(SCHEDULES)}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if not 0 < self.decay_fraction <= 1:
            raise ConfigError(f"--decay-fraction must be in (0, 1], got {self.decay_fraction}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.metrics_format not in METRICS_FORMATS:
            raise ConfigError(f"--metrics-format must be {in_words(METRICS_FORMATS)}, got {self.metrics_format!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"--device must be {in_words(DEVICES)}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("eval_every", "checkpoint_every", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")
        if self.max_steps < 0 or self.max_minutes < 0 or self.max_epochs < 0:
            raise ConfigError("--max-steps, --max-minutes and --max-epochs must be >= 0")


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


@dataclass
class RunConfig:
    preset: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        self.data.validate()
        self.model.validate()
        self.train.validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "config") -> RunConfig:
        """Build from a dict such as config.json; unknown keys are refused by name."""
        cfg = cls(preset=str(raw.get("preset", "custom")))
        for section, kind in SECTIONS.items():
            values = raw.get(section, {})
            if not isinstance(values, dict):
                raise ConfigError(f"{where}: '{section}' must be an object")
            setattr(cfg, section, _build(kind, values, f"{where}: {section}"))
        return cfg


def _build(kind: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(kind)}
    for key in values:
        if key not in known:
            raise ConfigError(f"{where}: unknown field '{key}'")
    obj = kind()
    for key, value in values.items():
        expected = type(getattr(obj, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: '{key}' must be {expected.__name__}, got {value!r}")
        setattr(obj, key, value)
    return obj


def preset_names() -> list[str]:
    folder = resources.files("tangshi") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_preset(name: str) -> RunConfig:
    """The dataclass defaults overridden by `presets/<name>.json`."""
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(preset_names())}")
    text = (resources.files("tangshi") / "presets" / f"{name}.json").read_text("utf-8")
    raw = json.loads(text)
    raw["preset"] = name
    return RunConfig.from_dict(raw, where=f"preset {name}")


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Set flat `field -> value` overrides (as given on the command line) on the right section."""
    for key, value in overrides.items():
        for section in SECTIONS:
            obj = getattr(cfg, section)
            if key in {f.name for f in dataclasses.fields(obj)}:
                setattr(obj, key, value)
                break
        else:
            raise ConfigError(f"unknown option --{key.replace('_', '-')}")
    return cfg


@dataclass
class ServeConfig:
    """`tangshi serve`: request limits, the queue and batching. Each field is a `--option`."""

    max_num: int = 16  # poems per request
    max_begin: int = 16  # characters of a begin phrase or of the acrostic heads
    max_length: int = 200  # characters of a free poem
    max_body: int = 16 * 1024  # bytes of a request body, chunked or not
    max_beam: int = 16  # beam width
    max_rerank: int = 16  # candidates a poem
    max_candidates: int = 64  # num x rerank: poems sampled for one request
    max_budget: int = 20  # tries a poem when a rule or the copy check fails
    max_queue: int = 256  # requests waiting to be written; more get 503 with Retry-After
    batch_max: int = 64  # poems written in one batch
    client_timeout: float = 10.0  # seconds a client may take to send its headers or its whole body
    max_connections: int = 512  # open connections; a request past them gets 503 at once
    max_readers: int = 32  # /v1/check and /v1/lines requests waiting or being read; more get 503
    max_places: int = 8  # broken places one /v1/check suggests characters for
    threads: int = 0  # torch threads for inference (0: torch's default)
