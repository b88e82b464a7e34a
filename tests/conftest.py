from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The benchmark data: $DEEPRNN_DATA, else ../shared/data beside the repository."""
    root = Path(os.environ.get("DEEPRNN_DATA") or REPO.parent / "shared" / "data")
    if not (root / "music").is_dir():
        message = f"benchmark data not found at {root} (set DEEPRNN_DATA)"
        if os.environ.get("CI"):  # CI must run every test: a missing data folder fails it
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def rolls(tmp_path_factory) -> Path:
    """A tiny piano-roll file (tests that need no benchmark data): 12 / 3 / 3 pieces of 8–30
    frames with up to four notes each. tests/fixtures/run-0.1.0 was trained on it: keep it as
    it is."""
    rng = random.Random(0)

    def piece(frames: int) -> list[tuple[int, ...]]:
        return [tuple(sorted(rng.sample(range(21, 109), rng.randint(0, 4)))) for _ in range(frames)]

    sizes = (("train", 12), ("valid", 3), ("test", 3))
    path = tmp_path_factory.mktemp("data") / "tiny.pickle"
    path.write_bytes(pickle.dumps({s: [piece(rng.randint(8, 30)) for _ in range(n)] for s, n in sizes}))
    return path


WORDS = "the cat sat on the mat and the dog sat on the log\n"


@pytest.fixture
def text_corpus(tmp_path):
    """A text folder of WORDS repeated: ``text_corpus(train, valid, test)`` lines per split."""

    def write(train: int = 20, valid: int = 3, test: int = 2) -> Path:
        corpus = tmp_path / "corpus"
        corpus.mkdir()
        for split, lines in (("train", train), ("valid", valid), ("test", test)):
            (corpus / f"{split}.txt").write_text(WORDS * lines)
        return corpus

    return write
