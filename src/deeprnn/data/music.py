"""Polyphonic music as piano rolls: the benchmark files, and the user's own MIDI files.

A piece is a (T, 88) uint8 array, one row per frame, column j = MIDI pitch 21 + j (A0 … C8).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import mido
import numpy as np

from deeprnn.data.registry import DataError
from deeprnn.data.safe_pickle import UnsafePickleError, safe_load
from deeprnn.io import write_atomic
from deeprnn.names import GRID_RULE, MIDI_TICKS_PER_BEAT, SPLITS, writable_grid

KEYS = 88
LOWEST = 21  # MIDI pitch of the first key

Splits = dict[str, list[np.ndarray]]
Names = dict[str, list[str]]  # a name per piece, per split, where the data has them


def load_mat(path: Path) -> Splits:
    """The .mat layout: ``traindata``, ``validdata``, ``testdata``, each a 1×N cell of T×88 rolls."""
    import scipy.io

    try:
        content = scipy.io.loadmat(path)
    except Exception as error:  # scipy raises many types for a damaged file
        raise DataError(f"{path}: not a readable MATLAB file ({error})") from error
    splits = {}
    for split in SPLITS:
        key = f"{split}data"
        if key not in content:
            found = sorted(k for k in content if not k.startswith("__"))
            raise DataError(
                f"{path}: no variable {key!r} (expected traindata, validdata, testdata; found {found})"
            )
        cells = np.asarray(content[key]).reshape(-1)
        splits[split] = [_check_roll(np.asarray(piece), path, split, i) for i, piece in enumerate(cells)]
    return _check_splits(splits, path)


def load_pickle(path: Path) -> Splits:
    """The original layout: {split: [piece: [frame: (pitch, …)]]}, loaded safely."""
    try:
        content = safe_load(path.read_bytes())
    except UnsafePickleError as error:
        raise DataError(f"{path}: {error}") from error
    except Exception as error:
        raise DataError(f"{path}: not a readable pickle ({error})") from error
    if not isinstance(content, dict) or not all(s in content for s in SPLITS):
        raise DataError(f"{path}: expected a dict with keys 'train', 'valid', 'test'")
    splits = {}
    for split in SPLITS:
        pieces = content[split]
        if not isinstance(pieces, list):
            raise DataError(f"{path}: split {split!r} must be a list of pieces")
        splits[split] = [
            frames_to_roll(piece, f"{path}: {split} piece {i}") for i, piece in enumerate(pieces)
        ]
    return _check_splits(splits, path)


def frames_to_roll(frames: Iterable, where: str = "piece") -> np.ndarray:
    """A list of frames, each an iterable of MIDI pitches (21 … 108), to a (T, 88) roll."""
    if not isinstance(frames, (list, tuple)):
        raise DataError(f"{where}: a piece must be a list of frames")
    roll = np.zeros((len(frames), KEYS), dtype=np.uint8)
    for t, frame in enumerate(frames):
        if not isinstance(frame, (list, tuple)):
            raise DataError(f"{where}, frame {t}: a frame must be a tuple of MIDI pitches")
        for pitch in frame:
            if not isinstance(pitch, (int, np.integer)) or isinstance(pitch, bool):
                raise DataError(f"{where}, frame {t}: pitch {pitch!r} is not an integer")
            if not LOWEST <= pitch < LOWEST + KEYS:
                raise DataError(f"{where}, frame {t}: pitch {pitch} is outside the 88 keys (21 … 108)")
            roll[t, int(pitch) - LOWEST] = 1
    return roll


def _check_roll(piece: np.ndarray, path: Path, split: str, index: int) -> np.ndarray:
    if piece.ndim != 2 or piece.shape[1] != KEYS:
        raise DataError(f"{path}: {split} piece {index} has shape {piece.shape}, expected (T, {KEYS})")
    if piece.size and not np.isin(piece, (0, 1)).all():
        raise DataError(f"{path}: {split} piece {index} holds values other than 0 and 1")
    return piece.astype(np.uint8)


def _check_splits(splits: Splits, path: Path) -> Splits:
    for split, pieces in splits.items():
        if not pieces or sum(len(p) for p in pieces) == 0:
            raise DataError(f"{path}: split {split!r} is empty")
    return splits


def midi_to_roll(
    path: str | os.PathLike, frames_per_beat: int = 4, *, velocities: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Read a MIDI file into a (T, 88) roll, ``frames_per_beat`` frames per quarter note; with
    ``velocities``, also a (T, 88) uint8 array of the velocity of the note sounding in each cell.

    A note covers the frames its sounding time overlaps. Percussion (channel 10) and notes
    outside the 88 keys are left out."""
    notes, ticks_per_beat = _read_notes(Path(path))
    ticks_per_frame = ticks_per_beat / frames_per_beat
    end = max((stop for _, stop, _, _ in notes), default=0)
    roll = np.zeros((int(np.ceil(end / ticks_per_frame)), KEYS), dtype=np.uint8)
    loudness = np.zeros_like(roll)
    for start, stop, key, velocity in sorted(notes):
        if 0 <= key < KEYS and stop > start:
            first = int(start // ticks_per_frame)
            last = int(np.ceil(stop / ticks_per_frame))
            roll[first:last, key] = 1
            loudness[first:last, key] = velocity
    return (roll, loudness) if velocities else roll


def _read_notes(path: Path) -> tuple[list[tuple[int, int, int, int]], int]:
    """The notes of a MIDI file as (start tick, end tick, key, velocity), and its ticks per beat."""
    try:
        midi = mido.MidiFile(path)
    except Exception as error:
        raise DataError(f"{path}: not a readable MIDI file ({error})") from error
    if midi.type == 2:
        raise DataError(f"{path}: MIDI type 2 (independent sequences) is not supported")
    notes = []
    for track in midi.tracks:
        tick, sounding = 0, {}  # key -> (start tick, velocity)
        for message in track:
            tick += message.time
            if message.type not in ("note_on", "note_off") or message.channel == 9:
                continue
            key = message.note - LOWEST
            on = message.type == "note_on" and message.velocity > 0
            if on and key not in sounding:
                sounding[key] = (tick, message.velocity)
            elif not on and key in sounding:
                start, velocity = sounding.pop(key)
                notes.append((start, tick, key, velocity))
        notes.extend((start, tick, key, velocity) for key, (start, velocity) in sounding.items())
    return notes, midi.ticks_per_beat


def count_notes(roll: np.ndarray) -> int:
    """The notes of a roll as its MIDI file holds them: a key held over frames is one note."""
    active = np.asarray(roll) > 0
    return int(active[:1].sum() + (active[1:] & ~active[:-1]).sum())


def roll_to_midi(
    roll: np.ndarray,
    path: str | os.PathLike,
    frames_per_beat: int = 4,
    tempo_bpm: float = 120.0,
    program: int = 0,
    velocity: int | np.ndarray = 80,
) -> Path:
    """Write a (T, 88) roll as a one-track MIDI file (a key held over frames is one note).

    ``velocity``: one for every note, or a (T, 88) array read at each note's first frame (as
    :func:`midi_to_roll` returns it, so that a file keeps its velocities on a round trip)."""
    roll = np.asarray(roll)
    if roll.ndim != 2 or roll.shape[1] != KEYS:
        raise ValueError(f"a piano roll must have shape (T, {KEYS}), got {roll.shape}")
    if not writable_grid(frames_per_beat):
        raise ValueError(f"frames_per_beat must be {GRID_RULE}, got {frames_per_beat}")
    loudness = np.broadcast_to(np.asarray(velocity, dtype=np.int64), roll.shape)
    ticks_per_beat = math.lcm(MIDI_TICKS_PER_BEAT, frames_per_beat)
    ticks = ticks_per_beat // frames_per_beat
    active = np.vstack([np.zeros((1, KEYS), bool), roll > 0, np.zeros((1, KEYS), bool)])
    change = np.diff(active.astype(np.int8), axis=0)  # +1 note on at frame t, -1 note off
    onsets = change[:-1] > 0
    if not ((loudness[onsets] >= 1) & (loudness[onsets] <= 127)).all():
        raise ValueError("a note's velocity must be in 1..127 (0 would be a note-off)")
    events = sorted(
        (t * ticks, 0 if change[t, k] < 0 else 1, k) for t, k in zip(*np.nonzero(change), strict=True)
    )
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm), time=0))
    track.append(mido.Message("program_change", program=program, time=0))
    now = 0
    for tick, on, key in events:
        kind = "note_on" if on else "note_off"
        speed = int(loudness[tick // ticks, key]) if on else 0
        track.append(mido.Message(kind, note=LOWEST + int(key), velocity=speed, time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=len(roll) * ticks - now))  # silent frames last too
    midi = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    midi.tracks.append(track)
    return write_atomic(path, lambda file: midi.save(file=file))


def load_midi_folder(folder: str | os.PathLike, frames_per_beat: int = 4) -> tuple[Splits, Names]:
    """A user's MIDI files as splits, and each piece's file (relative to ``folder``):
    ``train/``, ``valid/``, ``test/`` subfolders if present; otherwise the files in name order,
    every 10th going to valid and the one after to test."""
    folder = Path(folder)
    suffixes = {".mid", ".midi"}

    def files(where: Path) -> list[Path]:
        return sorted(p for p in where.rglob("*") if p.suffix.lower() in suffixes)

    given = [s for s in SPLITS if (folder / s).is_dir()]
    if given and len(given) < len(SPLITS):  # dealt out by name, a test piece could land in train
        missing = ", ".join(f"{s}/" for s in SPLITS if s not in given)
        raise DataError(
            f"{folder} has {', '.join(f'{s}/' for s in given)} but no {missing}: give all three split "
            "folders, or none (the files are then dealt out by name, 8 to train, 1 to valid, 1 to test)"
        )
    if given:
        found = {s: files(folder / s) for s in SPLITS}
    else:
        every = files(folder)
        found = {
            "train": [p for i, p in enumerate(every) if i % 10 < 8],
            "valid": [p for i, p in enumerate(every) if i % 10 == 8],
            "test": [p for i, p in enumerate(every) if i % 10 == 9],
        }
    for split, paths in found.items():
        if not paths:
            raise DataError(f"{folder}: no MIDI files (*.mid, *.midi) for the {split} split")
    splits = {s: [midi_to_roll(p, frames_per_beat) for p in paths] for s, paths in found.items()}
    names = {s: [str(p.relative_to(folder)) for p in paths] for s, paths in found.items()}
    return _check_splits(splits, folder), names
