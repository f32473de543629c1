"""Tiny fixtures: a handful of poems in every input format, a tiny config, a tiny trained run; and the
rule of the `slow` marker, enforced: a test not marked slow that loads the bundled model, reads the real
corpus, starts a process or opens a network socket (a server, a browser's driver) fails, naming what it
did (docs/testing.md)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from tangshi.api import bundled_path
from tangshi.config import RunConfig
from tangshi.model import checkpoint

POEMS = [
    ("静夜思", "床前明月光，疑是地上霜。举头望明月，低头思故乡。"),
    ("春晓", "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。"),
    ("登鹳雀楼", "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。"),
    ("相思", "红豆生南国，春来发几枝。愿君多采撷，此物最相思。"),
    ("鹿柴", "空山不见人，但闻人语响。返景入深林，复照青苔上。"),
    ("江雪", "千山鸟飞绝，万径人踪灭。孤舟蓑笠翁，独钓寒江雪。"),
    ("悯农", "锄禾日当午，汗滴禾下土。谁知盘中餐，粒粒皆辛苦。"),
    ("山中", "长江悲已滞，万里念将归。况属高风晚，山山黄叶飞。"),
    ("夜宿山寺", "危楼高百尺，手可摘星辰。不敢高声语，恐惊天上人。"),
    ("湖上", "水光潋滟晴方好，山色空蒙雨亦奇。欲把西湖比西子，淡妆浓抹总相宜。"),
    ("海上", "海上生明月，天涯共此时。情人怨遥夜，竟夕起相思。"),
    ("月夜", "今夜鄜州月，闺中只独看。遥怜小儿女，未解忆长安。"),
]

SHARED_DATA = Path(os.environ.get("TANGSHI_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TANG = SHARED_DATA / "chinese-poetry" / "quantangshi"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TANGSHI_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.set_num_threads(1)


def write_poems(path: Path) -> Path:
    path.write_text("\n".join(f"{t}:{c}" for t, c in POEMS) + "\n", "utf-8")
    return path


@pytest.fixture
def poems_txt(tmp_path) -> Path:
    return write_poems(tmp_path / "poems.txt")


@pytest.fixture
def json_dir(tmp_path) -> Path:
    folder = tmp_path / "json"
    folder.mkdir()
    tang = [{"title": t, "author": "x", "paragraphs": [c[: len(c) // 2], c[len(c) // 2 :]]} for t, c in POEMS[:6]]
    ci = [{"rhythmic": t, "author": "y", "paragraphs": [c]} for t, c in POEMS[6:]]
    (folder / "poet.tang.0.json").write_text(json.dumps(tang, ensure_ascii=False), "utf-8")
    (folder / "ci.song.0.json").write_text(json.dumps(ci, ensure_ascii=False), "utf-8")
    (folder / "authors.tang.json").write_text("[]", "utf-8")  # not poems: skipped in folders
    return folder


def tiny_config(**train) -> RunConfig:
    cfg = RunConfig(preset="tiny")
    cfg.data.val_fraction, cfg.data.test_fraction = 0.2, 0.0
    cfg.model.cell, cfg.model.embedding_size, cfg.model.hidden_size, cfg.model.num_layers = "gru", 8, 8, 1
    cfg.train.batch_size, cfg.train.lr, cfg.train.warmup_steps = 4, 1e-2, 0
    cfg.train.eval_every, cfg.train.checkpoint_every, cfg.train.log_every = 5, 5, 1
    cfg.train.progress, cfg.train.max_steps = False, 10
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


@pytest.fixture(scope="session")
def _tiny_run_once(tmp_path_factory) -> tuple[Path, Path]:
    """(poems.txt, the run trained on it): the tiny training, done once a session."""
    from tangshi.training.train import train

    folder = tmp_path_factory.mktemp("tiny")
    poems = write_poems(folder / "poems.txt")
    with pytest.MonkeyPatch.context() as mp:  # as _isolated_cache does for each test
        mp.setenv("TANGSHI_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        torch.set_num_threads(1)
        train(tiny_config(), [str(poems)], folder / "run")
    return poems, folder / "run"


@pytest.fixture
def tiny_run(tmp_path, poems_txt, _tiny_run_once) -> Path:
    """A run of tiny_config() on poems_txt: a copy of the session's, whose checkpoints resume from poems_txt
    (the same seeds on the same poems: the same weights as a training of its own)."""
    poems, once = _tiny_run_once
    run = tmp_path / "run"
    shutil.copytree(once, run)
    for state in run.glob("step-*/trainer.json"):
        state.write_text(state.read_text("utf-8").replace(str(poems), str(poems_txt)), "utf-8")
    return run


def need_shared_data() -> None:
    if not TANG.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"the corpus is missing at {TANG}")
        pytest.skip(f"the corpus is not at {TANG}")


# The slow rule. An audit hook (sys.addaudithook: one per process, a few comparisons per audited event) sees
# every process start, network socket and file opened; `checkpoint.load`, through which every loader goes
# (Poet.load, the server, the CLI), is wrapped to refuse the bundled weights (known by size and header, so a
# copy of the bundled folder counts too) before any is read. Watched: each test not marked slow, from its
# setup to its teardown, and the import of every test module (collected whatever -m selects).

SPAWNS = {"subprocess.Popen", "os.system", "os.posix_spawn", "os.spawn", "os.exec", "os.fork", "os.forkpty"}
SOCKETS = {"socket.bind", "socket.connect"}
HEAD = 4096  # the bytes of model.safetensors compared: its header (names, shapes, offsets) and then some
MARK_IT = "mark it @pytest.mark.slow (docs/testing.md)"
IN_A_FIXTURE = "do it in a fixture, which only the slow tests that use it set up (docs/testing.md)"


class SlowTestError(Exception):
    """A test not marked slow, or a test module as it is imported, did what only a slow test may do."""


def _weights(folder: str | os.PathLike) -> tuple[int, bytes] | None:
    """(size, first bytes) of a checkpoint folder's model.safetensors; None where it has none."""
    try:
        with open(Path(folder) / "model.safetensors", "rb") as f:
            return os.fstat(f.fileno()).st_size, f.read(HEAD)
    except OSError:
        return None


