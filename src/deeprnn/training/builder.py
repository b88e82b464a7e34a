"""What a run is made of: the model, the batches, the device and the optimiser of a
:class:`~deeprnn.training.config.TrainConfig` on a corpus, and layer-wise pretraining."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from deeprnn.data import MusicCorpus, TextCorpus, load
from deeprnn.data.batching import Batch, MusicBatches, TextBatches
from deeprnn.data.music import KEYS
from deeprnn.errors import ConfigError
from deeprnn.models import DeepRNN, ModelConfig
from deeprnn.names import DATA_SETS
from deeprnn.presets import preset, resized
from deeprnn.training import checkpoint, growing
from deeprnn.training.config import TrainConfig
from deeprnn.training.distributed import World
from deeprnn.training.ranges import GROWN, INIT_PARTS, UNCHECKED_ON_INIT

Corpus = MusicCorpus | TextCorpus
ONE_PROCESS = World()


def load_corpus(config: TrainConfig, data_dir: str | None) -> Corpus:
    """The run's data, ``config.data``: a data set of the data folder ``data_dir``, or a path."""
    return load(config.data, data_dir, text_level=config.text_level, frames_per_beat=config.frames_per_beat)


def kind_of(config: TrainConfig, corpus: Corpus) -> str:
    """The corpus's kind ("music" or "text"), which must be the kind the settings were made for
    (``data_kind``)."""
    kind = "music" if isinstance(corpus, MusicCorpus) else "text"
    if config.data_kind not in (None, kind):
        raise ConfigError(
            f"these settings are for {config.data_kind} (data_kind = {config.data_kind!r}), but "
            f"{config.data} is {kind}; use a config made for {kind} data"
        )
    return kind


def model_config(config: TrainConfig, corpus: Corpus) -> ModelConfig:
    """The preset for the corpus (the paper's sizes), sized to its vocabulary, with overrides;
    a new ``hidden_size`` scales the preset's other widths with it unless they are set too."""
    if corpus.name in DATA_SETS:
        task = corpus.name
    elif isinstance(corpus, MusicCorpus):
        task = "nottingham"
    else:
        task = {"char": "ptb-char", "word": "ptb-word"}[corpus.level]  # the paper's sizes for the level
    c = preset(config.model, task)
    if isinstance(corpus, TextCorpus):
        c = replace(c, input_size=corpus.vocab_size, output_size=corpus.vocab_size)
    changes = dict(config.architecture)
    if "hidden_size" in changes:  # the other widths follow, in the preset's proportions
        c = resized(c, changes.pop("hidden_size"))
    return replace(c, **changes)


def run_model(config: TrainConfig, corpus: Corpus, model: DeepRNN | ModelConfig | None) -> DeepRNN:
    """What a run trains: ``model`` as it is, or built from a ModelConfig, or the preset's
    (``config.model`` with ``config.architecture``); its head and sizes must fit the corpus."""
    if not isinstance(model, DeepRNN):
        model = build_model(check_head(model or model_config(config, corpus), corpus))
    if model.recurrence.batch_first:
        raise ConfigError("the trainer feeds time-major batches (T, B, …): give a model without batch_first")
    check_head(model.config, corpus)
    return model


def check_head(config: ModelConfig, corpus: Corpus) -> ModelConfig:
    """``config``, if its head and sizes fit the corpus (a ConfigError saying why not)."""
    fits = {"categorical"} if isinstance(corpus, TextCorpus) else {"bernoulli", "nade"}
    if config.head not in fits:
        raise ConfigError(
            f"head {config.head!r} does not fit {corpus.name}; its heads: {', '.join(sorted(fits))}"
        )
    symbols = corpus.vocab_size if isinstance(corpus, TextCorpus) else KEYS
    if (config.input_size, config.output_size) != (symbols, symbols):
        raise ConfigError(
            f"the model reads {config.input_size} and predicts {config.output_size} symbols; "
            f"{corpus.name} has {symbols}"
        )
    return config


def build_model(config: ModelConfig) -> DeepRNN:
    """The model of ``config``; a clear error when its parameters do not fit in memory."""
    try:
        return DeepRNN(config)
    except (MemoryError, RuntimeError) as error:
        if not isinstance(error, MemoryError) and "alloc" not in str(error):
            raise
        sizes = {
            k: getattr(config, k) for k in ("hidden_size", "transition_sizes", "output_sizes", "input_sizes")
        }
        shown = ", ".join(f"{k} {v}" for k, v in sizes.items())
        raise ConfigError(
            f"the model's parameters do not fit in memory ({shown}); set smaller sizes (--set hidden_size=…)"
        ) from None


