"""``deeprnn reproduce``: tables from committed configs, skipping finished runs."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from deeprnn import reproduce
from deeprnn.cli import main
from deeprnn.reproduce import PAPER, cells, write_table
from deeprnn.training import config

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
    assert [u for u, _ in rows["dts-rnn"]["curve"]] == [3, 6]  # evaluated every 3 updates
    first = rows["dts-rnn"]["test_nll"]
    capsys.readouterr()
    assert main(argv) == 0  # everything finished: nothing is trained again
    table = json.loads((tmp_path / "music.json").read_text())
    assert {r["model"]: r["test_nll"] for r in table["rows"]}["dts-rnn"] == first
    assert main([*argv, "--set", "max_updates=9"]) == 0  # a higher limit: the runs carry on
    table = json.loads((tmp_path / "music.json").read_text())
    assert {r["model"]: r["updates"] for r in table["rows"]} == {"dts-rnn": 9, "dots-rnn": 9}


def test_a_model_named_alone_trains_its_source_first(tmp_path, data_root, monkeypatch):
    """`--models dots-rnn` on a fresh OUT: its DT(S)-RNN (as wide) is trained first, in its own
    row's folder, its second stage too (so that its row in the table is whole), and the DOT(S)-RNN
    starts from its first stage; never silently from scratch."""
    committed = config.paper_config_file
    own = tmp_path / "dts-rnn.toml"
    own.write_text(committed("dts-rnn", "jsb").read_text() + "\n[finetune]\nmax_updates = 3\n")
    monkeypatch.setattr(
        config, "paper_config_file", lambda m, d: own if (m, d) == ("dts-rnn", "jsb") else committed(m, d)
    )
    out = tmp_path / "out"
    reproduce.reproduce("music", out, models=["dots-rnn"], datas=["jsb"], data_dir=str(data_root), sets=SMALL)
    runs = out / "runs" / "jsb"
    assert sorted(p.name for p in runs.iterdir()) == ["dots-rnn", "dts-rnn", "dts-rnn-finetune"]
    assert json.loads((runs / "dts-rnn" / "results.json").read_text())["updates"] == 6
    assert json.loads((runs / "dots-rnn" / "config.json").read_text())["init_from"] == str(runs / "dts-rnn")
    rows = {r["model"]: r for r in json.loads((out / "music.json").read_text())["rows"]}
    assert rows["dts-rnn"]["run"] == str(runs / "dts-rnn-finetune") and rows["dts-rnn"]["first_stage"]


def test_srnn_starts_from_an_rnn_of_its_own_width(tmp_path, data_root, monkeypatch, capsys):
    """The paper's JSB RNN has 200 units, its sRNN 400: the sRNN is pretrained from a 400-unit RNN
    trained for it, with the RNN's recipe under the sRNN's [pretraining] table, whose settings win
    over --set (its length limits too, when the table is rerun), unless pretraining is turned off."""
    committed = config.paper_config_file
    own = tmp_path / "srnn.toml"
    table = "\n[pretraining]\nstate_dropout = 0.1\nmax_updates = 2\n"
    own.write_text(committed("srnn", "jsb").read_text() + table)
    monkeypatch.setattr(
        config, "paper_config_file", lambda m, d: own if (m, d) == ("srnn", "jsb") else committed(m, d)
    )
    tiny = ["max_updates=3", "eval_every=2", "batch_size=16", "eval_batch_size=64", "device=cpu"]
    argv = ["reproduce", "music", "--models", "srnn", "--data", "jsb", "--data-dir", str(data_root)]
    for s in tiny:
        argv += ["--set", s]
    assert main([*argv, "--out", str(tmp_path / "paper")]) == 0
    widened = tmp_path / "paper" / "runs" / "jsb" / "rnn-400"
    settings = json.loads((widened / "config.json").read_text())
    shape = settings["model"], settings["architecture"]["hidden_size"], settings["max_updates"]
    assert shape == ("rnn", 400, 2)  # the table's limit, not --set's 3
    assert settings["architecture"]["state_dropout"] == 0.1  # the table's, not the RNN's 0.3
    stacked = json.loads((widened.parent / "srnn" / "config.json").read_text())
    assert (stacked["architecture"]["state_dropout"], stacked["max_updates"]) == (0.3, 3)
    assert not (tmp_path / "paper" / "runs" / "jsb" / "rnn").exists()
    rows = json.loads((tmp_path / "paper" / "music.json").read_text())["rows"]
    assert [(r["model"], r["init_from"]) for r in rows] == [("srnn", str(widened))]
    shutil.rmtree(widened.parent / "srnn")  # the source is visited again, and kept as it was trained
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "paper")]) == 0  # done: not carried on to --set's 3
    out = capsys.readouterr().out
    assert "jsb/rnn-400: done, skipped" in out and "differ" not in out
    assert json.loads((widened / "results.json").read_text())["updates"] == 2

    assert main([*argv, "--out", str(tmp_path / "scratch"), "--no-pretraining"]) == 0
    rows = json.loads((tmp_path / "scratch" / "music.json").read_text())["rows"]
    assert [(r["model"], r["init_from"]) for r in rows] == [("srnn", None)]
    assert not (tmp_path / "scratch" / "runs" / "jsb" / "rnn-400").exists()


def test_a_pretraining_table_trains_a_source_for_the_model_at_any_width(tmp_path, data_root, monkeypatch):
    """With a [pretraining] table the sRNN starts from an RNN trained for it under the table, even
    where the RNN's row is as wide (here both shrunk by --set), not from that row."""
    committed = config.paper_config_file
    own = tmp_path / "srnn.toml"
    own.write_text(committed("srnn", "jsb").read_text() + "\n[pretraining]\nlr = 0.5\n")
    monkeypatch.setattr(
        config, "paper_config_file", lambda m, d: own if (m, d) == ("srnn", "jsb") else committed(m, d)
    )
    tiny = [
        "hidden_size=9",
        "max_updates=2",
        "eval_every=2",
        "batch_size=16",
        "eval_batch_size=64",
        "device=cpu",
    ]
    out = tmp_path / "out"
    reproduce.reproduce(
        "music", out, models=["rnn", "srnn"], datas=["jsb"], data_dir=str(data_root), sets=tiny
    )
    runs = out / "runs" / "jsb"
    assert sorted(p.name for p in runs.iterdir()) == ["rnn", "rnn-9", "srnn"]
    assert json.loads((runs / "srnn" / "config.json").read_text())["init_from"] == str(runs / "rnn-9")
    rates = {name: json.loads((runs / name / "config.json").read_text())["lr"] for name in ("rnn", "rnn-9")}
    assert rates["rnn-9"] == 0.5 != rates["rnn"]


