import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config
from tangshi.config import TrainConfig
from tangshi.evaluation.losses import collate
from tangshi.model import checkpoint
from tangshi.model import device as D
from tangshi.model.device import DeviceError
from tangshi.training import train as T
from tangshi.training.train import TrainError, epoch_batches, lr_at, train


def test_epoch_batches_cover_every_poem_once_and_repeat_by_seed():
    lengths = np.random.default_rng(0).integers(5, 80, size=1000)
    for bucket in (False, True):
        batches = epoch_batches(lengths, 32, bucket, seed=3, epoch=0)
        assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
        again = epoch_batches(lengths, 32, bucket, seed=3, epoch=0)
        assert all((a == b).all() for a, b in zip(batches, again, strict=False))
        assert not all((a == b).all() for a, b in zip(batches, epoch_batches(lengths, 32, bucket, 3, 1), strict=False))


def test_bucketing_removes_most_padding():
    lengths = np.random.default_rng(0).integers(5, 80, size=3200)

    def padding(bs):
        return sum(len(b) * lengths[b].max() - lengths[b].sum() for b in bs) / lengths.sum()

    assert padding(epoch_batches(lengths, 32, True, 0, 0)) < 0.1 < padding(epoch_batches(lengths, 32, False, 0, 0))


def test_collate_wraps_in_begin_and_end_and_pads():
    inputs, targets = collate([np.array([5, 6, 7]), np.array([8])], np.array([0, 1]), multiple=1)
    assert inputs.tolist() == [[2, 5, 6, 7], [2, 8, 0, 0]]
    assert targets.tolist() == [[5, 6, 7, 3], [8, 3, 0, 0]]
    inputs, _ = collate([np.array([5] * 9)], np.array([0]))  # <bos> + 9, rounded up to <bos> + 16
    assert inputs.shape == (1, 17) and inputs[0, 10:].eq(0).all()
    inputs, targets = collate([np.array([5] * 24), np.array([6] * 20)], np.array([0, 1]))  # a 五绝: no padding
    assert inputs.shape == (2, 25) and targets[0, -1] == 3 and targets[1, 21:].eq(0).all()


def test_schedule_warms_up_and_decays():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert lr_at(cfg, 0, 0.0) == pytest.approx(0.1)
    assert lr_at(cfg, 10, 0.0) == pytest.approx(1.0)
    assert lr_at(cfg, 50, 0.5) == pytest.approx(0.55)
    assert lr_at(cfg, 99, 1.0) == pytest.approx(0.1)
    assert lr_at(TrainConfig(lr=1.0, schedule="constant"), 5, 0.9) == 1.0


def test_training_lowers_the_loss_and_writes_metrics_and_plot(tiny_run):
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == list(range(1, 11))
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    assert all(r["tokens_per_s"] > 0 for r in train_rows)
    assert [r["step"] for r in rows if r["kind"] == "val"] == [5, 10]
    assert (tiny_run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tiny_run.glob("step-*")) == ["step-000005", "step-000010"]


def test_same_seed_same_weights(tmp_path, poems_txt):
    a = train(tiny_config(), [str(poems_txt)], tmp_path / "a")
    b = train(tiny_config(), [str(poems_txt)], tmp_path / "b")
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_resume_continues_exactly(tmp_path, poems_txt, cell):
    def cfg(steps):
        c = tiny_config(max_steps=steps, optimizer="adamw", schedule="cosine")
        c.model.cell, c.model.dropout, c.model.num_layers = cell, 0.2, 2
        return c

    straight = train(cfg(10), [str(poems_txt)], tmp_path / "straight")
    # a run killed right after its step-5 checkpoint: the same folder without what came later
    shutil.copytree(tmp_path / "straight", tmp_path / "split", ignore=shutil.ignore_patterns("step-000010", "best"))
    _, step_dir, resumed_cfg, data = T.resume_plan(tmp_path / "split")
    assert step_dir.name == "step-000005" and resumed_cfg.train == cfg(10).train
    resumed = train(resumed_cfg, data, tmp_path / "split", resume_from=step_dir)
    assert resumed.state.step == 10
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    steps = [
        json.loads(x)["step"]
        for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["kind"] == "train"
    ]
    assert steps == list(range(1, 11))


