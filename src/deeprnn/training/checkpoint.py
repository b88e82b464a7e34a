"""Checkpoints: everything a run needs to continue exactly, written atomically.

A checkpoint holds the model, the optimiser, the schedule, the random-generator states, the
data position (epoch, batch) and the state carried between segments, the configuration and
the library version. It contains only tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``; it is written to a temporary file and renamed, so a kill at
any moment leaves either the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import torch

from deeprnn.errors import RunFolderError
from deeprnn.io import write_bytes


def save(path: Path, state: dict) -> Path:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return write_bytes(path, buffer.getvalue())


def load(path: Path) -> dict:
    """A checkpoint's contents; a RunFolderError if it is missing or cannot be read as one
    (truncated, overwritten, or holding objects that only running code could rebuild)."""
    if not path.exists():
        raise RunFolderError(f"no checkpoint at {path}")
    data = path.read_bytes()  # an I/O error (permissions, a failing disk) is reported as such
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # bytes that are not a checkpoint fail in many ways
        # torch's own message would suggest the unsafe weights_only=False: say what is wrong instead
        why = "truncated, or not a checkpoint deeprnn wrote"
        if isinstance(error, pickle.UnpicklingError) and "global" in str(error).lower():
            why = "it holds objects other than tensors and plain values (deeprnn runs no code from one)"
        raise RunFolderError(f"{path} is damaged: {why}") from None
    if not isinstance(state, dict):
        raise RunFolderError(f"{path} is damaged: not a checkpoint deeprnn wrote")
    return state


def best_parameters_only(source: Path, dest: Path) -> Path:
    """Write ``source`` (a ``best.pt``) to ``dest`` without the run it was part of (``resume``:
    the optimiser's moments alone are twice the parameters): what ``init_from``, scoring and
    publishing read, at a quarter of the size under Adam, to carry a finished run elsewhere."""
    state = load(source)
    if "model" not in state:
        raise RunFolderError(f"{source} holds no model parameters: not a best.pt deeprnn wrote")
    return save(dest, {key: value for key, value in state.items() if key != "resume"})


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """The generators as :func:`rng_state` saved them; of the GPUs', those still visible (a run
    of a machine with more GPUs resumes on one with fewer)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        for index, generator in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(generator, index)
