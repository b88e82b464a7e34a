"""``deeprnn bench``: the JSON layout and sane ratios (speed itself is measured, never asserted)."""

from __future__ import annotations

import importlib.util
import json
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from deeprnn import memory
from deeprnn.bench import bench_model, format_row, loop_weights, multiplied_weights, run_case
from deeprnn.cli import main
from deeprnn.models import count_parameters
from deeprnn.operators.projection import Projection


@pytest.mark.parametrize(
    ("name", "levels", "in_loop"),
    [
        ("rnn", 1, 1),
        ("dt-rnn", 1, 2),
        ("dts-rnn", 1, 3),
        ("dots-rnn", 1, 3),
        ("srnn", 2, 2),
        ("dots-rnn*", 1, 6),
    ],
)
def test_the_loop_parity_counts_the_matrices_each_step_reads(name, levels, in_loop):
    """In the loop a step multiplies h_{t-1} (and, in a deep transition, the layers between) by
    H × H matrices (every width H): DT-RNN reads W_h and the layer's, DT(S)-RNN both layers'
    shortcuts too, DOT(S)-RNN* the same with two pieces per L_p unit, sRNN one per level;
    nn.RNN reads W_hh of each level, its W_ih and every output matrix applied to all steps at
    once, before or after the loop."""
    h = 24
    case = run_case(name, 2, 3, h, "eval", torch.device("cpu"), 0.01)
    assert loop_weights(bench_model(name, h)) == in_loop * h * h
    assert case["loop_parity"] == round(levels / in_loop, 3)


