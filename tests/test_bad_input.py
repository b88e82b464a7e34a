"""Bad input raises an error that names what was expected."""

from __future__ import annotations

import pytest
import torch

from deeprnn import DeepRNN, DeepTransition, ModelConfig, Recurrence
from deeprnn.operators.units import parse_unit


@pytest.fixture
def music():
    return DeepRNN(
        ModelConfig(input_size=88, output_size=88, hidden_size=8, transition_sizes=(6,), shortcut=True)
    )


@pytest.fixture
def words():
    return DeepRNN(ModelConfig(input_size=50, output_size=50, hidden_size=8, head="categorical"))


def test_wrong_feature_size(music):
    with pytest.raises(ValueError, match=r"\(T, B, 88\)"):
        music(torch.randn(5, 2, 87))


def test_wrong_rank(music):
    with pytest.raises(ValueError, match="input must be"):
        music(torch.randn(5, 2, 3, 88))


def test_integer_input_to_a_music_model(music):
    with pytest.raises(TypeError, match="floating-point"):
        music(torch.ones(5, 2, 88, dtype=torch.int64))


def test_float_input_to_a_token_model(words):
    with pytest.raises(TypeError, match="token ids"):
        words(torch.randn(5, 2))


def test_token_out_of_range(words):
    with pytest.raises(ValueError, match=r"\[0, 50\)"):
        words(torch.tensor([[3], [50]]))


def test_wrong_state_shape_and_dtype(music):
    with pytest.raises(ValueError, match=r"\(levels, batch, hidden\) = \(1, 2, 8\)"):
        music(torch.randn(5, 2, 88), torch.zeros(2, 8))
    with pytest.raises(TypeError, match="dtype"):
        music(torch.randn(5, 2, 88), torch.zeros(1, 2, 8, dtype=torch.float64))


def test_lengths_longer_than_the_sequence(music):
    with pytest.raises(ValueError, match=r"\[0, T=5\]"):
        music(torch.randn(5, 2, 88), lengths=torch.tensor([5, 6]))


def test_lengths_of_the_wrong_shape_or_type(music):
    with pytest.raises(ValueError, match=r"shape \(batch,\) = \(2,\)"):
        music(torch.randn(5, 2, 88), lengths=torch.tensor([5, 4, 3]))
    with pytest.raises(ValueError, match="integer"):
        music(torch.randn(5, 2, 88), lengths=torch.tensor([5.0, 4.0]))


def test_unknown_unit():
    with pytest.raises(ValueError, match="sigmoid, tanh, relu, linear"):
        parse_unit("softsign")
    with pytest.raises(ValueError, match="unknown unit"):
        DeepRNN(ModelConfig(input_size=4, output_size=4, hidden_size=3, transition_units="gelu"))


def test_wrong_number_of_units_per_layer():
    with pytest.raises(ValueError, match="one unit per layer"):
        DeepTransition(4, 3, (5,), units=("tanh",))


def test_unknown_head_and_bad_sizes():
    with pytest.raises(ValueError, match="bernoulli, categorical"):
        ModelConfig(input_size=4, output_size=4, hidden_size=3, head="gaussian")
    with pytest.raises(ValueError, match="positive"):
        ModelConfig(input_size=4, output_size=4, hidden_size=0)
    with pytest.raises(ValueError, match="shortcut"):
        DeepTransition(4, 3, (), shortcut=True)


def test_levels_that_do_not_fit():
    with pytest.raises(ValueError, match="share the hidden size"):
        Recurrence([DeepTransition(4, 3), DeepTransition(3, 5)])
    with pytest.raises(ValueError, match="reads inputs of size 4"):
        Recurrence([DeepTransition(4, 3), DeepTransition(4, 3)])