def _train_rows(run) -> list[dict]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "train"]


def test_resume_between_log_steps_gives_the_uninterrupted_loss_rows(tmp_path, poems_txt):
    """A checkpoint at step 6 with a row every 4 steps: the resumed row at step 8 covers steps 5-8,
    as in the uninterrupted run (the window of steps 5-6 is kept in the checkpoint)."""

    def cfg(steps):
        return tiny_config(max_steps=steps, log_every=4, checkpoint_every=6, eval_every=6, schedule="constant")

    straight = train(cfg(12), [str(poems_txt)], tmp_path / "straight")
    train(cfg(6), [str(poems_txt)], tmp_path / "split")
    _, step_dir, resumed_cfg, data = T.resume_plan(tmp_path / "split")
    assert step_dir.name == "step-000006"
    saved = json.loads((step_dir / "trainer.json").read_text())["state"]
    assert saved["window_tokens"] > 0 and saved["window_loss"] > 0  # steps 5 and 6, not yet in a row
    resumed_cfg.train.max_steps = 12
    resumed = train(resumed_cfg, data, tmp_path / "split", resume_from=step_dir)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    a, b = _train_rows(tmp_path / "straight"), _train_rows(tmp_path / "split")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [4, 8, 12]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert all(r["tokens_per_s"] > 0 for r in b)