def test_each_committed_pretraining_table_belongs_to_a_pretrained_model():
    """A [pretraining] table in a committed config sets a source that reproduce trains (else it
    would never be used)."""
    found = []
    for path in sorted((Path(reproduce.__file__).parent / "configs").glob("*/*.toml")):
        if config.read_toml(path).get(config.PRETRAINING) is not None:
            found.append((path.parent.name, path.stem))
    assert found and all(model in reproduce.PRETRAINED_FROM for _, model in found)
    assert ("ptb-word", "srnn") in found


def test_the_pretraining_copies_what_the_models_config_says(tmp_path, data_root, monkeypatch):
    """init_parts of the sRNN's config (here "stack") is how it starts from its RNN; without
    pretraining it trains from scratch."""
    committed = config.paper_config_file
    own = tmp_path / "srnn.toml"
    own.write_text(committed("srnn", "jsb").read_text() + '\ninit_parts = "stack"\n')
    monkeypatch.setattr(
        config, "paper_config_file", lambda m, d: own if (m, d) == ("srnn", "jsb") else committed(m, d)
    )
    argv = ["reproduce", "music", "--models", "rnn", "srnn", "--data", "jsb", "--data-dir", str(data_root)]
    for s in ["hidden_size=10", "max_updates=2", "eval_every=2", "batch_size=16", "device=cpu"]:
        argv += ["--set", s]  # the RNN as wide as the sRNN
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    runs = tmp_path / "out" / "runs" / "jsb"
    settings = json.loads((runs / "srnn" / "config.json").read_text())
    assert (settings["init_from"], settings["init_parts"]) == (str(runs / "rnn"), "stack")
    source = json.loads((runs / "rnn" / "config.json").read_text())
    assert (source["init_from"], source["init_parts"]) == (None, "recurrence")
    assert main([*argv, "--out", str(tmp_path / "scratch"), "--no-pretraining"]) == 0
    settings = json.loads((tmp_path / "scratch" / "runs" / "jsb" / "srnn" / "config.json").read_text())
    assert settings["init_from"] is None


