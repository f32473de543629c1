"""Variants OpenCC's t2s leaves, written in their GB 2312 form (data/standard.py, decode.finish)."""

from __future__ import annotations

from tangshi.data.standard import HAND, _no_worse, gb2312, poem_map, standard_form, standard_map, to_standard
from tangshi.generation.decode import Poem, finish
from tangshi.options import WriteOptions
from tangshi.prosody import regular as prosody


def test_forms_from_opencc_and_hand_list():
    assert standard_form("飜") == "翻"  # OpenCC t2jp
    assert standard_form("粧") == "妆"  # OpenCC hk2s
    assert standard_form("髪") == "发"  # OpenCC jp2t, then t2s
    assert standard_form("鴈") == "雁" and standard_form("猨") == "猿" and standard_form("𬬻") == "炉"
    assert standard_form("雁") == "雁" and standard_form("湲") == "湲"  # standard already; no standard form


def test_hand_list_writes_only_gb2312():
    assert all(gb2312(form) and not gb2312(ch) for ch, form in HAND.items())


def test_mapped_where_readings_hold():
    assert to_standard("鴈飞猨啼牋") == "雁飞猿啼笺"
    assert to_standard("疎影横斜") == "疏影横斜"  # 疏 reads 平 鱼 as 疎 does (and more)


def test_kept_where_tone_or_rhyme_would_change():
    # 櫂 rhymes in 去声十九效; the table gives 棹 no rhyme group: a rhyme could break
    assert standard_form("櫂") == "棹" and to_standard("櫂") == "櫂"
    # 麤 is 平 (七虞); the table reads 粗 only 仄
    assert to_standard("麤") == "麤"


def test_no_repeat_made():
    assert to_standard("鴈雁") == "鴈雁"  # 鴈 -> 雁 would repeat 雁
    assert to_standard("飜繙") == "飜繙"  # both would be 翻
    assert standard_map("飜繙鴈") == {"鴈": "雁"}


def test_unread_variant_only_where_the_report_holds():
    assert standard_form("粧") == "妆" and not prosody.readings("粧")
    assert standard_map("粧成") == {}
    assert standard_map("粧成", lambda text: True) == {"粧": "妆"}
    assert standard_map("粧成", lambda text: False) == {}


def poem(text: str) -> Poem:
    lines = prosody.split_lines(text)
    report = prosody.check(text).to_dict()
    return Poem(text=text, lines=lines, begin="", seed=0, ended=True, nll=0.0, prosody=report)


def test_finish_simplified_writes_standard_form():
    text = "秋风吹鴈去，落日照猨啼。远客思乡久，孤灯对月低。"
    p = finish(poem(text), "秋", WriteOptions())
    assert p.text == text.replace("鴈", "雁").replace("猨", "猿")
    assert p.lines == [x.replace("鴈", "雁").replace("猨", "猿") for x in prosody.split_lines(text)]
    assert p.prosody["lines"] == p.lines
    assert {k: v for k, v in p.prosody.items() if k != "lines"} == {
        k: v for k, v in prosody.check(p.text).to_dict().items() if k != "lines"
    }


def test_finish_traditional_unchanged():
    text = "秋风吹鴈去，落日照猨啼。远客思乡久，孤灯对月低。"
    p = finish(poem(text), "秋", WriteOptions(script="traditional"))
    assert "鴈" in p.text and "猨" in p.text


def test_poem_map_takes_unread_variants_where_no_rule_breaks():
    text = "晓镜理新粧，春风拂画堂。落花随水去，归燕入雕梁。"  # 粧: no reading; 妆 rhymes 七阳 as 堂 梁
    assert poem_map(text) == {"粧": "妆"}
    assert poem_map(text, regular=False) == {}  # a 词: readings only


def test_no_worse_refuses_a_broken_rule():
    base = {
        "form": "五绝",
        "template": "A",
        "rhyme_group": "下平声七阳",
        "rhyme": True,
        "first_line_rhymes": False,
        "relaxed_ok": True,
        "relaxed": 1.0,
        "strict": 0.9,
    }
    assert _no_worse(base, {**base, "first_line_rhymes": True, "strict": 0.95})
    assert not _no_worse(base, {**base, "relaxed": 0.9})  # a tone broken
    assert not _no_worse(base, {**base, "rhyme": False})
    assert not _no_worse(base, {**base, "rhyme_group": "下平声八庚"})
    assert not _no_worse(base, {**base, "template": "B"})
