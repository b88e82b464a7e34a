"""Music files by hand: what the pickle and .mat readers accept and refuse, MIDI files with the
edge cases other programs write (release velocities, stray and repeated note-ons and offs, notes
of no length, keys just off the piano, odd ticks per beat), what roll_to_midi writes, and a MIDI
folder without split subfolders dealt out by name."""

from __future__ import annotations

import pickle

import mido
import numpy as np
import pytest
import scipy.io

from deeprnn.cli import main
from deeprnn.data import DataError, load
from deeprnn.data.music import count_notes, load_midi_folder, load_pickle, midi_to_roll, roll_to_midi
from deeprnn.names import GRID_RULE


def write_pickle(tmp_path, content) -> object:
    path = tmp_path / "data.pickle"
    path.write_bytes(pickle.dumps(content))
    return path


GOOD = {"train": [[(60,), (60, 64)]], "valid": [[(108,)]], "test": [[(21,)]]}  # one-frame splits


def test_the_pickle_layout_and_what_it_refuses(tmp_path):
    splits = load_pickle(write_pickle(tmp_path, GOOD))  # 108 and 21: the piano's top and bottom keys
    assert [len(p) for s in ("train", "valid", "test") for p in splits[s]] == [2, 1, 1]
    assert splits["valid"][0][0, 108 - 21] == 1 and splits["test"][0][0, 0] == 1
    refused = {
        "expected a dict with keys 'train', 'valid', 'test'": {"train": [[(60,)]], "valid": [[(60,)]]},
        "pitch 109 is outside the 88 keys": {**GOOD, "train": [[(109,)]]},
        "pitch 200 is outside the 88 keys": {**GOOD, "train": [[(200,)]]},
        "pitch 20 is outside the 88 keys": {**GOOD, "train": [[(20,)]]},
        "pitch 60.0 is not an integer": {**GOOD, "train": [[(60.0,)]]},
        "pitch True is not an integer": {**GOOD, "train": [[(True,)]]},
        "split 'valid' is empty": {**GOOD, "valid": []},
        "split 'test' is empty": {**GOOD, "test": [[], []]},  # pieces, but not one frame
    }
    for message, content in refused.items():
        with pytest.raises(DataError, match=message):
            load_pickle(write_pickle(tmp_path, content))
    garbage = tmp_path / "garbage.pickle"
    garbage.write_bytes(b"\x80\x04not a pickle at all")
    with pytest.raises(DataError, match="not a readable pickle"):
        load_pickle(garbage)


def save_mat(path, pieces) -> None:
    cells = np.empty((1, len(pieces)), dtype=object)
    for i, piece in enumerate(pieces):
        cells[0, i] = piece
    scipy.io.savemat(path, {"traindata": cells, "validdata": cells, "testdata": cells})


def test_the_mat_layout_and_what_it_refuses(tmp_path):
    no_vars = tmp_path / "novars.mat"
    scipy.io.savemat(no_vars, {"train": np.zeros((2, 88))})
    with pytest.raises(DataError, match=r"no variable 'traindata' .*found \['train'\]\)"):
        load(str(no_vars))
    roll = np.zeros((3, 88))
    roll[1, 5] = 1
    refused = {
        r"shape \(3, 89\), expected \(T, 88\)": np.zeros((3, 89)),
        r"shape \(3, 88, 2\), expected \(T, 88\)": np.zeros((3, 88, 2)),
        "values other than 0 and 1": roll * 2,
    }
    for message, piece in refused.items():
        save_mat(tmp_path / "bad.mat", [piece])
        with pytest.raises(DataError, match=message):
            load(str(tmp_path / "bad.mat"))
    save_mat(tmp_path / "good.mat", [roll, np.zeros((0, 88))])  # an empty piece beside a good one
    corpus = load(str(tmp_path / "good.mat"))
    np.testing.assert_array_equal(corpus.splits["train"][0], roll)


# -- reading MIDI -------------------------------------------------------------------------------------


def save_midi(path, *tracks, ticks_per_beat: int = 480, kind: int = 1) -> object:
    midi = mido.MidiFile(type=kind, ticks_per_beat=ticks_per_beat)
    midi.tracks.extend(mido.MidiTrack(t) for t in tracks)
    midi.save(path)
    return path


def on(note: int, time: int, velocity: int = 80, channel: int = 0) -> mido.Message:
    return mido.Message("note_on", note=note, velocity=velocity, time=time, channel=channel)


