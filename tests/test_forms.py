"""Form masks without a model: random scores under the masks always give the form, the rhyme and
the tone template; impossible requests are named."""

from __future__ import annotations

import re
from functools import cache

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tangshi.api import bundled_path
from tangshi.data.vocab import EOS, Vocab
from tangshi.generation.constraints import CiMask, FormMask
from tangshi.generation.tables import FREE_MAX, FREE_MIN, CiProsody, FormError, VocabProsody, free_form, get_form
from tangshi.prosody import cipai, regular


@cache
def vp() -> VocabProsody:
    return VocabProsody(Vocab.load(bundled_path() / "vocab.json"))


def decode(mask: FormMask, seed: int) -> list[str]:
    """What a sampler would write under the mask, with random scores instead of a model."""
    g = torch.Generator().manual_seed(seed)
    vocab = mask.vp.vocab
    out: list[list[int]] = [[] for _ in range(mask.batch)]
    for _ in range(mask.form.length + 1):
        scores = torch.rand(mask.batch, len(vocab), generator=g)
        allowed = mask.allowed().ids
        assert allowed.any(dim=-1).all()
        ids = scores.masked_fill(~allowed, -1).argmax(dim=-1)
        mask.update(ids)
        for r, i in enumerate(ids.tolist()):
            out[r].append(i)
    assert all(row[-1] == EOS for row in out)
    return [vocab.decode(row[:-1]) for row in out]


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    form=st.sampled_from(list(regular.FORMS)),
    tones=st.sampled_from(["relaxed", "strict"]),
    heads=st.sampled_from(["", "春夏秋冬", "日月", "春夏日天"]),
)
def test_any_poem_under_the_mask_has_the_form_rhyme_and_tones(seed, form, tones, heads):
    shape = get_form(form)
    try:
        mask = FormMask(vp(), shape, 3, heads=[heads] * 3, tones=tones)
    except FormError as e:  # heads whose tones no strict template takes are refused up front
        assert tones == "strict" and "cannot be met" in str(e)
        assume(False)
    for row, text in enumerate(decode(mask, seed)):
        r = regular.check(text)
        assert r.form == form, text
        assert r.rhyme, text
        assert r.relaxed == 1.0, (text, r.actual)
        if tones == "strict" and mask.failures[row] is None:
            assert r.strict == 1.0, (text, r.actual)
        assert [line[0] for line in r.lines[: len(heads)]] == list(heads)
        chars = [c for c in text if regular.is_han(c)]
        assert len(set(chars)) == len(chars)  # no repeats by default
        assert text[shape.chars] == "，" and text.endswith("。")


def test_given_rhyme_group_is_kept():
    mask = FormMask(vp(), get_form("五律"), 2, rhyme="阳", tones="off")
    for text in decode(mask, 7):
        assert regular.check(text).rhyme_group == "下平声七阳"


def test_impossible_requests_are_named():
    with pytest.raises(FormError, match="--form must be one of"):
        get_form("词")
    with pytest.raises(FormError, match="acrostic '春夏秋冬春' has 5 heads but a 五绝 has 4 lines"):
        FormMask(vp(), get_form("五绝"), 1, heads=["春夏秋冬春"])
    with pytest.raises(FormError, match="--rhyme xyz: not a 平水韵"):
        FormMask(vp(), get_form("五绝"), 1, rhyme="xyz")
    with pytest.raises(FormError, match="acrostic head '，' is not a Chinese character the model knows"):
        FormMask(vp(), get_form("五绝"), 1, heads=["春，"])
    with pytest.raises(FormError, match="--rhyme needs --form"):
        FormMask(vp(), free_form(3), 1, heads=["春夏秋"], rhyme="阳")
    with pytest.raises(FormError, match="--tones must be one of"):
        FormMask(vp(), get_form("五绝"), 1, tones="loose")
    small = VocabProsody(Vocab(["<pad>", "<unk>", "<bos>", "<eos>", "，", "。", "光", "长", "月"]))
    with pytest.raises(FormError, match="the model knows only 2 characters of 下平声七阳"):
        FormMask(small, get_form("五律"), 1, rhyme="阳")


