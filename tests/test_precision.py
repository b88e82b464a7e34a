"""Mixed precision: bfloat16 autocast on the fast path, in the loss and in a training run, against
float32 (deeprnn.training.precision). On a machine with a GPU the same checks run there too."""

from __future__ import annotations

import json

import pytest
import torch
from test_models import make
from test_training import TINY

from deeprnn import fused
from deeprnn.data.batching import Batch
from deeprnn.driver import unroll
from deeprnn.models import DeepRNN, ModelConfig
from deeprnn.training import evaluation, trainer
from deeprnn.training.config import apply
from deeprnn.training.precision import autocast

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")),
]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest error over the largest magnitude of the float32 reference ``b``."""
    return float((a.detach().float() - b.detach()).abs().max() / b.detach().abs().max())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("name", "states_within", "gradients_within"), [("dts", 0.01, 0.02), ("dots-star", 0.03, 0.15)]
)
def test_the_fast_path_runs_in_bfloat16_under_autocast_near_float32(
    device, name, states_within, gradients_within, monkeypatch
):
    """Under autocast the hand-written BPTT runs (not the plain loop), in bfloat16, and its
    states and gradients stay near float32's over 50 steps, relative to the largest value.
    bfloat16 keeps 8 bits of mantissa (0.4% a rounding); L_p's unbounded states and powers lose
    more than tanh: up to 10% of the largest gradient, as autocast's plain loop does (17% for the
    order's gradient of a tanh/L_p stack)."""
    cell = make(name).recurrence.levels[0].to(device)
    generator = torch.Generator().manual_seed(0)
    u = torch.randn(50, 8, sum(cell.pre_sizes), generator=generator).to(device).requires_grad_()
    h0 = torch.randn(8, cell.hidden_size, generator=generator).to(device).requires_grad_()
    weights = torch.linspace(-1, 1, 51 * 8 * cell.hidden_size, device=device).view(51, 8, -1)
    calls = []
    monkeypatch.setattr(
        fused.FusedUnroll, "apply", lambda *a, f=fused.FusedUnroll.apply: calls.append(1) or f(*a)
    )
    results = {}
    for precision in ("fp32", "bf16"):
        cell.zero_grad()
        u.grad = h0.grad = None
        with autocast(torch.device(device), precision):
            states = unroll(cell, u, h0)
        (states.float() * weights).sum().backward()
        grads = [p.grad for p in cell.parameters() if p.grad is not None]  # not the projection's
        results[precision] = [states, u.grad, h0.grad, *grads]
    assert len(calls) == 2 and len(results["fp32"]) > 4
    states, *grads = results["bf16"]
    assert states.dtype == torch.bfloat16
    assert all(g.dtype == torch.float32 for g in grads)  # cast back to the parameters' dtype
    assert 0 < relative_error(states, results["fp32"][0]) < states_within
    for got, want in zip(grads, results["fp32"][1:], strict=True):
        assert 0 < relative_error(got, want) < gradients_within


def _batch(model: DeepRNN, tokens: bool) -> Batch:
    generator = torch.Generator().manual_seed(1)
    if tokens:
        inputs = torch.randint(0, model.config.input_size, (30, 4), generator=generator)
        targets = torch.randint(0, model.config.input_size, (30, 4), generator=generator)
    else:
        inputs, targets = (torch.rand(2, 30, 4, model.config.input_size, generator=generator) < 0.2).float()
    lengths = None if tokens else torch.tensor([30, 17, 5, 30])
    return Batch(inputs, targets, lengths, True, 30 * 4, 30 * 4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("head", ["bernoulli", "categorical", "nade"])
def test_a_batch_scored_under_bfloat16_autocast_is_within_a_percent_of_float32(device, head):
    """The NLL of a batch under autocast: within 1% of float32's, itself in float32, and the
    state carried on in float32 too (the next segment's hx must have the parameters' dtype)."""
    tokens = head == "categorical"
    torch.manual_seed(0)
    config = ModelConfig(
        input_size=20, output_size=20, hidden_size=16, transition_sizes=(12,), shortcut=True, head=head
    )
    model = DeepRNN(config).to(device).eval()
    batch = _batch(model, tokens).to(device)
    with torch.no_grad():
        want, _ = evaluation.batch_nll(model, batch, None)
        with autocast(torch.device(device), "bf16"):
            got, state = evaluation.batch_nll(model, batch, None)
            again, _ = evaluation.batch_nll(model, batch, state)  # the carried state is accepted
    assert got.dtype == state.dtype == again.dtype == torch.float32
    assert 0 < abs(float(got / want) - 1) < 0.01


@pytest.mark.parametrize("device", DEVICES)
def test_under_autocast_the_models_own_h_n_is_taken_back_as_hx(device):
    """As nn.LSTM under autocast: h_n (bfloat16 from the fast path) carries on into the next call,
    as its float32 copy would; outside autocast, hx must have the parameters' dtype."""
    torch.manual_seed(0)
    model = DeepRNN(ModelConfig(input_size=5, output_size=5, hidden_size=8, transition_sizes=(6,))).to(device)
    x = torch.rand(4, 3, 5, device=device)
    with autocast(torch.device(device), "bf16"):
        _, h = model(x)
        assert h.dtype == torch.bfloat16
        again, _ = model(x, h)
        want, _ = model(x, h.float())
    assert torch.equal(again, want)
    with pytest.raises(
        TypeError, match="hx must have the parameters' dtype torch.float32, got torch.bfloat16"
    ):
        model(x, h)


@pytest.mark.parametrize("device", DEVICES)
def test_a_bfloat16_run_follows_the_float32_run_and_scores_its_best_parameters_in_float32(
    tmp_path, data_root, device
):
    """Training and validation under autocast follow float32's curve closely; the final
    scores are float32's of the best parameters, as `deeprnn eval` gives them."""
    runs = {}
    for precision in ("fp32", "bf16"):
        config = apply({**TINY, "precision": precision, "device": device, "max_updates": 30})
        runs[precision] = trainer.train(
            config, tmp_path / precision, data_dir=str(data_root), log=lambda _: None
        )
    curves = {
        p: [json.loads(line)["value"] for line in (tmp_path / p / "metrics.jsonl").read_text().splitlines()]
        for p in runs
    }
    assert curves["bf16"] != curves["fp32"]
    assert curves["bf16"] == pytest.approx(curves["fp32"], rel=0.01)
    best = runs["bf16"]
    evaluated = evaluation.evaluate_run(tmp_path / "bf16", "test", data_dir=str(data_root), device=device)
    assert best["test_nll"] == pytest.approx(evaluated["value"], abs=1e-9)
    assert best["valid_nll"] != min(curves["bf16"])  # validation was scored in bfloat16
    assert best["valid_nll"] == pytest.approx(min(curves["bf16"]), rel=0.01)


def test_a_text_run_in_bfloat16_carries_its_state_between_segments(tmp_path, text_corpus):
    corpus = text_corpus()
    settings = dict(model="dts-rnn", data=str(corpus), hidden_size=10, transition_sizes=[8], batch_size=3)
    settings.update(bptt_steps=7, max_updates=12, eval_every=6, schedule="halve", device="cpu")
    results = {
        p: trainer.train(apply({**settings, "precision": p}), tmp_path / p, log=lambda _: None)
        for p in ("fp32", "bf16")
    }
    assert results["bf16"]["test_ppl"] == pytest.approx(results["fp32"]["test_ppl"], rel=0.02)
