"""The sampling loop with a tiny model: begins, seeds, the seed-tf way, the end token, kept context states."""

import pytest
import torch

from tangshi.data.vocab import Vocab
from tangshi.generation import processors
from tangshi.generation.sampling import Draw
from tangshi.generation.search import ContextStates, UnknownCharacterError, resolve_begin, sample, sentences
from tangshi.model import checkpoint


def write(model, vocab, begins, num=1, seed=0, **kw):
    """`num` poems a begin, row r with seed `seed + r`, by the default sampling processors."""
    rows = [b for b in begins for _ in range(num)]
    steps = processors.sampling(vocab)
    return sample(model, vocab, rows, steps, [seed + r for r in range(len(rows))], **kw)


def test_sentences_one_a_line():
    assert sentences("床前明月光，疑是地上霜。举头望明月！低头") == ["床前明月光，疑是地上霜。", "举头望明月！", "低头"]


def test_resolve_begin_uses_a_variant_or_names_the_character():
    vocab = Vocab.build(["東風月"])
    assert resolve_begin(vocab, "東", "traditional") == ("東", [])
    text, notes = resolve_begin(vocab, "东", "traditional")
    assert text == "東" and "variant" in notes[0]
    with pytest.raises(UnknownCharacterError, match="begin character '龘' is not in the model's vocabulary"):
        resolve_begin(vocab, "龘", "traditional")


def test_poems_start_with_the_begin_and_hold_no_special_tokens(tiny_run):
    ck = checkpoint.load(tiny_run / "best")
    poems = write(ck.model, ck.vocab, ["月", "山"], num=3, seed=7, max_length=30)
    assert [p.begin for p in poems] == ["月"] * 3 + ["山"] * 3
    assert [p.seed for p in poems] == list(range(7, 13))
    for p in poems:
        assert p.text.startswith(p.begin) and "<" not in p.text and len(p.text) <= 30
        assert "".join(p.lines) == p.text


def test_same_seed_same_poem_whatever_the_batch(tiny_run):
    ck = checkpoint.load(tiny_run / "best")
    alone = write(ck.model, ck.vocab, ["月"], num=1, seed=5)
    again = write(ck.model, ck.vocab, ["月"], num=1, seed=5)
    in_batch = write(ck.model, ck.vocab, ["月", "山"], num=1, seed=5)
    assert alone[0].text == again[0].text == in_batch[0].text


def test_seed_tf_style_runs_exactly_max_length_steps(tiny_run, monkeypatch):
    ck = checkpoint.load(tiny_run / "best")
    calls = []

    def end_every_other(self, scores, uniforms):
        calls.append(1)
        return torch.full((scores.shape[0],), 3 if len(calls) % 2 else 5, dtype=torch.long)

    monkeypatch.setattr(Draw, "__call__", end_every_other)
    poem = write(ck.model, ck.vocab, ["月"], max_length=50, stop_at_end=False, random_state=True, seed=1)[0]
    assert len(calls) == 50 and poem.text == "月" + ck.vocab.tokens[5] * 25
    calls.clear()
    assert write(ck.model, ck.vocab, ["月"], max_length=50, seed=1)[0].text == "月" + ck.vocab.tokens[5]


def test_stops_at_the_end_token(tiny_run, monkeypatch):
    ck = checkpoint.load(tiny_run / "best")

    def always_end(self, scores, uniforms):
        return torch.full((scores.shape[0],), 3, dtype=torch.long)

    monkeypatch.setattr(Draw, "__call__", always_end)
    poems = write(ck.model, ck.vocab, ["明月"], max_length=40)
    assert poems[0].text == "明月" and poems[0].ended


@pytest.mark.slow
def test_a_context_read_once_is_kept_and_read_again_when_the_weights_change(monkeypatch):
    from tangshi.api import bundled_path

    ck = checkpoint.load(bundled_path())  # an LSTM: its prepared weights say when they change
    model, v = ck.model.eval(), ck.vocab
    ctx, states = [[2, *v.encode("明月")]], ContextStates()
    first = write(model, v, ["月"], seed=3, contexts=ctx, max_length=10, states=states)[0]
    steps = []
    real = type(model).step
    monkeypatch.setattr(type(model), "step", lambda self, *a, **k: steps.append(1) or real(self, *a, **k))
    again = write(model, v, ["月"], seed=3, contexts=ctx, max_length=10, states=states)[0]
    assert again == first and len(steps) == 10 and len(states) == 1  # the context not read again
    write(model, v, ["月"], seed=3, contexts=ctx, max_length=10)  # no states given: a fresh one, read again
    assert len(steps) == 22
    with torch.no_grad():
        model.rnn.weight_hh_l0.mul_(0.5)  # new weights: the context is read again, with them
    steps.clear()
    write(model, v, ["月"], seed=3, contexts=ctx, max_length=10, states=states)
    assert len(steps) == 12 and len(states) == 1
    assert "_read_kept" not in model.__dict__  # the model carries no cache of its own
