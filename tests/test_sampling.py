"""The draw and the filters: inverse-CDF sampling, top-k, the one-sort nucleus, the repetition penalty."""

import pytest
import torch

from tangshi.generation.sampling import NEG_INF, Draw, penalise_repeats, sample, sample_top_p, top_k_filter


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """The oracle: keep the smallest set of most likely ids whose probability reaches p (nucleus)."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # mass strictly before each id
    drop_sorted = before >= p  # the first id is always kept
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return torch.where(drop, NEG_INF, logits)


def test_top_k_keeps_k():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert torch.isinf(top_k_filter(logits, 2)).tolist() == [[True, False, False, True]]


def test_top_p_keeps_the_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = ~torch.isinf(top_p_filter(probs.log(), 0.75))
    assert kept.tolist() == [[True, True, False, False]]
    assert (~torch.isinf(top_p_filter(probs.log(), 0.01))).sum() == 1


def test_inverse_cdf_sampling_follows_the_uniforms():
    logits = torch.tensor([[0.25, 0.25, 0.5]]).log().repeat(3, 1)
    assert sample(logits, torch.tensor([0.1, 0.3, 0.9])).tolist() == [0, 1, 2]


def test_sampling_never_picks_a_masked_id():
    logits = torch.zeros(64, 10)
    logits[:, :3] = NEG_INF
    ids = Draw(top_p=1.0)(logits, torch.rand(64))
    assert ids.min() >= 3


def test_the_largest_uniform_never_lands_past_the_last_possible_id():
    torch.manual_seed(0)
    logits = torch.randn(256, 50) * torch.rand(256, 1) * 20  # flat to peaked rows
    logits[:, 30:] = NEG_INF  # a masked tail, where a draw past the end would land
    ids = sample(logits, torch.full((256,), 1 - 2**-24))  # torch.rand's largest value
    assert ids.max() < 30 and (torch.softmax(logits, -1).gather(1, ids[:, None]) > 0).all()


def test_greedy_is_argmax_and_top_p_draws_from_the_nucleus():
    logits = torch.tensor([[0.0, 5.0, 1.0]])
    assert Draw(greedy=True)(logits, torch.tensor([0.99])).tolist() == [1]
    assert Draw(top_p=0.5)(logits, torch.tensor([0.99])).tolist() == [1]  # the nucleus is the top id alone
    assert Draw()(logits, torch.tensor([0.999])).tolist() == [2]
    assert (Draw(greedy=True).option, Draw(top_p=0.5).option) == ("greedy", "top_p")


def test_repetition_penalty_lowers_only_seen_ids():
    logits = torch.tensor([[2.0, -1.0, 2.0, -1.0]])
    seen = torch.tensor([[True, True, False, False]])
    assert penalise_repeats(logits, seen, 2.0).tolist() == [[1.0, -2.0, 2.0, -1.0]]


def test_one_sort_nucleus_draws_the_filtered_distribution():
    torch.manual_seed(0)
    logits = torch.randn(1, 30)
    logits[0, 5] = float("-inf")
    kept = torch.isfinite(top_p_filter(logits, 0.7))[0]
    u = torch.rand(20000)
    ids = sample_top_p(logits.expand(20000, -1), u, 0.7)
    assert kept[ids].all()  # never outside the nucleus
    freq = torch.bincount(ids, minlength=30).float() / len(ids)
    expected = torch.softmax(logits.masked_fill(~kept, float("-inf")), dim=-1)[0]
    assert torch.allclose(freq, expected, atol=0.01)
    # p = 1 keeps everything finite; tiny p keeps the most likely id only
    assert sample_top_p(logits, torch.tensor([0.999]), 1.0).item() != 5
    assert sample_top_p(logits, torch.tensor([0.5]), 1e-6).item() == int(logits.argmax())


def full_sort_nucleus(logits: torch.Tensor, u: torch.Tensor, p: float) -> torch.Tensor:
    """The plain way: sort every row, cut the nucleus, draw by inverse CDF (float64)."""
    probs, order = torch.sort(torch.softmax(logits.float(), dim=-1).double(), dim=-1, descending=True, stable=True)
    cdf = probs.cumsum(-1)
    kept = ((cdf - probs) < p).sum(-1, keepdim=True).clamp(min=1)
    idx = torch.searchsorted(cdf, u.double().unsqueeze(-1) * cdf.gather(-1, kept - 1), right=True)
    return order.gather(-1, torch.minimum(idx, kept - 1)).squeeze(-1)


@pytest.mark.parametrize("scale", [0.3, 3.0, 12.0])  # flat to peaked rows: wide and narrow nuclei
def test_nucleus_from_the_exponent_histogram_equals_the_full_sort(scale):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(200, 500, generator=g) * scale
    logits[:, 400:] = float("-inf")  # masked ids, as under a form
    logits[7, :] = float("-inf")
    logits[7, 42] = 0.0  # a row with one allowed id
    logits[8, :4] = 5.0  # ties at the top
    u = torch.rand(200, generator=g)
    for p in (5e-324, 1e-6, 0.5, 0.9, 0.999, 1.0):  # 5e-324: 0 in float32
        ids = sample_top_p(logits, u, p)
        assert torch.equal(ids, full_sort_nucleus(logits, u, p)), p
        assert ids[7] == 42 and torch.isfinite(logits.gather(1, ids[:, None])).all()
