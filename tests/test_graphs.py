"""CUDA graphs of training segments (deeprnn.training.graphs). What they do to a run (static
buffers, padding to bptt_steps, the carried state, shared gradient buffers) is checked on the CPU
with a stand-in for the capture that replays by running the segment again on the same buffers;
the capture itself needs a GPU (the last test)."""

from __future__ import annotations

import json

import pytest
import torch
from test_training import TINY, _train

from deeprnn.data.batching import Batch
from deeprnn.errors import ConfigError
from deeprnn.models import DeepRNN, ModelConfig
from deeprnn.training import graphs, loop, trainer
from deeprnn.training.config import apply

QUIET = dict(weight_noise=0.0)  # the warm-up draws no noise of its own: same curve as eager


@pytest.fixture
def replays(monkeypatch) -> list[tuple]:
    """Graphs on the CPU: the capture runs the segment once (the warm-up) and its replay runs
    it again on the static buffers. Returns the shapes replayed, one entry a replay."""
    done: list[tuple] = []

    def capture(segment):
        segment()
        return segment

    def run(self, batch, state, scale, original=graphs.SegmentGraphs.run):
        result = original(self, batch, state, scale)
        if result is not None:
            done.append(tuple(batch.inputs.shape))
        return result

    monkeypatch.setattr(graphs, "capture", capture)
    monkeypatch.setattr(loop, "check_possible", lambda device, distributed: None)
    monkeypatch.setattr(graphs.SegmentGraphs, "run", run)
    return done


