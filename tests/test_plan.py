"""Plans: corpus statistics (words, PPMI neighbours), one keyword a line, keywords placed under the
form's rules and written where they were placed whatever the scores."""

from __future__ import annotations

import random
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import TANG, need_shared_data
from tangshi.data.corpus import load_corpus
from tangshi.data.words import FILE, WordStats, subject
from tangshi.generation.constraints import FormMask
from tangshi.generation.planner import Plan, PlanEntry, make_plan, place, placeable, title_words
from tangshi.generation.tables import FormError, free_form, get_form
from tangshi.prosody import regular
from test_forms import decode, vp

MOON = ["明月", "清风", "高楼", "夜深"]
FAREWELL = ["送君", "杨柳", "离别", "美酒"]
FILLER = "山水云天江花草木石金玉田禾竹松"


def synthetic() -> tuple[list[str], list[str]]:
    """Poems on two subjects: a moon night and a farewell, with filler characters around the words."""
    rng = random.Random(0)
    texts, titles = [], []
    for k in range(240):
        words = MOON if k % 2 else FAREWELL
        lines = [rng.choice(words) + "".join(rng.sample(FILLER, 3)) for _ in range(4)]
        texts.append(f"{lines[0]}，{lines[1]}。{lines[2]}，{lines[3]}。")
        titles.append("月夜" if k % 2 else "送别")
    return texts, titles


@cache
def small() -> WordStats:
    texts, titles = synthetic()
    authors = ["李白" if k % 2 else "王维" for k in range(len(texts))]  # the moon poems are 李白's
    return WordStats.of_texts(
        texts, titles, min_count=5, min_cooc=3, min_title_cooc=3, authors=authors, poets=["李白", "王维"]
    )


@cache
def tang() -> WordStats:
    corpus = load_corpus([TANG])
    n = 10000  # a quarter of the train split: seconds, and enough for the common words
    return WordStats.of_texts(corpus.texts_of("train")[:n], corpus.titles_of("train")[:n], min_count=10)


def test_words_and_neighbours_on_a_fixture():
    s = small()
    assert set(MOON + FAREWELL) <= set(s.words)
    assert set(s.neighbours("明月", 6)) & {"清风", "高楼", "夜深"}
    assert not set(s.neighbours("明月", 30)) & set(FAREWELL)
    assert "月" not in "".join(s.neighbours("明月", 30))  # a word's own characters are no neighbours
    assert set(s.neighbours("送", 10, table="title")) & {"杨柳", "离别", "美酒"}  # poems titled 送别
    assert s.neighbours("不知道", 5) == []


def test_words_in_a_free_text_longest_first():
    s = small()
    assert s.words_in("送君到高楼") == ["送君", "高楼"]  # 到 is unknown here
    words = s.words_in("明月照高楼，的山")
    assert words[:2] == ["明月", "高楼"] and "山" in words and "的" not in words


def test_expand_follows_the_seeds_and_repeats_no_character():
    s = small()
    more = s.expand(["明月"], 3, length=2)
    assert set(more) <= {"清风", "高楼", "夜深"} and len(more) == 3
    chars = [c for w in [*more, "明月"] for c in w]
    assert len(set(chars)) == len(chars)
    assert not set(s.expand(["明月"], 3, exclude=["清"])) & {"清风"}


def test_save_and_load(tmp_path):
    s = small()
    assert WordStats.load(tmp_path) is None
    path = s.save(tmp_path / "model")
    assert path.name == FILE and [p.name for p in path.parent.iterdir()] == [FILE]  # no temporary file left
    back = WordStats.load(tmp_path / "model")
    assert back is not None and back.words == s.words and back.settings == s.settings
    for w in ("明月", "送", "山"):
        assert back.neighbours(w, 30) == s.neighbours(w, 30)
        assert back.neighbours(w, 30, table="title") == s.neighbours(w, 30, table="title")
    assert list(back.following()) == list(s.following()) and back.poets == s.poets
    assert back.manner_of("李白") == s.manner_of("李白")


def test_the_next_line_table_relates_a_lines_characters_to_the_next_lines():
    s = small()
    follows = {(a, b) for a, b, _ in s.following()}
    assert ("明", "夜") in follows and ("送", "杨") in follows  # a moon line follows a moon line
    assert ("明", "杨") not in follows and ("送", "夜") not in follows
    assert all(a != b and len(a) == len(b) == 1 for a, b in follows)


def test_a_poets_manner_is_what_the_poet_writes_more_than_others():
    s = small()
    li, wang = s.manner_of("李白"), s.manner_of("王维")
    assert set("明月清风高楼夜深") <= set(li) and not set("明月") & set(wang)
    assert set("送君杨柳离别美酒") <= set(wang) and all(v > 0 for v in li.values())
    assert s.manner_of("杜甫") == {}