def test_a_finetune_stage_trains_from_the_first_and_gives_the_row(tmp_path, data_root, monkeypatch, capsys):
    """A config's [finetune] table: a second run from the first's best, whose settings win over
    --set, and whose numbers (with both stages' cost) make the row."""
    committed = config.paper_config_file
    own = tmp_path / "rnn.toml"
    own.write_text(
        committed("rnn", "jsb").read_text()
        + "\n[finetune]\npretrained_lr_scale = 1.0\nlr = 0.5\nmax_updates = 3\n"
    )
    monkeypatch.setattr(
        config, "paper_config_file", lambda m, d: own if (m, d) == ("rnn", "jsb") else committed(m, d)
    )
    out = tmp_path / "out"
    argv = [
        "reproduce",
        "music",
        "--models",
        "rnn",
        "--data",
        "jsb",
        "--out",
        str(out),
        "--data-dir",
        str(data_root),
    ]
    for s in [*SMALL, "max_updates=4", "eval_every=2"]:
        argv += ["--set", s]
    assert main(argv) == 0
    first, second = out / "runs" / "jsb" / "rnn", out / "runs" / "jsb" / "rnn-finetune"
    settings = json.loads((second / "config.json").read_text())
    assert settings["init_from"] == str(first)
    assert (settings["lr"], settings["pretrained_lr_scale"], settings["max_updates"]) == (0.5, 1.0, 3)
    assert (settings["architecture"]["hidden_size"], settings["seed"]) == (
        10,
        0,
    )  # --set, where the table is silent
    done = [json.loads((f / "results.json").read_text()) for f in (first, second)]
    assert [d["updates"] for d in done] == [4, 3]
    (row,) = json.loads((out / "music.json").read_text())["rows"]
    assert row["test_nll"] == done[1]["test_nll"] != done[0]["test_nll"]
    assert row["first_stage"]["test_nll"] == done[0]["test_nll"]
    assert (row["updates"], row["run"], row["init_from"]) == (7, str(second), None)
    assert row["wall_seconds"] == done[0]["train_seconds"] + done[1]["train_seconds"]
    assert f"| jsb | rnn + finetune | {row['test_nll']:.3f} |" in (out / "music.md").read_text()
    assert [u for u, _ in row["curve"]][:2] == [2, 4] and row["curve"][2][0] > 4  # the stage continues

    capsys.readouterr()
    assert main([*argv, "--set", "max_updates=6"]) == 0  # the first stage carries on, the second is done
    out = capsys.readouterr().out
    assert "jsb/rnn: resuming" in out and "differ" not in out
    assert json.loads((first / "results.json").read_text())["updates"] == 6
    assert json.loads((second / "results.json").read_text()) == done[1]


