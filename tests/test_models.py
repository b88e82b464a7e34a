"""The models against the plain reference of the paper's equations (tests/reference.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from reference import reference_forward, transition_step

from deeprnn import DeepRNN, ModelConfig, count_parameters, driver, recurrence
from deeprnn.data.batching import MusicBatches
from deeprnn.driver import fast_path_applies, plain_loop, unroll
from deeprnn.errors import ConfigError
from deeprnn.fused import FusedUnroll, plan_of
from deeprnn.inference import evaluate_input
from deeprnn.operators.heads import Bernoulli, Categorical, make_head
from deeprnn.operators.nade import NADE
from deeprnn.operators.projection import Projection
from deeprnn.operators.units import LP_SMOOTHING, lp_derivatives, lp_order, lp_pool
from deeprnn.training import evaluation

# Small configurations covering every kind of part: (name, config keywords).
SMALL = {
    "rnn": dict(hidden_size=7),
    "rnn-tanh": dict(hidden_size=6, transition_units="tanh"),
    "dt": dict(hidden_size=6, transition_sizes=(5,)),
    "dt-3": dict(hidden_size=5, transition_sizes=(4, 6), transition_units=("tanh", "relu", "sigmoid")),
    "dts": dict(hidden_size=6, transition_sizes=(5,), shortcut=True),
    "dts-3-mixed": dict(
        hidden_size=5, transition_sizes=(4, 6), shortcut=True, transition_units=("relu", "tanh", "sigmoid")
    ),
    "do": dict(hidden_size=6, output_sizes=(5,)),
    "dots": dict(hidden_size=6, transition_sizes=(5,), shortcut=True, output_sizes=(4,)),
    "srnn-3": dict(hidden_size=5, levels=3),
    "srnn-dts": dict(hidden_size=5, levels=2, transition_sizes=(4,), shortcut=True),
    "deep-input": dict(hidden_size=6, input_sizes=(5, 4), input_units=("tanh", "relu")),
    "linear-nobias": dict(hidden_size=5, transition_sizes=(4,), transition_units="linear", bias=False),
    "lp-mixed": dict(hidden_size=5, transition_sizes=(4,), transition_units=("lp:3", "tanh")),
    "maxout-transition": dict(
        hidden_size=5, transition_sizes=(4,), shortcut=True, transition_units="maxout:2"
    ),
    "maxout-lp-tanh": dict(
        hidden_size=5, transition_sizes=(6, 4), transition_units=("maxout:3", "lp:2", "tanh")
    ),
    # pooling units outside ⊕: the deep input's and ▷'s layers pool their pieces in rows
    "pooled-input-output": dict(
        hidden_size=6,
        input_sizes=(5, 4),
        input_units=("lp:2", "maxout:2"),  # maxout:2 without a gradient: a maximum of strided pieces
        output_sizes=(4,),
        output_units="lp:3",
    ),
    "dots-star": dict(
        hidden_size=6,
        transition_sizes=(5,),
        shortcut=True,
        output_sizes=(4,),
        transition_units="lp:2",
        output_units="maxout:3",
    ),
}


def make(name: str, *, tokens: bool = False, dtype=torch.float32, seed: int = 0, **extra) -> DeepRNN:
    torch.manual_seed(seed)
    size = 9
    head = "categorical" if tokens else "bernoulli"
    config = ModelConfig(input_size=size, output_size=size, head=head, **SMALL[name], **extra)
    model = DeepRNN(config).to(dtype)
    # Larger weights than the paper's initialisation so that every term matters in the checks.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def inputs(model: DeepRNN, steps: int, batch: int, dtype=torch.float32):
    c = model.config
    if c.tokens:
        return torch.randint(0, c.input_size, (steps, batch))
    return torch.randn(steps, batch, c.input_size, dtype=dtype)


def loss_of(logits_per_seq, h_n, weights_per_seq, h_weight):
    total = (h_n * h_weight).sum()
    for y, w in zip(logits_per_seq, weights_per_seq, strict=True):
        total = total + (y * w[: len(y)]).sum()
    return total


def grads(model, *extra):
    tensors = [p for p in model.parameters()] + list(extra)
    return [t.grad.clone() if t.grad is not None else torch.zeros_like(t) for t in tensors]


def compare(
    name: str, steps: int, batch: int, lengths: list[int] | None, tokens=False, dtype=torch.float32, tol=1e-5
):
    model = make(name, tokens=tokens, dtype=dtype)
    x = inputs(model, steps, batch, dtype)
    if not tokens:
        x.requires_grad_()
    h0 = (
        torch.randn(model.config.levels, batch, model.config.hidden_size, dtype=dtype) * 0.5
    ).requires_grad_()
    lens = lengths or [steps] * batch
    torch.manual_seed(1)
    out_w = [torch.randn(steps, model.config.output_size, dtype=dtype) for _ in range(batch)]
    h_w = torch.randn_like(h0)

    ref_logits, ref_hn = reference_forward(model, x, h0, lens)
    loss_of(ref_logits, ref_hn, out_w, h_w).backward()
    ref_grads = grads(model, h0, *([] if tokens else [x]))
    model.zero_grad()
    h0.grad = None
    if not tokens:
        x.grad = None

    length_arg = torch.tensor(lengths) if lengths is not None else None
    logits, h_n = model(x, h0, length_arg)
    fast = [logits[:n, b] for b, n in enumerate(lens)]
    loss_of(fast, h_n, out_w, h_w).backward()
    fast_grads = grads(model, h0, *([] if tokens else [x]))

    for a, b in zip(fast, ref_logits, strict=True):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)
    torch.testing.assert_close(h_n, ref_hn, atol=tol, rtol=tol)
    names = [n for n, _ in model.named_parameters()] + ["h0"] + ([] if tokens else ["x"])
    for n, a, b in zip(names, fast_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol, msg=lambda m, n=n: f"gradient of {n}: {m}")
    return model, logits


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("batch,lengths", [(1, None), (4, None), (4, [6, 3, 0, 1])])
def test_matches_reference(name, batch, lengths):
    compare(name, steps=6, batch=batch, lengths=lengths)


@pytest.mark.parametrize("name", ["rnn", "dts", "srnn-3", "deep-input", "pooled-input-output"])
def test_token_inputs_match_reference(name):
    compare(name, steps=5, batch=3, lengths=[5, 2, 4], tokens=True)


@pytest.mark.parametrize("name", ["dts", "dots-star", "srnn-dts"])
def test_longer_sequences_match_reference(name):
    compare(name, steps=40, batch=3, lengths=[40, 17, 33])


@pytest.mark.parametrize("name", ["rnn", "dt-3", "dts-3-mixed", "lp-mixed", "maxout-transition", "dots-star"])
@pytest.mark.parametrize("fused", [True, False])
def test_recurrent_dropout_multiplies_h_where_the_matrices_read_it(name, fused):
    """Both paths of unroll with a dropout mask against the reference's equations, in float64:
    W_1 (h ⊙ m) and, with shortcuts, S_l (h ⊙ m); the state carried on is h itself."""
    model = make(name, dtype=torch.float64)
    level = model.recurrence.levels[0]
    x, h0 = torch.randn(5, 2, 9, dtype=torch.float64), torch.randn(2, level.hidden_size, dtype=torch.float64)
    mask = (torch.rand(2, level.hidden_size) > 0.3).double() / 0.7
    with torch.no_grad():
        states = unroll(level, level.project(x), h0, mask, fused=fused)
        for b in range(2):
            h = h0[b]
            for t in range(5):
                h = transition_step(level, x[t, b], h, mask[b])
                torch.testing.assert_close(states[t + 1, b], h, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(states, unroll(level, level.project(x), h0, None, fused=fused))


@pytest.mark.parametrize(
    "name",
    [
        "rnn",
        "dt",
        "dt-3",
        "dts",
        "dts-3-mixed",
        "linear-nobias",
        "dots-star",
        "lp-mixed",
        "maxout-transition",
    ],
)
@pytest.mark.parametrize("dropout", [False, True])
def test_hand_written_bptt_passes_gradcheck(name, dropout):
    model = make(name, dtype=torch.float64)
    cell = model.recurrence.levels[0]
    plan = plan_of(cell)
    u = torch.randn(4, 2, sum(cell.pre_sizes), dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, cell.hidden_size, dtype=torch.float64, requires_grad=True)
    mask = None
    if dropout:
        mask = (torch.rand(2, cell.hidden_size, dtype=torch.float64) > 0.3).double() * 1.5
    rhos = [unit.rho for unit in cell.units if unit.kind == "lp"]
    weights = [
        w.detach().clone().requires_grad_() for w in (cell.recurrent_weight, *cell.layer_weights, *rhos)
    ]

    def fused(u, h0, *ws):
        return FusedUnroll.apply(plan, u, h0, mask, *ws)

    assert torch.autograd.gradcheck(fused, (u, h0, *weights))


@pytest.mark.parametrize("dtype,order", [(torch.float64, None), (torch.float32, 8.0)])
def test_lp_derivatives_equal_autograd_through_lp_pool(dtype, order):
    """The closed forms of the hand-written backward against autograd through ``lp_pool``, with
    a piece at 0 in every unit of one row (x = ε there), and in float32 at an order p = 8 at
    which that piece's x^p = ε^8 underflows to 0: both gradients stay finite and equal."""
    generator = torch.Generator().manual_seed(0)
    groups = torch.randn(3, 2, 5, generator=generator, dtype=dtype)
    groups[0, 0] = 0.0
    if order is None:
        rho = torch.randn(5, generator=generator, dtype=dtype)
    else:  # softplus(ρ) = p - 1
        rho = torch.full((5,), math.log(math.expm1(order - 1)), dtype=dtype)
    weights = torch.randn(3, 5, generator=generator, dtype=dtype)
    groups.requires_grad_()
    rho.requires_grad_()
    h = lp_pool(groups, lp_order(rho))
    (h * weights).sum().backward()
    with torch.no_grad():
        p = lp_order(rho)
        powers = (groups.square() + LP_SMOOTHING**2) ** (p / 2)
        if order is not None:
            assert (powers[0, 0] == 0).all()  # the case in question: x^p underflowed
        d_a, d_p = lp_derivatives(groups, h, p, powers)
        d_rho = (weights * d_p).sum(0) * torch.sigmoid(rho)
    assert torch.isfinite(groups.grad).all() and torch.isfinite(rho.grad).all()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(d_a * weights.unsqueeze(-2), groups.grad, atol=tol, rtol=tol)
    torch.testing.assert_close(d_rho, rho.grad, atol=tol, rtol=tol)


