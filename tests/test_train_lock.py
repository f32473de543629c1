"""One training process per run folder: a second is refused, naming the PID; a killed one's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import tiny_config
from tangshi.cli import main
from tangshi.training import train as T
from tangshi.training.train import RunLock, TrainError, train

TINY = ["--preset", "default", "--cell", "gru", "--embedding-size", "8", "--hidden-size", "8", "--num-layers", "1"]
TINY += ["--output", "full", "--batch-size", "2", "--val-fraction", "0.2", "--test-fraction", "0", "--no-progress"]


def test_a_held_lock_refuses_training_and_resume_planning(tmp_path, poems_txt):
    run = tmp_path / "run"
    train(tiny_config(max_steps=5), [str(poems_txt)], run)
    assert not (run / ".lock").exists()  # released and removed after the run
    message = rf"{run} is in use by another training process \(PID {os.getpid()}\); wait for it or stop it"
    with RunLock(run):
        assert (run / ".lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(TrainError, match=message):
            T.resume_plan(run)  # which would otherwise tidy (.tmp-*) what the holder is writing
        with pytest.raises(TrainError, match=message):
            train(tiny_config(max_steps=10), [str(poems_txt)], run, resume_from=run / "step-000005")
        with pytest.raises(TrainError, match=message):
            train(tiny_config(max_steps=10), [str(poems_txt)], run)
    _, step_dir, cfg, data = T.resume_plan(run)
    cfg.train.max_steps = 10
    assert train(cfg, data, run, resume_from=step_dir).state.step == 10


def test_a_failed_start_leaves_no_folder(tmp_path):
    with pytest.raises(Exception):  # noqa: B017 - whatever the corpus error, the folder is not left behind
        train(tiny_config(), [str(tmp_path / "missing.txt")], tmp_path / "new")
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_a_second_cli_run_is_refused_and_a_killed_runs_lock_is_taken_over(tmp_path, poems_txt, capsys):
    run = tmp_path / "run"
    env = {**os.environ, "TANGSHI_NO_MALLOC_TUNING": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    first = [sys.executable, "-m", "tangshi", "train", "--data", str(poems_txt), "--out", str(run), *TINY]
    first += ["--max-steps", "1000000", "--checkpoint-every", "3", "--eval-every", "1000000", "--threads", "1"]
    proc = subprocess.Popen(first, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(run.glob("step-*")):
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        assert list(run.glob("step-*")), "the first run wrote no checkpoint"
        refused = (
            f"tangshi: error: {run} is in use by another training process (PID {proc.pid}); wait for it or stop it"
        )
        assert main(["train", "--resume", str(run), "--max-steps", "1000", "--no-progress"]) == 2
        assert capsys.readouterr().err.strip() == refused
        assert main(["train", "--data", str(poems_txt), "--out", str(run), *TINY, "--max-steps", "5"]) == 2
        assert capsys.readouterr().err.strip() == refused
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (run / ".lock").read_text() == f"{proc.pid}\n"  # left behind by the kill, and no longer held
    last = int(T.resume_plan(run)[1].name.split("-")[1])
    assert main(["train", "--resume", str(run), "--max-steps", str(last + 2), "--no-progress"]) == 0
    assert not (run / ".lock").exists()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["kind"] == "train"]
    assert steps == sorted(set(steps)) and rows[-1]["step"] == last + 2  # no row written twice
