"""Three genres in one corpus: Tang 诗, Song 诗 (the npm package's traditional poet.song.*.json) and
Song 词, each poem read after its genre's token; a run that keeps the vocabulary it starts from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import POEMS, tiny_config
from tangshi import Poet
from tangshi.data.corpus import genre_of, load_corpus
from tangshi.data.vocab import UNK, Vocab, genre_token
from tangshi.options import OptionError
from tangshi.training.train import Conditions, train

# the Song poems' format (chinese-poetry@2.0.1 dist/quantangshi/poet.song.*.json): traditional, with ids
SONG = [
    {
        "author": "蘇軾",
        "title": "題西林壁",
        "paragraphs": ["橫看成嶺側成峰，遠近高低各不同。", "不識廬山真面目，只緣身在此山中。"],
        "id": "00000000-0000-0000-0000-000000000001",
    },
    {
        "author": "陸游",
        "title": "示兒",
        "paragraphs": ["死去元知萬事空，但悲不見九州同。", "王師北定中原日，家祭無忘告乃翁。"],
        "id": "00000000-0000-0000-0000-000000000002",
    },
    {
        "author": "王安石",
        "title": "梅花",
        "paragraphs": ["牆角數枝梅，凌寒獨自開。", "遙知不是雪，爲有暗香來。"],
        "id": "00000000-0000-0000-0000-000000000003",
    },
]


@pytest.fixture
def three(json_dir: Path) -> Path:
    (json_dir / "poet.song.0.json").write_text(json.dumps(SONG, ensure_ascii=False), "utf-8")
    return json_dir


def test_genres_come_from_the_file_names():
    assert genre_of(Path("poet.tang.1000.json")) == "唐诗"
    assert genre_of(Path("poet.song.254000.json")) == "宋诗"
    assert genre_of(Path("ci.song.0.json")) == "宋词"
    assert genre_of(Path("poems.txt")) == "" and genre_of(Path("poet.unknown.0.json")) == ""


def test_a_corpus_of_three_genres(three):
    cfg = tiny_config().data
    cfg.genres, cfg.val_fraction = True, 0.0
    corpus = load_corpus([str(three)], cfg)
    by_genre = {g: [t for t, x in zip(corpus.texts, corpus.genres, strict=True) if x == g] for g in set(corpus.genres)}
    assert sorted(by_genre) == ["唐诗", "宋词", "宋诗"]
    assert "横看成岭侧成峰，远近高低各不同。不识庐山真面目，只缘身在此山中。" in by_genre["宋诗"]  # simplified
    assert corpus.vocab.genres() == {"唐诗": 6, "宋词": 6, "宋诗": 3}
    c = Conditions.of(corpus, corpus.vocab, cfg)
    first = [corpus.vocab.tokens[i] for i in c.genres[0]]
    assert first == [genre_token(corpus.genres[0])]
    kept = c.sample(np.arange(len(corpus.texts)), 1, 0, 0)
    assert any(genre_token(corpus.genres[0]) == corpus.vocab.tokens[int(k[0])] for k in kept[:1] if len(k))


def test_genre_drop_rate_is_kept():
    genres = [np.array([50]) for _ in range(400)]
    empty = [np.array([], dtype=np.int64)] * 400
    c = Conditions(empty, empty, [], sep=3, title_drop=1.0, author_drop=1.0, genres=genres, genre_drop=0.2)
    kept = sum(len(x) for x in c.sample(np.arange(400), 1, 0, 0))
    assert 280 < kept < 360


def test_a_kept_vocabulary_keeps_its_ids(three):
    base = Vocab.build(["床前明月光"]).with_conditions({"李白": 1})
    cfg = tiny_config().data
    cfg.genres = True
    corpus = load_corpus([str(three)], cfg, base=base)
    v = corpus.vocab
    assert v.tokens[: len(base)] == base.tokens and set(v.genres()) == {"唐诗", "宋诗", "宋词"}
    assert len(v) == len(base) + 3  # only the genres are new: <sep> and <@李白> were there
    assert UNK in corpus.ids.tolist() and v.id("明") == base.id("明")


def test_a_run_from_a_checkpoint_learns_genres_and_writes_them(tmp_path, three, tiny_run):
    cfg = tiny_config(max_steps=6, init_from=str(tiny_run / "best"))
    cfg.data.genres = True
    run = tmp_path / "genres"
    train(cfg, [str(three)], run)
    poet = Poet.load(run / "best")
    assert set(poet.vocab.genres()) == {"唐诗", "宋诗", "宋词"}
    assert poet.vocab.tokens[: len(Poet.load(tiny_run / "best").vocab)] == Poet.load(tiny_run / "best").vocab.tokens
    from tangshi.data.vocab import genre_token
    from tangshi.evaluation.calibration import NO_GENRE
    from tangshi.generation.request import resolve, resolve_genre
    from tangshi.options import WriteOptions

    v, script = poet.vocab, poet.ckpt.config.data.script

    def read_first(**asked) -> int:  # the token read after <bos>
        return resolve(poet.bundle, "", WriteOptions(**asked).validate()).context[1]

    assert read_first() == v.id(genre_token("唐诗"))  # tangshi writes Tang poems
    assert read_first(genre="宋诗") == v.id(genre_token("宋诗"))
    assert resolve_genre(v, None, script, ci=True) == "宋词"  # a 词牌's poem is a 词
    assert resolve_genre(Poet.load(tiny_run / "best").vocab, None, script) == NO_GENRE  # a model without genres
    assert poet.write("", seeds=[1], genre="宋词", max_length=12)[0].seed == 1
    with pytest.raises(OptionError, match="no such genre") as e:
        poet.write("", genre="元曲")
    assert e.value.field == "genre"
    with pytest.raises(OptionError, match="knows no genres"):
        Poet.load(tiny_run / "best").write("", genre="宋词")


def test_poems_txt_has_no_genre(poems_txt):
    cfg = tiny_config().data
    cfg.genres = True
    corpus = load_corpus([str(poems_txt)], cfg)
    assert set(corpus.genres) == {""} and corpus.vocab.genres() == {}
    assert len(corpus.texts) == len(POEMS)


def test_genre_weights_repeat_and_thin_a_genre_each_epoch(three):
    from tangshi.config import ConfigError
    from tangshi.training.train import epoch_pool, poem_weights

    weights = np.array([3.0] * 100 + [0.25] * 400 + [1.0] * 50)
    pool = epoch_pool(weights, seed=1, epoch=0)
    counts = np.bincount(pool, minlength=len(weights))
    assert (counts[:100] == 3).all() and (counts[500:] == 1).all()
    assert set(counts[100:500].tolist()) <= {0, 1} and 60 < counts[100:500].sum() < 140
    assert np.array_equal(epoch_pool(weights, 1, 0), pool) and not np.array_equal(epoch_pool(weights, 1, 1), pool)

    cfg = tiny_config().data
    cfg.genres, cfg.val_fraction, cfg.test_fraction = True, 0.0, 0.0
    cfg.genre_weights = "宋诗=2, 宋词=0"
    corpus = load_corpus([str(three)], cfg)
    w = poem_weights(corpus, cfg)
    assert {(g, float(x)) for g, x in zip(corpus.genres_of("train"), w, strict=True)} == {
        ("唐诗", 1.0),
        ("宋诗", 2.0),
        ("宋词", 0.0),
    }
    cfg.genre_weights = "元曲=2"
    with pytest.raises(ValueError, match="元曲.*唐诗, 宋词, 宋诗"):
        poem_weights(corpus, cfg)
    for bad in ("唐诗", "唐诗=x", "唐诗=-1"):
        cfg.genre_weights = bad
        with pytest.raises(ConfigError, match="--genre-weights"):
            cfg.validate()
    cfg.genres, cfg.genre_weights = False, "唐诗=2"
    with pytest.raises(ConfigError, match="needs --genres"):
        cfg.validate()
