"""Every hyperparameter of a training run in one plain, typed place.

A run's configuration is, in order of precedence: ``--set KEY=VALUE`` overrides, a ``--config``
TOML file, the committed file of the paper's experiment for (model, data)
(``deeprnn/configs/<data>/<model>.toml``, when there is one), and the defaults below.

A TOML file may end with a ``[finetune]`` table: the settings of a second stage in the manner of
AWD-LSTM's fine-tuning (and of a warm restart), a run that starts from the first one's best
recurrence (⊕, by ``init_from``; ▷ afresh), or its whole model with ``init_parts = "all"``, with
the schedule, averaging and patience begun afresh. They override every other source, ``--set``
included. ``deeprnn reproduce`` trains that stage after the first; ``resolve(...,
finetune=True)`` gives its configuration.

A model's TOML file may also hold a ``[pretraining]`` table: the settings of the run it is
pretrained from (an sRNN's RNN, a DOT(S)-RNN's DT(S)-RNN), over that run's own config and
``--set`` (``pretraining_config``); ``deeprnn reproduce`` then trains that source for the model
rather than use the source's row. It pins the recipe of a model's source to the one its row was
made from, when the source model's own config moves on.
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
import types
import typing
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from deeprnn.errors import ConfigError
from deeprnn.names import Grid, canonical_model, data_set, file_name, grid_of
from deeprnn.training.ranges import ARCHITECTURE, check


@dataclass
class TrainConfig:
    # What to train: a preset (deeprnn.presets) on a data set name or path.
    model: str = "dts-rnn"
    data: str = "jsb"
    # The preset's architecture changed: any field of ModelConfig (deeprnn.models) that the
    # data does not fix (deeprnn.training.ranges.ARCHITECTURE), set by its own name
    # (``--set state_dropout=0.3``, ``hidden_size = 64`` in TOML). A new hidden_size scales the
    # preset's other widths with it.
    architecture: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Data and truncated BPTT.
    batch_size: int = 1  # pieces (music) or stream columns (text) per update
    bptt_steps: int = 50  # subsequence length (music: 200 Nottingham/MuseData, 50 JSB)
    eval_batch_size: int = 16
    text_level: str = "word"  # for a user's text folder
    frames_per_beat: int = 4  # for a user's MIDI folder (a data set has its own: names.grid_of)
    tempo_bpm: float = 120.0  # for a user's MIDI folder: the tempo its samples are played at
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
    # Pretraining: start from a finished run's best parameters where names and shapes match:
    # its recurrence (the input map and ⊕, ▷ afresh: the paper's layer-wise pretraining), or
    # with init_parts = "all" the whole model (a second stage of the same model, AWD-LSTM's
    # fine-tuning), which must then be this model, or with "stack" a stack of more levels, with
    # "deep-output" a deep ▷ from its shallow one, grown from it (deeprnn.training.growing).
    # Those but "all", layer-wise pretraining, may stand in a config without init_from:
    # deeprnn reproduce sets it to the run it trains first.
    # pretrained_lr_scale × lr is the rate of what was copied: with "all", of the whole model.
    init_from: str | None = None
    init_parts: str = "recurrence"
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
    # "bf16": updates and validation under bfloat16 autocast; the final scores in float32
    # (deeprnn.training.precision).
    precision: str = "fp32"
    # A GPU run's training segments captured as CUDA graphs and replayed (deeprnn.training.graphs):
    # None (the default) wherever they are known to run (one process on a GPU, the paper's ⊕, no
    # NADE ▷: deeprnn.training.graphs.graphs_wanted), true or false.
    cuda_graphs: bool | None = None
    # The kind of data these settings were made for ("music" or "text"); a run refuses data of
    # the other kind. The committed configs set it; None: any.
    data_kind: str | None = None
    notes: str = ""  # free text: where the settings come from

    def __post_init__(self) -> None:
        for key, kind in _field_types().items():
            if key != "architecture":
                setattr(self, key, check(key, getattr(self, key), kind))
        if not isinstance(self.architecture, dict):
            raise ConfigError(f"architecture: expected a table of settings, got {self.architecture!r}")
        unknown = sorted(set(self.architecture) - set(ARCHITECTURE))
        if unknown:
            raise ConfigError(
                f"unknown architecture setting(s) {', '.join(unknown)}; valid: {', '.join(ARCHITECTURE)}"
            )
        self.architecture = {k: check(k, v, ARCHITECTURE[k]) for k, v in self.architecture.items()}
        if self.init_parts == "all" and self.init_from is None:
            raise ConfigError(f"--set init_parts={self.init_parts} copies from a run: set init_from=RUN too")

    @property
    def grid(self) -> Grid:
        """The time grid of the run's music: its data set's, or a MIDI folder's as it was read."""
        return grid_of(self.data, self.frames_per_beat, self.tempo_bpm)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@functools.cache
