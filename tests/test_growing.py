"""A model grown from a trained, shallower one (deeprnn.training.growing): a stack of more levels
(init_parts = "stack") and a deep ▷ from a shallow one ("deep-output"). The added layers'
starting weights worked out by hand, the fit against numpy's least squares, the grown model's
scores against its source's, and every model it cannot grow from refused, the model untouched."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from test_recipe import make_run

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


def segments(count: int = 4, steps: int = 40, batch: int = 5) -> list[Batch]:
    """Token segments, the state carried from one to the next but for a reset at the third."""
    torch.manual_seed(1)
    ids = torch.randint(VOCAB, (count * steps + 1, batch))
    return [
        Batch(
            ids[k * steps : (k + 1) * steps],
            ids[k * steps + 1 : (k + 1) * steps + 1],
            None,
            k in (0, 2),
            0,
            0,
        )
        for k in range(count)
    ]


def states(model: DeepRNN, pieces: list[Batch]) -> tuple[torch.Tensor, torch.Tensor]:
    """The top level's states and the logits over the segments' valid steps (rows), in
    evaluation mode, the state carried but at a reset."""
    tops, logits, h = [], [], None
    model.eval()
    with torch.no_grad():
        for batch in pieces:
            h = None if batch.reset else h
            top, h, _ = model.recurrence.run(batch.inputs, h, batch.lengths)
            lengths = batch.lengths if batch.lengths is not None else torch.full((top.shape[1],), len(top))
            top = torch.cat([top[: int(n), j] for j, n in enumerate(lengths)])
            tops.append(top)
            logits.append(model.output(top))
    model.train()
    return torch.cat(tops), torch.cat(logits)


def grown_copying_the_recurrence(model: DeepRNN, source: DeepRNN, run, parts: str) -> dict:
    """``model`` grown from ``run`` (``source``'s): every source parameter is reported copied, and
    the source's ⊕ is; the grown model's state."""
    copied = builder.load_pretrained(model, run, parts, segments())
    assert copied == set(source.state_dict())
    own = model.state_dict()
    for name, t in source.state_dict().items():
        if name.startswith("recurrence."):
            assert torch.equal(own[name], t)
    return own


@pytest.mark.parametrize(("units", "centre", "gain"), [("sigmoid", 0.5, 4.0), ("tanh", 0.0, 1.0)])
def test_added_levels_start_as_scaled_identities_and_the_source_is_copied(tmp_path, units, centre, gain):
    """φ(gain (x - centre)) has slope 1 at its centre: σ'(0) = 1/4, tanh'(0) = 1."""
    source = trained_run(tmp_path, config(1, transition_units=units))
    stack = DeepRNN(config(3, transition_units=units))
    own = grown_copying_the_recurrence(stack, source, tmp_path, "stack")
    for level in (1, 2):
        assert torch.equal(own[f"recurrence.levels.{level}.input.weight"], gain * torch.eye(HIDDEN))
        assert torch.equal(
            own[f"recurrence.levels.{level}.input.bias"], torch.full((HIDDEN,), -gain * centre)
        )
        assert torch.equal(own[f"recurrence.levels.{level}.recurrent_weight"], torch.zeros(HIDDEN, HIDDEN))


@pytest.mark.parametrize("padded", [False, True])
def test_the_output_absorbs_the_least_squares_fit_of_the_old_top_state_on_the_new(tmp_path, padded):
    """The new level has W = 0, so its state is σ(4 (h^src - 1/2)) step by step: the fit is worked
    out here from the source's states alone (numpy's polyfit per unit), over the valid steps of
    segments with a reset and, padded, of columns of several lengths; dropout, which the models
    have, must play no part in it."""
    source = trained_run(tmp_path, config(1, state_dropout=0.5))
    pieces = segments()
    if padded:
        lengths = torch.tensor([40, 25, 40, 1, 33])
        pieces = [Batch(b.inputs, b.targets, lengths, b.reset, 0, 0) for b in pieces]
    stack = DeepRNN(config(2, state_dropout=0.5))
    builder.load_pretrained(stack, tmp_path, "stack", pieces)
    old, _ = states(source, pieces)
    assert len(old) == (139 if padded else 200) * len(pieces)
    new = torch.sigmoid(4.0 * (old - 0.5))
    old, new = old.double().numpy(), new.double().numpy()
    a, b = zip(*(np.polyfit(new[:, j], old[:, j], 1) for j in range(HIDDEN)), strict=True)
    V, c = source.output.logits.weight.detach().double(), source.output.logits.bias.detach().double()
    torch.testing.assert_close(stack.output.logits.weight.double(), V * torch.tensor(a), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        stack.output.logits.bias.double(), c + V @ torch.tensor(b), rtol=1e-4, atol=1e-5
    )
    assert stack.training  # left in the mode it was found in


@pytest.mark.parametrize("units", ["sigmoid", "tanh"])
def test_the_grown_stack_predicts_nearly_as_its_source_did(tmp_path, units):
    source = trained_run(tmp_path, config(1, transition_units=units))
    pieces = segments()
    _, wanted = states(source, pieces)
    grown = DeepRNN(config(2, transition_units=units))
    builder.load_pretrained(grown, tmp_path, "stack", pieces)
    _, got = states(grown, pieces)
    unfitted = DeepRNN(config(2, transition_units=units))  # the same start without ▷'s correction
    unfitted.load_state_dict({**grown.state_dict(), **source.state_dict()})
    _, raw = states(unfitted, pieces)
    paper = DeepRNN(config(2, transition_units=units))  # the paper's start: the new level and ▷ afresh
    builder.load_pretrained(paper, tmp_path, "recurrence")
    _, fresh = states(paper, pieces)
    error = (got - wanted).abs().mean()
    assert error < 0.5 * (raw - wanted).abs().mean()
    assert error < 0.1 * (fresh - wanted).abs().mean()


STACK_REFUSALS = [
    (config(2), config(2), r"it has 2 level\(s\), the stack 2: it must have fewer"),
    (config(1, hidden_size=HIDDEN + 1), config(2), "more than levels and dropout"),
    (config(1, tie_weights=True), config(2, tie_weights=True), "a stack grows untied"),
    (config(1), config(2, output_sizes=(8,)), "the stack's ▷ must be one affine map"),
    (config(1, bias=False), config(2, bias=False), "▷'s last map must have a bias"),
    (config(1, transition_units="relu"), config(2, transition_units="relu"), "sigmoid or tanh units"),
    (config(1, transition_sizes=(4,)), config(2, transition_sizes=(4,)), "shallow transition"),
]


@pytest.mark.parametrize("lengths", [None, torch.zeros(5, dtype=torch.long)])
def test_a_fit_without_steps_is_refused_and_leaves_the_model_as_it_was(tmp_path, lengths):
    trained_run(tmp_path, config(1))
    model = DeepRNN(config(2))
    before = {n: t.clone() for n, t in model.state_dict().items()}
    pieces = (
        [] if lengths is None else [Batch(b.inputs, b.targets, lengths, b.reset, 0, 0) for b in segments()]
    )
    with pytest.raises(ConfigError, match="no training steps to fit ▷ on"):
        builder.load_pretrained(model, tmp_path, "stack", pieces)
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())


def test_a_checkpoint_without_its_model_configuration_is_refused(tmp_path):
    checkpoint.save(tmp_path / "checkpoints" / "best.pt", {"model": DeepRNN(config(1)).state_dict()})
    with pytest.raises(ConfigError, match="does not record its model's configuration"):
        builder.load_pretrained(DeepRNN(config(2)), tmp_path, "stack", segments())


@pytest.mark.parametrize(
    ("parts", "target", "added"),
    [
        ("stack", config(2), "recurrence.levels.1."),
        ("deep-output", config(1, output_sizes=(8,)), "output.hidden."),
    ],
)
def test_the_optimiser_gives_the_copied_parts_the_pretrained_rate(tmp_path, parts, target, added):
    """The added layers learn at the full rate; the rest, ▷'s refitted last map with its new
    columns included, at the pretrained one."""
    trained_run(tmp_path, config(1, output_units="tanh"))  # a shallow ▷'s units play no part
    model = DeepRNN(target)
    copied = builder.load_pretrained(model, tmp_path, parts, segments())
    optimizer = builder.make_optimizer(TrainConfig(pretrained_lr_scale=0.1), model, copied)
    scales = {id(p): g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    for name, t in model.named_parameters():
        assert scales[id(t)] == (1.0 if name.startswith(added) else 0.1), name


@pytest.mark.parametrize(
    ("parts", "first", "then", "added"),
    [
        ("stack", {"model": "rnn"}, {"model": "srnn"}, "recurrence.levels.1.input.weight"),
        (
            "deep-output",
            {"model": "dts-rnn"},
            {"model": "dots-rnn", "output_sizes": [12]},
            "output.hidden.layers.0.weight",
        ),
    ],
)
def test_a_run_grows_its_model_from_its_training_segments(tmp_path, rolls, parts, first, then, added):
    """Through the trainer, on padded music segments: the sRNN's run starts grown from the RNN's,
    the DOT(S)-RNN's from the DT(S)-RNN's."""
    sizes = {"transition_sizes": [] if parts == "stack" else [6]}
    make_run(tmp_path / "one", rolls, **first, **sizes, max_updates=2).train()
    best = checkpoint.load(tmp_path / "one" / "run" / "checkpoints" / "best.pt")["model"]
    source = str(tmp_path / "one" / "run")
    run = make_run(tmp_path / "two", rolls, **then, **sizes, init_from=source, init_parts=parts)
    own = run.model.state_dict()
    assert run.pretrained == set(best)
    assert torch.equal(own[added][:8, :8], 4.0 * torch.eye(8))
    recurrent = "recurrence.levels.0.recurrent_weight"
    assert torch.equal(own[recurrent], best[recurrent])
    assert not torch.equal(own["output.logits.weight"][:, :8], best["output.logits.weight"])  # refitted


# -- a deep ▷ from a shallow one (init_parts = "deep-output") -------------------------------------


def outputs(model: DeepRNN, pieces: list[Batch]) -> torch.Tensor:
    """What ▷'s last map reads (o; h for a shallow ▷) over the segments' valid steps."""
    tops, _ = states(model, pieces)
    with torch.no_grad():
        return model.eval().output.hidden(tops)


CENTRE = {"sigmoid": 0.5, "tanh": 0.0}  # the middle of each unit's range
GAIN = {"sigmoid": 4.0, "tanh": 1.0}  # 1 / φ'(0)


@pytest.mark.parametrize("state", ["sigmoid", "tanh"])
@pytest.mark.parametrize("units", ["sigmoid", "tanh"])
def test_a_deep_output_starts_with_its_first_units_carrying_the_state(tmp_path, state, units):
    """Each ▷ layer's first H rows are [gain I, 0] with bias -gain centre, the gain its units',
    the centre that of the units it reads (⊕'s, then its own layer's), its other rows as the
    model had them; the last map reads nothing from the units past H; ⊕ is the source's."""
    source = trained_run(tmp_path, config(2, transition_units=state))
    deep = DeepRNN(
        config(2, transition_units=state, output_sizes=(HIDDEN + 3, HIDDEN + 2), output_units=units)
    )
    before = {n: t.clone() for n, t in deep.state_dict().items()}
    own = grown_copying_the_recurrence(deep, source, tmp_path, "deep-output")
    for k, (width, reads) in enumerate([(HIDDEN, state), (HIDDEN + 3, units)]):
        weight, bias = own[f"output.hidden.layers.{k}.weight"], own[f"output.hidden.layers.{k}.bias"]
        gain = GAIN[units]
        identity = torch.cat([gain * torch.eye(HIDDEN), torch.zeros(HIDDEN, width - HIDDEN)], 1)
        assert torch.equal(weight[:HIDDEN], identity)
        assert torch.equal(bias[:HIDDEN], torch.full((HIDDEN,), -gain * CENTRE[reads]))
        assert torch.equal(weight[HIDDEN:], before[f"output.hidden.layers.{k}.weight"][HIDDEN:])
        assert torch.equal(bias[HIDDEN:], before[f"output.hidden.layers.{k}.bias"][HIDDEN:])
    assert torch.equal(own["output.logits.weight"][:, HIDDEN:], torch.zeros(VOCAB, 2))


