"""`tangshi check`'s suggestions ranked by the corpus statistics without torch (`prosody.suggest`, issue 38),
and the model's ranking behind `--rank model`."""

import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from tangshi.cli import main
from tangshi.prosody import regular, suggest

QUIET_NIGHT = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"  # line 2 place 4 '上' is 仄 where 平 is needed
DRIFTING = "白日依山尽，黄河入海去。欲穷千里目，更上一层楼。"  # line 2 ends in 仄 '去', the rhyme is 尤


def write_words(folder, words, counts, neighbours=None):
    """A words.safetensors with the tensors `prosody.suggest` reads: counts and poem neighbour lists."""
    neighbours = neighbours or {}
    (folder / "config.json").write_text(json.dumps({"data": {"script": "simplified"}}))
    index = {w: i for i, w in enumerate(words)}
    rows = [[index[n] for n in neighbours.get(w, ())] for w in words]
    save_file(
        {
            "counts": np.array([counts[w] for w in words], dtype=np.int32),
            "poem_sizes": np.array([len(r) for r in rows], dtype=np.uint8),
            "poem_ids": np.array([i for r in rows for i in r], dtype=np.uint16),
            "poem_ppmi": np.full(sum(len(r) for r in rows), 5.0, dtype=np.float16),
        },
        str(folder / suggest.FILE),
        metadata={"words": json.dumps(words, ensure_ascii=False)},
    )
    suggest._load.cache_clear()
    return folder


@pytest.fixture
def stats_folder(tmp_path):
    counts = {"寒": 900, "秋": 300, "风": 200, "上": 5000, "霜": 400, "流": 500, "愁": 800, "游": 100, "海": 700}
    counts |= {"秋霜": 120, "风霜": 40, "上霜": 30, "海流": 60}
    return write_words(tmp_path, list(counts), counts, {"愁": ["海"]})


def problem_at(text, line, place, rule=None):
    report = regular.check(text)
    found = [p for p in regular.explain(report) if (p.line, p.place) == (line, place) and rule in (None, p.rule)]
    return report, found[0]


def test_the_words_a_character_makes_with_its_neighbours_rank_it(stats_folder):
    stats = suggest.CorpusStats.load(stats_folder)
    report, p = problem_at(QUIET_NIGHT, 2, 4)
    assert (p.char, p.need) == ("上", regular.PING)
    got = suggest.suggest(stats, report.lines, p, 5)
    chars = [s["char"] for s in got]
    # 秋霜 is the commoner word with 霜, 风霜 the other; 寒, commoner than both, makes no word there
    assert chars[:3] == ["秋", "风", "寒"]
    assert all(regular.PING in regular.tones(c) for c in chars) and "上" not in chars
    assert not set(chars) & set(QUIET_NIGHT)
    assert [s["score"] for s in got] == sorted((s["score"] for s in got), reverse=True)
    assert len(suggest.suggest(stats, report.lines, p, 2)) == 2


def test_a_rhyme_suggestion_rhymes_in_the_poems_group(stats_folder):
    stats = suggest.CorpusStats.load(stats_folder)
    report, p = problem_at(DRIFTING, 2, 5, "rhyme")
    chars = [s["char"] for s in suggest.suggest(stats, report.lines, p, 5)]
    assert chars[0] == "流"  # 海流: the word with the character before
    assert chars[1] == "愁"  # no word, but a neighbour of 海 in a poem
    assert chars[2:] == ["秋", "游"]  # by their counts; 寒 风 霜 are 平 in other groups
    assert all(p.need in regular.groups(c) for c in chars)


def test_the_cli_ranks_by_the_corpus_by_default(stats_folder, capsys):
    assert main(["check", QUIET_NIGHT, "--checkpoint", str(stats_folder), "--json"]) == 0
    problems = json.loads(capsys.readouterr().out)["problems"]
    tone = next(p for p in problems if (p["line"], p["place"]) == (2, 4))
    assert [s["char"] for s in tone["suggestions"]][:2] == ["秋", "风"]
    assert main(["check", QUIET_NIGHT, "--checkpoint", str(stats_folder), "--suggest", "1"]) == 0
    assert "(try: 秋)" in capsys.readouterr().out


def test_missing_or_broken_word_statistics_are_named(tmp_path, capsys):
    suggest._load.cache_clear()
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "config.json").write_text(json.dumps({"data": {"script": "simplified"}}))
    assert main(["check", QUIET_NIGHT, "--checkpoint", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "no config.json, not a checkpoint folder" in err and f"give --checkpoint {tmp_path / 'best'}" in err
    (tmp_path / "config.json").write_text(json.dumps({"data": {"script": "simplified"}}))
    assert main(["check", QUIET_NIGHT, "--checkpoint", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "words.safetensors: no word statistics" in err and "--rank model" in err and "Traceback" not in err
    (tmp_path / suggest.FILE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    suggest._load.cache_clear()
    assert main(["check", QUIET_NIGHT, "--checkpoint", str(tmp_path)]) != 0
    assert "unreadable word statistics" in capsys.readouterr().err
    # a rule check with nothing to suggest needs no statistics
    assert main(["check", QUIET_NIGHT, "--checkpoint", str(tmp_path), "--suggest", "0"]) == 0


@pytest.mark.slow
def test_suggestions_of_the_bundled_statistics_keep_the_rule_without_torch():
    code = (
        "import json, sys\nfrom tangshi.cli import main\n"
        f"main(['check', {QUIET_NIGHT!r}, {DRIFTING!r}, '--json'])\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    poems = [json.loads(line) for line in out.stdout.splitlines()]
    placed = [(poem, p) for poem in poems for p in poem["problems"] if p["place"]]
    assert len(placed) >= 4
    for poem, p in placed:
        chars = [s["char"] for s in p["suggestions"]]
        assert len(chars) == 5 and not set(chars) & set("".join(poem["report"]["lines"]))
        for c in chars:
            assert p["need"] in (regular.groups(c) if p["rule"] == "rhyme" else regular.tones(c))


@pytest.mark.slow
def test_rank_model_ranks_by_the_whole_poems_likelihood(capsys):
    assert main(["check", DRIFTING, "--rank", "model", "--suggest", "3", "--json"]) == 0
    problems = json.loads(capsys.readouterr().out)["problems"]
    rhyme = next(p for p in problems if p["rule"] == "rhyme")
    scores = [s["log_likelihood"] for s in rhyme["suggestions"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert all(rhyme["need"] in regular.groups(s["char"]) for s in rhyme["suggestions"])
