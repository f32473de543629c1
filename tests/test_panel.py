"""The reader panel: which poems a sheet may use, the sheet and its key, the ratings and their scores."""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import POEMS, SHARED_DATA
from tangshi.config import DataConfig
from tangshi.data.corpus import RawPoem, split_of
from tangshi.evaluation import panel as pn
from tangshi.options import WriteOptions
from tangshi.prosody import regular

FIVE = [c for _, c in POEMS if len(c) == 24 and pn.plain(c)]  # 五绝 of common characters
LINES = [ln for c in FIVE for ln in regular.split_lines(c)]
TITLES = ["春夜", "山中", "江上", "秋思", "送别", "夜雨", "登楼", "晚望", "寄远", "闲居", "月下", "归山"]


def make_corpus(folder: Path, cfg: DataConfig, n_test: int = 8, n_train: int = 300) -> Path:
    """A chinese-poetry file of 五绝 made of the fixture poems' lines: `n_test` in the test split (titled
    from TITLES), `n_train` in the training split."""
    rng, poems, kept = random.Random(0), [], {0: 0, 2: 0}
    want = {0: n_train, 2: n_test}
    while kept[0] < n_train or kept[2] < n_test:
        text = regular.join_lines(rng.sample(LINES, 4))
        s = split_of(text, cfg)
        if s in want and kept[s] < want[s]:
            title = TITLES[kept[2] % len(TITLES)] if s == 2 else "杂诗"
            poems.append({"title": title, "author": "某甲", "paragraphs": [text]})
            kept[s] += 1
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "poet.tang.0.json").write_text(json.dumps(poems, ensure_ascii=False), "utf-8")
    return folder


def source(text: str, title: str, where: str = "poet.tang.0.json poem 0") -> pn.Source:
    return pn.Source(RawPoem(title.replace(" ", ""), text, where, "某甲"), title, "poet.tang.0.json", 2)


def hand_panel(n: int = 4, kind: str = "title") -> pn.Panel:
    """A panel made by hand: human poems from FIVE, the 'model' poems the same poems' lines reversed."""
    items = []
    for k in range(n):
        text = FIVE[k % len(FIVE)]
        lines = regular.split_lines(text)
        pair = pn.Human(text, pn.couplets(lines), "五绝", title=TITLES[k] if kind == "title" else "",
                        begin=text[0] if kind == "begin" else "", author="某甲", source_title=TITLES[k] + "二首 一",
                        file="poet.tang.0.json", where=f"poet.tang.0.json poem {k}")  # fmt: skip
        model = regular.join_lines(lines[::-1])
        items.append(pn.Item(k + 1, "AB"[k % 2], pair, pn.couplets(lines[::-1]), model, 1000 + k))
    checkpoint = {"path": "bundled", "model_sha256": "0"}
    return pn.Panel(kind, 7, "test", items, WriteOptions(), ["corpus"], checkpoint, out="out")


def sections(sheet: str) -> list[str]:
    """The items of a sheet, the instructions left out."""
    return sheet.split("\n---\n")[1:]


def poem_of(section: str, side: str) -> str:
    """The lines of poem A or B of an item, joined without the indentation."""
    block = section.split(f"**{side}**\n\n")[1].split("\n\n")[0]
    return "\n".join(line.strip() for line in block.splitlines())


# ---------------------------------------------------------------- which poems


def test_shown_title_takes_off_a_series_and_refuses_what_is_no_title():
    assert pn.shown_title("遣興五首 二", "simplified") == "遣兴"
    assert pn.shown_title("古風 五十二", "simplified") == "古风"
    assert pn.shown_title("送友人", "simplified") == "送友人"
    assert pn.shown_title("江畔獨步尋花七絕句 六", "simplified") == "江畔独步寻花七绝句"
    assert pn.shown_title("無題二首 一", "simplified") == ""
    assert pn.shown_title("句", "simplified") == pn.shown_title("七言", "simplified") == ""  # an editor's label
    assert pn.shown_title("雜曲歌辭 少年行二首 二", "simplified") == ""  # a book's section, then the title
    assert pn.shown_title("", "simplified") == ""


