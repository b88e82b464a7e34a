"""Published weights: each reproduces its table row; publishing and loading are exact."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from conftest import REPO

import deeprnn
from deeprnn import DeepRNN
from deeprnn.cli import main
from deeprnn.errors import ConfigError
from deeprnn.published import Published, available, metadata, publish, read_metadata
from deeprnn.training import trainer
from deeprnn.training.config import apply, recipe_differences, resolve
from deeprnn.training.evaluation import evaluate_run, load_run


@functools.cache
def _rows() -> dict[str, dict]:
    """The rows of the results tables by name (data/model), each with its test value as "test"
    (read once for all the parametrized tests; none changes them)."""
    rows = {}
    for table in ("music", "music-nade", "ptb-char", "ptb-word"):
        result = json.loads((REPO / "results" / f"{table}.json").read_text())
        rows.update(
            {
                f"{r['data']}/{r['model']}": {**r, "test": r[f"test_{result['metric']}"]}
                for r in result["rows"]
            }
        )
    return rows


def _table_rows() -> dict[str, float]:
    return {name: row["test"] for name, row in _rows().items()}


@pytest.mark.parametrize("name", available())
def test_published_weights_reproduce_their_table_row(name, data_root, monkeypatch):
    monkeypatch.delenv("DEEPRNN_WEIGHTS", raising=False)
    rows = _table_rows()
    assert name in rows, f"{name} is published but is no row of results/"
    result = evaluate_run(Published(name), "test", data_dir=str(data_root))
    assert result["value"] == pytest.approx(rows[name], abs=1e-4)


@pytest.mark.parametrize("name", available())
def test_published_weights_were_trained_under_their_committed_config(name, monkeypatch):
    """Each row's recipe is the committed config's (its [finetune] table for a second stage), so
    that `deeprnn reproduce` rebuilds that row; a time budget may differ only where the row says
    that none cut its run short (scale "full")."""
    monkeypatch.delenv("DEEPRNN_WEIGHTS", raising=False)
    row = _rows()[name]
    data, model = name.split("/")
    trained = apply(json.loads(metadata(name)["train_config"]))
    differences = recipe_differences(trained, resolve(model, data, finetune=bool(row["first_stage"])))
    if row["scale"] == "full":
        differences.pop("time_budget_s", None)
    assert differences == {}, f"{name}: the published run's settings → the committed config's"


def test_the_package_publishes_weights_for_every_row_of_the_music_tables(monkeypatch):
    monkeypatch.delenv("DEEPRNN_WEIGHTS", raising=False)
    music = {name for name in _table_rows() if not name.startswith("ptb-")}
    assert music - set(available()) == set()
    penn = {"ptb-char/rnn", "ptb-char/dts-rnn", "ptb-char/dots-rnn", "ptb-char/srnn"}
    assert penn <= set(available())  # the Penn Treebank rows at full scale


@pytest.fixture(scope="module")
def run(tmp_path_factory, rolls):
    out = tmp_path_factory.mktemp("run") / "run"
    settings = {"model": "dts-rnn", "data": str(rolls), "hidden_size": 8, "max_updates": 3, "device": "cpu"}
    trainer.train(apply({**settings, "batch_size": 4}), out, log=lambda _: None)
    return out


def test_publishing_a_run_and_loading_it_back_is_exact(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEEPRNN_WEIGHTS", str(tmp_path / "w"))
    path = publish(run, tmp_path / "w")
    name = "tiny/dts-rnn"  # a user's data set goes by its file's name (tiny.pickle)
    assert path == tmp_path / "w" / "tiny" / "dts-rnn.safetensors" and available() == [name]
    meta = read_metadata(path)
    assert json.loads(meta["scores"]) == json.loads((run / "results.json").read_text())["scores"]
    from_run, published = load_run(run), deeprnn.pretrained(name)
    assert not published.training
    for key, value in from_run.state_dict().items():
        assert torch.equal(published.state_dict()[key], value), key
    x = torch.rand(7, 2, 88).round()
    assert torch.equal(published(x)[0], from_run(x)[0])
    assert torch.equal(DeepRNN.from_run(run)(x)[0], from_run(x)[0])


def test_publishing_again_keeps_equal_weights_byte_for_byte_and_mends_others(run, tmp_path):
    from safetensors.torch import load_file, save

    path = publish(run, tmp_path)
    first = path.read_bytes()
    for _ in range(3):  # safetensors writes the metadata in a random order: a rewrite would show
        assert publish(run, tmp_path).read_bytes() == first
    tensors = {key: value.clone() for key, value in load_file(path).items()}  # not the file's map
    key = next(iter(tensors))
    path.write_bytes(save({**tensors, key: tensors[key] + 1}, metadata=read_metadata(path)))
    publish(run, tmp_path)
    assert torch.equal(load_file(path)[key], tensors[key])


def test_unknown_or_malformed_names_list_the_published_ones(monkeypatch, tmp_path, run):
    monkeypatch.setenv("DEEPRNN_WEIGHTS", str(tmp_path))
    publish(run, tmp_path)
    with pytest.raises(ConfigError, match=r"no published weights 'jsb/srnn' .*published: .*/dts-rnn"):
        deeprnn.pretrained("jsb/srnn")
    with pytest.raises(ConfigError, match=r"'jsb': a name is data/model; published: "):
        deeprnn.pretrained("jsb")
    with pytest.raises(ConfigError, match=r"unknown model 'lstm'"):
        deeprnn.pretrained("jsb/lstm")


def test_weights_without_deeprnns_metadata_are_named_not_a_key_error(monkeypatch, tmp_path):
    from safetensors.torch import save_file

    monkeypatch.setenv("DEEPRNN_WEIGHTS", str(tmp_path))
    (tmp_path / "jsb").mkdir()
    model = DeepRNN(deeprnn.preset("rnn", "jsb"))
    save_file(dict(model.state_dict()), tmp_path / "jsb" / "rnn.safetensors", metadata={"update": "3"})
    expected = r"rnn.safetensors: not weights deeprnn published \(its metadata has no model_config, train_"
    for reads in (deeprnn.pretrained, deeprnn.published.metadata):
        with pytest.raises(ConfigError, match=expected):
            reads("jsb/rnn")


def test_eval_and_sample_take_published_weights(data_root, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DEEPRNN_WEIGHTS", raising=False)
    rows = _table_rows()
    argv = ["eval", "--pretrained", "JSB/DT(S)-RNN", "--split", "test", "--json"]
    argv += ["--data-dir", str(data_root)]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["value"] == pytest.approx(rows["jsb/dts-rnn"], abs=1e-4)
    assert main(["sample", "--pretrained", "jsb/rnn", "--steps", "8", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "sample-0.mid").exists()
    assert main(["eval", "--pretrained", "jsb/rnn", str(tmp_path)]) == 2  # a run or a name, not both
    assert "one of the two" in capsys.readouterr().err
