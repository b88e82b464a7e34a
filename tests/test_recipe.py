"""The training recipe by hand: each mechanism against values derived here, not against the
trainer run another way (global-norm clipping, weight noise, schedules, early stopping, the
time budget, initialisation, the state reset, locked dropout, sampling, MIDI from elsewhere)."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys

import mido
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deeprnn import DeepTransition
from deeprnn.data import load
from deeprnn.data.music import midi_to_roll
from deeprnn.errors import ConfigError, TrainingDiverged
from deeprnn.operators.dropout import locked_dropout
from deeprnn.operators.heads import Bernoulli, Categorical
from deeprnn.training import builder, checkpoint, evaluation, loop, trainer
from deeprnn.training.averaging import Averaging
from deeprnn.training.config import apply
from deeprnn.training.console import NoWriter
from deeprnn.training.guard import NonfiniteGuard
from deeprnn.training.noise import noisy, weight_matrices
from deeprnn.training.schedule import Schedule

SETTINGS = {
    "model": "dts-rnn",
    "hidden_size": 8,
    "transition_sizes": [6],
    "batch_size": 3,
    "bptt_steps": 7,
    "optimizer": "sgd",
    "lr": 0.5,
    "schedule": "constant",
    "weight_noise": 0.0,
    "clip_norm": 0.0,
    "device": "cpu",
}
QUIET = {"log": lambda _: None}


def make_run(tmp_path, rolls, **overrides) -> loop.Run:
    config = apply({**SETTINGS, "data": str(rolls), **overrides})
    run = loop.Run(config, tmp_path / "run", load(config.data), **QUIET)
    run.writer = NoWriter()
    return run


def gradients_by_hand(model, batch, noise: dict | None = None) -> dict[str, torch.Tensor]:
    """∂/∂θ of the mean NLL per target of ``batch`` from a zero state, at θ + ``noise``: the
    Bernoulli NLL of each valid frame written out here, not taken from the trainer."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_((noise or {}).get(name, 0.0))
    logits, _ = model(batch.inputs, None, batch.lengths)
    nll = F.binary_cross_entropy_with_logits(logits, batch.targets, reduction="none").sum(-1)
    if batch.lengths is not None:
        nll = nll * (torch.arange(nll.shape[0]).unsqueeze(1) < batch.lengths)
    (nll.sum() / batch.total).backward()
    return {name: p.grad for name, p in model.named_parameters()}


def first_batch(run: loop.Run):
    return next(iter(run.train_data.batches(0, 0)))


# -- one update -----------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_one_update_is_sgd_with_the_global_norm_clipped(tmp_path, rolls, clip):
    """W ← W − lr · g · min(1, c / ‖g‖), the norm over all the gradients together."""
    run = make_run(tmp_path, rolls, clip_norm=clip)
    batch = first_batch(run)
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    g = gradients_by_hand(run.model, batch)
    norm = math.sqrt(sum(float((x.double() ** 2).sum()) for x in g.values()))
    factor = min(1.0, clip / norm) if clip else 1.0
    run.update(batch)
    for name, p in run.model.named_parameters():
        expected = before[name] - 0.5 * factor * g[name]
        torch.testing.assert_close(p.detach(), expected, atol=2e-7, rtol=1e-5)
    if clip:  # the clipping fired, and clipping each gradient alone would have moved W elsewhere
        assert factor < 0.5
        alone = [min(1.0, clip / float(x.norm())) for x in g.values()]
        assert max(alone) > 1.5 * factor


def test_weight_noise_perturbs_the_weights_for_the_gradient_only(tmp_path, rolls):
    """The gradient is taken at W + σε on the weight matrices (the biases stay clean), and the
    step is applied to the clean W: ε is the draw the trainer makes, replayed here."""
    sigma = 0.3
    run = make_run(tmp_path, rolls, weight_noise=sigma)
    batch = first_batch(run)
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    torch.manual_seed(1234)
    noise = {n: torch.randn_like(p) * sigma for n, p in run.model.named_parameters() if p.dim() >= 2}
    assert len(noise) < len(before)  # there are biases, and they get none
    g = gradients_by_hand(run.model, batch, noise)
    torch.manual_seed(1234)
    run.update(batch)
    for name, p in run.model.named_parameters():
        torch.testing.assert_close(p.detach(), before[name] - 0.5 * g[name], atol=2e-7, rtol=1e-5)


