"""A run's configuration: the settings and their checks, the defaults, the committed recipe of each
experiment, a TOML file, --set, a [finetune] stage and a [pretraining] source, in their order of
precedence."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from deeprnn.cli import main
from deeprnn.data import MusicCorpus
from deeprnn.errors import ConfigError
from deeprnn.models import DeepRNN, ModelConfig
from deeprnn.training import builder
from deeprnn.training import config as config_module
from deeprnn.training.config import (
    TrainConfig,
    apply,
    finetune_table,
    limit_reached,
    limits_passed,
    parse_sets,
    pretraining_config,
    pretraining_table,
    read_toml,
    resolve,
    with_limits,
)
from deeprnn.training.ranges import ARCHITECTURE


def test_config_errors_name_the_valid_settings():
    with pytest.raises(ValueError, match="unknown setting.*valid settings:.*bptt_steps.*hidden_size"):
        apply({"learning_rate": 1})
    with pytest.raises(ValueError, match="--set epochs: must be a whole number, got 'many'"):
        apply({"epochs": "many"})
    with pytest.raises(ValueError, match="--set optimizer: must be one of sgd, adam, adamw"):
        apply({"optimizer": "lbfgs"})
    with pytest.raises(ValueError, match="--set average_after_epochs: must be an epoch count"):
        apply({"average_after_epochs": -1})
    with pytest.raises(ValueError, match="--set average_when_stalled: must be an evaluation count"):
        apply({"average_when_stalled": 0})
    with pytest.raises(ValueError, match="--set pretrained_lr_scale: must be 0 or more, got -0.1"):
        apply({"pretrained_lr_scale": -0.1})
    with pytest.raises(ValueError, match="KEY=VALUE"):
        resolve("rnn", "jsb", sets=["lr"])
    assert main(["train", "--model", "rnn", "--data", "jsb", "--set", "colour=red", "--out", "x"]) == 2


def test_set_parses_types_and_defaults_come_from_the_paper_config():
    config = resolve(
        "dts-rnn", "jsb", sets=["seed=7", "epochs=6", "transition_sizes=[30, 20]", "init_from=none"]
    )
    assert (config.seed, config.epochs, config.init_from) == (7, 6, None)
    assert config.architecture == {"transition_sizes": [30, 20], "state_dropout": 0.3}
    jsb = resolve("dts-rnn", "jsb")
    assert (jsb.bptt_steps, jsb.lr_decay_beta, jsb.patience, jsb.architecture) == (
        50,
        1000,
        10,
        {"state_dropout": 0.3},
    )
    nottingham = resolve("dts-rnn", "nottingham")
    assert nottingham.bptt_steps == 200 and nottingham.weight_noise == pytest.approx(0.075)
    ptb = resolve("rnn", "ptb-word")
    assert (ptb.optimizer, ptb.schedule, ptb.architecture["state_dropout"]) == ("adam", "plateau", 0.2)


def test_your_own_data_starts_from_the_defaults_the_readme_lists(tmp_path):
    """The README lists the recipe a run on data of one's own starts from (no committed
    experiment): each value is what the run gets, and every setting of the recipe is listed."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("a run starts from these defaults")[1].split("\n\n")[1]
    listed = parse_sets(block.split())
    config = resolve("rnn", str(tmp_path / "my-music.pickle"))
    assert apply({**listed, "model": "rnn", "data": str(tmp_path / "my-music.pickle")}) == config
    what_to_train = {"model", "data", "architecture", "data_kind", "notes"}
    assert set(listed) == {f.name for f in dataclasses.fields(TrainConfig)} - what_to_train


