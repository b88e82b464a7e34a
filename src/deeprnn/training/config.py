"""Every hyperparameter of a training run in one plain, typed place.

A run's configuration is, in order of precedence: ``--set KEY=VALUE`` overrides, a ``--config``
TOML file, the committed file of the paper's experiment for (model, data)
(``deeprnn/configs/<data>/<model>.toml``, when there is one), and the defaults below.

A TOML file may end with a ``[finetune]`` table: the settings of a second stage in the manner of
AWD-LSTM's fine-tuning (and of a warm restart), a run that starts from the first one's best
recurrence (⊕, by ``init_from``; ▷ afresh) with the schedule, averaging and patience begun
afresh. They override every other source, ``--set`` included. ``deeprnn reproduce`` trains that
stage after the first; ``resolve(..., finetune=True)`` gives its configuration.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

CHOICES = {
    "optimizer": ("sgd", "adam", "adamw"),
    "schedule": ("inverse", "halve", "cosine", "plateau", "constant"),
    "device": ("auto", "cpu", "cuda"),
    "text_level": ("word", "char"),
}


@dataclass
class TrainConfig:
    # What to train: a preset (deeprnn.presets) on a data set name or path.
    model: str = "dts-rnn"
    data: str = "jsb"
    # Architecture overrides; None keeps the preset's value.
    hidden_size: int | None = None
    transition_sizes: list[int] | None = None
    output_sizes: list[int] | None = None
    input_sizes: list[int] | None = None
    levels: int | None = None
    transition_units: str | None = None
    output_units: str | None = None
    input_dropout: float | None = None
    state_dropout: float | None = None
    recurrent_dropout: float | None = None
    output_dropout: float | None = None
    # Data and truncated BPTT.
    batch_size: int = 1  # pieces (music) or stream columns (text) per update
    bptt_steps: int = 50  # subsequence length (music: 200 Nottingham/MuseData, 50 JSB)
    eval_batch_size: int = 16
    text_level: str = "word"  # for a user's text folder
    frames_per_beat: int = 4  # for a user's MIDI folder
    # Optimisation: the paper's recipe is SGD + clipping + ε0/(1+t/β) (music) or halving (text).
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    clip_norm: float = 1.0  # threshold on the true L2 norm of the whole gradient; 0 disables
    schedule: str = "inverse"
    lr_decay_beta: float = 1000.0  # β of ε0/(1+t/β), in updates ("inverse")
    halve_patience: int = 1  # evaluations without improvement before halving ("halve", "plateau")
    min_lr: float = 0.0  # stop once the learning rate falls below (halve/plateau)
    weight_noise: float = 0.0  # σ of Gaussian noise added to the weights (not biases) per update
    # Parameter averaging (Polyak; AWD-LSTM's averaged SGD, SWA): after this many epochs, keep
    # the running mean of the parameters after every update; validation, the best parameters and
    # the test score then use the mean. None: no averaging.
    average_after_epochs: int | None = None
    # Or begin it once a validation score is worse than the best of those before the last N
    # (AWD-LSTM's non-monotone trigger, N = 5 there); with both set, whichever comes first.
    average_when_stalled: int | None = None
    # Pretraining: start from a finished run's best parameters where names and shapes match.
    init_from: str | None = None
    pretrained_lr_scale: float = 0.1
    # Length and evaluation.
    epochs: int = 100
    max_updates: int = 0  # 0: no limit
    time_budget_s: float = 0.0  # stop training after this many seconds (0: no limit)
    patience: int = 10  # evaluations without improvement before early stopping (0: never)
    eval_every: int = 0  # updates between evaluations (0: once per epoch)
    checkpoint_every: int = 200  # updates between 'last' checkpoints (and at every evaluation)
    # Reproducibility and hardware.
    seed: int = 0
    device: str = "auto"
    notes: str = ""  # free text: where the settings come from

    def __post_init__(self) -> None:
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}; got {getattr(self, key)!r}")
        positive = ("batch_size", "bptt_steps", "eval_batch_size", "frames_per_beat", "epochs")
        for key in positive:
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")
        after = self.average_after_epochs
        if after is not None and after < 0:
            raise ValueError(f"average_after_epochs must be an epoch count, 0 or more (or none), got {after}")
        stalled = self.average_when_stalled
        if stalled is not None and stalled < 1:
            raise ValueError(
                f"average_when_stalled must be an evaluation count, 1 or more (or none), got {stalled}"
            )
        for key in (
            "lr",
            "pretrained_lr_scale",
            "clip_norm",
            "weight_noise",
            "momentum",
            "weight_decay",
            "time_budget_s",
        ):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must not be negative, got {getattr(self, key)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig)}


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """Check (and for strings from --set, parse) a value against the field's type."""
    optional = isinstance(kind, types.UnionType) and type(None) in kind.__args__
    base = next((a for a in kind.__args__ if a is not type(None)), kind) if optional else kind
    if optional and isinstance(value, str) and value.strip().lower() in ("none", "null", ""):
        return None
    if isinstance(value, str) and base is not str:
        text = value.strip()
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
    if value is None and optional:
        return None
    origin = typing.get_origin(base)
    if origin is list:
        if isinstance(value, int):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
            raise ValueError(f"{key} must be a list of integers like [400, 400], got {value!r}")
        return value
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key} must be true or false, got {value!r}")
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise ValueError(f"{key} must be {getattr(base, '__name__', base)}, got {value!r}")
    return value


