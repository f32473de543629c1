"""Form masks without a model: random scores under the masks always give the form, the rhyme and
the tone template; impossible requests are named."""

from __future__ import annotations

from functools import cache

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tangshi import prosody as P
from tangshi.api import bundled_path
from tangshi.forms import FormError, FormMask, VocabProsody, get_form
from tangshi.vocab import EOS, Vocab


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
        allowed = mask.allowed()
        assert allowed.any(dim=-1).all()
        ids = mask.with_heads(scores.masked_fill(~allowed, -1).argmax(dim=-1))
        mask.update(ids)
        for r, i in enumerate(ids.tolist()):
            out[r].append(i)
    assert all(row[-1] == EOS for row in out)
    return [vocab.decode(row[:-1]) for row in out]


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    form=st.sampled_from(list(P.FORMS)),
    tones=st.sampled_from(["relaxed", "strict"]),
    heads=st.sampled_from(["", "春夏秋冬", "日月"]),
)
def test_any_poem_under_the_mask_has_the_form_rhyme_and_tones(seed, form, tones, heads):
    shape = get_form(form)
    mask = FormMask(vp(), shape, 3, heads=[heads] * 3, tones=tones)
    for text in decode(mask, seed):
        r = P.check(text)
        assert r.form == form, text
        assert r.rhyme, text
        assert r.relaxed == 1.0, (text, r.actual)
        if tones == "strict" and not heads:  # acrostic heads are forced, whatever their tone
            assert r.strict == 1.0, (text, r.actual)
        assert [line[0] for line in r.lines[: len(heads)]] == list(heads)
        chars = [c for c in text if P.is_han(c)]
        assert len(set(chars)) == len(chars)  # no repeats by default
        assert text[shape.chars] == "，" and text.endswith("。")


def test_given_rhyme_group_is_kept():
    mask = FormMask(vp(), get_form("五律"), 2, rhyme="阳", tones="off")
    for text in decode(mask, 7):
        assert P.check(text).rhyme_group == "下平声七阳"


def test_impossible_requests_are_named():
    with pytest.raises(FormError, match="--form must be one of"):
        get_form("词")
    with pytest.raises(FormError, match="acrostic '春夏秋冬春' has 5 heads but a 五绝 has 4 lines"):
        FormMask(vp(), get_form("五绝"), 1, heads=["春夏秋冬春"])
    with pytest.raises(FormError, match="--rhyme xyz: not a 平水韵"):
        FormMask(vp(), get_form("五绝"), 1, rhyme="xyz")
    with pytest.raises(FormError, match="--tones must be one of"):
        FormMask(vp(), get_form("五绝"), 1, tones="loose")
    small = VocabProsody(Vocab(["<pad>", "<unk>", "<bos>", "<eos>", "，", "。", "光", "长", "月"]))
    with pytest.raises(FormError, match="the model knows only 2 characters of 下平声七阳"):
        FormMask(small, get_form("五律"), 1, rhyme="阳")