def test_a_titles_topic_is_the_characters_of_poems_under_such_titles():
    s = small()
    moon = s.topic("月夜")
    assert set("清风高楼") <= set(moon) and not set("杨柳离别") & set(moon)
    both = s.topic("", ["杨柳"])  # a keyword's topic: what goes with it in a poem
    assert set("离别美酒") & set(both) and not set("清风") & set(both)


@pytest.mark.slow
def test_tang_neighbours_of_the_bright_moon():
    need_shared_data()
    s = tang()
    assert len(set(s.neighbours("明月", 30)) & {"清风", "白云", "夜", "秋", "照", "楼", "相思", "高楼", "愁"}) >= 3
    assert "故乡" in s.words_in("思念故乡的明月") and "明月" in s.words_in("思念故乡的明月")


# ---------------------------------------------------------------- plans


def test_plan_gives_the_keywords_their_lines_in_order_and_fills_the_rest():
    plan = make_plan(small(), 4, keywords=["明月", "山"])
    assert plan.entries[:2] == [PlanEntry(0, "明月", True), PlanEntry(1, "山", True)]
    assert [e.line for e in plan.entries] == [0, 1, 2, 3] and not any(e.given for e in plan.entries[2:])
    assert plan.to_json()[0] == {"line": 0, "word": "明月", "given": True}
    chars = [c for w in plan.words for c in w]
    assert len(set(chars)) == len(chars)


@pytest.mark.parametrize(
    ("keywords", "title", "theme"),
    [([], "月夜", ""), (["送君"], "送别", "离别"), ([], "", "明月高楼"), (["美酒"], "", "")],
)
def test_plans_never_repeat_a_word_or_a_character(keywords, title, theme):
    for lines in (4, 8):
        plan = make_plan(small(), lines, keywords=keywords, title=title, theme=theme, avoid="山")
        assert plan.words[: len(keywords)] == keywords
        chars = [c for w in plan.words for c in w] + ["山"]
        assert len(set(chars)) == len(chars), plan.words
        assert [e.line for e in plan.entries] == list(range(len(plan.entries)))


def test_plan_from_a_title_uses_its_words_then_what_goes_with_them():
    plan = make_plan(small(), 4, title="高楼明月")
    assert plan.words[:2] == ["高楼", "明月"] and set(plan.words[2:]) <= set(MOON)
    # 月 and 夜 are only ever half of 明月 and 夜深 here: no keywords alone; the title table fills in
    assert set(make_plan(small(), 4, title="月夜").words) <= set(MOON) | set(FILLER)
    assert len(make_plan(small(), 4, title="高楼明月清风夜深", from_text=4).words) == 4


def test_bad_keyword_lists_are_named():
    with pytest.raises(FormError, match="5 keywords but the poem has 4 lines") as e:
        make_plan(small(), 4, keywords=["春", "夏", "秋", "冬", "风"])
    assert e.value.field == "keywords"
    with pytest.raises(FormError, match="keyword '春' is given twice"):
        make_plan(small(), 4, keywords=["春", "春"])
    assert make_plan(None, 4, keywords=["春"]).words == ["春"]  # no statistics: the keywords only


# ---------------------------------------------------------------- placing


WORDS = [
    "明月",
    "故乡",
    "清风",
    "白云",
    "春",
    "江南",
    "落花",
    "夜深",
    "孤舟",
    "青山",
    "流水",
    "思",
    "长安",
    "秋",
    "黄河",
]


def plan_of(words: list[str]) -> Plan:
    return Plan(len(words), [PlanEntry(i, w, True) for i, w in enumerate(words)])


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    form=st.sampled_from(list(regular.FORMS)),
    tones=st.sampled_from(["relaxed", "strict"]),
    heads=st.sampled_from(["", "春夏秋冬风花雪月"]),
    many=st.sampled_from([2, 4, 8]),
)
def test_fixed_keywords_are_written_where_placed_and_keep_the_form(seed, form, tones, heads, many):
    shape = get_form(form)
    rng = random.Random(seed)
    words = rng.sample(WORDS, min(many, shape.lines))
    heads = heads[: shape.lines]
    words = [w for w in words if not set(w) & set(heads)]
    rows = 3
    try:
        fixed = [place(plan_of(words), vp(), shape, heads=heads, tones=tones, seed=seed + r) for r in range(rows)]
        mask = FormMask(vp(), shape, rows, [heads] * rows, tones=tones, fixed=fixed)
    except FormError as e:  # strict tones, or heads beside the keywords, may refuse a plan: the culprit is named
        assert tones == "strict" or heads, str(e)
        assert "cannot be placed" in str(e) or "cannot be met" in str(e), str(e)
        return
    for row, text in enumerate(decode(mask, seed)):
        r = regular.check(text)
        assert r.form == form and r.rhyme and r.relaxed == 1.0, (text, fixed[row], r.actual)
        if tones == "strict":
            assert mask.failures[row] is None and r.strict == 1.0, (text, fixed[row])
        for (i, j), ch in fixed[row].items():
            assert r.lines[i][j] == ch, (text, fixed[row])
        for i, w in enumerate(words):
            assert w in r.lines[i], (text, words)
        assert [line[0] for line in r.lines[: len(heads)]] == list(heads)
        chars = [c for c in text if regular.is_han(c)]
        assert len(set(chars)) == len(chars)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), heads=st.sampled_from(["", "春夏秋冬"]))
