"""Tiny fixtures: a handful of poems in every input format, a tiny config, a tiny trained run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tangshi.config import RunConfig

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


@pytest.fixture
def poems_txt(tmp_path) -> Path:
    path = tmp_path / "poems.txt"
    path.write_text("\n".join(f"{t}:{c}" for t, c in POEMS) + "\n", "utf-8")
    return path


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


@pytest.fixture
def tiny_run(tmp_path, poems_txt) -> Path:
    from tangshi.training.train import train

    run = tmp_path / "run"
    train(tiny_config(), [str(poems_txt)], run)
    return run


def need_shared_data() -> None:
    if not TANG.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"the corpus is missing at {TANG}")
        pytest.skip(f"the corpus is not at {TANG}")
