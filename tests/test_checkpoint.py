import json
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tangshi.model import checkpoint
from tangshi.model.checkpoint import CheckpointError


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

    from tangshi.model.checkpoint import SCALE, model_tensors, quantize_int8

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


def _set_model(folder, **fields):
    path = folder / "config.json"
    raw = json.loads(path.read_text("utf-8"))
    raw["model"].update(fields)
    path.write_text(json.dumps(raw), "utf-8")


def _nothing_allocated(monkeypatch):
    """Fail the test if a model is built off the meta device or a weights file is read."""
    real = checkpoint.CharRNN

    def meta_only(cfg):
        model = real(cfg)
        assert all(p.is_meta for p in model.parameters()), "a model was allocated before the check"
        return model

    monkeypatch.setattr(checkpoint, "CharRNN", meta_only)
    monkeypatch.setattr(checkpoint, "_read_tensors", lambda *a, **k: pytest.fail("weights read before the check"))


def test_a_config_too_big_for_memory_is_refused_before_allocating(tiny_run, monkeypatch):
    import resource
    import time

    folder = tiny_run / "best"
    _set_model(folder, hidden_size=60000, num_layers=50)
    _nothing_allocated(monkeypatch)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(
        CheckpointError,
        match=r"best/config.json: model.hidden_size 60000 x num_layers 50 \(vocab_size \d+, embedding_size 8\) "
        r"needs [\d.]+ GB of weights; this machine has [\d.]+ GB$",
    ):
        checkpoint.load(folder)
    assert time.perf_counter() - t0 < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KB: no gigabytes


@pytest.mark.parametrize(
    ("field", "value", "bound"),
    [
        ("hidden_size", 10**12, "1 and 65,536"),
        ("hidden_size", 10**30, "1 and 65,536"),
        ("embedding_size", 70_000, "1 and 65,536"),
        ("num_layers", 100_000, "1 and 64"),
        ("num_layers", 10_000, "1 and 64"),
        ("vocab_size", 10**9, "0 and 2,000,000"),
    ],
)
def test_sizes_in_config_json_are_bounded_before_anything_is_built(tiny_run, monkeypatch, field, value, bound):
    import time

    _set_model(tiny_run / "best", **{field: value})
    monkeypatch.setattr(checkpoint, "expected_shapes", lambda cfg: pytest.fail("built before the sizes were checked"))
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(tiny_run / "best")
    assert time.perf_counter() - t0 < 2
    assert str(e.value) == f"{tiny_run / 'best' / 'config.json'}: model.{field} must be between {bound}, got {value}"


def test_too_many_cutoffs_or_a_huge_div_value_are_refused(tiny_run):
    _set_model(tiny_run / "best", output="adaptive", cutoffs=",".join(map(str, range(1, 100_000))))
    with pytest.raises(
        CheckpointError, match=r"config.json: --cutoffs must be increasing integers \(up to 16\) .{,100}$"
    ):
        checkpoint.load(tiny_run / "best")
    _set_model(tiny_run / "best", output="adaptive", cutoffs="2", div_value=1e300)
    with pytest.raises(CheckpointError, match=r"--div-value must be between 1 and 1000, got 1e\+300"):
        checkpoint.load(tiny_run / "best")


def test_real_model_sizes_are_within_the_bounds():
    from tangshi.config import ModelConfig

    ModelConfig(hidden_size=4096, embedding_size=4096, num_layers=16, vocab_size=200_000).validate()


def test_the_memory_check_uses_this_machines_memory(tiny_run, monkeypatch):
    monkeypatch.setattr(checkpoint, "physical_memory", lambda: 1000)
    with pytest.raises(CheckpointError, match=r"needs 0.0 GB of weights; this machine has 0.0 GB"):
        checkpoint.load(tiny_run / "best")
    monkeypatch.setattr(checkpoint, "physical_memory", lambda: None)  # a system that does not say: no check
    checkpoint.load(tiny_run / "best")


def test_shapes_that_do_not_match_the_config_are_named_before_allocating(tiny_run, monkeypatch):
    folder = tiny_run / "best"
    _set_model(folder, hidden_size=16)  # the weights are for hidden_size 8
    _nothing_allocated(monkeypatch)
    with pytest.raises(
        CheckpointError, match=r"tensor rnn.weight_ih_l0 has shape \(24, 8\), config.json implies \(48, 8\)"
    ):
        checkpoint.load(folder)
    _set_model(folder, hidden_size=8, num_layers=2)
    with pytest.raises(CheckpointError, match=r"missing: rnn.bias_hh_l1, .*; unexpected: -"):
        checkpoint.load(folder)


def test_int8_scales_are_checked_from_the_header(tiny_run, tmp_path, monkeypatch):
    from tangshi.model.checkpoint import SCALE, model_tensors, quantize_int8

    folder = tmp_path / "int8"
    shutil.copytree(tiny_run / "best", folder)
    q = quantize_int8(model_tensors(checkpoint.load(folder).model))
    q["embed.weight" + SCALE] = q["embed.weight" + SCALE][:3].contiguous()
    save_file(q, str(folder / "model.safetensors"))
    _nothing_allocated(monkeypatch)
    with pytest.raises(CheckpointError, match=r"int8 tensor embed.weight has no per-row scale embed.weight:scale"):
        checkpoint.load(folder)


@pytest.mark.slow
def test_the_bundled_int8_model_loads():
    from importlib import resources

    ck = checkpoint.load(resources.files("tangshi") / "bundled")
    assert ck.config.model.output == "adaptive" and all(p.dtype == torch.float32 for p in ck.model.parameters())


def test_an_unreadable_line_index_is_a_checkpoint_error_naming_the_file(tiny_run):
    from tangshi.data.lineindex import FILE, LineIndexError

    (tiny_run / "best" / FILE).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match=f"best/{FILE}: not a readable line index") as e:
        checkpoint.load(tiny_run / "best")
    assert not isinstance(e.value, LineIndexError)
