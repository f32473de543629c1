"""The prosody checker: readings with their repairs, forms, templates, rhyme, tone scores, CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import TANG, need_shared_data
from tangshi.cli import main
from tangshi.prosody import audit, regular

CHUNWANG = "国破山河在，城春草木深。感时花溅泪，恨别鸟惊心。烽火连三月，家书抵万金。白头搔更短，浑欲不胜簪。"


def test_readings_through_variants_and_repairs():
    assert regular.readings("东") == {regular.Reading("平", "上平声一东")}  # simplified, found through 東
    assert regular.Reading("平", "下平声一先") in regular.readings("先")  # missing from the table's 一先
    assert regular.tones("啼") == {"平"} and regular.tones("溪") == {"平"}  # missing characters
    assert "平" in regular.tones("槎")  # listed as 仄 only
    assert regular.tones("看") == {"平", "仄"}  # a polyphone: a wildcard
    assert not any(ch.isascii() for ch in regular._table())  # the stray ASCII inside 入声十七洽 is skipped
    assert regular.readings("A") == frozenset()


def test_readings_the_guangyun_does_not_support_are_dropped():
    # 龍 is 平 (鍾) in the 廣韻 and nothing else: the table's 入声十四缉 reading of it is dropped
    assert regular.readings("龙") == regular.readings("龍") == {regular.Reading("平", "上平声二冬")}
    assert regular.Reading("仄", "入声十四缉") in regular._raw_table()["龍"]
    assert regular.tones("回") == regular.tones("其") == regular.tones("庭") == {"平"}  # the 集韻's 去 readings
    assert regular.Reading("仄", "入声十三职") in regular.readings("北")
    assert not any(r.group.startswith("去") for r in regular.readings("北"))  # not 去声十一队
    # kept: a tone class the 廣韻 gives the character under a form its notes name (彊 "或作強", 上),
    # under a 又音 (遲 "又音稺", 去), or under a form given by hand (攢 as 欑, 平)
    assert regular.Reading("仄", "上声二十二养") in regular.readings("强")
    assert regular.Reading("仄", "去声四寘") in regular.readings("迟")
    assert "平" in regular.tones("攒") and "平" in regular.tones("澌")
    # kept: readings only the 集韻 has that poets rhyme on (么 in 歌, 妖娆 in 萧)
    assert "下平声五歌" in regular.groups("么") and "下平声二萧" in regular.groups("娆")
    # a character the 廣韻 lacks keeps its readings (样 is another 廣韻 word, not 樣's form)
    assert regular.readings("样") == {regular.Reading("仄", "去声二十三漾")}
    assert regular.tones("看") == regular.tones("思") == {"平", "仄"}  # polyphones of the 廣韻 stay so


def test_the_dropped_readings_follow_the_rule():
    checked, dropped = audit.audit(regular._raw_table())
    data = json.loads((Path(audit.__file__).with_name(audit.DROPPED)).read_text("utf-8"))
    assert data["dropped"] == dropped and data["checked"] == checked > 10_000  # dropped.json is up to date
    assert data["dropped_readings"] == sum(map(len, dropped.values())) < 0.05 * checked
    assert dropped["龍"] == ["入声十四缉"] and "龍" in regular._table()


def test_the_rule_on_a_small_table():
    r = regular.Reading
    table = {
        "龍": {r("平", "上平声二冬"), r("仄", "入声十四缉")},  # 入: the 廣韻 has 龍 in 平 only
        "北": {r("仄", "入声十三职"), r("仄", "去声十一队")},  # 上去: the 廣韻 has 北 in 入 only
        "強": {r("平", "下平声七阳"), r("仄", "上声二十二养")},  # 上 through 彊 ("或作強")
        "𠀋": {r("平", "上平声一东")},  # not in the 廣韻: kept
    }
    assert audit.audit(table) == (7, {"龍": ["入声十四缉"], "北": ["去声十一队"]})
    groups = ("上平声一东", "下平声七阳", "上声一董", "去声一送", "入声一屋")
    assert [audit.group_class(g) for g in groups] == ["平", "平", "上去", "上去", "入"]


def test_missing_tshet_uinh_is_an_error_not_empty_readings(monkeypatch):
    monkeypatch.setitem(sys.modules, "tshet_uinh", None)  # import tshet_uinh now raises ImportError
    with pytest.raises(RuntimeError, match="tshet-uinh"):
        regular._guangyun("A")


def test_lines_and_forms():
    assert regular.split_lines("床前明月光（一作看月光），“疑是”地上霜。") == ["床前明月光", "疑是地上霜"]
    assert regular.classify(["白日依山尽", "黄河入海流", "欲穷千里目", "更上一层楼"]) == "五绝"
    assert regular.classify(regular.split_lines(CHUNWANG)) == "五律"
    assert regular.classify(["白日依山尽", "黄河入海流", "欲穷千里", "更上一层楼"]) == "other"
    assert regular.classify(["白日依山尽", "黄河入海流", "欲穷千里a", "更上一层楼"]) == "other"


def test_templates_follow_dui_and_nian():
    assert regular.template("a", 4) == ["a", "B", "b", "A"]
    assert regular.template("A", 8) == ["A", "B", "b", "A", "a", "B", "b", "A"]
    assert regular.template("b", 4) == ["b", "A", "a", "B"]
    assert regular.template("B", 8) == ["B", "A", "a", "B", "b", "A", "a", "B"]
    assert regular.line_pattern("a", 7) == "平平仄仄平平仄" and regular.line_pattern("B", 7) == "仄仄平平仄仄平"
    assert regular.checked_positions(5, strict=False) == [1, 3, 4] and regular.checked_positions(7, strict=False) == [
        1,
        3,
        5,
        6,
    ]


def test_check_a_regular_poem():
    r = regular.check(CHUNWANG)
    assert (r.form, r.rhyme, r.rhyme_group, r.first_line_rhymes) == ("五律", True, "下平声十二侵", False)
    assert r.template == "a" and r.relaxed == 1.0 and r.relaxed_ok and 0.85 < r.strict < 1
    assert 0 < r.wildcard < 0.5 and r.unknown == []
    assert r.actual[0] == "仄仄平平仄"


def test_rhyme_failures():
    # 时 (支) and 飞 (微): neighbouring groups mixed in one poem fail
    assert regular.rhyme_of(["白日依山尽", "春风入此时", "欲穷千里目", "孤鸿天外飞"])[0] is False
    # a 仄 final on an even line fails
    assert regular.rhyme_of(["白日依山尽", "黄河入海去", "欲穷千里目", "更上一层楼"])[0] is False
    ok, group, first = regular.rhyme_of(["青山横北郭", "白水绕东城", "此地一为别", "孤蓬万里征"])
    assert ok and group == "下平声八庚" and not first


def test_find_group_by_name_short_name_or_character():
    assert regular.find_group("下平声七阳") == regular.find_group("阳") == regular.find_group("陽") == "下平声七阳"
    assert regular.find_group("光") == "下平声七阳"
    assert regular.find_group("zz") is None
    assert len(regular.group_names()) == 30


def test_cli_check_texts_and_errors(capsys):
    assert main(["prosody", "check", CHUNWANG]) == 0
    out = capsys.readouterr().out
    assert "五律; rhymes in 下平声十二侵" in out and "仄仄平平仄" in out
    assert main(["prosody", "check", "--json", CHUNWANG]) == 0
    assert json.loads(capsys.readouterr().out)["relaxed"] == 1.0
    assert main(["prosody", "check", "no/such/file.txt"]) == 2
    assert "no/such/file.txt: no such file or folder" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduces_the_human_baseline_on_the_tang_corpus(capsys):
    need_shared_data()
    assert main(["prosody", "check", "--json", str(TANG)]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    baseline = {  # prosody.md: rhyme %, relaxed mean, relaxed = 1 %, strict mean
        "all regular": (89.6, 0.942, 66.5, 0.861),
        "五绝": (75.7, 0.873, 46.9, 0.818),
        "七绝": (93.8, 0.958, 78.5, 0.865),
        "五律": (89.0, 0.935, 58.3, 0.867),
        "七律": (92.3, 0.967, 75.6, 0.866),
    }
    for name, (rhyme, relaxed, full, strict) in baseline.items():
        r = rows[name]
        assert abs(100 * r["rhyme"] - rhyme) <= 2, name
        assert abs(r["relaxed_mean"] - relaxed) <= 0.02, name
        assert abs(100 * r["relaxed_full"] - full) <= 2, name
        assert abs(r["strict_mean"] - strict) <= 0.02, name
    assert abs(rows["all regular"]["poems"] - 38_155) < 200


@pytest.mark.parametrize("ch", ["日", "月", "山"])
def test_common_characters_have_one_tone(ch):
    assert len(regular.tones(ch)) == 1