def off(note: int, time: int, velocity: int = 0, channel: int = 0) -> mido.Message:
    return mido.Message("note_off", note=note, velocity=velocity, time=time, channel=channel)


def test_midi_as_other_programs_write_it(tmp_path):
    """120 ticks a frame. C4 from tick 0 is ended by a note-off with a release velocity (64);
    a stray note-off before it and a second note-on while it sounds change nothing. E4, on
    channel 16, at velocity 1, ends mid-frame (tick 200): it covers frames 0 and 1. A note of
    no length (tick 300), and the keys just below and above the piano (20, 109) and far above
    (121), are not in the roll. D4 sounds from tick 720 to 840, after C4's release."""
    path = save_midi(
        tmp_path / "song.mid",
        [
            off(62, 0),  # stray: D4 is not sounding
            on(60, 0),
            on(60, 120),  # C4 again while it sounds
            off(60, 360, velocity=64),  # released at tick 480
            on(62, 240),  # D4, ticks 720-840
            off(62, 120),
        ],
        [on(64, 0, velocity=1, channel=15), off(64, 200, channel=15)],
        [on(67, 300), off(67, 0), on(20, 0), on(109, 0), on(121, 0), off(20, 10), off(109, 0), off(121, 0)],
    )
    expected = np.zeros((7, 88), dtype=np.uint8)
    expected[0:4, 60 - 21] = 1  # tick 480 ends frame 3
    expected[6, 62 - 21] = 1
    expected[0:2, 64 - 21] = 1
    np.testing.assert_array_equal(midi_to_roll(path), expected)  # 4 frames a beat unless asked


def test_frames_are_cut_at_fractional_ticks_and_an_empty_file_is_an_empty_roll(tmp_path):
    """96 ticks a beat in 5 frames: 19.2 ticks a frame, so one beat is 5 frames (not 6, as
    whole 19-tick frames would make it); a file ending 200 ticks in, at 120 a frame, is 2 frames."""
    beat = save_midi(tmp_path / "beat.mid", [on(60, 0), off(60, 96)], ticks_per_beat=96)
    assert midi_to_roll(beat, frames_per_beat=5)[:, 60 - 21].tolist() == [1] * 5
    short = save_midi(tmp_path / "short.mid", [on(60, 0), off(60, 200)])  # ends in its 2nd frame
    assert midi_to_roll(short)[:, 60 - 21].tolist() == [1, 1]
    silent = save_midi(tmp_path / "silent.mid", [mido.MetaMessage("end_of_track", time=0)], ticks_per_beat=1)
    assert midi_to_roll(silent, frames_per_beat=4).shape == (0, 88)


def test_only_type_2_is_refused_for_its_independent_sequences(tmp_path):
    """Type 2's tracks are separate pieces, which one roll cannot hold; a header of type 3, which
    MIDI does not define, is read as mido reads it, track by track, like type 1."""
    path = save_midi(tmp_path / "two.mid", [on(60, 0), off(60, 480)], kind=2)
    with pytest.raises(DataError, match="MIDI type 2"):
        midi_to_roll(path)
    data = bytearray(save_midi(tmp_path / "one.mid", [on(60, 0), off(60, 480)]).read_bytes())
    assert data[8:10] == b"\x00\x01"  # the header's type field
    data[9] = 3
    (tmp_path / "three.mid").write_bytes(bytes(data))
    assert midi_to_roll(tmp_path / "three.mid")[:, 60 - 21].tolist() == [1, 1, 1, 1]


# -- writing MIDI -------------------------------------------------------------------------------------


def test_what_roll_to_midi_writes_by_default(tmp_path):
    """120 bpm, program 0, velocity 80, note-offs at velocity 0; 10 frames at 4 a beat last
    2.5 beats, 1.25 s, the silent frames at the end included."""
    roll = np.zeros((10, 88), dtype=np.uint8)
    roll[0:3, 39] = roll[2, 43] = 1
    midi = mido.MidiFile(roll_to_midi(roll, tmp_path / "out.mid"))
    (track,) = midi.tracks
    assert [m.tempo for m in track if m.type == "set_tempo"] == [500_000]
    assert [m.program for m in track if m.type == "program_change"] == [0]
    assert [(m.type, m.velocity) for m in track if m.type.startswith("note")] == [
        ("note_on", 80),
        ("note_on", 80),
        ("note_off", 0),
        ("note_off", 0),
    ]
    assert sum(m.time for m in track) == 10 * 120 and midi.length == pytest.approx(1.25)
    assert count_notes(roll) == 2


