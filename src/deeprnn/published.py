"""Published weights: the trained model of each row of ``results/``, by name (``"jsb/dts-rnn"``).

Each is ``weights/<data>/<model>.safetensors`` inside the package, float32 as trained, so that
the table's number reproduces exactly. Its metadata holds what scoring and sampling need: the
model's configuration, the run's training configuration (batching, data set, grid), the update
its parameters come from and the scores of its run. ``scripts/publish-weights`` writes them
from the run folders of a table; ``$DEEPRNN_WEIGHTS`` names another folder laid out the same.

    model = deeprnn.pretrained("jsb/dts-rnn")               # evaluation mode, on the CPU
    deeprnn eval --pretrained jsb/dts-rnn --split test       # the table's number
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from deeprnn import __version__
from deeprnn.errors import ConfigError
from deeprnn.io import write_bytes
from deeprnn.models import DeepRNN, ModelConfig
from deeprnn.names import canonical_model, data_set, file_name

if TYPE_CHECKING:  # the training package imports this module
    from deeprnn.training.config import TrainConfig

SUFFIX = ".safetensors"
NEEDED = ("model_config", "train_config", "update", "scores")  # of what publish writes, what loading reads


@dataclass(frozen=True)
class Published:
    """Published weights where a run folder is expected (``deeprnn eval --pretrained NAME``)."""

    name: str

    def __str__(self) -> str:
        return f"pretrained {self.name}"


def weights_folder() -> Path:
    """``$DEEPRNN_WEIGHTS``, else the weights shipped in the package."""
    named = os.environ.get("DEEPRNN_WEIGHTS")
    return Path(named).expanduser() if named else Path(str(resources.files("deeprnn") / "weights"))


def available() -> list[str]:
    """The names of the published weights, ``data/model``."""
    folder = weights_folder()
    found = sorted(folder.glob(f"*/*{SUFFIX}"))
    return [f"{p.parent.name}/{p.name.removesuffix(SUFFIX).replace('-star', '*')}" for p in found]


def path_of(name: str) -> Path:
    """The file of ``name`` ("JSB/DT(S)-RNN" is "jsb/dts-rnn"), or an error listing the names."""
    data, slash, model = str(name).partition("/")
    names = available()
    try:
        if not slash:
            raise ConfigError("a name is data/model")
        path = weights_folder() / data_name(data) / f"{file_name(canonical_model(model))}{SUFFIX}"
    except ConfigError as error:
        raise ConfigError(f"{name!r}: {error}; published: {', '.join(names) or 'none'}") from None
    if not path.is_file():
        listed = ", ".join(names) or "none"
        raise ConfigError(f"no published weights {name!r} (in {path.parent.parent}); published: {listed}")
    return path


def data_name(data: str) -> str:
    """A known data set's name ("JSB_Chorales" is "jsb"); a user's data goes by its file's stem."""
    known = data_set(data)
    return known.name if known else Path(data).stem


def load(name: str, device: str | torch.device | None = None) -> tuple[DeepRNN, TrainConfig, int, dict]:
    """The model of ``name`` with its weights, its training configuration, the update its
    weights come from, and its metadata (scores, vocabulary)."""
    from safetensors.torch import load_file

    from deeprnn.training.config import apply

    path = path_of(name)
    meta = _published_metadata(path)  # one lookup for the file and its metadata
    model = DeepRNN(ModelConfig(**json.loads(meta["model_config"])))
    model.load_state_dict(load_file(path))
    config = apply(json.loads(meta["train_config"]))
    return model.to(device or "cpu"), config, int(meta["update"]), meta


def pretrained(name: str, device: str | torch.device | None = None) -> DeepRNN:
    """The published model ``name`` ("jsb/dts-rnn"; :func:`available` lists them), in
    evaluation mode."""
    return load(name, device)[0].eval()


def read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(path, "pt") as file:
        return file.metadata() or {}


def metadata(name: str) -> dict[str, str]:
    """The metadata of the published weights ``name``: configurations, update, scores (JSON text)."""
    return _published_metadata(path_of(name))


def _published_metadata(path: Path) -> dict[str, str]:
    """The metadata :func:`publish` writes; an error naming the file if some of it is missing."""
    meta = read_metadata(path)
    missing = [key for key in NEEDED if key not in meta]
    if missing:
        raise ConfigError(
            f"{path}: not weights deeprnn published (its metadata has no {', '.join(missing)}); "
            "publish a run folder's best parameters with deeprnn.published.publish"
        )
    return meta


def publish(run: str | Path, folder: str | Path) -> Path:
    """Write the best parameters of the run folder ``run`` as ``folder/<data>/<model>.safetensors``,
    with its configurations, update and scores; the model is the run's preset (a second stage
    publishes under its first stage's name, as its table row reads)."""
    from safetensors.torch import save

    from deeprnn.training import checkpoint
    from deeprnn.training.run_folder import read_config, read_json

    run = Path(run)
    config = read_config(run)
    results = read_json(run / "results.json")
    best = checkpoint.load(run / "checkpoints" / "best.pt")
    tensors = {key: value.detach().cpu().contiguous() for key, value in best["model"].items()}
    meta = {  # NEEDED, the version, and a text model's vocabulary
        "deeprnn": __version__,
        "model_config": json.dumps(best["model_config"]),
        "train_config": json.dumps(config.to_dict()),
        "update": str(best["update"]),
        "scores": json.dumps(results["scores"]),
    }
    if (run / "vocab.json").exists():
        meta["vocab"] = (run / "vocab.json").read_text(encoding="utf-8")
    target = Path(folder) / data_name(config.data) / f"{file_name(config.model)}{SUFFIX}"
    if _holds(target, tensors, meta):
        return target  # safetensors orders the metadata at random: a rewrite would change bytes alone
    return write_bytes(target, save(tensors, metadata=meta))


def _holds(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> bool:
    """Whether the file ``path`` already holds these tensors and this metadata."""
    from safetensors.torch import load_file

    if not path.exists() or read_metadata(path) != meta:
        return False
    held = load_file(path)
    return held.keys() == tensors.keys() and all(
        held[key].dtype == value.dtype and torch.equal(held[key], value) for key, value in tensors.items()
    )