def test_a_deep_outputs_last_map_absorbs_the_least_squares_fit_of_the_state_on_its_layer(tmp_path):
    """One sigmoid layer: o = σ(4 (h - 1/2)) for its first H units, the fit worked out from the
    source's states alone (numpy's polyfit per unit)."""
    source = trained_run(tmp_path, config(1, output_dropout=0.5))
    pieces = segments()
    deep = DeepRNN(config(1, output_sizes=(HIDDEN + 4,), output_dropout=0.5))
    builder.load_pretrained(deep, tmp_path, "deep-output", pieces)
    old, _ = states(source, pieces)
    new = torch.sigmoid(4.0 * (old - 0.5))
    old, new = old.double().numpy(), new.double().numpy()
    a, b = zip(*(np.polyfit(new[:, j], old[:, j], 1) for j in range(HIDDEN)), strict=True)
    V, c = source.output.logits.weight.detach().double(), source.output.logits.bias.detach().double()
    logits = deep.output.logits
    torch.testing.assert_close(logits.weight[:, :HIDDEN].double(), V * torch.tensor(a), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits.bias.double(), c + V @ torch.tensor(b), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("state", "sizes", "units"),
    [
        ("sigmoid", (HIDDEN,), "sigmoid"),
        ("sigmoid", (HIDDEN + 3, HIDDEN + 1), "tanh"),
        ("tanh", (HIDDEN,), "sigmoid"),  # centred at 1/2, as sigmoid states are: 0.52 off, 0.28 here
    ],
)
def test_the_grown_deep_output_predicts_nearly_as_its_source_did(tmp_path, state, sizes, units):
    source = trained_run(tmp_path, config(1, transition_units=state))
    pieces = segments()
    _, wanted = states(source, pieces)
    grown = DeepRNN(config(1, transition_units=state, output_sizes=sizes, output_units=units))
    builder.load_pretrained(grown, tmp_path, "deep-output", pieces)
    _, got = states(grown, pieces)
    paper = DeepRNN(config(1, transition_units=state, output_sizes=sizes, output_units=units))
    builder.load_pretrained(paper, tmp_path, "recurrence")
    _, fresh = states(paper, pieces)
    assert (got - wanted).abs().mean() < 0.1 * (fresh - wanted).abs().mean()
    o = outputs(grown, pieces)[:, :HIDDEN]  # the state carried, bent by φ but in order
    h, _ = states(source, pieces)
    for j in range(HIDDEN):
        assert np.corrcoef(o[:, j].numpy(), h[:, j].numpy())[0, 1] > 0.9


