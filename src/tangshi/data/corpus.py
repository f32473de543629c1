"""Read poems (poems.txt, chinese-poetry JSON, plain text), normalise, filter, split, cache.

`load_corpus(paths, data_cfg)` returns a `Corpus`: the kept poems with their split, the counts of
every rule, and the malformed records found. A prepared corpus is cached on disk (texts, token ids,
vocabulary) under a key made of the input files' sizes and times and the options, so a second run
loads it without reading or converting anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tangshi.config import DataConfig
from tangshi.data.text import normalise
from tangshi.data.vocab import Vocab

log = logging.getLogger(__name__)

CACHE_VERSION = 4  # 2: the vocabulary keeps its counts; 3: titles and authors; 4: genres
SPLITS = ("train", "val", "test")
FORMATS = ("auto", "poems-txt", "json", "plain")


class CorpusError(ValueError):
    """Input that cannot be read at all; the message names the path."""


@dataclass
class Malformed:
    where: str  # e.g. "poems.txt line 17"
    why: str

    def __str__(self) -> str:
        return f"{self.where}: {self.why}"


@dataclass
class Corpus:
    texts: list[str]  # normalised poem contents, in input order
    split: list[int]  # 0 train, 1 val, 2 test, per text
    titles: list[str] = field(default_factory=list)  # normalised title per text ("" when none)
    authors: list[str] = field(default_factory=list)  # normalised author per text ("" when none)
    genres: list[str] = field(default_factory=list)  # genre per text (唐诗, 宋诗, 宋词; "" when unknown)
    counts: dict[str, int] = field(default_factory=dict)  # read, dropped by rule, kept
    malformed: list[Malformed] = field(default_factory=list)
    vocab: Vocab | None = None  # built from the train split
    ids: torch.Tensor | None = None  # all texts concatenated, int32, by the corpus vocab
    offsets: torch.Tensor | None = None  # (N + 1,) start of each text in ids

    def texts_of(self, split: str) -> list[str]:
        return self.of_split(self.texts, split)

    def titles_of(self, split: str) -> list[str]:
        return self.of_split(self.titles, split)

    def authors_of(self, split: str) -> list[str]:
        return self.of_split(self.authors, split)

    def genres_of(self, split: str) -> list[str]:
        return self.of_split(self.genres or [""] * len(self.texts), split)

    def of_split(self, values: list, split: str) -> list:
        """The entries of a per-text list (texts, titles, authors) that belong to a split."""
        if split == "all":
            return list(values)
        k = SPLITS.index(split)
        return [v for v, s in zip(values, self.split, strict=True) if s == k]

    def stats(self) -> dict:
        lengths = [len(t) for t in self.texts]
        hist = Counter(min(n // 10, 9) for n in lengths)
        return {
            **self.counts,
            "characters": sum(lengths),
            "vocabulary": len(self.vocab) if self.vocab else 0,
            "splits": {name: self.split.count(i) for i, name in enumerate(SPLITS)},
            "length_histogram": {(f"{10 * b}-{10 * b + 9}" if b < 9 else "90+"): hist[b] for b in sorted(hist)},
            "malformed_examples": [str(m) for m in self.malformed[:5]],
        }


# ---------------------------------------------------------------- reading


@dataclass
class RawPoem:
    title: str
    content: str
    where: str
    author: str = ""
    cipai: str = ""  # a 词's 词牌 (chinese-poetry's `rhythmic`)
    genre: str = ""  # 唐诗, 宋诗, 宋词: from a chinese-poetry file's name (poet.tang.*, poet.song.*, ci.song.*)


DYNASTIES = {"tang": "唐", "song": "宋", "yuan": "元", "ming": "明", "qing": "清"}


def genre_of(path: Path) -> str:
    """A chinese-poetry file's genre from its name: poet.<dynasty>.* 诗, ci.<dynasty>.* 词 ("" otherwise)."""
    m = re.match(r"(poet|ci)\.([a-z]+)\.", path.name)
    if not m or m.group(2) not in DYNASTIES:
        return ""
    return DYNASTIES[m.group(2)] + ("诗" if m.group(1) == "poet" else "词")


