"""Training: metrics by hand, checkpoints, kill-and-resume, faults (the configuration: test_config.py)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from deeprnn.cli import main
from deeprnn.data import load
from deeprnn.data.batching import MusicBatches, TextBatches
from deeprnn.errors import ConfigError
from deeprnn.io import write_atomic
from deeprnn.models import DeepRNN, ModelConfig
from deeprnn.training import builder, evaluation, loop, trainer
from deeprnn.training.config import apply
from deeprnn.training.metrics import from_nll, metric_name
from deeprnn.training.progress import Progress
from deeprnn.training.run_folder import RunExists

TINY = dict(
    model="dts-rnn",
    data="jsb",
    hidden_size=12,
    transition_sizes=[10],
    batch_size=8,
    bptt_steps=20,
    lr=1.0,
    weight_noise=0.075,
    eval_every=10,
    checkpoint_every=3,
    max_updates=40,
    epochs=100,
    eval_batch_size=32,
    device="cpu",
)


def test_the_summary_of_a_run_s_course():
    course = Progress(epoch=3, updates=40, best_update=30, skipped=2, train_seconds=12.345)
    course.stop_reason = "early stopping"
    assert course.summary() == {
        "best_update": 30,
        "updates": 40,
        "epochs": 3,
        "train_seconds": 12.3,  # to a tenth of a second
        "skipped_updates": 2,
        "stop_reason": "early stopping",
    }


def test_metrics_by_hand():
    assert from_nll("nll", 12.0, 4) == 3.0
    assert from_nll("bpc", 10 * math.log(2), 10) == pytest.approx(1.0)
    assert from_nll("ppl", 5 * math.log(100), 5) == pytest.approx(100.0)
    assert from_nll("ppl", 709.0, 1) == pytest.approx(math.exp(709.0))
    assert from_nll("ppl", 710.0, 1) == from_nll("ppl", math.inf, 1) == math.inf  # exp would overflow
    assert math.isnan(from_nll("ppl", math.nan, 1))
    with pytest.raises(ValueError, match="at least one scored frame or token"):
        from_nll("nll", 1.0, 0)
    with pytest.raises(ValueError, match="unknown metric 'bits'; expected one of nll, bpc, ppl"):
        from_nll("bits", 1.0, 1)
    with pytest.raises(ValueError, match="at least one scored frame or token"):
        from_nll("nll", 1.0, -3)
    with pytest.raises(ValueError, match="unknown metric 'xent'"):  # sorts after every known name
        from_nll("xent", 1.0, 1)
    # the paper's metric per corpus: music NLL per frame, characters BPC, words perplexity
    assert [metric_name("music", "frame"), metric_name("text", "char"), metric_name("text", "word")] == [
        "nll",
        "bpc",
        "ppl",
    ]
    # names as read from a file or a command line (equal strings, other objects than the literals)
    name = "".join
    assert metric_name(name(["te", "xt"]), name(["ch", "ar"])) == "bpc"
    assert from_nll(name(["n", "ll"]), 12.0, 4) == 3.0
    assert from_nll(name(["b", "pc"]), 10 * math.log(2), 10) == pytest.approx(1.0)
    assert from_nll(name(["p", "pl"]), 5 * math.log(100), 5) == pytest.approx(100.0)


class _Constant(DeepRNN):
    """A model whose logits are fixed numbers: the metric can be computed by hand."""

    def __init__(self, logit: float, size: int, head: str) -> None:
        super().__init__(ModelConfig(input_size=size, output_size=size, hidden_size=2, head=head))
        self.logit = logit

    def forward(self, x, hx=None, lengths=None):
        shape = x.shape + (() if x.is_floating_point() else (self.config.output_size,))
        return torch.full(shape, self.logit), torch.zeros(1, x.shape[1], 2)


def test_music_metric_is_total_over_frames_not_mean_of_pieces():
    import numpy as np

    # Two pieces, 1 and 3 frames, 88 keys, p = sigmoid(0) = 1/2 everywhere: every frame costs
    # 88 ln 2 whatever it holds, so NLL/frame = 88 ln 2 with 4 frames counted (padding excluded).
    pieces = [np.ones((1, 88), np.uint8), np.zeros((3, 88), np.uint8)]
    total, count = evaluation.evaluate(
        _Constant(0.0, 88, "bernoulli"), MusicBatches(pieces, 2), torch.device("cpu")
    )
    assert count == 4
    assert total == pytest.approx(4 * 88 * math.log(2), rel=1e-6)
    # With p(on) = sigmoid(ln 3) = 3/4: the 1-frame piece (all on) costs 88 ln(4/3) and each frame
    # of the other 88 ln 4; total / frames, not the mean of the two pieces' means.
    total, count = evaluation.evaluate(
        _Constant(math.log(3), 88, "bernoulli"), MusicBatches(pieces, 2), torch.device("cpu")
    )
    expected = (88 * math.log(4 / 3) + 3 * 88 * math.log(4)) / 4
    assert total / count == pytest.approx(expected, rel=1e-6)


def test_text_metric_counts_every_token_once():
    ids = torch.arange(103) % 7
    total, count = evaluation.evaluate(
        _Constant(0.0, 7, "categorical"), TextBatches(ids, 4, 10, 0), torch.device("cpu")
    )
    assert count == 103
    assert from_nll("ppl", total, count) == pytest.approx(7.0)
    assert from_nll("bpc", total, count) == pytest.approx(math.log2(7))


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def broken(file):
        file.write(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_atomic(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def _train(tmp_path, name, data_root, **overrides):
    config = apply({**TINY, **overrides})
    return trainer.train(config, tmp_path / name, data_dir=str(data_root), log=lambda _: None)


def test_runs_are_repeatable_and_folder_complete(tmp_path, data_root, capsys):
    torch.manual_seed(1234)
    caller = torch.get_rng_state()
    a = _train(tmp_path, "a", data_root)
    assert torch.equal(torch.get_rng_state(), caller)  # the run seeded itself, not its caller
    b = _train(tmp_path, "b", data_root, seed=0)
    assert a["test_nll"] == b["test_nll"]
    assert a["stop_reason"] == "max updates" and a["updates"] == 40
    run = tmp_path / "a"
    for name in (
        "config.json",
        "model.json",
        "metrics.jsonl",
        "results.json",
        "train.log",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (run / name).exists(), name
    assert list((run / "tb").iterdir())
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["update"] for x in lines] == [10, 20, 30, 40]
    assert all(x["metric"] == "nll" for x in lines)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "schedule", "rng", "progress", "config", "version", "carry"} <= set(state)
    capsys.readouterr()
    assert main(["eval", str(run), "--split", "test", "--json", "--data-dir", str(data_root)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert (evaluated["split"], evaluated["metric"]) == ("test", "nll")
    assert evaluated["value"] == pytest.approx(a["test_nll"], abs=1e-9)
    assert main(["eval", str(run), "--split", "valid", "--data-dir", str(data_root)]) == 0
    assert capsys.readouterr().out.startswith(f"{run}: valid nll ")
    assert main(["eval", str(tmp_path / "nothing"), "--data-dir", str(data_root)]) == 2

    # Each piece alone: the pieces add up to the split, and one of them is its own forward pass.
    argv = ["eval", str(run), "--split", "test", "--per-piece", "--json", "--data-dir", str(data_root)]
    assert main(argv) == 0
    pieces = json.loads(capsys.readouterr().out)["pieces"]
    rolls = load("jsb", str(data_root)).splits["test"]
    assert [p["frames"] for p in pieces] == [len(r) for r in rolls]
    assert sum(p["nll"] for p in pieces) == pytest.approx(evaluated["nll"], rel=1e-6)
    model = evaluation.load_best(run, "cpu")[0].eval()
    roll = torch.from_numpy(rolls[3].astype("float32")).unsqueeze(1)
    with torch.no_grad():
        logits, _ = model(torch.cat([torch.zeros_like(roll[:1]), roll[:-1]]))
    by_hand = torch.nn.functional.binary_cross_entropy_with_logits(logits, roll, reduction="sum")
    assert pieces[3]["nll"] == pytest.approx(float(by_hand), rel=1e-5)
    assert main(["eval", str(run), "--per-piece", "--data-dir", str(data_root)]) == 0
    assert "the pieces with the largest share" in capsys.readouterr().out


@pytest.mark.parametrize("scale", [0.1, 1.0])
def test_pretrained_parameters_start_from_the_run_and_train_at_their_scale_of_the_rate(
    tmp_path, data_root, scale
):
    """Layer-wise pretraining: ⊕ comes from the run's best parameters, ▷ starts afresh, and one
    SGD step moves ⊕ by scale × lr × gradient and ▷ by lr × gradient (gradients computed here)."""
    _train(tmp_path, "source", data_root, max_updates=10)
    source = torch.load(tmp_path / "source" / "checkpoints" / "best.pt", weights_only=True)["model"]
    settings = {**TINY, "model": "dots-rnn", "output_sizes": [8], "weight_noise": 0.0, "clip_norm": 0.0}
    config = apply(
        {
            **settings,
            "schedule": "constant",
            "lr": 0.5,
            "pretrained_lr_scale": scale,
            "init_from": str(tmp_path / "source"),
        }
    )
    corpus = load("jsb", str(data_root))
    run = loop.Run(config, tmp_path / "target", corpus, log=lambda _: None)
    start = {k: t.clone() for k, t in run.model.named_parameters()}
    assert run.pretrained == {k for k in start if k.startswith("recurrence.")} and run.pretrained
    for name in run.pretrained:
        torch.testing.assert_close(start[name], source[name], rtol=0, atol=0)
    fresh = loop.Run(apply(settings), tmp_path / "fresh", corpus, log=lambda _: None)
    for name, value in fresh.model.named_parameters():  # ▷ is initialised as without pretraining
        if name not in run.pretrained:
            torch.testing.assert_close(start[name], value.detach(), rtol=0, atol=0)

    batch = next(iter(run.train_data.batches(0, 0)))
    nll, _ = loop.batch_nll(run.model, batch, None)
    grads = torch.autograd.grad(nll / batch.total, list(run.model.parameters()))
    run.update(batch)
    for (name, value), grad in zip(run.model.named_parameters(), grads, strict=True):
        rate = 0.5 * (scale if name in run.pretrained else 1.0)
        torch.testing.assert_close(value.detach(), start[name] - rate * grad, rtol=1e-5, atol=1e-7)


def test_every_epoch_reads_all_its_batches_when_their_number_varies(tmp_path, data_root):
    # With several pieces per batch, an epoch's number of chunks depends on its shuffled grouping.
    done = _train(tmp_path, "epochs", data_root, max_updates=0, epochs=3, eval_every=0, batch_size=16)
    corpus = load("jsb", str(data_root))
    train = builder.batches(apply({**TINY, "batch_size": 16}), corpus, "train", training=True)
    counts = [train.count(e) for e in range(3)]
    assert len(set(counts)) > 1
    assert done["epochs"] == 3 and done["stop_reason"] == "epochs"
    assert done["updates"] == sum(counts)
    lines = [json.loads(x) for x in (tmp_path / "epochs" / "metrics.jsonl").read_text().splitlines()]
    assert [x["update"] for x in lines] == [counts[0], counts[0] + counts[1], sum(counts)]


class _Crash(Exception):
    pass


def _crash_at_update_27(tmp_path, data_root, monkeypatch, **overrides) -> None:
    """Train TINY into tmp_path/crashed and crash it at update 27: between checkpoints (every 3
    updates) and evaluations (every 10), so its last checkpoint is at update 24."""
    original = loop.Run.update
    calls = {"n": 0}

    def crashing(self, batch):
        calls["n"] += 1
        if calls["n"] == 27:
            raise _Crash
        return original(self, batch)

    monkeypatch.setattr(loop.Run, "update", crashing)
    with pytest.raises(_Crash):
        _train(tmp_path, "crashed", data_root, **overrides)
    monkeypatch.setattr(loop.Run, "update", original)


@pytest.mark.parametrize("average_after_epochs", [None, 0])
def test_crash_and_resume_ends_where_an_uninterrupted_run_ends(
    tmp_path, data_root, monkeypatch, average_after_epochs
):
    whole = _train(tmp_path, "whole", data_root, average_after_epochs=average_after_epochs)
    _crash_at_update_27(tmp_path, data_root, monkeypatch, average_after_epochs=average_after_epochs)
    resumed = trainer.train(
        None, tmp_path / "crashed", data_dir=str(data_root), resume=True, log=lambda _: None
    )
    assert resumed["test_nll"] == pytest.approx(whole["test_nll"], abs=1e-6)
    assert resumed["updates"] == whole["updates"]
    lines = (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["update"] for x in lines] == [10, 20, 30, 40]


def test_a_pretrained_run_resumes_without_the_run_it_started_from(tmp_path, data_root, monkeypatch):
    """The checkpoint names what was copied from init_from (its share of the rate), so a resume
    does not read that run again: it ends as the uninterrupted run though the source is gone."""
    _train(tmp_path, "source", data_root, max_updates=10)
    started = {"model": "dots-rnn", "output_sizes": [8], "init_from": str(tmp_path / "source")}
    whole = _train(tmp_path, "whole", data_root, **started)
    _crash_at_update_27(tmp_path, data_root, monkeypatch, **started)
    (tmp_path / "source").rename(tmp_path / "moved")
    resumed = trainer.train(
        None, tmp_path / "crashed", data_dir=str(data_root), resume=True, log=lambda _: None
    )
    assert resumed["test_nll"] == pytest.approx(whole["test_nll"], abs=1e-6)
    last = torch.load(tmp_path / "crashed" / "checkpoints" / "last.pt", weights_only=True)
    assert last["pretrained"] and all(name.startswith("recurrence.") for name in last["pretrained"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_gpu_run_follows_the_cpu_run_and_resumes_exactly_after_a_crash(tmp_path, data_root, monkeypatch):
    # Without weight noise the two devices draw nothing differently: the same curve up to rounding.
    on_cpu = _train(tmp_path, "cpu", data_root, weight_noise=0.0)
    on_gpu = _train(tmp_path, "gpu", data_root, weight_noise=0.0, device="cuda")
    assert on_cpu["device"] == "cpu"
    assert on_gpu["device"].startswith("cuda") and torch.cuda.get_device_name() in on_gpu["device"]
    assert _valid_curve(tmp_path / "gpu") == pytest.approx(_valid_curve(tmp_path / "cpu"), rel=1e-3)
    # With weight noise drawn on the GPU, a resumed run needs the GPU's generator state back.
    whole = _train(tmp_path, "whole", data_root, device="cuda")
    _crash_at_update_27(tmp_path, data_root, monkeypatch, device="cuda")
    resumed = trainer.train(
        None, tmp_path / "crashed", data_dir=str(data_root), resume=True, log=lambda _: None
    )
    assert resumed["test_nll"] == pytest.approx(whole["test_nll"], abs=1e-5)


def test_averaging_keeps_the_mean_of_the_parameters_after_each_update_and_validates_it(
    tmp_path, data_root, monkeypatch
):
    """Two epochs, averaging after one: epoch 0 validates the trained parameters; epoch 1
    validates the plain mean of the parameters after each of its updates, computed here by hand."""
    original = loop.Run.update
    after: list[tuple[int, dict]] = []  # (epoch, parameters) after every update

    def recording(self, batch):
        loss = original(self, batch)
        after.append((self.progress.epoch, {k: t.clone() for k, t in self.model.state_dict().items()}))
        return loss

    monkeypatch.setattr(loop.Run, "update", recording)
    _train(tmp_path, "avg", data_root, max_updates=0, epochs=2, eval_every=0, average_after_epochs=1)
    run = tmp_path / "avg"
    first = [state for epoch, state in after if epoch == 0]
    second = [state for epoch, state in after if epoch == 1]
    assert first and second
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert int(last["averaged"]["n_averaged"]) == len(second)
    mean = {k: torch.stack([s[k] for s in second]).mean(0) for k in second[0]}
    for key, value in mean.items():
        torch.testing.assert_close(last["averaged"][f"module.{key}"], value, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(last["model"][key], value)  # training goes on from the last step
    corpus = load("jsb", str(data_root))
    config = apply({**TINY, "max_updates": 0, "epochs": 2, "eval_every": 0})
    valid = builder.batches(config, corpus, "valid", training=False)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]

    def scored(state):
        model = DeepRNN(ModelConfig(**json.loads((run / "model.json").read_text())))
        model.load_state_dict(state)
        total, count = evaluation.evaluate(model, valid, torch.device("cpu"))
        return total / count

    assert lines[0]["value"] == pytest.approx(scored(first[-1]), abs=1e-5)
    assert lines[1]["value"] == pytest.approx(scored(mean), abs=1e-5)


def test_a_stopped_run_extended_ends_where_a_longer_run_ends(tmp_path, data_root, capsys):
    whole = _train(tmp_path, "whole", data_root)
    short = _train(tmp_path, "short", data_root, max_updates=20)
    assert short["stop_reason"] == "max updates" and short["updates"] == 20
    run = str(tmp_path / "short")
    # Settings other than the limits would change the experiment: refused, the run untouched.
    assert main(["train", "--resume", run, "--set", "lr=0.5", "--data-dir", str(data_root)]) == 2
    assert "only epochs, max_updates, time_budget_s may change" in capsys.readouterr().err
    assert main(["train", "--resume", run, "--set", "max_updates=40", "--data-dir", str(data_root)]) == 0
    longer = json.loads((tmp_path / "short" / "results.json").read_text())
    assert longer["updates"] == 40 and longer["stop_reason"] == "max updates"
    assert longer["test_nll"] == pytest.approx(whole["test_nll"], abs=1e-6)
    lines = (tmp_path / "short" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["update"] for x in lines] == [10, 20, 30, 40]
    assert json.loads((tmp_path / "short" / "config.json").read_text())["max_updates"] == 40


def test_averaging_begins_once_validation_is_worse_than_the_best_before_the_last_n(tmp_path, data_root):
    """AWD-LSTM's trigger, n = 2: found by hand on the curve of a run without averaging, whose
    updates are the same until then; the mean then takes in every later update."""
    often = {"eval_every": 4, "max_updates": 60}
    _train(tmp_path, "plain", data_root, **often)
    plain = [json.loads(x) for x in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    values = [r["value"] for r in plain]
    stalled = next(k for k in range(3, len(values)) if values[k] > min(values[: k - 2]))
    assert 0 < stalled < len(values) - 1  # the trigger fires, and validation goes on after it
    _train(tmp_path, "avg", data_root, average_when_stalled=2, **often)
    curve = _valid_curve(tmp_path / "avg")
    assert curve[: stalled + 1] == pytest.approx(values[: stalled + 1], abs=1e-9)
    assert curve[stalled + 1] != pytest.approx(values[stalled + 1], abs=1e-6)  # the mean is scored
    last = torch.load(tmp_path / "avg" / "checkpoints" / "last.pt", weights_only=True)
    assert int(last["averaged"]["n_averaged"]) == 60 - plain[stalled]["update"]
    assert last["progress"]["averaging"] is True
    assert "parameter averaging begins" in (tmp_path / "avg" / "train.log").read_text()


def test_averaging_added_to_a_finished_run_ends_where_a_run_averaged_from_the_start_ends(
    tmp_path, data_root, monkeypatch, capsys
):
    epochs = {"max_updates": 0, "eval_every": 0}
    whole = _train(tmp_path, "whole", data_root, epochs=3, average_after_epochs=2, **epochs)
    _train(tmp_path, "short", data_root, epochs=2, **epochs)
    run, data = str(tmp_path / "short"), ["--data-dir", str(data_root)]
    # Epochs 0 and 1 were trained without averaging: it cannot begin at either of them.
    assert main(["train", "--resume", run, "--set", "average_after_epochs=1", *data]) == 2
    assert "averaging can only begin at epoch 2 or later" in capsys.readouterr().err
    extend = ["--set", "epochs=3", "--set", "average_after_epochs=2"]
    assert main(["train", "--resume", run, *extend, *data]) == 0
    longer = json.loads((tmp_path / "short" / "results.json").read_text())
    assert (longer["epochs"], longer["updates"]) == (whole["epochs"], whole["updates"])
    assert longer["test_nll"] == pytest.approx(whole["test_nll"], abs=1e-6)
    assert _valid_curve(tmp_path / "short") == pytest.approx(_valid_curve(tmp_path / "whole"), abs=1e-6)
    saved = json.loads((tmp_path / "short" / "config.json").read_text())
    assert (saved["epochs"], saved["average_after_epochs"]) == (3, 2)
    # Once averaging has begun, its start is part of the run.
    later = ["--set", "epochs=4", "--set", "average_after_epochs=3"]
    assert main(["train", "--resume", run, *later, *data]) == 2
    assert "(the run's average_after_epochs is 2)" in capsys.readouterr().err
    # A run interrupted in its first epoch has begun it: averaging can begin at epoch 1 at the earliest.
    _crash_at_update_27(tmp_path, data_root, monkeypatch, max_updates=0, epochs=2)
    crashed = str(tmp_path / "crashed")
    assert main(["train", "--resume", crashed, "--set", "average_after_epochs=0", *data]) == 2
    assert "has begun 1 epoch(s)" in capsys.readouterr().err


def _valid_curve(run) -> list[float]:
    return [json.loads(x)["value"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_an_interrupted_run_resumed_under_a_limit_it_has_passed_ends_at_once(
    tmp_path, data_root, monkeypatch, capsys
):
    _crash_at_update_27(tmp_path, data_root, monkeypatch)
    run = str(tmp_path / "crashed")
    limits = ["--set", "max_updates=20", "--set", "time_budget_s=0.001"]  # both passed: the first is named
    assert main(["train", "--resume", run, *limits, "--data-dir", str(data_root)]) == 0
    assert "already reached its time budget limit" in capsys.readouterr().out
    done = json.loads((tmp_path / "crashed" / "results.json").read_text())
    assert (done["updates"], done["stop_reason"], done["best_update"]) == (24, "time budget", 20)
    lines = (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["update"] for x in lines] == [10, 20]  # nothing trained after the crash


def test_sigkill_and_resume(tmp_path, data_root):
    """A real SIGKILL in the middle of training, then --resume: same test NLL as no kill."""
    settings = {**TINY, "max_updates": 400, "eval_every": 40, "hidden_size": 24}
    sets = [
        arg
        for k, v in settings.items()
        if k not in ("model", "data")
        for arg in ("--set", f"{k}={json.dumps(v) if isinstance(v, list) else v}")
    ]
    base = [
        sys.executable,
        "-m",
        "deeprnn.cli",
        "train",
        "--model",
        "dts-rnn",
        "--data",
        "jsb",
        "--data-dir",
        str(data_root),
        *sets,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run([*base, "--out", str(tmp_path / "whole")], check=True, capture_output=True, env=env)
    proc = subprocess.Popen(
        [*base, "--out", str(tmp_path / "killed")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    # Killed right after its first evaluation (update 40 of 400), past a few checkpoints: on an idle
    # machine the rest takes about a second, so the kill lands well before the end; on one loaded far
    # beyond its cores the wait takes minutes.
    first = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not first.exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "killed" / "checkpoints" / "last.pt").exists(), "no checkpoint to resume from"
    assert not (tmp_path / "killed" / "results.json").exists(), "the run ended before the kill"
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "deeprnn.cli",
            "train",
            "--resume",
            str(tmp_path / "killed"),
            "--data-dir",
            str(data_root),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    a = json.loads((tmp_path / "whole" / "results.json").read_text())["test_nll"]
    b = json.loads((tmp_path / "killed" / "results.json").read_text())["test_nll"]
    assert b == pytest.approx(a, abs=1e-6), resumed.stdout


def test_existing_run_is_not_overwritten(tmp_path, data_root, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "precious.txt").write_text("keep me")
    argv = ["train", "--model", "rnn", "--data", "jsb", "--out", str(run), "--data-dir", str(data_root)]
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert (run / "precious.txt").read_text() == "keep me"


def test_nonfinite_updates_are_skipped_then_the_good_state_restored(tmp_path, data_root, monkeypatch):
    original = loop.batch_nll
    calls = {"n": 0}

    def poisoned(model, batch, state, net=None):
        nll, state = original(model, batch, state, net)
        calls["n"] += model.training
        if model.training and 12 <= calls["n"] < 16:  # four bad updates in a row
            nll = nll * float("nan")
        return nll, state

    monkeypatch.setattr(loop, "batch_nll", poisoned)
    result = _train(tmp_path, "nan", data_root, max_updates=30, schedule="constant")
    assert result["skipped_updates"] == 4
    assert math.isfinite(result["test_nll"])
    state = torch.load(tmp_path / "nan" / "checkpoints" / "last.pt", weights_only=True)
    assert state["progress"]["restores"] == 1
    assert state["schedule"]["factor"] == 0.5
    for p in state["model"].values():
        assert torch.isfinite(p).all()


@pytest.mark.parametrize(
    "variant",
    [{"transition_sizes": [8]}, {"transition_sizes": [10], "tie_weights": True, "average_after_epochs": 0}],
    ids=["untied", "tied-averaged"],  # tied: the embedding is ▷'s softmax, averaged by a copy of the model
)
def test_text_run_crash_and_resume_carries_the_state(tmp_path, monkeypatch, text_corpus, variant):
    corpus = text_corpus(train=30)
    settings = {
        "model": "dts-rnn",
        "data": str(corpus),
        "hidden_size": 10,
        **variant,
        "batch_size": 3,
        "bptt_steps": 7,
        "max_updates": 40,
        "eval_every": 15,
        "checkpoint_every": 4,
        "weight_noise": 0.05,
        "schedule": "halve",
        "device": "cpu",
    }
    whole = trainer.train(apply(settings), tmp_path / "whole", log=lambda _: None)
    assert whole["metric"] == "ppl" and whole["scores"]["test"]["count"] == 2 * 14
    original = loop.Run.update
    calls = {"n": 0}

    def crashing(self, batch):
        calls["n"] += 1
        if calls["n"] == 22:
            raise _Crash
        return original(self, batch)

    monkeypatch.setattr(loop.Run, "update", crashing)
    with pytest.raises(_Crash):
        trainer.train(apply(settings), tmp_path / "crashed", log=lambda _: None)
    monkeypatch.setattr(loop.Run, "update", original)
    resumed = trainer.train(None, tmp_path / "crashed", resume=True, log=lambda _: None)
    assert resumed["test_ppl"] == pytest.approx(whole["test_ppl"], rel=1e-6)
    if variant.get("tie_weights"):  # the run's model loads with its softmax still the embedding
        model = DeepRNN.from_run(tmp_path / "crashed")
        assert model.output.logits.weight.data_ptr() == model.recurrence.levels[0].input.weight.data_ptr()


def test_per_piece_scores_refuse_a_text_run(tmp_path, capsys):
    corpus = tmp_path / "text"
    corpus.mkdir()
    for split in ("train", "valid", "test"):
        (corpus / f"{split}.txt").write_text("the cat sat on the mat\na dog sat on the log\n" * 3)
    sets = ["hidden_size=8", "max_updates=2", "eval_every=2", "batch_size=2", "bptt_steps=5", "device=cpu"]
    argv = ["train", "--model", "rnn", "--data", str(corpus), "--out", str(tmp_path / "run")]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--per-piece"]) == 2
    assert "per-piece scores and scores from the second frame are for music runs" in capsys.readouterr().err


def test_training_from_python_takes_your_own_model_and_a_callback(tmp_path, rolls):
    """deeprnn.train: settings as a dict, a DeepRNN built by hand (trained as it is, and rebuilt
    from model.json on resume), a callback that sees each validation and can stop the run."""
    import deeprnn

    quiet = lambda _: None  # noqa: E731
    settings = {"data": str(rolls), "batch_size": 3, "bptt_steps": 10, "eval_every": 2, "device": "cpu"}
    config = ModelConfig(input_size=88, output_size=88, hidden_size=7, levels=2, transition_sizes=(5,),
                         shortcut=True, transition_units="tanh", output_sizes=(4,))  # fmt: skip
    torch.manual_seed(3)
    model = DeepRNN(config)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    def stop_at_the_second(record):
        seen.append(record)
        return len(seen) == 2

    results = deeprnn.train(
        {**settings, "max_updates": 20}, tmp_path / "own", model=model, callback=stop_at_the_second, log=quiet
    )
    assert results["stop_reason"] == "callback" and results["updates"] == 4
    assert (tmp_path / "own" / "train.log").read_text().startswith(f"a model of your own on {rolls.stem}: ")
    ended = deeprnn.train(None, tmp_path / "own", model=model, resume=True, log=quiet)  # nothing to do
    assert (ended["stop_reason"], ended["updates"]) == ("callback", 4)
    assert [r["update"] for r in seen] == [2, 4] and all(r["metric"] == "nll" for r in seen)
    assert json.loads((tmp_path / "own" / "model.json").read_text()) == json.loads(
        json.dumps(config.to_dict())
    )
    assert any(not torch.equal(start[k], v) for k, v in model.state_dict().items())  # it trained this model
    best = deeprnn.load_run(tmp_path / "own")
    assert best.config == config and not best.training
    saved = torch.load(tmp_path / "own" / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(saved[k], v) for k, v in best.state_dict().items())
    # a run cut by its limit, resumed with a higher one: the same architecture, from model.json
    deeprnn.train({**settings, "max_updates": 4}, tmp_path / "limit", model=DeepRNN(config), log=quiet)
    extended = trainer.train(None, tmp_path / "limit", resume=True, limits={"max_updates": 8}, log=quiet)
    assert extended["updates"] == 8 and evaluation.load_best(tmp_path / "limit")[0].config == config
    with pytest.raises(ConfigError, match="reads 50 and predicts 50 symbols; tiny has 88"):
        deeprnn.train(settings, tmp_path / "bad", model=DeepRNN(ModelConfig(50, 50, 4)))
    with pytest.raises(ConfigError, match="architecture settings \\(levels\\) would be ignored"):
        deeprnn.train({**settings, "levels": 2}, tmp_path / "bad", model=DeepRNN(config))
    with pytest.raises(ConfigError, match="without batch_first"):
        deeprnn.train(settings, tmp_path / "bad", model=DeepRNN(config, batch_first=True))
    assert json.loads((tmp_path / "own" / "results.json").read_text())["model"] == "custom"


def test_training_from_python_makes_the_folders_and_never_replaces_a_run_unasked(tmp_path, rolls):
    """train()'s options are keywords; a new run makes its folder and those above it; a second
    run into the same folder is refused unless ``force`` is given (as --force)."""
    settings = {"data": str(rolls), "hidden_size": 6, "max_updates": 2, "device": "cpu"}
    out = tmp_path / "a" / "b" / "run"
    first = trainer.train(settings, out, log=lambda _: None)
    assert first["updates"] == 2 and (out / "results.json").exists()
    opening = (out / "train.log").read_text().splitlines()[0]
    weights, params = f"{first['weights']:,}", f"{first['params']:,}"
    assert opening == f"dts-rnn on {rolls.stem}: {weights} weights, {params} parameters, device cpu"
    with pytest.raises(RunExists, match="already holds a run; use --resume to continue it or --force"):
        trainer.train(settings, out, log=lambda _: None)
    again = trainer.train({**settings, "max_updates": 3}, out, force=True, log=lambda _: None)
    assert again["updates"] == 3
    with pytest.raises(TypeError, match="positional"):
        trainer.train(settings, tmp_path / "other", None)  # model= must be named


def test_averaging_added_on_resume_only_from_an_epoch_not_begun(tmp_path, rolls):
    """A run stopped after the first batch of epoch 0 has begun that epoch: averaging from epoch 0
    is refused. A run with no checkpoint yet has begun none: it is taken."""
    quiet = lambda _: None  # noqa: E731
    settings = {"data": str(rolls), "hidden_size": 6, "batch_size": 3, "max_updates": 1, "device": "cpu"}
    begun = tmp_path / "begun"
    trainer.train(settings, begun, log=quiet)  # 4 batches an epoch: stopped at epoch 0, batch 1
    with pytest.raises(ConfigError, match="the run has begun 1 epoch"):
        trainer.train(
            None, begun, resume=True, limits={"max_updates": 2, "average_after_epochs": 0}, log=quiet
        )
    fresh = tmp_path / "fresh"
    trainer.train(settings, fresh, log=quiet)
    shutil.rmtree(fresh / "checkpoints")
    (fresh / "results.json").unlink()  # as if stopped before its first checkpoint
    again = trainer.train(
        None, fresh, resume=True, limits={"max_updates": 2, "average_after_epochs": 0}, log=quiet
    )
    assert again["updates"] == 2
