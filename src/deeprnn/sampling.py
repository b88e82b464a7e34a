"""Sampling from a trained model: music as MIDI and piano-roll pictures, text as text.

``deeprnn sample RUN`` writes them from a run's best parameters (or ``--pretrained NAME``, from
published weights). Generation is ancestral:
start from the boundary input (a silent frame, or the line-end token), draw y_t from the
head's distribution, feed it back as x_{t+1}, carry the state.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from deeprnn import published
from deeprnn.driver import map_carry
from deeprnn.errors import ConfigError
from deeprnn.io import write_atomic, write_text
from deeprnn.models import DeepRNN
from deeprnn.published import Published

MAX_ROLL_INCHES = 160  # the widest piano-roll picture: 16,000 pixels at 100 dpi


@torch.no_grad()
def sample(
    model: DeepRNN,
    steps: int,
    *,
    start: torch.Tensor | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``steps`` draws: (steps, 88) 0/1 frames, or (steps,) token ids.

    ``start`` primes the state: (T, 88) frames or (T,) ids, the first being the context of the
    second (by default one silent frame, or token 0 — pass the line-end token for text)."""
    if steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"temperature must be a finite number above 0, got {temperature}")
    c = model.config
    if c.output_size != c.input_size:
        raise ConfigError(
            f"a model samples by reading its draws back: its output size ({c.output_size}) must be "
            f"its input size ({c.input_size})"
        )
    if start is None:
        start = torch.zeros(1, dtype=torch.int64) if c.tokens else torch.zeros(1, c.input_size)
    if len(start) == 0:
        raise ConfigError("start must hold at least one step (the context of the first draw)")
    was_training = model.training
    model.eval()
    try:
        return _draw(model, steps, start, temperature, generator)
    finally:
        model.train(was_training)


def _draw(
    model: DeepRNN, steps: int, start: torch.Tensor, temperature: float, generator: torch.Generator | None
) -> torch.Tensor:
    """The context in one call (unbatched, whatever the layout), then one step a draw: a draw
    is what the model reads, so the checks of DeepRNN.step are left out (Recurrence.stepper)."""
    device = next(model.parameters()).device
    logits, state = model(start.to(device))
    last, state, out = logits[-1:], map_carry(lambda part: part.unsqueeze(1), state), []
    advance = model.recurrence.stepper(batch=1)
    for step in range(steps):
        draw = model.head.sample(last, generator=generator, temperature=temperature)
        out.append(draw[0])
        if step + 1 < steps:
            h, state = advance(draw.unsqueeze(0), state)
            last = model.output(h)
    return torch.stack(out).cpu()


