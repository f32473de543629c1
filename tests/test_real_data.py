"""Behaviour that depends on the real corpus in ../shared/data."""

import json
import subprocess
import sys

import pytest

from conftest import TANG, need_shared_data
from tangshi.data import corpus
from tangshi.data.corpus import load_corpus

pytestmark = pytest.mark.slow  # the real corpus, and the bundled model in a subprocess


def test_tang_corpus_counts_and_cache(tmp_path, monkeypatch):
    need_shared_data()
    cold = load_corpus([TANG], cache_dir=tmp_path)
    monkeypatch.setattr(corpus, "read_file", lambda *a: pytest.fail("the cache was not used"))
    warm = load_corpus([TANG], cache_dir=tmp_path)
    assert cold.counts == warm.counts and warm.ids.tolist()[:1000] == cold.ids.tolist()[:1000]
    c = cold.counts
    assert c["read"] + c["malformed"] == 56_496
    assert c["dropped_chars"] == 5_078 and c["dropped_short"] + c["dropped_long"] + c["malformed"] == 6_794
    assert c["kept"] + c["dropped_duplicate"] == 44_624  # the seed's count, which kept duplicates
    assert 7_000 < len(cold.vocab) < 7_200


def test_bundled_model_on_real_poems():
    need_shared_data()
    out = subprocess.run(
        [sys.executable, "-m", "tangshi", "eval", "--data", str(TANG / "poet.tang.0.json"), "--split", "all", "--json"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    report = result["models"][0]
    assert report["poems"] > 500 and 2.0 < report["loss"] < 5.5
    free = report["settings"]["free"]
    assert free["poems"] == 100 and free["end_rate"] > 0.9 and free["line_repeat"] < 0.05
    assert report["settings"]["七律"]["form"] == 1.0 and result["human"]["settings"]["human"]["poems"] == 100
