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