def _curve(folder) -> list[float]:
    return [json.loads(line)["value"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_a_graphed_music_run_follows_the_eager_run(tmp_path, data_root, replays):
    """Music segments of up to 20 steps, padded to 20 with their lengths, the state carried
    within a piece: the same curve and test score as without graphs."""
    eager = _train(tmp_path, "eager", data_root, **QUIET)
    assert not replays
    graphed = _train(tmp_path, "graphed", data_root, **QUIET, cuda_graphs=True)
    assert len(replays) == graphed["updates"] == 40
    assert any(shape[0] < TINY["bptt_steps"] for shape in replays)  # some were padded
    assert _curve(tmp_path / "graphed") == pytest.approx(_curve(tmp_path / "eager"), rel=1e-6)
    assert graphed["test_nll"] == pytest.approx(eager["test_nll"], rel=1e-6)


def test_a_graphed_run_with_noise_and_dropout_draws_what_the_eager_run_draws(tmp_path, data_root, replays):
    """The warm-up and the capture run the segment without using up the run's random numbers or
    moving its weights (noise added and taken away rounds): the replays draw the eager run's
    weight noise and dropout masks from the same weights, so the curves are the same to the bit,
    not only alike in distribution."""
    settings = dict(weight_noise=0.075, state_dropout=0.2)
    eager = _train(tmp_path, "eager", data_root, **settings)
    graphed = _train(tmp_path, "graphed", data_root, **settings, cuda_graphs=True)
    assert len(replays) == graphed["updates"] == 40
    assert _curve(tmp_path / "graphed") == _curve(tmp_path / "eager")  # to the last bit
    assert graphed["test_nll"] == eager["test_nll"]


def test_a_graphed_text_run_carries_its_state_as_the_eager_run(tmp_path, replays, text_corpus):
    corpus = text_corpus()
    settings = dict(model="dts-rnn", data=str(corpus), hidden_size=10, transition_sizes=[8], batch_size=3)
    settings.update(bptt_steps=7, max_updates=30, eval_every=10, schedule="halve", device="cpu")
    eager = trainer.train(apply(settings), tmp_path / "eager", log=lambda _: None)
    graphed = trainer.train(
        apply({**settings, "cuda_graphs": True}), tmp_path / "graphed", log=lambda _: None
    )
    assert len(replays) == 30 and {shape[0] for shape in replays} > {7}  # an epoch ends shorter
    assert graphed["test_ppl"] == pytest.approx(eager["test_ppl"], rel=1e-6)
    assert _curve(tmp_path / "graphed") == pytest.approx(_curve(tmp_path / "eager"), rel=1e-6)


def test_by_default_graphs_are_used_wherever_they_are_known_to_run():
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    paper = DeepRNN(ModelConfig(input_size=5, output_size=5, hidden_size=4, transition_sizes=(3,)))
    nade = DeepRNN(ModelConfig(input_size=5, output_size=5, hidden_size=4, head="nade"))
    highway = DeepRNN(ModelConfig(input_size=5, output_size=5, hidden_size=4, transition_kind="highway"))
    assert graphs.graphs_wanted(None, gpu, distributed=False, model=paper)
    assert not graphs.graphs_wanted(None, cpu, distributed=False, model=paper)
    assert not graphs.graphs_wanted(None, gpu, distributed=True, model=paper)
    assert not graphs.graphs_wanted(None, gpu, distributed=False, model=nade)
    assert not graphs.graphs_wanted(None, gpu, distributed=False, model=highway)  # not the paper's ⊕
    # asked for, they are wanted (and refused by check_possible where they cannot run); refused, never
    assert graphs.graphs_wanted(True, cpu, distributed=True, model=highway)
    assert not graphs.graphs_wanted(False, gpu, distributed=False, model=paper)


def test_a_run_left_to_the_default_on_the_cpu_trains_eagerly(tmp_path, data_root, replays):
    _train(tmp_path, "a", data_root, weight_noise=0.0)
    assert not replays


def test_graphs_are_refused_where_they_cannot_run(tmp_path, data_root):
    with pytest.raises(ConfigError, match="cuda_graphs needs a CUDA device; this run is on cpu"):
        _train(tmp_path, "a", data_root, cuda_graphs=True)
    with pytest.raises(ConfigError, match="cuda_graphs: not under torchrun"):
        graphs.check_possible(torch.device("cuda"), distributed=True)
    graphs.check_possible(torch.device("cuda"), distributed=False)


def test_a_nade_head_is_refused(tmp_path, data_root, replays):
    with pytest.raises(ConfigError, match="a NADE head's shapes follow each frame's notes"):
        _train(tmp_path, "a", data_root, head="nade", cuda_graphs=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graphs_give_the_eager_run_s_curve_on_a_gpu(tmp_path, data_root, precision, monkeypatch):
    """The goal of README "Speed": replayed graphs, results within 1e-5 of the eager path, weight
    noise and dropout drawn as the eager run draws them."""
    replayed: list[bool] = []

    def run(self, batch, state, scale, original=graphs.SegmentGraphs.run):
        result = original(self, batch, state, scale)
        replayed.append(result is not None)
        return result

    monkeypatch.setattr(graphs.SegmentGraphs, "run", run)
    settings = {"weight_noise": 0.075, "state_dropout": 0.2, "device": "cuda", "precision": precision}
    eager = _train(tmp_path, "eager", data_root, **settings, cuda_graphs=False)
    assert not replayed
    logged: list[str] = []
    config = apply({**TINY, **settings})  # cuda_graphs left to its default: wherever they can run
    graphed = trainer.train(config, tmp_path / "graphed", data_dir=str(data_root), log=logged.append)
    assert not [line for line in logged if "cuda_graphs" in line]  # every capture succeeded
    assert len(replayed) == graphed["updates"] and all(replayed)  # every segment was replayed
    assert _curve(tmp_path / "graphed") == pytest.approx(_curve(tmp_path / "eager"), rel=1e-5)
    assert graphed["test_nll"] == pytest.approx(eager["test_nll"], rel=1e-5)


def _tiny_text_model() -> DeepRNN:
    return DeepRNN(ModelConfig(input_size=5, output_size=5, hidden_size=4, head="categorical"))


def _text_batch(ids: list[list[int]]) -> Batch:
    inputs = torch.tensor(ids)
    return Batch(inputs, inputs.clone(), None, True, inputs.numel(), inputs.numel())


def test_token_ids_are_checked_before_a_replay(replays):
    """A replay checks nothing (a bad id would end the CUDA context): the ids are checked first."""
    model = _tiny_text_model()
    segments = graphs.SegmentGraphs(lambda batch, state, scale: (torch.zeros(()), state), model, 4, print)
    with pytest.raises(ValueError, match="token ids must lie in"):
        segments.run(_text_batch([[0, 1], [5, 2]]), None, 1.0)


def test_a_capture_leaves_the_parameters_as_it_found_them(monkeypatch):
    """The warm-up runs the segment for real: whatever it does to the weights (noise added and
    taken away rounds) is undone, so the first replay starts from the eager run's weights."""
    monkeypatch.setattr(graphs, "capture", lambda segment: (segment(), segment)[1])
    model = _tiny_text_model()
    before = [p.detach().clone() for p in model.parameters()]

    def drifting(batch, state, scale):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1e-3)
        return torch.zeros(()), state

    segments = graphs.SegmentGraphs(drifting, model, 4, print)
    batch = _text_batch([[0, 1], [2, 3]])
    assert segments._capture(batch, segments.zeros(2)) is not None
    assert all(torch.equal(p, kept) for p, kept in zip(model.parameters(), before, strict=True))


def test_a_failed_capture_leaves_the_run_eager(monkeypatch):
    def failing(segment):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs, "capture", failing)
    logged: list[str] = []
    segments = graphs.SegmentGraphs(lambda *a: None, _tiny_text_model(), 4, logged.append)
    batch = _text_batch([[0, 1], [2, 3]])
    assert segments.run(batch, None, 1.0) is None and segments.failed
    assert logged == [
        "cuda_graphs: capturing a batch of shape (2, 2) failed (operation not permitted when stream is "
        "capturing); the run goes on without graphs (restart it to free what the capture held)"
    ]
    monkeypatch.setattr(graphs, "capture", lambda segment: pytest.fail("captured again"))
    assert segments.run(_text_batch([[0], [1]]), None, 1.0) is None  # another shape: eager too
