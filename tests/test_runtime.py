"""Process-wide settings (deeprnn.runtime), measured in a fresh process: what they change is
how often the kernel has to fault in the pages of a large tensor."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Allocate and free a 64 MiB tensor (above glibc's largest mmap threshold) a few times, and print
# the minor page faults each costs; argv[1] says whether to call reduce_page_faults first.
CHILD = """
import resource, sys, torch
if sys.argv[1] == "tuned":
    from deeprnn.runtime import reduce_page_faults
    reduce_page_faults()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(1)
before = faults()
for _ in range(4):
    block = torch.ones(16 * 2**20)
    del block
print((faults() - before) / 4)
"""
PAGES = 64 * 2**20 // 4096  # what a 64 MiB block faults in on 4 KiB pages


def _faults_per_block(mode: str, **env: str) -> float:
    clean = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    run = subprocess.run(
        [sys.executable, "-c", CHILD, mode], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return float(run.stdout)


def _huge_pages_on_request() -> bool:
    setting = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return setting.exists() and "[never]" not in setting.read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's glibc and huge pages")
def test_large_tensors_fault_once_per_huge_page_after_reduce_page_faults():
    if not _huge_pages_on_request():
        pytest.skip("this kernel has transparent huge pages turned off")
    plain = _faults_per_block("plain")
    if plain < PAGES / 2:
        pytest.skip(f"large blocks do not fault afresh here ({plain:.0f} faults): nothing to reduce")
    assert _faults_per_block("tuned") < PAGES / 8
    # a value the user set is kept: 0 turns PyTorch's huge pages off
    assert _faults_per_block("tuned", THP_MEM_ALLOC_ENABLE="0") > PAGES / 2
