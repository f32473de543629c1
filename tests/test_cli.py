import json
import subprocess
import sys

import pytest

from tangshi.cli import main


def run(*args: str, check_rc: int | None = 0) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "tangshi", *args], capture_output=True, text=True)
    if check_rc is not None:
        assert out.returncode == check_rc, out.stderr
    assert "Traceback" not in out.stderr
    return out


def test_data_stats_prints_counts(poems_txt, capsys):
    assert main(["data", "stats", str(poems_txt), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["read"] == stats["kept"] == 12 and stats["dropped_long"] == 0
    assert main(["data", "stats", str(poems_txt)]) == 0
    out = capsys.readouterr().out
    assert "kept" in out and "length histogram" in out


def test_write_json_lines_and_pretty_output(tiny_run, capsys):
    ck = str(tiny_run / "best")
    assert main(["write", "月", "山", "--checkpoint", ck, "--seed", "3", "--num", "2", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["begin"] for r in rows] == ["月", "月", "山", "山"]
    assert all({"text", "lines", "begin", "seed"} <= set(r) for r in rows)
    assert main(["write", "月", "--checkpoint", ck, "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == "\n".join(rows[0]["lines"])


def test_eval_json(tiny_run, poems_txt, capsys):
    args = ["eval", "--checkpoint", str(tiny_run / "best"), "--data", str(poems_txt), "--split", "all"]
    assert main([*args, "--poems", "0", "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)["models"]
    assert {"loss", "perplexity", "bits_per_char", "tokens", "poems"} <= set(report) and report["poems"] == 12


@pytest.mark.parametrize(
    "args, message",
    [
        (["write", "龘", "--checkpoint", "{run}/best"], "begin character '龘' is not in the model's vocabulary"),
        (
            ["write", "月", "--checkpoint", "{run}/best", "--temperature", "0"],
            "--temperature must be > 0 and <= 10, got 0",
        ),
        (["write", "月", "--checkpoint", "{run}/nowhere"], "no such checkpoint folder"),
        (["eval", "--checkpoint", "{run}/best", "--data", "{run}/missing.txt"], "missing.txt: no such file or folder"),
        (["train", "--data", "{run}/missing.txt", "--out", "{run}/x"], "missing.txt: no such file or folder"),
        (["train", "--resume", "{run}/best", "--max-steps", "3"], "missing trainer.json"),
        (["train", "--data", "x", "--out", "{run}/y", "--preset", "huge"], "unknown preset 'huge'"),
        (["train", "--data", "x", "--out", "{run}/y", "--cell", "tcn"], "--cell must be one of rnn, lstm, gru"),
    ],
)
def test_bad_input_gets_a_message_and_exit_2(tiny_run, args, message, capsys):
    rc = main([a.replace("{run}", str(tiny_run)) for a in args])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.startswith("tangshi: error:")


@pytest.mark.slow
def test_non_utf8_corpus_from_the_real_command_line(tmp_path):
    bad = tmp_path / "poems.txt"
    bad.write_bytes("题:床前明月光".encode("gb18030"))
    out = run("data", "stats", str(bad), check_rc=2)
    assert "poems.txt: not UTF-8 text" in out.stderr


@pytest.mark.slow
def test_presets_list_and_help():
    out = run("presets").stdout
    assert "seed-tf" in out and "seed-pytorch" in out and "default" in out
    assert "--hidden-size" in run("train", "--help").stdout


def test_diversity_needs_counts_and_index_adds_them_to_an_older_checkpoint(tiny_run, poems_txt, capsys):
    ck = tiny_run / "best"
    vocab = json.loads((ck / "vocab.json").read_text("utf-8"))
    assert len(vocab["counts"]) == len(vocab["tokens"])  # training keeps them
    (ck / "vocab.json").write_text(json.dumps({"tokens": vocab["tokens"]}, ensure_ascii=False), "utf-8")
    assert main(["write", "月", "--checkpoint", str(ck), "--seed", "3", "--diversity", "0.3"]) == 2
    assert "tangshi index --checkpoint" in capsys.readouterr().err
    (ck / "words.safetensors").unlink(missing_ok=True)
    assert main(["index", "--checkpoint", str(ck), "--data", str(poems_txt)]) == 0
    assert json.loads((ck / "vocab.json").read_text("utf-8"))["counts"] == vocab["counts"]
    assert (ck / "words.safetensors").is_file()  # the word statistics of plans
    capsys.readouterr()
    assert main(["write", "月", "--checkpoint", str(ck), "--seed", "3", "--diversity", "0.3", "--json"]) == 0
    first = capsys.readouterr().out
    assert main(["write", "月", "--checkpoint", str(ck), "--seed", "3", "--diversity", "0.3", "--json"]) == 0
    assert capsys.readouterr().out == first  # seeded: the same poem


@pytest.mark.slow
def test_a_poem_cut_at_the_length_limit_says_so(capsys):
    assert main(["write", "月", "--max-length", "6", "--seed", "1", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["ended"] is False and len(json.loads(captured.out)["text"]) == 6
    assert "tangshi: note: poem 1 was cut at --max-length 6 before its end" in captured.err
    assert main(["write", "月", "--max-length", "6", "--seed", "1", "--ignore-end"]) == 0
    assert "cut at" not in capsys.readouterr().err  # seed-tf style asks for exactly that length


@pytest.mark.slow
def test_an_acrostic_with_fewer_heads_than_lines_is_refused(capsys):
    assert main(["write", "--acrostic", "春夏秋", "--form", "五绝"]) == 2
    assert "acrostic '春夏秋' has 3 heads but a 五绝 has 4 lines: give one head a line" in capsys.readouterr().err
    assert "fewer heads are refused" in " ".join(run("write", "--help").stdout.split())


@pytest.mark.slow
def test_poems_are_streamed_in_order_as_they_are_finished():
    from tangshi import Poet

    poet = Poet.load()
    chunks = list(poet.stream(["月", "山"], num=40, seed=3, max_length=12, beam=0))  # sampled: in chunks
    assert [len(c) for c in chunks] == [32, 8, 32, 8]
    assert [p.text for c in chunks for p in c] == [
        p.text for p in poet.write(["月", "山"], num=40, seed=3, max_length=12, beam=0)
    ]
    searched = list(poet.stream(["月", "山"], num=3, seed=3, max_length=12))  # a beam's poems: one search a begin
    assert [len(c) for c in searched] == [3, 3]
    assert [p.text for c in searched for p in c] == [
        p.text for p in poet.write(["月", "山"], num=3, seed=3, max_length=12)
    ]


@pytest.mark.slow
def test_help_shows_each_default_once():
    for command in ("train", "write"):
        assert "(default: None)" not in run(command, "--help").stdout


def test_index_titles_only_rebuilds_the_title_index_and_keeps_the_rest(tiny_run, poems_txt, tmp_path, capsys):
    from tangshi.data.corpus import load_corpus
    from tangshi.data.words import WordStats
    from tangshi.model import checkpoint

    ck = tiny_run / "best"
    (ck / "words.safetensors").unlink(missing_ok=True)
    assert main(["index", "--checkpoint", str(ck), "--data", str(poems_txt), "--titles-only"]) == 2
    assert f"{ck} has no words.safetensors" in capsys.readouterr().err
    assert main(["index", "--checkpoint", str(ck), "--data", str(poems_txt)]) == 0
    before = WordStats.load(ck)
    lines = poems_txt.read_text("utf-8").splitlines()
    some = tmp_path / "some.txt"
    some.write_text("\n".join(lines[: len(lines) // 2]) + "\n", "utf-8")
    assert main(["index", "--checkpoint", str(ck), "--data", str(some), "--titles-only"]) == 0
    after = WordStats.load(ck)
    corpus = load_corpus([str(some)], checkpoint.load(ck).config.data)
    assert after.kin.titles == [t for t in corpus.titles_of("train") if t] != before.kin.titles
    assert after.words == before.words and after.poem.ids.tolist() == before.poem.ids.tolist()
    untitled = tmp_path / "untitled.txt"
    untitled.write_text("\n".join(ln.split(":", 1)[1] for ln in lines) + "\n", "utf-8")
    assert main(["index", "--checkpoint", str(ck), "--data", str(untitled), "--titles-only"]) == 2
    assert "have no titles" in capsys.readouterr().err