def test_weight_noise_is_taken_away_even_when_the_pass_inside_fails():
    """An error between the noise and the update (a failing forward or backward pass) leaves the
    weights as they were, not at W + σε; σ = 0 draws nothing from the generator."""
    weights = [torch.randn(3, 2), torch.randn(4, 4)]
    before = [w.clone() for w in weights]
    with pytest.raises(RuntimeError, match="the pass failed"), noisy(weights, 0.5):
        assert all(not torch.equal(w, b) for w, b in zip(weights, before, strict=True))
        raise RuntimeError("the pass failed")
    assert all(torch.equal(w, b) for w, b in zip(weights, before, strict=True))  # exactly W, not W + σε - σε
    torch.manual_seed(5)
    with noisy(weights, 0.0):
        assert all(torch.equal(w, b) for w, b in zip(weights, before, strict=True))
    after = torch.randn(1)
    torch.manual_seed(5)
    assert torch.equal(after, torch.randn(1))  # nothing was drawn


def test_weight_noise_goes_to_every_weight_of_two_or_more_dimensions_and_no_bias():
    """A model of one's own may hold a convolution (a 3-d weight): it is a weight like a matrix."""
    model = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 5), torch.nn.Linear(4, 6), torch.nn.LayerNorm(6))
    shapes = [tuple(w.shape) for w in weight_matrices(model)]
    assert shapes == [(3, 2, 5), (6, 4)]


def optimizer_by_hand(
    kind: str, w: torch.Tensor, grads: list[torch.Tensor], lr: float, decay: float, momentum: float
):
    """SGD with momentum and L2 decay, Adam (L2) or AdamW (decoupled decay), written out."""
    m, v = torch.zeros_like(w), torch.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        if kind == "adamw":
            w = w * (1 - lr * decay)
        else:
            g = g + decay * w
        if kind == "sgd":
            m = g if t == 1 else momentum * m + g
            w = w - lr * m
            continue
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        w = w - lr * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
    return w


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_two_updates_follow_the_optimiser_written_out(tmp_path, rolls, kind):
    """Momentum, Adam's moments and bias correction, L2 decay against AdamW's decoupled decay,
    over two updates on two pieces (each from a zero state), inside a real run."""
    lr, decay, momentum = (0.5 if kind == "sgd" else 0.01), 0.1, 0.9
    run = make_run(
        tmp_path,
        rolls,
        optimizer=kind,
        lr=lr,
        weight_decay=decay,
        momentum=momentum if kind == "sgd" else 0.0,
    )
    starts = [b for b in run.train_data.batches(0, 0) if b.reset][:2]
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    model, grads = copy.deepcopy(run.model), []
    for batch in starts:
        run.update(batch)
        grads.append(gradients_by_hand(model, batch))
        model.load_state_dict(run.model.state_dict())
    for name, p in run.model.named_parameters():
        expected = optimizer_by_hand(kind, before[name], [g[name] for g in grads], lr, decay, momentum)
        torch.testing.assert_close(p.detach(), expected, atol=1e-6, rtol=1e-4)


def test_the_guard_skips_restores_then_gives_up():
    """Three non-finite updates in a row restore the last good state; the third restore with no
    better validation in between is divergence. A finite update or a new best starts over."""
    guard = NonfiniteGuard()
    assert guard.state_dict() == {"in_a_row": 0, "restores": 0}
    assert [guard.nonfinite() for _ in range(9)] == ["skip", "skip", "restore"] * 2 + [
        "skip",
        "skip",
        "diverged",
    ]
    guard = NonfiniteGuard(restore_after=2, give_up_after=2)
    assert [guard.nonfinite(), guard.nonfinite(), guard.nonfinite()] == ["skip", "restore", "skip"]
    guard.finite()  # an update went through: the count in a row starts again
    assert [guard.nonfinite(), guard.nonfinite()] == ["skip", "diverged"]
    guard.improved()  # a new best: the restores before it did their job
    assert [guard.nonfinite(), guard.nonfinite()] == ["skip", "restore"]
    again = NonfiniteGuard(restore_after=2, give_up_after=2)
    again.load_state_dict(guard.state_dict())
    assert again.state_dict() == guard.state_dict() == {"in_a_row": 0, "restores": 1}
    error = guard.diverged(17, float("nan"), "run/checkpoints/last.pt")
    assert (error.update, error.last_good) == (17, "run/checkpoints/last.pt")
    assert "training diverged at update 17" in str(error) and error.record()["stop_reason"] == "diverged"
    assert "1 return to the last good state" in str(error)  # the second time gave up instead
    assert "2 returns to the last good state" in str(NonfiniteGuard().diverged(9, 1.0, "x"))


