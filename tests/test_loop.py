"""The training loop's own decisions, each against a value derived here: the update's scale,
when it skips, where divergence is reported, when to evaluate and stop, what is logged and
recorded, what a resume restores, how the final scores are taken, and each process's seed."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from test_recipe import QUIET, SETTINGS, gradients_by_hand, make_run, scripted_validation

from deeprnn.data import load
from deeprnn.data.batching import Batch
from deeprnn.driver import map_carry
from deeprnn.errors import RunFolderError, TrainingDiverged
from deeprnn.training import builder, checkpoint, evaluation, loop, trainer
from deeprnn.training.config import apply
from deeprnn.training.console import NoWriter
from deeprnn.training.distributed import World
from deeprnn.training.guard import NonfiniteGuard


def settings(rolls, **overrides) -> dict:
    return {**SETTINGS, "data": str(rolls), **overrides}


def metrics(folder) -> list[dict]:
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


def test_a_run_takes_its_configs_device_unless_given_one(tmp_path, rolls):
    assert make_run(tmp_path, rolls).device == torch.device("cpu")
    config = apply(settings(rolls))
    given = loop.Run(config, tmp_path / "given", load(config.data), device=torch.device("cpu"), **QUIET)
    assert given.device == torch.device("cpu") and next(given.model.parameters()).device.type == "cpu"


@pytest.mark.parametrize("max_updates", [0, 10])
def test_cosine_decays_over_max_updates_or_else_every_epoch(tmp_path, rolls, max_updates):
    """½ ε0 (1 + cos(π t / T)), T = max_updates when set, else the batches of all epochs."""
    run = make_run(tmp_path, rolls, schedule="cosine", lr=0.8, epochs=3, max_updates=max_updates)
    total = max_updates or sum(run.train_data.count(e) for e in range(3))
    assert total > 10 or max_updates
    for t in (1, total // 2, total - 1):
        assert run.schedule.lr(t) == pytest.approx(0.4 * (1 + math.cos(math.pi * t / total)), rel=1e-12)


# -- one update -----------------------------------------------------------------------------------


def one_frame_batch(frames: int) -> Batch:
    """One piece of ``frames`` frames (notes 60 and 64 in each), all of it in one batch."""
    targets = torch.zeros(frames, 1, 88)
    targets[:, :, [60 - 21, 64 - 21]] = 1.0
    return Batch(torch.zeros_like(targets), targets, None, True, frames, frames)


def test_an_update_on_a_single_target_and_on_none(tmp_path, rolls):
    """The loss is the mean over the batch's targets: one target is its own mean; a batch with
    no targets at all (an empty piece) has a loss of 0 and changes nothing."""
    run = make_run(tmp_path, rolls)
    single = one_frame_batch(1)
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    g = gradients_by_hand(run.model, single)
    assert run.update(single) is not None
    for name, p in run.model.named_parameters():
        torch.testing.assert_close(p.detach(), before[name] - 0.5 * g[name], atol=2e-7, rtol=1e-5)
    after = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    assert run.update(one_frame_batch(0)) == 0.0
    assert all(torch.equal(p, after[n]) for n, p in run.model.named_parameters())
    assert run.progress.skipped == 0


def test_a_gradient_that_is_not_finite_skips_the_update_though_the_loss_is_finite(tmp_path, rolls):
    run = make_run(tmp_path, rolls)
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    weight = next(p for p in run.model.parameters() if p.dim() == 2)
    weight.register_hook(lambda g: torch.full_like(g, math.inf))
    assert run.update(one_frame_batch(5)) is None
    assert run.progress.skipped == 1
    assert all(torch.equal(p, before[n]) for n, p in run.model.named_parameters())


def test_a_segment_whose_state_overflowed_is_skipped_alone(tmp_path, rolls, monkeypatch):
    """The second segment's forward pass overflows (its loss and the state after it NaN): that
    update is skipped, and the next segment of the same pieces starts from a fresh state rather
    than from the NaN one, so it goes through (carried on, three skips in a row would restore)."""
    original, calls = loop.batch_nll, itertools.count()

    def overflows_once(model, batch, state, net=None):
        nll, state = original(model, batch, state, net)
        if model.training and next(calls) == 1:
            assert not batch.reset  # the pieces go on in the next segment
            return nll * math.nan, map_carry(lambda part: part * math.nan, state)
        return nll, state

    monkeypatch.setattr(loop, "batch_nll", overflows_once)
    run = make_run(tmp_path, rolls, bptt_steps=3, eval_every=100, max_updates=6)
    run.train()
    assert (run.progress.updates, run.progress.skipped, run.progress.restores) == (6, 1, 0)


def test_divergence_names_its_update_and_the_last_good_checkpoint(tmp_path, rolls, monkeypatch):
    """Every update not finite: a restore after each `restore_after` in a row, and the run gives
    up at the `give_up_after`-th, so at update restore_after × give_up_after (9)."""
    original = loop.batch_nll

    def poisoned(model, batch, state, net=None):
        nll, state = original(model, batch, state, net)
        return nll * math.nan if model.training else nll, state

    monkeypatch.setattr(loop, "batch_nll", poisoned)
    config = apply(settings(rolls, bptt_steps=3, checkpoint_every=3, eval_every=100, max_updates=100))
    guard = NonfiniteGuard()
    run = loop.Run(config, tmp_path / "r", load(config.data), **QUIET)
    assert run.train_data.count(0) > guard.restore_after * guard.give_up_after  # no epoch's end before
    with pytest.raises(TrainingDiverged) as stopped:
        run.train()
    assert stopped.value.update == guard.restore_after * guard.give_up_after == 9
    assert stopped.value.last_good == str(tmp_path / "r" / "checkpoints" / "last.pt")
    assert json.loads((tmp_path / "r" / "results.json").read_text())["diverged"]["update"] == 9


# -- evaluating, logging and stopping ---------------------------------------------------------------


def test_the_time_budget_and_the_recorded_seconds_on_a_clock_of_0_1234_s(tmp_path, rolls, monkeypatch):
    """Each update costs 0.1234 s: past a budget of 0.5 s at the 5th (0.617 s); the records say
    the seconds to the hundredth."""
    clock = itertools.count()
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: 0.1234 * next(clock)))
    config = apply(settings(rolls, time_budget_s=0.5, eval_every=2, max_updates=1000))
    result = trainer.train(config, tmp_path / "r", **QUIET)
    assert (result["stop_reason"], result["updates"]) == ("time budget", 5)
    records = metrics(tmp_path / "r")
    assert [(r["update"], r["train_seconds"]) for r in records] == [(2, 0.25), (4, 0.49), (5, 0.62)]


def test_the_log_marks_the_evaluations_that_improved(tmp_path, rolls, monkeypatch):
    scripted_validation(monkeypatch, [5.0, 6.0, 4.0, 4.0])
    lines: list[str] = []
    trainer.train(apply(settings(rolls, eval_every=2, max_updates=8)), tmp_path / "r", log=lines.append)
    evaluations = [line for line in lines if line.startswith("epoch ") and " valid nll " in line]
    assert [line.split(", lr")[0].endswith("(best)") for line in evaluations] == [True, False, True, False]


@pytest.mark.parametrize(
    ("patience", "evaluations", "reason"), [(0, 4, "max updates"), (1, 2, "early stopping")]
)
def test_patience_one_stops_at_the_first_evaluation_without_improvement_and_zero_never(
    tmp_path, rolls, monkeypatch, patience, evaluations, reason
):
    scripted_validation(monkeypatch, [5.0, 6.0, 7.0, 8.0])
    config = apply(settings(rolls, patience=patience, eval_every=2, max_updates=8))
    result = trainer.train(config, tmp_path / "r", **QUIET)
    assert (len(metrics(tmp_path / "r")), result["stop_reason"]) == (evaluations, reason)


def test_a_rate_halved_below_min_lr_stops_the_run_and_says_so(tmp_path, rolls, monkeypatch):
    """lr 1.0 halved at each evaluation without improvement: 0.5 at the 2nd, 0.25 < min_lr at
    the 3rd, where the run stops (patience 0 would never stop it)."""
    scripted_validation(monkeypatch, [5.0, 6.0, 7.0, 8.0])
    rate = {"schedule": "halve", "lr": 1.0, "halve_patience": 1, "min_lr": 0.3}
    config = apply(settings(rolls, patience=0, eval_every=2, max_updates=8, **rate))
    result = trainer.train(config, tmp_path / "r", **QUIET)
    assert [r["lr"] for r in metrics(tmp_path / "r")] == [1.0, 0.5, 0.25]
    assert (result["stop_reason"], result["best_update"]) == ("min_lr", 2)


def test_eval_every_one_evaluates_after_each_update(tmp_path, rolls):
    trainer.train(apply(settings(rolls, eval_every=1, max_updates=3)), tmp_path / "r", **QUIET)
    assert [r["update"] for r in metrics(tmp_path / "r")] == [1, 2, 3]


def test_tensorboard_drops_what_a_resumed_run_redoes(tmp_path, rolls, monkeypatch):
    """A fresh run purges nothing; a resumed one purges from its update on (the steps a crashed
    run logged after its last checkpoint are done again)."""
    purges = []

    class Writer(NoWriter):
        def __init__(self, logdir: str, purge_step: int | None = None) -> None:
            purges.append(purge_step)

    monkeypatch.setattr(torch.utils.tensorboard, "SummaryWriter", Writer)
    trainer.train(apply(settings(rolls, eval_every=2, max_updates=4)), tmp_path / "r", **QUIET)
    trainer.train(None, tmp_path / "r", resume=True, limits={"max_updates": 6}, **QUIET)
    assert purges == [None, 4]


# -- resuming ---------------------------------------------------------------------------------------


def test_a_resumed_run_holds_the_best_parameters_so_far(tmp_path, rolls, monkeypatch):
    scripted_validation(monkeypatch, [5.0, 6.0])
    config = apply(settings(rolls, eval_every=3, max_updates=6))
    trainer.train(config, tmp_path / "r", **QUIET)
    folder = tmp_path / "r" / "checkpoints"
    resumed = loop.Run(config, tmp_path / "r", load(config.data), **QUIET)
    resumed.resume(checkpoint.load(folder / "last.pt"))
    best = checkpoint.load(folder / "best.pt")["model"]
    assert best.keys() == resumed.best_model.keys()
    assert all(torch.equal(resumed.best_model[k], best[k]) for k in best)
    assert not all(torch.equal(resumed.model.state_dict()[k], best[k]) for k in best)  # last ≠ best
    fresh = make_run(tmp_path / "fresh", rolls)  # a state from before any evaluation: no best yet
    fresh.resume(fresh.checkpoint_state())
    assert fresh.best_model is None


# -- the final scores -------------------------------------------------------------------------------


def test_music_is_also_scored_from_the_second_frame(tmp_path, rolls):
    config = apply(settings(rolls, max_updates=4, eval_every=4))
    result = trainer.train(config, tmp_path / "r", **QUIET)
    run = make_run(tmp_path / "x", rolls)
    run.model.load_state_dict(checkpoint.load(tmp_path / "r" / "checkpoints" / "best.pt")["model"])
    test = builder.batches(config, load(config.data), "test", training=False)
    total, count = evaluation.evaluate(run.model, test, torch.device("cpu"), from_second=True)
    later = result["scores"]["test_from_second_frame"]
    assert later["count"] == count == result["scores"]["test"]["count"] - 3  # three test pieces
    assert later["value"] == pytest.approx(total / count, rel=1e-9)


def test_text_is_scored_as_one_stream_whatever_the_eval_batch_size(tmp_path, text_corpus):
    """Valid and test of a text run are read in one column, the state carried through the whole
    stream: eval_batch_size (4 columns here) is for the evaluations during training only."""
    corpus = text_corpus(test=4)
    config = apply(settings(corpus, eval_batch_size=4, max_updates=6, eval_every=6, bptt_steps=5))
    result = trainer.train(config, tmp_path / "r", **QUIET)
    assert "test_from_second_frame" not in result["scores"]
    run = loop.Run(config, tmp_path / "x", load(config.data), **QUIET)
    run.model.load_state_dict(checkpoint.load(tmp_path / "r" / "checkpoints" / "best.pt")["model"])
    for split in ("valid", "test"):
        one_column = builder.batches(replace(config, eval_batch_size=1), run.corpus, split, training=False)
        four = builder.batches(config, run.corpus, split, training=False)
        total, count = evaluation.evaluate(run.model, one_column, torch.device("cpu"))
        assert result["scores"][split]["value"] == pytest.approx(math.exp(total / count), rel=1e-9)
        assert evaluation.evaluate(run.model, four, torch.device("cpu"))[0] != pytest.approx(total, rel=1e-6)


# -- each process of a distributed run (DistributedDataParallel replaced by a recorder) ----------------


@pytest.fixture
def wrapped(monkeypatch) -> list[dict]:
    calls = []

    def recorder(model, device_ids=None):
        calls.append({"device_ids": device_ids})
        return model

    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", recorder)
    return calls


def test_each_process_draws_from_its_own_seed_and_wraps_its_model_for_its_device(tmp_path, rolls, wrapped):
    config = apply(settings(rolls, seed=5))
    second = loop.Run(config, tmp_path / "r", load(config.data), world=World(1, 2), **QUIET)
    assert torch.initial_seed() == 5 + 1  # dropout masks and weight noise of its own
    assert wrapped == [{"device_ids": None}]  # a CPU model: DDP takes no device ids
    assert second.net is second.model  # what the recorder returned: training calls the wrapper
    with pytest.raises(RunFolderError, match="trained by 1 process"):
        second.resume(make_run(tmp_path / "alone", rolls).checkpoint_state())


# -- counts past 256, where CPython's cached small ints end (`is` would stop agreeing with `==`) --------


def text_corpus(tmp_path, train_words: int):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    words = [f"w{i % 7}" for i in range(train_words)]
    for split, text in (("train", words), ("valid", words[:40]), ("test", words[:40])):
        (corpus / f"{split}.txt").write_text(" ".join(text) + "\n")
    return corpus


def test_an_epoch_of_300_batches_is_read_once_to_its_end(tmp_path, monkeypatch):
    config = apply(settings(text_corpus(tmp_path, 300), batch_size=1, bptt_steps=1, epochs=2))
    run = loop.Run(config, tmp_path / "r", load(config.data), **QUIET)
    per_epoch, reads, original = run.train_data.count(0), [], run.train_data.batches

    def reading(epoch, start):
        assert start < per_epoch, f"epoch {epoch} read again from batch {start}, past its end"
        reads.append((epoch, start))
        return original(epoch, start)

    monkeypatch.setattr(run.train_data, "batches", reading)
    result = run.train()
    assert per_epoch > 256 and reads == [(0, 0), (1, 0)]
    assert (result["updates"], result["stop_reason"]) == (2 * per_epoch, "epochs")


def test_257_epochs_and_a_patience_of_257_are_reached(tmp_path, rolls, monkeypatch):
    one_batch = settings(rolls, batch_size=12, bptt_steps=100, max_updates=300)  # an epoch: one update
    result = trainer.train(apply({**one_batch, "epochs": 257, "patience": 0}), tmp_path / "epochs", **QUIET)
    assert (result["updates"], result["stop_reason"]) == (257, "epochs")
    scripted_validation(monkeypatch, [5.0 + k for k in range(300)])
    result = trainer.train(
        apply({**one_batch, "epochs": 1000, "patience": 257}), tmp_path / "patience", **QUIET
    )
    assert (result["updates"], result["stop_reason"]) == (258, "early stopping")


def test_a_run_of_257_processes_resumes(tmp_path, wrapped):
    config = apply(settings(text_corpus(tmp_path, 257 * 4), batch_size=1, bptt_steps=2))
    alone = loop.Run(config, tmp_path / "alone", load(config.data), **QUIET)
    state = alone.checkpoint_state()
    state["processes"] = [{"carry": None, "rng": state["rng"]} for _ in range(257)]
    last = loop.Run(config, tmp_path / "r", load(config.data), world=World(256, 257), **QUIET)
    last.resume(state)
    assert last.progress.updates == 0 and wrapped == [{"device_ids": None}]


@pytest.mark.parametrize("short", [0, 1])
def test_training_data_that_gives_fewer_batches_than_it_counts_is_an_error_not_a_hang(
    tmp_path, rolls, monkeypatch, short
):
    """An epoch that ends before its count (none at all, or one batch short) would be read again
    from its last position, which yields nothing, for ever: it is an error naming both numbers."""
    run = loop.Run(apply(settings(rolls, max_updates=100)), tmp_path / "r", load(str(rolls)), **QUIET)
    per_epoch, original, reads = run.train_data.count(0), run.train_data.batches, []

    def short_of_its_count(epoch, start):
        reads.append(start)
        assert len(reads) < 3, f"read again and again from batch {start}: the loop never ends"
        return itertools.islice(original(epoch, start), short)

    monkeypatch.setattr(run.train_data, "batches", short_of_its_count)
    with pytest.raises(RuntimeError, match=f"gave out after batch {short}, before the {per_epoch} batches"):
        run.train()
    assert per_epoch > 1 and reads == [0]