def save_piano_roll(roll: np.ndarray, path: str | Path, title: str = "", primed: int = 0) -> Path:
    """A picture of a (T, 88) roll: time to the right, pitch upwards; a line where the first
    ``primed`` frames (a primer the model continued) end."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    width = min(max(6, roll.shape[0] / 25), MAX_ROLL_INCHES)  # a long roll is drawn denser
    fig = Figure(figsize=(width, 4))
    ax = fig.subplots()
    ax.imshow(
        np.asarray(roll).T,
        origin="lower",
        aspect="auto",
        cmap="Greys",
        interpolation="nearest",
        extent=(0, roll.shape[0], 21 - 0.5, 108 + 0.5),
    )
    if primed:
        ax.axvline(primed, color="tab:red", linewidth=1, label="end of the primer")
        ax.legend(loc="upper right")
    ax.set(xlabel="frame", ylabel="MIDI pitch", title=title)
    fig.tight_layout()
    return write_atomic(path, lambda file: fig.savefig(file, format="png", dpi=100))


def write_samples(
    run: str | Path | Published,
    out: str | Path,
    *,
    steps: int,
    count: int = 1,
    temperature: float = 1.0,
    seed: int = 0,
    device: str | None = None,
    prime: str | None = None,
    prime_frames: int | None = None,
    velocity: int = 80,
    audio: str | None = None,
    soundfont: str | None = None,
) -> list[str]:
    """Draw ``count`` samples from a run's best parameters into ``out``: a MIDI file, a piano
    roll and (``audio``: ".wav" or ".ogg") its audio per sample of music, a text file per sample
    of text. Returns a line per file written (the text itself, for text).

    ``prime`` continues a piece: a MIDI file (its first ``prime_frames`` frames, read on the
    run's grid) or a text. The model reads it, then samples; it opens every sample unchanged,
    a MIDI primer with its own velocities (sampled notes get ``velocity``)."""
    from deeprnn.audio import find_synthesiser, render
    from deeprnn.training.evaluation import load_best

    model, config, _ = load_best(run, device)
    if model.config.tokens and (audio or prime_frames):
        raise ConfigError(f"{run} is a text run: audio and --prime-frames are for music runs")
    if prime_frames and not prime:
        raise ConfigError("prime_frames takes the first frames of a primer: give prime too")
    if not 1 <= velocity <= 127:
        raise ConfigError(f"velocity must be a MIDI velocity in 1..127, got {velocity}")
    out = Path(out)
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    corpus = _vocabulary(run) if model.config.tokens else None
    start, opening, loudness = _primer(model, corpus, config, prime, prime_frames)
    synthesiser = find_synthesiser(soundfont) if audio and corpus is None else None
    lines = []
    for k in range(count):
        draws = sample(model, steps, start=start, temperature=temperature, generator=generator)
        if corpus is not None:
            text = corpus.decode([*opening, *draws.tolist()])
            write_text(out / f"sample-{k}.txt", text)
            lines.append(text)
            continue
        roll = np.vstack([opening, draws.numpy().astype(np.uint8)])
        velocities = np.vstack([loudness, np.full((steps, roll.shape[1]), velocity, np.uint8)])
        title = f"{config.model} on {config.data}, sample {k}"
        midi, line = _write_music(out / f"sample-{k}", roll, velocities, len(opening), config.grid, title)
        if synthesiser is not None:
            line += f"; {render(midi, midi.with_suffix(audio), synthesiser).name}"
        lines.append(line)
    if synthesiser is not None:
        lines.append(f"audio: {synthesiser.name}")
    return lines


def _vocabulary(run: str | Path | Published):
    """The run's vocabulary, to encode a primer and decode samples as its corpus does."""
    from deeprnn.data import TextCorpus

    if isinstance(run, Published):
        meta = published.metadata(run.name)
        if "vocab" not in meta:
            raise ConfigError(f"{run.name}: published without the vocabulary a text model is read with")
        v = json.loads(meta["vocab"])
    else:
        v = json.loads((Path(run) / "vocab.json").read_text())
    return TextCorpus(v["name"], v["level"], v["vocab"], {}, v["boundary"])


def _primer(model: DeepRNN, corpus, config, prime: str | None, prime_frames: int | None):
    """What the model reads before it samples (None: the boundary alone), what opens each
    sample, and (music) the velocities of that opening."""
    keys = model.config.input_size
    if corpus is not None:
        ids = corpus.encode(prime) if prime else []
        return torch.tensor([corpus.boundary, *ids]), ids, None
    if prime is None:
        return None, np.zeros((0, keys), np.uint8), np.zeros((0, keys), np.uint8)
    from deeprnn.data.music import midi_to_roll

    roll, loudness = midi_to_roll(prime, config.grid.frames_per_beat, velocities=True)
    roll, loudness = roll[:prime_frames], loudness[:prime_frames]
    if not roll.any():
        within = f" in its first {prime_frames} frames" if prime_frames else ""
        raise ConfigError(f"{prime}: the primer has no notes{within}; a primer must have some to continue")
    silence = np.zeros((1, keys), np.float32)  # the boundary input that opens every piece
    return torch.from_numpy(np.vstack([silence, roll]).astype(np.float32)), roll, loudness


def _write_music(stem: Path, roll: np.ndarray, velocities: np.ndarray, primed: int, grid, title: str):
    """``stem``.mid and .png of a sampled roll; the MIDI file, and a line saying what it holds."""
    from deeprnn.data.music import count_notes, roll_to_midi

    fpb, bpm = grid.frames_per_beat, grid.tempo_bpm
    midi = roll_to_midi(roll, stem.with_suffix(".mid"), fpb, bpm, velocity=velocities)
    save_piano_roll(roll, stem.with_suffix(".png"), title, primed)
    seconds = len(roll) * grid.seconds_per_frame
    line = (
        f"{stem}.mid and .png: {len(roll)} frames, {count_notes(roll)} notes, {seconds:.1f} s "
        f"({fpb} frame{'s' * (fpb > 1)} per beat at {bpm:g} bpm)"
    )
    return midi, line