def test_every_architecture_field_is_settable_by_its_own_name(tmp_path):
    """Each knob of ModelConfig is written once: --set, a TOML file (flat or as an
    [architecture] table) and an old run's config.json (flat, None where unchanged) all reach it."""
    # test_nade.py, test_highway.py, test_tied_weights.py, test_embedding_dropout.py (token data)
    elsewhere = {"head", "nade_hidden", "nade_order", "transition_kind", "tie_weights", "embedding_dropout"}
    fixed = {"input_size", "output_size", "name", *elsewhere}
    settable = {f.name for f in dataclasses.fields(ModelConfig)} - fixed
    assert set(ARCHITECTURE) == settable | elsewhere
    sets = [
        "hidden_size=12", "input_sizes=5", "input_units=tanh", "transition_sizes=[7, 6]",
        "shortcut=false", "transition_units=relu", "levels=2", "output_sizes=[4]",
        "output_units=maxout:3", "bias=false", "input_dropout=0.1", "state_dropout=0.2",
        "recurrent_dropout=0.25", "output_dropout=0.3", "output_init_std=0.5",
    ]  # fmt: skip
    config = resolve("dots-rnn", "jsb", sets=sets)
    assert set(config.architecture) == settable
    built = builder.model_config(config, MusicCorpus("jsb", {}))
    expected = dict(
        hidden_size=12, input_sizes=(5,), input_units="tanh", transition_sizes=(7, 6), shortcut=False,
        transition_units="relu", levels=2, output_sizes=(4,), output_units="maxout:3", bias=False,
        input_dropout=0.1, state_dropout=0.2, recurrent_dropout=0.25, output_dropout=0.3,
        output_init_std=0.5,
    )  # fmt: skip
    assert {k: getattr(built, k) for k in expected} == expected
    assert (built.input_size, built.head, built.name) == (88, "bernoulli", "dots-rnn")
    model = DeepRNN(built)
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())
    assert [level.widths for level in model.recurrence.levels] == [[7, 6, 12]] * 2
    toml = tmp_path / "arch.toml"
    toml.write_text("levels = 3\n[architecture]\nshortcut = true\ntransition_sizes = 9\n")
    from_file = resolve("dts-rnn", "jsb", str(toml))
    assert from_file.architecture == {
        "levels": 3,
        "shortcut": True,
        "transition_sizes": [9],
        "state_dropout": 0.3,
    }
    user = tmp_path / "user.toml"
    user.write_text("[architecture]\nstate_dropout = 0.0\n")  # a table over the committed flat key
    assert resolve("dts-rnn", "jsb", str(user)).architecture == {"state_dropout": 0.0}
    unset = resolve("dts-rnn", "jsb", sets=["state_dropout=none"])
    assert unset.architecture == {} and builder.model_config(unset, MusicCorpus("jsb", {})).state_dropout == 0
    old = apply({"hidden_size": 8, "transition_sizes": [6], "levels": None, "output_units": None})
    assert old.architecture == {"hidden_size": 8, "transition_sizes": [6]}
    with pytest.raises(ConfigError, match="--set output_init_std: must be 0 or more"):
        resolve("rnn", "jsb", sets=["output_init_std=-1"])
    with pytest.raises(ConfigError, match="--set shortcut: must be true or false"):
        resolve("rnn", "jsb", sets=["shortcut=3"])


def test_an_alias_of_a_data_set_gets_its_paper_config():
    """--data jsb-chorales is JSB: it trains with JSB's committed recipe, not the library defaults."""
    alias, name = resolve("dts-rnn", "jsb-chorales"), resolve("dts-rnn", "jsb")
    assert alias.data == "jsb-chorales" and alias.notes and alias.data_kind == "music"
    assert dataclasses.replace(alias, data="jsb") == name
    assert resolve("dts-rnn", "/some/folder/of/songs").notes == ""


