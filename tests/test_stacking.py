"""A stack grown from a trained one (init_parts = "stack", deeprnn.training.stacking): the added
levels' starting weights worked out by hand, the fit against numpy's least squares, the stack's
scores against its source's, and every model it cannot grow from refused, the model untouched."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from deeprnn.data.batching import Batch
from deeprnn.errors import ConfigError
from deeprnn.models import DeepRNN, ModelConfig
from deeprnn.training import builder, checkpoint
from deeprnn.training.config import TrainConfig

VOCAB, HIDDEN = 11, 6


def config(levels: int = 1, **changes) -> ModelConfig:
    base = ModelConfig(
        input_size=VOCAB, output_size=VOCAB, hidden_size=HIDDEN, head="categorical", levels=levels
    )
    return replace(base, **changes)


def trained_run(tmp_path, c: ModelConfig) -> DeepRNN:
    """A 'trained' source: weights large enough that its states spread over the units' range
    and its logits matter (a fresh model's are near 0 and would hide a wrong ▷)."""
    torch.manual_seed(0)
    source = DeepRNN(c)
    with torch.no_grad():
        for t in source.parameters():
            t.normal_(std=1.5)
    state = {"model": source.state_dict(), "model_config": c.to_dict()}
    checkpoint.save(tmp_path / "checkpoints" / "best.pt", state)
    return source.eval()


def segments(count: int = 3, steps: int = 40, batch: int = 5) -> list[Batch]:
    torch.manual_seed(1)
    ids = torch.randint(VOCAB, (count * steps + 1, batch))
    return [
        Batch(ids[k * steps : (k + 1) * steps], ids[k * steps + 1 : (k + 1) * steps + 1], None, k == 0, 0, 0)
        for k in range(count)
    ]


def states(model: DeepRNN, pieces: list[Batch]) -> tuple[torch.Tensor, torch.Tensor]:
    """The top level's states and the logits over the segments, the state carried."""
    tops, logits, h = [], [], None
    with torch.no_grad():
        for batch in pieces:
            top, h, _ = model.recurrence.run(batch.inputs, h)
            tops.append(top)
            logits.append(model.output(top))
    return torch.cat(tops), torch.cat(logits)


@pytest.mark.parametrize(("units", "centre"), [("sigmoid", 0.5), ("tanh", 0.0)])
def test_added_levels_start_as_scaled_identities_and_the_source_is_copied(tmp_path, units, centre):
    source = trained_run(tmp_path, config(1, transition_units=units))
    stack = DeepRNN(config(3, transition_units=units))
    copied = builder.load_pretrained(stack, tmp_path, "stack", segments())
    assert copied == set(source.state_dict())
    own = stack.state_dict()
    for name, t in source.state_dict().items():
        if name.startswith("recurrence."):
            assert torch.equal(own[name], t)
    for level in (1, 2):
        assert torch.equal(own[f"recurrence.levels.{level}.input.weight"], 4.0 * torch.eye(HIDDEN))
        assert torch.equal(own[f"recurrence.levels.{level}.input.bias"], torch.full((HIDDEN,), -4.0 * centre))
        assert torch.equal(own[f"recurrence.levels.{level}.recurrent_weight"], torch.zeros(HIDDEN, HIDDEN))


def test_the_output_absorbs_the_least_squares_fit_of_the_old_top_state_on_the_new(tmp_path):
    source = trained_run(tmp_path, config(1))
    stack = DeepRNN(config(2))
    pieces = segments()
    builder.load_pretrained(stack, tmp_path, "stack", pieces)
    old, _ = states(source, pieces)
    new, _ = states(stack, pieces)
    old, new = old.reshape(-1, HIDDEN).double().numpy(), new.reshape(-1, HIDDEN).double().numpy()
    a, b = zip(*(np.polyfit(new[:, j], old[:, j], 1) for j in range(HIDDEN)), strict=True)
    V, c = source.output.logits.weight.detach().double(), source.output.logits.bias.detach().double()
    wanted_weight = V * torch.tensor(a)
    wanted_bias = c + V @ torch.tensor(b)
    torch.testing.assert_close(stack.output.logits.weight.double(), wanted_weight, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(stack.output.logits.bias.double(), wanted_bias, rtol=1e-4, atol=1e-5)


def test_the_grown_stack_predicts_nearly_as_its_source_did(tmp_path):
    source = trained_run(tmp_path, config(1))
    pieces = segments()
    _, wanted = states(source, pieces)
    grown = DeepRNN(config(2))
    builder.load_pretrained(grown, tmp_path, "stack", pieces)
    _, got = states(grown, pieces)
    unfitted = DeepRNN(config(2))  # the same start without ▷'s correction
    unfitted.load_state_dict({**grown.state_dict(), **source.state_dict()})
    _, raw = states(unfitted, pieces)
    paper = DeepRNN(config(2))  # the paper's start: the new level and ▷ afresh
    builder.load_pretrained(paper, tmp_path, "recurrence")
    _, fresh = states(paper, pieces)
    error = (got - wanted).abs().mean()
    assert error < 0.5 * (raw - wanted).abs().mean()  # 0.25 here
    assert error < 0.1 * (fresh - wanted).abs().mean()  # 0.03 here
    assert grown.training  # the fit leaves the model in training mode, as it found it


@pytest.mark.parametrize(
    ("source", "target", "why"),
    [
        (config(2), config(2), r"it has 2 level\(s\), the stack 2: it must have fewer"),
        (config(1, hidden_size=HIDDEN + 1), config(2), "differs from the stack's in more than levels"),
        (config(1), config(2, tie_weights=True), "▷ must be one affine map with a bias, untied"),
        (config(1), config(2, output_sizes=(4,)), "▷ must be one affine map"),
        (config(1, transition_units="relu"), config(2, transition_units="relu"), "sigmoid or tanh units"),
        (config(1, transition_sizes=(4,)), config(2, transition_sizes=(4,)), "shallow transition"),
    ],
)
def test_a_stack_that_cannot_grow_from_the_run_is_refused_and_left_as_it_was(tmp_path, source, target, why):
    trained_run(tmp_path, source)
    model = DeepRNN(target)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    with pytest.raises(ConfigError, match=f'init_parts = "stack": .*{why}'):
        builder.load_pretrained(model, tmp_path, "stack", segments())
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())


def test_a_checkpoint_without_its_model_configuration_is_refused(tmp_path):
    checkpoint.save(tmp_path / "checkpoints" / "best.pt", {"model": DeepRNN(config(1)).state_dict()})
    with pytest.raises(ConfigError, match="does not record its model's configuration"):
        builder.load_pretrained(DeepRNN(config(2)), tmp_path, "stack", segments())


def test_the_fit_reads_only_the_valid_steps_of_padded_segments(tmp_path):
    trained_run(tmp_path, config(1))
    pieces = segments(count=1)
    padded = Batch(
        torch.cat([pieces[0].inputs, torch.zeros(30, 5, dtype=torch.long)]),
        pieces[0].targets,
        torch.full((5,), 40),
        True,
        0,
        0,
    )
    one, two = DeepRNN(config(2)), DeepRNN(config(2))
    builder.load_pretrained(one, tmp_path, "stack", pieces)
    builder.load_pretrained(two, tmp_path, "stack", [padded])
    torch.testing.assert_close(one.output.logits.weight, two.output.logits.weight)


def test_the_optimiser_gives_the_copied_parts_the_pretrained_rate(tmp_path):
    trained_run(tmp_path, config(1))
    stack = DeepRNN(config(2))
    copied = builder.load_pretrained(stack, tmp_path, "stack", segments())
    optimizer = builder.make_optimizer(TrainConfig(pretrained_lr_scale=0.1), stack, copied)
    scales = {id(p): g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    for name, t in stack.named_parameters():
        assert scales[id(t)] == (1.0 if name.startswith("recurrence.levels.1.") else 0.1), name
