"""Sampling from a trained model: music as MIDI and piano-roll pictures, text as text.

``deeprnn sample RUN`` writes them from a run's best parameters. Generation is ancestral:
start from the boundary input (a silent frame, or the line-end token), draw y_t from the
head's distribution, feed it back as x_{t+1}, carry the state.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from deeprnn.errors import ConfigError
from deeprnn.io import write_atomic, write_text
from deeprnn.models import DeepRNN

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
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tokens = model.config.tokens
    if start is None:
        start = torch.zeros(1, dtype=torch.int64) if tokens else torch.zeros(1, model.config.input_size)
    x, state, out = start.to(device).unsqueeze(1), None, []
    for _ in range(steps):
        logits, state = model(x, state)
        draw = model.head.sample(logits[-1:], generator=generator, temperature=temperature)
        out.append(draw[0, 0])
        x = draw.to(torch.int64) if tokens else draw
    model.train(was_training)
    return torch.stack(out).cpu()


def save_piano_roll(roll: np.ndarray, path: str | Path, title: str = "") -> Path:
    """A picture of a (T, 88) roll: time to the right, pitch upwards."""
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
    ax.set(xlabel="frame", ylabel="MIDI pitch", title=title)
    fig.tight_layout()
    return write_atomic(path, lambda file: fig.savefig(file, format="png", dpi=100))


def write_samples(
    run: str | Path,
    out: str | Path,
    *,
    steps: int,
    count: int = 1,
    temperature: float = 1.0,
    seed: int = 0,
    device: str | None = None,
) -> list[str]:
    """Draw ``count`` samples from a run's best parameters into ``out``: MIDI files and piano-roll
    pictures (music) or text files (text). Returns what was written, a line per sample (the
    text itself, for text)."""
    from deeprnn.data import TextCorpus
    from deeprnn.data.music import roll_to_midi
    from deeprnn.training.evaluation import load_best

    model, config, _ = load_best(run, device)
    out = Path(out)
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    if model.config.tokens:  # the run's vocabulary, decoded as its corpus decodes
        v = json.loads((Path(run) / "vocab.json").read_text())
        corpus = TextCorpus(v["name"], v["level"], v["vocab"], {}, v["boundary"])
    lines = []
    for k in range(count):
        if model.config.tokens:
            start = torch.tensor([corpus.boundary])
            ids = sample(model, steps, start=start, temperature=temperature, generator=generator)
            text = corpus.decode(ids.tolist())
            write_text(out / f"sample-{k}.txt", text)
            lines.append(text)
            continue
        roll = sample(model, steps, temperature=temperature, generator=generator).numpy().astype("uint8")
        roll_to_midi(roll, out / f"sample-{k}.mid", frames_per_beat=config.frames_per_beat)
        save_piano_roll(roll, out / f"sample-{k}.png", title=f"{config.model} on {config.data}, sample {k}")
        lines.append(f"{out}/sample-{k}.mid and .png: {roll.shape[0]} frames, {int(roll.sum())} notes")
    return lines
