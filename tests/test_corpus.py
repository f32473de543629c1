import json

import pytest

from conftest import POEMS
from tangshi.config import DataConfig
from tangshi.data import corpus, text
from tangshi.data.corpus import CorpusError, load_corpus
from tangshi.data.text import normalise


def test_poems_txt_title_and_content_with_colon(tmp_path):
    path = tmp_path / "poems.txt"
    path.write_text("题:床前明月光，疑是地上霜：举头望明月。\n无冒号的一行\n\n空:\n", "utf-8")
    c = load_corpus([path], use_cache=False)
    assert c.texts == ["床前明月光，疑是地上霜：举头望明月。"]
    assert [str(m) for m in c.malformed] == [
        "poems.txt line 2: no ':' between title and content",
        "poems.txt line 4: empty content",
    ]
    assert c.counts["malformed"] == 2


def test_json_folder_reads_tang_and_ci_and_skips_authors(json_dir):
    c = load_corpus([json_dir], DataConfig(val_fraction=0, test_fraction=0), use_cache=False)
    assert sorted(c.texts) == sorted(content for _, content in POEMS)
    assert c.counts["read"] == len(POEMS)


def test_plain_text_one_poem_a_line(tmp_path):
    path = tmp_path / "plain.txt"
    path.write_text("\n".join(content for _, content in POEMS[:3]), "utf-8")
    assert load_corpus([path], use_cache=False).texts == [content for _, content in POEMS[:3]]


def test_normalise_simplifies_fullwidths_and_strips_space():
    assert normalise("秦川雄帝宅, 函谷壯皇居.\u3000 ") == "秦川雄帝宅，函谷壮皇居。"
    assert normalise("函谷壯皇居", script="traditional") == "函谷壯皇居"


def test_filters_are_counted_per_rule(tmp_path):
    lines = [
        "a:床前明月光，疑是地上霜。",
        "b:床前明月光，疑是地上霜。",
        "c:短",
        "d:" + "长" * 81,
        "e:春眠《不觉》晓，处处闻啼鸟。",
    ]
    path = tmp_path / "poems.txt"
    path.write_text("\n".join(lines), "utf-8")
    c = load_corpus([path], use_cache=False)
    assert c.counts == {
        "read": 5,
        "dropped_chars": 1,
        "dropped_short": 1,
        "dropped_long": 1,
        "dropped_duplicate": 1,
        "cleaned_notes": 0,
        "kept": 1,
        "malformed": 0,
    }
    loose = load_corpus([path], DataConfig(min_length=1, max_length=100, drop_chars="", dedupe=False), use_cache=False)
    assert loose.counts["kept"] == 5


def test_split_is_by_text_and_stable_when_the_corpus_grows():
    cfg = DataConfig(val_fraction=0.3, test_fraction=0.3)
    texts = [f"诗{i}首，月明{i}。" for i in range(300)]
    before = {t: corpus.split_of(t, cfg) for t in texts}
    assert set(before.values()) == {0, 1, 2}
    grown = texts + [f"新{i}" for i in range(50)]
    assert all(corpus.split_of(t, cfg) == before[t] for t in grown[:300])


def test_cache_is_used_on_the_second_run(poems_txt, tmp_path, monkeypatch):
    first = load_corpus([poems_txt], cache_dir=tmp_path / "c")
    monkeypatch.setattr(corpus, "read_file", lambda *a: pytest.fail("the cache was not used"))
    second = load_corpus([poems_txt], cache_dir=tmp_path / "c")
    assert second.texts == first.texts and second.vocab.tokens == first.vocab.tokens
    assert second.ids.tolist() == first.ids.tolist()


def test_cache_key_changes_with_options_and_files(poems_txt, tmp_path):
    a = load_corpus([poems_txt], cache_dir=tmp_path / "c")
    b = load_corpus([poems_txt], DataConfig(max_length=30), cache_dir=tmp_path / "c")
    assert len(b.texts) < len(a.texts)
    poems_txt.write_text(poems_txt.read_text("utf-8") + "新:孤帆远影碧空尽，唯见长江天际流。\n", "utf-8")
    assert len(load_corpus([poems_txt], cache_dir=tmp_path / "c").texts) == len(a.texts) + 1


def test_stats_report_counts_and_histogram(poems_txt):
    s = load_corpus([poems_txt], use_cache=False).stats()
    assert s["kept"] == len(POEMS) and s["vocabulary"] > 4
    assert sum(s["length_histogram"].values()) == len(POEMS)
    assert sum(s["splits"].values()) == len(POEMS)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such file or folder"),
        (lambda p: p.write_bytes("床前明月光".encode("gbk")), "not UTF-8 text"),
        (lambda p: p.write_text("短:一\n", "utf-8"), "no poems left"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, make, message):
    path = tmp_path / "poems.txt"
    make(path)
    with pytest.raises(CorpusError, match=message) as e:
        load_corpus([path], use_cache=False)
    assert "poems.txt" in str(e.value)


