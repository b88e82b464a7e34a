"""deeprnn export: the ONNX step model agrees with PyTorch, step by step, at any batch size; the
torch.export program of the whole model agrees with it at any length and batch size."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from deeprnn import DeepRNN, ModelConfig
from deeprnn.cli import main
from deeprnn.errors import ConfigError
from deeprnn.export import export_sequence, export_step
from deeprnn.operators.torch_cells import TorchCell
from deeprnn.presets import preset, resized
from deeprnn.training import trainer
from deeprnn.training.config import apply
from deeprnn.training.evaluation import load_run

STEPS, BATCH = 50, 3  # exported at batch 2: a different batch tests the dynamic axis
EXPORTS = hasattr(torch.compiler, "is_exporting")  # PyTorch >= 2.6, whose exporters deeprnn uses
needs_exporter = pytest.mark.skipif(not EXPORTS, reason="export needs PyTorch 2.6 or later")


def _run_onnx(path, x: np.ndarray, names: list[str], state: list[np.ndarray]):
    """The ONNX step run over x (T, B, …), the state carried: each step's logits, the last state."""
    ort = pytest.importorskip("onnxruntime")  # the ONNX tests only: torch.export's need none
    session = ort.InferenceSession(str(path))
    assert [i.name for i in session.get_inputs()] == ["x", *names]
    logits = []
    for x_t in x:
        out = session.run(None, {"x": x_t, **dict(zip(names, state, strict=True))})
        logits.append(out[0])
        state = out[1:]
    return np.stack(logits), state


def _tiny_run(model: str, rolls, tmp_path):
    """A run folder of ``model`` at width 12, trained for two updates on the tiny rolls."""
    settings = {"model": model, "data": str(rolls), "hidden_size": 12, "max_updates": 2, "device": "cpu"}
    trainer.train(apply(settings), tmp_path / "run", log=lambda _: None)
    return tmp_path / "run"


@needs_exporter
def test_the_exported_step_of_a_trained_run_matches_the_sequence_model(rolls, tmp_path, capsys):
    assert (
        main(["export", str(_tiny_run("dots-rnn", rolls, tmp_path)), "--out", str(tmp_path / "step.onnx")])
        == 0
    )
    assert "inputs x, state; outputs logits, new state" in capsys.readouterr().out
    model = load_run(tmp_path / "run")
    x = torch.rand(STEPS, BATCH, 88).round()
    with torch.no_grad():
        want, want_h = model(x)  # the whole sequence at once: an independent path through the model
    zeros = np.zeros((1, BATCH, 12), np.float32)
    got, (h,) = _run_onnx(tmp_path / "step.onnx", x.numpy(), ["state"], [zeros])
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(h, want_h.numpy(), atol=1e-5, rtol=0)


@needs_exporter
def test_an_lstm_token_model_exports_its_h_and_c(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(input_size=20, output_size=20, hidden_size=10, head="categorical", input_sizes=(8,))
    model = DeepRNN(config, transitions=[TorchCell(nn.LSTMCell(8, 10))])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_step(model, tmp_path / "lstm.onnx")
    assert not [w for w in caught if "training mode" in str(w.message)], "exported in evaluation mode"
    assert model.training, "the model's mode is given back"
    model.eval()
    ids = torch.randint(0, 20, (STEPS, BATCH))
    with torch.no_grad():
        want, (want_h, want_c) = model(ids)
    zeros = np.zeros((1, BATCH, 10), np.float32)
    got, (h, c) = _run_onnx(tmp_path / "lstm.onnx", ids.numpy(), ["h", "c"], [zeros, zeros])
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(h, want_h.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(c, want_c.numpy(), atol=1e-5, rtol=0)


def _lstm_token_model(batch_first: bool = False) -> DeepRNN:
    config = ModelConfig(input_size=20, output_size=20, hidden_size=10, head="categorical", input_sizes=(8,))
    return DeepRNN(config, transitions=[TorchCell(nn.LSTMCell(8, 10))], batch_first=batch_first)


def _carry(h) -> tuple[torch.Tensor, ...]:
    return h if isinstance(h, tuple) else (h,)


@needs_exporter
@pytest.mark.parametrize("name", ["rnn", "dots-rnn*", "srnn", "lstm", "batch-first", "tied-dts-rnn"])
def test_the_exported_program_takes_any_length_and_batch_size(name):
    """Exported once at T=3, B=2; run at other lengths and batch sizes (an unrolled loop would be
    fixed at T=3): the same logits and h_n as the model, from L_p/maxout units to an LSTM's (h, c)."""
    torch.manual_seed(0)
    if name in ("lstm", "batch-first"):
        model = _lstm_token_model(batch_first=name == "batch-first")
    elif name == "tied-dts-rnn":  # ▷'s softmax a view of the input embedding
        model = DeepRNN(replace(resized(preset("dts-rnn", "ptb-word"), 16), tie_weights=True))
    else:
        model = DeepRNN(resized(preset(name, "jsb"), 16))
    program = export_sequence(model)
    assert model.training, "the model's mode is given back"
    assert any("scan" in str(node.target) for node in program.graph.nodes), "one step, scanned over T"
    model.eval()
    for steps, batch in [(1, 1), (7, 2), (40, 3)]:
        size = (batch, steps) if name == "batch-first" else (steps, batch)
        x = torch.randint(0, 20, size) if model.config.tokens else torch.rand(*size, 88).round()
        with torch.no_grad():
            want, want_h = model(x)
        got, got_h = program.module()(x)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        for g, w in zip(_carry(got_h), _carry(want_h), strict=True):
            torch.testing.assert_close(g, w, atol=1e-6, rtol=0)


@needs_exporter
def test_deeprnn_export_writes_a_program_by_its_ending_and_refuses_others(rolls, tmp_path, capsys):
    assert (
        main(["export", str(_tiny_run("dts-rnn", rolls, tmp_path)), "--out", str(tmp_path / "model.pt2")])
        == 0
    )
    assert "any length, any batch size" in capsys.readouterr().out
    program = torch.export.load(tmp_path / "model.pt2")
    model = load_run(tmp_path / "run")
    x = torch.rand(25, 4, 88).round()
    with torch.no_grad():
        want, want_h = model(x)
    got, got_h = program.module()(x)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(got_h, want_h, atol=1e-6, rtol=0)
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "model.pt")]) != 0
    error = capsys.readouterr().err
    assert "model.pt: the file's ending says what to write (.onnx: one step as ONNX; .pt2:" in error
    assert not (tmp_path / "model.pt").exists()


@pytest.mark.skipif(EXPORTS, reason="PyTorch 2.6 or later exports")
def test_before_pytorch_2_6_export_says_what_it_needs(tmp_path):
    model = _lstm_token_model()
    with pytest.raises(ConfigError, match=r"needs PyTorch 2\.6 or later; this is 2\."):
        export_step(model, tmp_path / "step.onnx")
    with pytest.raises(ConfigError, match=r"a program with a free length needs PyTorch 2\.6 or later"):
        export_sequence(model)
    assert not (tmp_path / "step.onnx").exists()
