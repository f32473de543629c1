"""A newcomer's first commands (issue 38): errors found before the model is loaded (no torch where none
is needed), arguments that are not UTF-8, the poets of `tangshi authors`, long titles, a run folder given
as a checkpoint; and the load-time changes that keep poems identical."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tangshi.api import Poet, checkpoint_folder
from tangshi.cli import is_poet, main
from tangshi.config import ModelConfig
from tangshi.model.charrnn import CharRNN
from tangshi.model.checkpoint import CheckpointError, expected_shapes
from tangshi.options import MAX_TITLE, OptionError, WriteOptions

GBK_MOON = "月".encode("gbk").decode("utf-8", "surrogateescape")  # what Python makes of GBK bytes in argv


@pytest.mark.parametrize(
    "args, named",
    [
        (["write", GBK_MOON], "begin characters"),
        (["check", GBK_MOON], "poem text"),
        (["cipai", GBK_MOON], "the 词牌 query"),
        (["write", "月", "--title", GBK_MOON], "--title"),
        (["write", "月", "--keywords", "花", GBK_MOON], "--keywords"),
        (["write", "月", "--author", GBK_MOON], "--author"),
    ],
)
def test_an_argument_not_in_utf8_is_named_with_exit_2(args, named, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tangshi: error: {named}: not UTF-8 text (b'\\xd4\\xc2')"), err


@pytest.mark.parametrize(
    "args, message",
    [
        (["write", "moon"], "begin 'moon': 'm' is not a Chinese character (give e.g. 月); --theme takes"),
        (["write", "月", "--acrostic", "ab", "--form", "五绝"], "--acrostic 'ab': 'a' is not a Chinese character"),
        (["write", "月", "--cipai", "不存在牌"], "--cipai 不存在牌: no such 词牌"),
        (["write", "月", "--cipai", "浣溪沙", "--format", "9"], "format 9: 浣溪沙 has formats 1 to 6"),
        (["write", "月" * 17], "has 17 characters, at most 16"),
    ],
)
def test_requests_are_refused_before_the_model_is_loaded(args, message, capsys, monkeypatch):
    def no_load(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Poet, "load", no_load)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("tangshi: error:"), err


def test_a_run_folder_names_its_best_checkpoint(tiny_run, capsys):
    assert main(["write", "月", "--checkpoint", str(tiny_run)]) == 2
    err = capsys.readouterr().err
    assert f"{tiny_run}: missing config.json; a run folder: give --checkpoint {tiny_run / 'best'}" in err
    with pytest.raises(CheckpointError, match="its best checkpoint"):
        Poet.load(tiny_run)
    assert checkpoint_folder(tiny_run / "best") == tiny_run / "best"


def test_a_run_folder_without_best_names_its_latest_step(tmp_path):
    for step in ("step-5", "step-10"):
        (tmp_path / step).mkdir()
        (tmp_path / step / "config.json").write_text("{}", "utf-8")
    with pytest.raises(CheckpointError, match="give --checkpoint .*step-10 \\(its latest step\\)"):
        checkpoint_folder(tmp_path)


def test_section_headings_and_unknown_authors_are_no_poets():
    assert is_poet("李白") and is_poet("花蕊夫人徐氏")
    assert not any(map(is_poet, ["郊庙朝会歌辞", "相和歌辭", "近代曲辞", "无名氏", "佚名", ""]))


def test_titles_as_long_as_any_tang_title_are_taken():
    WriteOptions(title="题" * 250).validate()  # the longest Tang title has 250 characters
    with pytest.raises(OptionError, match=f"at most {MAX_TITLE} characters"):
        WriteOptions(title="题" * (MAX_TITLE + 1)).validate()
    with pytest.raises(OptionError, match="--theme"):
        WriteOptions(theme="月" * 33).validate()  # a theme is still a word or a sentence


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(cell="gru", vocab_size=40, embedding_size=8, hidden_size=8, num_layers=2),
        ModelConfig(cell="lstm", vocab_size=50, embedding_size=16, hidden_size=16, tie_weights=True),
        ModelConfig(cell="rnn", vocab_size=30, embedding_size=4, hidden_size=6, num_layers=3),
    ],
)
def test_expected_shapes_are_those_of_the_built_model(cfg):
    model = CharRNN(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if cfg.tie_weights:
        shapes.pop("head.weight")
    assert expected_shapes(cfg) == shapes


@pytest.mark.slow
def test_usage_errors_cipai_and_a_rule_check_import_no_torch():
    """`--help`, a usage error, `cipai` and `check` without suggestions run without importing torch."""
    code = (
        "import sys\nfrom tangshi.cli import main\n"
        "for args in (['write', '月', '--temperature', '0'], ['write', 'moon'], ['cipai', '浣溪沙'],\n"
        "             ['check', '床前明月光，疑是地上霜。举头望明月，低头思故乡。', '--suggest', '0'],\n"
        "             ['check', '白日依山尽，黄河入海流。欲穷千里目，更上一层楼。', '--json', '--suggest', '0'],\n"
        "             ['write', '月', '--cipai', '不存在牌']):\n"
        "    main(args)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
def test_the_rules_read_without_the_model_are_what_the_model_reads(capsys):
    poet = Poet.load()
    texts = (
        "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
        "白日依山尽",
        "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。",
    )
    for text in texts:
        assert main(["check", text, "--suggest", "0", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(poet.check(text, suggest=0)))


@pytest.mark.slow
def test_a_long_title_is_cut_to_what_the_model_reads_with_a_note():
    poet = Poet.load()
    title = "奉和圣制同二相已下群官乐游园宴" * 3
    cut = title[: poet.ckpt.config.data.max_title]
    long = poet.write("月", seed=4, title=title)
    assert long.notes == [f"--title: the model reads the first {len(cut)} characters of a title: {cut} "
                          f"(the rest, {len(title) - len(cut)} characters, is left out)"]  # fmt: skip
    assert long[0].text == poet.write("月", seed=4, title=cut)[0].text


@pytest.mark.slow
def test_the_next_line_table_is_the_one_the_pairs_make():
    from tangshi.generation.processors import table_rows

    poet = Poet.load()
    vocab, v = poet.vocab, len(poet.vocab)
    pairs = [(vocab.id(a), vocab.id(b), s) for a, b, s in poet.words.following() if a in vocab and b in vocab]
    rows, cols, values = zip(*pairs, strict=True)
    ids, values = torch.tensor([rows, cols]), torch.tensor(values, dtype=torch.float32)
    table = torch.sparse_coo_tensor(ids, values, (v, v), check_invariants=True)
    for made, want in zip(poet.following()[0], table_rows(table), strict=True):
        assert made.dtype == want.dtype and torch.equal(made, want)
    assert np.isfinite(poet.following()[0][2].numpy()).all()


@pytest.mark.slow
def test_authors_prints_a_header_and_no_section_heading(capsys):
    assert main(["authors"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "poet\ttraining poems" and len(lines) > 10
    assert all(is_poet(line.split("\t")[0]) for line in lines[1:])
    assert "郊庙朝会歌辞" not in out and "郊庙朝会歌辞" in err
    assert main(["authors", "--json"]) == 0
    assert "郊庙朝会歌辞" not in json.loads(capsys.readouterr().out)


def test_a_file_name_that_is_not_utf8_is_a_file_name(tmp_path, capsys):
    """Linux file names are bytes: a checkpoint folder so named is looked for, not refused as text."""
    assert main(["write", "月", "--checkpoint", str(tmp_path / GBK_MOON)]) == 2
    assert "no such checkpoint folder" in capsys.readouterr().err
