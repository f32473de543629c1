import pytest
import torch

from tangshi.config import ModelConfig
from tangshi.model import kernels
from tangshi.model.cells import StepState
from tangshi.model.charrnn import CharRNN, count_parameters
from tangshi.model.kernels import int8_rows
from tangshi.model.losses import real_rows, take_rows


def make(cell: str, **kw) -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(ModelConfig(cell=cell, embedding_size=6, hidden_size=8, num_layers=2, vocab_size=20, **kw)).eval()


def stepped(model: CharRNN, ids: torch.Tensor) -> tuple[torch.Tensor, StepState]:
    """(B, T, V) logits of `ids` written one `step` at a time, and the state after them."""
    state, steps = None, []
    for t in range(ids.shape[1]):
        logits, state = model.step(ids[:, t], state)
        steps.append(logits)
    return torch.stack(steps, dim=1), state


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


def test_adaptive_output_is_a_distribution_and_its_loss_matches():
    model = make("lstm", output="adaptive", cutoffs="8,14", div_value=2.0)
    assert model.adaptive
    ids = torch.randint(4, 20, (3, 6))
    logp, _ = model(ids)
    assert logp.shape == (3, 6, 20)
    assert torch.allclose(logp.logsumexp(-1), torch.zeros(3, 6), atol=1e-5)
    targets = torch.randint(4, 20, (3, 6))
    targets[0, 4:] = 0  # padding
    loss, n = model.nll(ids, targets, ignore=0)
    keep = targets != 0
    expected = -logp[keep].gather(1, targets[keep][:, None]).mean()
    assert n == int(keep.sum()) and torch.allclose(loss, expected, atol=1e-5)


def test_full_output_loss_matches_cross_entropy():
    model = make("gru")
    ids, targets = torch.randint(4, 20, (2, 5)), torch.randint(4, 20, (2, 5))
    targets[1, 3:] = 0
    loss, n = model.nll(ids, targets, ignore=0)
    logits, _ = model(ids)
    keep = targets != 0
    assert n == 8 and torch.allclose(loss, torch.nn.functional.cross_entropy(logits[keep], targets[keep]))


def test_adaptive_cutoffs_past_the_vocabulary_fall_back_to_full():
    assert not make("rnn", output="adaptive", cutoffs="100,200").adaptive
    assert make("rnn", output="adaptive", cutoffs="10,100").head.cutoffs == [10, 20]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("output", ["full", "adaptive"])
