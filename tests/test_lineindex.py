import pytest

from conftest import POEMS
from tangshi.data.lineindex import FILE, LineIndex
from tangshi.model import checkpoint
from tangshi.model.checkpoint import CheckpointError


def test_lines_of_the_corpus_are_found_and_others_not(tmp_path):
    index = LineIndex.of_texts([c for _, c in POEMS])
    assert "床前明月光" in index and "举头望明月" in index
    assert "床前明月白" not in index and "春风" not in index  # a changed line; a line too short to count
    assert index.copied("床前明月白，疑是地上霜。") == ["疑是地上霜"]
    index.save(tmp_path)
    again = LineIndex.load(tmp_path)
    assert again is not None and len(again) == len(index) and "白日依山尽" in again
    assert LineIndex.load(tmp_path / "nothing-here") is None


def test_training_ships_the_index_with_every_checkpoint(tiny_run):
    for folder in [tiny_run / "best", checkpoint.latest_step_dir(tiny_run)]:
        ck = checkpoint.load(folder)
        assert ck.lines is not None and "春眠不觉晓" in ck.lines


def test_an_unreadable_index_is_named(tiny_run):
    (tiny_run / "best" / FILE).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match=f"{FILE}: not a readable line index"):
        checkpoint.load(tiny_run / "best")


@pytest.mark.slow
def test_lineindex_imports_no_checkpoint_and_names_its_own_error(tmp_path):
    import ast
    import subprocess
    import sys

    import tangshi.data.lineindex as L

    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(ast.parse(open(L.__file__, encoding="utf-8").read()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert "tangshi.model.checkpoint" not in imported  # not even inside a function: no hidden cycle
    code = "import sys, tangshi.data.lineindex; print('tangshi.model.checkpoint' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    (tmp_path / FILE).write_bytes(b"not safetensors")
    with pytest.raises(L.LineIndexError, match=f"{FILE}: not a readable line index"):
        LineIndex.load(tmp_path)
    assert issubclass(L.LineIndexError, ValueError)


def test_a_large_corpus_keeps_32_bit_hashes(tmp_path, monkeypatch):
    import torch

    import tangshi.data.lineindex as L

    monkeypatch.setattr(L, "WIDE", 5)  # the POEMS have 48 lines: more than 5
    index = LineIndex.of_texts([c for _, c in POEMS])
    assert index.bits == 32 and int(index.hashes.max()) < 2**32 and int(index.hashes.min()) >= 0
    assert "床前明月光" in index and "床前明月白" not in index
    index.save(tmp_path)
    again = LineIndex.load(tmp_path)
    assert again is not None and again.bits == 32 and "白日依山尽" in again and len(again) == len(index)
    assert torch.equal(again.hashes, index.hashes)
    saved = L.load_file(str(tmp_path / FILE))
    n, low_bits = saved["ef_shape"].tolist()
    assert n == len(index) and saved["ef_low"].shape[0] == low_bits > 20  # 48 lines: 32 - log2(48) bits
    assert all(line in again for _, text in POEMS for line in L.split_lines(text) if len(line) >= L.MIN_CHARS)
    # the index of earlier versions (signed 32-bit hashes, sorted) still loads
    old = torch.tensor(sorted({L.line_hash(ln, 32) for _, t in POEMS for ln in L.split_lines(t) if len(ln) >= 4}))
    L.save_file({"hashes": old.to(torch.int32)}, str(tmp_path / FILE))
    assert torch.equal(LineIndex.load(tmp_path).hashes, index.hashes)
    broken = index.tensors() | {"ef_shape": torch.tensor([len(index) + 1, low_bits])}
    L.save_file(broken, str(tmp_path / FILE))
    with pytest.raises(L.LineIndexError, match=f"{FILE}: not a readable line index"):
        LineIndex.load(tmp_path)


def test_elias_fano_round_trips_many_hashes(tmp_path):
    import numpy as np
    import torch

    keys = np.unique(np.random.default_rng(0).integers(0, 2**32, 200_000))
    index = LineIndex(torch.from_numpy(keys.astype(np.int64)), 32)
    index.save(tmp_path)
    bits = np.log2(2**32 / len(keys)) + 2.5  # Elias–Fano: log2(U / n) + 2 bits a hash (64-bit: 64)
    assert (tmp_path / FILE).stat().st_size < len(keys) * bits / 8 + 10_000
    again = LineIndex.load(tmp_path)
    assert torch.equal(again.hashes, index.hashes) and again.bits == 32
    for keys in (np.array([], dtype=np.int64), np.array([0, 2**32 - 1], dtype=np.int64)):
        small = LineIndex(torch.from_numpy(keys), 32)
        small.save(tmp_path)
        assert torch.equal(LineIndex.load(tmp_path).hashes, small.hashes)