def test_strict_tones_refuse_heads_no_template_takes():
    # 五绝 line starts are 仄平平仄 (仄起) or 平仄仄平 (平起); 春 夏 秋 冬 are 平 仄 平 平
    with pytest.raises(FormError, match="head '秋' \\(平\\) starts line 3, .* starts with 仄; use --tones relaxed"):
        FormMask(vp(), get_form("五绝"), 1, heads=["春夏秋冬"], tones="strict")
    FormMask(vp(), get_form("五绝"), 1, heads=["春夏秋冬"], tones="relaxed")  # relaxed leaves position 1 free
    FormMask(vp(), get_form("五绝"), 1, heads=["春夏日天"], tones="strict")


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), heads=st.sampled_from(["春", "春夏秋", "风花雪月夜"]))
def test_free_acrostic_lines_start_with_the_heads(seed, heads):
    mask = FormMask(vp(), free_form(len(heads)), 2, heads=[heads] * 2)
    for text in decode(mask, seed):
        lines = regular.split_lines(text)
        assert [ln[0] for ln in lines] == list(heads)
        assert all(FREE_MIN <= len(ln) <= FREE_MAX for ln in lines)
        assert text.endswith("。") and text.count("，") == len(heads) // 2


def test_a_free_line_ends_where_the_model_chooses_from_4_to_9_characters():
    mask = FormMask(vp(), free_form(2), 1)
    comma = vp().vocab.id("，")
    for j, ch in enumerate("明月照高楼流光正徘"):
        allowed = mask.allowed().ids[0]
        assert bool(allowed[vp().vocab.id(ch)])  # the line may go on below 9 characters
        assert bool(allowed[comma]) == (j >= FREE_MIN)  # and may end from 4 on
        mask.update(torch.tensor([vp().vocab.id(ch)]))
    assert mask.allowed().ids[0].nonzero().flatten().tolist() == [comma]  # at 9 it ends
    assert FREE_MAX == 9
    # a line with a character fixed further on stays open until it is written
    mask = FormMask(vp(), free_form(2), 1, fixed=[{(0, 6): "月"}])
    for ch in "明清照高楼流":
        assert not bool(mask.allowed().ids[0, comma])
        mask.update(torch.tensor([vp().vocab.id(ch)]))
    assert mask.allowed().ids[0].nonzero().flatten().tolist() == [vp().vocab.id("月")]


def test_a_rule_that_cannot_be_met_is_named():
    # a vocabulary whose 阳 rhymes run out after two lines
    chars = "光长" + "明月清风白日青山红花天寒" + "黄河入海流"
    small = VocabProsody(Vocab(["<pad>", "<unk>", "<bos>", "<eos>", "，", "。", *chars]))
    mask = FormMask(small, get_form("五律"), 1, tones="off")
    mask.groups = [1 << small.groups.index("下平声七阳")]
    decode(mask, 3)
    assert re.fullmatch("line [2468], character 5: no unused character rhymes in 阳", mask.failures[0] or "")


def test_a_row_out_of_characters_inside_a_line_is_noted_and_goes_on():
    # 12 characters for a 五绝's 20 without repeats (4 of them 阳 rhymes): they run out inside line 3
    chars = "光长香阳明月清风白日青山"
    small = VocabProsody(Vocab(["<pad>", "<unk>", "<bos>", "<eos>", "，", "。", *chars]))
    mask = FormMask(small, get_form("五绝"), 2, tones="off")
    poems = decode(mask, 5)
    for poem, failure in zip(poems, mask.failures, strict=True):
        assert len(regular.split_lines(poem)) == 4
        assert failure == "line 3, character 3: no unused character", failure


def test_select_reorders_and_copies_rows():
    mask = FormMask(vp(), get_form("五绝"), 2, heads=["春夏", "秋冬"], tones="off")
    mask.update(torch.tensor([vp().vocab.id("春"), vp().vocab.id("秋")]))
    mask.select([1, 1, 0])
    assert mask.batch == 3 and mask.heads == ["秋冬", "秋冬", "春夏"] and mask.pos == [1, 1, 1]
    assert bool(mask.used[0, vp().vocab.id("秋")]) and not bool(mask.used[2, vp().vocab.id("秋")])
    assert mask.allowed().ids.shape == (3, len(vp().vocab))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), form=st.sampled_from(["五律", "七律"]))
