"""Process-wide settings (deeprnn.runtime), measured in a fresh process: what they change is
how often the kernel has to fault in the pages of a large tensor."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys

import pytest

# Allocate a 64 MiB tensor (above glibc's default largest mmap threshold) once, then free and
# allocate it again a few times, and print the minor page faults each time costs; argv[1] says
# whether to call reduce_page_faults first.
CHILD = """
import resource, sys, torch
if sys.argv[1] == "tuned":
    from deeprnn.runtime import reduce_page_faults
    print(reduce_page_faults())
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = torch.ones(16 * 2**20)
before = faults()
for _ in range(4):
    del block
    block = torch.ones(16 * 2**20)
print((faults() - before) / 4)
"""
PAGES = 64 * 2**20 // 4096  # what a 64 MiB block faults in on 4 KiB pages
HUGE_PAGES = 64 // 2  # and on 2 MiB pages


def _python(code: str, *args: str, **env: str) -> list[str]:
    """What ``code`` prints in a fresh interpreter, with THP_MEM_ALLOC_ENABLE only as ``env`` sets it."""
    clean = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    run = subprocess.run(
        [sys.executable, "-c", code, *args], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return run.stdout.split()


def _child(mode: str, **env: str) -> list[str]:
    return _python(CHILD, mode, **env)


def _faults_per_block(mode: str, **env: str) -> float:
    return float(_child(mode, **env)[-1])


def _glibc_takes_a_1_gib_threshold() -> bool:
    """Whether this glibc accepts an mmap threshold above 32 MiB (an older one refuses it), asked in
    a child so that this process keeps its own."""
    libc = "ctypes.CDLL(ctypes.util.find_library('c'))"
    return _python(f"import ctypes, ctypes.util; print({libc}.mallopt(-3, 1 << 30))") == ["1"]


linux_glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or ctypes.util.find_library("c") is None, reason="Linux's glibc"
)


@linux_glibc
def test_a_large_tensor_freed_and_allocated_again_reuses_the_heap_after_reduce_page_faults():
    if not _glibc_takes_a_1_gib_threshold():
        pytest.skip("this glibc keeps blocks above 32 MiB out of the heap")
    plain = _faults_per_block("plain")
    if plain < HUGE_PAGES:
        pytest.skip(f"large blocks do not fault afresh here ({plain:.0f} faults): nothing to reduce")
    # the memory is the freed block's, already in place: no fault at all when run alone. The best
    # of three children, against a sixteenth of a fresh block's faults: at the end of a full test
    # run all three children have been seen to fault in 136-272 pages of the reused block, of the
    # 16,385 a fresh one takes (the kernel's background work on pages, DAMON's kdamond running
    # there, is the likely cause, not pinned down); without the tuning each takes them all
    tries = [_child("tuned") for _ in range(3)]
    assert all(said == "True" for said, _ in tries)
    assert min(float(tuned) for _, tuned in tries) < plain / 16


def test_reduce_page_faults_keeps_a_huge_pages_switch_the_user_set():
    show = "from deeprnn.runtime import reduce_page_faults; import os; reduce_page_faults(); "
    show += "print(os.environ['THP_MEM_ALLOC_ENABLE'])"
    assert _python(show) == ["1"]
    assert _python(show, THP_MEM_ALLOC_ENABLE="0") == ["0"]


@linux_glibc
@pytest.mark.parametrize(
    "env", [{"MALLOC_MMAP_THRESHOLD_": "131072"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}]
)
def test_reduce_page_faults_leaves_glibc_as_the_user_configured_it(env):
    show = "from deeprnn.runtime import reduce_page_faults; print(reduce_page_faults())"
    assert _python(show, **env) == ["False"]
    assert _python(show) == ["True"]