@pytest.mark.parametrize(
    ("state", "sizes"), [("sigmoid", (HIDDEN,)), ("tanh", (HIDDEN,)), ("sigmoid", (HIDDEN + 2, HIDDEN))]
)
def test_a_tied_deep_output_takes_the_fit_in_its_last_layer_and_keeps_the_mean_logits(tmp_path, state, sizes):
    """Tied, V is the embedding and stays the source's: ▷'s last layer has a gain and a centre
    per unit, as good as a finer search's, and the bias absorbs the mean of h^src - o, so that
    the mean logits over the fit's steps are the source's; it predicts nearly as the source did
    (▷'s units those of the state, whose range the tied V cannot rescale)."""
    tied = dict(transition_units=state, output_units=state, tie_weights=True)
    source = trained_run(tmp_path, config(1, **tied))
    pieces = segments()
    h, wanted = states(source, pieces)
    grown = DeepRNN(config(1, output_sizes=sizes, **tied))
    builder.load_pretrained(grown, tmp_path, "deep-output", pieces)
    assert grown.output.logits.embedding is grown.recurrence.levels[0].input
    assert torch.equal(grown.recurrence.levels[0].input.weight, source.recurrence.levels[0].input.weight)
    _, got = states(grown, pieces)
    torch.testing.assert_close(got.mean(0), wanted.mean(0), rtol=0, atol=1e-4)
    last = grown.output.hidden.layers[-1]
    gains = torch.diagonal(last.weight.detach()).double()
    padding = torch.zeros(HIDDEN, last.in_size - HIDDEN)
    assert torch.equal(last.weight.detach(), torch.cat([torch.diag(gains.float()), padding], 1))
    centres = -last.bias.detach().double() / gains
    x = h if len(sizes) == 1 else torch.sigmoid(4 * (h - 0.5))  # what the last layer reads
    h, x = h.double(), x.double()
    phi = torch.sigmoid if state == "sigmoid" else torch.tanh
    middle, half = CENTRE[state], 0.5 if len(sizes) > 1 or state == "sigmoid" else 1.0
    g = torch.linspace(0.25, 40, 400, dtype=torch.float64)[:, None, None]  # an independent, finer search
    m = torch.linspace(middle - 0.8 * half, middle + 0.8 * half, 161, dtype=torch.float64)[None, :, None]
    for j in range(HIDDEN):
        spread = (h[None, None, :, j] - phi(g * (x[None, None, :, j] - m))).var(-1)
        chosen = (h[:, j] - phi(gains[j] * (x[:, j] - centres[j]))).var()
        assert chosen <= spread.min() * 1.01 + 1e-9, j
    paper = DeepRNN(config(1, output_sizes=sizes, **tied))
    builder.load_pretrained(paper, tmp_path, "recurrence")
    _, fresh = states(paper, pieces)
    assert (got - wanted).abs().mean() < 0.1 * (fresh - wanted).abs().mean()