def test_a_finetune_table_is_a_second_stage_over_every_other_setting(tmp_path):
    path = tmp_path / "rnn.toml"
    path.write_text(
        "lr = 2.0\nepochs = 7\n\n[finetune]\npretrained_lr_scale = 1.0\nlr = 0.5\naverage_when_stalled = 5\n"
    )
    sets = ["lr=1.5", "seed=3"]
    first = resolve("rnn", "jsb", str(path), sets=sets)
    assert (first.lr, first.epochs, first.pretrained_lr_scale, first.average_when_stalled, first.seed) == (
        1.5,
        7,
        0.1,
        5,  # the committed JSB RNN's, under the file
        3,
    )
    second = resolve("rnn", "jsb", str(path), sets=sets, finetune=True)
    assert (second.lr, second.epochs, second.pretrained_lr_scale, second.seed) == (0.5, 7, 1.0, 3)
    assert finetune_table("rnn", "jsb", str(path)) == {
        "pretrained_lr_scale": 1.0,
        "lr": 0.5,
        "average_when_stalled": 5,
    }
    assert finetune_table("rnn", "jsb") is None
    with pytest.raises(ValueError, match=r"rnn on jsb has no \[finetune\] table"):
        resolve("rnn", "jsb", finetune=True)
    path.write_text("[finetune]\nlearning_rate = 1.0\n")
    with pytest.raises(ValueError, match=r"\[finetune\] of rnn on jsb: unknown setting\(s\) learning_rate"):
        resolve("rnn", "jsb", str(path), finetune=True)
    path.write_text('[finetune]\ninit_from = "runs/x"\n')
    for read in (lambda: finetune_table("rnn", "jsb", str(path)), lambda: resolve("rnn", "jsb", str(path))):
        with pytest.raises(ValueError, match="without init_from"):
            read()


def test_a_pretraining_table_sets_the_source_run_over_its_own_config_and_sets(tmp_path, monkeypatch):
    """[pretraining] of the sRNN: the RNN it starts from, at the sRNN's width, keeps the RNN's
    committed recipe but for the table's settings, which win over --set; the sRNN's own config
    does not see them."""
    committed = config_module.paper_config_file
    own = tmp_path / "srnn.toml"
    own.write_text(committed("srnn", "jsb").read_text() + "\n[pretraining]\nlr = 0.25\nstate_dropout = 0.1\n")
    monkeypatch.setattr(
        config_module, "paper_config_file", lambda m, d: own if (m, d) == ("srnn", "jsb") else committed(m, d)
    )
    source = pretraining_config("srnn", "rnn", "jsb", 400, ["lr=1.5", "seed=3"])
    plain = resolve("rnn", "jsb", sets=["lr=1.5", "seed=3", "hidden_size=400"])
    assert (source.lr, source.architecture["state_dropout"], source.seed) == (0.25, 0.1, 3)
    assert dataclasses.replace(source, lr=plain.lr, architecture=plain.architecture) == plain
    assert plain.architecture["state_dropout"] != 0.1 and plain.architecture["hidden_size"] == 400
    srnn = resolve("srnn", "jsb")
    assert srnn.lr != 0.25 and srnn.architecture.get("state_dropout") != 0.1
    own.write_text("[pretraining.architecture]\nstate_dropout = 0.1\n")  # a nested table as flat keys
    assert pretraining_table("srnn", "jsb") == {"state_dropout": 0.1}
    assert (
        pretraining_config("srnn", "rnn", "jsb", 400, ["state_dropout=0.2"]).architecture["state_dropout"]
        == 0.1
    )
    wide = resolve("rnn", "jsb", sets=["hidden_size=400"])
    assert pretraining_config("dts-rnn", "rnn", "jsb", 400, []) == wide  # no table
    for fixed in [
        "hidden_size = 300",
        "[pretraining.architecture]\nhidden_size = 300",
        'model = "dts-rnn"',
        'data = "nottingham"',
        'init_from = "runs/x"',
    ]:
        own.write_text(f"[pretraining]\n{fixed}\n")
        for read in (lambda: pretraining_table("srnn", "jsb"), lambda: resolve("srnn", "jsb")):
            with pytest.raises(
                ValueError, match=r"\[pretraining\] of srnn on jsb .* without init_from, hidden"
            ):
                read()
    own.write_text("[pretraining]\nlearning_rate = 1.0\n")
    with pytest.raises(ValueError, match=r"\[pretraining\] of srnn on jsb: unknown setting\(s\) learning"):
        pretraining_config("srnn", "rnn", "jsb", 400, [])


