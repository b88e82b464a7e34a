"""Tied weights (``tie_weights``): ▷'s softmax matrix is the input embedding's first layer.

The reference is an untied model whose V is set to a copy of U_1: the same logits, and the tied
matrix's gradient is the sum of the two gradients of the untied model, U_1's and V's."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deeprnn import DeepRNN, ModelConfig, count_parameters
from deeprnn.data.text import TextCorpus
from deeprnn.errors import ConfigError
from deeprnn.operators.torch_cells import TorchCell
from deeprnn.presets import preset
from deeprnn.training import builder
from deeprnn.training.config import resolve

VOCAB = 11
SHAPES = {  # the first layer reading x_t is as wide as the layer ▷'s softmax reads
    "rnn": dict(hidden_size=6),
    "dts": dict(hidden_size=6, transition_sizes=(6,), shortcut=True),  # U_1: the first 6 of 12 columns
    "dots": dict(hidden_size=7, transition_sizes=(5,), shortcut=True, output_sizes=(5,)),
    "srnn": dict(hidden_size=6, levels=2),
    "deep-input": dict(hidden_size=6, input_sizes=(4,), output_sizes=(4,)),
    "highway": dict(hidden_size=6, transition_sizes=(6,), transition_kind="highway", transition_units="tanh"),
}


def _pair(name: str) -> tuple[DeepRNN, DeepRNN]:
    """A tied model and an untied one with the same parameters, its V a copy of U_1."""
    base = ModelConfig(VOCAB, VOCAB, head="categorical", **SHAPES[name])
    torch.manual_seed(0)
    tied = DeepRNN(ModelConfig(**{**base.to_dict(), "tie_weights": True})).double()
    untied = DeepRNN(base).double()
    own = untied.state_dict()
    with torch.no_grad():
        for key, value in tied.state_dict().items():
            own[key].copy_(value)
        untied.output.logits.weight.copy_(tied.output.logits.weight)
    return tied, untied


def _embedding(model: DeepRNN) -> torch.Tensor:
    rec = model.recurrence
    return (rec.input_map.layers[0] if rec.input_map is not None else rec.levels[0].input).weight


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_tied_logits_and_gradient_equal_the_untied_model_with_v_set_to_u1(name):
    tied, untied = _pair(name)
    x = torch.randint(0, VOCAB, (9, 3))
    logits, _ = tied(x)
    expected, _ = untied(x)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-12)
    tied.loss(x).backward()
    untied.loss(x).backward()
    width = untied.output.logits.weight.shape[1]
    summed = _embedding(untied).grad.clone()
    summed[:, :width] += untied.output.logits.weight.grad  # both uses of the one matrix
    torch.testing.assert_close(_embedding(tied).grad, summed, rtol=1e-10, atol=1e-12)
    assert "output.logits.weight" not in tied.state_dict()


def test_the_tied_model_passes_gradcheck_in_float64():
    tied, _ = _pair("dts")
    x, targets = torch.randint(0, VOCAB, (5, 2)), torch.randint(0, VOCAB, (5, 2))
    name = "recurrence.levels.0.input.weight"  # E: ⊕ reads it, and through it ▷ scores

    def loss(weight: torch.Tensor) -> torch.Tensor:
        logits, _ = torch.func.functional_call(tied, {name: weight}, (x,))
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    weight = dict(tied.named_parameters())[name].detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(loss, (weight,))


@pytest.mark.parametrize(
    ("model", "untied", "first"),
    [
        ("rnn", 4_040_000, 200),
        ("dts-rnn", 6_120_000, 200),
        ("dots-rnn", 6_160_000, 200),
        ("srnn", 8_480_000, 400),
    ],
)
def test_tying_removes_the_softmax_matrix_from_the_paper_counts(model, untied, first):
    config = preset(model, "ptb-word")
    assert count_parameters(DeepRNN(config))["weights"] == untied
    tied = DeepRNN(ModelConfig(**{**config.to_dict(), "tie_weights": True}))
    assert count_parameters(tied)["weights"] == untied - 10_000 * first


def test_the_tie_survives_a_change_of_dtype_a_deep_copy_and_a_state_dict():
    tied, _ = _pair("dots")
    tied = tied.float()
    assert tied.output.logits.weight.data_ptr() == _embedding(tied).data_ptr()
    twin = copy.deepcopy(tied)  # as AveragedModel copies the model it averages
    assert twin.output.logits.embedding is twin.recurrence.levels[0].input
    fresh = DeepRNN(tied.config)
    fresh.load_state_dict(tied.state_dict())
    x = torch.randint(0, VOCAB, (4, 2))
    torch.testing.assert_close(fresh(x)[0], tied(x)[0])


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (dict(head="bernoulli"), "needs token data"),
        (dict(hidden_size=6, output_sizes=(5,)), "first layer is 6 wide and ▷'s softmax reads 5"),
        (dict(hidden_size=6, transition_sizes=(4,)), "first layer is 4 wide and ▷'s softmax reads 6"),
    ],
)
def test_a_tie_that_cannot_be_made_says_why(config, message):
    settings = {"head": "categorical", "hidden_size": 4, **config, "tie_weights": True}
    with pytest.raises(ConfigError, match=message):
        DeepRNN(ModelConfig(VOCAB, VOCAB, **settings))


def test_a_tie_across_two_vocabularies_says_why():
    config = ModelConfig(VOCAB, VOCAB + 1, 4, head="categorical", tie_weights=True)
    with pytest.raises(ConfigError, match="maps 11 tokens to 4 columns; the logits would read 4 and score"):
        DeepRNN(config)


def test_your_own_transition_is_tied_through_an_input_map_only():
    config = ModelConfig(
        VOCAB, VOCAB, 4, head="categorical", input_sizes=(3,), output_sizes=(3,), tie_weights=True
    )
    model = DeepRNN(config, transitions=[TorchCell(nn.RNNCell(3, 4))])
    assert model.output.logits.embedding is model.recurrence.input_map.layers[0]
    bare = ModelConfig(VOCAB, VOCAB, 4, head="categorical", tie_weights=True)
    with pytest.raises(ConfigError, match="_TokenCell has no input embedding"):
        DeepRNN(bare, transitions=[_TokenCell(nn.RNNCell(VOCAB, 4))])


class _TokenCell(TorchCell):
    tokens = True  # claims to read token ids, as a user's ⊕ might, with no embedding to share


def test_tie_weights_is_set_by_its_own_name_on_the_command_line():
    config = resolve("dots-rnn", "ptb-word", sets=["tie_weights=true", "hidden_size=8"])
    corpus = TextCorpus("ptb-word", "word", [str(i) for i in range(50)], {}, boundary=0)
    built = builder.model_config(config, corpus)
    assert built.tie_weights and built.output_sizes == (8,)
    model = DeepRNN(built)
    assert model.output.logits.embedding is model.recurrence.levels[0].input
