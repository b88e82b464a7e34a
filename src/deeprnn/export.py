"""A trained model for serving elsewhere, in two forms.

One step as an ONNX graph (:func:`export_step`), as an RNN is served and sampled:

    logits_t, state_t = step(x_t, state_{t-1})

x_t is (B, input_size) floats, or (B,) token ids; the state is (levels, B, H), or h and c for a
model whose ⊕ carries two (an LSTM's); the logits are ▷'s output, what the head turns into a
distribution. The batch size is free, and so is the length: a caller runs the step as long as it
likes, carrying the state, which sidesteps a graph fixed at one T.

The whole model as a ``torch.export`` program (:func:`export_sequence`), ``model(input)`` with
the length T and the batch size both free: its loop over time is one ``scan`` in the graph
(:func:`deeprnn.driver.scanned`), not T copies of the step.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from deeprnn.errors import ConfigError
from deeprnn.io import write_bytes
from deeprnn.models import DeepRNN


class OneStep(nn.Module):
    """``model`` advanced by one step: (x_t, *state) -> (logits_t, *new state)."""

    def __init__(self, model: DeepRNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        time = 1 if self.model.recurrence.batch_first else 0
        logits, new = self.model(x.unsqueeze(time), state[0] if len(state) == 1 else state)
        return (logits.select(time, 0), *((new,) if isinstance(new, torch.Tensor) else new))


def state_names(model: DeepRNN) -> list[str]:
    """The graph's state inputs: ``state``, or ``h`` and ``c`` for an LSTM-like carry."""
    carries = model.recurrence.carries
    if carries <= 2:
        return ["state"] if carries == 1 else ["h", "c"]
    return [f"state{k}" for k in range(carries)]


def export_step(model: DeepRNN, path: str | os.PathLike, opset: int | None = None) -> Path:
    """Write ``model``'s step (:class:`OneStep`, in evaluation mode) to the ONNX file ``path``
    (PyTorch 2.6 or later: its dynamo exporter)."""
    try:
        import onnxscript  # noqa: F401  (what torch.onnx's exporter writes the graph with)
    except ImportError:
        needs = "exporting to ONNX needs onnx and onnxscript: pip install 'deeprnn[export]'"
        raise ConfigError(needs) from None
    if not hasattr(torch.compiler, "is_exporting"):
        raise ConfigError(f"exporting to ONNX needs PyTorch 2.6 or later; this is {torch.__version__}")
    config, batch = model.config, torch.export.Dim("batch", min=1)
    x = _example(model, (2,))
    names = state_names(model)
    state = [x.new_zeros(config.levels, 2, config.hidden_size, dtype=_dtype(model)) for _ in names]
    with _evaluating(model), torch.no_grad():
        program = torch.onnx.export(
            OneStep(model).eval(),  # the wrapper too, or the exporter warns of training mode
            (x, *state),
            input_names=["x", *names],
            output_names=["logits", *(f"new_{name}" for name in names)],
            dynamic_shapes={"x": {0: batch}, "state": tuple({1: batch} for _ in names)},
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    return write_bytes(path, program.model_proto.SerializeToString())


def export_sequence(model: DeepRNN) -> torch.export.ExportedProgram:
    """``model`` in evaluation mode as a ``torch.export`` program: input (T, B, …), or (B, T, …)
    with ``batch_first``, from zero states -> (logits, h_n), as ``model(input)``, for any T >= 1
    and B >= 1 (PyTorch 2.6 or later). Save it with ``torch.export.save``."""
    if not hasattr(torch.compiler, "is_exporting"):
        needs = f"a program with a free length needs PyTorch 2.6 or later; this is {torch.__version__}"
        raise ConfigError(needs)
    steps, batch = torch.export.Dim("steps", min=1), torch.export.Dim("batch", min=1)
    x = _example(model, (3, 2))  # neither 0 nor 1: both stay free
    axes = {1: steps, 0: batch} if model.recurrence.batch_first else {0: steps, 1: batch}
    with _evaluating(model):
        return torch.export.export(model, (x,), dynamic_shapes={"input": axes})


def _dtype(model: DeepRNN) -> torch.dtype:
    return next(model.parameters()).dtype


def _example(model: DeepRNN, shape: tuple[int, ...]) -> torch.Tensor:
    """Zeros of ``shape`` the model reads: token ids, or frames of its input size."""
    config, device = model.config, next(model.parameters()).device
    if config.tokens:
        return torch.zeros(shape, dtype=torch.int64, device=device)
    return torch.zeros((*shape, config.input_size), dtype=_dtype(model), device=device)


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """``model`` in evaluation mode for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
