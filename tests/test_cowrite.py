"""Co-writing: a person's poem read by the rules (what it breaks, in words, and characters that would
keep them) and alternatives for one line, in Python, on the command line and over HTTP."""

from __future__ import annotations

from functools import cache

import pytest
from fastapi.testclient import TestClient

from tangshi import Poet
from tangshi.options import OptionError
from tangshi.prosody import regular as prosody
from tangshi.serve.app import create_app

QUIET_NIGHT_WRONG = "床前明月光，疑是地上雪。举头望明月，低头思故乡。"  # 霜 -> 雪: line 2 no longer rhymes
SPRING_VIEW = "国破山河在，城春草木深。感时花溅泪，恨别鸟惊心。烽火连三月，家书抵万金。白头搔更短，浑欲不胜簪。"
CLIMB = (
    "风急天高猿啸哀，渚清沙白鸟飞回。无边落木萧萧下，不尽长江滚滚来。"
    "万里悲秋常作客，百年多病独登台。艰难苦恨繁霜鬓，潦倒新停浊酒杯。"
)


@cache
def poet() -> Poet:
    return Poet.load()


def test_explain_names_each_broken_rule_in_words():
    problems = prosody.explain(prosody.check(QUIET_NIGHT_WRONG))
    rhyme = [p for p in problems if p.rule == "rhyme"]
    assert len(rhyme) == 1 and (rhyme[0].line, rhyme[0].place, rhyme[0].char) == (2, 5, "雪")
    assert "下平声七阳" in rhyme[0].message and "仄" in rhyme[0].message
    tone = [p for p in problems if p.rule == "tone"]
    assert {(p.line, p.place) for p in tone} == {(2, 4), (2, 5), (3, 2)}
    assert all(p.rule in ("tone", "strict", "rhyme") for p in problems)
    assert [p.rule for p in prosody.explain(prosody.check("春眠不觉晓，处处闻啼鸟。"))] == ["form"]


def test_a_poem_that_keeps_the_rules_has_only_strict_notes_or_none():
    problems = prosody.explain(prosody.check(SPRING_VIEW))
    assert problems and all(p.rule == "strict" and p.place == 1 for p in problems)  # 一三五不论 only


@pytest.mark.slow
def test_suggestions_keep_the_rule_and_are_not_in_the_poem():
    checked = poet().check(QUIET_NIGHT_WRONG, suggest=5)
    rhyme = next(p for p in checked["problems"] if p["rule"] == "rhyme")
    chars = [s["char"] for s in rhyme["suggestions"]]
    assert len(chars) == 5 and "霜" in chars  # the poet's own character is among the likeliest
    assert all("下平声七阳" in prosody.groups(c) and c not in QUIET_NIGHT_WRONG for c in chars)
    scores = [s["log_likelihood"] for s in rhyme["suggestions"]]
    assert scores == sorted(scores, reverse=True)
    tone = next(p for p in checked["problems"] if (p["line"], p["place"]) == (3, 2))
    assert all(prosody.ZE in prosody.tones(s["char"]) for s in tone["suggestions"])
    assert "suggestions" not in poet().check(QUIET_NIGHT_WRONG, suggest=0)["problems"][0]


@pytest.mark.slow
def test_line_alternatives_keep_every_other_character_and_the_rules():
    alts = poet().lines(SPRING_VIEW, 3, num=6, seed=1)
    assert len(alts) == 6 and len({a["line"] for a in alts}) == 6
    original = prosody.split_lines(SPRING_VIEW)
    for a in alts:
        lines = prosody.split_lines(a["poem"])
        assert lines[:2] == original[:2] and lines[3:] == original[3:] and lines[2] == a["line"] != original[2]
        r = prosody.check(a["poem"])
        assert r.form == "五律" and r.rhyme and r.relaxed == 1.0
    whole = [a["log_likelihood"] for a in alts]
    assert whole == sorted(whole, reverse=True)
    assert sorted(a["prefix_rank"] for a in alts) == list(range(1, 7))
    assert [a["line"] for a in poet().lines(SPRING_VIEW, 3, num=6, seed=1)] == [a["line"] for a in alts]


@pytest.mark.slow
def test_line_alternatives_of_a_famous_poem_are_not_refused_for_its_own_lines():
    alts = poet().lines(CLIMB, 8, num=4, seed=2)  # every other line is in the corpus
    assert len(alts) == 4 and all(prosody.split_lines(a["poem"])[:7] == prosody.split_lines(CLIMB)[:7] for a in alts)


@pytest.mark.slow
def test_bad_requests_name_the_field():
    with pytest.raises(OptionError) as e:
        poet().lines(SPRING_VIEW, 9)
    assert e.value.field == "line"
    with pytest.raises(OptionError) as e:
        poet().lines("春眠不觉晓，处处闻啼鸟。", 1)
    assert e.value.field == "poem"
    with pytest.raises(OptionError) as e:
        poet().lines(SPRING_VIEW, 3, beam=4)
    assert e.value.field == "beam"
    with pytest.raises(OptionError) as e:
        poet().check("  ")
    assert e.value.field == "text"


@pytest.mark.slow
def test_the_commands(capsys):
    from tangshi.cli import main

    assert main(["check", QUIET_NIGHT_WRONG]) == 0
    out = capsys.readouterr().out
    assert "line 2 ends with '雪'" in out and "try:" in out
    assert main(["lines", "--poem", SPRING_VIEW, "--line", "3", "--num", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("whole poem") == 3
    assert main(["lines", "--poem", SPRING_VIEW, "--line", "0"]) == 2
    assert "--line 0" in capsys.readouterr().err


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app()) as c:
        yield c


@pytest.mark.slow
def test_http_check_and_lines(client):
    r = client.post("/v1/check", json={"text": QUIET_NIGHT_WRONG, "suggest": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["report"]["form"] == "五绝" and any(p["rule"] == "rhyme" for p in body["problems"])
    assert all(len(p["suggestions"]) == 3 for p in body["problems"])
    r = client.post("/v1/lines", json={"poem": SPRING_VIEW, "line": 3, "num": 4, "seed": 1})
    assert r.status_code == 200 and len(r.json()["alternatives"]) == 4
    r = client.post("/v1/lines", json={"poem": "春眠不觉晓，处处闻啼鸟。", "line": 1})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "poem"]
    r = client.post("/v1/lines", json={"poem": SPRING_VIEW, "line": 9})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "line"
    r = client.post("/v1/check", json={"text": ""})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "text"


@pytest.mark.slow
def test_line_alternatives_are_scored_in_chunks_alike(monkeypatch):
    import tangshi.api

    whole = poet().lines(SPRING_VIEW, 3, num=6, seed=1)
    monkeypatch.setattr(tangshi.api, "SCORE_CHUNK", 4)  # 10 candidates: chunks of 4, 4 and 2
    chunked = poet().lines(SPRING_VIEW, 3, num=6, seed=1)
    assert [a["line"] for a in chunked] == [a["line"] for a in whole]
    for a, b in zip(chunked, whole, strict=True):
        assert a["log_likelihood"] == pytest.approx(b["log_likelihood"], abs=1e-3)
        assert a["prefix_rank"] == b["prefix_rank"]