def test_deeprnn_train_says_which_tables_it_leaves_to_reproduce(tmp_path, monkeypatch, capsys):
    """deeprnn train trains one run: it names a config's [finetune] and [pretraining] tables, which
    only deeprnn reproduce trains, and passes on the config without them."""
    import deeprnn.training.trainer as trainer

    seen = []

    def record(config, out, **_):
        seen.append(config)
        return {"metric": "ppl", "valid_ppl": 1.0, "test_ppl": 1.0}

    monkeypatch.setattr(trainer, "train", record)
    path = tmp_path / "srnn.toml"
    path.write_text("[finetune]\nlr = 0.5\n\n[pretraining]\nlr = 0.25\n")
    assert main(["train", "--model", "srnn", "--data", "jsb", "--config", str(path), "--out", "RUN"]) == 0
    err = capsys.readouterr().err
    assert "has a [finetune] stage" in err and "has a [pretraining] table" in err
    assert seen == [resolve("srnn", "jsb")]  # neither table's lr
    assert main(["train", "--model", "srnn", "--data", "jsb", "--out", "RUN"]) == 0
    assert "[pretraining]" not in capsys.readouterr().err  # the committed JSB sRNN has none


def test_each_length_limit_is_reached_at_its_value_and_zero_is_no_limit():
    config = TrainConfig(epochs=5, max_updates=100, time_budget_s=60.0)
    assert limits_passed(config, updates=99, epochs=4, seconds=59.9) == []
    assert limits_passed(config, updates=100, epochs=4, seconds=59.9) == ["max updates"]
    assert limits_passed(config, updates=99, epochs=4, seconds=60.0) == ["time budget"]
    assert limits_passed(config, updates=99, epochs=5, seconds=0.0) == ["epochs"]
    assert limits_passed(config, 100, 5, 60.0) == ["time budget", "max updates", "epochs"]
    assert limits_passed(config, 101, 6, 61.0) == ["time budget", "max updates", "epochs"]  # past each
    smallest = TrainConfig(epochs=1, max_updates=1, time_budget_s=0.5)
    assert limits_passed(smallest, 1, 1, 0.5) == ["time budget", "max updates", "epochs"]
    unlimited = TrainConfig(epochs=5, max_updates=0, time_budget_s=0.0)
    assert limits_passed(unlimited, updates=10**9, epochs=0, seconds=1e9) == []


def test_a_stopped_run_stops_again_only_under_a_limit_it_has_reached():
    config = TrainConfig(epochs=5, max_updates=100, time_budget_s=60.0)
    assert limit_reached(config, "time budget", updates=50, epochs=2, seconds=60.0)
    assert not limit_reached(with_limits(config, {"time_budget_s": 0}), "time budget", 50, 2, 60.0)
    assert not limit_reached(with_limits(config, {"time_budget_s": 61}), "time budget", 50, 2, 60.0)
    assert not limit_reached(with_limits(config, {"max_updates": 101}), "max updates", 100, 2, 30.0)
    assert limit_reached(config, "epochs", updates=50, epochs=5, seconds=30.0)
    assert not limit_reached(with_limits(config, {"epochs": 6}), "epochs", 50, 5, 30.0)
    # two limits reached at once: raising the one named still leaves the other
    assert limit_reached(with_limits(config, {"max_updates": 200}), "max updates", 100, 5, 30.0)
    both = with_limits(config, {"max_updates": 200, "epochs": 6})
    assert not limit_reached(both, "max updates", 100, 5, 30.0)
    for reason in ("early stopping", "min_lr"):  # no limit brings those back
        assert limit_reached(with_limits(config, {"epochs": 1000}), reason, 50, 5, 30.0)


