"""Music to listen to: each data set's time grid, priming, velocities, note counts, audio and
the gallery page (checked in a real headless browser)."""

from __future__ import annotations

import html
import json
import os
import shutil
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile
import torch

from deeprnn import gallery, published
from deeprnn.audio import RATE, RELEASE_SECONDS, Synthesiser, additive, find_synthesiser, render
from deeprnn.cli import main
from deeprnn.data import DataError, TextCorpus, load
from deeprnn.data.music import count_notes, midi_to_roll, roll_to_midi
from deeprnn.errors import ConfigError
from deeprnn.gallery import write_gallery
from deeprnn.names import DATA_SETS, Grid, grid_of
from deeprnn.published import Published
from deeprnn.sampling import sample
from deeprnn.training import trainer
from deeprnn.training.config import apply
from deeprnn.training.evaluation import evaluate_run, load_best

TINY = {"hidden_size": 8, "max_updates": 2, "batch_size": 4, "eval_batch_size": 64, "device": "cpu"}


@pytest.fixture(scope="module")
def jsb_run(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("jsb") / "run"
    trainer.train(apply({"model": "rnn", "data": "jsb", **TINY}), out, data_dir=str(data_root), log=print)
    return out


@pytest.fixture(scope="module")
def midi_folder(tmp_path_factory):
    """A user's MIDI folder: 3 pieces per split, named by file."""
    folder = tmp_path_factory.mktemp("midi")
    rng = np.random.default_rng(0)
    for split in ("train", "valid", "test"):
        for name in ("air", "bourree", "courante"):
            roll = (rng.random((24, 88)) < 0.05).astype(np.uint8)
            roll_to_midi(roll, folder / split / f"{name}.mid", frames_per_beat=2)
    return folder


@pytest.fixture(scope="module")
def midi_run(tmp_path_factory, midi_folder):
    out = tmp_path_factory.mktemp("midi-run") / "run"
    settings = {"model": "rnn-nade", "data": str(midi_folder), "frames_per_beat": 2, "tempo_bpm": 90}
    trainer.train(apply({**settings, **TINY, "nade_hidden": 4}), out, log=print)
    return out


def test_each_music_data_set_has_the_grid_it_was_sampled_on():
    # The data sets' page: frames every eighth note, quarter notes for JSB.
    assert {d.name: d.grid.frames_per_beat for d in DATA_SETS.values() if d.kind == "music"} == {
        "nottingham": 2,
        "jsb": 1,
        "musedata": 2,
        "piano-midi": 2,
    }
    assert all(d.grid is None for d in DATA_SETS.values() if d.kind == "text")
    assert grid_of("JSB_Chorales") is DATA_SETS["jsb"].grid
    assert grid_of("/my/midi", 3, 90.0) == Grid(3, 90.0)  # a user's folder: the grid it was read with
    assert Grid(2, 120).seconds_per_frame == 0.25
    config = apply({"model": "rnn", "data": "/my/midi", "frames_per_beat": 3, "tempo_bpm": 90})
    assert config.grid == Grid(3, 90.0)
    assert apply({"model": "rnn", "data": "jsb-chorales"}).grid == DATA_SETS["jsb"].grid


def test_a_jsb_sample_of_64_frames_lasts_64_beats_at_its_tempo(jsb_run, tmp_path, capsys):
    assert main(["sample", str(jsb_run), "--steps", "64", "--out", str(tmp_path)]) == 0
    midi = mido.MidiFile(tmp_path / "sample-0.mid")
    tempo = DATA_SETS["jsb"].grid.tempo_bpm
    assert midi.length == pytest.approx(64 * 60 / tempo)  # 64 beats: one frame a quarter note
    roll = midi_to_roll(tmp_path / "sample-0.mid", frames_per_beat=1)
    notes = sum(m.type == "note_on" and m.velocity > 0 for m in midi.tracks[0])
    assert count_notes(roll) == notes
    assert f"64 frames, {notes} notes, 48.0 s (1 frame per beat at 80 bpm)" in capsys.readouterr().out


def test_the_note_count_counts_a_held_key_once():
    roll = np.zeros((6, 88), np.uint8)
    roll[0:3, 10] = 1  # one note held 3 frames
    roll[4:6, 10] = 1  # the same key struck again
    roll[2, 20] = roll[3, 20] = 1  # a second note
    assert count_notes(roll) == 3
    assert int(roll.sum()) == 7  # what the CLI printed before: active cells


def test_velocities_survive_a_round_trip(tmp_path):
    """A file written elsewhere (velocity-0 note-offs, its own resolution) keeps its velocities."""
    beat = 96
    events = [(0, 60, 30), (beat, 60, 0), (beat, 64, 100), (3 * beat, 64, 0), (3 * beat, 67, 127)]
    events += [(4 * beat, 67, 0)]
    track, now = mido.MidiTrack(), 0
    for tick, note, velocity in events:
        track.append(mido.Message("note_on", note=note, velocity=velocity, time=tick - now))
        now = tick
    mido.MidiFile(ticks_per_beat=beat, tracks=[track]).save(tmp_path / "in.mid")
    roll, velocity = midi_to_roll(tmp_path / "in.mid", frames_per_beat=2, velocities=True)
    assert velocity[:, 60 - 21].tolist()[:2] == [30, 30] and velocity[2:6, 64 - 21].tolist() == [100] * 4
    roll_to_midi(roll, tmp_path / "out.mid", frames_per_beat=2, velocity=velocity)
    again, velocity_again = midi_to_roll(tmp_path / "out.mid", frames_per_beat=2, velocities=True)
    np.testing.assert_array_equal(again, roll)
    np.testing.assert_array_equal(velocity_again, velocity)
    ons = [m.velocity for m in mido.MidiFile(tmp_path / "out.mid").tracks[0] if m.type == "note_on"]
    assert sorted(v for v in ons if v) == [30, 100, 127]
    with pytest.raises(ValueError, match="velocity must be in 1..127"):
        roll_to_midi(roll, tmp_path / "bad.mid", velocity=np.zeros_like(roll))


def test_a_primer_opens_each_sample_unchanged_and_the_model_continues_it(midi_run, tmp_path):
    rng = np.random.default_rng(5)
    primer = (rng.random((12, 88)) < 0.06).astype(np.uint8)
    primer[0, 40] = 1
    velocity = rng.integers(20, 120, primer.shape).astype(np.uint8)
    roll_to_midi(primer, tmp_path / "song.mid", frames_per_beat=2, velocity=velocity)
    argv = ["sample", str(midi_run), "--prime", str(tmp_path / "song.mid"), "--prime-frames", "10"]
    argv += ["--steps", "20", "--count", "2", "--velocity", "64", "--out", str(tmp_path / "s")]
    assert main(argv) == 0
    model, _, _ = load_best(midi_run)
    generator = torch.Generator().manual_seed(0)  # --seed 0: the samples in the order drawn
    start = torch.from_numpy(np.vstack([np.zeros((1, 88)), primer[:10]]).astype(np.float32))
    for k in range(2):
        roll, heard = midi_to_roll(tmp_path / "s" / f"sample-{k}.mid", frames_per_beat=2, velocities=True)
        np.testing.assert_array_equal(roll[:10], primer[:10])
        onsets = roll[:10].astype(bool) & ~np.vstack([np.zeros((1, 88), bool), roll[:9].astype(bool)])
        np.testing.assert_array_equal(heard[:10][onsets], velocity[:10][onsets])
        expected = sample(model, 20, start=start, generator=generator).numpy().astype(np.uint8)
        np.testing.assert_array_equal(roll[10:], expected[: len(roll) - 10])  # a silent tail is not stored
        fresh = roll[10:].astype(bool) & ~roll[9:-1].astype(bool)
        assert (heard[10:][fresh] == 64).all()


def test_a_velocity_outside_midi_s_range_is_refused(midi_run, tmp_path):
    from deeprnn.sampling import write_samples

    with pytest.raises(ConfigError, match="velocity must be a MIDI velocity in 1..127, got 300"):
        write_samples(midi_run, tmp_path, steps=4, velocity=300)
    with pytest.raises(ConfigError, match="prime_frames takes the first frames of a primer"):
        write_samples(midi_run, tmp_path, steps=4, prime_frames=3)


def test_a_primer_without_notes_is_refused(midi_run, tmp_path):
    roll_to_midi(np.zeros((4, 88), np.uint8), tmp_path / "silent.mid")
    code = main(["sample", str(midi_run), "--prime", str(tmp_path / "silent.mid"), "--out", str(tmp_path)])
    assert code == 2


def test_text_primes_and_encodes_as_its_corpus_decodes(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "valid", "test"):
        (corpus / f"{split}.txt").write_text("the cat sat\nthe dog sat\n" * 10)
    trainer.train(apply({"model": "rnn", "data": str(corpus), **TINY, "bptt_steps": 5}), tmp_path / "run")
    argv = ["sample", str(tmp_path / "run"), "--prime", "the dog", "--steps", "5", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert (tmp_path / "sample-0.txt").read_text().startswith("the dog")
    words = load(str(corpus))
    assert words.decode(words.encode("the cat\nsat")) == "the cat\nsat"
    closed = TextCorpus("ptb-word", "word", ["a", "<eos>"], {}, 1)
    with pytest.raises(DataError, match="'zebra': not in the vocabulary of ptb-word"):
        closed.encode("a zebra")
    chars = TextCorpus("ptb-pennchar", "char", ["_", "a", "b", "<eos>"], {}, 3)
    assert chars.encode("ab a\n") == [1, 2, 0, 1, 3]


def _tone(pitch: int, seconds: float, path, velocity: int = 80, keys: int = 1) -> None:
    roll = np.zeros((int(seconds * 2), 88), np.uint8)
    roll[:, pitch - 21 : pitch - 21 + keys] = 1
    roll_to_midi(roll, path, frames_per_beat=2, tempo_bpm=60, velocity=velocity)


def test_the_built_in_synthesiser_plays_the_note_written_as_loud_as_written(tmp_path):
    _tone(69, 2.0, tmp_path / "a4.mid")  # A4 = 440 Hz for 2 s
    audio = additive(tmp_path / "a4.mid")[:, 0]
    spectrum = np.abs(np.fft.rfft(audio[: RATE * 2]))
    assert np.fft.rfftfreq(RATE * 2, 1 / RATE)[spectrum.argmax()] == pytest.approx(440, abs=1)
    _tone(69, 2.0, tmp_path / "soft.mid", velocity=20)
    _tone(69, 2.0, tmp_path / "loud.mid", velocity=60)
    soft, loud = (np.abs(additive(tmp_path / f"{n}.mid")).max() for n in ("soft", "loud"))
    assert loud / soft == pytest.approx(3.0, rel=1e-5)  # amplitude follows velocity
    _tone(40, 1.0, tmp_path / "cluster.mid", velocity=127, keys=12)  # would clip: scaled down
    assert np.abs(additive(tmp_path / "cluster.mid")).max() == pytest.approx(0.8, rel=1e-5)


def _synthesisers():
    found = [Synthesiser(None)]
    real = find_synthesiser()
    if real.soundfont is not None:
        found.append(real)
    elif os.environ.get("CI"):  # .ci/run installs FluidSynth and a soundfont: it must be used
        pytest.fail("FluidSynth or a General MIDI soundfont is missing")
    return found


@pytest.mark.parametrize("suffix", [".wav", ".ogg"])
def test_the_audio_lasts_as_long_as_the_midi_file(tmp_path, suffix):
    _tone(60, 3.5, tmp_path / "c4.mid")
    midi_seconds = mido.MidiFile(tmp_path / "c4.mid").length
    assert midi_seconds == 3.5
    for synthesiser in _synthesisers():
        path = render(tmp_path / "c4.mid", tmp_path / f"c4{suffix}", synthesiser)
        info = soundfile.info(path)
        assert info.duration == pytest.approx(midi_seconds + RELEASE_SECONDS, abs=1 / RATE), synthesiser.name
        audio, _ = soundfile.read(path)
        assert np.abs(audio).max() > 0.01, synthesiser.name  # it sounds


def test_sample_writes_a_wav_beside_each_midi_file(jsb_run, tmp_path, capsys):
    argv = ["sample", str(jsb_run), "--steps", "16", "--count", "2", "--audio", "--out", str(tmp_path)]
    assert main(argv) == 0
    for k in range(2):
        seconds = mido.MidiFile(tmp_path / f"sample-{k}.mid").length
        wav = soundfile.info(tmp_path / f"sample-{k}.wav")
        assert wav.duration == pytest.approx(seconds + RELEASE_SECONDS)
    assert "audio: " in capsys.readouterr().out  # says which synthesiser made it


def test_a_missing_soundfont_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(ConfigError, match="soundfont .*nothing.sf2 not found"):
        find_synthesiser(tmp_path / "nothing.sf2")


def test_per_piece_scores_name_a_midi_folder_s_files(midi_run):
    pieces = evaluate_run(midi_run, "test", per_piece=True)["pieces"]
    assert [p["name"] for p in pieces] == ["test/air.mid", "test/bourree.mid", "test/courante.mid"]


def _chromium() -> str | None:
    for name in (os.environ.get("DEEPRNN_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _open_in_browser(page_file: Path, screenshot: Path) -> tuple[list, list, list]:
    """The page in headless Chromium, once its sounds have loaded: [src, duration, failed] of
    each audio element, [src, width] of each picture, and the section headings."""
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    browser_path = _chromium()
    if browser_path is None:
        message = "no Chromium to test the gallery in (apt install chromium, or set DEEPRNN_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(page_file.as_uri())
        page.wait_for_function(
            "[...document.querySelectorAll('audio')].every(a => a.readyState >= 1 || a.error)", timeout=60_000
        )
        sounds = page.evaluate(
            "[...document.querySelectorAll('audio')].map(a => [a.getAttribute('src'), a.duration, !!a.error])"
        )
        pictures = page.evaluate("[...document.images].map(i => [i.getAttribute('src'), i.naturalWidth])")
        headings = page.evaluate("[...document.querySelectorAll('h2')].map(h => h.textContent)")
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    print(f"screenshot: {screenshot}")
    assert screenshot.read_bytes()[:4] == b"\x89PNG"
    for src, duration, failed in sounds:
        assert (page_file.parent / src).is_file() and not failed and duration > 1, src
    assert all(width > 0 for _, width in pictures), pictures
    return sounds, pictures, headings


def test_the_gallery_page_loads_in_a_browser_with_every_picture_and_sound(jsb_run, midi_run, tmp_path):
    sources = [jsb_run, midi_run, Published("jsb/rnn")]  # two runs and published weights
    page_file, _ = write_gallery(sources, tmp_path / "gallery", count=2, steps=12)
    sounds, pictures, headings = _open_in_browser(page_file, tmp_path / "gallery.png")
    assert len(sounds) == len(pictures) == 6
    assert headings[0] == "jsb/rnn" and headings[1].endswith("/rnn-nade") and headings[2] == "jsb/rnn'"


RESULTS = Path(__file__).resolve().parents[1] / "results"


def _gallery_rows() -> list[str]:
    """The rows the committed gallery shows: every row of results/music.md and music-nade.md on
    JSB Chorales and Nottingham, by its published name."""
    return [
        f"{row['data']}/{row['model']}"
        for table in ("music", "music-nade")
        for row in json.loads((RESULTS / f"{table}.json").read_text())["rows"]
        if row["data"] in ("jsb", "nottingham")
    ]


def test_the_committed_gallery_has_two_samples_of_every_jsb_and_nottingham_row(tmp_path):
    """results/gallery/: two samples of each row, every sound and picture loading in the browser."""
    rows = _gallery_rows()
    page = RESULTS / "gallery" / "index.html"
    sounds, pictures, headings = _open_in_browser(page, tmp_path / "gallery.png")
    assert sorted(headings) == sorted(rows)
    assert len(sounds) == len(pictures) == 2 * len(rows)


def test_the_committed_gallery_shows_the_published_weights_scores_and_settings():
    """A row's weights republished (a recipe landed) leave its gallery section stale: each section
    must show the scores of the weights published under its name now, and every setting their
    metadata records (settings added to the trainer since need not be shown)."""
    page = (RESULTS / "gallery" / "index.html").read_text(encoding="utf-8")
    sections = {s.split("</h2>")[0]: s for s in page.split("<section><h2>")[1:]}
    for name in _gallery_rows():
        source = Published(name)
        _, scores, _ = gallery._about(source)
        section = sections.get(html.escape(name))
        assert section is not None, f"{name} has no section in results/gallery/index.html"
        assert f"<p>{html.escape(gallery._score(source, scores))}</p>" in section, name
        shown = json.loads(html.unescape(section.split("<pre>")[-1].split("</pre>")[0]))
        recorded = json.loads(published.metadata(name)["train_config"])
        assert {key: shown.get(key) for key in recorded} == recorded, name
