import json
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tangshi import checkpoint
from tangshi.checkpoint import CheckpointError


def test_roundtrip_gives_the_same_outputs_without_pickle(tiny_run, monkeypatch):
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load used"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("pickle used"))
    a = checkpoint.load(tiny_run / "best")
    b = checkpoint.load(tiny_run / "best")
    ids = torch.tensor([[2, 5, 6, 7]])
    assert torch.equal(a.model(ids)[0], b.model(ids)[0])
    assert a.vocab.tokens == b.vocab.tokens and a.config == b.config


def test_missing_file_is_named(tiny_run):
    (tiny_run / "best" / "vocab.json").unlink()
    with pytest.raises(CheckpointError, match="missing vocab.json"):
        checkpoint.load(tiny_run / "best")


def test_vocab_size_mismatch_names_both_sizes(tiny_run):
    path = tiny_run / "best" / "vocab.json"
    tokens = json.loads(path.read_text("utf-8"))["tokens"]
    path.write_text(json.dumps({"tokens": tokens[:-1]}), "utf-8")
    with pytest.raises(
        CheckpointError, match=rf"vocab.json has {len(tokens) - 1} tokens but config.json says vocab_size {len(tokens)}"
    ):
        checkpoint.load(tiny_run / "best")


def test_tensor_mismatch_is_named(tiny_run):
    path = tiny_run / "best" / "model.safetensors"
    tensors = load_file(str(path))
    tensors["embed.weight"] = tensors["embed.weight"][:, :3].contiguous()
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match="tensor embed.weight has shape"):
        checkpoint.load(tiny_run / "best")
    del tensors["embed.weight"]
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match="missing: embed.weight"):
        checkpoint.load(tiny_run / "best")


def test_a_pickle_file_is_refused(tiny_run):
    (tiny_run / "best" / "model.safetensors").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        checkpoint.load(tiny_run / "best")


def test_interrupted_swap_is_recovered(tiny_run):
    best = tiny_run / "best"
    best.rename(tiny_run / ".old-best")  # killed between the two renames
    (tiny_run / ".tmp-best-xyz").mkdir()  # and a half-written folder
    checkpoint.recover(tiny_run)
    assert best.is_dir() and not (tiny_run / ".tmp-best-xyz").exists()
    checkpoint.load(best)


def test_resume_needs_trainer_state(tiny_run):
    with pytest.raises(CheckpointError, match="missing trainer.json"):
        checkpoint.load(tiny_run / "best", with_trainer=True)


def test_int8_weights_load_back_close_to_float32(tiny_run, tmp_path):
    from safetensors.torch import save_file

    from tangshi.checkpoint import SCALE, model_tensors, quantize_int8

    ck = checkpoint.load(tiny_run / "best")
    folder = tmp_path / "int8"
    shutil.copytree(tiny_run / "best", folder)
    q = quantize_int8(model_tensors(ck.model))
    assert q["embed.weight"].dtype == torch.int8 and ("embed.weight" + SCALE) in q
    save_file(q, str(folder / "model.safetensors"))
    back = checkpoint.load(folder)
    for name, t in model_tensors(ck.model).items():
        got = model_tensors(back.model)[name]
        assert got.dtype == torch.float32
        assert torch.allclose(got, t, atol=float(t.abs().max()) / 127 + 1e-3), name
    del q["embed.weight" + SCALE]
    save_file(q, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="no per-row scale"):
        checkpoint.load(folder)
