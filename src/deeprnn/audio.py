"""MIDI to audio: FluidSynth with a General MIDI soundfont where one is installed, else a small
additive synthesiser of our own, so that a sample can always be listened to.

Install the real one in one line: ``apt install fluidsynth fluid-soundfont-gm`` (Debian, Ubuntu;
``timgm6mb-soundfont`` is a 6 MB alternative) or ``brew install fluid-synth`` plus a soundfont
named with ``--soundfont`` or ``$DEEPRNN_SOUNDFONT`` (docs/music.md).

Every rendering lasts the MIDI file's length plus ``RELEASE_SECONDS``, faded out, so that the
last notes ring rather than stop, whichever synthesiser made it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np

from deeprnn.errors import ConfigError
from deeprnn.io import write_atomic

RATE = 22_050  # samples per second: enough for a piano's range, half the size of 44.1 kHz
RELEASE_SECONDS = 1.0
SOUNDFONTS = (  # where the distributions put a General MIDI soundfont
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/opt/homebrew/share/soundfonts/default.sf2",
)
FORMATS = {".wav": ("WAV", "PCM_16"), ".ogg": ("OGG", "VORBIS")}  # .ogg: mono, to share on a page


@dataclass(frozen=True)
class Synthesiser:
    """FluidSynth with ``soundfont``, or (``soundfont`` None) the built-in additive one."""

    soundfont: Path | None = None

    @property
    def name(self) -> str:
        if self.soundfont is None:
            return "deeprnn's additive synthesiser (FluidSynth or a soundfont not found)"
        return f"FluidSynth with {self.soundfont.resolve().name}"


def find_synthesiser(soundfont: str | os.PathLike | None = None) -> Synthesiser:
    """FluidSynth with ``soundfont`` (else ``$DEEPRNN_SOUNDFONT``, else a distribution's GM
    soundfont) if the ``fluidsynth`` program is installed; otherwise the additive synthesiser.
    A soundfont named but missing is an error, not a quiet fallback."""
    named = soundfont or os.environ.get("DEEPRNN_SOUNDFONT")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"soundfont {path} not found (expected a .sf2 file)")
        if shutil.which("fluidsynth") is None:
            raise ConfigError(
                f"a soundfont was named ({path}) but the fluidsynth program is not installed "
                "(apt install fluidsynth, or brew install fluid-synth)"
            )
        return Synthesiser(path)
    found = next((Path(p) for p in SOUNDFONTS if Path(p).is_file()), None)
    return Synthesiser(found if found and shutil.which("fluidsynth") else None)


def render(midi: str | os.PathLike, out: str | os.PathLike, synthesiser: Synthesiser) -> Path:
    """Write the audio of the MIDI file ``midi`` to ``out`` (.wav, or .ogg for Vorbis)."""
    import soundfile

    out = Path(out)
    if out.suffix not in FORMATS:
        raise ConfigError(f"{out}: audio is written as {' or '.join(FORMATS)}")
    seconds = mido.MidiFile(midi).length + RELEASE_SECONDS
    font = synthesiser.soundfont
    audio = _fade_to(additive(midi) if font is None else _fluidsynth(midi, font), round(seconds * RATE))
    if out.suffix == ".ogg":
        audio = audio.mean(axis=1, keepdims=True)
    kind, subtype = FORMATS[out.suffix]
    extra = {"compression_level": 0.8} if kind == "OGG" else {}  # a quarter smaller than the default
    return write_atomic(
        out, lambda file: soundfile.write(file, audio, RATE, format=kind, subtype=subtype, **extra)
    )


def _fluidsynth(midi: str | os.PathLike, soundfont: Path) -> np.ndarray:
    import soundfile

    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "out.wav"
        command = ["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", str(RATE), "-F", str(wav)]
        done = subprocess.run([*command, str(soundfont), str(midi)], capture_output=True, text=True)
        if done.returncode != 0 or not wav.exists():
            raise RuntimeError(f"fluidsynth failed on {midi}: {done.stderr.strip() or done.stdout.strip()}")
        audio, _ = soundfile.read(wav, dtype="float32", always_2d=True)
    return audio


def additive(midi: str | os.PathLike) -> np.ndarray:
    """A piano-like rendering: each note three harmonics under a struck, decaying envelope."""
    notes = _notes_in_seconds(mido.MidiFile(midi))
    end = max((stop for _, stop, _, _ in notes), default=0.0) + RELEASE_SECONDS
    audio = np.zeros(round(end * RATE) + 1, dtype=np.float64)
    for start, stop, pitch, velocity in notes:
        ring = np.arange(round((stop - start + RELEASE_SECONDS / 2) * RATE)) / RATE
        frequency = 440.0 * 2 ** ((pitch - 69) / 12)
        tone = sum(np.sin(2 * np.pi * frequency * k * ring) / k**2 for k in (1, 2, 3))
        envelope = np.minimum(ring / 0.005, 1.0) * np.exp(-3.0 * ring)  # 5 ms attack, then decay
        envelope[ring > stop - start] *= np.exp(-12.0 * (ring[ring > stop - start] - (stop - start)))
        first = round(start * RATE)
        audio[first : first + len(ring)] += (velocity / 127) * tone * envelope
    peak = np.abs(audio).max(initial=0.0)
    return (audio / max(peak, 1.0) * 0.8).astype(np.float32)[:, None]


def _notes_in_seconds(midi: mido.MidiFile) -> list[tuple[float, float, int, int]]:
    """(start s, end s, pitch, velocity) of every note, percussion (channel 10) left out."""
    now, sounding, notes = 0.0, {}, []
    for message in midi:  # a MidiFile iterates its tracks merged, times in seconds
        now += message.time
        if message.type not in ("note_on", "note_off") or message.channel == 9:
            continue
        if message.type == "note_on" and message.velocity > 0:
            sounding.setdefault(message.note, (now, message.velocity))
        elif message.note in sounding:
            start, velocity = sounding.pop(message.note)
            notes.append((start, now, message.note, velocity))
    notes.extend((start, now, pitch, velocity) for pitch, (start, velocity) in sounding.items())
    return notes


def _fade_to(audio: np.ndarray, length: int) -> np.ndarray:
    """``audio`` cut or padded with silence to ``length`` samples, its release faded out."""
    fitted = np.zeros((length, audio.shape[1]), dtype=np.float32)
    fitted[: min(length, len(audio))] = audio[:length]
    fade = min(round(RELEASE_SECONDS * RATE), length)
    fitted[length - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None]
    return fitted
