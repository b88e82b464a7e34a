"""Scoring checked by hand: each piece run alone through the model and its NLL summed from the
Bernoulli (or softmax) formula, against what the batched, padded, masked evaluation reports."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deeprnn import published
from deeprnn.cli import main
from deeprnn.data import load
from deeprnn.data.batching import MusicBatches
from deeprnn.errors import ConfigError
from deeprnn.models import DeepRNN, ModelConfig
from deeprnn.published import Published
from deeprnn.training.evaluation import evaluate, evaluate_run, load_best, load_run, piece_scores

CPU = torch.device("cpu")
LENGTHS = (5, 1, 0, 3, 4)  # a one-frame piece and an empty one among them


@pytest.fixture(scope="module")
def model_and_pieces():
    torch.manual_seed(0)
    model = DeepRNN(ModelConfig(input_size=88, output_size=88, hidden_size=5, transition_sizes=(4,)))
    rng = np.random.default_rng(0)
    pieces = [(rng.random((n, 88)) < 0.1).astype(np.uint8) for n in LENGTHS]
    return model, pieces


def frame_nlls(model: DeepRNN, piece: np.ndarray) -> torch.Tensor:
    """The NLL of each frame of a piece run alone from a zero state, its first input silent:
    -sum_k [v_k log s(z_k) + (1 - v_k) log(1 - s(z_k))], in float64."""
    v = torch.from_numpy(piece.astype(np.float64))
    inputs = torch.cat([torch.zeros(1, 88, dtype=torch.float64), v[:-1]])[:, None].float()
    with torch.no_grad():
        z = model(inputs)[0][:, 0].double()
    p = 1 / (1 + torch.exp(-z))
    return -(v * torch.log(p) + (1 - v) * torch.log(1 - p)).sum(-1)


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_every_frame_and_from_the_second_frame_by_hand(model_and_pieces, batch):
    """Batch 1 (no padding, the empty piece a batch of no steps), 2 and 5 (padding, columns
    with one frame and with none): totals and counts of both conventions."""
    model, pieces = model_and_pieces
    nlls = [frame_nlls(model, p) for p in pieces]
    total, count = evaluate(model, MusicBatches(pieces, batch), CPU)
    assert count == sum(LENGTHS) == 13
    assert total == pytest.approx(float(sum(n.sum() for n in nlls)), rel=1e-5)
    total, count = evaluate(model, MusicBatches(pieces, batch), CPU, from_second=True)
    assert count == sum(max(n - 1, 0) for n in LENGTHS) == 9  # the sum of T - 1 over pieces with frames
    assert total == pytest.approx(float(sum(n[1:].sum() for n in nlls)), rel=1e-5)


@pytest.mark.parametrize("batch", [1, 2, 16])
def test_each_piece_alone_by_hand(model_and_pieces, batch):
    """Pieces scored together (2: three batches, padded; 16: one) give each its own NLL."""
    model, pieces = model_and_pieces
    scores = piece_scores(model, pieces, CPU, names=[f"p{n}" for n in LENGTHS], batch=batch)
    assert [s["piece"] for s in scores] == [0, 1, 2, 3, 4]
    assert [s["name"] for s in scores] == ["p5", "p1", "p0", "p3", "p4"]
    assert [s["frames"] for s in scores] == list(LENGTHS)
    for score, piece in zip(scores, pieces, strict=True):
        expected = float(frame_nlls(model, piece).sum())
        assert score["nll"] == pytest.approx(expected, rel=1e-5, abs=1e-9)
        if len(piece):
            assert score["nll_per_frame"] == pytest.approx(expected / len(piece), rel=1e-5)
    assert scores[2]["nll"] == 0 and scores[2]["nll_per_frame"] is None  # the empty piece
    assert piece_scores(model, pieces, CPU)[0]["name"] is None
    later = piece_scores(model, pieces, CPU, from_second=True, batch=batch)  # as the split's score then
    assert [s["frames"] for s in later] == [max(n - 1, 0) for n in LENGTHS]
    assert [s["nll_per_frame"] is None for s in later] == [n < 2 for n in LENGTHS]
    for score, piece in zip(later, pieces, strict=True):
        assert score["nll"] == pytest.approx(float(frame_nlls(model, piece)[1:].sum()), rel=1e-5, abs=1e-9)
    _, count = evaluate(model, MusicBatches(pieces, batch), CPU, from_second=True)
    assert sum(s["frames"] for s in later) == count


def test_evaluation_builds_no_graph_and_gives_back_the_mode(model_and_pieces):
    model, pieces = model_and_pieces
    seen = []
    hook = model.register_forward_hook(lambda m, i, o: seen.append((torch.is_grad_enabled(), m.training)))
    try:
        for mode in (True, False):
            model.train(mode)
            evaluate(model, MusicBatches(pieces, 2), CPU)
            assert model.training is mode
    finally:
        hook.remove()
        model.eval()
    assert seen and set(seen) == {(False, False)}  # no autograd graph, dropout off


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    corpus = root / "text"
    corpus.mkdir()
    lines = "the cat sat on the mat\na dog sat on the log\n"
    for split in ("train", "valid", "test"):
        (corpus / f"{split}.txt").write_text(lines * (3 if split != "test" else 4))
    sets = ["hidden_size=8", "max_updates=4", "eval_every=2", "batch_size=2", "bptt_steps=5", "device=cpu"]
    sets += ["eval_batch_size=4", "text_level=char"]
    argv = ["train", "--model", "dts-rnn", "--data", str(corpus), "--out", str(root / "run")]
    assert main([*argv, *(a for s in sets for a in ("--set", s))]) == 0
    return root / "run", corpus


def test_a_text_split_is_scored_as_one_stream_by_hand(text_run):
    """Training validates text in ``eval_batch_size`` columns; the final scores read the whole
    stream in one, the state carried throughout: the softmax NLL of each token given all before."""
    run, folder = text_run
    result = evaluate_run(run, "test")
    corpus = load(str(folder), text_level="char")
    ids = corpus.splits["test"]
    inputs = torch.cat([ids.new_tensor([corpus.boundary]), ids[:-1]])[:, None]
    with torch.no_grad():
        logits = load_run(run)(inputs)[0][:, 0].double()
    nll = torch.logsumexp(logits, -1) - logits.gather(1, ids[:, None]).squeeze(1)
    assert result["count"] == len(ids)
    assert result["nll"] == pytest.approx(float(nll.sum()), rel=1e-5)
    assert result["metric"] == "bpc"
    assert result["value"] == pytest.approx(float(nll.mean()) / math.log(2), rel=1e-5)
    assert result["scored_from"] == "first frame" and "pieces" not in result


def test_a_music_run_scored_both_ways_and_per_piece(tmp_path, rolls):
    import deeprnn

    settings = {"data": str(rolls), "hidden_size": 6, "max_updates": 2, "eval_every": 2, "device": "cpu"}
    deeprnn.train(settings, tmp_path / "run", log=lambda _: None)
    plain = evaluate_run(tmp_path / "run", "valid")
    assert plain["scored_from"] == "first frame" and "pieces" not in plain
    later = evaluate_run(tmp_path / "run", "valid", from_second=True, per_piece=True)
    assert later["scored_from"] == "second frame"
    assert later["count"] == plain["count"] - 3  # three pieces in the valid split, each one frame fewer
    # the pieces as the split: from the second frame, so that their shares of its NLL add up to 1
    assert len(later["pieces"]) == 3 and sum(p["frames"] for p in later["pieces"]) == later["count"]
    assert sum(p["nll"] for p in later["pieces"]) == pytest.approx(later["nll"], rel=1e-5)
    with pytest.raises(TypeError):  # the options are keyword-only: a positional True cannot be mistaken
        evaluate_run(tmp_path / "run", "valid", None, None, True)
    with pytest.raises(ConfigError, match="split must be train, valid or test; got 'dev'"):
        evaluate_run(tmp_path / "run", "dev")


def test_a_run_loaded_into_a_model_it_does_not_fit_says_so(tmp_path, rolls):
    import deeprnn

    settings = {"data": str(rolls), "hidden_size": 6, "max_updates": 2, "eval_every": 2, "device": "cpu"}
    deeprnn.train(settings, tmp_path / "run", log=lambda _: None)
    other = DeepRNN(ModelConfig(input_size=88, output_size=88, hidden_size=7))
    with pytest.raises(ConfigError) as caught:
        load_run(tmp_path / "run", model=other)
    message = str(caught.value)
    assert "its parameters do not fit the model (Error(s) in loading state_dict for DeepRNN:)" in message
    assert "load_run(folder, model=...)" in message


def test_published_weights_load_on_the_cpu_and_build_their_own_model(monkeypatch):
    name = published.available()[0]
    with pytest.raises(ConfigError, match=f"pretrained {name} builds its own model; pass no model"):
        load_best(Published(name), model=DeepRNN(ModelConfig(input_size=88, output_size=88, hidden_size=3)))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU present: still the CPU by default
    model, config, update = load_best(Published(name))
    assert next(model.parameters()).device == CPU and update > 0 and config.data