# -- schedules ------------------------------------------------------------------------------------


def schedule(kind: str, **settings) -> Schedule:
    return Schedule(apply({"schedule": kind, "lr": 0.8, **settings}), total_updates=200)


def test_inverse_and_cosine_rates_at_chosen_updates():
    inverse = schedule("inverse", lr_decay_beta=100.0)
    assert [inverse.lr(t) for t in (0, 100, 300)] == pytest.approx([0.8, 0.4, 0.2])
    cosine = schedule("cosine")
    expected = [0.8, 0.4 * (1 + math.cos(math.pi / 4)), 0.4, 0.0, 0.0]
    assert [cosine.lr(t) for t in (0, 50, 100, 200, 250)] == pytest.approx(expected, abs=1e-12)
    assert [schedule("constant").lr(t) for t in (0, 1000)] == [0.8, 0.8]


@pytest.mark.parametrize("kind", ["inverse", "cosine", "constant"])
def test_only_the_halving_schedules_react_to_validation_or_stop_at_min_lr(kind):
    s = schedule(kind, lr_decay_beta=1.0, min_lr=0.5, halve_patience=1)
    s.apply(torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0), 150)  # inverse, cosine: < 0.5
    rate = s.lr()
    assert not any(s.after_evaluation(False) for _ in range(5))
    assert s.lr() == rate and not s.finished()


@pytest.mark.parametrize("kind", ["halve", "plateau"])
def test_halving_after_patience_and_the_min_lr_stop(kind):
    s = schedule(kind, halve_patience=2, min_lr=0.15)
    restores = [s.after_evaluation(improved) for improved in (True, False, True, False, False, False)]
    # the count of bad evaluations starts again after an improvement and after each halving
    assert restores == [False, False, False, False, kind == "halve", False]
    assert s.lr() == pytest.approx(0.4) and not s.finished()
    s.after_evaluation(False)  # second bad evaluation since the halving: 0.2
    s.after_evaluation(False)
    s.after_evaluation(False)  # 0.1 < min_lr
    assert s.lr() == pytest.approx(0.1) and s.finished()


def test_halving_rates_do_not_decay_with_t_and_names_compare_by_value():
    """A schedule named by a string read from a file (equal to the literal, another object): the
    same rates; halve and plateau change the rate only by halving, whatever the update."""
    name = "".join
    assert schedule(name(["co", "sine"])).lr(100) == pytest.approx(0.4)
    for kind in ("halve", "plateau"):
        s = schedule(name([kind[:2], kind[2:]]), halve_patience=1)
        assert [s.lr(t) for t in (0, 100, 200)] == [0.8, 0.8, 0.8]
        assert s.after_evaluation(False) == (kind == "halve")  # halved, and only halve restores
        assert [s.lr(t) for t in (0, 100, 200)] == [0.4, 0.4, 0.4]


def scripted_validation(monkeypatch, values: list[float], seen: list | None = None) -> None:
    """Make validation score ``values`` in turn (nats per frame), keeping the scored parameters."""
    original = loop.Run.score
    calls = iter(values)

    def score(self, split, config, model=None, from_second=False):
        if split != "valid" or self.progress.done:
            return original(self, split, config, model, from_second)
        if seen is not None:
            seen.append({k: v.clone() for k, v in (model or self.model).state_dict().items()})
        return next(calls) * 100.0, 100

    monkeypatch.setattr(loop.Run, "score", score)


@pytest.mark.parametrize("kind", ["halve", "plateau"])
def test_halve_restores_the_best_parameters_exactly_and_plateau_does_not(tmp_path, rolls, monkeypatch, kind):
    scripted_validation(monkeypatch, [5.0, 6.0])
    settings = {**SETTINGS, "data": str(rolls), "schedule": kind, "halve_patience": 1}
    trainer.train(apply({**settings, "eval_every": 4, "max_updates": 8}), tmp_path / "r", **QUIET)
    folder = tmp_path / "r" / "checkpoints"
    best, last = checkpoint.load(folder / "best.pt"), checkpoint.load(folder / "last.pt")
    assert best["update"] == 4 and last["schedule"]["factor"] == 0.5
    same = [torch.equal(last["model"][k], best["model"][k]) for k in best["model"]]
    assert all(same) if kind == "halve" else not any(same)