def test_step_equals_forward(cell, output, monkeypatch):
    monkeypatch.setattr("tangshi.model.kernels.step_weights", lambda device: "float32")  # float32 steps: equal to 1e-5
    model = make(cell, output=output, cutoffs="8,14", div_value=2.0)
    ids = torch.randint(4, 20, (3, 6))
    full, full_state = model(ids)
    steps, state = stepped(model, ids)
    assert torch.allclose(steps, full, atol=1e-5)
    state = state.tensors()  # as forward gives it
    for a, b in zip(state if cell == "lstm" else [state], full_state if cell == "lstm" else [full_state], strict=True):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_fused_linear_cross_entropy_equals_the_unfused_loss_and_gradients(bias):
    import torch.nn.functional as F

    from tangshi.model.losses import linear_cross_entropy

    g = torch.Generator().manual_seed(0)
    h = torch.randn(300, 16, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(50, 16, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(50, dtype=torch.float64, generator=g, requires_grad=True) if bias else None
    t = torch.randint(0, 50, (300,), generator=g)
    params = [x for x in (h, w, b) if x is not None]
    ref = F.cross_entropy(F.linear(h, w, b), t)
    expected = torch.autograd.grad(3 * ref, params)
    got_loss = linear_cross_entropy(h, w, b, t, chunk=64)  # 300 rows: four full chunks and a partial one
    got = torch.autograd.grad(3 * got_loss, params)
    assert torch.allclose(got_loss, ref, atol=1e-12)
    for a, e in zip(got, expected, strict=True):
        assert torch.allclose(a, e, atol=1e-12)
    with torch.no_grad():  # no gradient wanted: the loss alone
        assert torch.allclose(linear_cross_entropy(h, w, b, t, chunk=64), ref, atol=1e-12)


def test_fused_adaptive_cross_entropy_equals_the_modules_loss_and_gradients():
    from torch import nn

    from tangshi.model.losses import adaptive_cross_entropy

    torch.manual_seed(0)
    head = nn.AdaptiveLogSoftmaxWithLoss(16, 60, [10, 30], div_value=2.0).double()
    h = torch.randn(300, 16, dtype=torch.float64, requires_grad=True)
    t = torch.cat([torch.randint(0, 10, (250,)), torch.randint(10, 30, (50,))])  # the last cluster: no rows
    params = [h, *head.parameters()]
    ref = -head(h, t).output.mean()
    expected = torch.autograd.grad(ref, params, allow_unused=True)
    got_loss = adaptive_cross_entropy(h, head, t)
    got = torch.autograd.grad(got_loss, params, allow_unused=True)
    assert torch.allclose(got_loss, ref, atol=1e-12)
    for a, e in zip(got, expected, strict=True):
        if e is None:  # the unused cluster
            assert a is None or not a.any()
        else:
            assert torch.allclose(a, e, atol=1e-12)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_layer_by_layer_training_pass_equals_the_fused_one_without_dropout(cell):
    model = make(cell, variational=True).train()  # dropout 0: the masks are all ones
    ids = torch.randint(4, 20, (3, 7))
    fast = CharRNN(model.cfg)
    fast.load_state_dict(model.state_dict())
    fast.cfg = ModelConfig(**{**vars(model.cfg), "variational": False})
    fast.train()
    (a, sa), (b, sb) = model.features(ids), fast.features(ids)
    assert torch.allclose(a, b, atol=1e-6)
    for x, y in zip(sa if cell == "lstm" else [sa], sb if cell == "lstm" else [sb], strict=True):
        assert torch.allclose(x, y, atol=1e-6)


def test_variational_dropout_shares_one_mask_across_time():
    model = make("lstm", dropout=0.5, variational=True).train()
    x = torch.ones(4, 9, 6)
    out = model._dropout(x)
    assert ((out == 0) | (out == 2)).all()
    assert torch.equal(out, out[:, :1].expand_as(out))  # the same mask at every step
    assert not torch.equal(out[0], out[1]) or not torch.equal(out[1], out[2])  # a mask a sequence


def test_weight_drop_changes_training_outputs_but_not_evaluation():
    model = make("lstm", weight_drop=0.5)
    ids = torch.randint(4, 20, (2, 6))
    before = model(ids)[0]
    model.train()
    torch.manual_seed(1)
    dropped = model.features(ids)[0]
    model.eval()
    assert torch.equal(model(ids)[0], before)
    assert not torch.allclose(dropped, model.features(ids)[0])
    w_hh = model.rnn.weight_hh_l0
    loss = model.train().features(ids)[0].sum()
    loss.backward()
    assert w_hh.grad is not None and w_hh.grad.abs().sum() > 0


def test_weight_drop_out_of_range_names_the_option():
    with pytest.raises(Exception, match="--weight-drop"):
        make("lstm", weight_drop=1.0)


def test_embedding_dropout_drops_whole_characters_while_training_only():
    model = make("lstm", embed_drop=0.5)
    ids = torch.tensor([[5, 6, 5, 7, 5, 6]])
    model.train()
    torch.manual_seed(3)
    rows = model._embed(ids)[0]
    table = model.embed.weight
    for i, c in enumerate(ids[0].tolist()):  # a character is dropped everywhere or scaled by 2 everywhere
        dropped = bool((rows[i] == 0).all())
        assert dropped or torch.allclose(rows[i], 2 * table[c])
        same = [j for j, d in enumerate(ids[0].tolist()) if d == c]
        assert all(bool((rows[j] == 0).all()) == dropped for j in same)
    model.eval()
    assert torch.equal(model._embed(ids), model.embed(ids))


@pytest.mark.parametrize("variational", [False, True])
def test_activation_penalties_add_to_the_objective_in_training_only(variational):
    ids = torch.randint(4, 20, (3, 7))
    targets = ids.clone()
    targets[0, 5:] = 0  # padding trails
    plain = make("lstm", variational=variational).train()
    penalised = make("lstm", variational=variational, ar=2.0, tar=1.0).train()
    total0, loss0 = plain.objective(ids, targets, ignore=0)
    total, loss = penalised.objective(ids, targets, ignore=0)
    assert torch.allclose(loss, loss0) and torch.allclose(total0, loss0)
    keep = targets != 0
    _, _, raw, dropped = penalised._features(ids, None)
    ar = dropped[keep].pow(2).mean()
    tar = (raw[:, 1:] - raw[:, :-1])[keep[:, 1:]].pow(2).mean()
    assert torch.allclose(total, loss + 2.0 * ar + 1.0 * tar, atol=1e-6)
    penalised.eval()
    total_eval, loss_eval = penalised.objective(ids, targets, ignore=0)
    assert torch.equal(total_eval, loss_eval)


def test_new_regularisers_out_of_range_name_the_option():
    with pytest.raises(Exception, match="--embed-drop"):
        make("lstm", embed_drop=1.0)
    with pytest.raises(Exception, match="--ar and --tar"):
        make("lstm", tar=-1.0)


def test_fused_cross_entropy_keeps_a_target_whose_probability_underflows():
    import torch.nn.functional as F

    from tangshi.model.losses import linear_cross_entropy

    h = torch.tensor([[200.0, 0.0], [0.0, 1.0], [-150.0, 3.0]])  # row 0 and 2: p(target) ~ e^-200 in float32
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.5]])
    t = torch.tensor([2, 1, 0])
    ref = F.cross_entropy(F.linear(h, w), t)
    got = linear_cross_entropy(h, w, None, t, chunk=2)
    assert torch.isfinite(got) and torch.allclose(got, ref, rtol=1e-6)


