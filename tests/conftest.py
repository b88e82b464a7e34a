from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The benchmark data: $DEEPRNN_DATA, else ../shared/data beside the repository."""
    root = Path(os.environ.get("DEEPRNN_DATA") or REPO.parent / "shared" / "data")
    if not (root / "music").is_dir():
        pytest.skip(f"benchmark data not found at {root} (set DEEPRNN_DATA)")
    return root
