"""Damaged checkpoints and runs that go wrong: NaN weights, garbled bytes, damaged side files, a diverging
run, a file-size limit while saving, a resumed run whose budget is already spent."""

from __future__ import annotations

import errno
import random

import pytest
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from conftest import tiny_config
from tangshi.cli import main
from tangshi.model import checkpoint
from tangshi.model.checkpoint import CheckpointError
from tangshi.training import train as T
from tangshi.training.train import TrainError, train


def _poison(folder, name="embed.weight", value=float("nan")):
    tensors = load_file(str(folder / "model.safetensors"))
    tensors[name].view(-1)[3] = value
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_load_naming_file_and_tensor(tiny_run, value):
    folder = tiny_run / "best"
    _poison(folder, value=value)
    with pytest.raises(CheckpointError, match=r"best/model.safetensors: cannot load: tensor embed.weight holds 1 "):
        checkpoint.load(folder)


def test_a_nan_checkpoint_is_refused_by_write_eval_and_calibrate(tiny_run, poems_txt, capsys):
    folder = tiny_run / "best"
    _poison(folder)
    for argv in (
        ["write", "月", "--checkpoint", str(folder)],
        ["eval", "--checkpoint", str(folder), "--data", str(poems_txt)],
        ["calibrate", "--checkpoint", str(folder), "--data", str(poems_txt)],
    ):
        assert main(argv) != 0, argv
        err = capsys.readouterr().err
        assert "tensor embed.weight holds 1 non-finite values (1 NaN)" in err and "Traceback" not in err


def _data_start(data: bytes) -> int:
    return 8 + int.from_bytes(data[:8], "little")


def _flip_finite(path, n=5):
    """Change the lowest mantissa byte of n float32 values in the tensor data: every value stays finite."""
    data = bytearray(path.read_bytes())
    start = _data_start(data)
    for i in range(n):
        data[start + 4 * (100 + 37 * i)] ^= 0x5A
    path.write_bytes(bytes(data))


def test_the_weights_carry_their_sha256(tiny_run):
    path = tiny_run / "best" / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        saved, tensors = f.metadata()["sha256"], {k: f.get_tensor(k) for k in f.keys()}
    assert saved == checkpoint.weights_sha256(tensors) and len(saved) == 64
    assert checkpoint.load(tiny_run / "best").path == tiny_run / "best"  # untouched: loads


def test_finite_damage_to_the_weights_is_refused_by_the_checksum(tiny_run):
    path = tiny_run / "best" / "model.safetensors"
    _flip_finite(path)
    tensors = load_file(str(path))
    checkpoint.check_finite(tensors, path)  # every value finite: only the checksum can tell
    with pytest.raises(
        CheckpointError,
        match=r"best/model.safetensors: its weights do not match the checksum written with them "
        r"\(the file is damaged\)",
    ):
        checkpoint.load(tiny_run / "best")


def test_finite_damage_is_refused_by_write_with_one_line_and_a_non_zero_exit(tiny_run, capsys):
    _flip_finite(tiny_run / "best" / "model.safetensors")
    assert main(["write", "月", "--checkpoint", str(tiny_run / "best")]) != 0
    captured = capsys.readouterr()
    assert "model.safetensors: its weights do not match the checksum" in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_weights_without_a_checksum_still_load(tiny_run):
    """A checkpoint written before the checksum: its weights are loaded unchecked (and a change goes unseen)."""
    path = tiny_run / "best" / "model.safetensors"
    save_file(load_file(str(path)), str(path), metadata={"format": "pt"})
    _flip_finite(path)
    ckpt = checkpoint.load(tiny_run / "best")
    assert ckpt.model.embed.weight.isfinite().all()
    save_file(load_file(str(path)), str(path))  # no metadata at all
    checkpoint.load(tiny_run / "best")