@pytest.mark.parametrize("frames_per_beat", [1, 4, 7, 9, 12, 64, 70, 96])
def test_a_grid_whose_ticks_fit_midi_round_trips_through_it(tmp_path, frames_per_beat):
    """480 ticks a beat where the grid divides it, else lcm(480, f) (7: 3,360; 70: 3,360); a
    random roll with a note held into the last frame comes back as it was."""
    roll = (np.random.default_rng(frames_per_beat).random((12, 88)) < 0.08).astype(np.uint8)
    roll[1:4, 39] = roll[3, 43] = roll[11, 87] = 1
    midi = roll_to_midi(roll, tmp_path / "grid.mid", frames_per_beat=frames_per_beat)
    assert mido.MidiFile(midi).ticks_per_beat == {7: 3360, 9: 1440, 64: 960, 70: 3360}.get(
        frames_per_beat, 480
    )
    assert np.array_equal(midi_to_roll(midi, frames_per_beat), roll)
    for outside in (0, 71):  # 71: lcm(480, 71) = 34,080 ticks, past MIDI's 32,767
        with pytest.raises(
            ValueError, match=rf"frames_per_beat must be .*lcm\(480, f\) <= 32767.*, got {outside}"
        ):
            roll_to_midi(roll, tmp_path / "bad.mid", frames_per_beat=outside)


def test_data_stats_refuses_a_grid_midi_cannot_hold_in_one_line(tmp_path, capsys):
    for outside in ("0", "-1", "71"):
        with pytest.raises(SystemExit) as stopped:
            main(["data", "stats", str(tmp_path), "--frames-per-beat", outside])
        assert stopped.value.code == 2
        assert f"--frames-per-beat: must be {GRID_RULE}, got {outside}" in capsys.readouterr().err


def test_roll_to_midi_takes_velocities_1_to_127_and_refuses_other_shapes(tmp_path):
    roll = np.zeros((2, 88), dtype=np.uint8)
    roll[0, 10] = 1
    for velocity in (1, 127):
        heard = midi_to_roll(roll_to_midi(roll, tmp_path / "v.mid", velocity=velocity), velocities=True)[1]
        assert heard[0, 10] == velocity
    with pytest.raises(ValueError, match=r"velocity must be in 1\.\.127"):
        roll_to_midi(roll, tmp_path / "loud.mid", velocity=128)
    for shape in [(4,), (2, 87), (2, 89), (2, 88, 1)]:
        with pytest.raises(ValueError, match=r"must have shape \(T, 88\)"):
            roll_to_midi(np.zeros(shape), tmp_path / "bad.mid")


# -- a MIDI folder --------------------------------------------------------------------------------------


def test_a_midi_folder_without_split_folders_is_dealt_out_by_name(tmp_path):
    """21 files in name order: every 10th (8, 18) to valid, the one after it (9, 19) to test."""
    roll = np.zeros((4, 88), dtype=np.uint8)  # one beat at the default 4 frames a beat
    roll[:, 30] = 1
    for i in range(21):
        roll_to_midi(roll, tmp_path / f"{i:02d}.mid")
    splits, names = load_midi_folder(tmp_path)
    numbers = {s: [int(n[:2]) for n in names[s]] for s in names}
    assert numbers == {"train": [*range(8), *range(10, 18), 20], "valid": [8, 18], "test": [9, 19]}
    assert all(p.shape == (4, 88) for s in splits.values() for p in s)
    for extra in (tmp_path / f"{i:02d}.mid" for i in range(9, 21)):
        extra.unlink()
    with pytest.raises(DataError, match="no MIDI files .* for the test split"):
        load_midi_folder(tmp_path)


def test_a_midi_folder_with_some_split_folders_is_refused_not_pooled(tmp_path):
    roll = np.zeros((4, 88), dtype=np.uint8)
    roll[:, 30] = 1
    for split in ("train", "test"):
        for i in range(3):
            roll_to_midi(roll, tmp_path / split / f"{i}.mid")
    with pytest.raises(DataError, match=r"has train/, test/ but no valid/: give all three split folders"):
        load_midi_folder(tmp_path)
    for i in range(3):
        roll_to_midi(roll, tmp_path / "valid" / f"{i}.mid")
    splits, names = load_midi_folder(tmp_path)
    assert names["test"] == ["test/0.mid", "test/1.mid", "test/2.mid"] and len(splits["valid"]) == 3
