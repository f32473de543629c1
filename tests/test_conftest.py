"""The suite's own machinery (conftest.py, docs/testing.md): the rule of the `slow` marker (a test not marked slow
that loads the bundled model, reads the real corpus, starts a process or opens a network socket is stopped before
it does, with a message saying to mark it) and the tiny run that tests share."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from conftest import GUARD, IN_A_FIXTURE, TANG, SlowTestError, need_shared_data, tiny_config
from tangshi import Poet
from tangshi.api import bundled_path
from tangshi.model import checkpoint


@contextmanager
def refused(match: str) -> Iterator[None]:
    """The refusal a test expects, taken back so that the test itself passes."""
    with pytest.raises(SlowTestError, match=match):
        yield
    assert len(GUARD.broken) == 1
    GUARD.broken.clear()


def test_loading_the_bundled_model_is_refused_before_its_weights_are_read(monkeypatch):
    monkeypatch.setattr(checkpoint, "CharRNN", lambda *a, **k: pytest.fail("the model was built"))
    with refused(r"test_conftest.py::\S+ is not marked slow but loads the bundled model \(\S+bundled\)"):
        Poet.load()


def test_a_copy_of_the_bundled_model_is_refused(tmp_path):
    with refused(r"reads the bundled model \(\S+/bundled/\w+\.safetensors\): mark it @pytest.mark.slow"):
        shutil.copytree(bundled_path(), tmp_path / "copy")


def test_reading_the_real_corpus_is_refused():
    need_shared_data()
    with refused(r"reads the real corpus \(\S+poet.tang.0.json\)"):
        (TANG / "poet.tang.0.json").read_bytes()


def test_the_tiny_run_is_the_run_its_poems_train(tiny_run, poems_txt, tmp_path):
    """tiny_run copies one training a session: the same weights as a test's own, resuming from its poems_txt."""
    from tangshi.training.train import train

    train(tiny_config(), [str(poems_txt)], tmp_path / "own")
    for name in ("best", "step-000005", "step-000010"):
        own, shared = checkpoint.load(tmp_path / "own" / name), checkpoint.load(tiny_run / name)
        assert own.config == shared.config and own.vocab.tokens == shared.vocab.tokens
        assert all(torch.equal(a, b) for a, b in zip(own.model.parameters(), shared.model.parameters(), strict=True))
    state = json.loads((tiny_run / "step-000010" / "trainer.json").read_text("utf-8"))["state"]
    assert state["data"] == [str(poems_txt)] and not GUARD.broken


def test_starting_a_process_is_refused():
    with refused(r"starts a process \(subprocess.Popen .*true"):
        subprocess.run(["true"], check=True)


def test_a_network_socket_is_refused_and_a_unix_one_is_not():
    with socket.socket() as s, refused(r"opens a network socket \(socket.bind \('127.0.0.1', 0\)\)"):
        s.bind(("127.0.0.1", 0))
    a, b = socket.socketpair()  # what an event loop wakes itself with
    a.close(), b.close()


def test_a_test_module_may_not_start_a_process_as_it_is_imported():
    with GUARD.watching("tests/test_x.py, as it is imported,", IN_A_FIXTURE), pytest.raises(SlowTestError) as e:
        subprocess.run(["true"], check=True)
    assert str(e.value).startswith("tests/test_x.py, as it is imported, starts a process (subprocess.Popen")
    assert str(e.value).endswith("do it in a fixture, which only the slow tests that use it set up (docs/testing.md)")
    assert GUARD.who.endswith("is not marked slow but") and not GUARD.broken  # this test's watch goes on


@pytest.mark.slow
def test_a_slow_test_may_start_a_process():
    assert subprocess.run(["true"], check=True).returncode == 0 and GUARD.who is None
