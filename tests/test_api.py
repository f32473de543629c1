import pytest

from conftest import POEMS
from tangshi import Poet


def test_load_write_and_score(tiny_run):
    poet = Poet.load(tiny_run / "best")
    poems = poet.write(["月", "風"], num=2, seed=1)
    assert len(poems) == 4 and poems[2].begin == "風" and poems[2].text.startswith("风")
    assert "variant" not in " ".join(poems.notes)  # 風 -> 风 is plain t2s normalisation
    report = poet.loss([POEMS[0][1]])
    assert report["loss"] > 0 and report["tokens"] == len(POEMS[0][1]) + 1


@pytest.mark.slow
def test_bundled_model_writes(tmp_path):
    poet = Poet.load()
    poems = poet.write(list("日红山夜湖海月"), seed=1)
    assert [p.text[0] for p in poems] == list("日红山夜湖海月")
    assert all(len(p.text) > 5 and p.ended for p in poems)
    assert poet.ckpt.card and "validation loss" in poet.ckpt.card


def test_free_poems_without_a_begin(tiny_run):
    poems = Poet.load(tiny_run / "best").write("", num=2, seed=4)
    assert len(poems) == 2 and all(p.text and p.begin == "" for p in poems)


@pytest.mark.slow
def test_notes_belong_to_their_call_even_across_threads():
    from concurrent.futures import ThreadPoolExecutor

    poet = Poet.load()
    variant = poet.write("薴", seed=1)
    assert variant.notes and "variant" in variant.notes[0] and variant[0].begin == "薴"
    calls = ["薴" if i % 2 else "月" for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda b: (b, poet.write(b, seed=1, max_length=12).notes), calls))
    assert all(bool(notes) == (b == "薴") for b, notes in results)


@pytest.mark.slow
def test_a_poems_nll_is_the_models_own_mean_log_likelihood_of_its_characters_and_end():
    """Where every row's next id is fixed (punctuation, the end) the step makes only the adaptive output
    layer's head; the poem's nll is still the model's own: its log-probability of each character and of
    the end, read here one full step at a time."""
    import torch

    from tangshi.data.vocab import EOS
    from tangshi.generation.request import resolve
    from tangshi.options import WriteOptions

    poet = Poet.load()
    poem = poet.write("月", seed=5, form="五律")[0]
    context = resolve(poet.bundle, "月", WriteOptions(form="五律").validate()).context  # <bos>, the genre, <sep>
    ids = [*context, *poet.vocab.encode(poem.text), EOS]
    state, logps = None, []
    with torch.inference_mode():
        for t, (a, b) in enumerate(zip(ids[:-1], ids[1:], strict=True)):
            logits, state = poet.model.step(torch.tensor([a]), state)
            logps += [float(logits[0, b])] if t >= len(context) - 1 else []
    assert poet.model.adaptive and len(logps) == 49 and abs(poem.nll + sum(logps) / len(logps)) < 1e-4


@pytest.mark.slow
def test_a_poem_written_alone_is_the_one_written_in_a_batch_of_64():
    """Poem k of 64 written together is poem k written alone: each row's sampling, masks and steering
    are its own, and the step's narrow weights (uint8 by int8, bfloat16 or int8, by CPU) sum a row the
    same whatever the batch."""
    import torch

    from tangshi.model.kernels import step_weights

    poet = Poet.load()
    assert step_weights(torch.device("cpu")) in ("qint8", "bfloat16", "int8")
    together = poet.write(["月"] * 64, nums=[1] * 64, seeds=list(range(64)), form="七绝")
    for k in (0, 17, 63):
        alone = poet.write("月", seed=k, form="七绝")[0]
        assert (alone.text, alone.nll) == (together[k].text, together[k].nll)
    greedy = poet.write(["山"] * 64, nums=[1] * 64, seeds=list(range(64)), greedy=True, max_length=40)
    assert poet.write("山", greedy=True, max_length=40)[0].text == greedy[40].text
