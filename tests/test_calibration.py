"""Frequency calibration: the bias that brings the characters a model writes to human poems' rates."""

from __future__ import annotations

import math
import shutil
from functools import cache

import pytest
import torch

from tangshi import Poet, api
from tangshi.cli import main
from tangshi.evaluation.calibration import FILE, Calibration, calibrate, character_counts, gap, log_ratio
from tangshi.model.checkpoint import CheckpointError
from tangshi.prosody import regular as prosody

BEGINS = list("春秋山水风月花云江夜")


@cache
def bundled() -> Poet:
    return Poet.load()


def test_the_log_ratio_of_rates_shrinks_rare_characters_toward_zero():
    human = torch.tensor([0, 0, 0, 0, 1000.0, 1000.0, 2.0, 0.0])
    written = torch.tensor([0, 0, 0, 0, 3000.0, 1000.0, 0.0, 0.0])
    r = log_ratio(written, human)
    assert r[4] == pytest.approx(math.log(3005 / 2003), rel=1e-5)  # 1.5 times its rate
    assert r[5] == pytest.approx(math.log(1005 / 2003), rel=1e-5)  # half its rate
    assert -1 < r[6] < 0  # seen twice by a human, never written: a small step, not -inf
    assert r[:4].eq(0).all() and r[7] == 0  # on neither side: left alone
    assert gap(human, human) == 0 and gap(written, human) > 0


@pytest.mark.slow
def test_characters_are_counted_without_the_line_breaks_and_specials():
    vocab = bundled().vocab
    counts = character_counts(["春风，春雨。", "<unk>"], vocab)
    assert counts[vocab.id("春")] == 2 and counts[vocab.id("风")] == 1
    assert counts[vocab.id("，")] == 0 and counts[:4].eq(0).all() and counts.sum() == 4


def rate(texts: list[str], ch: str) -> float:
    body = "".join(c for t in texts for c in t if prosody.is_han(c))
    return body.count(ch) / len(body)


@pytest.mark.slow
def test_calibration_brings_an_overused_character_down_and_an_underused_one_up(tmp_path):
    """Human poems that never use 风 and use 云 where the model would write 风: the bias must lower 风
    and raise 云, and the written rates must move toward them."""
    poet = Poet.load()
    own = poet.calibration.bias("唐诗").clone()  # the bundled model's own calibration
    written = [p.text for p in poet.write(BEGINS * 12, form="五律", seed=50, calibration=0, beam=0)]  # as trained
    human = [t.replace("风", "云") for t in written]
    before = [p.text for p in poet.write(BEGINS * 4, form="五律", seed=7, calibration=0, beam=0)]
    bias, log = calibrate(poet, human, "唐诗", poems=60, rounds=2, eta=1.0, seed=3)
    v = poet.vocab
    assert bias[v.id("风")] < -0.5 and bias[v.id("云")] > 0.1
    assert [r["round"] for r in log] == [1, 2] and log[0]["overused"]["风"] > 2
    assert torch.equal(poet.calibration.bias("唐诗"), own)  # the bias is passed along, the checkpoint's kept
    after = [p.text for p in poet.write(BEGINS * 4, form="五律", seed=7, calibration_bias=bias, beam=0)]
    assert rate(after, "风") < 0.5 * rate(before, "风")
    for text in after:  # the form keeps every guarantee
        r = prosody.check(text)
        assert r.form == "五律" and r.rhyme and r.relaxed == 1.0


def calibrated_copy(tmp_path, bias: torch.Tensor) -> Poet:
    folder = tmp_path / "ck"
    shutil.copytree(api.bundled_path(), folder)
    Calibration({"唐诗": bias}).save(folder)
    return Poet.load(folder)


@pytest.mark.slow
def test_a_checkpoints_calibration_applies_when_sampling_by_default_and_not_in_beam_search(tmp_path):
    v = bundled().vocab
    bias = torch.zeros(len(v))
    bias[v.id("月")] = -20.0  # never the moon after the first character
    poet = calibrated_copy(tmp_path, bias)
    assert (tmp_path / "ck" / FILE).is_file() and torch.equal(poet.calibration.bias("唐诗"), bias)
    plain = [p.text for p in bundled().write(BEGINS, form="七绝", seed=4, beam=0, calibration=0, cohesion=0.8)]
    off = [p.text for p in poet.write(BEGINS, form="七绝", seed=4, beam=0, calibration=0, cohesion=0.8)]
    assert off == plain  # weight 0: the checkpoint writes as without the file
    on = [p.text for p in poet.write(BEGINS, form="七绝", seed=4, beam=0)]
    assert on != plain and all("月" not in t[1:] for t in on)
    given = bundled().write(BEGINS, form="七绝", seed=4, beam=0, calibration_bias=bias)  # the same bias, passed along
    assert [p.text for p in given] == on
    assert sum("月" in t[1:] for t in plain) > 0
    titled = poet.write(BEGINS[:3], form="七绝", seed=4, beam=0, title="秋夜")  # a topic: not calibrated unless asked
    assert [p.text for p in titled] == [
        p.text for p in bundled().write(BEGINS[:3], form="七绝", seed=4, beam=0, title="秋夜", calibration=0)
    ]
    asked = poet.write(BEGINS[:3], form="七绝", seed=4, beam=0, title="秋夜", calibration=1)
    assert all("月" not in p.text[1:] for p in asked)
    beam = poet.write("春", form="五绝", seed=4)[0].text  # the default beam: not calibrated
    assert beam == bundled().write("春", form="五绝", seed=4)[0].text
    song = poet.write(BEGINS[:3], form="七绝", seed=4, beam=0, genre="宋诗")  # no bias for 宋诗: as before
    assert [p.text for p in song] == [
        p.text for p in bundled().write(BEGINS[:3], form="七绝", seed=4, beam=0, genre="宋诗")
    ]


@pytest.mark.slow
def test_a_calibration_of_the_wrong_size_is_refused_naming_the_file(tmp_path):
    folder = tmp_path / "ck"
    shutil.copytree(api.bundled_path(), folder)
    Calibration({"唐诗": torch.zeros(7)}).save(folder)
    with pytest.raises(CheckpointError, match=r"calibration\.safetensors.*7.*tangshi calibrate"):
        Poet.load(folder).write("春", seed=1)


def test_the_calibrate_command_writes_the_file_and_names_bad_options(tiny_run, poems_txt, capsys):
    ck = tiny_run / "best"
    assert main(["calibrate", "--checkpoint", str(ck), "--data", str(poems_txt), "--genre", "唐诗"]) == 2
    assert "--genre 唐诗: this model knows no genres" in capsys.readouterr().err
    assert not (ck / FILE).exists()
    assert main(["calibrate", "--checkpoint", str(ck), "--data", str(poems_txt), "--poems", "0"]) == 2
    assert "--poems" in capsys.readouterr().err
    args = ["calibrate", "--checkpoint", str(ck), "--data", str(poems_txt), "--poems", "6", "--rounds", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "round 1/1" in out and "gap from human rates" in out and str(ck / FILE) in out
    cal = Calibration.load(ck, len(Poet.load(ck).vocab))
    assert cal is not None and cal.settings["model"]["poems"] == 6 and cal.bias("").abs().sum() > 0
