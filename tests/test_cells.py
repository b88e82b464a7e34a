"""Your own ⊕: the Transition contract, and PyTorch's RNN, GRU and LSTM cells as transitions,
checked against torch.nn.RNN / GRU / LSTM with the same weights and trained through deeprnn.train."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import deeprnn
from deeprnn import DeepRNN, ModelConfig
from deeprnn.data import load
from deeprnn.errors import ConfigError
from deeprnn.operators.highway import HighwayTransition
from deeprnn.operators.protocol import Transition
from deeprnn.operators.torch_cells import TorchCell
from deeprnn.operators.transitions import DeepTransition
from deeprnn.recurrence import Recurrence
from deeprnn.training import loop
from deeprnn.training.config import apply
from deeprnn.training.evaluation import load_run

CELLS = {"rnn": (nn.RNNCell, nn.RNN), "gru": (nn.GRUCell, nn.GRU), "lstm": (nn.LSTMCell, nn.LSTM)}


def _stack(kind: str, levels: int, size: int = 5, hidden: int = 7):
    """Our recurrence of ``levels`` PyTorch cells, and torch's multi-layer module with their weights."""
    torch.manual_seed(0)
    cell, whole = CELLS[kind]
    cells = [cell(size if level == 0 else hidden, hidden, dtype=torch.float64) for level in range(levels)]
    reference = whole(size, hidden, num_layers=levels, dtype=torch.float64)
    with torch.no_grad():
        for level, c in enumerate(cells):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(reference, f"{name}_l{level}").copy_(getattr(c, name))
    return Recurrence([TorchCell(c) for c in cells]), reference


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("levels", [1, 2])
def test_a_stack_of_torch_cells_is_torch_s_own_rnn(kind, levels):
    ours, reference = _stack(kind, levels)
    x = torch.randn(9, 3, 5, dtype=torch.float64)
    out, h_n = ours(x)
    want, want_h = reference(x)
    torch.testing.assert_close(out, want)
    if kind == "lstm":  # the carry is (h, c), as nn.LSTM's
        assert isinstance(h_n, tuple) and len(h_n) == 2
        torch.testing.assert_close(h_n[0], want_h[0])
        torch.testing.assert_close(h_n[1], want_h[1])
    else:
        torch.testing.assert_close(h_n, want_h)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_lengths_stop_a_cell_where_packed_sequences_stop_torch_s(kind):
    ours, reference = _stack(kind, 2)
    x = torch.randn(8, 4, 5, dtype=torch.float64)
    lengths = torch.tensor([8, 3, 5, 1])
    out, h_n = ours(x, lengths=lengths)
    _, want_h = reference(pack_padded_sequence(x, lengths, enforce_sorted=False))
    for got, want in zip(
        h_n if kind == "lstm" else (h_n,), want_h if kind == "lstm" else (want_h,), strict=True
    ):
        torch.testing.assert_close(got, want)
    assert out[3:, 1].abs().max() == 0  # padded steps output 0, as documented


def test_an_lstm_state_carries_between_calls_and_checks_its_shape():
    ours, reference = _stack("lstm", 1)
    x = torch.randn(10, 2, 5, dtype=torch.float64)
    _, first = ours(x[:4])
    out, _ = ours(x[4:], first)  # continuing with (h, c) is the same as one call
    torch.testing.assert_close(out, reference(x)[0][4:])
    with pytest.raises(ValueError, match="hx must be a tuple of 2 tensors"):
        ours(x, first[0])
    with pytest.raises(ValueError, match=r"hx must have shape \(levels, batch, hidden\) = \(1, 2, 7\)"):
        ours(x, (first[0], first[1][:, :1]))


def test_the_library_s_transitions_and_the_adapter_follow_the_contract():
    for cell in (
        DeepTransition(4, 6, (5,), shortcut=True),
        HighwayTransition(4, 6, 2),
        TorchCell(nn.GRUCell(4, 6)),
        TorchCell(nn.LSTMCell(4, 6)),
    ):
        assert isinstance(cell, Transition), type(cell).__name__
    with pytest.raises(
        ConfigError, match="TorchCell takes an nn.RNNCell, nn.GRUCell or nn.LSTMCell, got Linear"
    ):
        TorchCell(nn.Linear(4, 6))
    with pytest.raises(ValueError, match="stacked levels must carry the same number of states"):
        Recurrence([TorchCell(nn.LSTMCell(4, 6)), TorchCell(nn.GRUCell(6, 6))])
    with pytest.raises(ConfigError, match=r"transition 0 maps 4 -> 5; the config needs 4 -> 6"):
        config = ModelConfig(input_size=4, output_size=4, hidden_size=6)
        DeepRNN(config, transitions=[TorchCell(nn.GRUCell(4, 5))])
    with pytest.raises(ConfigError, match="transition 0 must read .* reads token ids .* set input_sizes"):
        tokens = ModelConfig(input_size=4, output_size=4, hidden_size=6, head="categorical")
        DeepRNN(tokens, transitions=[TorchCell(nn.GRUCell(4, 6))])
    with pytest.raises(ConfigError, match="2 transitions given for levels = 1"):
        DeepRNN(
            ModelConfig(input_size=4, output_size=4, hidden_size=6),
            transitions=[TorchCell(nn.GRUCell(4, 6))] * 2,
        )


def test_recurrent_dropout_reaches_inside_an_lstm_cell_through_h_only():
    torch.manual_seed(0)
    cell = TorchCell(nn.LSTMCell(3, 4))
    h, c = torch.randn(2, 4), torch.randn(2, 4)
    mask = torch.tensor([[0.0, 2.0, 2.0, 0.0], [2.0, 2.0, 0.0, 0.0]])
    u = torch.randn(2, 3)
    got = cell.step(u, (h, c), mask)
    want = cell.cell(u, (h * mask, c))
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_a_torch_cell_trains_through_deeprnn_train_and_its_run_loads(kind, rolls, tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(input_size=88, output_size=88, hidden_size=16, output_sizes=(12,))
    make = lambda: DeepRNN(config, transitions=[TorchCell(CELLS[kind][0](88, 16))])  # noqa: E731
    model = make()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = {"data": str(rolls), "max_updates": 12, "batch_size": 3, "bptt_steps": 7, "eval_every": 6}
    settings |= {"optimizer": "adam", "lr": 0.01, "device": "cpu"}
    recipe = apply({**settings, "model": "rnn"})
    untrained = make()
    untrained.load_state_dict(before)
    scored = loop.Run(recipe, tmp_path / "untrained", load(recipe.data), log=lambda _: None, model=untrained)
    total, count = scored.score("test", recipe)
    result = deeprnn.train({**settings, "model": "rnn"}, tmp_path / "run", model=model, log=lambda _: None)
    assert result["updates"] == 12 and result["test_nll"] < total / count - 1.0  # it learned
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match=r"load_run\(folder, model=\.\.\.\)"):
        load_run(tmp_path / "run")
    loaded = load_run(tmp_path / "run", model=make())
    x = torch.rand(6, 2, 88).round()
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)["model"]
    model.load_state_dict(best)
    torch.testing.assert_close(loaded(x)[0], model.eval()(x)[0])
    more = deeprnn.train(None, tmp_path / "run", resume=True, model=make(), limits={"max_updates": 18})
    assert more["updates"] == 18  # resumed with its (h, c) carry, from the checkpoint
