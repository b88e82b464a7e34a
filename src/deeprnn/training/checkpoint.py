"""Checkpoints: everything a run needs to continue exactly, written atomically.

A checkpoint holds the model, the optimiser, the schedule, the random-generator states, the
data position (epoch, batch) and the state carried between segments, the configuration and
the library version. It contains only tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``; it is written to a temporary file and renamed, so a kill at
any moment leaves either the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from deeprnn.io import write_bytes


def save(path: Path, state: dict) -> Path:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return write_bytes(path, buffer.getvalue())


def load(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