def test_plain_refuses_variant_rare_and_missing_characters_and_notes():
    assert pn.plain("白日依山尽，黄河入海流。")
    assert pn.plain("白日依山盡，黃河入海流。")  # read in simplified
    assert not pn.plain("猿声啼不住，鴈声啼不住。")  # 鴈: a variant of 雁
    assert not pn.plain("一剑霜寒劒十州。")
    assert not pn.plain("白日依山□，黄河入海流。")
    assert not pn.plain("白日依山尽（一作近），黄河入海流。")


def test_candidates_keep_regular_plain_titled_poems_and_count_the_rest():
    seven = "水光潋滟晴方好，山色空蒙雨亦奇。欲把西湖比西子，淡妆浓抹总相宜。"
    sources = [
        source(FIVE[0], "遣興五首 二"),
        source(seven, "飲湖上初晴後雨"),
        source(FIVE[1], "無題"),
        source(FIVE[2], "雜曲歌辭 少年行"),
        source("白日依山尽（一作近），黄河入海流。欲穷千里目，更上一层楼。", "登樓"),
        source("一剑霜寒劒，黄河入海流。欲穷千里目，更上一层楼。", "劍"),
        source("白日依山尽，黄河入海流。欲穷千里目。", "登樓"),
        source(FIVE[3], "春曉" * 10),  # too long a title
        pn.Source(RawPoem("春晓", FIVE[4], "w", ""), "春曉", "f", 0),  # training split
    ]
    found, why = pn.candidates(sources, "title", "test", "simplified", max_title=16)
    assert [(h.title, h.form) for h in found] == [("遣兴", "五绝"), ("饮湖上初晴后雨", "七绝")]
    assert found[0].source_title == "遣興五首 二" and found[0].author == "某甲"
    assert found[1].lines == ("水光潋滟晴方好，山色空蒙雨亦奇。", "欲把西湖比西子，淡妆浓抹总相宜。")
    assert why == {"no usable title": 3, "notes, variant or rare characters": 2, "not a regular form": 1}
    known = set(FIVE[0]) - {"遣"}
    found, why = pn.candidates(sources[:1], "title", "test", "simplified", known=known)
    assert found == [] and why == {"title characters the model does not know": 1}


def test_candidates_from_a_begin_character_need_no_title():
    found, _ = pn.candidates([source(FIVE[0], "無題"), source(FIVE[1], "")], "begin", "test", "simplified")
    assert [(h.begin, h.title) for h in found] == [(FIVE[0][0], ""), (FIVE[1][0], "")]
    assert found[0].request() == {"begin": FIVE[0][0], "form": "五绝"}


def test_counts_are_of_characters_and_pairs_inside_a_line():
    counts = pn.Counts.of(["明月照，高楼。", "明月（一作日）。"])
    assert counts.chars == {"明": 2, "月": 2, "照": 1, "高": 1, "楼": 1} and counts.total == 7
    assert counts.pairs == {"明月": 2, "月照": 1, "高楼": 1}  # no 照高: across a line's end
    assert counts.pmi("明月") == pytest.approx(math.log(2 * 7 / (2 * 2)))


def test_keywords_are_the_most_associated_word_of_each_couplet_in_order():
    chars = {"明": 900, "月": 900, "照": 500, "高": 300, "楼": 300, "流": 600, "光": 600, "正": 900, "徘": 20, "徊": 20}
    pairs = {"明月": 400, "月照": 50, "照高": 4, "高楼": 100, "流光": 40, "光正": 5, "正徘": 4, "徘徊": 19}
    counts = pn.Counts(Counter(chars), Counter(pairs), 100_000)
    lines = ["明月照高楼", "流光正徘徊", "高楼明月夜", "徘徊在何处"]
    # couplet 1: 徘徊 (19 of 20 together) over 高楼, 明月; 照高 and 正徘 are seen too rarely to count
    # couplet 2: 徘徊 is taken, 高楼 goes together more than 明月 (100 / 300² against 400 / 900²)
    assert pn.keywords_of(lines, counts) == ("徘徊", "高楼")
    assert pn.keywords_of(lines, counts, known=set("明月照高楼流光正夜在何处")) == ("高楼", "明月")
    assert pn.keywords_of(["春眠不觉晓", "处处闻啼鸟"], counts) == ()  # nothing seen often enough


