"""A listening page: for each run, its samples as piano rolls and audio players, beside its test
score and its configuration, on one static HTML page (``deeprnn gallery RUN… --out DIR``).

People judge a music model by listening to it; the page puts the models of a table side by side.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from urllib.parse import quote

from deeprnn import published
from deeprnn.io import write_text
from deeprnn.names import file_name
from deeprnn.published import Published
from deeprnn.sampling import write_samples
from deeprnn.training.config import TrainConfig, apply
from deeprnn.training.run_folder import read_config

AUDIO = ".ogg"  # Vorbis: a tenth of the WAV's size, and every current browser plays it
STYLE = """body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; }
section { border-top: 1px solid #ccc; padding: 1rem 0; }
.samples { display: grid; grid-template-columns: repeat(auto-fit, minmax(26rem, 1fr)); gap: 1rem; }
figure { margin: 0; } img { max-width: 100%; display: block; } audio { width: 100%; }
pre { background: #f5f5f5; padding: 0.5rem; overflow-x: auto; font-size: 0.8rem; }"""


def write_gallery(
    sources: list[str | Path | Published],
    out: str | Path,
    *,
    count: int = 2,
    steps: int = 64,
    seed: int = 0,
    temperature: float = 1.0,
    soundfont: str | None = None,
    device: str | None = None,
) -> tuple[Path, list[str]]:
    """Sample ``count`` pieces of ``steps`` frames (tokens, for text) from each source (a run
    folder's best parameters, or published weights) into ``out``, and write ``out/index.html``
    showing them. Returns the page and the lines :func:`write_samples` printed."""
    out, sections, printed, taken = Path(out), [], [], set()
    for source in sources:
        config, scores, text = _about(source)
        label = f"{published.data_name(config.data)}/{config.model}"
        while label in taken:  # two runs of one model: keep both
            label += "'"
        taken.add(label)
        folder = file_name(label.replace("/", "-").replace("'", "-b"))
        options = {"steps": steps, "count": count, "seed": seed, "temperature": temperature, "device": device}
        audio = {} if text else {"audio": AUDIO, "soundfont": soundfont}
        printed += write_samples(source, out / folder, **options, **audio)
        sections.append(_section(label, _score(source, scores), config, out / folder, count, text))
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


def _about(source: str | Path | Published) -> tuple[TrainConfig, dict | None, bool]:
    """A source's training configuration, its scores (None for an unfinished run) and whether
    it models text."""
    if isinstance(source, Published):
        meta = published.metadata(source.name)
        return apply(json.loads(meta["train_config"])), json.loads(meta["scores"]), "vocab" in meta
    run = Path(source)
    results = run / "results.json"
    scores = json.loads(results.read_text())["scores"] if results.exists() else None
    return read_config(run), scores, (run / "vocab.json").exists()  # a text run keeps its vocabulary


def _section(label: str, score: str, config: TrainConfig, folder: Path, count: int, text: bool) -> str:
    """One model: its name, score, samples (in ``folder``) and configuration."""
    parts = [f"<section><h2>{html.escape(label)}</h2>", f"<p>{html.escape(score)}</p>"]
    parts.append("<div class='samples'>")
    for k in range(count):
        if text:
            sample = (folder / f"sample-{k}.txt").read_text(encoding="utf-8")
            parts.append(f"<pre>{html.escape(sample)}</pre>")
            continue
        stem = html.escape(quote(f"{folder.name}/sample-{k}"))
        parts.append(
            f"<figure><img src='{stem}.png' alt='piano roll of {html.escape(label)}, sample {k}'>"
            f"<audio controls preload='metadata' src='{stem}{AUDIO}'></audio>"
            f"<figcaption>sample {k}: <a href='{stem}.mid'>MIDI</a></figcaption></figure>"
        )
    parts.append("</div>")
    settings = html.escape(json.dumps(config.to_dict(), indent=2))
    parts.append(f"<details><summary>configuration</summary><pre>{settings}</pre></details>")
    return "\n".join(parts) + "</section>"


def _score(source: str | Path | Published, scores: dict | None) -> str:
    """The test score (both conventions, for music) and the validation score, and the source."""
    where = str(source) if isinstance(source, Published) else f"run {Path(source).name}"
    if scores is None:
        return f"no test score yet (the run has not finished); {where}"
    test, valid = scores["test"], scores["valid"]
    line = f"test {test['metric']} {test['value']:.3f}"
    if "test_from_second_frame" in scores:
        line += f" (frames 2..T: {scores['test_from_second_frame']['value']:.3f})"
    return f"{line}; valid {valid['value']:.3f}; {where}"
