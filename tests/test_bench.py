"""``deeprnn bench``: the JSON layout and sane ratios (speed itself is measured, never asserted)."""

from __future__ import annotations

import json

from deeprnn.bench import bench_model, multiplied_weights
from deeprnn.cli import main
from deeprnn.models import count_parameters


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
    assert {"torch", "threads", "device"} <= set(printed["machine"])
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