def test_damaged_trainer_tensors_are_refused_by_the_checksum(tiny_run):
    step = checkpoint.latest_step_dir(tiny_run)
    path = step / "trainer.safetensors"
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["sha256"] == checkpoint.weights_sha256({k: f.get_tensor(k) for k in f.keys()})
    checkpoint.load(step, with_trainer=True)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"trainer.safetensors: its tensors do not match the checksum"):
        checkpoint.load(step, with_trainer=True)


def test_random_bytes_in_the_weights_are_refused(tiny_run):
    """The drill: 2,000 random bytes changed in the tensor data. Some land on a float's exponent and make NaN
    or inf, most leave finite values; the checksum refuses the file either way, before the values are read."""
    path = tiny_run / "best" / "model.safetensors"
    data = bytearray(path.read_bytes())
    start = _data_start(data)
    rng = random.Random(0)
    for _ in range(2000):
        data[rng.randrange(start, len(data))] = rng.randrange(256)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"do not match the checksum written with them"):
        checkpoint.load(tiny_run / "best")


def test_a_garbled_header_is_named(tiny_run):
    path = tiny_run / "best" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[10:40] = b"x" * 30
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model.safetensors: not a readable safetensors file"):
        checkpoint.load(tiny_run / "best")


def test_non_finite_weights_are_never_written(tiny_run, tmp_path):
    ckpt = checkpoint.load(tiny_run / "best")
    with torch.no_grad():
        next(ckpt.model.parameters()).view(-1)[0] = float("nan")
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match=r"out/model.safetensors: refusing to write: tensor .* \(1 NaN\)"):
        checkpoint.write(out, ckpt.model, ckpt.vocab, ckpt.config)
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))


def test_a_diverging_run_stops_naming_the_step_and_writes_no_nan_checkpoint(tmp_path, poems_txt, monkeypatch):
    run = tmp_path / "run"
    real = T.Objective.forward
    steps = {"n": 0}

    def objective(self, *args):  # the weights go NaN at the 7th step
        steps["n"] += 1
        if steps["n"] == 7:
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))
        return real(self, *args)

    monkeypatch.setattr(T.Objective, "forward", objective)
    cfg = tiny_config(max_steps=10, checkpoint_every=5, eval_every=100)
    with pytest.raises(
        TrainError,
        match=r"^the training loss is nan at step 7: the run diverged \(--lr 0.01, .*"
        r"Checkpoints kept: step-000005$",
    ):
        train(cfg, [str(poems_txt)], run)
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == [
        "metrics.jsonl",
        "step-000005",
    ]
    checkpoint.load(run / "step-000005")  # finite
    assert not (run / ".lock").exists()


def test_a_diverging_run_exits_non_zero_from_the_cli(tmp_path, poems_txt, capsys):
    argv = ["train", "--data", str(poems_txt), "--out", str(tmp_path / "run"), "--cell", "gru"]
    argv += ["--embedding-size", "8", "--hidden-size", "8", "--num-layers", "1", "--output", "full"]
    argv += ["--max-steps", "10", "--lr", "1e30", "--optimizer", "sgd", "--clip-grad", "0", "--no-progress"]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "the training loss is nan at step" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("name", "remake"),
    [("words", "tangshi index --checkpoint"), ("lines", "tangshi index --checkpoint")],
)
@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_a_damaged_side_file_is_named_with_how_to_remake_it(tiny_run, name, remake, damage):
    from tangshi.data.words import WordStats

    folder = tiny_run / "best"
    path = folder / f"{name}.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else data[:8] + b"\xff" * 40 + data[48:])
    with pytest.raises(CheckpointError) as e:
        WordStats.load(folder) if name == "words" else checkpoint.load(folder)
    msg = str(e.value)
    assert msg.startswith(f"{path}: not a readable ") and "truncated or damaged" in msg
    assert f"make it again: {remake} {folder} --data CORPUS" in msg and "\n" not in msg


