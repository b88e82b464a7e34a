"""deeprnn export: the ONNX step model agrees with PyTorch, step by step, at any batch size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deeprnn import DeepRNN, ModelConfig
from deeprnn.cli import main
from deeprnn.export import export_step
from deeprnn.operators.torch_cells import TorchCell
from deeprnn.training import trainer
from deeprnn.training.config import apply
from deeprnn.training.evaluation import load_run

ort = pytest.importorskip("onnxruntime")
STEPS, BATCH = 50, 3  # exported at batch 2: a different batch tests the dynamic axis


def _run_onnx(path, x: np.ndarray, names: list[str], state: list[np.ndarray]):
    """The ONNX step run over x (T, B, …), the state carried: each step's logits, the last state."""
    session = ort.InferenceSession(str(path))
    assert [i.name for i in session.get_inputs()] == ["x", *names]
    logits = []
    for x_t in x:
        out = session.run(None, {"x": x_t, **dict(zip(names, state, strict=True))})
        logits.append(out[0])
        state = out[1:]
    return np.stack(logits), state


def test_the_exported_step_of_a_trained_run_matches_the_sequence_model(rolls, tmp_path, capsys):
    settings = {"model": "dots-rnn", "data": str(rolls), "hidden_size": 12, "max_updates": 2, "device": "cpu"}
    trainer.train(apply(settings), tmp_path / "run", log=lambda _: None)
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "step.onnx")]) == 0
    assert "inputs x, state; outputs logits, new state" in capsys.readouterr().out
    model = load_run(tmp_path / "run")
    x = torch.rand(STEPS, BATCH, 88).round()
    with torch.no_grad():
        want, want_h = model(x)  # the whole sequence at once: an independent path through the model
    zeros = np.zeros((1, BATCH, 12), np.float32)
    got, (h,) = _run_onnx(tmp_path / "step.onnx", x.numpy(), ["state"], [zeros])
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(h, want_h.numpy(), atol=1e-5, rtol=0)


def test_an_lstm_token_model_exports_its_h_and_c(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(input_size=20, output_size=20, hidden_size=10, head="categorical", input_sizes=(8,))
    model = DeepRNN(config, transitions=[TorchCell(nn.LSTMCell(8, 10))]).eval()
    export_step(model, tmp_path / "lstm.onnx")
    ids = torch.randint(0, 20, (STEPS, BATCH))
    with torch.no_grad():
        want, (want_h, want_c) = model(ids)
    zeros = np.zeros((1, BATCH, 10), np.float32)
    got, (h, c) = _run_onnx(tmp_path / "lstm.onnx", ids.numpy(), ["h", "c"], [zeros, zeros])
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(h, want_h.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(c, want_c.numpy(), atol=1e-5, rtol=0)
