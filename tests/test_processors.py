"""The processors over a step's scores, each alone, and the list that orders them and refuses a mode's
own where the other mode is asked for (no model: toy vocabularies and scores)."""

from __future__ import annotations

import pytest
import torch

from tangshi.data.vocab import BOS, EOS, PAD, UNK, Vocab
from tangshi.generation.processors import (
    ORDER,
    Blocked,
    CalibrationBias,
    Diversity,
    Guidance,
    Processors,
    Repetition,
    Steering,
    Step,
    Temperature,
    TopicBias,
    TopK,
    log_prior,
    sampling,
)
from tangshi.generation.sampling import Draw
from tangshi.options import OptionError

STEP = Step(0, may_end=True)


def vocab() -> Vocab:
    """Specials, then 月 (4 times), 风 (twice), 花 (once)."""
    return Vocab.build(["月月月月风风花"])


def test_the_list_runs_its_processors_in_the_fixed_order_whatever_order_they_come_in():
    v = vocab()
    steps = Processors([Temperature(0.5), Repetition(2.0, 1, len(v)), Blocked(v)], "sample", Draw())
    assert [type(p) for p in steps] == [Blocked, Repetition, Temperature]
    assert [ORDER.index(type(p)) for p in steps] == sorted(ORDER.index(type(p)) for p in steps)
    scores = torch.tensor([[1.0] * len(v)])
    steps.update(torch.tensor([4]))  # id 4 written: its score is halved by the penalty, before the temperature
    out = steps.warp(steps(scores.clone(), STEP), STEP)
    assert out[0, 4] == pytest.approx(1.0) and out[0, 5] == pytest.approx(2.0)
    assert torch.isinf(out[0, [PAD, UNK, BOS]]).all() and torch.isfinite(out[0, EOS])


@pytest.mark.parametrize(
    ("items", "draw", "field"),
    [
        ([Temperature(0.5)], None, "temperature"),
        ([TopK(5)], None, "top_k"),
        ([], Draw(greedy=True), "greedy"),
        ([], Draw(top_p=0.9), "top_p"),
    ],
)
def test_sampling_processors_are_refused_by_name_in_beam_search(items, draw, field):
    with pytest.raises(OptionError, match=f"--{field.replace('_', '-')} applies when sampling, not with --beam") as e:
        Processors([Blocked(vocab()), *items], "beam", draw)
    assert e.value.field == field
    Processors([Blocked(vocab()), *items], "sample", draw)  # the same list is fine for sampling


def test_blocked_ids_are_never_written():
    v = vocab()
    out = Blocked(v)(torch.zeros(2, len(v)), STEP)
    assert torch.isinf(out[:, [PAD, UNK, BOS]]).all() and torch.isfinite(out[:, 3:]).all()


def test_guidance_adds_the_titles_effect_and_halves_the_rows():
    given = torch.tensor([[2.0, 1.0, 0.0]])
    plain = torch.tensor([[1.0, 1.0, 1.0]])
    out = Guidance(2.0, 1)(torch.cat([given, plain]), STEP)  # (2B, V) -> (B, V)
    gap = given.log_softmax(-1) - plain.log_softmax(-1)
    assert out.shape == (1, 3) and torch.allclose(out, given + 2.0 * gap)
    assert Processors([Guidance(2.0, 1)], "beam").guided and Processors([Guidance(2.0, 1)], "beam").biased


def test_diversity_lowers_the_commonest_ids_by_their_log_frequency():
    v = vocab()
    moon, flower = v.id("月"), v.id("花")
    out = Diversity(0.5, v)(torch.zeros(1, len(v)), STEP)
    assert out[0, flower] > out[0, moon]  # anti-LM: the rarer character now leads
    assert torch.allclose(out[0], -0.5 * v.log_prior())
    bare = Vocab(v.tokens)  # a vocabulary saved without its counts
    for make in (lambda: log_prior(bare), lambda: Diversity(0.5, bare)):
        with pytest.raises(OptionError, match="--diversity needs the character counts") as e:
            make()
        assert e.value.field == "diversity"


def test_repetition_follows_each_rows_ids_and_the_rows_kept():
    r = Repetition(2.0, 2, 6)
    r.update(torch.tensor([4, 5]))
    scores = torch.tensor([[2.0] * 6, [-2.0] * 6])
    out = r(scores, STEP)
    assert out[0, 4] == 1.0 and out[0, 5] == 2.0 and out[1, 5] == -4.0 and out[1, 4] == -2.0
    r.select(torch.tensor([1, 1]))  # beam search keeps hypothesis 1 twice
    assert r.seen[:, 5].all() and not r.seen[:, 4].any()


def test_topic_and_calibration_add_up_and_the_end_keeps_its_probability():
    topic, calibration = torch.zeros(6), torch.zeros(6)
    topic[4], calibration[5] = 2.0, -1.0
    s = Steering([TopicBias(topic), CalibrationBias(calibration)], None, 1, 6)
    scores = torch.randn(1, 6, generator=torch.Generator().manual_seed(1))
    out = s(scores, STEP)
    assert torch.allclose(out[0, 4] - out[0, 5], scores[0, 4] - scores[0, 5] + 3.0)
    assert torch.allclose(out.softmax(-1)[0, EOS], scores.softmax(-1)[0, EOS])
    assert torch.equal(s(scores, Step(0, may_end=False)), scores + topic + calibration)  # no shift: no end to choose
    assert not Processors([], "sample", Draw()).biased and Processors([s], "sample", Draw()).biased


def test_the_plain_sampling_list_is_greedy_without_temperature():
    v = vocab()
    assert [type(p) for p in sampling(v, greedy=True)] == [Blocked]
    assert [type(p) for p in sampling(v, top_k=3)] == [Blocked, Temperature, TopK]


def test_stock_phrases_lower_the_second_character_after_the_first_and_follow_the_rows():
    from tangshi.generation.processors import StockPhrases

    stock = StockPhrases(1.5, {3: torch.tensor([5, 6])}, batch=3)
    stock.update(torch.tensor([3, 4, 3]))
    out = stock(torch.zeros(3, 8), Step(1, may_end=True))
    assert out[0].tolist() == [0, 0, 0, 0, 0, -1.5, -1.5, 0] and out[1].eq(0).all() and out[2, 5] == -1.5
    stock.select(torch.tensor([1, 1, 0]))  # a beam keeps row 1 twice, then row 0
    out = stock(torch.zeros(3, 8), Step(2, may_end=True))
    assert out[:2].eq(0).all() and out[2, 6] == -1.5