# -- parameter averaging ----------------------------------------------------------------------------


def test_averaging_begins_at_its_epoch_or_its_trigger_and_scores_the_mean():
    model = torch.nn.Linear(2, 1)
    after = Averaging(apply({**SETTINGS, "average_after_epochs": 2}), model)
    assert [after.active(e, stalled=False) for e in (0, 1, 2, 3)] == [False, False, True, True]
    assert after.active(0, stalled=True)
    assert after.scored(model) is model  # wanted, but nothing averaged yet: the parameters themselves
    weights = []
    for epoch in (1, 2, 3):  # epoch 1 is not averaged
        with torch.no_grad():
            model.weight.add_(1.0)
        weights.append(model.weight.detach().clone())
        after.update(model, epoch, stalled=False)
    torch.testing.assert_close(after.scored(model).weight, (weights[1] + weights[2]) / 2)
    never = Averaging(apply(SETTINGS), model)
    assert not never.active(10, stalled=False) and never.scored(model) is model
    assert never.state_dict() is None


def test_the_stall_trigger_compares_with_the_best_before_the_last_n():
    """n = 2: the new score against the best of all but the last two scores before it."""
    stalled = Averaging(apply({**SETTINGS, "average_when_stalled": 2}), torch.nn.Linear(2, 1))
    assert stalled.stalls([5.0, 4.0, 3.0, 2.0], 4.5) == 4.0  # worse than 4.0, the best of [5, 4]
    assert stalled.stalls([5.0, 4.0, 3.0, 2.0], 4.0) is None  # as good: not worse
    assert stalled.stalls([5.0, 4.0], 9.0) is None  # nothing before the last two
    assert stalled.stalls([5.0, 4.0, 3.0], 6.0) == 5.0
    assert Averaging(apply(SETTINGS), torch.nn.Linear(2, 1)).stalls([5.0, 4.0, 3.0], 9.0) is None


# -- stopping -------------------------------------------------------------------------------------


