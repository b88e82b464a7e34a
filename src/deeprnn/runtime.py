"""Process-wide state: settings that make PyTorch's CPU path fast here, and a run's seeding
kept to the run (:func:`own_random_state`).

PyTorch's CPU tensors come from the C library's malloc. glibc serves every block above 128 KiB
with a fresh ``mmap`` and unmaps it on free, so a training loop that allocates the same
activation buffers every step pays a page fault per 4 KiB, every time (measured here: a
DT(S)-RNN training step 20-30 % slower). Raising the thresholds keeps such blocks in the heap,
as tcmalloc or jemalloc would (the usual advice for PyTorch on CPU), up to 1 GiB: a 10,000-word
softmax's logits and their gradient (128 MB each at B=32, T=100) are then reused too, and a
ptb-word training step faults 4x less and runs 10-15 % faster than with glibc's former ceiling
of 32 MiB (measured here, glibc 2.36); an older glibc refuses more than that ceiling, and keeps
it. The price: freed memory stays with the process, so that its heap stays near its peak (glibc
returns only what is free at the heap's top, beyond the trim threshold). PyTorch's own switch
``THP_MEM_ALLOC_ENABLE`` backs what is still mapped afresh with transparent huge pages, a fault
per 2 MiB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD = 1 << 30  # blocks up to this size come from the heap, reused after free
_OLD_MMAP_CEILING = 32 * 1024 * 1024  # the most an older glibc accepts on 64-bit


def reduce_page_faults() -> bool:
    """Ask glibc to reuse freed blocks of up to 1 GiB (32 MiB where it refuses more) rather than
    return them to the system, and PyTorch to put blocks it maps afresh on huge pages.
    Process-wide: the command line calls it, before its first tensor (PyTorch reads its switch
    once); the library never does. A value the user set in the environment for
    ``THP_MEM_ALLOC_ENABLE`` is kept, and so are glibc's own for these parameters
    (``MALLOC_MMAP_THRESHOLD_`` and the like, or ``GLIBC_TUNABLES``): with any of them set, glibc
    is left as the user configured it.

    Returns whether glibc took the setting (False off glibc, e.g. on macOS or Windows)."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    if not sys.platform.startswith("linux") or _malloc_configured_by_user():
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    threshold = next((t for t in (_MMAP_THRESHOLD, _OLD_MMAP_CEILING) if mallopt(_M_MMAP_THRESHOLD, t)), 0)
    ok = threshold and mallopt(_M_TRIM_THRESHOLD, max(threshold, 4 * _OLD_MMAP_CEILING))
    ok = ok and mallopt(_M_TOP_PAD, 64 * 1024 * 1024)
    return bool(ok)


_PARAMETERS = ("mmap_threshold", "trim_threshold", "top_pad")  # what reduce_page_faults sets


def _malloc_configured_by_user() -> bool:
    """Whether the environment sets one of those parameters (glibc's variable or tunable)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(
        f"MALLOC_{name.upper()}_" in os.environ or f"glibc.malloc.{name}" in tunables for name in _PARAMETERS
    )


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
