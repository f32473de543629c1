import math

import torch
import torch.nn.functional as F

from conftest import POEMS
from tangshi import checkpoint
from tangshi.evaluate import corpus_loss, text_loss


def test_text_loss_is_the_mean_over_characters_and_end_token(tiny_run):
    ck = checkpoint.load(tiny_run / "best")
    text = POEMS[0][1]
    ids = torch.tensor([[2, *ck.vocab.encode(text)]])
    targets = torch.tensor([*ck.vocab.encode(text), 3])
    logits, _ = ck.model(ids)
    expected = F.cross_entropy(logits[0], targets).item()
    report = text_loss(ck, [text])
    assert report["tokens"] == len(text) + 1 and report["poems"] == 1
    assert abs(report["loss"] - expected) < 1e-4
    assert abs(report["perplexity"] - math.exp(report["loss"])) < 1e-2


def test_corpus_loss_in_any_format(tiny_run, poems_txt, json_dir):
    ck = checkpoint.load(tiny_run / "best")
    a = corpus_loss(ck, [poems_txt])
    b = corpus_loss(ck, [json_dir])
    assert a["poems"] == b["poems"] == len(POEMS)
    assert abs(a["loss"] - b["loss"]) < 1e-4
    assert a["tokens"] == sum(len(c) + 1 for _, c in POEMS)