def test_free_poems_start_their_lines_with_the_keywords(seed, heads):
    words = ["明月", "故乡", "白云", "江南"]
    fixed = place(plan_of(words), vp(), free_form(4), heads=heads)
    mask = FormMask(vp(), free_form(4), 2, [heads] * 2, fixed=[fixed] * 2)
    for text in decode(mask, seed):
        lines = regular.split_lines(text)
        assert [ln[len(heads) > 0 :][:2] for ln in lines] == words, text
        assert all(ln[0] == h for ln, h in zip(lines, heads, strict=False))


def test_keyword_on_a_rhyme_must_rhyme_in_the_open_group():
    # 光 and 长 rhyme in 阳: a 五绝 whose lines 2 and 4 end with them keeps 阳
    plan = Plan(4, [PlanEntry(1, "春光", True), PlanEntry(3, "夜长", True)])
    fixed = place(plan, vp(), get_form("五绝"), rhyme="阳")
    mask = FormMask(vp(), get_form("五绝"), 2, rhyme="阳", fixed=[fixed] * 2)
    for text in decode(mask, 5):
        assert regular.check(text).rhyme_group == "下平声七阳" and "春光" in text and "夜长" in text
    line = Plan(4, [PlanEntry(3, "青山万里长", True)])  # a whole line: 长 must rhyme
    assert place(line, vp(), get_form("五绝"), rhyme="阳")[(3, 4)] == "长"
    with pytest.raises(FormError, match="keyword '青山万里长' cannot be placed in line 4 .*'长' ends a rhyming line"):
        place(line, vp(), get_form("五绝"), rhyme="东")


def test_unplaceable_keywords_are_named():
    with pytest.raises(FormError, match="keyword '白日依山尽' cannot be placed in line 2 of a 五绝") as e:
        place(plan_of(["明月", "白日依山尽"]), vp(), get_form("五绝"))
    assert e.value.field == "keywords" and "'尽' is 仄 where" in str(e.value)
    with pytest.raises(FormError, match="keyword '月光' \\(line 2\\) repeats '月' of keyword '明月'"):
        place(plan_of(["明月", "月光"]), vp(), get_form("五绝"))
    place(plan_of(["明月", "月光"]), vp(), get_form("五绝"), allow_repeat=True)
    with pytest.raises(FormError, match="keyword '春风' cannot be placed in line 1"):
        place(plan_of(["春风"]), vp(), get_form("五绝"), begin="风")
    with pytest.raises(FormError, match="keyword '春风明月夜长' \\(line 1\\) has 6 characters but a 五绝 line has 5"):
        place(plan_of(["春风明月夜长"]), vp(), get_form("五绝"))


@pytest.mark.slow
def test_a_titles_subject_leaves_out_its_place_in_a_series():
    assert subject("宫词一百首八十八") == "宫词" and subject("江南杂题三十首其六") == "江南杂题"
    assert subject("巨胜歌（并序）七") == "巨胜歌" and subject("咏家酝十韵") == "咏家酝"
    assert subject("九日登高") == "九日登高" and subject("十五夜望月") == "十五夜望月"  # numbers inside stay
    assert "一" not in "".join(make_plan(small(), 4, title="月夜一百首一").words)
    assert title_words(tang(), "无题") == [] and title_words(tang(), "绝句") == []  # its kind, not its subject
    assert title_words(tang(), "奉和春日应制") == ["春", "日"] and title_words(tang(), "咏柳") == ["柳"]
    assert title_words(tang(), "秋夜独坐") == ["秋夜", "独坐"]


def test_the_planners_words_that_do_not_fit_are_dropped_but_given_keywords_are_not():
    form = get_form("五绝")
    plan = Plan(4, [PlanEntry(0, "明月", True), PlanEntry(1, "白日依山尽", False), PlanEntry(2, "高楼", False)])
    kept = placeable(plan, vp(), form)
    assert kept.words == ["明月", "高楼"] and [e.line for e in kept.entries] == [0, 2]
    assert place(kept, vp(), form)  # what is kept fits together
    assert placeable(plan_of(["明月", "高楼"]), vp(), form).words == ["明月", "高楼"]  # all fit: the plan as it was
    with pytest.raises(FormError, match="keyword '白日依山尽' cannot be placed in line 2"):
        placeable(plan_of(["明月", "白日依山尽"]), vp(), form)


