"""``deeprnn reproduce``: tables from committed configs, skipping finished runs."""

from __future__ import annotations

import json

from deeprnn.cli import main
from deeprnn.reproduce import PAPER, cells

SMALL = [
    "hidden_size=10",
    "transition_sizes=[8]",
    "output_sizes=[8]",
    "max_updates=6",
    "batch_size=16",
    "eval_batch_size=64",
    "eval_every=3",
    "device=cpu",
]


def test_pretraining_runs_come_first():
    order = [m for _, m in cells("music", None, ["jsb"])]
    assert order.index("rnn") < order.index("srnn")
    assert order.index("dts-rnn") < order.index("dots-rnn")


def test_reproduce_writes_the_table_and_skips_finished_runs(tmp_path, data_root, capsys):
    argv = [
        "reproduce",
        "music",
        "--models",
        "dts-rnn",
        "dots-rnn",
        "--data",
        "jsb",
        "--out",
        str(tmp_path),
        "--data-dir",
        str(data_root),
    ]
    for s in SMALL:
        argv += ["--set", s]
    assert main(argv) == 0
    table = json.loads((tmp_path / "music.json").read_text())
    rows = {r["model"]: r for r in table["rows"]}
    assert set(rows) == {"dts-rnn", "dots-rnn"}
    assert rows["dts-rnn"]["paper"] == PAPER["jsb"]["dts-rnn"] == 8.278
    assert rows["dots-rnn"]["init_from"].endswith("jsb/dts-rnn")  # layer-wise pretraining
    assert rows["dts-rnn"]["scale"].startswith("limited")
    assert rows["dts-rnn"]["at_or_below_paper"] is False  # six updates of a tiny model
    excess = rows["dts-rnn"]["test_nll"] - 8.278
    assert (
        f"| jsb | dts-rnn | {rows['dts-rnn']['test_nll']:.3f} | 8.278 | no (+{excess:.3f}) |"
        in (tmp_path / "music.md").read_text()
    )
    assert (tmp_path / "music-jsb.png").stat().st_size > 1000
    first = rows["dts-rnn"]["test_nll"]
    capsys.readouterr()
    assert main(argv) == 0  # everything finished: nothing is trained again
    table = json.loads((tmp_path / "music.json").read_text())
    assert {r["model"]: r["test_nll"] for r in table["rows"]}["dts-rnn"] == first
    assert main([*argv, "--set", "max_updates=9"]) == 0  # a higher limit: the runs carry on
    table = json.loads((tmp_path / "music.json").read_text())
    assert {r["model"]: r["updates"] for r in table["rows"]} == {"dts-rnn": 9, "dots-rnn": 9}


def test_srnn_starts_from_an_rnn_of_its_own_width(tmp_path, data_root):
    """The paper's JSB RNN has 200 units, its sRNN 400: the sRNN is pretrained from a 400-unit RNN
    trained for it, unless pretraining is turned off."""
    tiny = ["max_updates=2", "eval_every=2", "batch_size=16", "eval_batch_size=64", "device=cpu"]
    argv = ["reproduce", "music", "--models", "srnn", "--data", "jsb", "--data-dir", str(data_root)]
    for s in tiny:
        argv += ["--set", s]
    assert main([*argv, "--out", str(tmp_path / "paper")]) == 0
    widened = tmp_path / "paper" / "runs" / "jsb" / "rnn-400"
    config = json.loads((widened / "config.json").read_text())
    assert (config["model"], config["hidden_size"], config["max_updates"]) == ("rnn", 400, 2)
    assert not (tmp_path / "paper" / "runs" / "jsb" / "rnn").exists()
    rows = json.loads((tmp_path / "paper" / "music.json").read_text())["rows"]
    assert [(r["model"], r["init_from"]) for r in rows] == [("srnn", str(widened))]

    assert main([*argv, "--out", str(tmp_path / "scratch"), "--no-pretraining"]) == 0
    rows = json.loads((tmp_path / "scratch" / "music.json").read_text())["rows"]
    assert [(r["model"], r["init_from"]) for r in rows] == [("srnn", None)]
    assert not (tmp_path / "scratch" / "runs" / "jsb" / "rnn-400").exists()
