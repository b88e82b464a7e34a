"""``deeprnn data download``: fetch the known files from their public copies, verified.

Each file is written to a temporary file beside its destination, its SHA-256 checked, then
renamed into place: an interrupted or corrupted download never leaves a file that looks
complete. The ``ptb.char`` files are built from the word files (the transformation of
Mikolov's archive, see :func:`deeprnn.data.text.pennchar_from_words`) and checked the same way.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from deeprnn.data.registry import FILES, DataError, DataFile, dataset, sha256
from deeprnn.data.text import pennchar_from_words, read_text
from deeprnn.io import write_bytes

TIMEOUT_S = 20


def files_of(name: str) -> list[str]:
    """The files ``deeprnn data download NAME`` fetches (``all``: every known file)."""
    if name == "all":
        return list(FILES)
    known = dataset(name)
    wanted = [f for f in known.files if f in FILES][:1] if known.kind == "music" else list(known.files)
    for path in list(wanted):
        wanted[:0] = [d for d in FILES[path].derived_from if d not in wanted]
    return wanted


def download(root: Path, name: str = "all", log: Callable[[str], None] = print) -> list[Path]:
    """Make every file of ``name`` present and verified under ``root``; return their paths."""
    done = []
    for path in files_of(name):
        known = FILES[path]
        target = root / path
        if target.exists() and sha256(target) == known.sha256:
            log(f"ok        {path}")
        else:
            data = _build(root, known) if known.derived_from else _fetch(known, target)
            actual = hashlib.sha256(data).hexdigest()
            if actual != known.sha256:
                raise DataError(
                    f"{path}: checksum mismatch after download (got {actual}, expected {known.sha256}); "
                    "nothing was written"
                )
            write_bytes(target, data)
            log(f"fetched   {path}")
        done.append(target)
    return done


def _fetch(known: DataFile, target: Path) -> bytes:
    try:
        with urllib.request.urlopen(known.url, timeout=TIMEOUT_S) as response:
            return response.read()
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        reason = getattr(error, "reason", error)
        raise DataError(
            f"could not download {known.path} from {known.url} ({reason}). Without internet access, "
            f"download it elsewhere and put it at {target} (SHA-256 {known.sha256})."
        ) from None


def _build(root: Path, known: DataFile) -> bytes:
    (source,) = known.derived_from
    return pennchar_from_words(read_text(root / source)).encode("utf-8")
