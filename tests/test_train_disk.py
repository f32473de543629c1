"""A full disk while training: one TrainError naming the folder and the space needed, nothing half-written."""

from __future__ import annotations

import errno
import json

import pytest
from safetensors import SafetensorError

from conftest import tiny_config
from tangshi.cli import main
from tangshi.model import checkpoint
from tangshi.training import train as T
from tangshi.training.train import TrainError, train

FULL = r"disk full writing .*{}: [\d.]+ [kMG]?B needed, [\d.]+ [kMG]?B free on that file system$"


def _fill_disk_at(monkeypatch, marker: str, error: Exception) -> None:
    """safetensors' save_file raises `error` for paths containing `marker` (as a full disk does)."""
    real = checkpoint.save_file

    def save_file(tensors, path, *args, **kwargs):
        if marker in str(path):
            raise error
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", save_file)


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
    ],
    ids=["oserror", "safetensors"],
)
def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_earlier_checkpoints(tmp_path, poems_txt, monkeypatch, error):
    run = tmp_path / "run"
    _fill_disk_at(monkeypatch, ".tmp-step-000010-", error)
    with pytest.raises(TrainError, match=FULL.format("run/step-000010")) as e:
        train(tiny_config(max_steps=10, checkpoint_every=5, eval_every=100), [str(poems_txt)], run)
    assert "\n" not in str(e.value)
    assert not list(run.glob(".tmp-*")) and not (run / "step-000010").exists()
    earlier = checkpoint.load(run / "step-000005", with_trainer=True)
    assert earlier.trainer["state"]["step"] == 5
    assert not (run / ".lock").exists()  # the lock went with the run
    monkeypatch.undo()  # space again: the run resumes from what is there
    _, step_dir, cfg, data = T.resume_plan(run)
    assert step_dir.name == "step-000005"
    assert train(cfg, data, run, resume_from=step_dir).state.step == 10


def test_sizes_read_at_a_glance():
    assert [T._size(n) for n in (512, 848_123, 12_345_678, 1_070_000_000)] == ["512 B", "848 kB", "12.3 MB", "1.07 GB"]


def test_other_write_errors_are_not_called_a_full_disk(tmp_path, poems_txt, monkeypatch):
    _fill_disk_at(monkeypatch, ".tmp-step-000005-", OSError(errno.EACCES, "Permission denied"))
    with pytest.raises(PermissionError):
        train(tiny_config(max_steps=5, eval_every=100), [str(poems_txt)], tmp_path / "run")
    assert not list((tmp_path / "run").glob(".tmp-*"))


def test_a_full_disk_writing_metrics_leaves_no_half_row(tmp_path, poems_txt, monkeypatch):
    run = tmp_path / "run"
    real_open = open
    calls = {"n": 0}

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            self.f.write(text[:7])  # part of the row lands, then the disk is full
            self.f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    def fake_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if mode == "a" and str(path).endswith("metrics.jsonl"):
            calls["n"] += 1
            if calls["n"] == 4:
                return Full(f)
        return f

    monkeypatch.setattr(T, "open", fake_open, raising=False)
    with pytest.raises(TrainError, match=FULL.format("run/metrics.jsonl")):
        train(tiny_config(max_steps=10), [str(poems_txt)], run)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]


def test_the_cli_reports_a_full_disk_and_exits_non_zero(tmp_path, poems_txt, monkeypatch, capsys):
    _fill_disk_at(monkeypatch, ".tmp-step-000004-", OSError(errno.ENOSPC, "No space left on device"))
    args = ["train", "--data", str(poems_txt), "--out", str(tmp_path / "run"), "--preset", "default"]
    args += ["--cell", "gru", "--embedding-size", "8", "--hidden-size", "8", "--num-layers", "1", "--output", "full"]
    args += ["--batch-size", "4", "--max-steps", "4", "--checkpoint-every", "2", "--eval-every", "100"]
    args += ["--val-fraction", "0.2", "--test-fraction", "0", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tangshi: error: disk full writing ") and "run/step-000004: " in err
    assert "\n" not in err and "Traceback" not in err
    checkpoint.load(tmp_path / "run" / "step-000002", with_trainer=True)