@pytest.mark.parametrize("kind", ["qint8", "bfloat16", "int8"])
@pytest.mark.parametrize("output", ["full", "adaptive"])
def test_the_narrow_step_is_close_to_forward_and_the_same_whatever_the_batch(kind, output, monkeypatch):
    from tangshi.model.device import cpu_has_bf16

    if kind == "bfloat16" and not cpu_has_bf16():
        pytest.skip("no bfloat16 hardware: bfloat16 products are emulated there, and not used")
    if kind == "qint8" and not kernels.onednn_int8_exact():
        pytest.skip("oneDNN's uint8 x int8 sums are not exact on this CPU: not used")
    monkeypatch.setattr("tangshi.model.kernels.step_weights", lambda device: kind)
    torch.manual_seed(0)
    cfg = ModelConfig(cell="lstm", embedding_size=32, hidden_size=32, num_layers=2, vocab_size=50, output=output)
    if output == "adaptive":
        cfg.cutoffs = "20,35"
    model = CharRNN(cfg).eval()
    steps = model.prepared("cpu")
    if kind == "qint8":  # W_ih x + b by id; layer i's h times [W_ih of layer i + 1 (or the head) | W_hh of layer i]
        assert steps.kind == "qint8" and steps.embed[0] == "table" and steps.embed[1].shape == (50, 128)
        (p0, b0, rows0), (p1, b1, rows1) = steps.layers
        ahead = [22, 8, 2] if output == "adaptive" else [50]
        assert (rows0, rows1) == (128, sum(ahead)) and steps.head[0] == ahead
        s_ih1, s_hh0 = int8_rows(model.rnn.weight_ih_l1)[1], int8_rows(model.rnn.weight_hh_l0)[1]
        assert torch.equal(p0[1], torch.cat([s_ih1, s_hh0])) and torch.equal(b0[128:], torch.zeros(128))
        assert torch.equal(p1[1][rows1:], int8_rows(model.rnn.weight_hh_l1)[1])
    elif steps.layers[0][0] == "onednn":  # oneDNN's layout, where torch has it and its sums do not depend on the batch
        _, w, _, scales = steps.layers[0]
        assert kind == "bfloat16" and w.dtype == torch.bfloat16 and scales is None
    else:  # W_ih and W_hh apart, each exactly as a shipped checkpoint stores it
        packed, w, _, scales = steps.layers[0]
        q, s = int8_rows(model.rnn.weight_hh_l0)
        assert packed == "int8" and w[1].dtype == torch.int8 and torch.equal(w[1], q) and torch.equal(scales[1], s)
        assert w[0].shape == (4 * 32, 32) and scales[0].dtype == torch.float32
    ids = torch.randint(4, 50, (16, 8))
    full, _ = model(ids)
    steps, _ = stepped(model, ids)
    assert (steps - full).abs().max() < 0.05 and not torch.equal(steps, full)  # narrow weights: close
    (_, one), (_, every) = stepped(model, ids[5:6]), stepped(model, ids)
    assert torch.equal(one.h, every.h[:, 5:6]) and torch.equal(one.c, every.c[:, 5:6])  # whatever the batch
    with torch.no_grad():  # weights written in place (as training does): the packed copy follows
        model.rnn.weight_ih_l0.mul_(0.5)
    assert not torch.equal(model.step(ids[:, 0])[0], steps[:, 0])