def find_files(paths: list[str | Path]) -> list[Path]:
    """Expand folders into their poem files (poet.*.json, ci.*.json, *.txt), sorted naturally."""
    if not paths:
        raise CorpusError("no corpus path given (e.g. --data ../shared/data/chinese-poetry/quantangshi)")
    files: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise CorpusError(f"{p}: no such file or folder")
        if p.is_dir():
            found = [
                f
                for f in p.rglob("*")
                if f.is_file() and (f.suffix == ".txt" or re.match(r"(poet|ci)\..*\.json$", f.name))
            ]
            if not found:
                raise CorpusError(f"{p}: no poem files (poet.*.json, ci.*.json, *.txt) in folder")
            files.extend(sorted(found, key=_natural_key))
        else:
            files.append(p)
    return files


def _natural_key(p: Path) -> list:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", str(p))]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not UTF-8 text (byte {e.start}); convert it to UTF-8") from None
    except OSError as e:
        raise CorpusError(f"{path}: cannot read ({e.strerror})") from None


def detect_format(path: Path, text: str) -> str:
    if path.suffix == ".json":
        return "json"
    if path.name == "poems.txt":
        return "poems-txt"
    lines = [ln for ln in text.splitlines() if ln.strip()][:100]
    if lines and sum(":" in ln for ln in lines) >= 0.5 * len(lines):
        return "poems-txt"
    return "plain"


def read_file(path: Path, fmt: str, bad: list[Malformed]) -> list[RawPoem]:
    text = _read_text(path)
    fmt = detect_format(path, text) if fmt == "auto" else fmt
    if fmt == "json":
        return _read_json(path, text, bad)
    poems = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.name} line {n}"
        if fmt == "poems-txt":
            title, sep, content = line.partition(":")
            if not sep:
                bad.append(Malformed(where, "no ':' between title and content"))
                continue
        else:
            title, content = "", line
        if not content.strip():
            bad.append(Malformed(where, "empty content"))
            continue
        poems.append(RawPoem(title.strip(), content, where))
    return poems