def test_a_cell_without_runs_keeps_its_row(tmp_path, data_root, capsys, monkeypatch):
    """Runs are not committed: rerunning one cell in a fresh checkout rewrites that row and keeps
    the others from the table already there; a kept row without a curve is named on its data
    set's PNG without a line, and a data set with no curve at all keeps its PNG."""
    argv = ["reproduce", "music", "--data", "jsb", "--out", str(tmp_path), "--data-dir", str(data_root)]
    for s in SMALL:
        argv += ["--set", s]
    assert main([*argv, "--models", "rnn"]) == 0
    (kept,) = json.loads((tmp_path / "music.json").read_text())["rows"]
    (tmp_path / "runs" / "jsb" / "rnn").rename(tmp_path / "gone")
    assert main([*argv, "--models", "dts-rnn"]) == 0
    rows = {r["model"]: r for r in json.loads((tmp_path / "music.json").read_text())["rows"]}
    assert list(rows) == ["rnn", "dts-rnn"] and rows["rnn"] == kept
    assert f"| jsb | rnn | {kept['test_nll']:.3f} |" in (tmp_path / "music.md").read_text()

    legacy = {**kept}
    del legacy["curve"], legacy["first_stage"]  # as tables written before rows held them
    table = json.loads((tmp_path / "music.json").read_text())
    table["rows"][0] = legacy
    (tmp_path / "music.json").write_text(json.dumps(table))
    legends = []
    savefig = Figure.savefig
    monkeypatch.setattr(
        Figure,
        "savefig",
        lambda fig, *a, **k: (
            legends.append([t.get_text() for t in fig.axes[0].get_legend().get_texts()])
            or savefig(fig, *a, **k)
        ),
    )
    capsys.readouterr()
    assert main([*argv, "--models", "dts-rnn"]) == 0
    assert "music-jsb.png: rnn has no stored curve" in capsys.readouterr().out
    assert legends == [["rnn: no curve stored", "dts-rnn"]]  # dts-rnn's line, rnn named
    assert json.loads((tmp_path / "music.json").read_text())["rows"][0] == legacy

    table = json.loads((tmp_path / "music.json").read_text())
    del table["rows"][1]["curve"]  # no row with a curve: the picture stays
    picture, said = (tmp_path / "music-jsb.png").read_bytes(), []
    assert reproduce.plot_curves(table, tmp_path, said.append) == []
    assert said == ["music-jsb.png: kept as it was (no row of jsb has a stored curve)"]
    assert (tmp_path / "music-jsb.png").read_bytes() == picture


def test_tables_lands_the_rows_of_one_folders_runs_in_another_folders_tables(tmp_path, data_root):
    """``--tables DIR``: the runs stay under OUT, the tables are written into DIR over its own,
    as a finished cell lands in a committed results/ that holds the other cells' rows."""
    results, runs = tmp_path / "results", tmp_path / "runs-elsewhere"
    argv = ["reproduce", "music", "--data", "jsb", "--data-dir", str(data_root)]
    for s in SMALL:
        argv += ["--set", s]
    assert main([*argv, "--models", "rnn", "--out", str(results)]) == 0
    (kept,) = json.loads((results / "music.json").read_text())["rows"]
    assert main([*argv, "--models", "dts-rnn", "--out", str(runs), "--tables", str(results)]) == 0
    rows = {r["model"]: r for r in json.loads((results / "music.json").read_text())["rows"]}
    assert rows["rnn"] == kept and rows["dts-rnn"]["run"] == str(runs / "runs" / "jsb" / "dts-rnn")
    assert "| jsb | dts-rnn |" in (results / "music.md").read_text()
    assert (runs / "runs" / "jsb" / "dts-rnn" / "results.json").exists()
    assert not (runs / "music.json").exists()


def test_a_table_that_is_not_ours_is_an_error_not_overwritten(tmp_path):
    (tmp_path / "music.json").write_text('{"rows": [{"model": "rnn"}]}')
    with pytest.raises(ValueError, match="not a table written by deeprnn reproduce .*'data'"):
        write_table("music", tmp_path)
    assert (tmp_path / "music.json").read_text() == '{"rows": [{"model": "rnn"}]}'