@pytest.mark.parametrize("layers", [1, 3])
def test_uint8_steps_without_the_input_table_and_after_a_state_is_selected(layers, monkeypatch):
    """Where the first layer's table would take too much memory, the embedding's uint8 rows go through
    W_ih; a state whose rows are selected (beam search) or made anew steps as the state it came from."""
    if not kernels.onednn_int8_exact():
        pytest.skip("oneDNN's uint8 x int8 sums are not exact on this CPU: not used")
    monkeypatch.setattr("tangshi.model.kernels.step_weights", lambda device: "qint8")
    monkeypatch.setattr(kernels, "INPUT_TABLE_BYTES", 0)
    torch.manual_seed(0)
    cfg = ModelConfig(cell="lstm", embedding_size=32, hidden_size=32, num_layers=layers, vocab_size=50)
    model = CharRNN(cfg).eval()
    steps = model.prepared("cpu")
    assert steps.kind == "qint8" and steps.embed[0] == "uint8" and len(steps.layers) == layers
    ids = torch.randint(4, 50, (6, 8))
    full, _ = model(ids)
    (_, one), (logits, state) = stepped(model, ids[5:6]), stepped(model, ids)
    assert (logits - full).abs().max() < 0.05
    assert torch.equal(one.h, state.h[:, 5:6]) and torch.equal(one.c, state.c[:, 5:6])
    rows = torch.tensor([4, 0, 0])
    selected = model.select_state(state, rows)  # what the steps carry for the state, selected with it
    assert len(selected.carried) == layers and all(
        torch.equal(a, b[rows]) for a, b in zip(selected.carried, state.carried, strict=True)
    )
    kept, kept_state = model.step(ids[rows, 0], selected)
    anew, anew_state = model.step(ids[rows, 0], StepState(selected.h.clone(), selected.c.clone()))  # made again
    assert torch.equal(kept, anew)
    assert torch.equal(kept_state.h, anew_state.h) and torch.equal(kept_state.c, anew_state.c)
    assert all(torch.equal(a, b) for a, b in zip(kept_state.carried, anew_state.carried, strict=True))


