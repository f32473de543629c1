"""The training loop: batches, loss, validation, checkpoints, exact resume, metrics, loss curve.

Poems are batched with padding and a masked loss: shuffled, optionally length-bucketed batches
(the order of epoch e is a pure function of the seed and e, so resume can skip to any batch), and
the output layer runs only on real positions. A run folder holds `step-NNNNNN/` checkpoints (with
resume state), `best/` (lowest validation loss), `metrics.jsonl` (or .csv) and `loss.png`.

One training process at a time owns a run folder: it holds an exclusive lock on `.lock` (its PID
inside) for the whole run, so a second `--resume`/`--out` of the same folder is refused instead of
writing the same metrics twice. A full disk while writing a checkpoint or metrics stops the run
with a TrainError saying how much space was needed; the checkpoints written before stay intact.
"""

from __future__ import annotations

import csv
import fcntl
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tangshi.config import DataConfig, RunConfig, TrainConfig
from tangshi.data.corpus import Corpus, encode_split, load_corpus
from tangshi.data.lineindex import LineIndex
from tangshi.data.vocab import PAD, Vocab
from tangshi.data.words import WordStats
from tangshi.evaluation.losses import Seqs, collate, condition_ids, mean_loss
from tangshi.model import checkpoint
from tangshi.model.charrnn import CharRNN
from tangshi.model.device import autocast_dtype, resolve_device
from tangshi.training import distributed
from tangshi.training.distributed import World

log = logging.getLogger(__name__)


class TrainError(ValueError):
    """A training request that cannot run; the message names the option or path."""


# ---------------------------------------------------------------- batches


def epoch_batches(lengths: np.ndarray, batch_size: int, bucket: bool, seed: int, epoch: int) -> list[np.ndarray]:
    """The batches of one epoch, as index arrays; a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=g).numpy()
    if not bucket:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    chunk = batch_size * 50  # sort within large random chunks: little padding, still shuffled
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    perm = torch.randperm(len(batches), generator=g).numpy()
    return [batches[i] for i in perm]


def epoch_pool(weights: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The training poems one epoch shows (each index repeated): a poem of weight w int(w) times, and
    once more with probability w - int(w), drawn from (seed, epoch) so a resumed run sees the same."""
    whole = np.floor(weights).astype(np.int64)
    rng = np.random.default_rng([seed, epoch, 29])
    extra = rng.random(len(weights)) < weights - whole
    return np.repeat(np.arange(len(weights)), whole + extra)


def poem_weights(corpus: Corpus, data: DataConfig) -> np.ndarray | None:
    """Each training poem's weight from --genre-weights (None when every poem counts once)."""
    wanted = data.weights_of_genres()
    if not wanted:
        return None
    genres = corpus.genres_of("train")
    known = sorted(set(genres) - {""})
    for name in wanted:
        if name not in known:
            raise TrainError(f"--genre-weights: no training poems of genre {name!r}; the genres are {', '.join(known)}")
    weights = np.array([wanted.get(g, 1.0) for g in genres])
    if not weights.any():
        raise TrainError("--genre-weights leaves no training poems (every weight 0)")
    return weights


class Objective(torch.nn.Module):
    """The training loss as a module (what DistributedDataParallel wraps): returns what to
    back-propagate (the objective, with any activation penalties, times `scale`) and the mean
    cross-entropy alone, detached (what the metrics report)."""

    def __init__(self, model: CharRNN):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        total, loss = self.model.objective(inputs, targets, ignore=PAD)
        return total * scale if scale != 1.0 else total, loss.detach()


# ---------------------------------------------------------------- optimiser and schedule


