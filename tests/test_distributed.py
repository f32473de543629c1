"""DistributedDataParallel on CPU (gloo): 2 processes train exactly as one with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tangshi.training.distributed import World, world_from_env

ARGS = [
    "--cell", "lstm", "--embedding-size", "8", "--hidden-size", "12", "--num-layers", "2",
    "--batch-size", "6", "--lr", "0.01", "--optimizer", "adam", "--val-fraction", "0.2",
    "--test-fraction", "0", "--log-every", "1", "--eval-every", "3", "--checkpoint-every", "3",
    "--no-progress", "--threads", "1", "--device", "cpu", "--dropout", "0", "--precision", "fp32",
]  # fmt: skip


def _env() -> dict[str, str]:
    env = {**os.environ, "TANGSHI_NO_MALLOC_TUNING": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return env


def _train(procs: int, *args: str) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "tangshi"]
    if procs > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
        launcher += ["-m", "tangshi"]
    done = subprocess.run([*launcher, "train", *args], capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _losses(run: Path, kind: str = "train") -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    key = "loss" if kind == "train" else "val_loss"
    return {r["step"]: r[key] for r in rows if r["kind"] == kind}


def test_world_from_env(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert world_from_env() == World() and World().main and not World().active
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    w = world_from_env()
    assert (w.rank, w.size, w.local_rank, w.main, w.active) == (3, 4, 1, False, True)


@pytest.mark.slow
@pytest.mark.parametrize("output", ["full", "adaptive"])
def test_two_processes_match_one_and_resume(tmp_path, poems_txt, output):
    common = ["--data", str(poems_txt), *ARGS, "--output", output, "--cutoffs", "20,40", "--div-value", "2"]
    one, two, split = tmp_path / "one", tmp_path / "two", tmp_path / "split"
    _train(1, *common, "--out", str(one), "--max-steps", "8")
    done = _train(2, *common, "--out", str(two), "--max-steps", "8")
    assert done.stdout.count("stopped (max_steps) at step 8") == 1  # rank 0 alone reports
    a, b = _losses(one), _losses(two)
    assert sorted(a) == sorted(b) == list(range(1, 9))
    assert max(abs(a[k] - b[k]) for k in a) < 1e-4
    assert a[8] < a[1]  # it learns
    va, vb = _losses(one, "val"), _losses(two, "val")
    assert sorted(va) == sorted(vb) == [3, 6, 8] and max(abs(va[k] - vb[k]) for k in va) < 1e-4
    assert sorted(p.name for p in two.iterdir() if p.name.startswith("step-")) == ["step-000006", "step-000008"]

    # under DDP: stop at 4, resume to 8, same trajectory as the uninterrupted run
    _train(2, *common, "--out", str(split), "--max-steps", "4")
    _train(2, "--resume", str(split), "--max-steps", "8", "--no-progress", "--threads", "1")
    c = _losses(split)
    assert sorted(c) == list(range(1, 9))
    assert max(abs(a[k] - c[k]) for k in a) < 1e-4


def test_world_has_no_unused_collectives():
    import ast

    import tangshi

    src = Path(tangshi.__file__).parent
    methods = {
        f.name
        for node in ast.walk(ast.parse((src / "training" / "distributed.py").read_text("utf-8")))
        if isinstance(node, ast.ClassDef) and node.name == "World"
        for f in node.body
        if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")
    }
    used = " ".join(p.read_text("utf-8") for p in src.rglob("*.py") if p.name != "distributed.py")
    assert "any" not in methods
    for name in methods - {"main", "active"}:
        assert f".{name}(" in used, f"World.{name} is used nowhere"