def test_a_resumed_run_may_change_its_limits_and_a_start_for_averaging_not_yet_reached():
    config = TrainConfig(epochs=5, average_after_epochs=None)
    changed = with_limits(config, {"epochs": "9", "max_updates": "7", "time_budget_s": "30"})
    assert (changed.epochs, changed.max_updates, changed.time_budget_s) == (9, 7, 30.0)
    assert dataclasses.replace(changed, epochs=5, max_updates=0, time_budget_s=0.0) == config
    with pytest.raises(ConfigError, match="only epochs, max_updates, time_budget_s may change.*not lr, seed"):
        with_limits(config, {"seed": "1", "lr": "2", "epochs": "9"})
    with pytest.raises(ConfigError, match="not average_after_epochs"):
        with_limits(config, {"average_after_epochs": "8"})  # without the epochs begun, never
    assert with_limits(config, {"average_after_epochs": "8"}, epochs_begun=8).average_after_epochs == 8
    assert with_limits(config, {"average_after_epochs": "8"}, epochs_begun=5).average_after_epochs == 8
    with pytest.raises(ConfigError, match="has begun 9 epoch"):
        with_limits(config, {"average_after_epochs": "8"}, epochs_begun=9)
    averaged = TrainConfig(average_after_epochs=6)
    assert with_limits(averaged, {"average_after_epochs": "7"}, epochs_begun=6).average_after_epochs == 7
    with pytest.raises(ConfigError, match=r"can only begin at epoch 7 or later.*is 6\)"):
        with_limits(averaged, {"average_after_epochs": "8"}, epochs_begun=7)  # it has begun
    assert with_limits(averaged, {"average_after_epochs": "6"}, epochs_begun=30) == averaged  # unchanged


def test_set_takes_key_equals_value_as_written():
    assert parse_sets([" lr =3", "note=a=b", "init_from="]) == {"lr": "3", "note": "a=b", "init_from": ""}
    for bad in ("lr", "=3", " =3"):
        with pytest.raises(ConfigError, match=f"--set expects KEY=VALUE, got {bad!r}"):
            parse_sets([bad])


def test_values_take_the_type_of_their_setting():
    config = apply(
        {
            "lr": "0.5",
            "epochs": " 7 ",
            "init_from": "runs/a",
            "average_when_stalled": "null",
            "shortcut": "true",
        }
    )
    assert (config.lr, config.epochs, config.init_from, config.average_when_stalled) == (
        0.5,
        7,
        "runs/a",
        None,
    )
    assert config.architecture == {"shortcut": True}
    assert apply({"init_from": "none"}).init_from is None
    assert apply({"init_from": ""}).init_from is None
    assert apply({"transition_sizes": "5"}).architecture == {"transition_sizes": [5]}
    assert apply({"transition_sizes": 5}).architecture == {"transition_sizes": [5]}
    assert apply({"transition_sizes": "[5, 4]"}).architecture == {"transition_sizes": [5, 4]}
    assert apply({"optimizer": "adam"}).optimizer == "adam"
    with pytest.raises(ConfigError, match="architecture: expected a table of settings, got 3"):
        apply({"architecture": 3})