def test_early_stopping_and_refusing_to_overwrite(tmp_path, poems_txt):
    cfg = tiny_config(max_steps=0, patience=1, lr=5.0, eval_every=1, optimizer="sgd")
    t = train(cfg, [str(poems_txt)], tmp_path / "r")
    assert t.state.stopped == "early_stopping"
    with pytest.raises(TrainError, match="already holds a run"):
        train(tiny_config(), [str(poems_txt)], tmp_path / "r")
    with pytest.raises(TrainError, match="give a limit"):
        train(tiny_config(max_steps=0), [str(poems_txt)], tmp_path / "other")


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(tmp_path, poems_txt):
    run = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "tangshi",
        "train",
        "--data",
        str(poems_txt),
        "--out",
        str(run),
        "--preset",
        "default",
        "--cell",
        "gru",
        "--embedding-size",
        "8",
        "--hidden-size",
        "8",
        "--num-layers",
        "1",
        "--output",
        "full",
        "--batch-size",
        "2",
        "--max-steps",
        "100000",
        "--checkpoint-every",
        "3",
        "--eval-every",
        "1000",
        "--val-fraction",
        "0.2",
        "--test-fraction",
        "0",
        "--no-progress",
    ]
    env = {**os.environ, "TANGSHI_NO_MALLOC_TUNING": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(run.glob("step-*"))) < 2:
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _, step_dir, _, data = T.resume_plan(run)
    last = int(step_dir.name.split("-")[1])
    assert last >= 3 and last % 3 == 0
    for folder in run.glob("step-*"):  # every folder that has its final name is complete
        assert {"config.json", "vocab.json", "model.safetensors", "trainer.json", "trainer.safetensors"} <= {
            p.name for p in folder.iterdir()
        }
        load_file(str(folder / "model.safetensors"))
    out = subprocess.run(
        [sys.executable, "-m", "tangshi", "train", "--resume", str(run), "--max-steps", str(last + 4), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert f"at step {last + 4}" in out.stdout
    trainer = json.loads((run / f"step-{last + 4:06d}" / "trainer.json").read_text())
    assert trainer["state"]["step"] == last + 4


def test_csv_metrics_and_resume_trims_rows(tmp_path, poems_txt):
    cfg = tiny_config(metrics_format="csv", max_steps=6, checkpoint_every=3, eval_every=3)
    train(cfg, [str(poems_txt)], tmp_path / "c")
    lines = (tmp_path / "c" / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("kind,step,epoch") and len(lines) == 1 + 6 + 2
    shutil.rmtree(tmp_path / "c" / "step-000006")  # as if killed before the last checkpoint
    _, step_dir, resumed_cfg, data = T.resume_plan(tmp_path / "c")
    resumed_cfg.train.max_steps = 8
    train(resumed_cfg, data, tmp_path / "c", resume_from=step_dir)
    steps = [
        int(x.split(",")[1])
        for x in (tmp_path / "c" / "metrics.csv").read_text().splitlines()[1:]
        if x.startswith("train")
    ]
    assert steps == list(range(1, 9))


def test_decay_only_over_the_last_share():
    cfg = TrainConfig(lr=1.0, schedule="linear", decay_fraction=0.5, min_lr_ratio=0.0)
    assert [lr_at(cfg, 0, p) for p in (0.0, 0.4, 0.5, 0.75, 1.0)] == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.0])


def test_precision_choice_per_device():
    cpu = torch.device("cpu")
    assert D.autocast_dtype("fp32", cpu) is None
    with pytest.raises(DeviceError, match="--precision fp16 needs --device cuda"):
        D.autocast_dtype("fp16", cpu)
    if D.cpu_has_bf16():
        assert D.autocast_dtype("bf16", cpu) is torch.bfloat16
    else:
        with pytest.raises(DeviceError, match="no bf16 instructions"):
            D.autocast_dtype("bf16", cpu)


@pytest.mark.skipif(not D.cpu_has_bf16(), reason="this CPU has no bf16 instructions")
def test_bf16_adaptive_training_learns_and_saves_fp32(tmp_path, poems_txt):
    cfg = tiny_config(precision="bf16", max_steps=30, lr=2e-2, optimizer="adam")
    cfg.model.output, cfg.model.cutoffs, cfg.model.div_value = "adaptive", "20,40", 2.0
    t = train(cfg, [str(poems_txt)], tmp_path / "r")
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    assert t.model.adaptive and losses[-1] < losses[0] - 0.5
    ckpt = checkpoint.load(tmp_path / "r" / "best")
    assert all(p.dtype == torch.float32 for p in ckpt.model.parameters())
    report = t.report()
    assert report["peak_rss_mb"] > 10 and 0 <= report["outside_model_share"] < 1


def test_device_choice_without_and_with_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert D.resolve_device("auto").type == "cpu"
    with pytest.raises(DeviceError, match="--device cuda: no CUDA device is available"):
        D.resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert D.resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    cuda = torch.device("cuda")
    assert D.autocast_dtype("auto", cuda) is None and D.autocast_dtype("fp16", cuda) is torch.float16
    with pytest.raises(DeviceError, match="this GPU has no bf16"):
        D.autocast_dtype("bf16", cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert D.autocast_dtype("auto", cuda) is torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_training_learns_resumes_and_loads_on_cpu(tmp_path, poems_txt, precision):
    cfg = tiny_config(device="cuda", precision=precision, max_steps=30, lr=2e-2, optimizer="adam")
    cfg.model.cell = "lstm"
    t = train(cfg, [str(poems_txt)], tmp_path / "r")
    assert t.device.type == "cuda" and next(t.model.parameters()).is_cuda
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    assert losses[-1] < losses[0] - 0.5
    _, step_dir, resumed_cfg, data = T.resume_plan(tmp_path / "r")
    resumed_cfg.train.max_steps = 40
    assert train(resumed_cfg, data, tmp_path / "r", resume_from=step_dir).state.step == 40
    assert checkpoint.load(tmp_path / "r" / "best", device="cpu").model.head.weight.device.type == "cpu"


@pytest.mark.parametrize("scale", [0.01, 100.0])
def test_the_gradient_clip_is_torchs(scale):
    """Within the bound the gradients are left as they are (torch multiplies them by exactly 1), above
    it they are scaled as torch scales them; the norm is torch's either way."""
    from tangshi.training.train import clip_gradients

    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(30, 7)), torch.nn.Parameter(torch.randn(11))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    for a, b in zip(ours, theirs, strict=True):
        a.grad = torch.randn_like(a) * scale
        b.grad = a.grad.clone()
    before = [p.grad.clone() for p in ours]
    got, want = clip_gradients(ours, 1.0), torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert torch.equal(got, want)
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours, theirs, strict=True))
    assert all(torch.equal(a.grad, g) for a, g in zip(ours, before, strict=True)) == (scale < 1)