def test_the_nade_table_compares_each_row_with_rnn_nade_under_both_conventions(tmp_path, data_root):
    """``reproduce music-nade``: the NADE ▷ behind the paper's ⊕, each row against RNN-NADE
    (2012), DOT(S)-RNN-NADE pretrained from DT(S)-RNN-NADE, and the test NLL also as the TCN
    paper's code scores it (frames 2..T)."""
    models = ["--models", "DOT(S)-RNN-NADE", "dts-rnn-nade"]
    argv = ["reproduce", "music-nade", *models, "--data", "jsb-chorales", "--out", str(tmp_path),
            "--data-dir", str(data_root), "--set", "nade_hidden=5"]  # fmt: skip
    for s in SMALL:
        argv += ["--set", s]
    assert main(argv) == 0
    rows = {r["model"]: r for r in json.loads((tmp_path / "music-nade.json").read_text())["rows"]}
    assert set(rows) == {"dts-rnn-nade", "dots-rnn-nade"}
    assert rows["dts-rnn-nade"]["paper"] == rows["dots-rnn-nade"]["paper"] == 5.56
    assert rows["dots-rnn-nade"]["init_from"].endswith("jsb/dts-rnn-nade")
    run = tmp_path / "runs" / "jsb" / "dts-rnn-nade"
    model = json.loads((run / "model.json").read_text())
    assert (model["head"], model["nade_hidden"]) == ("nade", 5)
    results = json.loads((run / "results.json").read_text())
    later = rows["dts-rnn-nade"]["test_nll_from_second_frame"]
    assert later == results["scores"]["test_from_second_frame"]["value"] != rows["dts-rnn-nade"]["test_nll"]
    assert f"| {later:.3f} |" in (tmp_path / "music-nade.md").read_text()
    assert (tmp_path / "music-nade-jsb.png").stat().st_size > 1000


def test_a_transition_named_alone_means_its_row_of_the_nade_table():
    from deeprnn.reproduce import cells

    assert cells("music-nade", ["dots-rnn", "dts-rnn"], ["jsb"]) == [
        ("jsb", "dts-rnn-nade"),
        ("jsb", "dots-rnn-nade"),
    ]
    assert cells("music", ["rnn-nade", "rnn"], ["jsb"]) == [("jsb", "rnn")]
    assert main(["reproduce", "ptb-word", "--models", "dots-rnn*", "--out", "unused"]) == 2  # not in it


# a Penn Treebank run of a few seconds
TINY_TEXT = ["hidden_size=12", "batch_size=4", "bptt_steps=20", "eval_every=2"]


