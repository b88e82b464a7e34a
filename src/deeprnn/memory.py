"""What a training step keeps in memory: the tensors saved for the backward pass, and the peak.

Training memory should be O(T·B·H) per layer with no hidden copies: what autograd keeps between
forward and backward is the states and the few activations the gradients need, each once. Both
measures take a call (a training update, or a forward pass) and run it once.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile


def saved_for_backward(step: Callable[[], object], model: nn.Module) -> int:
    """Bytes of the tensors autograd saves for the backward pass while ``step`` runs, each
    storage counted once (views of one tensor share it) and the model's parameters left out."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return sum(storages.values())


def peak(step: Callable[[], object], device: torch.device) -> int:
    """Bytes allocated at the peak of ``step``, above what was allocated before it: the CUDA
    allocator's count on a GPU; on a CPU, the running sum of the allocations and frees that
    PyTorch's profiler records, op by op."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as trace:
        step()
    changes = sorted((event.time_range.start, event.self_cpu_memory_usage) for event in trace.events())
    now = highest = 0
    for _, change in changes:
        now += change
        highest = max(highest, now)
    return highest


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """The profiler's own start and stop lines (written by its C++ side) kept off the terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
