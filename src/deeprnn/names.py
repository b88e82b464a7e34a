"""Every name deeprnn knows, written once: the data sets (with their aliases, kind, alphabet and
the paper's metric), the models, the splits, the metrics and the paper's tables.

The presets (:mod:`deeprnn.presets`), the data files (:mod:`deeprnn.data.registry`),
``deeprnn reproduce``, the training configuration and the command line's help all read them
from here, so a new data set or model is added in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from deeprnn.errors import ConfigError

SPLITS = ("train", "valid", "test")
KINDS = ("music", "text")
METRICS = ("nll", "bpc", "ppl")  # nats per frame, bits per character, perplexity (docs/paper.md §3)


# A MIDI file of a roll of f frames a beat has lcm(480, f) ticks a beat (480 for every usual grid),
# which the format caps at 32,767: f from 1 to 70, and beyond where the lcm fits (96, 120, 480 ...).
MIDI_TICKS_PER_BEAT = 480
GRID_RULE = "a whole number of frames a beat with lcm(480, f) <= 32767 (1 to 70, 96, 120, ...)"


def writable_grid(frames_per_beat: int) -> bool:
    """Whether a roll of ``frames_per_beat`` frames a beat can be written as MIDI (GRID_RULE)."""
    return frames_per_beat >= 1 and math.lcm(MIDI_TICKS_PER_BEAT, frames_per_beat) <= 32767


@dataclass(frozen=True)
class Grid:
    """A piano roll's time grid: frames per beat (a quarter note) and the tempo it is played at."""

    frames_per_beat: int
    tempo_bpm: float

    @property
    def seconds_per_frame(self) -> float:
        return 60.0 / (self.tempo_bpm * self.frames_per_beat)


# The benchmark rolls were sampled "every eighth note (quarter note for JSB chorales) following
# the beat information present in the MIDI file" (the data sets' page, Boulanger-Lewandowski et
# al. 2012: docs/music.md). The rolls keep no tempo; the tempos here are ours, for listening.
EIGHTHS, QUARTERS = 2, 1


@dataclass(frozen=True)
class DataSet:
    name: str
    kind: str  # one of KINDS
    symbols: int  # the model's input and output size: 88 piano keys, the characters, the words
    metric: str  # the one the paper reports
    sizes_from: str  # the column of the paper's size table its models take (docs/paper.md §3)
    about: str
    aliases: tuple[str, ...] = ()
    grid: Grid | None = None  # music: how its frames map to beats and seconds


DATA_SETS: dict[str, DataSet] = {
    d.name: d
    for d in (
        DataSet("nottingham", "music", 88, "nll", "nottingham", "Nottingham", grid=Grid(EIGHTHS, 120)),
        DataSet(
            "jsb",
            "music",
            88,
            "nll",
            "jsb",
            "JSB Chorales",
            ("jsb-chorales", "jsbchorales"),
            grid=Grid(QUARTERS, 80),
        ),
        DataSet("musedata", "music", 88, "nll", "musedata", "MuseData", grid=Grid(EIGHTHS, 100)),
        DataSet(
            "piano-midi",
            "music",
            88,
            "nll",
            "musedata",  # not in the paper: MuseData's sizes
            "Piano-midi.de",
            ("piano-midi.de", "pianomidi"),
            grid=Grid(EIGHTHS, 100),
        ),
        DataSet(
            "ptb-char",
            "text",
            50,
            "bpc",
            "ptb-char",
            "Penn Treebank characters as in the paper (the word files' characters, 50 symbols)",
            ("ptb-chars", "ptbchar"),
        ),
        DataSet(
            "ptb-pennchar",
            "text",
            49,
            "bpc",
            "ptb-char",
            "Penn Treebank characters, the ptb.char.* layout (49 symbols with <eos>)",
            ("pennchar",),
        ),
        DataSet(
            "ptb-word",
            "text",
            10000,
            "ppl",
            "ptb-word",
            "Penn Treebank words (10k vocabulary, <eos> per line)",
            ("ptb-words", "ptbword"),
        ),
    )
}
_ALIASES = {alias: d.name for d in DATA_SETS.values() for alias in d.aliases}

# The presets (deeprnn.presets): the paper's models, and DT-RNN and DO-RNN, which it defines too;
# then the same ⊕ with a NADE ▷ (RNN-NADE, Boulanger-Lewandowski et al., 2012: docs/paper.md §5).
MODELS = ("rnn", "dt-rnn", "dts-rnn", "do-rnn", "dot-rnn", "dots-rnn", "srnn", "dots-rnn*")
NADE_MODELS = ("rnn-nade", "dts-rnn-nade", "dots-rnn-nade")
MODELS += NADE_MODELS
PAPER_MODELS = ("rnn", "dts-rnn", "dots-rnn", "srnn")  # the four columns of the paper's tables


@dataclass(frozen=True)
class Table:
    """One of the paper's result tables, as ``deeprnn reproduce`` rebuilds it."""

    data: tuple[str, ...]
    models: tuple[str, ...]
    metric: str


TABLES = {
    "music": Table(("nottingham", "jsb", "musedata", "piano-midi"), (*PAPER_MODELS, "dots-rnn*"), "nll"),
    "ptb-char": Table(("ptb-char",), PAPER_MODELS, "bpc"),
    "ptb-word": Table(("ptb-word",), PAPER_MODELS, "ppl"),
    # not in the paper: the same characters in the layout later work reports (DT(S)-RNN only)
    "ptb-pennchar": Table(("ptb-pennchar",), ("dts-rnn",), "bpc"),
    "music-nade": Table(("nottingham", "jsb", "musedata", "piano-midi"), NADE_MODELS, "nll"),
}


def data_set(name: str) -> DataSet | None:
    """The data set called ``name`` or one of its aliases (any case, ``_`` or ``-``), else None."""
    key = str(name).strip().lower().replace("_", "-").replace(" ", "-")
    return DATA_SETS.get(_ALIASES.get(key, key))


def grid_of(data: str, frames_per_beat: int = 4, tempo_bpm: float = 120.0) -> Grid:
    """The time grid of the music data set ``data``; for a user's MIDI folder (or any other
    path), the one it was read with: ``frames_per_beat`` at ``tempo_bpm``."""
    known = data_set(data)
    if known is not None and known.grid is not None:
        return known.grid
    return Grid(frames_per_beat, tempo_bpm)


def canonical_data(name: str) -> str:
    """'JSB_Chorales' -> 'jsb'; a ConfigError naming the data sets for an unknown name."""
    found = data_set(name)
    if found is None:
        raise ConfigError(f"unknown data set {name!r}; expected one of: {', '.join(DATA_SETS)}")
    return found.name


def canonical_model(name: str) -> str:
    """'DT(S)-RNN', 'dts_rnn', 'DTSRNN' -> 'dts-rnn'; a ConfigError naming the models otherwise."""
    key = str(name).strip().lower().replace("(s)", "s").replace("_", "").replace("-", "").replace(" ", "")
    for model in MODELS:
        if model.replace("-", "") == key:
            return model
    raise ConfigError(
        f"unknown model {name!r}; expected one of: {', '.join(MODELS)} (or the paper's spellings)"
    )


def file_name(model: str) -> str:
    """A model's name as a file or folder name: 'dots-rnn*' -> 'dots-rnn-star'."""
    return model.replace("*", "-star")