def tiny_ptb(root: Path) -> Path:
    """A Penn Treebank folder of a few lines under ``root``, laid out as the real one; returns ``root``."""
    words = ["the", "cat", "sat", "on", "a", "mat", "<unk>", "and", "N", "dogs", "ran"]
    lines = [" " + " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(8)) + " \n" for i in range(60)]
    ptb = root / "ptb"
    ptb.mkdir(parents=True)
    for split, part in [("train", lines[:40]), ("valid", lines[40:50]), ("test", lines[50:])]:
        (ptb / f"ptb.{split}.txt").write_text("".join(part))
    return root


def test_ptb_char_skips_a_finished_run_and_resumes_an_interrupted_one(tmp_path, capsys):
    """``deeprnn reproduce ptb-char --models rnn`` at a tiny size, on a Penn Treebank folder of a few
    lines laid out as the real one: run, rerun (skipped), then killed after its last checkpoint
    (no results.json) and rerun with a higher limit (resumed where it stopped)."""
    argv = ["reproduce", "ptb-char", "--models", "rnn", "--out", str(tmp_path / "out")]
    argv += ["--data-dir", str(tiny_ptb(tmp_path / "data"))]
    argv += [arg for setting in TINY_TEXT for arg in ("--set", setting)] + ["--set", "device=cpu"]

    assert main([*argv, "--set", "max_updates=4"]) == 0
    (row,) = json.loads((tmp_path / "out" / "ptb-char.json").read_text())["rows"]
    assert (row["model"], row["paper"], row["updates"]) == ("rnn", 1.414, 4)
    assert row["scale"].startswith("limited")
    # 19 symbols (t h e c a s o n m < u k > d N g r, the space, the newline): 12x19 in, 12x12 across,
    # 19x12 out, and the biases 12 + 19
    assert (row["weights"], row["params"]) == (12 * 19 + 12 * 12 + 19 * 12, 600 + 12 + 19)
    assert [u for u, _ in row["curve"]] == [2, 4]
    capsys.readouterr()
    assert main([*argv, "--set", "max_updates=4"]) == 0
    out = capsys.readouterr().out
    assert "ptb-char/rnn: done, skipped" in out and "differ" not in out
    (again,) = json.loads((tmp_path / "out" / "ptb-char.json").read_text())["rows"]
    assert again["test_bpc"] == row["test_bpc"]
    # a setting that is not a limit does not change a finished run, and the log says so
    other = ["--set", "precision=bf16", "--set", "state_dropout=0.1"]
    assert main([*argv, "--set", "max_updates=4", *other]) == 0
    out = capsys.readouterr().out
    assert "ptb-char/rnn: done, skipped" in out
    assert "(the run's → now): precision: 'fp32' → 'bf16'; state_dropout: 0.15 → 0.1; remove" in out
    (again,) = json.loads((tmp_path / "out" / "ptb-char.json").read_text())["rows"]
    assert again["test_bpc"] == row["test_bpc"]
    assert main(argv) == 0  # without its limit: the run stopped at it, which a --set raises
    out = capsys.readouterr().out
    assert "ptb-char/rnn: done, skipped" in out
    assert "(the run's → now): max_updates: 4 → 0; --set a length limit carries it on, or remove" in out

    (tmp_path / "out" / "runs" / "ptb-char" / "rnn" / "results.json").unlink()  # killed after update 4
    assert main([*argv, "--set", "max_updates=6"]) == 0
    assert "ptb-char/rnn: resuming" in capsys.readouterr().out
    (row,) = json.loads((tmp_path / "out" / "ptb-char.json").read_text())["rows"]
    assert row["updates"] == 6 and [u for u, _ in row["curve"]] == [2, 4, 6]

    run = tmp_path / "out" / "runs" / "ptb-char" / "rnn"  # killed after writing best.pt, before last.pt
    (run / "results.json").unlink()
    (run / "checkpoints" / "last.pt").unlink()
    assert main([*argv, "--set", "max_updates=8"]) == 0
    assert "ptb-char/rnn: resuming" in capsys.readouterr().out  # from best.pt, not trained afresh
    (row,) = json.loads((tmp_path / "out" / "ptb-char.json").read_text())["rows"]
    assert row["updates"] == 8 and [u for u, _ in row["curve"]][:3] == [2, 4, 6]


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("early stopping", "full"),
        ("min_lr", "full"),
        ("epochs", "full"),
        ("time budget", "limited (time budget)"),
        ("max updates", "limited (max updates)"),
        ("", "limited (unknown)"),
    ],
)
def test_a_row_is_full_scale_only_when_its_run_converged_or_ran_its_epochs(stop_reason, expected):
    assert reproduce.scale(stop_reason) == expected