def test_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "poet.tang.0.json"
    path.write_text('[\n{"title": "x",\n "paragraphs": [}\n]', "utf-8")
    with pytest.raises(CorpusError, match=r"poet.tang.0.json line 3 column \d+: invalid JSON"):
        load_corpus([path], use_cache=False)


def test_json_entry_without_paragraphs_is_malformed(tmp_path):
    path = tmp_path / "poet.tang.0.json"
    path.write_text(json.dumps([{"title": "x"}, {"title": "y", "paragraphs": [POEMS[0][1]]}]), "utf-8")
    c = load_corpus([path], use_cache=False)
    assert [str(m) for m in c.malformed] == ["poet.tang.0.json poem 0: no 'paragraphs' list of strings"]


def test_variants_finds_simplified_and_traditional():
    assert "東" in text.variants("东") and "东" in text.variants("東")
    assert text.variants("月") == []


def test_to_script_both_ways():
    assert text.to_script("函谷壯皇居", "simplified") == "函谷壮皇居"
    assert text.to_script("函谷壮皇居", "traditional") == "函谷壯皇居"


def test_split_at_breaks_cuts_at_every_kind_of_punctuation_and_space():
    assert text.split_at_breaks("床前明月光，疑是地上霜。") == ["床前明月光", "疑是地上霜"]
    assert text.split_at_breaks(" 春眠,不觉晓!\n处处？闻啼鸟；：、") == ["春眠", "不觉晓", "处处", "闻啼鸟"]
    assert text.split_at_breaks("，。 ") == [] and text.split_at_breaks("＿＿月") == ["＿＿月"]


def test_in_words_lists_names_as_messages_do():
    assert text.in_words(["五绝", "七绝", "五律", "七律"]) == "五绝, 七绝, 五律 or 七律"
    assert text.in_words(("simplified", "traditional")) == "simplified or traditional"
    assert text.in_words(["free"]) == "free"


def test_train_max_length_adds_long_poems_to_training_only(tmp_path):
    cfg = DataConfig(max_length=12, val_fraction=0.3, test_fraction=0.3)
    short = [f"月明{i:03d}，山高。" for i in range(60)]
    long = [f"春江花月夜{i:03d}，海上明月共潮生。" for i in range(60)]
    path = tmp_path / "poems.txt"
    path.write_text("\n".join(f"t{i}:{p}" for i, p in enumerate(short + long)), "utf-8")
    base = load_corpus([path], cfg, use_cache=False)
    wide = load_corpus(
        [path], DataConfig(max_length=12, val_fraction=0.3, test_fraction=0.3, train_max_length=40), use_cache=False
    )
    for split in ("val", "test"):
        assert wide.texts_of(split) == base.texts_of(split)
    extra = set(wide.texts_of("train")) - set(base.texts_of("train"))
    assert extra and extra <= set(long) and all(corpus.split_of(t, cfg) == 0 for t in extra)
    assert wide.counts["dropped_long"] == 60 - len(extra)


def test_train_max_length_below_max_length_is_refused():
    with pytest.raises(Exception, match="--train-max-length"):
        DataConfig(max_length=80, train_max_length=50).validate()


def test_clean_notes_strips_editors_marks():
    noted = "钦惟大帝，[载]仰皇穹（一作苍）。童子解吟《长恨曲》。"
    assert corpus.clean_notes(noted) == "钦惟大帝，载仰皇穹。童子解吟长恨曲。"


def test_clean_notes_adds_cleaned_poems_to_training_only(tmp_path):
    cfg = DataConfig(val_fraction=0.3, test_fraction=0.3)
    plain = [f"月明{i:03d}，山高水长。" for i in range(60)]
    noted = [f"春江{i:03d}（一作花），[海]上明月。" for i in range(60)]
    broken = [f"秋风{i:03d}_，落叶满山。" for i in range(10)]  # a missing character: no cleaning helps
    path = tmp_path / "poems.txt"
    path.write_text("\n".join(f"t{i}:{p}" for i, p in enumerate(plain + noted + broken)), "utf-8")
    base = load_corpus([path], cfg, use_cache=False)
    clean = load_corpus([path], DataConfig(val_fraction=0.3, test_fraction=0.3, clean_notes=True), use_cache=False)
    for split in ("val", "test"):
        assert clean.texts_of(split) == base.texts_of(split)
    extra = set(clean.texts_of("train")) - set(base.texts_of("train"))
    cleaned = {corpus.clean_notes(normalise(t)) for t in noted}
    assert extra and extra <= cleaned and all(corpus.split_of(t, cfg) == 0 for t in extra)
    assert clean.counts["cleaned_notes"] == len(extra)
    assert clean.counts["dropped_chars"] == 70 - len(extra)
    assert not any(c in t for t in clean.texts for c in "（）[]《》_")
