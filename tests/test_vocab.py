import pytest

from tangshi.data.vocab import BOS, EOS, PAD, SPECIALS, UNK, Vocab, VocabError


def test_specials_first_then_by_frequency():
    v = Vocab.build(["月月月山山水"])
    assert v.tokens[:4] == list(SPECIALS) and (PAD, UNK, BOS, EOS) == (0, 1, 2, 3)
    assert v.tokens[4:] == ["月", "山", "水"]


def test_min_count_and_max_size():
    assert Vocab.build(["月月山山水"], min_count=2).tokens[4:] == ["山", "月"]
    assert Vocab.build(["月月月山山水"], max_size=1).tokens[4:] == ["月"]


def test_encode_many_matches_encode_and_unknown_is_unk():
    v = Vocab.build(["床前明月光"])
    texts = ["明月", "光𠂇龘", ""]
    ids, offsets = v.encode_many(texts)
    assert offsets.tolist() == [0, 2, 5, 5]
    assert ids.tolist() == v.encode("明月") + v.encode("光𠂇龘")
    assert v.encode("龘") == [UNK]
    assert v.decode([BOS, *v.encode("明月"), EOS]) == "明月"


def test_save_load_roundtrip(tmp_path):
    v = Vocab.build(["床前明月光"])
    v.save(tmp_path / "vocab.json")
    assert Vocab.load(tmp_path / "vocab.json").tokens == v.tokens


@pytest.mark.parametrize(
    "content, message", [("{", "not valid JSON"), ('{"tokens": ["a"]}', "must start with"), ('{"x": 1}', "expected")]
)
def test_bad_vocab_file_is_named(tmp_path, content, message):
    path = tmp_path / "vocab.json"
    path.write_text(content, "utf-8")
    with pytest.raises(VocabError, match=message) as e:
        Vocab.load(path)
    assert "vocab.json" in str(e.value)


def test_build_keeps_training_counts_and_they_survive_a_save(tmp_path):
    v = Vocab.build(["月月月山山水", "月山"], min_count=2)  # 水 left out: it counts for <unk>
    assert v.tokens[4:] == ["月", "山"] and v.counts == [0, 1, 0, 2, 4, 3]
    v.save(tmp_path / "vocab.json")
    again = Vocab.load(tmp_path / "vocab.json")
    assert again.counts == v.counts
    prior = again.log_prior()
    assert abs(float(prior.double().exp().sum()) - 1) < 1e-6 and prior[4] > prior[5] > prior[PAD]


def test_counts_can_be_added_to_a_vocabulary_saved_without_them(tmp_path):
    (tmp_path / "vocab.json").write_text('{"tokens": ["<pad>", "<unk>", "<bos>", "<eos>", "山", "月"]}', "utf-8")
    old = Vocab.load(tmp_path / "vocab.json")
    assert old.counts is None and old.log_prior() is None
    counted = old.with_counts(["月月山", "云"])
    assert counted.tokens == old.tokens and counted.counts == [0, 1, 0, 2, 1, 2]


@pytest.mark.parametrize("counts", ["[1, 2]", '["a", 0, 0, 0, 0, 0]', "[0, 0, 0, 0, -1, 0]", "[true, 0, 0, 0, 0, 0]"])
def test_bad_counts_are_named(tmp_path, counts):
    path = tmp_path / "vocab.json"
    tokens = '["<pad>", "<unk>", "<bos>", "<eos>", "山", "月"]'
    path.write_text(f'{{"tokens": {tokens}, "counts": {counts}}}', "utf-8")
    with pytest.raises(VocabError, match="vocab.json"):
        Vocab.load(path)


def test_counting_again_keeps_the_condition_tokens_counts():
    from tangshi.data.vocab import Vocab

    v = Vocab.build(["春风", "春雨"]).with_conditions({"李白": 7})
    again = v.with_counts(["春风", "春雨", "秋风"])
    assert again.authors() == {"李白": 7} and again.counts[again.id("秋")] == 0 or "秋" not in again
    assert again.counts[again.id("春")] == 2 and again.counts[v.sep] == v.counts[v.sep]