def batches(
    config: TrainConfig, corpus: Corpus, split: str, training: bool, world: World = ONE_PROCESS
) -> MusicBatches | TextBatches:
    """Training: shuffled pieces or stream columns in BPTT segments, this process's share of
    them. Evaluation: whole pieces; for text, ``eval_batch_size`` columns while training and one
    column (the whole stream, the state carried throughout, as the paper scores it) for the
    final scores. With several processes, each evaluates its share of the split when
    :func:`shares_evaluation` says it can, and the whole split otherwise."""
    if not training and not shares_evaluation(config, corpus, split, world):
        world = ONE_PROCESS
    share = {"rank": world.rank, "world": world.size}
    if isinstance(corpus, MusicCorpus):
        if training:
            return MusicBatches(
                corpus.splits[split], config.batch_size, config.bptt_steps, True, config.seed, **share
            )
        by_length = sorted(corpus.splits[split], key=len, reverse=True)  # dealt evenly by length
        return MusicBatches(by_length[world.rank :: world.size], config.eval_batch_size)
    if training:
        columns = min(config.batch_size, max(1, len(corpus.splits[split]) // world.size))
        return TextBatches(corpus.splits[split], columns, config.bptt_steps, corpus.boundary, **share)
    columns = eval_columns(config, corpus, split) // world.size
    return TextBatches(corpus.splits[split], columns, 1000, corpus.boundary, **share)


def eval_columns(config: TrainConfig, corpus: TextCorpus, split: str) -> int:
    """Columns of a text split in evaluation: ``eval_batch_size``, fewer for a tiny split."""
    return min(config.eval_batch_size, max(1, len(corpus.splits[split])))


def shares_evaluation(config: TrainConfig, corpus: Corpus, split: str, world: World) -> bool:
    """Whether the processes can split the scoring of ``split`` among them and add up their
    totals, with the same result as one process: music when every process gets a piece; text
    when its evaluation columns divide evenly among the processes (never the final one-column
    scores, which every process computes whole)."""
    if not world.distributed:
        return False
    if isinstance(corpus, MusicCorpus):
        return len(corpus.splits[split]) >= world.size
    columns = eval_columns(config, corpus, split)
    return columns % world.size == 0


def pick_device(name: str) -> torch.device:
    """``auto``: a GPU if PyTorch sees one, else the CPU; a GPU asked for by name must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for, but PyTorch sees no GPU; use --device cpu or auto")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """What a results file records: ``cpu``, or ``cuda (NVIDIA H200)`` with the card's name."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def make_optimizer(config: TrainConfig, model: nn.Module, pretrained: set[str]) -> torch.optim.Optimizer:
    """Pretrained parameters (``init_from``) get ``pretrained_lr_scale`` × the rate: with
    ``init_parts = "all"`` the whole model does."""
    fresh = [p for n, p in model.named_parameters() if n not in pretrained]
    groups = [{"params": fresh, "lr_scale": 1.0}]
    if pretrained:
        old = [p for n, p in model.named_parameters() if n in pretrained]
        groups.append({"params": old, "lr_scale": config.pretrained_lr_scale})
    groups = [g for g in groups if g["params"]]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def load_pretrained(
    model: DeepRNN, run: Path, parts: str = "recurrence", segments: Iterable[Batch] = ()
) -> set[str]:
    """Copy parameters of a finished run's best point into ``model``; return their names.

    ``parts = "recurrence"``: layer-wise pretraining, the input map and ⊕ levels whose names and
    shapes match (▷ starts afresh). ``"all"``: the whole model, a second stage of the same model:
    the run must have this model's parameters, no others, and its architecture (dropout aside).
    ``"stack"`` and ``"deep-output"``: a model of more levels or a deep ▷, grown from the run's
    (:mod:`deeprnn.training.growing`, whose fit reads the training ``segments``)."""
    saved = checkpoint.load(run / "checkpoints" / "best.pt")
    best, own = saved["model"], model.state_dict()
    if parts in GROWN:
        return growing.grow(model, best, saved.get("model_config"), run, segments, parts)
    if parts == "all":
        check_same_model(model, best, saved.get("model_config"), run)
        matched = set(own)
    elif parts == "recurrence":
        matched = {
            n for n, t in best.items() if n.startswith("recurrence.") and n in own and own[n].shape == t.shape
        }
    else:
        raise ValueError(f"parts must be one of {INIT_PARTS}, got {parts!r}")
    if not matched:
        raise ConfigError(f"init_from {run}: no parameter of that run matches this model by name and shape")
    with torch.no_grad():
        for name in matched:
            own[name].copy_(best[name])
    return matched


def check_same_model(model: DeepRNN, best: dict, saved_config: dict | None, run: Path) -> None:
    """A ConfigError unless ``best`` (and the run's model configuration, when it has one) is
    ``model``'s: the same tensors by name and shape, the same architecture but for dropout."""
    own = model.state_dict()
    differ = sorted(
        n for n in own.keys() | best.keys() if n not in own or n not in best or own[n].shape != best[n].shape
    )
    if saved_config is not None:
        mine = model.config.to_dict()
        differ += [
            k for k in mine if k not in UNCHECKED_ON_INIT and k in saved_config and saved_config[k] != mine[k]
        ]
    if differ:
        raise ConfigError(
            f'init_from {run} with init_parts = "all": that run is another model ({len(differ)} '
            f"difference(s): {', '.join(differ[:4])}); it must be a run of this model with the same "
            'sizes and units, or use init_parts = "recurrence" (its input map and ⊕ only)'
        )
