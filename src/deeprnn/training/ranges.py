"""What each setting of a run may be: the choices, the ranges, the settable architecture, and
the check of a value against them (:func:`check`, used by
:class:`~deeprnn.training.config.TrainConfig`)."""

from __future__ import annotations

import math
import types
import typing
from dataclasses import fields
from typing import Any

from deeprnn.errors import ConfigError
from deeprnn.models import TRANSITION_KINDS, ModelConfig
from deeprnn.names import GRID_RULE, KINDS, MODELS, canonical_model, writable_grid
from deeprnn.operators.heads import HEADS
from deeprnn.operators.nade import ORDERS
from deeprnn.operators.units import UNIT_SPECS, parse_unit
from deeprnn.training.precision import PRECISIONS

GROWN = ("stack", "deep-output")  # the init_parts that grow a model (deeprnn.training.growing)
INIT_PARTS = ("recurrence", "all", *GROWN)  # what init_from copies (TrainConfig)
# What a second stage may change in the model it starts from (init_parts = "all"; "stack":
# these and its levels; "deep-output": these and ▷'s layers).
UNCHECKED_ON_INIT = (
    "name",
    "input_dropout",
    "state_dropout",
    "recurrent_dropout",
    "output_dropout",
    "embedding_dropout",
    "output_init_std",
)

CHOICES = {
    "optimizer": ("sgd", "adam", "adamw"),
    "schedule": ("inverse", "halve", "cosine", "plateau", "constant"),
    "device": ("auto", "cpu", "cuda"),
    "precision": tuple(PRECISIONS),
    "text_level": ("word", "char"),
    "data_kind": KINDS,
    "head": tuple(HEADS),
    "nade_order": ORDERS,
    "transition_kind": TRANSITION_KINDS,
    "init_parts": INIT_PARTS,
}


# The settable architecture: every field of ModelConfig but those the data fixes, each with the
# type a setting of it takes (a list for a tuple of widths; units by one name for every layer).
_FIXED_BY_DATA = ("input_size", "output_size", "name")


def _setting_type(hint: Any) -> Any:
    if typing.get_origin(hint) is tuple:
        return list[typing.get_args(hint)[0]]
    if isinstance(hint, types.UnionType):  # Units: one name, or one per layer
        return str
    return hint


_MODEL_HINTS = typing.get_type_hints(ModelConfig)
ARCHITECTURE: dict[str, Any] = {
    f.name: _setting_type(_MODEL_HINTS[f.name]) for f in fields(ModelConfig) if f.name not in _FIXED_BY_DATA
}


# The range of each numeric setting, beside its type: (test, what the message says it must be).
# Every float must also be finite. A field missing here may take any value of its type.
_AT_LEAST_1 = (lambda v: v >= 1, "at least 1")
_NOT_NEGATIVE = (lambda v: v >= 0, "0 or more")
_POSITIVE = (lambda v: v > 0, "above 0")
_PROBABILITY = (lambda v: 0 <= v < 1, "in [0, 1)")
_UNIT = (
    lambda v: _parses(parse_unit, v),
    "a unit: " + ", ".join(UNIT_SPECS),
)
RANGES: dict[str, tuple[Any, str]] = {
    "model": (lambda v: _parses(canonical_model, v), "a preset: " + ", ".join(MODELS)),
    "data": (lambda v: v.strip() != "", "a data set name or a path"),
    "hidden_size": _AT_LEAST_1,
    "transition_sizes": _AT_LEAST_1,
    "output_sizes": _AT_LEAST_1,
    "input_sizes": _AT_LEAST_1,
    "levels": _AT_LEAST_1,
    "input_units": _UNIT,
    "transition_units": _UNIT,
    "output_units": _UNIT,
    "output_init_std": _NOT_NEGATIVE,
    "nade_hidden": _AT_LEAST_1,
    "input_dropout": _PROBABILITY,
    "state_dropout": _PROBABILITY,
    "recurrent_dropout": _PROBABILITY,
    "output_dropout": _PROBABILITY,
    "embedding_dropout": _PROBABILITY,
    "batch_size": _AT_LEAST_1,
    "bptt_steps": _AT_LEAST_1,
    "eval_batch_size": _AT_LEAST_1,
    "frames_per_beat": (writable_grid, GRID_RULE),
    "tempo_bpm": _POSITIVE,
    "lr": _POSITIVE,
    "momentum": _PROBABILITY,
    "weight_decay": _NOT_NEGATIVE,
    "clip_norm": (lambda v: v >= 0, "0 or more (0 turns clipping off)"),
    "lr_decay_beta": _POSITIVE,
    "halve_patience": _AT_LEAST_1,
    "min_lr": _NOT_NEGATIVE,
    "weight_noise": _NOT_NEGATIVE,
    "average_after_epochs": (lambda v: v >= 0, "an epoch count, 0 or more (or none)"),
    "average_when_stalled": (lambda v: v >= 1, "an evaluation count, 1 or more (or none)"),
    "init_from": (lambda v: v.strip() != "", "a run folder (or none)"),
    "pretrained_lr_scale": _NOT_NEGATIVE,
    "epochs": _AT_LEAST_1,
    "max_updates": (lambda v: v >= 0, "0 or more (0: no limit)"),
    "time_budget_s": (lambda v: v >= 0, "0 or more (0: no limit)"),
    "patience": (lambda v: v >= 0, "0 or more (0: never stop early)"),
    "eval_every": (lambda v: v >= 0, "0 or more (0: once per epoch)"),
    "checkpoint_every": _AT_LEAST_1,
    "seed": (lambda v: 0 <= v < 2**63, "in [0, 2**63)"),
    **{
        key: (lambda v, allowed=allowed: v in allowed, "one of " + ", ".join(allowed))
        for key, allowed in CHOICES.items()
    },
}


def _parses(parse: Any, value: Any) -> bool:
    """Whether ``parse`` (a parser that raises ConfigError) accepts ``value``."""
    try:
        parse(value)
    except ConfigError:
        return False
    return True


_TYPE_NAMES = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}


def check(key: str, value: Any, kind: Any) -> Any:
    """A setting checked for its type, finiteness and range (an integer for a float becomes a
    float); a ConfigError naming it as ``--set KEY`` if it is wrong."""
    optional = isinstance(kind, types.UnionType) and type(None) in kind.__args__
    if value is None and optional:
        return None
    base = next(a for a in kind.__args__ if a is not type(None)) if optional else kind
    is_list = typing.get_origin(base) is list
    element = typing.get_args(base)[0] if is_list else base
    items = value if is_list and isinstance(value, list) else [value]
    if element is float:
        items = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in items]
    typed = (isinstance(value, list) or not is_list) and all(
        isinstance(v, element) and (element is bool or not isinstance(v, bool)) for v in items
    )
    if not typed:
        wanted = "a list of whole numbers like [400, 400]" if is_list else _TYPE_NAMES[element]
        raise ConfigError(f"--set {key}: must be {wanted}{' or none' if optional else ''}, got {value!r}")
    if element is float and not all(math.isfinite(v) for v in items):
        raise ConfigError(f"--set {key}: must be a finite number, got {value!r}")
    test, must = RANGES.get(key, (None, ""))
    if test is not None and not all(test(v) for v in items):
        raise ConfigError(f"--set {key}: must be {must}, got {value!r}")
    return items if is_list else items[0]
