"""The evaluation suite: generation metrics on hand-made poems, and `tangshi eval` end to end."""

from __future__ import annotations

import json

import pytest

from conftest import POEMS
from tangshi.cli import main
from tangshi.suite import Reference, _longest_repeat, poem_metrics


def test_metrics_of_hand_made_poems():
    ref = Reference.of(["床前明月光，疑是地上霜。"])
    texts = [
        "床前明月光，疑是地上雪。举头望明月，举头望明月。",  # a copied line, a repeated line
        "春风春风春，花落知多少。",  # a character twice in a line
    ]
    m = poem_metrics(texts, [True, False], ref)
    lines = ["床前明月光", "疑是地上雪", "举头望明月", "举头望明月", "春风春风春", "花落知多少"]
    chars = "".join(lines)
    assert m["poems"] == 2 and m["length"] == (20 + 10) / 2
    assert m["distinct_1"] == round(len(set(chars)) / len(chars), 4)
    bigrams = [ln[i : i + 2] for ln in lines for i in range(4)]
    assert m["distinct_2"] == round(len(set(bigrams)) / len(bigrams), 4)
    assert m["line_repeat"] == round(1 / 6, 4)  # the fourth line repeats the third
    assert m["char_repeat_lines"] == round(1 / 6, 4)  # 春风春风春
    assert m["copied_lines"] == round(1 / 6, 4)  # 床前明月光
    windows = [ln[i : i + 4] for ln in lines for i in range(2)]
    copied = sum(w in {"床前明月", "前明月光", "疑是地上", "是地上霜"} for w in windows)
    assert m["copied_windows"] == round(copied / len(windows), 4)
    assert m["end_rate"] == 0.5
    assert m["longest_repeat"] == (5 + 3) / 2  # 举头望明月 twice; 春风春 twice, overlapping


def test_longest_repeat():
    assert _longest_repeat("abcabc") == 3
    assert _longest_repeat("aaaa") == 3  # overlapping occurrences count
    assert _longest_repeat("abcd") == 0


def test_eval_suite_end_to_end(tiny_run, poems_txt, capsys, tmp_path):
    args = ["eval", "--checkpoint", f"tiny={tiny_run / 'best'}", "--data", str(poems_txt), "--split", "all"]
    assert main([*args, "--poems", "4", "--settings", "free,begin,五绝", "--json", "--plots", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out)
    (row,) = result["models"]
    assert row["model"] == "tiny" and row["poems"] == len(POEMS) and row["loss"] > 0
    assert abs(row["bits_per_char"] - row["loss"] / 0.6931) < 1e-3
    assert set(row["settings"]) == {"free", "begin", "五绝"} and row["settings"]["五绝"]["form"] == 1.0
    assert result["human"]["settings"]["human"]["poems"] == 4
    assert {p.rsplit("/", 1)[-1] for p in result["plots"]} == {
        "loss_time.png",
        "loss_steps.png",
        "compliance.png",
        "diversity.png",
    }
    assert main([*args, "--poems", "0"]) == 0
    table = capsys.readouterr().out
    assert "| tiny | gru |" in table and "human (all split)" in table


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--settings", "free,haiku"], "unknown setting 'haiku'"), (["--poems", "-1"], "--poems must be >= 0")],
)
def test_eval_bad_options(tiny_run, poems_txt, capsys, extra, message):
    rc = main(["eval", "--checkpoint", str(tiny_run / "best"), "--data", str(poems_txt), *extra])
    assert rc == 2 and message in capsys.readouterr().err
