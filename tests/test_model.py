import pytest
import torch

from tangshi.config import ModelConfig
from tangshi.model import CharRNN, count_parameters


def make(cell: str, **kw) -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(ModelConfig(cell=cell, embedding_size=6, hidden_size=8, num_layers=2, vocab_size=20, **kw)).eval()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_forward_shapes_and_carried_state_equals_full_run(cell):
    model = make(cell)
    ids = torch.randint(4, 20, (3, 7))
    full, _ = model(ids)
    assert full.shape == (3, 7, 20)
    state, steps = None, []
    for t in range(7):
        logits, state = model(ids[:, t : t + 1], state)
        steps.append(logits)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_keep_computes_only_real_positions():
    model = make("lstm")
    ids = torch.randint(4, 20, (2, 5))
    keep = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    full, _ = model(ids)
    kept, _ = model(ids, keep=keep)
    assert kept.shape == (8, 20) and torch.allclose(kept, full[keep], atol=1e-6)


def test_tied_weights_share_the_embedding():
    untied, tied = make("gru"), make("gru", tie_weights=True)
    assert tied.head.weight is tied.embed.weight
    assert count_parameters(tied) < count_parameters(untied)


def test_bad_config_names_the_option():
    with pytest.raises(Exception, match="--cell must be one of"):
        CharRNN(ModelConfig(cell="transformer", vocab_size=20))