def test_bench_json_layout(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = [
        "bench",
        "--quick",
        "--models",
        "rnn",
        "DT(S)-RNN",
        "--modes",
        "train",
        "eval",
        "--tasks",
        "music",
        "--seconds",
        "0.05",
        "--json",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert {"torch", "threads", "device", "cpu"} <= set(printed["machine"])
    cases = printed["cases"]
    assert {(c["model"], c["mode"]) for c in cases} == {
        ("rnn", "train"),
        ("rnn", "eval"),
        ("dts-rnn", "train"),
        ("dts-rnn", "eval"),
    }
    for c in cases:
        assert {"task", "model", "batch", "steps", "hidden", "mode", "ratio", "flop_parity"} <= set(c)
        assert c["ratio"] > 0 and c["ours_ms"] > 0 and c["baseline_ms"] > 0
        assert (c["batch"], c["steps"], c["hidden"]) == (8, 20, 64)
    dts = next(c for c in cases if c["model"] == "dts-rnn")
    # FLOP parity: nn.RNN(88, H) + Linear(H, 88) weights over ours, every width H.
    h = 64
    assert dts["flop_parity"] == round((88 * h + h * h + h * 88) / (2 * 88 * h + 3 * h * h + h * 88), 3)
    assert count_parameters(bench_model("dts-rnn", h))["weights"] == 2 * 88 * h + 3 * h * h + h * 88


def test_sampling_draws_one_sequence_of_each_length_at_batch_one(capsys, monkeypatch):
    """``--modes sample`` times sample() against nn.RNN run a step at a time: one case per
    length at B=1, whatever the shapes' batches, with the FLOP parity of the other modes."""
    from deeprnn import bench

    monkeypatch.setattr(bench, "SHAPES", ((3, 6), (1, 6), (2, 4)))
    argv = ["bench", "--models", "rnn", "dts-rnn-nade", "--tasks", "music", "--hidden", "16"]
    assert main([*argv, "--modes", "sample", "eval", "--seconds", "0.01", "--json"]) == 0
    cases = json.loads(capsys.readouterr().out)["cases"]
    drawn = [(c["model"], c["batch"], c["steps"]) for c in cases if c["mode"] == "sample"]
    assert drawn == [("rnn", 1, 6), ("dts-rnn-nade", 1, 6), ("rnn", 1, 4), ("dts-rnn-nade", 1, 4)]
    parity = {(c["model"], c["mode"]): c["flop_parity"] for c in cases}
    assert parity[("rnn", "sample")] == parity[("rnn", "eval")] == 1.0
    assert parity[("dts-rnn-nade", "sample")] == parity[("dts-rnn-nade", "eval")]


def test_the_penn_treebank_shapes_count_no_embedding_as_a_product(capsys):
    """Text cases read token ids: the baseline is an embedding, nn.RNN(H, H) and a softmax over
    the vocabulary; an embedding is a lookup, so neither side's counts toward the FLOP parity."""
    argv = ["bench", "--quick", "--models", "rnn", "dts-rnn", "--modes", "train", "--seconds", "0.02"]
    assert main([*argv, "--tasks", "ptb-char", "ptb-word", "--json"]) == 0
    cases = {(c["task"], c["model"]): c for c in json.loads(capsys.readouterr().out)["cases"]}
    assert set(cases) == {(t, m) for t in ("ptb-char", "ptb-word") for m in ("rnn", "dts-rnn")}
    h = 64
    for task, size in (("ptb-char", 50), ("ptb-word", 10_000)):
        baseline = h * h + h * h + h * size  # W_ih, W_hh, the output
        assert cases[(task, "rnn")]["flop_parity"] == round(baseline / (h * h + h * size), 3)
        # DT(S)-RNN: h_{t-1} into both layers (2 H²), the layer between (H²), the output
        assert cases[(task, "dts-rnn")]["flop_parity"] == round(baseline / (3 * h * h + h * size), 3)
        model = bench_model("dts-rnn", h, task)
        assert (
            count_parameters(model)["weights"] - multiplied_weights(model) == size * 2 * h
        )  # U, read per token


@pytest.mark.parametrize("name", ["rnn", "dts-rnn", "srnn", "dots-rnn", "dots-rnn*"])
def test_a_training_step_saves_each_activation_once_and_nothing_more(name):
    """Bytes autograd keeps for the backward pass, against the arithmetic (float32, B sequences
    of T frames, every width H): the hand-written BPTT keeps its states and what its derivatives
    need, each once, and nothing grows with T but the O(T·B·H) activations."""
    batch, hidden, keys = 4, 32, 88
    for steps in (10, 20):
        torch.manual_seed(0)
        model = bench_model(name, hidden)
        x = torch.rand(steps, batch, keys).bernoulli_(0.05)
        saved = memory.saved_for_backward(
            lambda m=model, x=x: m.head.nll(m(x)[0], x).mean().backward(), model
        )
        step = steps * batch * hidden  # one (T, B, H) tensor
        states = (steps + 1) * batch * hidden  # h_0 … h_T of a level
        frames = 2 * steps * batch * keys  # the input frames (read by U) and the logits (by the loss)
        expected = {
            "rnn": states + frames,
            "dts-rnn": states + step + frames,  # + the layer inside ⊕
            "srnn": 2 * states + frames,  # level 2 reads level 1's states: the same storage
            "dots-rnn": states + step + step + frames,  # + ▷'s hidden layer (sigmoid: its output)
            # L_p in ⊕: both layers' pre-activations and powers x^p (2 pieces each); ▷'s maxout:
            # the piece of each unit's maximum (int64: two float32's worth), then dropout's
            # output (read by the logits) and its (B, H) mask; the loop's piece-major copies of
            # the two matrices of ⊕ (2·2H × H, 2H × H)
            "dots-rnn*": states
            + step
            + 2 * 2 * 2 * step
            + 2 * step
            + step
            + batch * hidden
            + frames
            + (2 * 2 * hidden * hidden + 2 * hidden * hidden),
        }[name]
        assert saved == 4 * expected, (steps, saved // 4, expected)


def test_the_peak_counts_what_is_alive_at_once():
    def step():
        first = torch.ones(1_000_000)  # 4 MB
        second = torch.ones(2_000_000)  # 8 MB: 12 alive
        del first  # 8 alive
        third = torch.ones(1_500_000)  # 6 MB: 14 alive, the peak
        return second.sum() + third.sum()  # three 4-byte scalars on top

    assert memory.peak(step, torch.device("cpu")) == 14_000_000 + 3 * 4


def test_bfloat16_cases_run_both_sides_under_autocast():
    """``--precision bf16``: our forward pass under autocast saves its activations for the
    backward pass in bfloat16, the most of what a training step keeps (the loss's logits stay
    float32): about three quarters of float32's bytes at these sizes."""
    cases = {
        p: run_case("dts-rnn", 16, 40, 128, "train", torch.device("cpu"), 0.02, precision=p)
        for p in ("fp32", "bf16")
    }
    assert [c["precision"] for c in cases.values()] == ["fp32", "bf16"]
    assert cases["bf16"]["saved_mb"] < 0.85 * cases["fp32"]["saved_mb"]
    assert "bf16 B=16" in format_row(cases["bf16"])


@pytest.fixture(scope="module")
def bench_floor():
    """scripts/bench-floor as a module (a script, without the .py its loader would need)."""
    path = Path(__file__).parents[1] / "scripts" / "bench-floor"
    loader = SourceFileLoader("bench_floor", str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("bench_floor", loader))
    loader.exec_module(module)
    return module


FLOOR_MODELS = ["rnn", "dt-rnn", "dts-rnn", "do-rnn", "dot-rnn", "dots-rnn", "srnn", "dots-rnn*"]


@pytest.mark.parametrize("task", ["music", "ptb-word"])
@pytest.mark.parametrize("name", FLOOR_MODELS)
def test_the_floor_lists_each_weight_matrix_the_bench_counts_once(bench_floor, task, name):
    model = bench_model(name, 24, task)
    whole, per_step = bench_floor.products(model)
    listed = sorted([(i, o) for i, o, _ in whole] + [shape for level in per_step for shape in level])
    # every (in, out) matrix multiplied, embeddings (a lookup) aside, as nn.Linear's weight is (out, in)
    matrices = [m for m in model.parameters() if m.dim() == 2]
    tables = {id(m.weight) for m in model.modules() if isinstance(m, Projection) and m.tokens}
    assert listed == sorted((m.shape[1], m.shape[0]) for m in matrices if id(m) not in tables)
    assert sum(i * o for i, o in listed) == multiplied_weights(model)
    # the data's map needs no input gradient; a second level's, reading the first's states, does
    assert [needs for *_, needs in whole].count(False) == (task == "music")
    assert len(per_step) == model.config.levels


@pytest.mark.parametrize("task", ["music", "ptb-word"])
@pytest.mark.parametrize("name", FLOOR_MODELS)
def test_the_floor_multiplies_each_weight_once_a_step_and_three_times_in_training(bench_floor, task, name):
    model = bench_model(name, 8, task)
    batch, steps, weights = 2, 3, multiplied_weights(model)
    data_map = 0 if task != "music" else model.recurrence.levels[0].input.weight.numel()
    for mode, times in (("eval", weights), ("train", 3 * weights - data_map)):
        with FlopCounterMode(display=False) as flops:
            bench_floor.floor_fn(model, batch, steps, mode)()
        assert flops.get_total_flops() == 2 * steps * batch * times, mode


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("music:dts-rnn:32:256", "a case is TASK:MODEL:BATCH:HIDDEN:MODE"),
        ("music:lstm:32:256:train", "the model a preset without a NADE head"),
        ("music:rnn-nade:32:256:train", "the model a preset without a NADE head"),
        ("music:rnn:32:256:sample", "the mode train or eval"),
        ("music:rnn:8:256:train", "the batch is one of 32, 1"),
        ("music:rnn:32:0:train", "the hidden size > 0"),
    ],
)
def test_the_floor_refuses_a_malformed_case_saying_what_a_case_is(bench_floor, case, says):
    with pytest.raises(ValueError, match=says):
        bench_floor.parse_case(case)


def test_the_floor_reads_a_case(bench_floor):
    expected = ("ptb-word", "dots-rnn*", 1, 400, "eval")
    assert bench_floor.parse_case("ptb-word:dots-rnn*:1:400:eval") == expected