def _inside(folder: str | os.PathLike) -> str:
    return os.path.realpath(folder) + os.sep


class Guard:
    """What the watched test or module import may not do, and what it tried."""

    def __init__(self) -> None:
        self.who: str | None = None  # "<nodeid> is not marked slow but", ...; None: nothing is watched
        self.advice = ""
        self.broken: list[str] = []
        self.bundled, self.bundled_folder = _weights(bundled_path()), _inside(bundled_path())
        self.corpus = _inside(SHARED_DATA)

    @contextmanager
    def watching(self, who: str, advice: str) -> Iterator[None]:
        before = self.who, self.advice, self.broken
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(checkpoint, "load", self.guarded(checkpoint.load))
            self.who, self.advice, self.broken = who, advice, []
            try:
                yield
            finally:
                self.who, self.advice, self.broken = before

    def refuse(self, what: str) -> None:
        message = f"{self.who} {what}: {self.advice}"
        self.broken.append(message)
        raise SlowTestError(message)

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if self.who is None:
            return
        if event in SPAWNS:
            self.refuse(f"starts a process ({event} {_shown(args)})")
        elif event in SOCKETS and len(args) > 1 and isinstance(args[1], tuple):  # IPv4/6; not Unix sockets
            self.refuse(f"opens a network socket ({event} {args[1]})")
        elif event == "open" and isinstance(args[0], str | os.PathLike):
            name = os.path.realpath(args[0])
            if name.startswith(self.bundled_folder) and name.endswith(".safetensors"):  # a copy of the folder
                self.refuse(f"reads the bundled model ({args[0]})")
            if name.startswith(self.corpus):
                self.refuse(f"reads the real corpus ({args[0]})")

    def guarded(self, load: Callable[..., checkpoint.Checkpoint]) -> Callable[..., checkpoint.Checkpoint]:
        def load_unless_bundled(folder: str | Path, *args: Any, **kwargs: Any) -> checkpoint.Checkpoint:
            if self.who is not None and (_inside(folder) == self.bundled_folder or _weights(folder) == self.bundled):
                self.refuse(f"loads the bundled model ({folder})")
            return load(folder, *args, **kwargs)

        return load_unless_bundled


def _shown(args: tuple[Any, ...]) -> str:
    text = " ".join(map(str, args[:2]))
    return text if len(text) <= 200 else text[:200] + "..."


GUARD = Guard()
sys.addaudithook(GUARD.audit)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Setup, call and teardown of a test not marked slow run under the guard."""
    if item.get_closest_marker("slow"):
        return (yield)
    with GUARD.watching(f"{item.nodeid} is not marked slow but", MARK_IT):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """A refusal the test caught and went on from still fails it."""
    result = yield
    if GUARD.broken:
        raise SlowTestError(GUARD.broken[0])
    return result


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """A test module is imported under the guard: what it does then, every run pays for, -m "not slow" too."""
    if not isinstance(collector, pytest.Module):
        return (yield)
    with GUARD.watching(f"{collector.nodeid}, as it is imported,", IN_A_FIXTURE):
        return (yield)
