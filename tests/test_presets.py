"""The paper's presets: names, sizes and the exact parameter counts of its table (docs/paper.md §3)."""

from __future__ import annotations

import json

import pytest
import torch

from deeprnn import DeepRNN, count_parameters, preset
from deeprnn.cli import main
from deeprnn.data import MusicCorpus
from deeprnn.data.registry import dataset
from deeprnn.errors import ConfigError
from deeprnn.names import DATA_SETS, MODELS, NADE_MODELS, TABLES, canonical_data, canonical_model
from deeprnn.presets import describe_preset, resized, size_ratios
from deeprnn.training import builder
from deeprnn.training.config import apply, paper_config_file

# The paper's table, weights without biases, computed by hand from the sizes:
# e.g. DOT(S)-RNN on music: W_1, W_2, W_s 3·400² + U_1, U_2 2·88·400 + V_1 400² + V_2 400·88.
PAPER_WEIGHTS = {
    ("rnn", "nottingham"): 465_600,
    ("dts-rnn", "nottingham"): 585_600,
    ("dots-rnn", "nottingham"): 745_600,
    ("srnn", "nottingham"): 550_400,
    ("rnn", "jsb"): 75_200,
    ("dts-rnn", "jsb"): 585_600,
    ("dots-rnn", "jsb"): 745_600,
    ("srnn", "jsb"): 550_400,
    ("rnn", "musedata"): 465_600,
    ("dts-rnn", "musedata"): 585_600,
    ("dots-rnn", "musedata"): 745_600,
    ("srnn", "musedata"): 1_185_600,
    ("rnn", "ptb-char"): 420_000,
    ("dts-rnn", "ptb-char"): 540_000,
    ("dots-rnn", "ptb-char"): 790_000,
    ("srnn", "ptb-char"): 520_000,
    ("rnn", "ptb-word"): 4_040_000,
    ("dts-rnn", "ptb-word"): 6_120_000,
    ("dots-rnn", "ptb-word"): 6_160_000,
    ("srnn", "ptb-word"): 8_480_000,
}


@pytest.mark.parametrize("model,task", sorted(PAPER_WEIGHTS))
def test_paper_weight_counts(model, task):
    assert count_parameters(DeepRNN(preset(model, task)))["weights"] == PAPER_WEIGHTS[model, task]