def test_keywords_agree_with_heads_and_begin():
    fixed = place(plan_of(["春风", "夏日"]), vp(), get_form("七绝"), heads="春夏秋冬")
    assert fixed == {(0, 1): "风", (1, 1): "日"}  # on the heads, which they start with: only the rest is fixed
    assert place(plan_of(["明月", "故乡"]), vp(), get_form("五绝"), begin="明月")[(1, 0)] == "故"


def test_a_keyword_may_repeat_its_own_character_but_planned_words_do_not():
    fixed = place(plan_of(["萧萧", "明月"]), vp(), get_form("五绝"))
    assert sorted(fixed.values()).count("萧") == 2
    mask = FormMask(vp(), get_form("五绝"), 1, fixed=[fixed])
    text = decode(mask, 1)[0]
    assert "萧萧" in regular.split_lines(text)[0] and regular.check(text).relaxed == 1.0
    plan = make_plan(small(), 8, title="月夜", theme="明月", known=set("明月清风高楼夜深山水云天江"))
    assert all(len(set(w)) == len(w) and set(w) <= set("明月清风高楼夜深山水云天江") for w in plan.words)


def test_a_pruned_table_keeps_each_words_best_neighbours_and_reads_back(tmp_path):
    s = small()
    p = s.pruned(2)
    assert p.settings["k"] == 2 and s.settings["k"] != 2
    for w in ("明月", "送", "山"):
        assert p.neighbours(w, 30) == s.neighbours(w, 30)[:2]
        assert p.neighbours(w, 30, table="title") == s.neighbours(w, 30, table="title")[:2]
    assert list(p.following()) == list(s.following())  # the cohesion table is kept whole
    p.save(tmp_path)
    back = WordStats.load(tmp_path)
    assert [back.neighbours(w, 30) for w in ("明月", "送")] == [p.neighbours(w, 30) for w in ("明月", "送")]


# ---------------------------------------------------------------- titles like a new one


def test_the_poems_under_the_nearest_titles_say_what_a_title_holds():
    s = small()
    assert s.kin is not None and len(s.kin) == 240
    moon = [s.words[w] for w in s.kin.ranked("月夜")]
    assert set(moon[:4]) == set(MOON) and not set(moon) & set(FAREWELL)  # the poems under 月夜 hold these most
    farewell = [s.words[w] for w in s.kin.ranked("送友人")]  # no such title: 送 is nearest 送别
    assert set(farewell[:4]) == set(FAREWELL) and not set(farewell) & set(MOON)
    assert s.kin.ranked("") == [] and s.kin.ranked("其二") == [] and s.kin.ranked("秋江") == []


def test_a_plan_for_a_title_fills_its_lines_from_the_nearest_titles_poems():
    plan = make_plan(small(), 4, title="送友人")
    assert plan.words[0] == "送" or set(plan.words) & set(FAREWELL)
    assert set(plan.words) - {"送", "友", "人"} <= set(FAREWELL) | set(FILLER)
    assert len(set(plan.words) & set(FAREWELL)) >= 2 and not set(plan.words) & set(MOON)


def test_the_title_index_reads_back_and_keeps_one_genre(tmp_path):
    texts, titles = synthetic()
    genres = ["唐诗" if k % 4 < 2 else "宋诗" for k in range(len(texts))]
    s = WordStats.of_texts(texts, titles, min_count=5, min_cooc=3, min_title_cooc=3, genres=genres)
    s.save(tmp_path / "all")
    back = WordStats.load(tmp_path / "all")
    assert back.kin.titles == s.kin.titles and sorted(back.kin.genre_names) == ["唐诗", "宋诗"]
    for title in ("月夜", "送别"):
        assert back.kin.ranked(title) == s.kin.ranked(title)
        assert back.kin.ranked(title, "唐诗") == s.kin.ranked(title, "唐诗")
    tang = s.pruned(30, genre="唐诗")
    assert len(tang.kin) == 120 and tang.settings["kin_genre"] == "唐诗" and "kin_genre" not in s.settings
    assert tang.kin.ranked("月夜") == s.kin.ranked("月夜", "唐诗")
    assert s.pruned(30, genre="宋词").kin is s.kin  # a genre it does not know: all the titles
    tang.save(tmp_path / "tang")
    assert WordStats.load(tmp_path / "tang").kin.ranked("送别") == s.kin.ranked("送别", "唐诗")
