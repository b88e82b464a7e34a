"""Data: the registry of known data sets, loaders for music and text, batching for BPTT."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deeprnn.data.registry import DataError, data_dir, dataset, looks_like_path, require
from deeprnn.data.text import TextCorpus, load_ptb, load_text_folder
from deeprnn.names import SPLITS, data_set

__all__ = ["DataError", "MusicCorpus", "TextCorpus", "data_dir", "load"]


@dataclass
class MusicCorpus:
    """Piano rolls per split: lists of (T, 88) uint8 arrays, and their names where the data has
    them (a MIDI folder's files; the benchmark files have none)."""

    name: str
    splits: dict[str, list[np.ndarray]]
    names: dict[str, list[str]] = field(default_factory=dict)
    level = "frame"


def load(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    text_level: str = "word",
    frames_per_beat: int = 4,
) -> MusicCorpus | TextCorpus:
    """A known data set by name (read from the data folder ``root``), or a path: a ``.mat``
    or pickle of piano rolls, a folder of MIDI files, or a folder with train/valid/test.txt.
    A benchmark's name means the benchmark, even beside a folder so named (``./jsb`` is that
    folder)."""
    from deeprnn.data import music

    path = Path(name).expanduser()
    if path.exists() and (data_set(name) is None or looks_like_path(name)):
        if path.is_file() and path.suffix == ".mat":
            return MusicCorpus(path.stem, music.load_mat(path))
        if path.is_file() and path.suffix in (".pickle", ".pkl"):
            return MusicCorpus(path.stem, music.load_pickle(path))
        if path.is_dir() and (path / "train.txt").exists():
            return load_text_folder(path, text_level)
        if path.is_dir():
            return MusicCorpus(path.name, *music.load_midi_folder(path, frames_per_beat))
        raise DataError(f"{path}: expected a .mat or .pickle file, a MIDI folder or a text folder")
    known = dataset(name)
    folder = data_dir(root)
    if known.kind == "text":
        files = dict(zip(SPLITS, (require(folder, file) for file in known.files), strict=True))
        return load_ptb(known.name, files)
    for file in known.files:
        if (folder / file).exists():
            loader = music.load_mat if file.endswith(".mat") else music.load_pickle
            return MusicCorpus(known.name, loader(folder / file))
    require(folder, known.files[0])  # raises, naming the file and where to get it
    raise AssertionError("unreachable")


def stats(corpus: MusicCorpus | TextCorpus) -> dict:
    """Sizes per split: music {"sequences", "steps"}; text {"tokens"} and the vocabulary size."""
    if isinstance(corpus, MusicCorpus):
        return {
            s: {"sequences": len(p), "steps": int(sum(len(x) for x in p))} for s, p in corpus.splits.items()
        }
    result = {"vocab_size": corpus.vocab_size, "level": corpus.level}
    result.update({s: {"tokens": len(ids)} for s, ids in corpus.splits.items()})
    return result
