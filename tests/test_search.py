"""Beam search, sample-then-rerank, rejected copies, free acrostics and the messages of impossible
requests, with the bundled model."""

from __future__ import annotations

from functools import cache

import pytest

from tangshi import Poet
from tangshi.data.lineindex import LineIndex
from tangshi.generation.tables import FormError
from tangshi.options import OptionError
from tangshi.prosody import regular as prosody

pytestmark = pytest.mark.slow  # each test writes with the bundled model


@cache
def poet() -> Poet:
    return Poet.load()


def test_beam_search_writes_the_form_and_repeats_exactly():
    a = poet().write(["月", "山"], form="五绝", beam=4, num=2, seed=3)
    b = poet().write(["月", "山"], form="五绝", beam=4, num=2, seed=3)
    assert [p.text for p in a] == [p.text for p in b] and len(a) == 4
    assert [p.begin for p in a] == ["月", "月", "山", "山"] and a[0].text != a[1].text
    for p in a:
        r = prosody.check(p.text)
        assert r.form == "五绝" and r.rhyme and r.relaxed == 1.0 and p.text.startswith(p.begin)


def test_the_default_beam_is_drawn_by_the_seed_and_the_deterministic_one_is_not():
    def text(**kw):
        return poet().write("月", form="五律", **kw)[0].text

    assert text(seed=1) != text(seed=2) and text(seed=1) == text(seed=1)  # a stochastic beam of 8
    assert text(seed=1, beam_temperature=0) == text(seed=2, beam_temperature=0)
    drawn = poet().write("月", form="五律", seed=1)[0]
    assert drawn.seed == 1 and drawn.prosody["rhyme"] and drawn.prosody["relaxed"] == 1.0


def written_twice(begin: str, form: str, **options) -> tuple:
    """(a poem written with copies allowed, the same request again with that poem's lines as the
    corpus index, the index)."""
    first = poet().write(begin, form=form, allow_copies=True, **options)[0]
    index = LineIndex.of_texts([first.text])
    saved, poet().ckpt.lines = poet().ckpt.lines, index
    try:
        again = poet().write(begin, form=form, **options)[0]
    finally:
        poet().ckpt.lines = saved
    assert not index.copied(again.text) and prosody.check(again.text).form == form
    return first, again, index


def test_beam_search_avoids_lines_of_the_corpus():
    first, again, _ = written_twice("月", "五律", beam=4)
    assert again.text != first.text


def test_sampling_rejects_copied_lines_and_writes_again():
    first, again, _ = written_twice("日", "五绝", seed=11, beam=0)
    assert first.seed == 11 and again.seed != 11  # a later try's seed, so it can be written again


def test_rerank_keeps_the_best_scored_candidate():
    n, seed = 4, 20
    plain = {"allow_copies": True, "relevance_weight": 0.0, "coherence_weight": 0.0}  # no bonus for sense
    best = poet().write("湖", form="七绝", seed=seed, rerank=n, **plain)[0]
    singles = [poet().write("湖", form="七绝", seed=seed + c, beam=0, **plain)[0] for c in range(n)]

    def score(p):
        r = prosody.check(p.text)
        return -p.nll + (r.rhyme + r.relaxed + r.strict) / 3

    assert best.text == max(singles, key=score).text


def test_acrostic_without_a_form_has_free_length_lines():
    heads = "春夏秋冬夜"
    for p in poet().write("", acrostic=heads, num=3, seed=5):
        lines = prosody.split_lines(p.text)
        assert [ln[0] for ln in lines] == list(heads) and all(4 <= len(ln) <= 9 for ln in lines)
        assert p.acrostic == heads and p.ended


def test_strict_tones_that_cannot_be_met_name_the_line():
    # 明 is 平, so the line takes 平起 templates, whose character 2 is 平; 月 is 仄
    with pytest.raises(FormError, match="could not be met in 3 tries .* line 1, character 2: '月' is 仄 where"):
        poet().write("明月", form="五绝", tones="strict", budget=3, seed=1, beam=0)
    with pytest.raises(FormError, match="could not be met by a beam of 8: the poem for .明月. failed at line 1"):
        poet().write("明月", form="五绝", tones="strict", seed=1)
    poem = poet().write("明月", form="五绝", tones="relaxed", seed=1)[0]  # character 1 is free: a 仄起 line
    assert poem.failure is None and poem.prosody["relaxed"] == 1.0


@pytest.mark.parametrize(
    ("request_", "field", "message"),
    [
        ({"acrostic": "春龘", "form": "五绝"}, "acrostic", "acrostic head '龘' is not in the model's vocabulary"),
        (
            {"acrostic": "春夏秋冬春", "form": "五绝"},
            "acrostic",
            "acrostic '春夏秋冬春' has 5 heads but a 五绝 has 4 lines",
        ),
        (
            {"acrostic": "春夏秋", "form": "五绝"},
            "acrostic",
            "has 3 heads but a 五绝 has 4 lines: give one head a line",
        ),
        (
            {"begin": "月", "acrostic": "春夏"},
            "acrostic",
            "begin '月' and --acrostic '春夏': the first line must start",
        ),
        ({"begin": "月", "rhyme": "阳"}, "rhyme", "--rhyme needs --form"),
        ({"begin": "月", "beam": 2, "num": 3}, "num", "--num 3 must be at most --beam 2"),
        ({"begin": "月", "rerank": 0}, "rerank", "--rerank must be >= 1 and <= 64, got 0"),
        ({"begin": "月", "temperature": float("inf")}, "temperature", "--temperature must be a finite number"),
        ({"begin": "月", "repetition_penalty": float("nan")}, "repetition_penalty", "must be a finite number"),
        ({"begin": "月" * 17}, "begin", "has 17 characters, at most 16"),
        ({"begin": "月", "colour": "red"}, "colour", "unknown writing option 'colour'"),
    ],
)
def test_impossible_requests_are_named(request_, field, message):
    request_ = dict(request_)
    begin = request_.pop("begin", "")
    with pytest.raises(OptionError, match=message) as caught:
        poet().write(begin, **request_)
    assert caught.value.field == field


