"""Embedding dropout (``embedding_dropout``): whole token types dropped from the input
embedding for a whole call, the kept rows scaled by 1 / (1 - p), nothing dropped in evaluation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deeprnn import DeepRNN, ModelConfig
from deeprnn.data.text import TextCorpus
from deeprnn.errors import ConfigError
from deeprnn.operators.projection import Projection
from deeprnn.operators.torch_cells import TorchCell
from deeprnn.training import builder
from deeprnn.training.config import resolve

VOCAB = 40


def _embedding(p: float) -> Projection:
    torch.manual_seed(0)
    embedding = Projection(VOCAB, 5, tokens=True).double()
    with torch.no_grad():
        embedding.bias.uniform_(-1, 1)
    embedding.type_dropout = p
    return embedding


def test_a_dropped_type_reads_only_the_bias_at_every_occurrence_and_a_kept_one_is_scaled():
    embedding = _embedding(0.5)
    x = torch.arange(VOCAB).repeat(3, 2)  # every type at six places
    y = embedding(x)
    w, b = embedding.weight.detach(), embedding.bias.detach()
    dropped = (y == b).all(-1)  # (3, 2 * VOCAB)
    for token in range(VOCAB):
        where = x == token
        assert dropped[where].all() or not dropped[where].any(), token  # the whole type, or none of it
        if not dropped[where].any():
            torch.testing.assert_close(y[where], (w[token] / 0.5 + b).expand_as(y[where]), rtol=0, atol=1e-12)
    assert 0 < int(dropped[0, :VOCAB].sum()) < VOCAB


def test_types_are_dropped_with_probability_p_and_afresh_at_each_call():
    torch.manual_seed(0)  # a fixed draw: the bound below is 3.9 standard deviations wide, not a certainty
    embedding = Projection(2000, 3, tokens=True, bias=False)
    embedding.type_dropout = 0.3
    x = torch.arange(2000)
    first, second = (embedding(x) == 0).all(-1), (embedding(x) == 0).all(-1)
    assert abs(first.float().mean().item() - 0.3) < 0.04
    assert (first != second).any()


def test_the_gradient_reaches_only_the_kept_rows_scaled():
    embedding = _embedding(0.5)
    x = torch.randint(0, VOCAB, (7, 4))
    y = embedding(x)
    y.sum().backward()
    kept_at = ~(y == embedding.bias).all(-1)  # from the forward's own output
    kept = torch.zeros(VOCAB, dtype=torch.bool)
    kept[x[kept_at]] = True
    counts = torch.bincount(x.flatten(), minlength=VOCAB).double()
    reference = torch.where(kept, counts / 0.5, 0.0).unsqueeze(-1).expand(-1, 5)
    torch.testing.assert_close(embedding.weight.grad, reference, rtol=0, atol=1e-12)
    assert kept.sum() < (counts > 0).sum()  # some type that occurred was dropped


def test_evaluation_and_p_zero_read_the_embedding_unchanged():
    x = torch.randint(0, VOCAB, (6, 3))
    embedding = _embedding(0.9)
    expected = embedding.weight[x] + embedding.bias
    torch.testing.assert_close(embedding.eval()(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(_embedding(0.0)(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("shape", "path"),
    [
        (dict(), "recurrence.levels.0.input"),
        (dict(levels=2), "recurrence.levels.0.input"),
        (dict(input_sizes=(4,)), "recurrence.input_map.layers.0"),
    ],
)
def test_the_model_sets_it_on_the_embedding_that_reads_the_tokens(shape, path):
    model = DeepRNN(ModelConfig(VOCAB, VOCAB, 6, head="categorical", embedding_dropout=0.25, **shape))
    embeddings = {name: m.type_dropout for name, m in model.named_modules() if isinstance(m, Projection)}
    assert embeddings.pop(path) == 0.25
    assert set(embeddings.values()) <= {0.0}


def test_tied_weights_score_with_the_whole_matrix_while_the_input_drops_types():
    config = ModelConfig(VOCAB, VOCAB, 6, head="categorical", tie_weights=True, embedding_dropout=0.9)
    torch.manual_seed(0)
    model = DeepRNN(config).train()
    embedding = model.recurrence.levels[0].input
    before = embedding.weight.detach().clone()
    x = torch.randint(0, VOCAB, (5, 3))
    logits, _ = model(x)
    assert torch.equal(embedding.weight, before)  # the mask is not written into the parameter
    states, _ = model.recurrence(x)  # another mask; ▷ itself has no dropout here
    expected = states @ before.t() + model.output.logits.bias
    torch.testing.assert_close(model.output(states), expected)
    assert not torch.equal(logits, model.eval()(x)[0])  # in training, the input did drop types


def test_step_refuses_to_run_with_embedding_dropout_in_training():
    model = DeepRNN(ModelConfig(VOCAB, VOCAB, 6, head="categorical", embedding_dropout=0.1))
    for step in (model.step, model.recurrence.step):
        with pytest.raises(RuntimeError, match="call .eval"):
            step(torch.tensor([1, 2]))
    assert model.eval().step(torch.tensor([1, 2]))[0].shape == (2, VOCAB)


class _TokenCell(TorchCell):
    tokens = True  # reads token ids with no embedding of its own


@pytest.mark.parametrize(
    ("config", "transitions", "message"),
    [
        (
            dict(head="bernoulli"),
            None,
            "embedding_dropout acts on the input embedding of tokens: it needs token data",
        ),
        (dict(embedding_dropout=1.0), None, r"dropping a token type must be in \[0, 1\), got 1.0"),
        (dict(), [_TokenCell(nn.RNNCell(VOCAB, 6))], "embedding_dropout: _TokenCell has no input embedding"),
    ],
)
def test_embedding_dropout_that_cannot_apply_says_why(config, transitions, message):
    settings = {"head": "categorical", "embedding_dropout": 0.2, **config}
    with pytest.raises(ConfigError, match=message):
        DeepRNN(ModelConfig(VOCAB, VOCAB, 6, **settings), transitions=transitions)


def test_a_projection_of_vectors_refuses_to_drop_token_types_or_looked_up_vectors():
    with pytest.raises(
        ConfigError, match="dropping a token type needs an embedding: this projection reads vectors"
    ):
        Projection(3, 4).type_dropout = 0.1
    with pytest.raises(ConfigError, match="a coordinate of the looked-up vectors needs an embedding"):
        Projection(3, 4).vector_dropout = 0.1
    with pytest.raises(ConfigError, match=r"must be in \[0, 1\), got 1"):
        Projection(3, 4, tokens=True).vector_dropout = 1


def test_embedding_dropout_is_set_by_its_own_name_on_the_command_line_and_in_a_file(tmp_path):
    corpus = TextCorpus("ptb-word", "word", [str(i) for i in range(50)], {}, boundary=0)
    flat, table = tmp_path / "flat.toml", tmp_path / "table.toml"
    flat.write_text("embedding_dropout = 0.2\n")
    table.write_text("[architecture]\nembedding_dropout = 0.3\n")
    for config, p in [
        (resolve("rnn", "ptb-word", sets=["embedding_dropout=0.1", "hidden_size=8"]), 0.1),
        (resolve("rnn", "ptb-word", str(flat)), 0.2),
        (resolve("rnn", "ptb-word", str(table)), 0.3),
    ]:
        model = DeepRNN(builder.model_config(config, corpus))
        assert model.recurrence.levels[0].input.type_dropout == p