def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig)}


def _parse(value: Any, kind: Any) -> Any:
    """A value from --set (a string) or a TOML file in the field's shape: strings read as TOML
    values, a single integer as a list of one; :func:`_check` then checks it."""
    optional = isinstance(kind, types.UnionType) and type(None) in kind.__args__
    base = next((a for a in kind.__args__ if a is not type(None)), kind) if optional else kind
    if optional and isinstance(value, str) and value.strip().lower() in ("none", "null", ""):
        return None
    if isinstance(value, str) and base is not str:
        try:
            value = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = value.strip()
    if typing.get_origin(base) is list and isinstance(value, int) and not isinstance(value, bool):
        return [value]
    return value


def apply(values: dict, base: TrainConfig | None = None) -> TrainConfig:
    """``base`` with ``values`` set: settings of the run, and of its architecture by their own
    names (none: the preset's value again), or as an ``architecture`` table; an unknown key or a
    bad value is an error listing the valid ones. The config.json of a run written before the
    table existed has the architecture's names at the top level (none where unchanged)."""
    table = values.get("architecture", {})
    if not isinstance(table, dict):
        raise ConfigError(f"architecture: expected a table of settings, got {table!r}")
    values, kinds = _flat(values), _field_types()
    unknown = sorted(set(values) - set(kinds) - set(ARCHITECTURE))
    if unknown:
        valid = sorted((set(kinds) | set(ARCHITECTURE)) - {"architecture"})
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; valid settings: {', '.join(valid)}")
    current = (base or TrainConfig()).to_dict()
    for key in (k for k in values if k in ARCHITECTURE):  # in the order given (a set's varies by process)
        current["architecture"][key] = _parse(values[key], ARCHITECTURE[key] | None)
    current["architecture"] = {k: v for k, v in current["architecture"].items() if v is not None}
    current.update({k: _parse(v, kinds[k]) for k, v in values.items() if k in kinds})
    return TrainConfig(**current)


# The TOML tables of a second, fine-tuning stage and of the source a model is pretrained from
# (see the module docstring), each with the settings it may not hold, and why.
FINETUNE = "finetune"
PRETRAINING = "pretraining"
FIXED_IN = {
    FINETUNE: (("init_from",), "the stage starts from the first one"),
    PRETRAINING: (
        ("init_from", "hidden_size", "model", "data"),
        "the source is trained at the model's width",
    ),
}

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
        raise ConfigError(
            f"a resumed run keeps its configuration; only {', '.join(LIMITS)} may change, "
            f"and {AVERAGING} before averaging begins; not {', '.join(other or [AVERAGING])}"
        )
    changed = apply(limits, config)
    starts = {config.average_after_epochs, changed.average_after_epochs}
    if len(starts) > 1 and min(starts - {None}) < epochs_begun:
        raise ConfigError(
            f"{AVERAGING}: the run has begun {epochs_begun} epoch(s), so averaging can only begin "
            f"at epoch {epochs_begun} or later, and only if it has not begun already "
            f"(the run's {AVERAGING} is {config.average_after_epochs})"
        )
    return changed


# Settings that do not change what a run learns: where it ran, from which run it started, how
# often it saved, what it was told about itself.
NOT_THE_RECIPE = ("notes", "init_from", "device", "cuda_graphs", "checkpoint_every", "data_kind")