def test_early_stopping_after_patience_evaluations_without_improvement(tmp_path, rolls, monkeypatch):
    """patience = 3: the best is the 2nd evaluation, the 3rd, 4th and 5th do not improve on it,
    so the run stops at the 5th; valid and test are scored with the 2nd's parameters."""
    seen: list[dict] = []
    scripted_validation(monkeypatch, [5.0, 4.0, 4.5, 4.0, 6.0, 3.0, 2.0], seen)
    settings = {**SETTINGS, "data": str(rolls), "patience": 3, "eval_every": 5, "max_updates": 1000}
    result = trainer.train(apply(settings), tmp_path / "r", **QUIET)
    updates = [json.loads(x)["update"] for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert len(updates) == len(seen) == 5  # (an epoch's end is an evaluation too)
    assert (result["stop_reason"], result["updates"], result["best_update"]) == (
        "early stopping",
        updates[4],
        updates[1],
    )
    best = checkpoint.load(tmp_path / "r" / "checkpoints" / "best.pt")["model"]
    assert all(torch.equal(best[k], seen[1][k]) for k in best)
    model = copy.deepcopy(loop.Run(apply(settings), tmp_path / "x", load(str(rolls)), **QUIET).model)
    model.load_state_dict(seen[1])
    corpus_batches = builder.batches(apply(settings), load(str(rolls)), "test", training=False)
    total, count = evaluation.evaluate(model, corpus_batches, torch.device("cpu"))
    assert result["test_nll"] == pytest.approx(total / count, abs=1e-12)


def test_a_run_whose_validation_is_never_finite_stops_after_patience_evals(tmp_path, rolls, monkeypatch):
    """A NaN score improves on nothing, the first one included: patience = 3 stops at the 3rd
    evaluation, with no best parameters to score, which the error says."""
    scripted_validation(monkeypatch, [math.nan] * 6)
    settings = {**SETTINGS, "data": str(rolls), "patience": 3, "eval_every": 5, "max_updates": 1000}
    with pytest.raises(TrainingDiverged, match="no finite score in 3 evaluations") as stopped:
        trainer.train(apply(settings), tmp_path / "r", **QUIET)
    assert stopped.value.update == 15
    assert stopped.value.last_good == str(tmp_path / "r" / "checkpoints" / "last.pt")
    assert json.loads((tmp_path / "r" / "results.json").read_text())["stop_reason"] == "diverged"


# -- what each update starts from -----------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2])
def test_the_state_is_reset_exactly_at_a_new_piece(tmp_path, rolls, monkeypatch, batch_size):
    original, calls = loop.batch_nll, []

    def recording(model, batch, state, net=None):
        if model.training:
            calls.append((state is None, batch.reset))
        return original(model, batch, state, net)

    monkeypatch.setattr(loop, "batch_nll", recording)
    settings = {**SETTINGS, "data": str(rolls), "batch_size": batch_size, "bptt_steps": 6}
    trainer.train(apply({**settings, "max_updates": 80, "eval_every": 40}), tmp_path / "r", **QUIET)
    assert len(calls) == 80 and sum(reset for _, reset in calls) >= 10
    assert [fresh for fresh, _ in calls] == [reset for _, reset in calls]


def test_the_paper_initialisation_is_sparse_at_the_chosen_spectral_radius():
    cell = DeepTransition(5, 30, (40,), shortcut=True)
    cell.reset_recurrent_parameters(nonzeros=7, scale=1.1)
    square, *others = [*cell.recurrent_weight.split(cell.recurrent_sizes), *cell.layer_weights]
    for m in [square, *others]:
        assert ((m != 0).sum(1) == 7).all()  # seven weights per unit
    assert square.shape == (40, 30) or square.shape[0] != square.shape[1]
    matrices = {tuple(m.shape): m.detach().double() for m in [square, *others]}
    assert (30, 30) in matrices  # the shortcut reads h_{t-1} into the last layer: square
    for shape, m in matrices.items():
        size = torch.linalg.eigvals(m).abs().max() if shape[0] == shape[1] else torch.linalg.matrix_norm(m, 2)
        assert float(size) == pytest.approx(1.1, rel=1e-5)


def test_pretraining_from_a_run_that_matches_nothing_is_an_error(tmp_path, rolls):
    trainer.train(
        apply({**SETTINGS, "data": str(rolls), "max_updates": 2, "eval_every": 2}), tmp_path / "a", **QUIET
    )
    other = make_run(tmp_path, rolls, hidden_size=5).model
    with pytest.raises(ConfigError, match="no parameter of that run matches this model"):
        builder.load_pretrained(other, tmp_path / "a")


def test_a_second_stage_of_the_whole_model_starts_at_the_first_ones_best_point(tmp_path, rolls):
    first = apply({**SETTINGS, "data": str(rolls), "max_updates": 4, "eval_every": 2})
    trainer.train(first, tmp_path / "a", **QUIET)
    best = checkpoint.load(tmp_path / "a" / "checkpoints" / "best.pt")["model"]
    second = make_run(tmp_path, rolls, init_from=str(tmp_path / "a"), init_parts="all", state_dropout=0.2)
    assert all(torch.equal(t, best[n]) for n, t in second.model.state_dict().items())
    fresh = make_run(tmp_path / "f", rolls, init_from=str(tmp_path / "a"))  # the recurrence only
    head = [n for n in best if not n.startswith("recurrence.")]
    assert head and not any(torch.equal(fresh.model.state_dict()[n], best[n]) for n in head)
    with pytest.raises(ConfigError, match="init_parts=all copies from a run: set init_from=RUN too"):
        apply({**SETTINGS, "init_parts": "all"})
    assert apply({**SETTINGS, "init_parts": "stack"}).init_from is None  # reproduce sets it


# -- locked dropout and sampling ------------------------------------------------------------------


def test_locked_dropout_keeps_one_mask_per_sequence_and_the_mean():
    p, x = 0.3, torch.rand(50, 4, 2000) + 0.5
    torch.manual_seed(0)
    out = locked_dropout(x, p, training=True)
    mask = out / x
    assert torch.allclose(mask, mask[:1].expand_as(mask))  # the same units dropped at every step
    kept = mask[0][mask[0] != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - p)))
    dropped = out == 0
    assert not torch.equal(dropped[0, 0], dropped[0, 1])  # each sequence its own mask
    dropped = float((mask[0] == 0).double().mean())
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / mask[0].numel())
    assert abs(float(mask[0].mean()) - 1) < 5 * math.sqrt(p / (1 - p) / mask[0].numel())
    assert locked_dropout(x, p, training=False) is x
    state = torch.get_rng_state()
    assert locked_dropout(x, 0.0, training=True) is x  # no dropout: untouched, no random draw
    assert torch.equal(torch.get_rng_state(), state)


