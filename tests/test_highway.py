"""The gated ⊕ (Recurrent Highway Network layers): against the equations written out here, the
RNN it reduces to with the gate open, gradcheck, exact parameter counts and a training run."""

from __future__ import annotations

import pytest
import torch

from deeprnn import DeepRNN, ModelConfig
from deeprnn.data import load
from deeprnn.errors import ConfigError
from deeprnn.models import count_parameters
from deeprnn.training import loop
from deeprnn.training.config import apply


def highway(hidden=6, layers=3, **extra) -> DeepRNN:
    inner = (hidden,) * (layers - 1)
    config = ModelConfig(input_size=5, output_size=5, hidden_size=hidden, transition_kind="highway",
                         transition_sizes=inner, transition_units="tanh", **extra)  # fmt: skip
    torch.manual_seed(0)
    return DeepRNN(config).double()


def by_the_equations(cell, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """s_l = g ĥ + (1 - g) s_{l-1}, written out with the cell's matrices, one step at a time."""
    H = cell.hidden_size
    U, c = cell.input.weight, cell.input.bias
    states, h = [], h0
    for x_t in x:
        s = h
        for layer, R in enumerate(cell.recurrent):
            if layer == 0:
                hat = torch.tanh(s @ R[:H].T + x_t @ U[:H].T + c[:H])
                gate = torch.sigmoid(s @ R[H:].T + x_t @ U[H:].T + c[H:])
            else:
                b = cell.layer_bias[layer - 1]
                hat = torch.tanh(s @ R[:H].T + b[:H])
                gate = torch.sigmoid(s @ R[H:].T + b[H:])
            s = gate * hat + (1 - gate) * s
        h = s
        states.append(h)
    return torch.stack(states)


def test_matches_the_equations_and_passes_gradcheck():
    model = highway()
    x, h0 = torch.randn(7, 2, 5, dtype=torch.float64), torch.randn(1, 2, 6, dtype=torch.float64)
    states, h_n = model.recurrence(x, h0)
    expected = by_the_equations(model.recurrence.levels[0], x, h0[0])
    torch.testing.assert_close(states, expected)
    torch.testing.assert_close(h_n[0], expected[-1])
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, h: model.recurrence(x, h)[0], (x, h0.requires_grad_(True)))


def test_with_the_gate_open_one_layer_is_the_rnn():
    gated, plain = highway(layers=1), DeepRNN(ModelConfig(5, 5, 6, transition_units="tanh")).double()
    cell, rnn = gated.recurrence.levels[0], plain.recurrence.levels[0]
    with torch.no_grad():
        cell.input.bias[6:] = 50.0  # σ(50 + …) = 1 to double precision: s_1 = ĥ_1
        rnn.input.weight.copy_(cell.input.weight[:6])
        rnn.input.bias.copy_(cell.input.bias[:6])
        rnn.recurrent_weight.copy_(cell.recurrent[0][:6])
    x = torch.randn(9, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(gated.recurrence(x)[0], plain.recurrence(x)[0])


def test_recurrent_dropout_masks_what_r_reads_not_the_carry():
    """With the mask on the carry path too, a kept unit would grow by 1/keep a step (NaN within
    200 steps); on R's input only, s stays a mix of ĥ in [-1, 1] and the state before."""
    model = highway(hidden=16, layers=2, recurrent_dropout=0.5).train()
    states, _ = model.recurrence(torch.randn(200, 3, 5, dtype=torch.float64))
    assert torch.isfinite(states).all() and states.abs().max() <= 1.0


def test_parameter_counts_and_starting_gates():
    model = highway(hidden=6, layers=3)
    cell = model.recurrence.levels[0]
    # U, U' (2H × 5), R_l, R'_l (2H × H) per layer; biases: 2H for each layer
    assert count_parameters(cell) == {"weights": 12 * 5 + 3 * 12 * 6, "params": 12 * 5 + 3 * 12 * 6 + 3 * 12}
    assert torch.all(cell.input.bias[6:] == -2.0) and all(torch.all(b[6:] == -2.0) for b in cell.layer_bias)
    assert not cell.fusable
    assert highway(layers=2, bias=False).recurrence.levels[0].layer_bias.__len__() == 0
    with pytest.raises(ConfigError, match="highway layers all have the hidden size"):
        DeepRNN(ModelConfig(5, 5, 6, transition_kind="highway", transition_sizes=(4,)))
    with pytest.raises(ConfigError, match="transition_kind must be one of mlp, highway"):
        DeepRNN(ModelConfig(5, 5, 6, transition_kind="lstm"))


def test_a_stacked_highway_model_with_tokens_trains(tmp_path):
    """Two levels of 2-layer highway ⊕ on characters: the loss falls, lengths and tokens work."""
    torch.manual_seed(0)
    config = ModelConfig(input_size=11, output_size=11, hidden_size=16, head="categorical", levels=2,
                         transition_kind="highway", transition_sizes=(16,),
                         transition_units="tanh")  # fmt: skip
    model = DeepRNN(config)
    x = torch.randint(0, 11, (30, 4))
    x[1::2] = x[::2]  # a pattern worth learning: every other token repeats the one before
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    first = float(model.loss(x).detach())
    for _ in range(200):
        optimizer.zero_grad()
        model.loss(x, lengths=torch.tensor([30, 30, 20, 30])).backward()
        optimizer.step()
    assert float(model.loss(x).detach()) < 0.75 * first  # ln 11 = 2.40 at the start; 1.20 is the best


def test_chosen_by_a_setting_it_trains_through_the_trainer(tmp_path, rolls):
    import deeprnn
    from deeprnn.training.evaluation import load_best

    settings = {"data": str(rolls), "model": "rnn", "transition_kind": "highway", "hidden_size": 8,
                "transition_sizes": [8, 8], "transition_units": "tanh", "batch_size": 3, "bptt_steps": 10,
                "max_updates": 4, "eval_every": 2, "device": "cpu"}  # fmt: skip
    config = apply(settings)  # the same seed builds the same model: its score before training
    untrained = loop.Run(config, tmp_path / "untrained", load(config.data), log=lambda _: None)
    total, count = untrained.score("test", config)
    results = deeprnn.train(settings, tmp_path / "run", log=lambda _: None)
    assert results["updates"] == 4 and results["test_nll"] < total / count - 1.0  # 61.0 -> 59.2
    model, _, _ = load_best(tmp_path / "run")
    assert model.recurrence.levels[0].depth == 3 and model.config.transition_kind == "highway"