def recipe_differences(run: TrainConfig, config: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """The settings in which ``run`` (a run folder's) departs from ``config``, each as ``key:
    (run's value, config's)``, architecture settings by their own names (one that a side leaves
    to the preset as "preset"); the settings of ``NOT_THE_RECIPE`` aside."""
    of_run, of_config = _recipe(run), _recipe(config)
    keys = sorted(of_run.keys() | of_config.keys())
    pairs = {k: (of_run.get(k, "preset"), of_config.get(k, "preset")) for k in keys}
    return {k: (a, b) for k, (a, b) in pairs.items() if a != b}


def _recipe(config: TrainConfig) -> dict:
    """``config``'s settings, its architecture's among them, but those of ``NOT_THE_RECIPE``."""
    values = {k: v for k, v in config.to_dict().items() if k not in (*NOT_THE_RECIPE, "architecture")}
    return {**values, **config.architecture}


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
    """Whether a run that stopped for ``reason`` would stop again under ``config``'s limits: at
    that one, or at another it had reached too (always, for early stopping: no limit brings
    that back)."""
    reached = _limits(config, updates, epochs, seconds)
    return reached.get(reason, True) or any(reached.values())


def parse_sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None


def paper_config_file(model: str, data: str) -> Path | None:
    """The committed config of the paper's experiment for (model, data), if there is one."""
    known = data_set(data)  # an alias (jsb-chorales) has the configs of its data set
    if known is None:
        return None  # a path: a user's data, with no committed experiment
    name = file_name(canonical_model(model))
    candidate = resources.files("deeprnn") / "configs" / known.name / f"{name}.toml"
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
    stage = _checked_table(FINETUNE, values.pop(FINETUNE, None), model, data)
    _checked_table(PRETRAINING, values.pop(PRETRAINING, None), model, data)
    values.update(overrides)
    values.update(model=model, data=data)
    config = apply(values)
    if not finetune:
        return config
    if stage is None:
        raise ConfigError(f"{model} on {data} has no [{FINETUNE}] table: there is no second stage to train")
    return _over(FINETUNE, stage, config, model, data)


def finetune_table(model: str, data: str, config_file: str | None = None) -> dict | None:
    """The ``[finetune]`` table of the run's TOML files (``config_file`` over the committed one),
    or None when it has no second stage."""
    return _table(FINETUNE, model, data, config_file)


def pretraining_table(model: str, data: str, config_file: str | None = None) -> dict | None:
    """The ``[pretraining]`` table of the run's TOML files (``config_file`` over the committed
    one), or None."""
    return _table(PRETRAINING, model, data, config_file)


def _table(name: str, model: str, data: str, config_file: str | None) -> dict | None:
    values = _file_values(model, data, read_toml(config_file) if config_file else {})
    return _checked_table(name, values.get(name), model, data)


def pretraining_config(model: str, source: str, data: str, width: int, sets: list[str]) -> TrainConfig:
    """The config of the ``source`` run that ``model`` is pretrained from (an sRNN's RNN),
    trained for it ``width`` units wide: ``source``'s own under ``sets``, with ``model``'s
    ``[pretraining]`` table, if any, over both."""
    config = resolve(source, data, sets=[*sets, f"hidden_size={width}"])
    table = pretraining_table(model, data)
    return config if table is None else _over(PRETRAINING, table, config, model, data)


def _over(name: str, table: dict, config: TrainConfig, model: str, data: str) -> TrainConfig:
    """``config`` with the settings of ``model``'s table ``name`` applied over it."""
    try:
        return apply(table, config)
    except ConfigError as error:
        raise ConfigError(f"[{name}] of {model} on {data}: {error}") from None


def _file_values(model: str, data: str, from_file: dict) -> dict:
    """The committed config of (model, data), updated by a ``--config`` file's values."""
    paper = paper_config_file(model, data)
    values = _flat(read_toml(paper)) if paper is not None else {}
    values.update(_flat(from_file))
    return values


def _flat(values: dict) -> dict:
    """Settings with their ``[architecture]`` table as plain keys (flat keys beside it win), so
    that a later file's table overrides an earlier file's flat keys, and the other way round."""
    table = values.get("architecture")
    if not isinstance(table, dict):
        return values
    rest = {k: v for k, v in values.items() if k != "architecture"}
    return {**table, **rest}


def _checked_table(name: str, table: Any, model: str, data: str) -> dict | None:
    fixed, why = FIXED_IN[name]
    if table is not None and (not isinstance(table, dict) or not _flat(table).keys().isdisjoint(fixed)):
        raise ConfigError(
            f"[{name}] of {model} on {data} must be a table of settings, without {', '.join(fixed)} "
            f"({why}); got {table!r}"
        )
    return None if table is None else _flat(table)  # [<name>.architecture] as plain keys