def _read_json(path: Path, text: str, bad: list[Malformed]) -> list[RawPoem]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CorpusError(f"{path} line {e.lineno} column {e.colno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise CorpusError(f"{path}: expected a JSON list of poems, got {type(data).__name__}")
    poems = []
    genre = genre_of(path)
    for i, item in enumerate(data):
        where = f"{path.name} poem {i}"
        if not isinstance(item, dict):
            bad.append(Malformed(where, "not a JSON object"))
            continue
        paragraphs = item.get("paragraphs")
        if not isinstance(paragraphs, list) or not all(isinstance(s, str) for s in paragraphs):
            bad.append(Malformed(where, "no 'paragraphs' list of strings"))
            continue
        if not "".join(paragraphs).strip():
            bad.append(Malformed(where, "empty content"))
            continue
        title = item.get("title", item.get("rhythmic", ""))
        author, cipai = str(item.get("author") or ""), str(item.get("rhythmic") or "")
        poems.append(RawPoem(str(title or ""), "".join(paragraphs), where, author, cipai, genre))
    return poems


# ---------------------------------------------------------------- normalising


def split_of(text: str, cfg: DataConfig) -> int:
    """0 train, 1 val, 2 test, from a hash of the text: stable when the corpus grows."""
    h = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")
    u = h / 2**64
    if u < cfg.test_fraction:
        return 2
    if u < cfg.test_fraction + cfg.val_fraction:
        return 1
    return 0


_NOTE = re.compile(r"（[^（）]*）")  # an editor's note (half-width brackets are full-width after normalise)
_MARKS = str.maketrans("", "", "[]《》")  # a corrected character [字], a title 《…》: keep what they wrap
_CLOSERS = "）]》"  # left behind by a mark that did not close: the poem stays dropped


def clean_notes(text: str) -> str:
    """`text` without editors' notes and marks: 天[载]仰（一作俯）皇穹 -> 天载仰皇穹."""
    return _NOTE.sub("", text).translate(_MARKS)


def build(raw: list[RawPoem], cfg: DataConfig) -> tuple[list[str], dict[str, int]]:
    """Normalise and filter; returns kept texts and the count of every rule (`build_poems` keeps
    titles and authors too)."""
    poems, counts = build_poems(raw, cfg)
    return [p.content for p in poems], counts


def build_poems(raw: list[RawPoem], cfg: DataConfig) -> tuple[list[RawPoem], dict[str, int]]:
    """Normalise and filter; returns the kept poems (normalised) and the count of every rule.

    With `train_max_length`, poems longer than `max_length` are kept only when their hash puts
    them in the training split; with `clean_notes`, so are the poems that pass `drop_chars` only
    once cleaned. Validation and test stay those of the seed's filters alone.
    """
    drop = set(cfg.drop_chars)
    counts = Counter({"read": len(raw)})
    seen: set[str] = set()
    kept = []
    for poem in raw:
        text = normalise(poem.content, cfg.script)
        cleaned = False
        if drop and any(c in drop for c in text):
            text = clean_notes(text) if cfg.clean_notes else None
            if text is None or any(c in drop or c in _CLOSERS for c in text):
                counts["dropped_chars"] += 1
                continue
            cleaned = True
        if len(text) < cfg.min_length:
            counts["dropped_short"] += 1
        elif len(text) > cfg.max_length and (len(text) > cfg.train_max_length or split_of(text, cfg) != 0):
            counts["dropped_long"] += 1
        elif cleaned and split_of(text, cfg) != 0:
            counts["dropped_chars"] += 1  # cleaned, but hashed to validation or test
        elif cfg.dedupe and text in seen:
            counts["dropped_duplicate"] += 1
        else:
            seen.add(text)
            title, author = normalise(poem.title, cfg.script), normalise(poem.author, cfg.script)
            kept.append(RawPoem(title, text, poem.where, author, normalise(poem.cipai, cfg.script), poem.genre))
            counts["cleaned_notes"] += cleaned
    counts["kept"] = len(kept)
    for rule in ("dropped_chars", "dropped_short", "dropped_long", "dropped_duplicate", "cleaned_notes"):
        counts.setdefault(rule, 0)
    return kept, dict(counts)


# ---------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    base = os.environ.get("TANGSHI_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "tangshi"
    )
    return Path(base)


def _cache_key(files: list[Path], fmt: str, cfg: DataConfig, base: Vocab | None = None) -> str:
    fields = {k: v for k, v in asdict(cfg).items() if k != "genre_weights"}  # sampling only: same corpus
    h = hashlib.sha256(f"v{CACHE_VERSION}|{fmt}|{json.dumps(fields, sort_keys=True)}".encode())
    if base is not None:  # a kept vocabulary: its tokens
        h.update("\n".join(base.tokens).encode())
    for f in files:
        st = f.stat()
        h.update(f"|{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def _save_cache(folder: Path, corpus: Corpus) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    meta = {
        "texts": corpus.texts,
        "split": corpus.split,
        "titles": corpus.titles,
        "authors": corpus.authors,
        "genres": corpus.genres,
        "counts": corpus.counts,
        "malformed": [[m.where, m.why] for m in corpus.malformed],
    }
    (tmp / "corpus.json").write_text(json.dumps(meta, ensure_ascii=False), "utf-8")
    corpus.vocab.save(tmp / "vocab.json")
    save_file({"ids": corpus.ids, "offsets": corpus.offsets}, str(tmp / "ids.safetensors"))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process cached it first
        shutil.rmtree(tmp, ignore_errors=True)


