"""Steering while sampling: lines toward what follows the previous line in the corpus (cohesion), the
poem toward its title, keywords and theme (topic), and toward a poet's characters (manner)."""

from __future__ import annotations

from functools import cache

import pytest
import torch

from tangshi import Poet
from tangshi.data.vocab import BOS, EOS, PAD, UNK
from tangshi.generation.processors import CohesionBias, Steering, Step, TopicBias, table_rows
from tangshi.options import OptionError
from tangshi.prosody import regular as prosody


@cache
def poet() -> Poet:
    return Poet.load()


def toy(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """A 10-id vocabulary: 4 and 5 are characters, 6 ends a line; 4 is followed by 7 (PPMI 2) and 8 (1),
    9 by 7 (0.5) ([this, next], as `Poet.following` gives it)."""
    ids, values = torch.tensor([[4, 4, 9], [7, 8, 7]]), torch.tensor([2.0, 1.0, 0.5])
    table = table_rows(torch.sparse_coo_tensor(ids, values, (10, 10), check_invariants=True))
    breaks = torch.zeros(10, dtype=torch.bool)
    breaks[6] = True
    return table, breaks


def steering(table, weight: float, breaks: torch.Tensor, batch: int, topic: torch.Tensor | None = None) -> Steering:
    fixed = [TopicBias(topic)] if topic is not None else []
    return Steering(fixed, CohesionBias(table, weight, breaks, batch, "cpu"), batch, breaks.numel())


SHIFT = Step(0, may_end=True)


def test_the_line_bias_follows_the_line_just_ended():
    table, breaks = toy()
    s = steering(table, 0.5, breaks, 2)
    logits = torch.zeros(2, 10)
    assert torch.equal(s(logits, SHIFT), logits)  # nothing written yet
    s.update(torch.tensor([4, 5]))
    s.update(torch.tensor([5, 6]))  # row 1 ends a line of 5 alone: 5 is followed by nothing
    s.update(torch.tensor([4, 4]))
    assert torch.equal(s(logits, SHIFT), logits)
    s.update(torch.tensor([6, 4]))  # row 0 ends the line 4 5 4: the mean of 4, 5, 4's rows
    bias = s(logits, SHIFT)[0]
    assert bias[7] == pytest.approx(0.5 * 2 * 2 / 3) and bias[8] == pytest.approx(0.5 * 1 * 2 / 3)
    assert bias[4] == 0 and torch.equal(s(logits, SHIFT)[1], logits[1])


def test_beam_search_keeps_each_rows_bias_with_its_hypothesis():
    table, breaks = toy(3)
    s = steering(table, 1.0, breaks, 3)
    for ids in ([4, 5, 9], [6, 6, 6]):  # rows 0 and 2 end lines with different characters
        s.update(torch.tensor(ids))
    before = s(torch.zeros(3, 10), SHIFT)
    s.select(torch.tensor([2, 2, 0]))
    assert torch.equal(s(torch.zeros(3, 10), SHIFT), before[[2, 2, 0]])


def test_steering_keeps_the_probability_of_line_breaks_and_the_end():
    table, breaks = toy()
    topic = torch.zeros(10)
    topic[[4, 5]] = torch.tensor([3.0, 1.0])
    s = steering(table, 1.0, breaks, 2, topic=topic)
    logits = torch.randn(2, 10, generator=torch.Generator().manual_seed(0))
    before, after = logits.softmax(-1), s(logits, SHIFT).softmax(-1)
    for i in (6, EOS):
        assert torch.allclose(before[:, i], after[:, i], atol=1e-6)
    assert (after[:, 4] / after[:, 5] > before[:, 4] / before[:, 5]).all()  # 4 raised more than 5


def pair_ppmi(texts: list[str]) -> float:
    """The mean PPMI (the checkpoint's next-line table) of the pairs of adjacent lines' characters."""
    table = {(a, b): v for a, b, v in poet().words.following()}
    total, pairs = 0.0, 0
    for t in texts:
        lines = prosody.split_lines(t)
        for upper, lower in zip(lines, lines[1:], strict=False):
            total += sum(table.get((a, b), 0.0) for a in upper for b in lower)
            pairs += len(upper) * len(lower)
    return total / pairs


def share(texts: list[str], chars: set[str]) -> float:
    body = "".join(ch for t in texts for ch in t if prosody.is_han(ch))
    return sum(ch in chars for ch in body) / len(body)


BEGINS = list("春秋山水风月花云江夜")


@pytest.mark.slow
def test_cohesion_writes_lines_that_go_together_and_keeps_the_form():
    plain = poet().write(BEGINS, form="五律", seed=1, cohesion=0)
    steered = poet().write(BEGINS, form="五律", seed=1, cohesion=1.0)
    assert pair_ppmi([p.text for p in steered]) > 1.3 * pair_ppmi([p.text for p in plain])
    for p in steered:
        r = prosody.check(p.text)
        assert r.form == "五律" and r.rhyme and r.relaxed == 1.0
    again = poet().write(BEGINS, form="五律", seed=1, cohesion=1.0)
    assert [p.text for p in again] == [p.text for p in steered]


@pytest.mark.slow
def test_a_poets_manner_brings_the_poets_characters():
    favoured = set(poet().words.manner_of("李白"))
    assert favoured
    plain = poet().write(BEGINS, form="七绝", seed=2, author="李白", manner=0)
    steered = poet().write(BEGINS, form="七绝", seed=2, author="李白", manner=2.0)
    assert share([p.text for p in steered], favoured) > 1.2 * share([p.text for p in plain], favoured)


@pytest.mark.slow
def test_a_title_steers_toward_poems_under_such_titles():
    topic = poet().words.topic("送友人")
    near = {ch for ch, v in topic.items() if v > 0.5}
    assert near
    plain = poet().write(BEGINS, form="五绝", seed=3, title="送友人", topic=0)
    steered = poet().write(BEGINS, form="五绝", seed=3, title="送友人", topic=2.0)
    assert share([p.text for p in steered], near) > 1.2 * share([p.text for p in plain], near)


@pytest.mark.slow
def test_a_title_alone_is_planned_from_in_a_regular_form_when_asked():
    poems = poet().write(BEGINS[:4], form="七律", seed=3, title="秋夜独坐其二", plan=True)
    for p in poems:
        assert p.plan and {"独坐"} <= set(e["word"] for e in p.plan) and not any(e["given"] for e in p.plan)
        assert all("二" not in e["word"] for e in p.plan)  # the series number is no subject
        lines = p.prosody["lines"]
        assert all(e["word"] in lines[e["line"]] for e in p.plan)
        assert p.prosody["form"] == "七律" and p.prosody["rhyme"] and p.prosody["relaxed_ok"]
    unplanned = poet().write(BEGINS[:4], form="七律", seed=3, title="秋夜独坐其二")  # no plan by default
    assert all(p.plan is None for p in unplanned) and [p.text for p in unplanned] != [p.text for p in poems]
    assert poet().write("春", seed=3, title="秋夜独坐", plan=True)[0].plan is None  # a free poem keeps its shape
    assert poet().write("春", seed=3, title="无题", form="五律", plan=True)[0].plan is None  # nothing to plan from


@pytest.mark.slow
def test_title_guidance_is_stronger_by_default_for_a_planned_poem():
    def texts(**kw):
        return [p.text for p in poet().write(BEGINS[:2], form="五律", seed=5, title="秋夜独坐", **kw)]

    assert texts(plan=True) == texts(plan=True, guidance=4) != texts(plan=True, guidance=2)
    assert texts() == texts(guidance=2) != texts(guidance=4)


@pytest.mark.slow
def test_steering_options_are_bounded():
    with pytest.raises(OptionError) as e:
        poet().write("月", cohesion=-1)
    assert e.value.field == "cohesion"
    with pytest.raises(OptionError) as e:
        poet().write("月", manner=float("nan"))
    assert e.value.field == "manner"


@pytest.mark.slow
def test_beam_search_is_steered_too_and_reports_the_models_own_likelihood():
    best = {"beam_temperature": 0, "relevance_weight": 0, "coherence_weight": 0}  # the search's best, not reranked
    plain = poet().write(BEGINS[:4], form="五绝", beam=4, cohesion=0, **best)
    steered = poet().write(BEGINS[:4], form="五绝", beam=4, cohesion=1.0, **best)
    assert pair_ppmi([p.text for p in steered]) > pair_ppmi([p.text for p in plain])
    for a, b in zip(plain, steered, strict=True):
        assert prosody.check(b.text).rhyme and b.nll >= a.nll - 1e-4  # the search's best is the model's likeliest
    assert [p.text for p in poet().write(BEGINS[:4], form="五绝", beam=4, **best)] == [p.text for p in plain]  # off


# ---------------------------------------------------------------- guidance (classifier-free)


@pytest.mark.slow
def test_guidance_samples_from_the_guided_distribution():
    """Greedy with guidance g picks argmax of log p(x | title) + g (log p(x | title) - log p(x | plain)),
    computed here by reading both contexts step by step."""
    from tangshi.generation.processors import Blocked, Guidance, Processors
    from tangshi.generation.sampling import Draw
    from tangshi.generation.search import prime, sample

    p = poet()
    v = p.vocab
    title = [v.id(c) for c in "送友人"]
    ctx, plain = [BOS, *title, v.sep], [BOS]
    model = p.model.eval()
    with torch.inference_mode():
        x, s = prime(model, [ctx], "cpu")
        lc, _ = model.step(x, s)
        lu, _ = model.step(torch.tensor([BOS]), None)
        lc, lu = lc.float(), lu.float()
        for g in (0.0, 3.0):
            want = lc.log_softmax(-1) + g * (lc.log_softmax(-1) - lu.log_softmax(-1))
            want[:, [PAD, UNK, BOS, *v.conditions]] = float("-inf")  # never written
            steps = Processors([Blocked(v), *([Guidance(g, 1)] if g else [])], "sample", Draw(greedy=True))
            got = sample(model, v, [""], steps, [0], max_length=1, contexts=[ctx], plain_contexts=[plain])
            best = int(want.argmax())
            assert got[0].text == ("" if best == EOS else v.tokens[best])


@pytest.mark.slow
def test_guidance_only_acts_with_a_title_and_keeps_the_form():
    p = poet()
    plain = p.write("月", seeds=[3], guidance=5)  # no title: nothing to guide by
    assert plain[0].text == p.write("月", seeds=[3], guidance=0)[0].text
    a = p.write("", seeds=[3], form="五律", title="送友人", guidance=0)[0]
    b = p.write("", seeds=[3], form="五律", title="送友人", guidance=2)[0]
    assert a.text != b.text
    assert prosody.check(b.text).form == "五律" and prosody.check(b.text).rhyme and prosody.check(b.text).relaxed_ok


@pytest.mark.slow
def test_guidance_is_bounded():
    with pytest.raises(OptionError):
        poet().write("", title="送友人", guidance=-1)


def test_a_line_bias_is_its_characters_rows_of_the_table_averaged():
    g = torch.Generator().manual_seed(3)
    dense = torch.rand(30, 30, generator=g) * (torch.rand(30, 30, generator=g) < 0.2)  # [this, next]
    breaks = torch.zeros(30, dtype=torch.bool)
    breaks[3] = True
    s = CohesionBias(table_rows(dense.to_sparse()), 1.0, breaks, 3, "cpu")
    lines = torch.tensor([[5, 9, 5, 3], [7, 3, 8, 3], [11, 12, 13, 14]])  # rows 0 and 1 end a line
    for t in range(lines.shape[1]):
        s.update(lines[:, t])
    assert torch.allclose(s.bias[0], (2 * dense[5] + dense[9]) / 3)
    assert torch.allclose(s.bias[1], dense[8]) and torch.equal(s.bias[2], torch.zeros(30))


@pytest.mark.parametrize("few", [0, 16])
def test_lines_ending_together_or_not_and_few_or_many_characters_give_the_same_bias(few, monkeypatch):
    """Every row ending its line at once takes a shorter way, and a few characters' rows of the table
    are added one by one: the same numbers, bit for bit, as the rows of a batch where one row writes
    on, whose table rows are gathered all at once."""
    g = torch.Generator().manual_seed(5)
    dense = torch.rand(40, 40, generator=g) * (torch.rand(40, 40, generator=g) < 0.3)
    breaks = torch.zeros(40, dtype=torch.bool)
    breaks[3] = True
    lines = torch.randint(4, 40, (5, 6), generator=g)
    together, mixed = (
        CohesionBias(table_rows(dense.to_sparse()), 0.7, breaks, 4, "cpu"),
        CohesionBias(table_rows(dense.to_sparse()), 0.7, breaks, 5, "cpu"),
    )
    for t in range(6):
        together.update(lines[:4, t])
        mixed.update(lines[:, t])
    monkeypatch.setattr("tangshi.generation.processors.FEW_CHARACTERS", few)
    together.update(torch.full((4,), 3))
    monkeypatch.setattr("tangshi.generation.processors.FEW_CHARACTERS", 0)
    mixed.update(torch.tensor([3, 3, 3, 3, 7]))  # the last row writes on
    assert together.bias.abs().sum() > 0 and torch.equal(together.bias, mixed.bias[:4])
    assert torch.equal(mixed.bias[4], torch.zeros(40))


REQUESTS = [dict(form="五绝", title="春望"), dict(cipai="如梦令", title="春"), dict(acrostic="春夏秋冬", title="秋")]


@pytest.mark.slow
@pytest.mark.parametrize("request_", REQUESTS)
def test_the_masks_shortcuts_write_the_same_poems(monkeypatch, request_):
    """Where every row has one id left, where no row may choose a line's end, and where the form
    forbids repeats, sampling skips the processors and the draw, the steering's shift and the repeat
    penalty: the same poems as with every step taken the long way."""
    from tangshi.generation import constraints

    fast = poet().write(["", ""], num=4, seed=2, **request_).poems
    for mask in (constraints.FormMask, constraints.CiMask):
        allowed = mask.allowed

        def long_way(self, allowed=allowed):
            return constraints.Allowed(allowed(self).ids, single=False, may_end=True)

        monkeypatch.setattr(mask, "allowed", long_way)
        monkeypatch.setattr(mask, "masks_repeats", False)
    shifted = Steering.__call__
    monkeypatch.setattr(Steering, "__call__", lambda self, scores, step: shifted(self, scores, SHIFT))
    slow = poet().write(["", ""], num=4, seed=2, **request_).poems
    assert [(p.text, p.nll, p.failure) for p in slow] == [(p.text, p.nll, p.failure) for p in fast]


@pytest.mark.slow
def test_a_regular_forms_mask_offers_no_line_end_beside_a_character_and_no_written_character():
    from tangshi.generation.constraints import FormMask
    from tangshi.generation.tables import FREE_MIN, free_form, get_form

    vp = poet().vocab_prosody
    mask = FormMask(vp, get_form("五绝"), 2)
    written = []
    for t in range(24):
        step = mask.allowed()
        allowed = step.ids
        assert not step.may_end and mask.masks_repeats
        assert step.single == bool((allowed.sum(dim=1) == 1).all())
        assert step.single == (t % 6 == 5)  # the punctuation after each line of five
        assert not allowed[:, written].any() or step.single
        ids = allowed.to(torch.uint8).argmax(dim=1)
        written.append(int(ids[0]))
        mask.update(ids)
    free = FormMask(vp, free_form(4), 1)
    for _ in range(FREE_MIN):
        free.update(free.allowed().ids.to(torch.uint8).argmax(dim=1))
    step = free.allowed()
    assert step.ids[0, vp.comma] and step.may_end and not free.masks_repeats
