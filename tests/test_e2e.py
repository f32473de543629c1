"""End to end through the real command line: prepare -> train a few steps -> write -> eval."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # the CLI in subprocesses


def tangshi(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "tangshi", *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    return out.stdout


def test_prepare_train_write(tmp_path, poems_txt):
    assert "prepared 12 poems" in tangshi("data", "prepare", str(poems_txt))
    run = tmp_path / "run"
    out = tangshi(
        "train",
        "--data",
        str(poems_txt),
        "--out",
        str(run),
        "--preset",
        "default",
        "--cell",
        "lstm",
        "--embedding-size",
        "16",
        "--hidden-size",
        "16",
        "--batch-size",
        "4",
        "--max-steps",
        "6",
        "--eval-every",
        "3",
        "--val-fraction",
        "0.2",
        "--test-fraction",
        "0",
        "--seed",
        "1",
    )
    assert "stopped (max_steps) at step 6" in out
    config = json.loads((run / "best" / "config.json").read_text())
    assert config["preset"] == "default" and config["model"]["hidden_size"] == 16 and config["train"]["seed"] == 1
    first = tangshi("write", "月", "山", "--checkpoint", str(run / "best"), "--seed", "2")
    assert first == tangshi("write", "月", "山", "--checkpoint", str(run / "best"), "--seed", "2")
    assert first.startswith("月")
    report = json.loads(
        tangshi("eval", "--checkpoint", str(run / "best"), "--data", str(poems_txt), "--split", "all", "--json")
    )
    assert report["models"][0]["poems"] == 12 and report["models"][0]["settings"]["七律"]["form"] == 1.0
