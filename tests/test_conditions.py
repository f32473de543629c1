"""Poems read after what they are about: condition tokens in the vocabulary, batches with titles and
poets (their positions are not targets), the drop rates, and writing after a context."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import POEMS, tiny_config
from tangshi import Poet
from tangshi.data.vocab import BOS, EOS, PAD, SEP, Vocab
from tangshi.evaluation.losses import collate, corpus_loss, mean_loss
from tangshi.generation.search import prime
from tangshi.model import checkpoint
from tangshi.options import OptionError
from tangshi.training.train import Conditions


def test_condition_tokens_are_read_never_characters():
    vocab = Vocab.build(["明月光"]).with_conditions({"李白": 3})
    assert vocab.tokens[-2:] == [SEP, "<@李白>"] and vocab.sep == len(vocab) - 2
    assert vocab.authors() == {"李白": 3} and "<sep>" not in vocab and "明" in vocab
    assert vocab.decode([vocab.sep, vocab.id("明"), len(vocab) - 1]) == "明"
    assert vocab.encode_many(["明<"])[0].tolist() == [vocab.id("明"), 1]  # '<' is no token of its own


def test_a_condition_adds_inputs_but_no_targets():
    seqs = [np.array([5, 6, 7]), np.array([8])]
    plain_in, plain_out = collate(seqs, np.array([0, 1]))
    conds = [np.array([20, 21]), np.array([], dtype=np.int64)]
    inputs, targets = collate(seqs, np.array([0, 1]), conds=conds, sep=30)
    assert inputs[0, :7].tolist() == [BOS, 20, 21, 30, 5, 6, 7]
    assert targets[0, :7].tolist() == [PAD, PAD, PAD, 5, 6, 7, EOS]
    assert torch.equal(inputs[1], plain_in[1]) and torch.equal(targets[1], plain_out[1])  # no condition: as before
    assert sorted(targets[targets != PAD].tolist()) == sorted(plain_out[plain_out != PAD].tolist())


def test_conditions_are_dropped_at_their_rates_and_repeat_exactly():
    titles = [np.array([10 + i]) for i in range(200)]
    authors = [np.array([999]) for _ in range(200)]
    c = Conditions(titles, authors, [], sep=3, title_drop=0.25, author_drop=1.0)
    index = np.arange(200)
    a, b = c.sample(index, 1, 0, 5), c.sample(index, 1, 0, 5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    kept = sum(len(x) for x in a)
    assert 120 < kept < 180 and all(999 not in x for x in a)
    none = Conditions(titles, authors, [], sep=3, title_drop=1.0, author_drop=1.0).sample(index, 1, 0, 5)
    assert all(len(x) == 0 for x in none)


@pytest.fixture
def titled_run(tmp_path, poems_txt):
    from tangshi.training.train import train

    cfg = tiny_config(max_steps=20)
    cfg.data.titles, cfg.data.authors = True, 2
    lines = [f"{t}:{c}" for t, c in POEMS]
    poems_txt.write_text("\n".join(lines) + "\n", "utf-8")
    run = tmp_path / "titled"
    train(cfg, [str(poems_txt)], run)
    return run


def test_a_model_trained_with_titles_writes_for_a_title(titled_run, tiny_run, poems_txt):
    ckpt = checkpoint.load(titled_run / "best")
    assert ckpt.vocab.sep is not None and ckpt.config.data.titles
    plain = corpus_loss(ckpt, [str(poems_txt)])
    titled = corpus_loss(ckpt, [str(poems_txt)], given=("title",))
    assert plain["tokens"] == titled["tokens"] and plain["loss"] != titled["loss"]  # the same tokens, read after titles
    poet = Poet.load(titled_run / "best")
    a = poet.write("月", title="静夜思", seed=3, max_length=20)[0]
    b = poet.write("月", title="静夜思", seed=3, max_length=20)[0]
    c = poet.write("月", seed=3, max_length=20)[0]
    assert a.text == b.text and a.title == "静夜思" and a.text.startswith("月")
    assert a.nll != c.nll  # read after the title, the same draw scores otherwise
    five = poet.write("月", title="静夜思", form="五绝", beam=2)[0]
    assert five.prosody["form"] == "五绝"
    with pytest.raises(OptionError, match="this model knows no such poet") as caught:
        poet.write("月", author="李白")
    assert caught.value.field == "author"
    with pytest.raises(OptionError, match="--title needs a model trained with titles") as caught:
        Poet.load(tiny_run / "best").write("月", title="静夜思")  # trained without titles
    assert caught.value.field == "title"


def test_priming_reads_the_context_as_training_does(titled_run):
    ckpt = checkpoint.load(titled_run / "best")
    vocab, model = ckpt.vocab, ckpt.model
    context = [BOS, vocab.id("静"), vocab.id("夜"), vocab.sep]
    x, state = prime(model, [context, [BOS]], torch.device("cpu"))
    assert x.tolist() == [vocab.sep, BOS]
    logits, _ = model.step(x, state)
    full, _ = model(torch.tensor([context]))
    assert torch.allclose(logits[0], full[0, -1], atol=1e-5)
    alone, _ = model.step(torch.tensor([BOS]))
    assert torch.allclose(logits[1], alone[0], atol=1e-5)
    seqs, conds = [np.array(vocab.encode("床前明月光"))], [np.array([vocab.id("静"), vocab.id("夜")])]
    assert mean_loss(model, seqs, conds=conds, sep=vocab.sep)[1] == mean_loss(model, seqs)[1] == 6


def test_a_model_trained_with_poets_lists_them_and_writes_like_one(tmp_path, json_dir, capsys):
    import json

    from tangshi.cli import main
    from tangshi.training.train import train

    cfg = tiny_config(max_steps=10)
    cfg.data.authors = 2
    train(cfg, [str(json_dir)], tmp_path / "poets")
    ck = tmp_path / "poets" / "best"
    assert main(["authors", "--checkpoint", str(ck), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"x", "y"}
    poem = Poet.load(ck).write("月", author="x", seed=1, max_length=12)[0]
    assert poem.author == "x" and poem.text.startswith("月")
    assert main(["write", "月", "--checkpoint", str(ck), "--author", "z"]) == 2
    assert "--author z: this model knows no such poet" in capsys.readouterr().err


@pytest.mark.slow
def test_the_bundled_model_reads_titles_and_knows_tang_and_song_poets():
    poet = Poet.load()
    poets = poet.vocab.authors()
    assert poet.ckpt.config.data.titles and len(poets) == 39  # the Tang model's 20, then the three genres' top 20
    assert {"李白", "杜甫", "陆游", "苏轼"} <= set(poets)
    poem = poet.write("", title="送友人", author="李白", form="五律", seed=1)[0]
    assert poem.prosody["form"] == "五律" and poem.title == "送友人" and poem.author == "李白"