def test_a_gpu_run_brought_back_unfinished_resumes_on_the_cpu(tmp_path, capsys):
    """What scripts/gpu-runs brings back: a run folder whose config says device=cuda and
    cuda_graphs=true, stopped before its end. ``reproduce --set device=cpu`` carries it on here,
    eagerly, from its checkpoint."""
    argv = ["reproduce", "ptb-char", "--models", "rnn", "--out", str(tmp_path / "out")]
    argv += ["--data-dir", str(tiny_ptb(tmp_path / "data"))]
    argv += [arg for setting in TINY_TEXT for arg in ("--set", setting)] + ["--set", "device=cpu"]
    assert main([*argv, "--set", "max_updates=4"]) == 0
    run = tmp_path / "out" / "runs" / "ptb-char" / "rnn"
    (run / "results.json").unlink()  # stopped at the deadline after its last checkpoint
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "device": "cuda", "cuda_graphs": True}))
    capsys.readouterr()

    assert main([*argv, "--set", "max_updates=6"]) == 0
    out = capsys.readouterr().out
    assert "ptb-char/rnn: resuming" in out
    assert "cuda_graphs: the run now trains on cpu, without graphs" in out
    results = json.loads((run / "results.json").read_text())
    assert (results["updates"], results["device"]) == (6, "cpu")


def test_each_published_value_is_drawn_in_its_rows_colour(tmp_path, monkeypatch):
    """A row's paper value is a dashed line in the colour of the row's curve; a value that several
    rows share, or whose row has no curve, is grey."""
    curve = [[100, 150.0], [200, 140.0]]
    rows = [
        {"data": "ptb-word", "model": "rnn", "paper": 117.7, "curve": curve},
        {"data": "ptb-word", "model": "dts-rnn", "paper": 112.0, "curve": curve},
        {"data": "ptb-word", "model": "dots-rnn", "paper": 107.5},
        {"data": "ptb-word", "model": "srnn", "paper": 112.0, "curve": curve},
    ]
    figures = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: figures.append(fig))
    reproduce.plot_curves({"table": "ptb-word", "metric": "ppl", "rows": rows}, tmp_path, lambda _: None)
    (fig,) = figures
    lines = fig.axes[0].lines
    solid = {line.get_label(): line.get_color() for line in lines if line.get_linestyle() == "-"}
    dashed = {line.get_ydata()[0]: line.get_color() for line in lines if line.get_linestyle() == "--"}
    assert dashed == {107.5: "grey", 112.0: "grey", 117.7: solid["rnn"]}
    assert len(set(solid.values())) == 3


def test_cells_we_miss_lists_the_rows_above_the_paper_with_their_last_evaluations(tmp_path):
    """scripts/cells-we-miss: each row above its paper value, by how much, and where its curve stood."""
    curve = [[u, 4.0 - u / 1000] for u in range(1, 12)] + [[12, 3.99], [13, 3.995]]
    rows = [
        {"data": "jsb", "model": "rnn", "test_nll": 8.3, "paper": 8.338, "epochs": 9, "curve": curve},
        {"data": "piano-midi", "model": "rnn", "test_nll": 7.6, "paper": None, "epochs": 9, "curve": curve},
        {"data": "jsb", "model": "dots-rnn*", "test_nll": 8.14, "paper": 7.92, "epochs": 13, "curve": curve},
        {"data": "jsb", "model": "srnn", "test_nll": 8.5, "paper": 8.367, "epochs": 3, "curve": curve[:3]},
    ]
    table = tmp_path / "music.json"
    table.write_text(json.dumps({"table": "music", "metric": "nll", "rows": rows}))
    script = Path(__file__).parents[1] / "scripts" / "cells-we-miss"
    out = subprocess.run(["bash", script, table], capture_output=True, text=True, check=True).stdout
    line, short = out.splitlines()  # the RNN is below its paper value, Piano-midi.de has none
    assert short.split()[:2] == ["jsb", "srnn"]
    assert "+0.133" in short and "gained 0.0020 over its last 10" in short  # 3.999 -> 3.997
    assert line.split()[:2] == ["jsb", "dots-rnn*"]
    assert "+0.220" in line and "epochs  13" in line
    # best 3.9890 (update 11); the best of all but the last 10 evaluations was 3.9970 (update 3)
    assert "best valid 3.9890, gained 0.0080 over its last 10 evaluations" in line
    assert line.endswith("the last 5: 3.9910 3.9900 3.9890 3.9900 3.9950")