def test_a_damaged_calibration_is_named_with_how_to_remake_it(tiny_run):
    from tangshi.evaluation.calibration import Calibration

    folder = tiny_run / "best"
    vocab = checkpoint.load_vocab(folder)
    Calibration({"": torch.zeros(len(vocab))}).save(folder)
    path = folder / "calibration.safetensors"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match=r"calibration.safetensors: not a readable calibration file, truncated"):
        Calibration.load(folder, len(vocab))
    Calibration({"": torch.full((len(vocab),), float("nan"))}).save(folder)
    with pytest.raises(CheckpointError, match=r"holds NaN or infinite values; calibrate again"):
        Calibration.load(folder, len(vocab))


@pytest.mark.parametrize(
    "error",
    [OSError(errno.EFBIG, "File too large"), SafetensorError("Error while serializing: File too large (os error 27)")],
    ids=["oserror", "safetensors"],
)
def test_a_file_size_limit_at_a_checkpoint_is_like_a_full_disk(tmp_path, poems_txt, monkeypatch, error):
    run = tmp_path / "run"
    real = checkpoint.save_file

    def save_file(tensors, path, *args, **kwargs):
        if ".tmp-step-000010-" in str(path):
            raise error
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", save_file)
    with pytest.raises(TrainError, match=r"file too large writing .*run/step-000010: this shell limits a file to"):
        train(tiny_config(max_steps=10, checkpoint_every=5, eval_every=100), [str(poems_txt)], run)
    assert not list(run.glob(".tmp-*")) and not (run / "step-000010").exists()
    assert checkpoint.load(run / "step-000005", with_trainer=True).trainer["state"]["step"] == 5


@pytest.mark.slow
def test_a_real_file_size_limit_is_one_line(tmp_path, poems_txt):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "tangshi", "train", "--data", str(poems_txt), "--out", str(tmp_path / "run")]
    cmd += ["--cell", "gru", "--hidden-size", "256", "--embedding-size", "64", "--output", "full", "--max-steps", "2"]
    cmd += ["--no-progress"]
    shell = "ulimit -f 100; exec " + " ".join(cmd)
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "file too large writing" in done.stderr and "(ulimit -f)" in done.stderr
    assert not list((tmp_path / "run").glob(".tmp-*"))


def test_resuming_a_run_whose_budget_is_spent_says_so(tiny_run, poems_txt, caplog):
    _, step_dir, cfg, data = T.resume_plan(tiny_run)
    with caplog.at_level("WARNING", logger=T.log.name):
        trainer = train(cfg, data, tiny_run, resume_from=step_dir)
    assert trainer.state.step == 10
    notes = [r.getMessage() for r in caplog.records if "--resume" in r.getMessage()]
    assert notes == [
        f"note: --resume {tiny_run}: the run has already trained 10 of --max-steps 10 steps, and these limits count "
        "the whole run, the resumed part included, so nothing more is trained; to go on, give a larger total, "
        "e.g. --max-steps 20"
    ]
    caplog.clear()
    cfg.train.max_steps = 12
    with caplog.at_level("WARNING", logger=T.log.name):
        assert train(cfg, data, tiny_run, resume_from=T.resume_plan(tiny_run)[1]).state.step == 12
    assert not [r for r in caplog.records if "--resume" in r.getMessage()]


def test_the_budget_help_says_it_counts_the_whole_run(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "stop after this many minutes of training in all (a --resume counts those done" in out


def test_a_side_file_hitting_the_file_size_limit_is_an_os_error_naming_it(tmp_path):
    from tangshi.data.vocab import write_atomic

    def limited(tmp):
        raise SafetensorError("Error while serializing: I/O error: File too large (os error 27)")

    with pytest.raises(OSError, match=r"cannot write .*words.safetensors: File too large") as e:
        write_atomic(tmp_path / "words.safetensors", limited)
    assert e.value.errno == errno.EFBIG and not list(tmp_path.iterdir())