def test_gradcheck_whole_model_float64():
    model = make("dots", dtype=torch.float64)
    x = torch.randn(5, 2, 9, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 2, model.config.hidden_size, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 3])
    assert torch.autograd.gradcheck(
        lambda x, h: model(x, h, lengths)[0].sum() + model(x, h, lengths)[1].sum(), (x, h0)
    )


@pytest.mark.parametrize("name", ["rnn", "dts", "srnn-dts", "dots-star"])
def test_two_halves_with_carried_state_equal_the_whole(name):
    model = make(name)
    x = inputs(model, 12, 3)
    whole, h_whole = model(x)
    first, h_mid = model(x[:6])
    second, h_end = model(x[6:], h_mid)
    torch.testing.assert_close(torch.cat([first, second]), whole, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(h_end, h_whole, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("shape", [(5, 0), (0, 2)])
def test_an_empty_batch_or_no_steps_runs_forward_and_backward(shape):
    model = make("dots-star")
    x = torch.randn(*shape, 9, requires_grad=True)
    logits, h_n = model(x)
    (logits.sum() + h_n.sum()).backward()
    assert logits.shape == (*shape, model.config.output_size) and x.grad.shape == x.shape
    with torch.no_grad():  # the evaluation loop
        assert model(x)[0].shape == logits.shape


def test_padding_changes_nothing_and_gets_no_gradient():
    model = make("dots")
    x = torch.randn(8, 3, 9)
    lengths = torch.tensor([8, 5, 2])
    padded = x.clone()
    padded[5:, 1] = 1e3  # garbage in the padding
    padded[2:, 2] = float("nan")
    padded.requires_grad_()
    logits, h_n = model(padded, lengths=lengths)
    clean_logits, clean_h = model(x, lengths=lengths)
    valid = torch.arange(8)[:, None] < lengths
    torch.testing.assert_close(logits[valid], clean_logits[valid])
    torch.testing.assert_close(h_n, clean_h)
    (logits[valid].sum() + h_n.sum()).backward()
    assert torch.all(padded.grad[~valid] == 0)
    assert torch.all(padded.grad[valid] != 0)
    for p in model.parameters():
        assert torch.isfinite(p.grad).all()


def test_mask_equals_lengths_and_must_be_a_prefix():
    model = make("dts")
    x = torch.randn(6, 3, 9)
    lengths = torch.tensor([6, 2, 4])
    mask = torch.arange(6)[:, None] < lengths
    torch.testing.assert_close(model(x, mask=mask)[0], model(x, lengths=lengths)[0])
    across = DeepRNN(model.config, batch_first=True)
    across.load_state_dict(model.state_dict())
    torch.testing.assert_close(
        across(x.transpose(0, 1), mask=mask.t())[0], model(x, mask=mask)[0].transpose(0, 1)
    )
    with pytest.raises(ValueError, match=r"shape \(B, T\) = \(3, 6\), got torch.bool \(6, 3\)"):
        across(x.transpose(0, 1), mask=mask)  # batch first, the mask too
    mask[0, 1] = False
    with pytest.raises(ValueError, match="prefix"):
        model(x, mask=mask)


def test_batch_first_and_unbatched_follow_nn_rnn():
    model = make("srnn-dts")
    x = torch.randn(7, 4, 9)
    y, h = model(x)
    model.recurrence.batch_first = True
    y_bf, h_bf = model(x.transpose(0, 1))
    torch.testing.assert_close(y_bf, y.transpose(0, 1))
    torch.testing.assert_close(h_bf, h)
    model.recurrence.batch_first = False
    y1, h1 = model(x[:, 2])
    torch.testing.assert_close(y1, y[:, 2])
    torch.testing.assert_close(h1, h[:, 2])
    assert h1.shape == (2, model.config.hidden_size)


@pytest.mark.parametrize("name", ["dts", "dots-star", "maxout-transition", "maxout-lp-tanh"])
def test_fused_and_loop_agree_under_recurrent_dropout(name):
    """The driver's two paths (the hand-written BPTT, the plain loop over ``cell.step``) give the
    same states and gradients, with a recurrent dropout mask."""
    cell = make(name).recurrence.levels[0]
    assert cell.fusable
    u = torch.randn(6, 3, sum(cell.pre_sizes), requires_grad=True)
    h0 = torch.randn(3, cell.hidden_size, requires_grad=True)
    mask = (torch.rand(3, cell.hidden_size) > 0.4).float() / 0.6
    results = []
    for fused in (None, False):
        cell.zero_grad()
        u.grad = h0.grad = None
        states = unroll(cell, u, h0, mask, fused=fused)
        (states * torch.linspace(-1, 1, states.numel()).view_as(states)).sum().backward()
        results.append(
            [states, u.grad, h0.grad] + [p.grad.clone() for p in cell.parameters() if p.grad is not None]
        )
    assert len(results[0]) == len(results[1]) > 3
    for a, b in zip(*results, strict=True):  # float32 sums of ~100 terms in another order
        torch.testing.assert_close(a, b, atol=5e-5, rtol=5e-5)


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("batch,lengths", [(1, None), (4, [6, 3, 0, 1])])
def test_evaluation_without_gradients_matches_reference(name, batch, lengths, monkeypatch):
    """Under no_grad the fast path is the evaluation loop (in place, nothing kept for a backward
    pass; the autograd Function must not run), and its numbers are the reference's."""
    model = make(name).eval()
    x, h0 = inputs(model, 6, batch), torch.randn(model.config.levels, batch, model.config.hidden_size)
    lens = lengths or [6] * batch
    ref_logits, ref_hn = reference_forward(model, x, h0, lens)
    monkeypatch.setattr(FusedUnroll, "apply", lambda *a: pytest.fail("the backward's loop ran under no_grad"))
    with torch.no_grad():
        logits, h_n = model(x, h0, None if lengths is None else torch.tensor(lengths))
    for b, n in enumerate(lens):
        torch.testing.assert_close(logits[:n, b], ref_logits[b], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h_n, ref_hn, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # contiguous, as nn.RNN's: users .view() them
        assert model.recurrence(x, h0)[0].is_contiguous()


@pytest.mark.parametrize("steps,lengths", [(7, [7, 2, 5]), (9, None)])  # 9: transposed weights
@pytest.mark.parametrize("tokens", [False, True])
@pytest.mark.parametrize("name", ["rnn", "dt-3", "dts", "linear-nobias", "srnn-dts", "lp-mixed"])
def test_evaluation_projects_the_input_straight_into_its_buffer(name, tokens, steps, lengths, monkeypatch):
    """In evaluation, a level without pooling layers projects x into the in-place loop's buffer
    (a dense product or an embedding's rows, then the later layers' biases or zeros; a level
    above reads the states below where they lie), and its numbers are those of the path that
    builds u and copies it in; a pooling level takes that path."""
    model = make(name, tokens=tokens, dtype=torch.float64).eval()
    x = inputs(model, steps, 3, torch.float64)
    lengths = None if lengths is None else torch.tensor(lengths)
    calls = []
    monkeypatch.setattr(recurrence, "evaluate_input", lambda *a: calls.append(1) or evaluate_input(*a))
    with torch.no_grad():
        direct = model(x, lengths=lengths)
        monkeypatch.setattr(recurrence, "projects_in_place", lambda *_: False)
        copied = model(x, lengths=lengths)
    pooled = bool(plan_of(model.recurrence.levels[0]).pooled_layers)
    assert len(calls) == (0 if pooled else model.config.levels)
    for a, b in zip(direct, copied, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_evaluate_input_refuses_a_cell_with_pooling_layers():
    """Its loop reads the pieces of maxout and L_p layers reordered, which cell.project does not
    write: called on such a cell, it says so rather than give other states."""
    level = make("maxout-transition").recurrence.levels[0]
    with torch.no_grad(), pytest.raises(ValueError, match="takes a cell without pooling layers"):
        evaluate_input(level, torch.randn(4, 2, 9), torch.zeros(2, level.hidden_size))


def test_evaluation_of_an_input_of_another_dtype_names_the_dtypes():
    """The in-place path steps aside, so the error is the product's, not one about a buffer."""
    model = make("linear-nobias").eval()  # without a bias: a plain product, whose check names the dtypes
    with torch.no_grad(), pytest.raises(RuntimeError, match="dtype") as error:
        model(torch.randn(4, 2, 9, dtype=torch.float64))
    assert "out" not in str(error.value)


@pytest.mark.parametrize("name", [n for n in sorted(SMALL) if make(n).recurrence.levels[0].fusable])
def test_evaluation_loop_equals_the_plain_loop_with_a_dropout_mask(name):
    cell = make(name).recurrence.levels[0]
    u = torch.randn(7, 3, sum(cell.pre_sizes), dtype=torch.float64)
    h0 = torch.randn(3, cell.hidden_size, dtype=torch.float64)
    mask = (torch.rand(3, cell.hidden_size) > 0.4).double() / 0.6
    cell.double()
    with torch.no_grad():
        fast, plain = unroll(cell, u, h0, mask), unroll(cell, u, h0, mask, fused=False)
    torch.testing.assert_close(fast, plain, atol=1e-12, rtol=1e-12)


def test_dropout_in_training_only():
    """Each dropout changes the training output, a fresh mask at each call; in evaluation the
    model is the same model without dropout."""
    x = torch.randn(6, 3, 9)
    plain = make("dots-star").eval()
    for kind in ("recurrent_dropout", "state_dropout", "input_dropout"):
        model = make("dots-star", **{kind: 0.3})
        model.load_state_dict(plain.state_dict())
        model.train()
        assert not torch.equal(model(x)[0], model(x)[0]), kind
        model.eval()
        assert torch.equal(model(x)[0], plain(x)[0]), kind


@pytest.mark.parametrize("name", ["dt", "dts", "deep-input"])
def test_input_dropout_is_the_model_on_x_times_one_mask_per_sequence(name):
    """In training, input dropout runs the model without it on x ⊙ m, with one mask m (B, size
    of x_t) for every step, x_t being what the first level reads (after the input map); the
    biases are not dropped: a zero input gives the same states as without dropout (a DT
    without shortcuts adds its later layers' biases after the projection of x_t)."""
    plain = make(name).eval()
    model = make(name, input_dropout=0.4).train()
    x = torch.randn(6, 3, 9)
    torch.manual_seed(5)
    got = model(x)[0]
    torch.manual_seed(5)
    read = x if plain.recurrence.input_map is None else plain.recurrence.input_map(x)
    m = torch.empty(1, 3, read.shape[-1]).bernoulli_(0.6).div_(0.6)
    level = plain.recurrence.levels[0]
    states = unroll(level, level.project(read * m), torch.zeros(3, level.hidden_size))
    torch.testing.assert_close(got, plain.output(states[1:]))
    if plain.recurrence.input_map is None:
        zeros = torch.zeros(6, 3, 9)
        torch.testing.assert_close(model(zeros)[0], plain(zeros)[0])


@pytest.mark.parametrize("name", ["dt", "dts"])
def test_input_dropout_on_token_ids_drops_the_looked_up_vectors_not_their_bias(name):
    """On token ids, input dropout is locked dropout on U x_t, the embedding's rows as looked up
    (AWD-LSTM's dropouti): the bias b_1 and a DT's later biases are added undropped."""
    plain = make(name, tokens=True).eval()
    model = make(name, tokens=True, input_dropout=0.4).train()
    x = torch.randint(0, 9, (6, 3))
    torch.manual_seed(5)
    got = model(x)[0]
    torch.manual_seed(5)
    level = plain.recurrence.levels[0]
    embedding = level.input
    m = torch.empty(1, 3, embedding.out_size).bernoulli_(0.6).div_(0.6)
    u = level.project(x).detach().clone()
    u[..., : embedding.out_size] = F.embedding(x, embedding.weight) * m + embedding.bias
    states = unroll(level, u, torch.zeros(3, level.hidden_size))
    torch.testing.assert_close(got, plain.output(states[1:]))


def test_input_dropout_set_after_construction_reaches_the_embedding_of_token_ids():
    """On token ids the embedding holds the probability: setting the recurrence's input_dropout
    later writes it through, both ways (and step's guard sees it)."""
    model = make("dts", tokens=True, input_dropout=0.5)
    embedding = model.recurrence.token_embedding()
    model.recurrence.input_dropout = 0.0
    assert embedding.vector_dropout == 0.0
    model.train().step(torch.tensor([1, 2]))  # nothing left to drop
    model.recurrence.input_dropout = 0.3
    assert embedding.vector_dropout == 0.3
    with pytest.raises(RuntimeError, match="without dropout"):
        model.step(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"input_dropout must be in \[0, 1\), got 1"):
        model.recurrence.input_dropout = 1


def test_input_dropout_needs_an_embedding_to_drop_what_a_token_cell_reads():
    class TokenCell(torch.nn.Module):
        input_size, hidden_size, tokens, fusable, carries = 9, 4, True, False, 1

        def project(self, x):
            return F.one_hot(x, 9).float()

        def step(self, u, h, mask=None):
            return torch.tanh(u[:, :4] + h)

    with pytest.raises(ConfigError, match="input_dropout: TokenCell reads token ids without an embedding"):
        recurrence.Recurrence([TokenCell()], input_dropout=0.2)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_the_fast_path_steps_aside_for_tracing(monkeypatch):
    """Under jit.trace the plain loop runs (a tracer must see the operations), on the default
    path, and the traced model agrees with the eager one on inputs it was not traced with (of
    the traced shape: a trace unrolls the steps). (Autocast keeps the fast path: test_precision.py.)"""
    model = make("dots-star").eval()
    assert fast_path_applies(model.recurrence.levels[0])
    x, other = torch.randn(7, 2, 9), torch.randn(7, 2, 9)
    want = model(other)[0]
    for module, fast in ((driver, "fused_unroll"), (recurrence, "evaluate_input")):
        monkeypatch.setattr(module, fast, lambda *args, fast=fast: pytest.fail(f"{fast} ran under tracing"))
    traced = torch.jit.trace(model, (x,), check_trace=False)
    torch.testing.assert_close(traced(other)[0], want)


def test_runs_in_float64_and_keeps_dtype():
    model = make("dots", dtype=torch.float64)
    y, h = model(torch.randn(3, 2, 9, dtype=torch.float64))
    assert y.dtype == h.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_matches_cpu():
    model = make("dots")
    x = torch.randn(10, 4, 9)
    y, h = model(x)
    y_gpu, h_gpu = model.cuda()(x.cuda())
    assert y_gpu.is_cuda and h_gpu.is_cuda
    torch.testing.assert_close(y_gpu.cpu(), y, atol=1e-4, rtol=1e-4)
    with torch.no_grad():  # the in-place evaluation path, and the sampler's stepper after it
        y_eval, h_eval = model(x[:-1].cuda())
        top, _ = model.recurrence.stepper(batch=4)(x[-1:].cuda(), h_eval)
    torch.testing.assert_close(y_eval.cpu(), y[:-1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model.output(top).cpu(), y[-1], atol=1e-4, rtol=1e-4)


def test_a_gradient_of_a_gradient_takes_the_plain_loop(monkeypatch):
    """The fast path's hand-written backward gives first derivatives only, and says so when a
    graph of them is asked for (it once gave second derivatives without ⊕'s share, silently);
    within plain_loop every ⊕ runs as autograd's own operations, whose second derivatives
    gradgradcheck checks against finite differences (float64, L_p units, dropout on h_{t-1})."""
    model = make("lp-mixed", dtype=torch.float64)
    level = model.recurrence.levels[0]
    x = torch.rand(5, 2, 9, dtype=torch.float64).round()
    params = list(model.parameters())
    with pytest.raises(RuntimeError, match=r"first derivatives only; .* within deeprnn.plain_loop\(\)"):
        torch.autograd.grad(model.loss(x), params, create_graph=True)
    u = torch.randn(4, 2, sum(level.pre_sizes), dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, level.hidden_size, dtype=torch.float64, requires_grad=True)
    mask = (torch.rand(2, level.hidden_size) > 0.3).double() / 0.7
    monkeypatch.setattr(driver, "fused_unroll", lambda *args: pytest.fail("the fast path ran in plain_loop"))
    with plain_loop():
        assert torch.autograd.gradgradcheck(lambda u, h0: unroll(level, u, h0, mask), (u, h0))
        grads = torch.autograd.grad(model.loss(x), params, create_graph=True)
        torch.autograd.grad(sum((g**2).sum() for g in grads), params)  # now it can
    assert fast_path_applies(level)  # and outside it, the fast path again


def test_weights_count_only_matrices():
    """DOT(S)-RNN, 9 inputs and outputs, h = 6, z = 5, o = 4, counted by hand: U (9 -> 5 + 6)
    99, W_1 and S_2 (6 -> 5 + 6) 66, W_2 (5 -> 6) 30, ▷ (6 -> 4) 24 and (4 -> 9) 36: 255 weights;
    biases 5 + 6 + 4 + 9 = 24."""
    assert count_parameters(make("dots")) == {"weights": 255, "params": 255 + 24}


@pytest.mark.parametrize(
    "view",
    [
        lambda x: x[..., 3:],  # columns of a wider buffer: folds as a view
        lambda x: x[..., 3:].transpose(0, 1),  # batch-first over a time-major buffer: copied
        lambda x: x[0, :, 3:],  # one step (2-D)
        lambda x: x[0, 0, 3:],  # one vector
    ],
)
def test_a_dense_projection_of_any_layout_is_the_product_with_its_matrix(view):
    torch.manual_seed(0)
    projection = Projection(5, 7).double()
    with torch.no_grad():
        projection.bias.normal_()
    x = view(torch.randn(4, 3, 8, dtype=torch.float64))
    expected = torch.einsum("...i,oi->...o", x.contiguous(), projection.weight) + projection.bias
    torch.testing.assert_close(projection(x), expected)


def test_frame_nll_sums_the_keys_and_token_nll_is_cross_entropy():
    # p(key 1) = 0.5 (target on), p(key 2) = 3/4 (target off): -ln 0.5 - ln 0.25 = 3 ln 2.
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert Bernoulli(2).nll(logits, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(3 * math.log(2))
    # Uniform over 4 tokens: ln 4 for any target.
    assert Categorical(4).nll(torch.zeros(2, 4), torch.tensor([1, 3])).tolist() == pytest.approx(
        [math.log(4)] * 2
    )


@pytest.mark.parametrize(
    "name, kind", [("nade", NADE), ("bernoulli", Bernoulli), ("categorical", Categorical)]
)
def test_a_head_named_in_a_file_is_that_head(name, kind):
    """A name read from a config file equals the literal in the code but is another object."""
    read = json.loads(json.dumps(name))
    assert read == name and read is not name
    head = make_head(read, 6, 4, "descending")
    assert type(head) is kind and head.logit_size == (6 + 4 if kind is NADE else 6)
    if kind is NADE:
        assert (head.hidden, head.order) == (4, "descending")


@pytest.mark.parametrize("keys", [4, 6])
def test_bernoulli_nll_refuses_targets_of_another_shape(keys):
    with pytest.raises(ValueError, match=rf"the logits' shape \(2, 3, 5\), got \(2, 3, {keys}\)"):
        Bernoulli(5).nll(torch.zeros(2, 3, 5), torch.zeros(2, 3, keys))


@pytest.mark.parametrize("steps", [2, 4])
def test_categorical_nll_refuses_targets_of_another_shape(steps):
    with pytest.raises(ValueError, match=rf"must have shape \(2, 3\) .*, got \(2, {steps}\)"):
        Categorical(5).nll(torch.zeros(2, 3, 5), torch.zeros(2, steps, dtype=torch.long))


@torch.no_grad()
def test_loss_shifts_masks_and_averages_as_the_trainer_scores():
    """model.loss against the NLL written out per sequence (each run alone, unpadded), and
    against the trainer's own scoring of the same pieces."""
    torch.manual_seed(0)
    music = DeepRNN(ModelConfig(input_size=88, output_size=88, hidden_size=6, transition_sizes=(5,)))
    x, lengths = torch.rand(6, 3, 88).bernoulli(), torch.tensor([6, 2, 1])
    total = 0.0
    for b, n in enumerate(lengths.tolist()):
        inputs = torch.cat([torch.zeros(1, 88), x[: n - 1, b]])  # a silent frame, then the piece
        logits, _ = music(inputs)
        total += float(F.binary_cross_entropy_with_logits(logits, x[:n, b], reduction="sum"))
    assert float(music.loss(x, lengths=lengths, reduction="sum")) == pytest.approx(total, rel=1e-5)
    assert float(music.loss(x, lengths=lengths)) == pytest.approx(total / 9, rel=1e-5)
    per_step = music.loss(x, lengths=lengths, reduction="none")
    assert per_step.shape == (6, 3) and float(per_step[2:, 1].abs().sum()) == 0.0
    pieces = [x[:n, b].numpy() for b, n in enumerate(lengths.tolist())]
    nll, count = evaluation.evaluate(music, MusicBatches(pieces, 3), torch.device("cpu"))
    assert (nll, count) == (pytest.approx(total, rel=1e-5), 9)
    across = DeepRNN(music.config, batch_first=True)
    across.load_state_dict(music.state_dict())
    assert float(across.loss(x.transpose(0, 1), lengths=lengths)) == pytest.approx(total / 9, rel=1e-5)

    words = DeepRNN(ModelConfig(input_size=11, output_size=11, hidden_size=5, head="categorical"))
    ids, lengths = torch.randint(0, 11, (7, 2)), torch.tensor([7, 3])
    total = 0.0
    for b, n in enumerate(lengths.tolist()):
        logits, _ = words(ids[: n - 1, b])
        total += float(F.cross_entropy(logits, ids[1:n, b], reduction="sum"))
    assert float(words.loss(ids, lengths=lengths)) == pytest.approx(total / 8, rel=1e-5)
    with pytest.raises(ValueError, match="reduction must be mean, sum or none"):
        words.loss(ids, reduction="max")


def test_loss_ignores_what_padding_holds_and_takes_an_unbatched_sequence():
    """Padding past ``lengths`` may hold NaN frames or an id past the vocabulary: the loss and
    its gradients are those of zeros there. An unbatched sequence scores as a batch of one."""
    torch.manual_seed(0)
    music = DeepRNN(ModelConfig(input_size=88, output_size=88, hidden_size=6, transition_sizes=(5,)))
    x, lengths = torch.rand(6, 3, 88).bernoulli(), torch.tensor([6, 2, 1])
    clean = x.clone()
    for b, n in enumerate(lengths.tolist()):
        clean[n:, b] = 0.0
        x[n:, b] = math.nan
    for model, messy, tidy, lens in (
        (music, x, clean, lengths),
        (
            DeepRNN(ModelConfig(input_size=11, output_size=11, hidden_size=5, head="categorical")),
            torch.tensor([[1, 2], [3, 11], [4, 11]]),
            torch.tensor([[1, 2], [3, 0], [4, 0]]),
            torch.tensor([3, 1]),
        ),
    ):
        grads = []
        for data in (messy, tidy):
            model.zero_grad()
            loss = model.loss(data, lengths=lens)
            loss.backward()
            grads.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
        assert math.isfinite(grads[0][0]) and grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
        for a, b in zip(grads[0][1], grads[1][1], strict=True):
            torch.testing.assert_close(a, b)
    one = clean[:, 1]  # a piece of 2 frames, padded to 6, without its batch axis
    assert music.loss(one, lengths=torch.tensor([2]), reduction="none").shape == (6,)
    alone, batched = (
        music.loss(one, lengths=torch.tensor([2])),
        music.loss(one[:, None], lengths=torch.tensor([2])),
    )
    assert alone.item() == pytest.approx(batched.item(), rel=1e-6)


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("tokens", [False, True])
def test_step_by_step_equals_the_whole_sequence(name, tokens):
    """DeepRNN.step, one call a step from forward's h_n, gives forward's logits and h_n."""
    model = make(name, tokens=tokens, dtype=torch.float64).eval()
    x = inputs(model, 7, 3, dtype=torch.float64)
    with torch.no_grad():
        whole, h_whole = model(x)
        logits, h = model(x[:2])
        steps = list(logits)
        for x_t in x[2:]:
            logits_t, h = model.step(x_t, h)
            steps.append(logits_t)
    torch.testing.assert_close(torch.stack(steps), whole, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(h, h_whole, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("tokens", [False, True])
def test_the_sampler_s_stepper_equals_the_whole_sequence(name, tokens):
    """Recurrence.stepper (each level in place in two rows used in turn, for the fast path)
    continues forward's h_n to forward's states, the rows' reuse included (7 steps)."""
    model = make(name, tokens=tokens, dtype=torch.float64).eval()
    x = inputs(model, 9, 3, dtype=torch.float64)
    with torch.no_grad():
        whole, h_whole = model.recurrence(x)
        states, h = model.recurrence(x[:2])
        advance, steps = model.recurrence.stepper(batch=3), list(states)
        for x_t in x[2:]:
            top, h = advance(x_t.unsqueeze(0), h)
            steps.append(top.clone())
    torch.testing.assert_close(torch.stack(steps), whole, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(torch.stack(list(h)), h_whole, atol=1e-12, rtol=1e-12)


def test_step_runs_highway_layers_batch_first_as_forward_does():
    """A ⊕ off the fast path (RHN's gated layers) in a batch_first model: step by step equals forward."""
    torch.manual_seed(0)
    config = ModelConfig(
        input_size=9, output_size=9, hidden_size=6, transition_kind="highway", transition_sizes=(6,)
    )
    model = DeepRNN(config, batch_first=True).double().eval()
    x = torch.randn(2, 5, 9, dtype=torch.float64)
    with torch.no_grad():
        whole, h_whole = model(x)
        logits, h = model(x[:, :1])
        steps = [logits[:, 0]]
        for t in range(1, 5):
            logits_t, h = model.step(x[:, t], h)
            steps.append(logits_t)
    torch.testing.assert_close(torch.stack(steps, 1), whole, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(h, h_whole, atol=1e-12, rtol=1e-12)


def test_step_carries_an_lstm_state_as_forward_does():
    """A tuple carry (an LSTM's (h, c)) goes through step as through forward, level by level."""
    from deeprnn.operators.torch_cells import TorchCell

    torch.manual_seed(0)
    config = ModelConfig(input_size=9, output_size=9, hidden_size=6, levels=2)
    model = DeepRNN(
        config, transitions=[TorchCell(torch.nn.LSTMCell(9, 6)), TorchCell(torch.nn.LSTMCell(6, 6))]
    )
    model.eval()
    x = torch.randn(5, 2, 9)
    with torch.no_grad():
        whole, (h_whole, c_whole) = model(x)
        logits, state = model(x[:1])
        steps = [logits[0]]
        for x_t in x[1:]:
            logits_t, state = model.step(x_t, state)
            steps.append(logits_t)
    torch.testing.assert_close(torch.stack(steps), whole)
    torch.testing.assert_close(state[0], h_whole)
    torch.testing.assert_close(state[1], c_whole)


@pytest.mark.parametrize(
    "x, hx, message",
    [
        (torch.zeros(2, 1, 9), torch.zeros(1, 2, 7), r"one step of input, \(B, 9\) floats; got \(2, 1, 9\)"),
        (torch.zeros(9), torch.zeros(1, 1, 7), r"one step of input, \(B, 9\) floats; got \(9,\)"),
        (torch.zeros(2, 8), None, r"one step of input, \(B, 9\) floats; got \(2, 8\)"),
        (torch.zeros(2, 9, dtype=torch.int64), None, "expected a floating-point input"),
        (torch.zeros(2, 9), torch.zeros(2, 7), r"hx must have shape \(levels, batch, hidden\) = \(1, 2, 7\)"),
        (torch.zeros(2, 9), torch.zeros(1, 3, 7), r"= \(1, 2, 7\), got \(1, 3, 7\)"),
        (torch.zeros(2, 9), (torch.zeros(1, 2, 7),), "hx must be a tensor of shape"),
        (torch.zeros(2, 9), torch.zeros(1, 2, 7, dtype=torch.float64), "hx must have the parameters' dtype"),
    ],
)
def test_step_refuses_what_forward_refuses(x, hx, message):
    model = make("rnn").eval()
    with pytest.raises((ValueError, TypeError), match=message):
        model.step(x, hx)


def test_step_refuses_token_ids_outside_the_vocabulary_and_starts_from_zeros():
    model = make("rnn", tokens=True).eval()
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 9\)"):
        model.step(torch.tensor([3, 9]), None)
    with torch.no_grad():
        logits, h = model.step(torch.tensor([3, 4]))
        expected, h_n = model(torch.tensor([[3, 4]]))
    torch.testing.assert_close(logits, expected[0])
    torch.testing.assert_close(h, h_n)


@pytest.mark.parametrize("dropout", ["input_dropout", "state_dropout", "recurrent_dropout", "output_dropout"])
def test_step_refuses_to_run_without_the_dropout_of_training(dropout):
    model = make("do", **{dropout: 0.5})
    with pytest.raises(RuntimeError, match=r"without dropout: call \.eval\(\) first"):
        model.step(torch.zeros(1, 9), torch.zeros(1, 1, 6))
    model.eval().step(torch.zeros(1, 9), torch.zeros(1, 1, 6))
    make("rnn").train().step(torch.zeros(1, 9), torch.zeros(1, 1, 7))  # nothing to drop: allowed
