"""Process-wide state: settings that make PyTorch's CPU path fast here, and a run's seeding
kept to the run (:func:`own_random_state`).

PyTorch's CPU tensors come from the C library's malloc. glibc serves every block above 128 KiB
with a fresh ``mmap`` and unmaps it on free, so a training loop that allocates the same
activation buffers every step pays a page fault per 4 KiB, every time (measured here: a
DT(S)-RNN training step 20-30 % slower). Raising the thresholds keeps such blocks in the heap,
as tcmalloc or jemalloc would (the usual advice for PyTorch on CPU).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MAX_MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit


def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed blocks of up to 32 MiB rather than return them to the system.

    Returns whether the setting took effect (False off glibc, e.g. on macOS or Windows)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, _MAX_MMAP_THRESHOLD)
    ok &= mallopt(_M_TRIM_THRESHOLD, 4 * _MAX_MMAP_THRESHOLD)
    ok &= mallopt(_M_TOP_PAD, 64 * 1024 * 1024)
    return bool(ok)


@contextmanager
def own_random_state() -> Iterator[None]:
    """Seed and draw from PyTorch's global generators inside, and give the caller its own random
    state back afterwards (CPU, and every CUDA device already in use): a training run or a
    benchmark seeds itself without changing what the caller's code draws next. (Dropout and the
    initialisers draw only from the global generators, so a local ``torch.Generator`` cannot
    serve them.)"""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        yield
