"""``deeprnn bench``: the JSON layout and sane ratios (speed itself is measured, never asserted)."""

from __future__ import annotations

import json

from deeprnn.bench import bench_model
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
        assert {"model", "batch", "steps", "hidden", "mode", "ratio", "flop_parity"} <= set(c)
        assert c["ratio"] > 0 and c["ours_ms"] > 0 and c["baseline_ms"] > 0
        assert (c["batch"], c["steps"], c["hidden"]) == (8, 20, 64)
    dts = next(c for c in cases if c["model"] == "dts-rnn")
    # FLOP parity: nn.RNN(88, H) + Linear(H, 88) weights over ours, every width H.
    h = 64
    assert dts["flop_parity"] == round((88 * h + h * h + h * 88) / (2 * 88 * h + 3 * h * h + h * 88), 3)
    assert count_parameters(bench_model("dts-rnn", h))["weights"] == 2 * 88 * h + 3 * h * h + h * 88
