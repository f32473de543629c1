"""The evaluation suite: generation metrics on hand-made poems, and `tangshi eval` end to end."""

from __future__ import annotations

import json

import pytest

from conftest import POEMS, TANG, need_shared_data, tiny_config
from tangshi.cli import main
from tangshi.evaluation.suite import Reference, _longest_repeat, parse_samplers, poem_metrics
from tangshi.prosody import regular


def test_metrics_of_hand_made_poems():
    ref = Reference.of(["床前明月光，疑是地上霜。"])
    texts = [
        "床前明月光，疑是地上雪。举头望明月，举头望明月。",  # a copied line, a repeated line
        "春风春风春，花落知多少。",  # a character twice in a line
    ]
    m = poem_metrics(texts, [True, False], ref)
    lines = ["床前明月光", "疑是地上雪", "举头望明月", "举头望明月", "春风春风春", "花落知多少"]
    chars = "".join(lines)
    assert m["poems"] == 2 and m["length"] == (20 + 10) / 2
    assert m["distinct_1"] == round(len(set(chars)) / len(chars), 4)
    bigrams = [ln[i : i + 2] for ln in lines for i in range(4)]
    assert m["distinct_2"] == round(len(set(bigrams)) / len(bigrams), 4)
    assert m["line_repeat"] == round(1 / 6, 4)  # the fourth line repeats the third
    assert m["char_repeat_lines"] == round(1 / 6, 4)  # 春风春风春
    assert m["copied_lines"] == round(1 / 6, 4)  # 床前明月光
    windows = [ln[i : i + 4] for ln in lines for i in range(2)]
    copied = sum(w in {"床前明月", "前明月光", "疑是地上", "是地上霜"} for w in windows)
    assert m["copied_windows"] == round(copied / len(windows), 4)
    assert m["end_rate"] == 0.5
    assert m["longest_repeat"] == (5 + 3) / 2  # 举头望明月 twice; 春风春 twice, overlapping


def test_longest_repeat():
    assert _longest_repeat("abcabc") == 3
    assert _longest_repeat("aaaa") == 3  # overlapping occurrences count
    assert _longest_repeat("abcd") == 0


def test_eval_suite_end_to_end(tiny_run, poems_txt, capsys, tmp_path):
    args = ["eval", "--checkpoint", f"tiny={tiny_run / 'best'}", "--data", str(poems_txt), "--split", "all"]
    assert main([*args, "--poems", "4", "--settings", "free,begin,五绝", "--json", "--plots", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out)
    (row,) = result["models"]
    assert row["model"] == "tiny" and row["poems"] == len(POEMS) and row["loss"] > 0
    assert abs(row["bits_per_char"] - row["loss"] / 0.6931) < 1e-3
    assert set(row["settings"]) == {"free", "begin", "五绝"} and row["settings"]["五绝"]["form"] == 1.0
    assert result["human"]["settings"]["human"]["poems"] == 4
    assert {p.rsplit("/", 1)[-1] for p in result["plots"]} == {
        "loss_time.png",
        "loss_steps.png",
        "compliance.png",
        "diversity.png",
    }
    assert main([*args, "--poems", "0"]) == 0
    table = capsys.readouterr().out
    assert "| tiny | gru |" in table and "human (all split)" in table


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--settings", "free,haiku"], "unknown setting 'haiku'"),
        (["--poems", "-1"], "--poems must be >= 0"),
        (["--readers", "--poems", "5"], "--readers needs --poems >= 10"),
        (["--samplers", "1:0"], "--samplers is for --readers"),
        (["--readers", "--samplers", "1-0"], "'1-0' is not temperature:diversity"),
        (["--readers", "--samplers", "0:0"], "temperature must be > 0"),
        (["--readers", "--samplers", ","], "at least one"),
    ],
)
def test_eval_bad_options(tiny_run, poems_txt, capsys, extra, message):
    rc = main(["eval", "--checkpoint", str(tiny_run / "best"), "--data", str(poems_txt), *extra])
    assert rc == 2 and message in capsys.readouterr().err


def test_parse_samplers():
    assert parse_samplers("0.8:0.35, 1.0:0,,0.8:0.35") == [(0.8, 0.35), (1.0, 0.0)]
    with pytest.raises(ValueError, match="diversity >= 0"):
        parse_samplers("1:3")