def test_fixed_characters_anywhere_are_written_there_and_reserved(seed, form):
    shape = get_form(form)
    last = shape.chars - 1
    # 光 (平, 阳) on a rhyme, 月 (仄) inside line 3, 山 starting line 5 (unchecked when relaxed)
    fixed = {(1, last): "光", (2, 3): "月", (4, 0): "山"}
    mask = FormMask(vp(), shape, 2, fixed=[fixed, {}])
    texts = decode(mask, seed)
    r = regular.check(texts[0])
    assert r.form == form and r.rhyme and r.relaxed == 1.0 and r.rhyme_group == "下平声七阳", texts[0]
    assert all(r.lines[i][j] == ch for (i, j), ch in fixed.items())
    assert all(texts[0].count(ch) == 1 for ch in "光月山")  # reserved: written once, at their places
    assert regular.check(texts[1]).relaxed == 1.0  # rows are independent


def test_fixed_characters_that_no_template_takes_are_refused():
    shape = get_form("五绝")
    with pytest.raises(FormError, match="fixed character '月' ends line 2, which rhymes") as e:
        FormMask(vp(), shape, 1, fixed=[{(1, 4): "月"}], tones="off")
    assert e.value.field == "keywords"
    # character 2 of lines 1 and 3 always have opposite tones (粘 and 对)
    with pytest.raises(FormError, match="fixed character '明' at line 3, character 2 is 平, which no 五绝 tone"):
        FormMask(vp(), shape, 1, fixed=[{(0, 1): "光", (2, 1): "明"}])
    with pytest.raises(FormError, match="the acrostic head there is '春'"):
        FormMask(vp(), shape, 1, heads=["春夏秋冬"], fixed=[{(0, 0): "秋"}])
    with pytest.raises(FormError, match="outside a 五绝"):
        FormMask(vp(), shape, 1, fixed=[{(4, 0): "秋"}])
    with pytest.raises(FormError, match="not a 平 rhyme of the group"):
        FormMask(vp(), shape, 1, rhyme="东", fixed=[{(1, 4): "光"}])


def walk_ahead(mask, seed: int, steps: int) -> list[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Random scores under the mask for `steps` steps: each step's (`ahead` rows, their masks, and the
    ids each row was allowed at the step after)."""
    g = torch.Generator().manual_seed(seed)
    out, before = [], None
    for _ in range(steps):
        allowed = mask.allowed().ids
        if before is not None:
            out.append((*before, allowed))
        before = mask.ahead()
        ids = torch.rand(allowed.shape, generator=g).masked_fill(~allowed, -1).argmax(dim=-1)
        mask.update(ids)
    return out


@pytest.mark.parametrize("form", ["五绝", "七律"])
def test_ahead_names_the_steps_before_a_rhyme_or_a_fixed_character_and_what_may_go_there(form):
    shape = get_form(form)
    fixed = {(2, 3): "月"}  # a fixed character inside line 3, row 0 only
    mask = FormMask(vp(), shape, 2, fixed=[fixed, {}])
    width = shape.chars + 1  # the characters and the punctuation of a line
    for step, (rows, masks, after) in enumerate(walk_ahead(mask, 5, shape.length)):
        i, j = divmod(step, width)  # where the rows stood when `ahead` was asked
        rhyme_next = i % 2 == 1 and j == shape.chars - 2
        want = [r for r in range(2) if rhyme_next or (r == 0 and (i, j + 1) == (2, 3))]
        assert rows == want, (step, rows)
        for k, r in enumerate(rows):
            assert masks[k].any() and not (after[r] & ~masks[k]).any()  # what came next was allowed there
            if not rhyme_next:  # the fixed character alone
                assert masks[k].nonzero().flatten().tolist() == [vp().vocab.id("月")]


def test_ci_ahead_names_the_steps_before_a_rhyme_within_a_clause():
    fmt = cipai.find("浣溪沙").format(None)
    steps = walk_ahead(CiMask(CiProsody(vp()), fmt, 2), 3, fmt.chars + len(fmt.clauses))
    for rows, masks, after in steps:
        for k, r in enumerate(rows):
            assert masks[k].any() and not (after[r] & ~masks[k]).any()  # what came next was allowed there
    # once before each rhyme, both rows together (浣溪沙's rhymes end clauses of 7)
    assert [rows for rows, _, _ in steps if rows] == [[0, 1]] * len(fmt.rhyme_at)