def test_read_sources_splits_by_the_checkpoints_hash_and_keeps_raw_titles(tmp_path):
    cfg = DataConfig()
    folder = make_corpus(tmp_path / "c", cfg, n_test=3, n_train=5)
    data = json.loads((folder / "poet.tang.0.json").read_text("utf-8"))
    data[0]["title"] = "遣興五首 二"
    data.append(dict(data[1]))  # a text twice: kept once
    (folder / "poet.tang.0.json").write_text(json.dumps(data, ensure_ascii=False), "utf-8")
    sources = pn.read_sources([folder], cfg)
    assert len(sources) == 8
    assert sorted(s.split for s in sources) == [0] * 5 + [2] * 3
    assert all(s.split == split_of(s.poem.content, cfg) for s in sources)
    assert sources[0].raw_title == "遣興五首 二" and sources[0].file == str(folder / "poet.tang.0.json")


# ---------------------------------------------------------------- the sheet and the key


def test_sheet_key_and_template_agree(tmp_path):
    made = hand_panel(4)
    pn.save_panel(made, tmp_path)
    sheet = (tmp_path / pn.SHEET).read_text("utf-8")
    key = json.loads((tmp_path / pn.KEY).read_text("utf-8"))
    template = [json.loads(x) for x in (tmp_path / pn.TEMPLATE).read_text("utf-8").splitlines()]
    assert len(sections(sheet)) == len(key["items"]) == len(template) == 4
    for section, item, row in zip(sections(sheet), key["items"], template, strict=True):
        assert section.startswith(f"\n## {item['item']}\n") and row["item"] == item["item"]
        assert f"Title 题目: {item['title']} · Form 体裁: 五绝" in section
        for side in "AB":
            assert poem_of(section, side) == item[side]
            assert row[side] == {c: None for c in pn.CRITERIA}
        human = item[item["human"]]
        assert human.replace("\n", "") == item["source"]["text"]
        assert item["B" if item["human"] == "A" else "A"].replace("\n", "") == item["model"]["text"]
        assert row["human"] is None
    assert [i["human"] for i in key["items"]] == ["A", "B", "A", "B"]
    assert key["criteria"] == list(pn.CRITERIA) and key["seed"] == 7
    assert key["items"][0]["model"]["request"] == {"begin": "", "form": "五绝", "title": "春夜", "seed": 1000, "num": 1}


def test_sheet_never_tells_which_poem_is_human(tmp_path):
    made = hand_panel(4)
    pn.save_panel(made, tmp_path)
    sheet = (tmp_path / pn.SHEET).read_text("utf-8")
    key = json.loads((tmp_path / pn.KEY).read_text("utf-8"))
    items = "\n".join(sections(sheet))
    for word in ("human", "model", "tangshi", "seed", "某甲", "poet.tang", "二首", "failure", "1000"):
        assert word not in items
    for section in sections(sheet):
        for side in "AB":  # the same layout: couplets of Han characters, ，。 only
            couplet = r"[\u4e00-\u9fff]{5}，[\u4e00-\u9fff]{5}。"
            assert all(re.fullmatch(couplet, x) for x in poem_of(section, side).split())
    header = sheet.split("\n---\n")[0]
    assert "Exactly one poem of each pair is by a poet" in header and "at random" in header
    assert "Keeping the form (line lengths, rhyme, tones) is no merit by itself" in header
    assert "Do not assume every poem is bad" in header
    for c in pn.CRITERIA:
        assert f"**{c} {pn.NAMES_ZH[c]}** — {pn.DEFINITIONS[c]}." in header
    assert {i["human"] for i in key["items"]} == {"A", "B"}


def test_a_sheet_without_titles_leaves_relevance_out(tmp_path):
    pn.save_panel(hand_panel(2, kind="begin"), tmp_path)
    sheet = (tmp_path / pn.SHEET).read_text("utf-8")
    row = json.loads((tmp_path / pn.TEMPLATE).read_text("utf-8").splitlines()[0])
    assert "relevance" not in sheet and "Title" not in sheet and "Form 体裁: 五绝" in sheet
    assert list(row["A"]) == ["fluency", "coherence", "poeticness"]