def test_a_config_file_that_is_missing_or_not_toml_is_named(tmp_path):
    with pytest.raises(ConfigError, match=f"config file {tmp_path / 'none.toml'} does not exist"):
        read_toml(tmp_path / "none.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("lr = = 3\n")
    with pytest.raises(ConfigError, match=f"{broken}: not valid TOML"):
        read_toml(broken)
    stage = tmp_path / "stage.toml"
    stage.write_text("finetune = 3\n")
    with pytest.raises(ConfigError, match=r"\[finetune\] of rnn on jsb must be a table of settings.*got 3"):
        resolve("rnn", "jsb", str(stage))


def test_flat_keys_beside_an_architecture_table_win_over_it():
    values = {"architecture": {"levels": 2, "shortcut": True}, "levels": 3, "lr": 1.0}
    assert apply(values).architecture == {"levels": 3, "shortcut": True}
    with pytest.raises(ConfigError, match="unknown setting.*abc"):  # beside a table, still checked
        apply({"architecture": {"levels": 2}, "abc": 1})


def test_architecture_settings_keep_the_order_they_were_given_in():
    # the order is written into config.json and published weights: a republished file whose
    # weights did not change must come out byte for byte the same
    given = {"transition_units": "lp:3", "output_units": "maxout:3", "hidden_size": 800}
    for order in (list(given), list(reversed(given))):
        assert list(apply({k: given[k] for k in order}).architecture) == order


AT_LEAST_1 = ([1, 2], [0, -1])
NOT_NEGATIVE = ([0.0, 0.5, 2.0], [-1e-9, -1.0])
POSITIVE = ([1e-9, 0.5, 2.0], [0.0, -1.0])
PROBABILITY = ([0.0, 0.5, 0.999], [1.0, -0.01, 1.5])
COUNT = ([0, 1, 5], [-1])  # 0 or more, whole
EDGES = {  # the setting: (values it takes, values it refuses), at and around each edge
    **dict.fromkeys(["hidden_size", "levels", "nade_hidden", "batch_size", "bptt_steps"], AT_LEAST_1),
    **dict.fromkeys(["eval_batch_size", "frames_per_beat", "halve_patience", "epochs"], AT_LEAST_1),
    **dict.fromkeys(["checkpoint_every", "average_when_stalled"], AT_LEAST_1),
    **dict.fromkeys(
        ["transition_sizes", "output_sizes", "input_sizes"], ([[1], [3, 1]], [[0], [3, 0], [-2]])
    ),
    **dict.fromkeys(["output_init_std", "weight_decay", "clip_norm", "min_lr", "weight_noise"], NOT_NEGATIVE),
    **dict.fromkeys(["pretrained_lr_scale", "time_budget_s"], NOT_NEGATIVE),
    **dict.fromkeys(["tempo_bpm", "lr", "lr_decay_beta"], POSITIVE),
    **dict.fromkeys(["input_dropout", "state_dropout", "recurrent_dropout", "output_dropout"], PROBABILITY),
    "embedding_dropout": PROBABILITY,
    "momentum": PROBABILITY,
    **dict.fromkeys(["average_after_epochs", "max_updates", "patience", "eval_every"], COUNT),
    "seed": ([0, 2**63 - 1], [-1, 2**63, 2**64]),
    "data": (["jsb", " x "], ["", "   "]),
    "init_from": (["runs/a"], []),  # blank through --set or TOML means none (below)
    "model": (["rnn", "DOTS-RNN*"], ["lstm", ""]),
    "output_units": (["tanh", "lp:3", "maxout:2"], ["softmax", "lp:0"]),
    "optimizer": (["sgd", "adam", "adamw"], ["SGD", "lbfgs"]),
    "device": (["auto", "cpu", "cuda"], ["gpu"]),
    "precision": (["fp32", "bf16"], ["fp16", "BF16"]),
}


@pytest.mark.parametrize("key", sorted(EDGES))
def test_each_setting_takes_the_values_of_its_range_and_refuses_those_outside(key):
    taken, refused = EDGES[key]
    for value in taken:
        config = apply({key: value})
        got = config.architecture[key] if key in ARCHITECTURE else getattr(config, key)
        assert got == value or (key == "model" and got == "dots-rnn*"), (key, value)
    for value in refused:
        with pytest.raises(ConfigError, match=f"--set {key}: must be "):
            apply({key: value})


def test_every_range_has_its_edges_checked():
    from deeprnn.training.ranges import CHOICES, RANGES

    unchecked = set(RANGES) - set(EDGES) - (set(CHOICES) - {"optimizer", "device"})
    assert unchecked == {"input_units", "transition_units"}  # the same unit check as output_units


# A bad value for every setting: the fields of TrainConfig and of its architecture table (None:
# the setting takes any value of its type).
BAD = {
    "model": "lstm",
    "data": " ",
    "hidden_size": 0,
    "transition_sizes": [400, 0],
    "output_sizes": [-1],
    "input_sizes": "[0]",
    "levels": 0,
    "transition_units": "gelu",
    "output_units": "maxout:0",
    "input_units": "softmax",
    "shortcut": "maybe",
    "bias": 1,
    "tie_weights": "often",
    "output_init_std": -0.01,
    "head": "gaussian",
    "nade_hidden": 0,
    "nade_order": "random",
    "transition_kind": "lstm",
    "input_dropout": 1.0,
    "state_dropout": -0.1,
    "recurrent_dropout": "nan",
    "output_dropout": 2,
    "embedding_dropout": -0.1,
    "batch_size": 0,
    "bptt_steps": -5,
    "eval_batch_size": 0,
    "text_level": "byte",
    "frames_per_beat": 0,
    "tempo_bpm": 0,
    "optimizer": "lbfgs",
    "lr": 0,
    "momentum": 1.0,
    "weight_decay": -1e-4,
    "clip_norm": "nan",
    "schedule": "exp",
    "lr_decay_beta": 0,
    "halve_patience": 0,
    "min_lr": "-inf",
    "weight_noise": "nan",
    "average_after_epochs": -1,
    "average_when_stalled": 0,
    "init_from": 5,
    "init_parts": "everything",
    "pretrained_lr_scale": -0.1,
    "epochs": 0,
    "max_updates": -1,
    "time_budget_s": "inf",
    "patience": -1,
    "eval_every": -1,
    "checkpoint_every": 0,
    "seed": -1,
    "device": "tpu",
    "precision": "fp16",
    "cuda_graphs": "yes",
    "data_kind": "audio",
    "notes": None,
}


def test_every_setting_has_a_checked_range():
    assert set(BAD) == {f.name for f in dataclasses.fields(TrainConfig)} - {"architecture"} | set(
        ARCHITECTURE
    )
    for key, value in BAD.items():
        if value is None:
            continue
        with pytest.raises(ConfigError, match=f"^--set {key}: must be "):
            apply({key: value})
    with pytest.raises(ConfigError, match="^architecture: expected a table of settings"):
        apply({"architecture": [3]})
    with pytest.raises(ConfigError, match="^unknown architecture setting.* colour"):
        TrainConfig(architecture={"colour": "red"})
    with pytest.raises(ConfigError, match="^--set seed: must be a whole number"):
        TrainConfig(seed=True)  # not via --set, too


def test_a_value_of_the_wrong_type_or_not_finite_is_refused():
    for key, value, wanted in [
        ("epochs", 2.5, "a whole number"),
        ("epochs", [1, 2], "a whole number"),
        ("epochs", True, "a whole number"),
        ("lr", "fast", "a number"),
        ("lr", False, "a number"),
        ("shortcut", 1, "true or false"),
        ("transition_sizes", [2.5], "a list of whole numbers like"),
        ("transition_sizes", [True], "a list of whole numbers like"),
        ("average_after_epochs", 1.5, "a whole number or none"),
    ]:
        with pytest.raises(ConfigError, match=f"--set {key}: must be {wanted}"):
            apply({key: value})
    for key in ("lr", "clip_norm", "weight_noise", "time_budget_s"):
        for value in (math.inf, -math.inf, math.nan, "nan", "inf", "-inf"):
            with pytest.raises(ConfigError, match=f"--set {key}: must be a finite number"):
                apply({key: value})
    assert apply({"lr": 3}).lr == 3.0 and isinstance(apply({"lr": 3}).lr, float)  # an int for a float
    assert apply({"average_after_epochs": None}).average_after_epochs is None
    assert apply({"init_from": " "}).init_from is None  # --set init_from= : no pretraining
    with pytest.raises(ConfigError, match="--set init_from: must be a run folder"):
        TrainConfig(init_from=" ")  # from Python, a blank path is an error


def test_model_and_data_come_from_the_arguments_then_set_then_the_file_then_the_defaults(tmp_path):
    file = tmp_path / "run.toml"
    file.write_text('model = "srnn"\ndata = "musedata"\n')
    assert (resolve(None, None).model, resolve(None, None).data) == ("dts-rnn", "jsb")
    from_file = resolve(None, None, str(file))
    assert (from_file.model, from_file.data) == ("srnn", "musedata")
    from_set = resolve(None, None, str(file), sets=["model=rnn", "data=nottingham"])
    assert (from_set.model, from_set.data) == ("rnn", "nottingham")
    given = resolve("dots-rnn", "piano-midi", str(file), sets=["model=rnn", "data=nottingham"])
    assert (given.model, given.data) == ("dots-rnn", "piano-midi")