def binomial_ok(frequency: torch.Tensor, p: torch.Tensor, n: int) -> bool:
    """Within five standard deviations of a binomial count (a false alarm once in ~10⁶ runs)."""
    return bool(((frequency - p).abs() <= 5 * torch.sqrt(p * (1 - p) / n) + 1e-12).all())


def tempered(p: torch.Tensor, temperature: float | None) -> torch.Tensor:
    """p ** (1/T), normalised over the outcomes (the last axis); None: the head's default, T = 1."""
    power = p ** (1 / (temperature or 1.0))
    return power / power.sum(-1, keepdim=True)


def temperature_argument(temperature: float | None) -> dict:
    return {} if temperature is None else {"temperature": temperature}


@pytest.mark.parametrize("temperature", [None, 1.0, 2.0])
def test_bernoulli_samples_follow_the_probabilities(temperature):
    n, p = 10_000, torch.tensor([0.02, 0.2, 0.5, 0.8, 0.97])
    logits = torch.logit(p).expand(n, 5)
    generator = torch.Generator().manual_seed(3)
    draws = Bernoulli(5).sample(logits, generator=generator, **temperature_argument(temperature))
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    on = tempered(torch.stack([p, 1 - p], -1), temperature)[:, 0]
    assert binomial_ok(draws.mean(0), on, n)


@pytest.mark.parametrize("temperature", [None, 1.0, 2.0])
def test_categorical_samples_follow_the_probabilities(temperature):
    n, p = 10_000, torch.tensor([0.05, 0.1, 0.15, 0.2, 0.5])
    generator = torch.Generator().manual_seed(4)
    logits = p.log().expand(n, 5)
    draws = Categorical(5).sample(logits, generator=generator, **temperature_argument(temperature))
    assert binomial_ok(torch.bincount(draws, minlength=5).double() / n, tempered(p, temperature).double(), n)


# -- MIDI written by another program ----------------------------------------------------------------


def test_a_midi_file_from_elsewhere_reads_as_a_musician_expects(tmp_path):
    """Two tracks, a tempo track, velocity-0 note-offs, a drum channel, a key below the piano:
    the roll holds the three pitched notes, at 4 frames per quarter note (120 ticks a frame)."""
    midi = mido.MidiFile(type=1, ticks_per_beat=480)
    meta = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=600_000, time=0)])
    piano = mido.MidiTrack(
        [
            mido.Message("program_change", program=0, time=0),
            mido.Message("note_on", note=60, velocity=90, time=0),
            mido.Message("note_on", note=10, velocity=90, time=0),  # no piano key: left out
            mido.Message("note_on", note=60, velocity=0, time=480),  # a velocity-0 note-off
            mido.Message("note_on", note=10, velocity=0, time=0),
            mido.Message("note_on", note=67, velocity=80, time=480),  # ticks 960–1200
            mido.Message("note_on", note=67, velocity=0, time=240),
        ]
    )
    strings = mido.MidiTrack(
        [
            mido.Message("note_on", channel=1, note=64, velocity=70, time=240),
            mido.Message("note_off", channel=1, note=64, velocity=0, time=480),
        ]
    )
    drums = mido.MidiTrack(
        [
            mido.Message("note_on", channel=9, note=36, velocity=100, time=0),
            mido.Message("note_off", channel=9, note=36, velocity=0, time=960),
        ]
    )
    midi.tracks.extend([meta, piano, strings, drums])
    midi.save(tmp_path / "song.mid")
    roll = midi_to_roll(tmp_path / "song.mid", frames_per_beat=4)
    expected = np.zeros((10, 88), dtype=np.uint8)
    expected[0:4, 60 - 21] = 1  # ticks 0–480: frames 0–3
    expected[2:6, 64 - 21] = 1  # ticks 240–720: frames 2–5
    expected[8:10, 67 - 21] = 1  # ticks 960–1200: frames 8–9
    np.testing.assert_array_equal(roll, expected)


# -- CI ---------------------------------------------------------------------------------------------


def test_ci_fails_rather_than_skips_without_the_benchmark_data(tmp_path):
    env = {**os.environ, "CI": "1", "DEEPRNN_DATA": str(tmp_path / "none")}
    test = "tests/test_data.py::test_pickle_matches_mat_frame_for_frame"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", test],
        capture_output=True,
        text=True,
        env=env,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert done.returncode == 1 and "benchmark data not found" in done.stdout