def make_optimizer(model: CharRNN, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = list({id(p): p for p in model.parameters()}.values())
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def clip_gradients(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_`, the same gradients and the same norm returned, without its
    multiplication by exactly 1 when the norm is within `max_norm` on a CPU (there the check costs
    nothing, the multiplication a pass over every gradient, and most steps are not clipped: the time
    it saves is in docs/speed.md)."""
    params = list(parameters)
    total = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    if total.device.type == "cpu" and float(torch.clamp(max_norm / (total + 1e-6), max=1.0)) == 1.0:
        return total
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Learning rate for `step` (0-based) given the share of the budget used, in [0, 1]."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    start = 1 - cfg.decay_fraction  # constant until then, then the decay over what is left
    p = min(max((progress - start) / cfg.decay_fraction, 0.0), 1.0)
    low = cfg.min_lr_ratio
    if cfg.schedule == "cosine":
        return cfg.lr * (low + (1 - low) * 0.5 * (1 + math.cos(math.pi * p)))
    if cfg.schedule == "linear":
        return cfg.lr * (1 - (1 - low) * p)
    return cfg.lr


# ---------------------------------------------------------------- the run folder: disk space and lock


def _size(n: float) -> str:
    """Bytes to three significant digits: 848 kB, 12.3 MB, 1.07 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def _free_bytes(path: Path) -> int | None:
    """Free bytes on the file system holding `path` (or its nearest existing parent)."""
    for p in (path, *path.parents):
        if p.exists():
            try:
                return shutil.disk_usage(p).free
            except OSError:
                return None
    return None


def _fsize_limit() -> str:
    """This process's file-size limit (`ulimit -f`) in words."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return "no limit" if soft == resource.RLIM_INFINITY else _size(soft)


@contextmanager
def disk_space(target: Path, needed: int) -> Iterator[None]:
    """A full disk (or quota) while writing `target` becomes a TrainError naming it and the space it needs."""
    try:
        yield
    except Exception as e:
        if not checkpoint.is_disk_full(e):
            raise
        if checkpoint.is_file_too_large(e):
            raise TrainError(
                f"file too large writing {target}: this shell limits a file to {_fsize_limit()} (ulimit -f); "
                "raise the limit (ulimit -f unlimited) and resume with --resume"
            ) from e
        free = _free_bytes(target.parent)
        have = "unknown" if free is None else _size(free)
        raise TrainError(f"disk full writing {target}: {_size(needed)} needed, {have} free on that file system") from e


class RunLock:
    """An exclusive flock on `run_dir/.lock`, this process's PID written in it, while one process trains there.

    The kernel drops a flock when its holder dies, so a lock left by a killed run is simply taken over.
    The file is removed on release (while still held; an acquirer checks it locked the file that is
    still there)."""

    NAME = ".lock"

    def __init__(self, run_dir: Path):
        self.run_dir, self.path = run_dir, run_dir / self.NAME
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> RunLock:
        self._created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                os.close(fd)
                raise TrainError(
                    f"{self.run_dir} is in use by another training process "
                    f"(PID {holder if holder.isdigit() else 'unknown'}); wait for it or stop it"
                ) from None
            except OSError as e:  # a file system without flock (some network mounts): train unlocked
                log.warning("%s: cannot lock (%s); not guarding against a second training process", self.path, e)
                os.close(fd)
                return self
            try:
                current = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)  # the holder removed it between our open and our lock: lock the new one
        self._fd = fd
        with disk_space(self.path, 16):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None
        if self._created:
            try:
                self.run_dir.rmdir()  # a run that failed before writing anything leaves no empty folder
            except OSError:
                pass

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# ---------------------------------------------------------------- metrics


CSV_COLUMNS = ("kind", "step", "epoch", "elapsed", "tokens", "lr", "loss", "tokens_per_s", "val_loss", "val_ppl")


class Metrics:
    """Rows appended to metrics.jsonl or metrics.csv; a resumed run drops rows past its step."""

    def __init__(self, run_dir: Path, fmt: str, resume_step: int | None, write: bool = True):
        self.path = run_dir / f"metrics.{fmt}"
        self.fmt, self.write = fmt, write
        self.rows: list[dict[str, Any]] = self._read() if resume_step is not None else []
        if resume_step is not None:
            self.rows = [r for r in self.rows if int(r["step"]) <= resume_step]
        if write:
            self._rewrite()

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        text = self.path.read_text("utf-8")
        if self.fmt == "jsonl":
            rows = []
            for line in text.splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut by a kill: drop it and what follows
            return rows
        rows = list(csv.DictReader(text.splitlines()))
        return [{k: _num(v) for k, v in r.items() if v not in ("", None)} for r in rows if r.get("step")]

    def _line(self, row: dict[str, Any]) -> str:
        if self.fmt == "jsonl":
            return json.dumps(row) + "\n"
        return ",".join("" if row.get(c) is None else str(row[c]) for c in CSV_COLUMNS) + "\n"

    def _rewrite(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        head = ",".join(CSV_COLUMNS) + "\n" if self.fmt == "csv" else ""
        text = head + "".join(self._line(r) for r in self.rows)
        try:
            with disk_space(self.path, len(text.encode("utf-8"))):
                tmp.write_text(text, "utf-8")
        except TrainError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.path)

    def add(self, **row: Any) -> None:
        self.rows.append(row)
        if self.write:
            line = self._line(row)
            size = self.path.stat().st_size if self.path.exists() else 0
            try:
                with disk_space(self.path, len(line.encode("utf-8"))), open(self.path, "a", encoding="utf-8") as f:
                    f.write(line)
            except TrainError:
                os.truncate(self.path, size)  # no half row
                raise

    def plot(self, path: Path, title: str) -> None:
        if not self.write:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        train = [(r["step"], r["loss"]) for r in self.rows if r["kind"] == "train"]
        val = [(r["step"], r["val_loss"]) for r in self.rows if r["kind"] == "val"]
        fig, ax = plt.subplots(figsize=(7, 4))
        if train:
            ax.plot(*zip(*train, strict=False), label="train", lw=1)
        if val:
            ax.plot(*zip(*val, strict=False), "o-", label="validation", ms=3)
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy (nats / character)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        tmp = path.with_name(f".{path.name}.tmp.png")
        try:
            with disk_space(path, path.stat().st_size if path.exists() else 100_000):
                fig.savefig(tmp, dpi=100, bbox_inches="tight")
        except TrainError:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            plt.close(fig)
        os.replace(tmp, path)


def _num(v: str) -> Any:
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v else f


# ---------------------------------------------------------------- the loop


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    tokens: int = 0
    elapsed: float = 0.0
    best_val: float = float("inf")
    best_step: int = -1
    evals_since_best: int = 0
    data: list[str] = field(default_factory=list)
    stopped: str = ""
    # the training-loss window since the last training-loss row (all ranks'), so a resumed run's
    # first row covers the same steps as an uninterrupted run's
    window_loss: float = 0.0  # summed loss x tokens
    window_tokens: int = 0
    window_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainState:
        s = cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})
        s.best_val = float("inf") if s.best_val is None else s.best_val
        return s


def find_resume_dir(path: Path) -> tuple[Path, Path]:
    """(run folder, checkpoint folder) for `--resume PATH` (a run folder or a step folder)."""
    if not path.is_dir():
        raise TrainError(f"--resume {path}: no such folder")
    if (path / "trainer.json").is_file():
        return path.parent, path
    if (path / "config.json").is_file():
        raise TrainError(
            f"--resume {path}: missing trainer.json (best/ holds weights only); "
            f"resume from the run folder {path.parent} or one of its step-* folders"
        )
    if distributed.world_from_env().main:  # only under the lock: a running process may be mid-write
        with RunLock(path):
            checkpoint.recover(path)
    step_dir = checkpoint.latest_step_dir(path)
    if step_dir is None:
        raise TrainError(f"--resume {path}: no step-* checkpoint in this run folder")
    return path, step_dir


ARCHITECTURE = ("cell", "embedding_size", "hidden_size", "num_layers", "output", "cutoffs", "div_value", "tie_weights")


@torch.no_grad()
def init_weights(model: CharRNN, vocab: Vocab, folder: Path) -> None:
    """Copy a checkpoint's weights into `model` (--init-from): the same architecture, and a vocabulary
    that begins with the checkpoint's, so every token it knows keeps its id and its rows; the rows of
    tokens it lacks (e.g. a poet's) keep their fresh initialisation."""
    ckpt = checkpoint.load(folder)
    for name in ARCHITECTURE:
        mine, theirs = getattr(model.cfg, name), getattr(ckpt.config.model, name)
        if mine != theirs:
            raise TrainError(f"--init-from {folder}: its {name} is {theirs!r}, this run's {mine!r}")
    old = ckpt.vocab.tokens
    if vocab.tokens[: len(old)] != old:
        raise TrainError(
            f"--init-from {folder}: its vocabulary ({len(old)} tokens) is not the start of this run's "
            f"({len(vocab)}); train on the same corpus with the same data options"
        )
    source = ckpt.model.state_dict()
    for name, t in model.state_dict().items():
        s = source[name]
        if s.shape == t.shape:
            t.copy_(s)
        else:  # rows a token: the checkpoint's tokens are the first ones
            t[: s.shape[0]].copy_(s)


def word_stats(corpus: Corpus, vocab: Vocab) -> WordStats:
    """The word statistics of a corpus's training split; poets' manners for the vocabulary's poets."""
    return WordStats.of_texts(
        corpus.texts_of("train"),
        corpus.titles_of("train") if corpus.titles else None,
        authors=corpus.authors_of("train") if corpus.authors else None,
        poets=list(vocab.authors()),
        genres=corpus.genres_of("train") if corpus.genres else None,
    )


@dataclass
class Conditions:
    """What each poem is read after (its poet's token, its title): shown in training with the drop rates
    of the data config (so that the model also writes without them), in full for validation."""

    titles: Seqs  # training split, title ids
    authors: Seqs  # training split, the poet's token (or nothing)
    val: Seqs  # validation split, genre, poet and title
    sep: int
    title_drop: float
    author_drop: float
    genres: Seqs = field(default_factory=list)  # training split, the genre's token (or nothing)
    genre_drop: float = 1.0

    @classmethod
    def of(cls, corpus: Corpus, vocab: Vocab, data: DataConfig) -> Conditions:
        def ids(split: str, title: bool, author: bool, genre: bool) -> Seqs:
            titles = corpus.titles_of(split) if data.titles else [""] * len(corpus.titles_of(split))
            genres = corpus.genres_of(split) if genre and data.genres else None
            return condition_ids(titles, corpus.authors_of(split), vocab, data.max_title, title, author, genres)

        return cls(
            ids("train", True, False, False), ids("train", False, True, False), ids("val", True, True, True),
            vocab.sep, data.title_drop if data.titles else 1.0, data.author_drop,
            ids("train", False, False, True), data.genre_drop if data.genres else 1.0,
        )  # fmt: skip

    def sample(self, index: np.ndarray, seed: int, epoch: int, batch: int) -> Seqs:
        """A batch's conditions (by position in the batch), each part kept or dropped: the same draw
        for the same seed, epoch and batch, so a resumed run sees what an uninterrupted one does."""
        rng = np.random.default_rng([seed, epoch, batch, 17])
        keep_title = rng.random(len(index)) >= self.title_drop
        keep_author = rng.random(len(index)) >= self.author_drop
        keep_genre = rng.random(len(index)) >= self.genre_drop if self.genres else np.zeros(len(index), dtype=bool)
        out = [np.array([], dtype=np.int64)] * (int(index.max()) + 1)
        for row, i in enumerate(index):
            parts = [self.genres[i]] * bool(keep_genre[row]) if self.genres else []
            parts += [self.authors[i]] * bool(keep_author[row]) + [self.titles[i]] * bool(keep_title[row])
            out[i] = np.concatenate(parts) if parts else np.array([], dtype=np.int64)
        return out


class Trainer:
    def __init__(
        self,
        cfg: RunConfig,
        run_dir: Path,
        corpus: Corpus,
        vocab: Vocab,
        resume_from: Path | None = None,
        world: World | None = None,
    ):
        self.cfg, self.run_dir, self.vocab = cfg, run_dir, vocab
        self.world = world = world or World()
        tc = cfg.train
        if tc.threads:
            torch.set_num_threads(tc.threads)
        self.device = resolve_device(tc.device)
        if self.device.type == "cuda" and world.active:
            self.device = torch.device("cuda", world.local_rank)
        if world.active and tc.batch_size < world.size:
            raise TrainError(f"--batch-size {tc.batch_size} is smaller than the {world.size} processes")
        self.train_seqs = encode_split(corpus, vocab, "train")
        self.val_seqs = encode_split(corpus, vocab, "val")
        self.conditions = Conditions.of(corpus, vocab, cfg.data) if cfg.data.conditioned else None
        # the corpus's lines, hashed, go into every checkpoint: writing rejects copied lines
        self.lines = LineIndex.of_texts(corpus.texts) if world.main else None
        # the word statistics that plans and steering draw on (--keywords, --theme, --cohesion, --manner),
        # from the training split
        self.words = word_stats(corpus, vocab) if world.main else None
        self.extras = [self.words] if self.words is not None and len(self.words) else []
        if not self.train_seqs:
            raise TrainError("the training split is empty: give more poems or lower --val-fraction/--test-fraction")
        self.lengths = np.array([len(s) for s in self.train_seqs])
        self.weights = poem_weights(corpus, cfg.data)  # --genre-weights: poems an epoch shows more or less often
        shown = self.lengths + 1 if self.weights is None else (self.lengths + 1) * self.weights
        self.epoch_tokens = max(1, int(shown.sum()))
        torch.manual_seed(tc.seed)
        cfg.model.vocab_size = len(vocab)
        self.model = CharRNN(cfg.model).to(self.device)
        if tc.init_from and resume_from is None:
            init_weights(self.model, vocab, Path(tc.init_from))
        self.optimizer = make_optimizer(self.model, tc)
        self.amp_dtype = autocast_dtype(tc.precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.state = TrainState()
        resume_step = None
        if resume_from is not None:
            self._restore(resume_from)
            resume_step = self.state.step
            if world.rank:  # the saved window is the sum over all ranks: counted once, by rank 0
                self.state.window_loss, self.state.window_tokens = 0.0, 0
            if world.active and (main := world.from_main(str(resume_step))) != str(resume_step):
                raise TrainError(f"rank {world.rank} resumed at step {resume_step} but rank 0 at step {main}")
        if world.rank:  # dropout masks differ across ranks
            torch.manual_seed(tc.seed + world.rank + 7919 * self.state.step)
        self.objective: torch.nn.Module = Objective(self.model)
        if world.active:
            self.objective = torch.nn.parallel.DistributedDataParallel(
                self.objective,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.model.adaptive,  # rare-character clusters a rank did not see
            )
        if world.main:
            run_dir.mkdir(parents=True, exist_ok=True)
        world.barrier()
        self.metrics = Metrics(run_dir, tc.metrics_format, resume_step, write=world.main)
        self._batches: list[np.ndarray] = []
        self._window_start = time.perf_counter() - self.state.window_seconds
        self.model_seconds = 0.0  # forward, backward and optimizer step
        self.step_seconds = 0.0  # the whole of each step, data and logging included

    # -- resume

    def _restore(self, folder: Path) -> None:
        ckpt = checkpoint.load(folder, device=self.device, with_trainer=True)
        if len(ckpt.vocab) != len(self.vocab):
            raise TrainError(f"{folder}: vocabulary has {len(ckpt.vocab)} tokens, expected {len(self.vocab)}")
        self.model.load_state_dict(ckpt.model.state_dict())
        t, tensors = ckpt.trainer, ckpt.trainer_tensors
        self.state = TrainState.from_dict(t["state"])
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                opt_state.setdefault(int(idx), {})[name] = value.to(self.device)
        self.optimizer.load_state_dict({"state": opt_state, "param_groups": t["param_groups"]})
        if t.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(t["scaler"])
        torch.set_rng_state(tensors["rng.cpu"])
        if self.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"])

    def _trainer_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        sd = self.optimizer.state_dict()
        tensors = {"rng.cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        for idx, per_param in sd["state"].items():
            for name, value in per_param.items():
                v = value if torch.is_tensor(value) else torch.tensor(value)
                tensors[f"optim.{idx}.{name}"] = v.detach().cpu().contiguous()
        trainer = {"state": self.state.to_dict(), "param_groups": sd["param_groups"]}
        if self.scaler.is_enabled():
            trainer["scaler"] = self.scaler.state_dict()
        return trainer, tensors

    # -- checkpoints

    def save_step(self) -> Path:
        """Write `step-NNNNNN/` (rank 0; every rank calls it) and drop the oldest past keep_checkpoints."""
        s = self.state
        folder = self.run_dir / f"step-{s.step:06d}"
        mine = s.window_loss, s.window_tokens
        window = self.world.sum(*mine)  # the checkpoint keeps the window over all ranks
        if not self.world.main:
            return folder
        s.window_loss, s.window_tokens = window[0], int(window[1])
        s.window_seconds = time.perf_counter() - self._window_start
        try:
            trainer, tensors = self._trainer_state()
        finally:
            s.window_loss, s.window_tokens = mine
        with disk_space(folder, checkpoint.write_size(self.model, tensors, self.lines)):
            folder = checkpoint.write(
                folder, self.model, self.vocab, self.cfg, trainer, tensors, lines=self.lines, extras=self.extras
            )
        steps = sorted(p for p in self.run_dir.iterdir() if checkpoint.STEP_DIR.match(p.name))
        for old in steps[: -self.cfg.train.keep_checkpoints]:
            # out of the step-* names first, so a kill mid-delete never leaves a partial checkpoint
            trash = old.parent / f".deleting-{old.name}"
            os.replace(old, trash)
            shutil.rmtree(trash, ignore_errors=True)
        return folder

    def validate(self) -> float:
        w = self.world
        c = self.conditions
        conds, sep = (c.val[w.rank :: w.size], c.sep) if c is not None else (None, None)
        loss, count = mean_loss(self.model, self.val_seqs[w.rank :: w.size], device=self.device, conds=conds, sep=sep)
        if w.active:
            total, count = w.sum(loss * count if count else 0.0, count)
            loss = total / count
        s = self.state
        if count and not math.isfinite(loss):  # (no validation poems: NaN, and nothing wrong)
            self._diverged(s.step, loss, "validation")
        self.metrics.add(
            kind="val",
            step=s.step,
            epoch=round(s.tokens / self.epoch_tokens, 4),
            elapsed=round(s.elapsed, 2),
            val_loss=round(loss, 5),
            val_ppl=round(math.exp(loss), 3) if loss < 700 else None,  # exp(709+) overflows a float
        )
        if loss < s.best_val:
            s.best_val, s.best_step, s.evals_since_best = loss, s.step, 0
            if w.main:
                best = self.run_dir / "best"
                with disk_space(best, checkpoint.write_size(self.model, lines=self.lines)):
                    checkpoint.write(best, self.model, self.vocab, self.cfg, lines=self.lines, extras=self.extras)
        else:
            s.evals_since_best += 1
        self.metrics.plot(self.run_dir / "loss.png", f"{self.cfg.preset}: {self.cfg.model.cell}")
        return loss

    # -- loop

    def progress(self) -> float:
        tc, s = self.cfg.train, self.state
        shares = [0.0]
        if tc.max_steps:
            shares.append(s.step / tc.max_steps)
        if tc.max_minutes:
            shares.append(s.elapsed / (60 * tc.max_minutes))
        if tc.max_epochs:
            shares.append(s.tokens / self.epoch_tokens / tc.max_epochs)
        return max(shares)

    def _next_batch(self) -> np.ndarray:
        """The next global batch (every rank sees the same one and takes its share)."""
        s, tc = self.state, self.cfg.train
        while True:
            if not self._batches:
                every = self.weights is None
                pool = np.arange(len(self.lengths)) if every else epoch_pool(self.weights, tc.seed, s.epoch)
                batches = epoch_batches(self.lengths[pool], tc.batch_size, tc.bucket, tc.seed, s.epoch)
                self._batches = [pool[b] for b in batches]
            if s.batch_in_epoch < len(self._batches):
                batch = self._batches[s.batch_in_epoch]
                if len(batch) >= self.world.size:
                    return batch
                s.batch_in_epoch += 1  # an epoch's last scraps, too few to deal out to every rank
                continue
            s.epoch, s.batch_in_epoch, self._batches = s.epoch + 1, 0, []

    def _should_stop(self) -> str:
        tc, s = self.cfg.train, self.state
        if tc.max_steps and s.step >= tc.max_steps:
            return "max_steps"
        if tc.max_minutes and self.world.from_main("max_minutes" if s.elapsed >= 60 * tc.max_minutes else ""):
            return "max_minutes"
        if tc.max_epochs and s.tokens >= tc.max_epochs * self.epoch_tokens:
            return "max_epochs"
        if tc.patience and s.evals_since_best >= tc.patience:
            return "early_stopping"
        return ""

    def run(self) -> TrainState:
        """Train until a limit, then validate and write the last checkpoint."""
        tc, s, w = self.cfg.train, self.state, self.world
        if not (tc.max_steps or tc.max_minutes or tc.max_epochs or tc.patience):
            raise TrainError("give a limit: --max-steps, --max-minutes, --max-epochs or --patience")
        s.stopped = self.run_steps()
        last_val = [r for r in self.metrics.rows if r["kind"] == "val"]
        if not last_val or last_val[-1]["step"] != s.step:
            self.validate()
        self.save_step()
        w.barrier()
        return s

    def run_steps(self) -> str:
        """The training steps (with their periodic validation and checkpoints) until a limit; the reason."""
        from tqdm import tqdm

        tc, s = self.cfg.train, self.state
        self.model.train()
        w = self.world
        bar = tqdm(
            total=tc.max_steps or None,
            initial=s.step,
            disable=not (tc.progress and w.main),
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0,
        )
        self._window_start = time.perf_counter() - s.window_seconds
        try:
            while not (reason := self._should_stop()):
                t0 = time.perf_counter()
                for group in self.optimizer.param_groups:
                    group["lr"] = lr_at(tc, s.step, self.progress())
                batch = self._next_batch()
                mine = batch[w.rank :: w.size]
                n = int(self.lengths[mine].sum()) + len(mine)  # real target tokens, <eos> included
                n_all = int(self.lengths[batch].sum()) + len(batch)
                if self.conditions is None:
                    inputs, targets = collate(self.train_seqs, mine)
                else:
                    conds = self.conditions.sample(mine, tc.seed, s.epoch, s.batch_in_epoch)
                    inputs, targets = collate(self.train_seqs, mine, conds=conds, sep=self.conditions.sep)
                inputs, targets = inputs.to(self.device), targets.to(self.device)
                t_model = time.perf_counter()
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    # scaled so that DDP's mean over ranks is the mean over the global batch's tokens
                    scaled, loss = self.objective(inputs, targets, n * w.size / n_all)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(scaled).backward()
                if tc.clip_grad:
                    self.scaler.unscale_(self.optimizer)
                    clip_gradients(self.model.parameters(), tc.clip_grad)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                loss_sum = float(loss) * n
                if not (w.active or math.isfinite(loss_sum)):  # several processes: checked on the summed window
                    self._diverged(s.step + 1, float(loss))
                self.model_seconds += time.perf_counter() - t_model
                s.step, s.batch_in_epoch, s.tokens = s.step + 1, s.batch_in_epoch + 1, s.tokens + n_all
                s.window_loss += loss_sum
                s.window_tokens += n
                if s.step % tc.log_every == 0:
                    now = time.perf_counter()
                    window_loss, window_tokens = w.sum(s.window_loss, s.window_tokens)
                    rate = window_tokens / max(now - self._window_start, 1e-9)
                    train_loss = window_loss / window_tokens
                    if not math.isfinite(train_loss):
                        self._diverged(s.step, train_loss)
                    self.metrics.add(
                        kind="train",
                        step=s.step,
                        epoch=round(s.tokens / self.epoch_tokens, 4),
                        elapsed=round(s.elapsed, 2),
                        tokens=s.tokens,
                        lr=self.optimizer.param_groups[0]["lr"],
                        loss=round(train_loss, 5),
                        tokens_per_s=round(rate, 1),
                    )
                    bar.set_postfix(
                        loss=f"{train_loss:.3f}", tok_s=f"{rate:,.0f}", val=f"{s.best_val:.3f}", refresh=False
                    )
                    s.window_loss, s.window_tokens, s.window_seconds = 0.0, 0, 0.0
                    self._window_start = now
                bar.update(1)
                step_time = time.perf_counter() - t0
                s.elapsed += step_time
                self.step_seconds += step_time
                t0 = time.perf_counter()
                if s.step % tc.eval_every == 0:
                    self.validate()
                if s.step % tc.checkpoint_every == 0:
                    self.save_step()
                s.elapsed += time.perf_counter() - t0
        except KeyboardInterrupt:
            reason = "interrupted"
        finally:
            bar.close()
        return reason

    def _diverged(self, step: int, loss: float, kind: str = "training") -> None:
        """Stop a run whose loss is no longer finite: its weights are lost, and no checkpoint of them is written."""
        tc = self.cfg.train
        kept = sorted(p.name for p in self.run_dir.iterdir() if checkpoint.STEP_DIR.match(p.name))
        raise TrainError(
            f"the {kind} loss is {loss} at step {step}: the run diverged (--lr {tc.lr:g}, "
            f"--optimizer {tc.optimizer}, --clip-grad {tc.clip_grad:g}); lower --lr or clip the gradients "
            "(--clip-grad 1). " + (f"Checkpoints kept: {', '.join(kept)}" if kept else "No checkpoint was written")
        )

    def report(self) -> dict[str, float]:
        """Peak resident memory of this process and the share of step time outside the model."""
        import resource

        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        outside = 1 - self.model_seconds / self.step_seconds if self.step_seconds else 0.0
        return {"peak_rss_mb": round(peak_kb / 1024, 1), "outside_model_share": round(outside, 4)}


def budget_spent(tc: TrainConfig, s: TrainState, epoch_tokens: int, reason: str, run_dir: Path) -> str:
    """The note for a resumed run whose limit is already reached: the limits count the whole run."""
    done, more = {
        "max_steps": (f"{s.step} of --max-steps {tc.max_steps} steps", f"--max-steps {2 * tc.max_steps}"),
        "max_minutes": (
            f"{s.elapsed / 60:.3g} of --max-minutes {tc.max_minutes:g} minutes",
            f"--max-minutes {2 * tc.max_minutes:g}",
        ),
        "max_epochs": (
            f"{s.tokens / epoch_tokens:.2f} of --max-epochs {tc.max_epochs:g} epochs",
            f"--max-epochs {2 * tc.max_epochs:g}",
        ),
        "early_stopping": (
            f"{s.evals_since_best} evaluations without improvement of --patience {tc.patience}",
            f"--patience {2 * tc.patience}",
        ),
    }[reason]
    return (
        f"note: --resume {run_dir}: the run has already trained {done}, and these limits count the whole run, "
        f"the resumed part included, so nothing more is trained; to go on, give a larger total, e.g. {more}"
    )


def resume_plan(path: str | Path) -> tuple[Path, Path, RunConfig, list[str]]:
    """(run folder, checkpoint folder, its config, its data paths) for `--resume PATH`."""
    run_dir, step_dir = find_resume_dir(Path(path))
    ckpt = checkpoint.load(step_dir, with_trainer=True)
    return run_dir, step_dir, ckpt.config, list(ckpt.trainer.get("state", {}).get("data", []))


def train(
    cfg: RunConfig,
    data: list[str],
    run_dir: str | Path,
    resume_from: Path | None = None,
    cache_dir: Path | None = None,
) -> Trainer:
    """Prepare the corpus, build (or restore from `resume_from`) the trainer and run it."""
    run_dir = Path(run_dir)
    cfg.validate()
    # rank 0 holds the run folder's lock for the whole run (the others write nothing there)
    with RunLock(run_dir) if distributed.world_from_env().main else nullcontext():
        steps = run_dir.is_dir() and any(checkpoint.STEP_DIR.match(p.name) for p in run_dir.iterdir())
        if resume_from is None and steps:
            raise TrainError(f"--out {run_dir} already holds a run: use --resume {run_dir} or another --out")
        world = distributed.init(resolve_device(cfg.train.device).type)
        try:
            if not world.main:
                world.barrier()  # rank 0 prepares (and caches) the corpus first
            base = checkpoint.load_vocab(Path(cfg.train.init_from)) if cfg.train.init_from else None
            corpus = load_corpus(data, cfg.data, cache_dir=cache_dir, base=base)
            if world.main:
                world.barrier()
            vocab = Vocab.load(resume_from / "vocab.json") if resume_from is not None else corpus.vocab
            trainer = Trainer(cfg, run_dir, corpus, vocab, resume_from, world=world)
            trainer.state.data = [str(Path(p).resolve()) for p in data]
            if resume_from is not None and (spent := trainer._should_stop()) and world.main:
                log.warning("%s", budget_spent(cfg.train, trainer.state, trainer.epoch_tokens, spent, run_dir))
            trainer.run()
        finally:
            distributed.shutdown(world)
    return trainer