def apply(values: dict, base: TrainConfig | None = None) -> TrainConfig:
    """``base`` with ``values`` set; an unknown key or a bad value is an error listing the valid ones."""
    kinds = _field_types()
    unknown = sorted(set(values) - set(kinds))
    if unknown:
        raise ValueError(
            f"unknown setting(s) {', '.join(unknown)}; valid settings: {', '.join(sorted(kinds))}"
        )
    current = (base or TrainConfig()).to_dict()
    current.update({k: _coerce(k, v, kinds[k]) for k, v in values.items()})
    return TrainConfig(**current)


# The TOML table of a second, fine-tuning stage (see the module docstring).
FINETUNE = "finetune"

# Settings that bound a run's length: a resumed run may change them (to extend or cut it).
LIMITS = ("epochs", "max_updates", "time_budget_s")
# A resumed run may also set when parameter averaging begins, as long as it has not begun yet.
AVERAGING = "average_after_epochs"


def with_limits(config: TrainConfig, limits: dict, epochs_begun: int | None = None) -> TrainConfig:
    """``config`` with new length limits for a resumed run; any other setting is an error (it
    would change the run), except a start for parameter averaging that no update so far has
    reached under the old start or the new one (``epochs_begun``: the epochs the run has begun)."""
    other = sorted(set(limits) - set(LIMITS) - {AVERAGING})
    if other or (AVERAGING in limits and epochs_begun is None):
        raise ValueError(
            f"a resumed run keeps its configuration; only {', '.join(LIMITS)} may change, "
            f"and {AVERAGING} before averaging begins; not {', '.join(other or [AVERAGING])}"
        )
    changed = apply(limits, config)
    starts = {config.average_after_epochs, changed.average_after_epochs}
    if len(starts) > 1 and min(starts - {None}) < epochs_begun:
        raise ValueError(
            f"{AVERAGING}: the run has begun {epochs_begun} epoch(s), so averaging can only begin "
            f"at epoch {epochs_begun} or later, and only if it has not begun already "
            f"(the run's {AVERAGING} is {config.average_after_epochs})"
        )
    return changed


def _limits(config: TrainConfig, updates: int, epochs: int, seconds: float) -> dict[str, bool]:
    """Each length limit, as a stop reason, and whether a run at this point has reached it."""
    return {
        "time budget": 0 < config.time_budget_s <= seconds,
        "max updates": 0 < config.max_updates <= updates,
        "epochs": epochs >= config.epochs,
    }


def limits_passed(config: TrainConfig, updates: int, epochs: int, seconds: float) -> list[str]:
    """The length limits of ``config`` that a run at this point has reached."""
    return [reason for reason, hit in _limits(config, updates, epochs, seconds).items() if hit]


def limit_reached(config: TrainConfig, reason: str, updates: int, epochs: int, seconds: float) -> bool:
    """Whether a run that stopped for ``reason`` would stop again under ``config``'s limits
    (always, for early stopping: no limit brings that back)."""
    return _limits(config, updates, epochs, seconds).get(reason, True)


def parse_sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML ({error})") from None


def paper_config_file(model: str, data: str) -> Path | None:
    """The committed config of the paper's experiment for (model, data), if there is one."""
    from deeprnn.presets import canonical_model

    name = canonical_model(model).replace("*", "-star")
    candidate = resources.files("deeprnn") / "configs" / data / f"{name}.toml"
    return Path(str(candidate)) if candidate.is_file() else None


def resolve(
    model: str | None,
    data: str | None,
    config_file: str | None = None,
    sets: list[str] | None = None,
    finetune: bool = False,
) -> TrainConfig:
    """The configuration of a run from the command line's pieces (see the module docstring);
    ``finetune``: of its second stage, the ``[finetune]`` table applied over the rest."""
    overrides = parse_sets(sets or [])
    from_file = read_toml(config_file) if config_file else {}
    model = model or overrides.get("model") or from_file.get("model") or TrainConfig.model
    data = data or overrides.get("data") or from_file.get("data") or TrainConfig.data
    values = _file_values(model, data, from_file)
    stage = _checked_stage(values.pop(FINETUNE, None), model, data)
    values.update(overrides)
    values.update(model=model, data=data)
    config = apply(values)
    if not finetune:
        return config
    if stage is None:
        raise ValueError(f"{model} on {data} has no [{FINETUNE}] table: there is no second stage to train")
    try:
        return apply(stage, config)
    except ValueError as error:
        raise ValueError(f"[{FINETUNE}] of {model} on {data}: {error}") from None


def finetune_table(model: str, data: str, config_file: str | None = None) -> dict | None:
    """The ``[finetune]`` table of the run's TOML files (``config_file`` over the committed one),
    or None when it has no second stage."""
    values = _file_values(model, data, read_toml(config_file) if config_file else {})
    return _checked_stage(values.get(FINETUNE), model, data)


def _file_values(model: str, data: str, from_file: dict) -> dict:
    """The committed config of (model, data), updated by a ``--config`` file's values."""
    paper = paper_config_file(model, data)
    values = read_toml(paper) if paper is not None else {}
    values.update(from_file)
    return values


def _checked_stage(table: Any, model: str, data: str) -> dict | None:
    if table is not None and (not isinstance(table, dict) or "init_from" in table):
        raise ValueError(
            f"[{FINETUNE}] of {model} on {data} must be a table of settings, without init_from "
            f"(the stage starts from the first one); got {table!r}"
        )
    return table
