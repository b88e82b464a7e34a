"""The paper's models under its names, with its sizes for each task (docs/paper.md §3).

``preset("DT(S)-RNN", "jsb")`` gives the :class:`~deeprnn.models.ModelConfig` of that cell of the
paper's size table; ``weights`` of the built model equals the table's count.
"""

from __future__ import annotations

from dataclasses import replace

from deeprnn.errors import ConfigError
from deeprnn.models import DeepRNN, ModelConfig, count_parameters, describe
from deeprnn.names import DATA_SETS, NADE_MODELS, PAPER_MODELS, canonical_data, canonical_model

# The paper's size table: hidden units h, transition z, output o; sRNN: h per level (2 levels).
_RNN = {"nottingham": 600, "jsb": 200, "musedata": 600, "ptb-char": 600, "ptb-word": 200}
_DTS = {
    "nottingham": (400, 400),
    "jsb": (400, 400),
    "musedata": (400, 400),
    "ptb-char": (400, 400),
    "ptb-word": (200, 200),
}
_DOTS = {
    "nottingham": (400, 400, 400),
    "jsb": (400, 400, 400),
    "musedata": (400, 400, 400),
    "ptb-char": (400, 400, 600),
    "ptb-word": (200, 200, 200),
}
_SRNN = {"nottingham": 400, "jsb": 400, "musedata": 600, "ptb-char": 400, "ptb-word": 400}


def preset(model: str, task: str) -> ModelConfig:
    """The paper's configuration of ``model`` for ``task``."""
    model, task = canonical_model(model), canonical_data(task)
    known = DATA_SETS[task]
    if model in NADE_MODELS:  # the same ⊕ and ▷ with a NADE head
        if known.kind != "music":
            raise ConfigError(f"{model}: a NADE head models frames of keys (music); {task} is {known.kind}")
        return replace(preset(model.removesuffix("-nade"), task), head="nade", name=model)
    head = "bernoulli" if known.kind == "music" else "categorical"
    size, row = known.symbols, known.sizes_from
    base = ModelConfig(input_size=size, output_size=size, hidden_size=1, head=head, name=model)
    h, z, o = _DOTS[row]
    if model == "rnn":
        return replace(base, hidden_size=_RNN[row])
    if model in ("dt-rnn", "dts-rnn"):
        h, z = _DTS[row]
        return replace(base, hidden_size=h, transition_sizes=(z,), shortcut=model == "dts-rnn")
    if model == "do-rnn":
        return replace(base, hidden_size=_RNN[row], output_sizes=(o,))
    if model in ("dot-rnn", "dots-rnn"):
        return replace(
            base, hidden_size=h, transition_sizes=(z,), output_sizes=(o,), shortcut=model == "dots-rnn"
        )
    if model == "srnn":
        return replace(base, hidden_size=_SRNN[row], levels=2)
    # DOT(S)-RNN*: L_p units in ⊕, maxout units in ▷, dropout in ▷.
    return replace(
        base,
        hidden_size=h,
        transition_sizes=(z,),
        output_sizes=(o,),
        shortcut=True,
        transition_units="lp",
        output_units="maxout",
        output_dropout=0.5,
    )


LAYER_SIZES = ("input_sizes", "transition_sizes", "output_sizes")


def resized(config: ModelConfig, hidden_size: int) -> ModelConfig:
    """``config`` at ``hidden_size``, every other layer width scaled in the same proportion (the
    paper's DOT(S)-RNN on characters, 400 / 400 / 600, is 32 / 32 / 48 at a hidden size of 32)."""
    scale = hidden_size / config.hidden_size
    widths = {k: tuple(max(1, round(w * scale)) for w in getattr(config, k)) for k in LAYER_SIZES}
    return replace(config, hidden_size=hidden_size, **widths)


def size_ratios(config: ModelConfig) -> dict[str, list[float]]:
    """Each layer width (input, transition, output) as a multiple of the hidden size: how
    :func:`resized` scales them."""
    widths = {k.split("_")[0]: getattr(config, k) for k in LAYER_SIZES}
    return {k: [w / config.hidden_size for w in v] for k, v in widths.items() if v}


def describe_preset(model: str, task: str) -> dict:
    """What ``deeprnn info`` shows of a preset: its layers and parameter counts (``weights``, the
    paper's counts, exclude biases), how its widths follow the hidden size, its configuration."""
    config = preset(model, task)
    net = DeepRNN(config)
    name, task = canonical_model(model), canonical_data(task)
    return {
        "model": name,
        "task": task,
        **count_parameters(net),
        "paper_table_cell": name in PAPER_MODELS and DATA_SETS[task].sizes_from == task,
        "layers": describe(net),
        "size_ratios": size_ratios(config),
        "config": config.to_dict(),
    }