@pytest.mark.parametrize("model,task", [("dots-rnn", "nottingham"), ("srnn", "ptb-word"), ("rnn", "jsb")])
def test_info_json_reports_the_paper_counts(model, task, capsys):
    assert main(["info", "--model", model, "--task", task, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["weights"] == PAPER_WEIGHTS[model, task]
    model = DeepRNN(preset(model, task))
    assert info["params"] - info["weights"] == sum(p.numel() for p in model.parameters() if p.dim() == 1)
    assert sum(row["weights"] for row in info["layers"]) == info["weights"]


def test_paper_spellings():
    assert canonical_model("DT(S)-RNN") == "dts-rnn"
    assert canonical_model("DOT(S)-RNN*") == "dots-rnn*"
    assert canonical_model("sRNN") == "srnn"
    assert canonical_model("dot_rnn") == "dot-rnn"
    assert canonical_data("JSB_Chorales") == "jsb"
    assert canonical_data("Piano-midi.de") == "piano-midi"


@pytest.mark.parametrize("name", DATA_SETS)
def test_each_data_set_is_known_everywhere_under_each_of_its_names(name):
    """One registry (deeprnn.names): its data sets, with their aliases, have files to be read
    from, presets of their alphabet's size, and (where the paper has them) committed recipes."""
    known = DATA_SETS[name]
    for spelling in (name, name.upper(), *known.aliases):
        assert canonical_data(spelling) == name and dataset(spelling).name == name
        assert paper_config_file("dts-rnn", spelling) == paper_config_file("dts-rnn", name)
    assert dataset(name).kind == known.kind and dataset(name).files
    for model in MODELS:
        if model in NADE_MODELS and known.kind == "text":  # a NADE head is for frames of keys
            with pytest.raises(ConfigError, match="NADE head"):
                preset(model, name)
            continue
        config = preset(model, name)
        assert config.input_size == config.output_size == known.symbols
        assert config.tokens == (known.kind == "text")
    paper_cell = describe_preset("rnn", name)["paper_table_cell"]
    assert paper_cell == (name in ("nottingham", "jsb", "musedata", "ptb-char", "ptb-word"))
    in_a_table = [t for t in TABLES.values() if name in t.data]
    assert all(t.metric == known.metric for t in in_a_table)
    assert all(paper_config_file(m, name) is not None for t in in_a_table for m in t.models)
    assert (paper_config_file("dts-rnn", name) is not None) == bool(in_a_table)


def test_structure_of_each_preset():
    c = preset("dt-rnn", "jsb")
    assert c.transition_sizes == (400,) and not c.shortcut and c.output_sizes == ()
    # DT-RNN: x_t and h_{t-1} enter the first layer only (U_1, W_1), then W_2, then ▷ (V)
    assert count_parameters(DeepRNN(c))["weights"] == 88 * 400 + 400 * 400 + 400 * 400 + 400 * 88
    # DT(S)-RNN adds the shortcut alone: U_2 x_t and S_2 h_{t-1} into the last layer
    dts = count_parameters(DeepRNN(preset("dts-rnn", "jsb")))["weights"]
    assert dts - count_parameters(DeepRNN(c))["weights"] == 88 * 400 + 400 * 400
    c = preset("do-rnn", "nottingham")
    assert c.hidden_size == 600 and c.output_sizes == (400,) and c.transition_sizes == ()
    c = preset("dots-rnn*", "musedata")
    assert c.transition_units == "lp" and c.output_units == "maxout" and c.output_dropout > 0
    c = preset("dots-rnn", "ptb-char")
    assert (c.hidden_size, c.transition_sizes, c.output_sizes) == (400, (400,), (600,))
    assert preset("rnn", "piano-midi").hidden_size == preset("rnn", "musedata").hidden_size
    assert preset("srnn", "ptb-pennchar").input_size == 49


@pytest.mark.parametrize("model", MODELS)
def test_every_preset_runs_on_music_and_words(model):
    music = DeepRNN(preset(model, "jsb"))
    logits, h = music(torch.rand(3, 2, 88).bernoulli())
    assert logits.shape == (3, 2, music.head.logit_size) and music.head.logit_size == (
        88 + music.config.nade_hidden if model in NADE_MODELS else 88
    )
    assert h.shape == (music.config.levels, 2, music.config.hidden_size)
    if model in NADE_MODELS:
        return
    words = DeepRNN(preset(model, "ptb-char"))
    logits, _ = words(torch.randint(0, 50, (3, 2)))
    assert logits.shape == (3, 2, 50)


def test_unknown_names_are_refused_with_the_valid_ones(capsys):
    with pytest.raises(ValueError, match="dts-rnn"):
        preset("lstm", "jsb")
    with pytest.raises(ValueError, match="nottingham"):
        preset("rnn", "timit")
    assert main(["info", "--model", "gru", "--task", "jsb"]) == 2
    assert "expected one of" in capsys.readouterr().err


def test_hidden_size_alone_sizes_the_whole_preset():
    """--set hidden_size=N scales every other width in the preset's proportions, unless set too."""
    c = resized(preset("dots-rnn", "ptb-char"), 32)  # 400 / 400 / 600 in the paper
    assert (c.hidden_size, c.transition_sizes, c.output_sizes) == (32, (32,), (48,))
    assert size_ratios(preset("dots-rnn", "ptb-char")) == {"transition": [1.0], "output": [1.5]}
    songs = MusicCorpus("songs", {})
    sized = builder.model_config(apply({"model": "dts-rnn", "hidden_size": 32}), songs)
    assert (sized.hidden_size, sized.transition_sizes) == (32, (32,))
    chosen = builder.model_config(
        apply({"model": "dts-rnn", "hidden_size": 32, "transition_sizes": [7]}), songs
    )
    assert chosen.transition_sizes == (7,)
    assert count_parameters(DeepRNN(sized))["weights"] == 88 * 64 + 32 * 64 + 32 * 32 + 32 * 88