def test_the_files_are_written_whole_and_the_command_makes_them_again(tmp_path):
    made = hand_panel(2)
    pn.save_panel(made, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([pn.SHEET, pn.KEY, pn.TEMPLATE])  # no temp files
    made.options = WriteOptions(beam=8, plan=True)
    assert pn.command_line(made) == (
        "tangshi panel make --data corpus --split test --pairs 2 --seed 7 --kind title --plan --beam 8 --out out"
    )


def test_panel_options_take_the_writing_options_the_panel_does_not_set():
    values = {"seed": 3, "pairs": 48, "beam": 8, "plan": True, "title": "", "out": "x", "tones": "strict"}
    assert pn.panel_options(values) == WriteOptions(beam=8, plan=True, tones="strict")
    with pytest.raises(pn.OptionError) as e:
        pn.panel_options({"beam": 99})
    assert e.value.field == "beam"


def test_make_refuses_bad_requests_naming_the_option(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    cases = [
        ({"kind": "free"}, "kind"),
        ({"pairs": 0}, "pairs"),
        ({"seed": -1}, "seed"),
        ({"split": "dev"}, "split"),
        ({"options": WriteOptions(title="春")}, "title"),
        ({"options": WriteOptions(form="七律")}, "form"),
        ({"options": WriteOptions(acrostic="春夏秋冬")}, "acrostic"),
        ({"out": tmp_path / "full"}, "out"),
        ({"out": tmp_path / "full" / "x"}, "out"),
    ]
    for change, field in cases:
        args = {"pairs": 4, "seed": 1, "out": tmp_path / "new"} | change
        with pytest.raises(pn.PanelError) as e:
            pn.make_panel([tmp_path], **args)  # refused before a model is loaded
        assert e.value.field == field, (change, str(e.value))
        assert "--" + field in str(e.value) or field == "split" and "--split" in str(e.value)
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------- scores


def test_wilson_interval_has_the_known_values():
    known = [(8, 10, 0.4902, 0.9433), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (3, 4, 0.3006, 0.9544)]
    for k, n, low, high in known:
        assert pn.wilson(k, n) == pytest.approx((low, high), abs=1e-4)


def test_bootstrap_means_ratio_and_intervals():
    model = np.array([1.0, 2.0, 3.0, 2.0])
    human = np.array([4.0, 5.0, 4.0, 5.0])
    got = pn.bootstrap(model, human)
    assert got["model"]["mean"] == 2.0 and got["human"]["mean"] == 4.5
    assert got["ratio"]["mean"] == pytest.approx(2.0 / 4.5)
    for v in got.values():
        assert v["low"] <= v["mean"] <= v["high"] and v["low"] < v["high"]
    assert 1.0 <= got["model"]["low"] and got["model"]["high"] <= 3.0
    same = pn.bootstrap(np.full(5, 3.0), np.full(5, 4.0))
    assert same["ratio"] == {"mean": 0.75, "low": 0.75, "high": 0.75}
    assert pn.bootstrap(model, human) == got  # seeded


def rating(item: int, human_side: str, model: list[int], human: list[int], pick: str, **extra) -> str:
    sides = {human_side: dict(zip(pn.CRITERIA, human, strict=True))}
    sides["B" if human_side == "A" else "A"] = dict(zip(pn.CRITERIA, model, strict=True))
    return json.dumps({"item": item, "A": sides["A"], "B": sides["B"], "human": pick, **extra})


@pytest.fixture
def scored_panel(tmp_path) -> Path:
    pn.save_panel(hand_panel(4), tmp_path / "p")  # human: A B A B
    return tmp_path / "p"


def write_ratings(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n", "utf-8")
    return path


def test_score_gives_means_ratio_picks_and_agreement(scored_panel, tmp_path):
    r1 = write_ratings(tmp_path / "ann.jsonl", [
        rating(1, "A", [1, 2, 3, 1], [4, 5, 5, 4], "A"),
        rating(2, "B", [2, 2, 3, 2], [5, 4, 5, 4], "B"),
        rating(3, "A", [3, 2, 3, 3], [4, 4, 5, 4], "A"),
        rating(4, "B", [2, 2, 3, 2], [5, 5, 5, 4], "A", comment="hard"),
    ])  # fmt: skip
    r2 = write_ratings(tmp_path / "bo.jsonl", [
        rating(1, "A", [2, 2, 3, 1], [4, 5, 5, 4], "a"),
        rating(2, "B", [2, 2, 3, 2], [5, 4, 5, 4], "B"),
        rating(3, "A", [4, 2, 3, 3], [4, 4, 5, 4], "B"),
        rating(4, "B", [2, 2, 3, 2], [5, 5, 5, 4], "A"),
    ])  # fmt: skip
    report = pn.score_panel(scored_panel, [r1, r2])
    one = report["readers"][0]
    assert one["reader"] == "ann" and report["items"] == 4
    assert one["criteria"]["fluency"]["model"]["mean"] == 2.0
    assert one["criteria"]["fluency"]["human"]["mean"] == 4.5
    assert one["criteria"]["fluency"]["ratio"]["mean"] == pytest.approx(2.0 / 4.5)
    assert one["criteria"]["coherence"]["ratio"]["mean"] == pytest.approx(2.0 / 4.5)
    assert one["picked"] == pytest.approx({"human": 3, "picks": 4, "share": 0.75, "low": 0.3006, "high": 0.9544},
                                          abs=1e-4)  # fmt: skip
    two = report["readers"][1]
    assert two["picked"]["human"] == 2 and two["criteria"]["fluency"]["model"]["mean"] == 2.5
    pooled = report["pooled"]
    assert pooled["criteria"]["fluency"]["model"]["mean"] == 2.25
    assert pooled["picked"]["human"] == 5 and pooled["picked"]["share"] == 5 / 8
    assert (pooled["picked"]["low"], pooled["picked"]["high"]) == pytest.approx(pn.wilson(2.5, 4))
    # picks A B A A and A B B A: the two agree on 3 items of 4; A is 5 of 8 picks, chance agreement 34/64
    assert pooled["agreement"]["pick"] == 0.75
    assert pooled["agreement"]["fleiss_kappa"] == pytest.approx((0.75 - 34 / 64) / (1 - 34 / 64))
    assert report["readers"][0]["file"] == str(r1)
    text = pn.format_report(report)
    assert "reader ann" in text and "pooled, 2 readers" in text and "human picked 3 of 4: 75.0 % [30.1, 95.4]" in text
    assert "fluency     2.00 [" in text and "agreement on the pick: 75.0 %" in text
    assert json.loads(json.dumps(report)) == report


def test_title_character_share_model_against_human(tmp_path):
    made = hand_panel(2)
    made.items[0].pair = pn.Human("白日依山尽，黄河入海流。", ("白日依山尽，黄河入海流。",), "五绝", title="白日")
    made.items[0].model_lines = ("白日白日白，黄河入海流。",)
    made.items[1].pair = pn.Human("春眠不觉晓，处处闻啼鸟。", ("春眠不觉晓，处处闻啼鸟。",), "五绝", title="春晓")
    made.items[1].model_lines = ("春晓不觉晓，处处闻啼鸟。",)
    pn.save_panel(made, tmp_path)
    share = pn.title_share(pn.load_key(tmp_path))
    # human: 2 of 10 and 2 of 10 characters from the title; model: 5 of 10 and 3 of 10
    assert share == {"human": pytest.approx(4 / 20), "model": pytest.approx(8 / 20), "items": 2}
    pn.save_panel(hand_panel(2, kind="begin"), tmp_path / "b")
    assert pn.title_share(pn.load_key(tmp_path / "b")) is None


def test_relevance_on_a_sheet_without_titles_is_ignored(tmp_path):
    pn.save_panel(hand_panel(2, kind="begin"), tmp_path / "p")
    rows = [rating(1, "A", [1, 2, 3, 1], [4, 5, 5, 4], "A"), rating(2, "B", [2, 2, 3, 2], [5, 4, 5, 4], "B")]
    report = pn.score_panel(tmp_path / "p", [write_ratings(tmp_path / "r.jsonl", rows)])
    assert list(report["readers"][0]["criteria"]) == ["fluency", "coherence", "poeticness"]
    assert report["pooled"]["criteria"]["poeticness"]["model"]["mean"] == 1.5
    assert "agreement" not in report["pooled"] and report["title_characters"] is None


BAD_LINES = [
    ("{'item': 1}", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"item": "one"}', "\"item\" must be an item number, got 'one'"),
    (rating(9, "A", [1, 1, 1, 1], [5, 5, 5, 5], "A"), "item 9 is not on the sheet (items 1 to 4)"),
    (rating(1, "A", [1, 6, 1, 1], [5, 5, 5, 5], "A"), "B coherence must be an integer from 1 to 5, got 6"),
    (rating(1, "A", [1, 1, 1, 1], [5, 5, 2.5, 5], "A"), "A relevance must be an integer from 1 to 5, got 2.5"),
    (rating(1, "A", [1, 1, 1, None], [5, 5, 5, 5], "A"), "B poeticness: not rated (null)"),
    ('{"item": 1, "A": {"fluency": 1, "coherence": 1, "relevance": 1}, "B": {"fluency": 1, "coherence": 1, '
     '"relevance": 1, "poeticness": 1}, "human": "A"}', "A: no poeticness rating"),
    (rating(1, "A", [1, 1, 1, 1], [5, 5, 5, 5], "C"), "\"human\" must be \"A\" or \"B\", got 'C'"),
    (rating(1, "A", [1, 1, 1, 1], [5, 5, 5, 5], None), "\"human\" must be \"A\" or \"B\", got None"),
    (rating(1, "A", [1, 1, 1, 1], [5, 5, 5, 5], "A", mood=1), 'unknown field "mood"'),
    ('{"item": 1, "A": 3, "B": {}, "human": "A"}', '"A" must be an object of ratings'),
]  # fmt: skip


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_each_bad_ratings_line_is_named_by_file_and_line(scored_panel, tmp_path, line, message):
    good = [rating(i, "AB"[(i - 1) % 2], [1, 1, 1, 1], [5, 5, 5, 5], "A") for i in range(1, 5)]
    path = write_ratings(tmp_path / "reader.jsonl", [good[0], line, *good[1:]])
    with pytest.raises(pn.PanelError) as e:
        pn.score_panel(scored_panel, [path])
    assert f"{path} line 2: {message}" in str(e.value)
    assert e.value.field == "ratings"


def test_items_rated_twice_or_missing_are_named(scored_panel, tmp_path):
    rows = [rating(1, "A", [1, 1, 1, 1], [5, 5, 5, 5], "A")] * 2
    path = write_ratings(tmp_path / "r.jsonl", rows)
    other = write_ratings(tmp_path / "s.jsonl", ["", "not json"])
    with pytest.raises(pn.PanelError) as e:
        pn.score_panel(scored_panel, [path, other])
    message = str(e.value)
    assert f"{path} line 2: item 1 is rated twice (first on line 1)" in message
    assert f"{path}: 3 of 4 items not rated (items 2, 3, 4)" in message
    assert f"{other} line 2: not JSON" in message and f"{other}: 4 of 4 items not rated" in message


def test_score_names_a_missing_key_or_ratings_file(tmp_path, scored_panel):
    with pytest.raises(pn.PanelError, match="no key.json"):
        pn.score_panel(tmp_path / "nowhere", [tmp_path / "r.jsonl"])
    with pytest.raises(pn.PanelError, match=r"r\.jsonl: no such file"):
        pn.score_panel(scored_panel, [tmp_path / "r.jsonl"])
    (scored_panel / pn.KEY).write_text("{", "utf-8")
    with pytest.raises(pn.PanelError, match="key.json: cannot read"):
        pn.score_panel(scored_panel, [tmp_path / "r.jsonl"])


@pytest.mark.slow
def test_the_panel_module_imports_no_torch():
    code = "import sys, tangshi.evaluation.panel; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"  # the CLI's parser reads KINDS from it: --help stays instant


# ---------------------------------------------------------------- with the bundled model


@pytest.fixture(scope="module")
def poet():
    from tangshi.api import Poet

    return Poet.load()


@pytest.mark.slow
def test_make_writes_a_panel_the_same_seed_makes_again(poet, tmp_path):
    data = make_corpus(tmp_path / "c", poet.ckpt.config.data, n_test=12)
    out = tmp_path / "panel"
    made = pn.make_panel([data], out, pairs=4, seed=3, poet=poet)
    files = {name: (out / name).read_bytes() for name in (pn.SHEET, pn.KEY, pn.TEMPLATE)}
    key = json.loads(files[pn.KEY])
    sheet = files[pn.SHEET].decode()
    assert [i["human"] for i in key["items"]].count("A") == 2
    assert all(pn.plain((item["A"] + item["B"]).replace("\n", "")) for item in key["items"])  # no variant forms
    for section, item in zip(sections(sheet), key["items"], strict=True):
        human, model = item[item["human"]], item["B" if item["human"] == "A" else "A"]
        assert poem_of(section, "A") == item["A"] and poem_of(section, "B") == item["B"]
        assert human.replace("\n", "") == item["source"]["text"] and item["title"] in TITLES
        assert len(model.replace("\n", "")) == len(human.replace("\n", "")) == 24  # 五绝, as the human poem
        request = dict(item["model"]["request"])
        again = poet.write(request.pop("begin"), **request)[0]  # the model's poem comes again from its seed
        assert again.text == item["model"]["text"]
    assert key["command"].startswith(f"tangshi panel make --data {data} --split test --pairs 4 --seed 3 --kind title")
    assert key["checkpoint"]["path"] == "bundled" and len(key["checkpoint"]["model_sha256"]) == 64
    with pytest.raises(pn.PanelError, match="not empty"):
        pn.make_panel([data], out, pairs=4, seed=3, poet=poet)
    pn.make_panel([data], out, pairs=4, seed=3, poet=poet, force=True)
    assert {name: (out / name).read_bytes() for name in files} == files
    other = pn.make_panel([data], tmp_path / "other", pairs=4, seed=4, poet=poet, exclude=[out])
    used = {i.pair.text for i in made.items}
    assert not used & {i.pair.text for i in other.items}  # --exclude: fresh poems
    with pytest.raises(pn.PanelError) as e:
        pn.make_panel([data], tmp_path / "more", pairs=13, seed=1, poet=poet)
    assert e.value.field == "pairs" and "has 12 usable poems for --kind title" in str(e.value)


@pytest.mark.slow
def test_make_from_keywords_and_begin_characters(poet, tmp_path):
    data = make_corpus(tmp_path / "c", poet.ckpt.config.data, n_test=4)
    for kind in ("keywords", "begin"):
        made = pn.make_panel([data], tmp_path / kind, pairs=2, seed=1, kind=kind, poet=poet)
        key = pn.load_key(tmp_path / kind)
        sheet = (tmp_path / kind / pn.SHEET).read_text("utf-8")
        for item, section in zip(made.items, sections(sheet), strict=True):
            model = item.model_text
            if kind == "keywords":
                assert len(item.pair.keywords) == 2
                assert all(k in item.pair.text and k in model for k in item.pair.keywords)
                assert "Keywords 关键词: " + " ".join(item.pair.keywords) in section
            else:
                assert model[0] == item.pair.text[0] == item.pair.begin
        assert key["criteria"] == ["fluency", "coherence", "poeticness"]


@pytest.mark.slow
def test_make_ci_draws_the_most_common_cipai_of_the_real_split(poet, tmp_path):
    songci = SHARED_DATA / "chinese-poetry" / "songci"
    if not songci.is_dir():
        pytest.skip(f"the corpus is not at {songci}")
    made = pn.make_panel([songci], tmp_path / "ci", pairs=2, seed=1, kind="ci", poet=poet)
    sources = pn.read_sources([songci], poet.ckpt.config.data)
    pool, _ = pn.candidates(sources, "ci", "test", "simplified")
    assert len({h.form for h in pool}) == pn.TOP_CIPAI
    sheet = (tmp_path / "ci" / pn.SHEET).read_text("utf-8")
    for item, section in zip(made.items, sections(sheet), strict=True):
        assert item.pair.form in {h.form for h in pool} and f"词牌: {item.pair.form}" in section
        report = json.loads((tmp_path / "ci" / pn.KEY).read_text("utf-8"))["items"][item.number - 1]
        assert report["model"]["request"]["cipai"] == item.pair.form
        assert len(item.model_lines) == len(item.pair.lines)  # as many 阕
        for side in "AB":
            assert set(re.sub(r"[\u4e00-\u9fff]", "", poem_of(section, side))) <= set("，。\n")
    assert math.isclose(sum(i.human == "A" for i in made.items), 1)


def test_every_exclude_flag_counts_whether_repeated_or_listed():
    from tangshi.cli import build_parser

    args = build_parser().parse_args(
        ["panel", "make", "--data", "d", "--pairs", "2", "--seed", "1", "--out", "o",
         "--exclude", "a", "b", "--exclude", "c"]
    )  # fmt: skip
    assert args.exclude == ["a", "b", "c"]


def test_compare_takes_each_setting_against_the_first_reader_by_reader(tmp_path):
    """Two readers, each reading both panels: a severe one (model 1s and 2s) and a lenient one (3s and 4s).
    Each rates panel 2's model poems exactly one point above panel 1's: the difference is +1 with no
    spread, whatever the readers' severity."""
    for name in ("one", "two"):
        pn.save_panel(hand_panel(4), tmp_path / name)  # human: A B A B

    def sheet(path: Path, model: int) -> Path:
        return write_ratings(path, [rating(i, "AB"[(i - 1) % 2], [model] * 4, [5] * 4, "AB"[(i - 1) % 2])
                                    for i in range(1, 5)])  # fmt: skip

    severe = [sheet(tmp_path / "severe-1.jsonl", 1), sheet(tmp_path / "severe-2.jsonl", 2)]
    lenient = [sheet(tmp_path / "lenient-1.jsonl", 3), sheet(tmp_path / "lenient-2.jsonl", 4)]
    report = pn.compare_panels([tmp_path / "one", tmp_path / "two"], [severe, lenient])
    first, second = report["panels"]
    assert first["criteria"]["fluency"]["model"] == 2.0 and first["criteria"]["fluency"]["readers"] == [1.0, 3.0]
    assert "difference" not in first["criteria"]["fluency"]
    assert second["criteria"]["coherence"]["difference"] == {"mean": 1.0, "low": 1.0, "high": 1.0,
                                                             "readers": [1.0, 1.0]}  # fmt: skip
    assert second["picked"] == {"human": 8, "picks": 8} and report["readers"] == ["reader 1", "reader 2"]
    text = pn.format_comparison(report)
    assert "+1.00 [+1.00, +1.00]" in text and "+1.00 +1.00" in text
    assert json.loads(json.dumps(report)) == report


def test_compare_names_a_reader_short_of_files_and_panels_of_two_kinds(tmp_path):
    pn.save_panel(hand_panel(4), tmp_path / "one")
    pn.save_panel(hand_panel(4, kind="begin"), tmp_path / "two")
    ratings = write_ratings(tmp_path / "r.jsonl", [rating(i, "AB"[(i - 1) % 2], [2] * 4, [5] * 4, "A")
                                                   for i in range(1, 5)])  # fmt: skip
    with pytest.raises(pn.PanelError, match=r"one kind, got .*one \(title\), .*two \(begin\)"):
        pn.compare_panels([tmp_path / "one", tmp_path / "two"], [[ratings, ratings]])
    pn.save_panel(hand_panel(4), tmp_path / "three")
    with pytest.raises(pn.PanelError, match="--reader 1 gives 1 files for 2 panels"):
        pn.compare_panels([tmp_path / "one", tmp_path / "three"], [[ratings]])
    with pytest.raises(pn.PanelError, match="at least 2 panels"):
        pn.compare_panels([tmp_path / "one"], [[ratings]])
    bad = write_ratings(tmp_path / "bad.jsonl", ["{"])
    with pytest.raises(pn.PanelError, match=r"bad\.jsonl line 1: not JSON"):
        pn.compare_panels([tmp_path / "one", tmp_path / "three"], [[ratings, bad]])