def test_eval_readers_end_to_end(tiny_run, poems_txt, capsys):
    args = ["eval", "--checkpoint", f"tiny={tiny_run / 'best'}", "--data", str(poems_txt), "--split", "all"]
    assert main([*args, "--poems", "10", "--settings", "", "--readers", "--samplers", "1:0,0.9:0", "--json"]) == 0
    readers = json.loads(capsys.readouterr().out)["readers"]
    human = readers["human"]
    assert human["poems"] == 10 and human["control_poems"] == 2 and human["auc_human_vs_human"] is None
    assert human["retrieval_poems"] == human["forms"]["五绝"]  # the one 七绝 has no 9 others of its form
    assert "note" in human["attribution"]  # poems.txt names no poets
    (model,) = readers["models"]
    assert [(r["temperature"], r["diversity"]) for r in model["rows"]] == [(1.0, 0.0), (0.9, 0.0)]
    for row in model["rows"]:
        assert row["form"]["poems"] == row["free"]["poems"] == 10
        assert 0 <= row["form"]["auc"] <= 1 and 0 <= row["form"]["retrieval"] <= 1 and "retrieval" not in row["free"]
        assert set(row["form"]["seconds"]) == {"write", "auc", "coherence", "retrieval"}
    assert "note" in model["title"] and "note" in model["author"]  # trained with neither
    assert main([*args, "--poems", "10", "--settings", "", "--readers", "--samplers", "1:0"]) == 0
    table = capsys.readouterr().out
    assert "| tiny | 1 | 0 |" in table and "human, lines shuffled" in table and "| tiny | title | – |" in table


def test_eval_readers_of_a_model_trained_with_titles_and_poets(tmp_path, json_dir, capsys):
    from tangshi.training.train import train

    cfg = tiny_config(max_steps=10)
    cfg.data.titles, cfg.data.authors = True, 2
    train(cfg, [str(json_dir)], tmp_path / "run")
    args = ["eval", "--checkpoint", f"both={tmp_path / 'run' / 'best'}", "--data", str(json_dir), "--split", "all"]
    assert main([*args, "--poems", "10", "--settings", "", "--readers", "--samplers", "1:0", "--json"]) == 0
    readers = json.loads(capsys.readouterr().out)["readers"]
    assert readers["human"]["attribution"]["chance"] == 0.5  # the corpus names two poets, x and y
    (model,) = readers["models"]
    title, author = model["title"], model["author"]
    assert title["poems"] == 10 and 0 <= title["retrieval"] <= 1 and title["temperature"] == 1.0
    assert author["poems"] == 10 and set(author["poets"]) == {"x", "y"} and author["unknown_poets"] == []
    assert 0 <= author["share"] <= 1


class FakePoet:
    """Writes human poems: for a title, the poem of that title; as a poet, one of theirs; else a poem
    of the form, its first character replaced by the begin."""

    def __init__(self, corpus, known_poets):
        from tangshi.evaluation.readers import form_of
        from tangshi.options import OptionError

        self.error = OptionError
        self.vocab = {c for t in corpus.texts for c in t}
        self.ckpt = type(
            "Ckpt", (), {"config": type("Config", (), {"data": type("Data", (), {"script": "simplified"})})}
        )
        self.default_diversity = 0.35
        train = corpus.texts_of("train")
        self.by_form = {}
        for t in train:
            self.by_form.setdefault(form_of(t), []).append(t)
        self.by_form["free"] = train
        self.by_title = dict(zip(corpus.titles_of("test"), corpus.texts_of("test"), strict=True))
        self.by_poet = {}
        for t, a in zip(train, corpus.authors_of("train"), strict=True):
            if a in known_poets:
                self.by_poet.setdefault(a, []).append(t)
        self.calls = []

    def write(self, begins, nums=None, seeds=None, form="free", title="", author="", **opts):
        self.calls.append({"form": form, "title": title, "author": author, **opts})
        begins = [begins] if isinstance(begins, str) else begins
        if author and author not in self.by_poet:
            raise self.error(f"no such poet {author}", "author")
        poems = []
        for b, s in zip(begins, seeds, strict=True):
            plan = None
            if title:
                text = self.by_title[title]
            elif opts.get("keywords"):  # each keyword starts a line; an odd seed puts the second one a line late
                pool = self.by_form[form]
                lines = regular.split_lines(pool[s % len(pool)])
                plan = [{"word": w, "line": k, "given": True} for k, w in enumerate(opts["keywords"])]
                for k, w in enumerate(opts["keywords"]):
                    at = k + (k == 1 and s % 2)
                    lines[at] = w + lines[at][len(w) :]
                text = "".join(ln + ("，" if k % 2 == 0 else "。") for k, ln in enumerate(lines))
            elif author:
                text = self.by_poet[author][s % len(self.by_poet[author])]
            else:
                pool = self.by_form[form]
                text = b + pool[s % len(pool)][1:] if b else pool[s % len(pool)]
            poems.append(type("Poem", (), {"text": text, "plan": plan}))
        return poems