@pytest.mark.parametrize(("cell", "kind"), [("lstm", "qint8"), ("lstm", "float32"), ("gru", "float32")])
def test_rows_set_from_a_one_row_state_step_as_that_state_and_a_step_writes_nothing_on_the_model(
    cell, kind, monkeypatch
):
    """`set_rows` writes a context's state into rows of a batch state (what the qint8 step carried for
    the batch is dropped and made again from h: the same numbers); the other rows keep theirs. The
    steps keep nothing on the model: a state steps the same after other states have stepped. (float32
    steps are not batch-invariant: equal to rounding there.)"""
    if kind == "qint8" and not kernels.onednn_int8_exact():
        pytest.skip("oneDNN's uint8 x int8 sums are not exact on this CPU: not used")
    monkeypatch.setattr("tangshi.model.kernels.step_weights", lambda device: kind)
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(cell=cell, embedding_size=32, hidden_size=32, num_layers=2, vocab_size=50)).eval()
    prepared = model.prepared("cpu")
    same = torch.equal if kind == "qint8" else lambda a, b: torch.allclose(a, b, atol=1e-6)
    ids = torch.randint(4, 50, (3, 5))
    with torch.inference_mode():  # as prime writes rows: the steps' states are inference tensors
        _, context = stepped(model, ids[2:])  # one row
        _, batch = stepped(model, ids[:2])  # two rows, each carrying what the steps made ahead
        model.set_rows(batch, torch.tensor([1]), context)
        assert batch.carried is None and torch.equal(batch.h[:, 1], context.h[:, 0])
        after = model.__dict__.copy()
        x = torch.tensor([7, 9])
        logits, _ = model.step(x, batch, prepared)
        alone, _ = model.step(x[1:], context, prepared)
        first, _ = model.step(x[:1], stepped(model, ids[:1])[1], prepared)
        assert same(logits[1:], alone) and same(logits[:1], first)
        assert model.__dict__.keys() == after.keys() and all(model.__dict__[k] is v for k, v in after.items())
        zeros = model.initial_state(3, "cpu")
        model.set_rows(zeros, torch.tensor([0, 2]), context)
        assert same(model.step(x[:1].repeat(3), zeros, prepared)[0][[0, 2]], model.step(x[:1], context)[0].repeat(2, 1))


@pytest.mark.parametrize("kind", ["qint8", "float32"])
def test_a_shortlist_step_is_the_shortlists_part_of_the_whole(kind, monkeypatch):
    if kind == "qint8" and not kernels.onednn_int8_exact():
        pytest.skip("oneDNN's uint8 x int8 sums are not exact on this CPU: not used")
    monkeypatch.setattr("tangshi.model.kernels.step_weights", lambda device: kind)
    torch.manual_seed(0)
    cfg = ModelConfig(cell="lstm", embedding_size=32, hidden_size=32, num_layers=2, vocab_size=50, output="adaptive")
    cfg.cutoffs = "20,35"
    model = CharRNN(cfg).eval()
    ids = torch.randint(4, 50, (5, 3))
    _, state = stepped(model, ids)
    whole, after = model.step(ids[:, 0], state)
    short, after_short = model.step(ids[:, 0], state, shortlist=True)
    assert short.shape == (5, 20) and torch.equal(short, whole[:, :20])
    assert torch.equal(after.h, after_short.h) and torch.equal(after.c, after_short.c)


def test_the_padded_adaptive_likelihood_is_the_modules():
    """Each cluster's rows padded to a multiple of 64 (kernels reused under autocast): the same
    log-likelihoods and gradients as `AdaptiveLogSoftmaxWithLoss`, whatever the clusters' row counts."""
    from torch import nn

    from tangshi.model.losses import adaptive_log_likelihood

    torch.manual_seed(0)
    head = nn.AdaptiveLogSoftmaxWithLoss(16, 300, [40, 120], div_value=2.0)
    h = torch.randn(203, 16, requires_grad=True)
    targets = torch.cat([torch.randint(0, 40, (150,)), torch.randint(40, 120, (45,)), torch.randint(120, 300, (8,))])
    want, got = head(h, targets).output, adaptive_log_likelihood(head, h, targets)
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    (g_want,) = torch.autograd.grad(want.sum(), h)
    (g_got,) = torch.autograd.grad(got.sum(), h)
    assert torch.allclose(g_got, g_want, atol=1e-6, rtol=0)
    only_head = adaptive_log_likelihood(head, h[:5], targets[:5])  # no rare character: no cluster product
    assert torch.allclose(only_head, head(h[:5], targets[:5]).output, atol=1e-6, rtol=0)