def _load_cache(folder: Path) -> Corpus | None:
    try:
        meta = json.loads((folder / "corpus.json").read_text("utf-8"))
        tensors = load_file(str(folder / "ids.safetensors"))
        vocab = Vocab.load(folder / "vocab.json")
    except Exception as e:  # a damaged cache is rebuilt, never trusted
        log.warning("ignoring damaged corpus cache %s: %s", folder, e)
        return None
    return Corpus(
        texts=meta["texts"],
        split=meta["split"],
        titles=meta["titles"],
        authors=meta["authors"],
        genres=meta.get("genres", []),
        counts=meta["counts"],
        malformed=[Malformed(w, y) for w, y in meta["malformed"]],
        vocab=vocab,
        ids=tensors["ids"],
        offsets=tensors["offsets"],
    )


def load_corpus(
    paths: list[str | Path],
    cfg: DataConfig | None = None,
    fmt: str = "auto",
    cache_dir: Path | None = None,
    use_cache: bool = True,
    base: Vocab | None = None,
) -> Corpus:
    """Read, normalise, filter, split and encode; cached unless `use_cache` is False. With `base` (the
    vocabulary of a checkpoint a run starts from), the corpus keeps its tokens and ids: characters it
    lacks become <unk>, condition tokens it lacks are added after its own."""
    cfg = cfg or DataConfig()
    cfg.validate()
    if fmt not in FORMATS:
        raise CorpusError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    files = find_files(paths)
    folder = (cache_dir or default_cache_dir()) / _cache_key(files, fmt, cfg, base)
    if use_cache and folder.exists():
        cached = _load_cache(folder)
        if cached is not None:
            return cached
    t0 = time.perf_counter()
    bad: list[Malformed] = []
    raw = [p for f in files for p in read_file(f, fmt, bad)]
    poems, counts = build_poems(raw, cfg)
    texts = [p.content for p in poems]
    counts["malformed"] = len(bad)
    if not texts:
        shown = "; ".join(map(str, bad[:3]))
        raise CorpusError(
            f"no poems left in {', '.join(map(str, paths))} after reading and filtering "
            f"({json.dumps(counts)}){': ' + shown if shown else ''}"
        )
    split = [split_of(t, cfg) for t in texts]
    train = [t for t, s in zip(texts, split, strict=False) if s == 0]
    if base is not None:
        vocab = base.with_counts(train)
    else:
        vocab = Vocab.build(train, min_count=cfg.min_count, max_size=cfg.max_vocab)
    titles, authors = [p.title for p in poems], [p.author for p in poems]
    genres = [p.genre for p in poems] if cfg.genres else []
    if cfg.conditioned:
        kinds = Counter(g for g, s in zip(genres, split, strict=False) if s == 0 and g)
        vocab = vocab.with_conditions(top_authors(authors, split, cfg.authors), dict(sorted(kinds.items())))
    ids, offsets = vocab.encode_many(texts)
    corpus = Corpus(texts, split, titles, authors, genres, counts, bad, vocab, ids, offsets)
    log.info("prepared %d poems in %.1fs", len(texts), time.perf_counter() - t0)
    if use_cache:
        _save_cache(folder, corpus)
    return corpus


ANONYMOUS = frozenset({"", "不详", "无名氏", "佚名"})  # placeholders, not poets


def top_authors(authors: list[str], split: list[int], n: int) -> dict[str, int]:
    """The n poets with most training poems (placeholders such as 无名氏 left out), with their counts."""
    counts = Counter(a for a, s in zip(authors, split, strict=True) if s == 0 and a not in ANONYMOUS)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n])


def encode_split(corpus: Corpus, vocab: Vocab, split: str) -> list[np.ndarray]:
    """The texts of a split as id arrays under `vocab` (a model's vocabulary may differ)."""
    texts = corpus.texts_of(split)
    ids, offsets = vocab.encode_many(texts)
    ids_np, off = ids.numpy(), offsets.numpy()
    return [ids_np[off[i] : off[i + 1]] for i in range(len(texts))]
