"""A run folder: what it holds, the lock a training process holds on it, and what may replace it.

    config.json      the resolved configuration        model.json, vocab.json   what loading needs
    metrics.jsonl    one line per evaluation           results.json             the final scores
    checkpoints/     last.pt (to resume), best.pt (the best parameters, and the run at that point)
    tb/              TensorBoard event files           train.log                what was printed
    .lock            held (flock) by the process that trains in the folder

A folder is locked for as long as a process trains in it, so a second ``train``, ``--resume`` or
``--force`` on it is refused, naming the holder; the kernel releases the lock of a process that
dies, so a killed run's lock is simply taken over. ``--force`` replaces a folder only when every
entry in it is one of the above (it never deletes a folder that holds anything else).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deeprnn.errors import ConfigError, RunFolderError
from deeprnn.training import checkpoint
from deeprnn.training.config import TrainConfig, apply
from deeprnn.training.console import Log

FILES = ("config.json", "model.json", "vocab.json", "metrics.jsonl", "results.json", "train.log")
FOLDERS = ("checkpoints", "tb")
LOCK = ".lock"


class RunExists(RunFolderError):
    """The run folder already holds a run: resume it or pass --force."""


def is_temporary(path: Path) -> bool:
    """A file left by an atomic write that a kill interrupted (deeprnn.io)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def entries(folder: Path) -> list[Path]:
    """What the folder holds, its lock aside."""
    return sorted(p for p in folder.iterdir() if p.name != LOCK)


def foreign(folder: Path) -> list[str]:
    """The entries of ``folder`` that are not part of a run folder."""
    own = {*FILES, *FOLDERS}
    return [p.name for p in entries(folder) if p.name not in own and not is_temporary(p)]


def check_replaceable(folder: Path) -> None:
    """Refuse to replace a folder that holds anything a run did not write."""
    strange = foreign(folder)
    if strange:
        shown = ", ".join(strange[:5]) + (f" and {len(strange) - 5} more" if len(strange) > 5 else "")
        raise RunFolderError(
            f"{folder} is not a deeprnn run folder (it holds {shown}); --force replaces only a run "
            "folder, so choose another --out"
        )


def clear(folder: Path) -> None:
    """Delete a run's files, keeping the folder and its lock (call :func:`check_replaceable` first)."""
    for path in entries(folder):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files of interrupted atomic writes (only safe under the lock)."""
    found = [p for where in (folder, folder / "checkpoints") if where.is_dir() for p in where.iterdir()]
    removed = [p for p in found if is_temporary(p) and p.is_file()]
    for path in removed:
        path.unlink()
    return removed


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the folder's lock for the life of the block; refuse if another process holds it."""
    path = folder / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderError(f"{folder} is in use: {_holder(fd)} trains in it") from None
        if not _still_at(fd, path):  # its holder removed it (a run that came to nothing) meanwhile
            raise RunFolderError(f"{folder} was removed or replaced while this process opened it; run again")
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _still_at(fd: int, path: Path) -> bool:
    """Whether the file open as ``fd`` is still the one at ``path``: a lock on a removed file
    would let a second process lock the new one at the same time."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _holder(fd: int) -> str:
    """Who holds the lock, as the holder wrote it."""
    try:
        who = json.loads(os.pread(fd, os.fstat(fd).st_size, 0) or b"{}")
        return f"process {who['pid']} on {who['host']} (since {who['since']}: {who['command']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


def newest_checkpoint(out: Path) -> Path | None:
    """``last.pt``, else ``best.pt``, of the run in ``out`` (whether it has a checkpoint, and the
    one a run that was not stopped between writing the two resumes from); None when it has neither."""
    return next((p for p in (out / "checkpoints" / n for n in ("last.pt", "best.pt")) if p.exists()), None)


def resumable_state(out: Path, log: Log = print) -> dict | None:
    """The newest readable training state of a run: ``last.pt``, or the run as it was at its best
    point (``best.pt``) where ``last.pt`` cannot be read or is older (the run was stopped between
    writing the two; ``best.pt`` is then read, as its file's time suggests); says which it took
    when it passed ``last.pt`` over. None when the run has no checkpoint at all (it was stopped
    before its first); an error when none can be read."""
    folder, skipped, states = out / "checkpoints", [], {}
    if newest_checkpoint(out) is None:
        return None
    last, best = folder / "last.pt", folder / "best.pt"
    for path in (last, best):
        if not path.exists() or (path == best and "last.pt" in states and not _newer(best, last)):
            continue
        try:
            state = checkpoint.load(path)
        except RunFolderError as error:
            skipped.append(str(error))
            continue
        if path == best:
            if "resume" not in state:
                skipped.append(f"{path} holds parameters only (written before deeprnn kept the run in it)")
                continue
            state = state["resume"]
        states[path.name] = state
    if not states:
        raise RunFolderError(f"{out} holds no checkpoint to resume from ({'; '.join(skipped)})")
    name = max(states, key=lambda n: states[n]["progress"]["updates"])  # a tie: last.pt
    if name == "best.pt" and "last.pt" in states:
        log(f"resuming from {best}: {last} is older (the run stopped between the two)")
    elif name == "best.pt" and skipped:
        log(f"resuming from {best}; skipped: {'; '.join(skipped)}")
    return states[name]


def _newer(path: Path, than: Path) -> bool:
    """Whether ``path`` may have been written after ``than`` (the same time counts: a coarse clock)."""
    return path.stat().st_mtime_ns >= than.stat().st_mtime_ns


def read_config(out: Path) -> TrainConfig:
    """A run folder's ``config.json``, checked like any configuration."""
    path = out / "config.json"
    if not path.exists():
        raise RunFolderError(f"{out} is not a run folder (no config.json)")
    values = read_json(path)
    try:
        return apply(values)
    except ConfigError as error:
        raise RunFolderError(f"{path} is damaged: {error}") from None


def read_json(path: Path) -> dict:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{path} is damaged: not JSON ({error})") from None
    if not isinstance(values, dict):
        raise RunFolderError(f"{path} is damaged: expected a JSON object, got {type(values).__name__}")
    return values