@pytest.mark.parametrize("form", ["五绝", "七绝", "五律", "七律"])
def test_keywords_and_themes_are_in_their_planned_lines_and_the_form_holds(form):
    asks = [{"keywords": ("明月", "故乡")}, {"theme": "送别友人"}, {"keywords": ("秋风",), "theme": "思乡"}]
    for i, ask in enumerate(asks):
        for beam in (0, 2):
            poem = poet().write("", form=form, seed=i, beam=beam, **ask)[0]
            r = prosody.check(poem.text)
            assert r.form == form and r.rhyme and r.relaxed == 1.0, poem.text
            lines = prosody.split_lines(poem.text)
            assert len(poem.plan) == len(lines) or "theme" in ask  # a plan may run out of words
            for entry in poem.plan:
                assert entry["word"] in lines[entry["line"]], (entry, poem.text)
            assert [e["word"] for e in poem.plan if e["given"]] == list(ask.get("keywords", ()))


def test_a_keyword_that_cannot_be_placed_is_named():
    with pytest.raises(OptionError, match="keyword '明月' cannot be placed in line 1") as caught:
        poet().write("月", keywords=("明月",), form="五绝", seed=1)
    assert caught.value.field == "keywords"


def test_reranking_for_sense_scores_coherent_lines_above_shuffled_ones():
    from tangshi.generation.decode import sense
    from tangshi.generation.request import resolve
    from tangshi.options import WriteOptions

    opts = WriteOptions(form="七绝", rerank=2, coherence_weight=1.0).validate()
    plan = resolve(poet().bundle, [""], opts)
    real = poet().write("", form="七绝", seed=1, allow_copies=True)[0]
    lines = prosody.split_lines(real.text)
    swapped = type(real)(**{**real.__dict__, "text": f"{lines[2]}，{lines[1]}。{lines[0]}，{lines[3]}。"})
    human = type(real)(**{**real.__dict__, "text": "故人西辞黄鹤楼，烟花三月下扬州。孤帆远影碧空尽，唯见长江天际流。"})
    shuffled = type(real)(
        **{**real.__dict__, "text": "孤帆远影碧空尽，烟花三月下扬州。故人西辞黄鹤楼，唯见长江天际流。"}
    )
    a, b = sense(poet(), plan, [human, shuffled], opts)
    assert a > b > -5  # the lines of the real poem help predict each other more than in a shuffled order
    unweighted = WriteOptions(form="七绝", relevance_weight=0, coherence_weight=0).validate()
    assert sense(poet(), plan, [swapped], unweighted) == [0.0]  # weights 0: no bonus


def test_beam_search_is_guided_by_the_title():
    """One processor list for both loops: --guidance acts in beam search too (2 with a title by default)."""

    def texts(**kw):
        return [p.text for p in poet().write("", title="送友人", form="五律", beam=4, seed=1, **kw)]

    assert texts(guidance=3) != texts(guidance=0) != texts() == texts(guidance=2)
    poem = poet().write("", title="送友人", form="五律", beam=4, seed=1, guidance=3)[0]
    assert prosody.check(poem.text).form == "五律" and poem.prosody["rhyme"]


def test_beam_search_applies_diversity_when_asked_and_refuses_sampling_options_by_name():
    plain = poet().write("月", form="五绝", beam=4, seed=1)[0].text
    assert poet().write("月", form="五绝", beam=4, seed=1, diversity=0)[0].text == plain  # 0 for beam unless asked
    assert poet().write("月", form="五绝", beam=4, seed=1, diversity=1.0)[0].text != plain
    for option, value in (("temperature", 0.5), ("top_k", 5), ("top_p", 0.9), ("greedy", True)):
        with pytest.raises(OptionError, match="applies when sampling, not with --beam") as e:
            poet().write("月", beam=4, **{option: value})
        assert e.value.field == option
    assert poet().write("月", beam=4, temperature=0.9)[0].text  # the default is never refused


def test_looking_ahead_to_the_rhyme_makes_the_rhymes_likelier_and_keeps_the_form():
    from tangshi.data.vocab import BOS
    from tangshi.evaluation.losses import token_logprobs

    def rhymes(lookahead: int) -> float:
        """The model's mean log-probability of the rhyme characters (lines 2, 4, 6, 8) of 8 五律."""
        got = []
        for p in poet().write(list("月山春秋风花江云"), form="五律", seed=7, lookahead=lookahead):
            r = prosody.check(p.text)
            assert r.form == "五律" and r.rhyme and r.relaxed == 1.0
            lp = token_logprobs(poet().model, [poet().vocab.encode(p.text)], [[BOS]])[0]
            got += [lp[k * 6 + 4] for k in (1, 3, 5, 7)]  # 5 characters and a mark a line
        return sum(got) / len(got)

    assert rhymes(16) > rhymes(0) + 0.2
    again = poet().write("月", form="五律", seed=7, lookahead=16)[0].text
    assert again == poet().write("月", form="五律", seed=7, lookahead=16)[0].text