def test_uint8_steps_whose_sums_depend_on_the_batch_or_saturate_are_not_used(monkeypatch):
    """Where a uint8 x int8 product would give a row other numbers in a batch, the steps take the next
    kind; where oneDNN's sums are not exact (16-bit pairs saturating), uint8 steps are never chosen."""
    if not kernels.onednn_int8_exact():
        pytest.skip("oneDNN's uint8 x int8 sums are not exact on this CPU: uint8 steps are never made")
    real = kernels.qproduct
    monkeypatch.setattr(kernels, "qproduct", lambda x, *a, **k: real(x, *a, **k) + (x.shape[0] > 1))
    monkeypatch.setattr("tangshi.model.kernels.step_weights", lambda device: "qint8")
    model = CharRNN(ModelConfig(cell="lstm", embedding_size=32, hidden_size=32, num_layers=2, vocab_size=50)).eval()
    steps = model.prepared("cpu")
    assert steps.kind == "layers" and steps.layers[0][0] in ("onednn", "int8")
    monkeypatch.setattr(kernels, "qproduct", lambda x, *a, **k: real(x, *a, **k).clamp(-32768, 32767))
    assert not kernels.onednn_int8_exact.__wrapped__()
    monkeypatch.setattr(kernels, "qproduct", real)
    assert kernels.onednn_int8_exact.__wrapped__()


def test_a_bfloat16_layout_whose_sums_depend_on_the_batch_is_not_used(monkeypatch):
    """Where oneDNN's one-row layout would give a row other sums in a batch, the steps take int8."""
    from tangshi.model.device import cpu_has_bf16

    if not cpu_has_bf16():
        pytest.skip("no bfloat16 hardware: the layout is never made there")
    real = kernels.onednn_product
    monkeypatch.setattr(kernels, "onednn_product", lambda x, packed: real(x, packed) + (x.shape[0] > 1))
    monkeypatch.setattr("tangshi.model.kernels.step_weights", lambda device: "bfloat16")
    cfg = ModelConfig(cell="lstm", embedding_size=32, hidden_size=32, num_layers=2, vocab_size=50)
    assert [layer.kind for layer in CharRNN(cfg).eval().prepared("cpu").layers] == ["int8", "int8"]
    monkeypatch.setattr(kernels, "onednn_product", real)
    assert [layer.kind for layer in CharRNN(cfg).eval().prepared("cpu").layers] == ["onednn", "onednn"]


def test_h_goes_on_a_grid_of_1_128_rounded_to_nearest_within_uint8():
    from tangshi.model.kernels import QUANT_H, QUANT_ZERO, quantize_h

    h = torch.tensor([[-1.0, -0.5, 0.0, 0.3 / 128, 0.7 / 128, 0.5, 127 / 128, 1.0]])
    q = quantize_h(h)
    assert q.dtype == torch.uint8 and q.tolist() == [[0, 63, 127, 127, 128, 191, 254, 255]]
    grid = torch.rand(1000, 512) * 1.99 - 0.99  # below -127.5/128 the grid's end, -127/128, is nearest
    back = (quantize_h(grid).float() - QUANT_ZERO) * QUANT_H
    assert (back - grid).abs().max() <= QUANT_H / 2 + 1e-7  # the nearest point of the grid


def test_take_rows_is_the_boolean_mask_forward_and_backward():
    """The objective gathers its real positions with index_select: the same rows in the same order as
    x[targets != pad], and the same gradient (zeros at padding)."""
    torch.manual_seed(0)
    targets = torch.randint(1, 50, (5, 9))
    targets[1, 6:] = 0
    targets[3, 2:] = 0
    x = torch.randn(5, 9, 4, requires_grad=True)
    keep = targets != 0
    rows = real_rows(targets, 0)
    assert rows.tolist() == keep.reshape(-1).nonzero().squeeze(1).tolist()
    picked = take_rows(x, rows)
    assert torch.equal(picked, x[keep]) and torch.equal(take_rows(targets, rows), targets[keep])
    weights = torch.randn_like(picked)
    (by_rows,) = torch.autograd.grad((picked * weights).sum(), x)
    (by_mask,) = torch.autograd.grad((x[keep] * weights).sum(), x)
    assert torch.equal(by_rows, by_mask) and not by_rows[3, 2:].any()
