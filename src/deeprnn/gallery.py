"""A listening page: for each run, its samples as piano rolls and audio players, beside its test
score and its configuration, on one static HTML page (``deeprnn gallery RUN… --out DIR``).

People judge a music model by listening to it; the page puts the models of a table side by side.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from deeprnn.io import write_text
from deeprnn.names import file_name
from deeprnn.sampling import write_samples
from deeprnn.training.run_folder import read_config

AUDIO = ".ogg"  # Vorbis: a tenth of the WAV's size, and every current browser plays it
STYLE = """body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; }
section { border-top: 1px solid #ccc; padding: 1rem 0; }
.samples { display: grid; grid-template-columns: repeat(auto-fit, minmax(26rem, 1fr)); gap: 1rem; }
figure { margin: 0; } img { max-width: 100%; display: block; } audio { width: 100%; }
pre { background: #f5f5f5; padding: 0.5rem; overflow-x: auto; font-size: 0.8rem; }"""


def write_gallery(
    runs: list[str | Path],
    out: str | Path,
    *,
    count: int = 2,
    steps: int = 64,
    seed: int = 0,
    temperature: float = 1.0,
    soundfont: str | None = None,
    device: str | None = None,
) -> tuple[Path, list[str]]:
    """Sample ``count`` pieces of ``steps`` frames (tokens, for text) from each run's best
    parameters into ``out``, and write ``out/index.html`` showing them. Returns the page and
    the lines :func:`write_samples` printed."""
    out, sections, printed, taken = Path(out), [], [], set()
    for run in map(Path, runs):
        config = read_config(run)
        label = f"{config.data}/{file_name(config.model)}"
        while label in taken:  # two runs of one model: keep both
            label += "'"
        taken.add(label)
        folder = label.replace("/", "-").replace("'", "-b")
        text = (run / "vocab.json").exists()  # a text run keeps its vocabulary
        options = {"steps": steps, "count": count, "seed": seed, "temperature": temperature, "device": device}
        audio = {} if text else {"audio": AUDIO, "soundfont": soundfont}
        printed += write_samples(run, out / folder, **options, **audio)
        sections.append(_section(label, run, folder, count, text, out))
    page = (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>deeprnn: samples</title><style>{STYLE}</style></head><body>\n"
        f"<h1>Samples from {len(sections)} model{'s' * (len(sections) != 1)}</h1>\n"
        f"<p>{count} samples of {steps} steps each, seed {seed}, temperature {temperature:g}."
        f" {html.escape(printed[-1]) if printed and printed[-1].startswith('audio:') else ''}</p>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )
    return write_text(out / "index.html", page), printed


def _section(label: str, run: Path, folder: str, count: int, text: bool, out: Path) -> str:
    """One run: its name, score, samples and configuration."""
    parts = [f"<section><h2>{html.escape(label)}</h2>", f"<p>{html.escape(_score(run))}</p>"]
    parts.append("<div class='samples'>")
    for k in range(count):
        if text:
            sample = (out / folder / f"sample-{k}.txt").read_text(encoding="utf-8")
            parts.append(f"<pre>{html.escape(sample)}</pre>")
            continue
        stem = f"{folder}/sample-{k}"
        parts.append(
            f"<figure><img src='{stem}.png' alt='piano roll of {html.escape(label)}, sample {k}'>"
            f"<audio controls preload='metadata' src='{stem}{AUDIO}'></audio>"
            f"<figcaption>sample {k}: <a href='{stem}.mid'>MIDI</a></figcaption></figure>"
        )
    config = json.dumps(read_config(run).to_dict(), indent=2)
    parts.append("</div>")
    parts.append(f"<details><summary>configuration</summary><pre>{html.escape(config)}</pre></details>")
    return "\n".join(parts) + "</section>"


def _score(run: Path) -> str:
    """The run's test score as its results.json holds it, or why there is none."""
    results_file = run / "results.json"
    if not results_file.exists():
        return "no test score yet (the run has not finished)"
    results = json.loads(results_file.read_text())
    scores = results.get("scores", {})
    line = f"test {results['metric']} {scores.get('test', {}).get('value', float('nan')):.3f}"
    second = scores.get("test_from_second_frame")
    if second:
        line += f" (frames 2..T: {second['value']:.3f})"
    return f"{line}; valid {scores.get('valid', {}).get('value', float('nan')):.3f}; run {run.name}"
