"""The readers' measures: each on texts whose answer is known (the same texts, clearly different
texts, human poems against their line-shuffled versions, an easy poet fixture)."""

from __future__ import annotations

import random

import pytest

from conftest import POEMS, TANG, need_shared_data
from tangshi.evaluation import readers as R
from tangshi.prosody import regular

TEXTS = [c for _, c in POEMS]
JUEJU = [t for t in TEXTS if R.form_of(t) == "五绝"]  # 11 of the 12


def _shifted(text: str) -> str:
    """The same poem in rare characters (CJK extension A; punctuation kept): nothing in common with
    the fixture but the shape."""
    return "".join(chr(0x3400 + ord(c) % 0x19C0) if regular.is_han(c) else c for c in text)


def _poems_of(alphabet: str, n: int, seed: int) -> list[str]:
    """n 五绝-shaped strings of characters drawn uniformly from the alphabet."""
    rng = random.Random(seed)
    return ["".join("".join(rng.choices(alphabet, k=5)) + "，。"[k % 2] for k in range(4)) for _ in range(n)]


WORDS = "山水云月风花雪夜江城春秋日明清白"


def test_auc_of_two_samples_of_the_same_texts_is_chance_and_of_different_texts_is_one():
    aucs = [R.two_sample_auc(_poems_of(WORDS, 100, s), _poems_of(WORDS, 100, s + 10), seed=s) for s in range(3)]
    assert all(abs(a - 0.5) < 0.12 for a in aucs), aucs
    assert R.two_sample_auc([_shifted(t) for t in TEXTS], TEXTS, seed=0) > 0.95


def test_auc_subsamples_the_larger_side_and_needs_a_fold_of_each():
    assert R.two_sample_auc([_shifted(t) for t in TEXTS] * 3, TEXTS, seed=1) > 0.95
    with pytest.raises(ValueError, match="at least 5"):
        R.two_sample_auc(TEXTS[:4], TEXTS)


def test_shuffled_poems_keep_their_form_and_take_lines_from_their_peers():
    shuffled = R.shuffle_lines(JUEJU, seed=3)
    assert shuffled == R.shuffle_lines(JUEJU, seed=3)  # deterministic
    for original, new in zip(JUEJU, shuffled, strict=True):
        assert new != original and R.form_of(new) == "五绝"
        for k, line in enumerate(regular.split_lines(new)):
            assert line in {regular.split_lines(t)[k] for t in JUEJU}  # the same line index, some poem's
    alone = "水光潋滟晴方好，山色空蒙雨亦奇。欲把西湖比西子，淡妆浓抹总相宜。"  # the only 七绝
    assert R.shuffle_lines([*JUEJU, alone, "一二三"], seed=0)[-2:] == [alone, "一二三"]


def test_line_pairs_cross_adjacent_lines_only():
    assert R.line_pairs("白日，黄河。欲穷") == ["白黄", "白河", "日黄", "日河", "黄欲", "黄穷", "河欲", "河穷"]
    assert R.line_pairs("一行") == []


def _tang(files: int):
    from tangshi.config import DataConfig
    from tangshi.data.corpus import load_corpus

    need_shared_data()
    return load_corpus([TANG / f"poet.tang.{1000 * k}.json" for k in range(files)], DataConfig(), use_cache=False)


@pytest.mark.slow
def test_coherence_scores_human_poems_above_their_shuffled_versions():
    texts = _tang(5).texts
    judge = R.Coherence().fit(texts[:3000], seed=0)
    held_out = [t for t in texts[3000:] if R.form_of(t) != "other"][:300]
    assert len(held_out) == 300 and judge.poems > 1500
    shuffled = R.shuffle_lines(held_out, seed=1)
    human, mixed = judge.score(held_out), judge.score(shuffled)
    assert sum(h > s for h, s in zip(human, mixed, strict=True)) / len(human) > 0.6
    report = R.coherence_report(judge, shuffled[:150] + held_out[150:], held_out, shuffled)
    assert report["human"] > report["shuffled"] + 0.01
    assert 0.2 < report["position"] < 0.8  # half human, half shuffled: about half way
    assert R.coherence_report(judge, held_out, held_out, shuffled)["position"] == 1.0


def test_retrieval_finds_each_poem_itself():
    assert R.title_retrieval(JUEJU, JUEJU, JUEJU, seed=0) == 1.0
    # the first character is left out: a poem that shares only it is not found
    strangers = [t[0] + _shifted(t[1:]) for t in JUEJU]
    assert R.title_retrieval(strangers, JUEJU, JUEJU, seed=0) == 0.0


def test_retrieval_needs_nine_others_of_the_form():
    with pytest.raises(ValueError, match="other poems of the form"):
        R.title_retrieval(JUEJU[:1], JUEJU[:1], JUEJU[:9])
    with pytest.raises(ValueError, match="generated poems"):
        R.title_retrieval(JUEJU[:2], JUEJU[:1], JUEJU)


def test_attribution_picks_the_right_poet_and_leaves_placeholders_out():
    mountains, rivers, city = "山松云石峰岩鹤溪", "江河水波舟帆渡浪", "城楼宫阙街市车马"
    texts = _poems_of(mountains, 30, 1) + _poems_of(rivers, 20, 2) + _poems_of(city, 10, 3) + _poems_of(city, 40, 4)
    authors = ["甲"] * 30 + ["乙"] * 20 + ["丙"] * 10 + ["不详"] * 40
    judge = R.PoetAttribution(top=2).fit(texts, authors)
    assert judge.poets == ["甲", "乙"]  # the two with most poems; 不详 is no poet
    assert judge.share(_poems_of(mountains, 10, 5), "甲") == 1.0
    assert judge.share(_poems_of(rivers, 10, 6), "甲") == 0.0
    ref = judge.reference(_poems_of(rivers, 10, 7) + _poems_of(city, 5, 8), ["乙"] * 10 + ["丙"] * 5)
    assert ref["poems"] == 10 and ref["share"] == 1.0 and ref["chance"] == 0.5 and set(ref["poets"]) == {"乙"}
    with pytest.raises(ValueError, match="not among"):
        judge.share(texts, "丙")


def test_keywords_present_and_in_their_planned_line():
    text = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"
    report = R.keyword_report([text], [[("明月", 0), ("故乡", 3), ("地上", 0), ("白云", 1)]])
    assert report == {"keywords": 4, "present": 0.75, "placed": 0.5}
    assert R.keyword_report([text], [[]])["present"] is None


def test_fitted_judges_are_kept_for_the_process():
    a = R.fitted("coherence", JUEJU, seed=0)
    assert R.fitted("coherence", JUEJU, seed=0) is a
    assert R.fitted("coherence", JUEJU, seed=1) is not a
    with pytest.raises(ValueError, match="unknown judge"):
        R.fitted("taste", JUEJU)