@pytest.mark.slow
def test_readers_of_a_poet_that_writes_human_poems(monkeypatch):
    from tangshi.config import DataConfig
    from tangshi.data.corpus import Corpus, load_corpus
    from tangshi.evaluation import suite

    need_shared_data()
    raw = load_corpus([TANG / f"poet.tang.{1000 * k}.json" for k in range(5)], DataConfig(), use_cache=False)
    titles = [t if raw.titles.count(t) == 1 else "" for t in raw.titles]  # a title names one poem
    corpus = Corpus(raw.texts, [2 if i % 3 == 0 else 0 for i in range(len(raw.texts))], titles, raw.authors)
    judges = suite.make_judges(corpus, "test", 40, seed=1)
    ref = judges.reference
    assert ref["poems"] == 40 and ref["control_poems"] == 40 and 0.3 < ref["auc_human_vs_human"] < 0.7
    assert ref["coherence_human"] > ref["coherence_shuffled"] and ref["retrieval_poems"] == 40
    assert ref["attribution"]["share"] > 0.2 and ref["attribution"]["chance"] == 0.05
    known = judges.attribution.poets[:3]
    poet = FakePoet(corpus, known)
    out = suite.readers_model(poet, "fake", judges, [(0.7, 0.1)])
    (row,) = out["rows"]
    assert row["form"]["auc"] < 0.75 and row["free"]["poems"] == 40 and row["form"]["unknown_begins"] == 0
    assert {c["temperature"] for c in poet.calls} == {0.7} and {c["diversity"] for c in poet.calls} == {0.1}
    assert {c["form"] for c in poet.calls if not c["title"] and not c["author"]} == {*judges.human.forms, "free"}
    untitled = out["title"]["untitled"]
    assert out["title"]["retrieval"] >= (40 - untitled) / 40 - 0.05  # a titled poem is its own nearest
    author = out["author"]
    assert set(author["poets"]) == set(known) and len(author["unknown_poets"]) == 17
    assert author["share"] > 0.5 and author["chance"] == 0.05
    kw = out["keywords"]
    assert kw["poems"] >= 30 and kw["asked"] == 2 * kw["poems"] and kw["refused"] == 0
    assert kw["present"] == 1.0 and 0.6 < kw["placed"] < 0.9  # the second keyword a line late in half the poems
    assert 0 < kw["in_form"] < 0.5  # human poems with words pasted in: few rhyme and keep every tone
    assert {c["keywords"] for c in poet.calls if c.get("keywords")} == {
        suite._asked_keywords(t) for t in judges.human.texts if suite._asked_keywords(t)
    }
    monkeypatch.setattr("tangshi.options.NAMES", ("num", "seed", "form"))
    assert suite.title_row(poet, judges, 1.0, 0.0) == {"note": "Poet.write takes no title= yet"}
    assert suite.author_row(poet, judges, 40, 1.0, 0.0) == {"note": "Poet.write takes no author= yet"}
    assert suite.keyword_row(poet, judges, 1.0, 0.0) == {"note": "Poet.write takes no keywords= yet"}
    md = suite.readers_markdown({"split": "test", "human": ref, "models": [out]})
    assert any(line.startswith("| fake | title | 40 | retrieval@1 |") for line in md)
    assert any(
        line.startswith(f"| fake | keywords | {kw['poems']} | present, in the planned line, in form | 100 %")
        for line in md
    )