DEEP_OUTPUT_REFUSALS = [
    (config(1), config(1), "this model's ▷ is one affine map, with no layer to grow"),
    (config(1, output_sizes=(8,)), config(1, output_sizes=(8, 8)), "its ▷ is deep already"),
    (
        config(1, transition_units="relu"),
        config(1, transition_units="relu", output_sizes=(8,)),
        "must be of sigmoid or tanh units",
    ),
    (config(1), config(2, output_sizes=(8,)), "differs from this one in more than ▷ and dropout: levels"),
    (config(1), config(1, output_sizes=(HIDDEN,), tie_weights=True), "more than ▷ and dropout: tie_weights"),
    (config(1), config(1, output_sizes=(HIDDEN - 1,)), r"at least as wide as the state \(6\)"),
    (config(1), config(1, output_sizes=(8,), output_units="maxout:2"), "sigmoid or tanh units"),
    (config(1), config(1, output_sizes=(8,), output_units="relu"), "sigmoid or tanh units"),
    (
        config(1, transition_units="tanh", tie_weights=True),
        config(1, transition_units="tanh", output_sizes=(HIDDEN,), tie_weights=True),
        "tied, ▷'s last layer must have the state's units, tanh, not sigmoid: V cannot rescale it",
    ),
]


@pytest.mark.parametrize(
    ("parts", "source", "target", "why"),
    [("stack", *case) for case in STACK_REFUSALS] + [("deep-output", *case) for case in DEEP_OUTPUT_REFUSALS],
)
def test_a_model_that_cannot_grow_from_the_run_is_refused_and_left_as_it_was(
    tmp_path, parts, source, target, why
):
    trained_run(tmp_path, source)
    model = DeepRNN(target)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    with pytest.raises(ConfigError, match=f'init_parts = "{parts}": .*{why}'):
        builder.load_pretrained(model, tmp_path, parts, segments())
    assert all(torch.equal(before[n], t) for n, t in model.state_dict().items())
