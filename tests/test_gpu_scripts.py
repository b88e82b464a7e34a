"""scripts/gpu-runs, dry-run on the CPU (``GPU_CHECKS_DEVICE=cpu``): what a GPU session brings
back must land here. A lent GPU is too short-lived to find the script's mistakes there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

from conftest import REPO
from test_reproduce import TINY_TEXT, tiny_ptb

from deeprnn.cli import main
from deeprnn.training import checkpoint

SCRIPT = REPO / "scripts" / "gpu-runs"
CARRY = REPO / "scripts" / "gpu-carry"


def _gpu_runs(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "GPU_CHECKS_DEVICE": "cpu", "PYTHON": sys.executable}
    environment.update(GPU_RUNS_WORK=str(tmp_path / "work"), **env)
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=REPO, env=environment, capture_output=True, text=True, timeout=300
    )


def _unpacked(out, into):
    """The pieces in ``out`` joined and unpacked into ``into``; the paths of their files."""
    joined = into.parent / "joined.tar"
    joined.write_bytes(b"".join(piece.read_bytes() for piece in sorted(out.glob("runs.tar.*"))))
    with tarfile.open(joined) as tar:
        tar.extractall(into, filter="data")
        return [name.removeprefix("./") for name in tar.getnames()]


def test_a_chain_with_settings_runs_in_its_own_folder_and_comes_back_with_its_checkpoints(tmp_path):
    data = tiny_ptb(tmp_path / "data")
    chain = "ptb-char:rnn:" + ",".join([*TINY_TEXT, "max_updates=4"])
    done = _gpu_runs(tmp_path, str(tmp_path / "out"), "120", chain, DEEPRNN_DATA=str(data))
    assert done.returncode == 0, done.stderr
    names = _unpacked(tmp_path / "out", tmp_path / "back")
    run = tmp_path / "back" / chain.replace(":", "-") / "runs" / "ptb-char" / "rnn"
    results = json.loads((run / "results.json").read_text())
    assert (results["updates"], results["device"]) == (4, "cpu")
    config = json.loads((run / "config.json").read_text())
    settings = (config["architecture"]["hidden_size"], config["batch_size"], config["cuda_graphs"])
    assert settings == (12, 4, False)
    assert (run / "checkpoints" / "best.pt").is_file()  # small enough to come back
    assert not [name for name in names if "/tb/" in name]  # TensorBoard's files stay there


def test_checkpoints_beyond_the_budget_stay_behind(tmp_path):
    data = tiny_ptb(tmp_path / "data")
    chain = "ptb-char:rnn:" + ",".join([*TINY_TEXT, "max_updates=2"])
    done = _gpu_runs(tmp_path, str(tmp_path / "out"), "120", chain, DEEPRNN_DATA=str(data), RUNS_MAX_MB="0")
    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "work").glob("*/runs/ptb-char/rnn/checkpoints/best.pt"))  # there to leave
    names = _unpacked(tmp_path / "out", tmp_path / "back")
    assert any(name.endswith("rnn/results.json") for name in names)
    assert not [name for name in names if name.endswith(".pt")]


def test_runs_still_going_at_the_deadline_are_stopped_and_come_back_resumable(tmp_path):
    data = tiny_ptb(tmp_path / "data")
    endless = [
        "max_updates=1000000",
        "epochs=100000",
        "patience=0",
        "eval_every=50",
        "checkpoint_every=5",
        "schedule=constant",
    ]
    chain = "ptb-char:rnn:" + ",".join([*TINY_TEXT[:3], *endless])
    # a deadline of 20 s: start-up and the first checkpoint (5 updates) come before it on a busy machine too
    done = _gpu_runs(tmp_path, str(tmp_path / "out"), "20", chain, DEEPRNN_DATA=str(data))
    assert done.returncode == 0, done.stdout + done.stderr  # stopped at the deadline is not failed
    assert "deadline: runs still going, stopped" in done.stdout
    names = _unpacked(tmp_path / "out", tmp_path / "back")
    run = chain.replace(":", "-") + "/runs/ptb-char/rnn"
    assert f"{run}/checkpoints/last.pt" in names  # the checkpoint it resumes from
    assert f"{run}/results.json" not in names
    # and its best parameters (without their run's state), which it ends at if it does no better
    back = tmp_path / "back" / run
    best, last = (checkpoint.load(back / "checkpoints" / name) for name in ("best.pt", "last.pt"))
    assert "resume" not in best
    # the kill may fall between an evaluation's best.pt and its last.pt: the run then resumes from
    # last.pt, whose own best is the one before
    killed_between = best["update"] > last["progress"]["updates"]
    stop_here = ["--set", f"max_updates={last['progress']['updates']}", "--data-dir", str(data)]
    assert main(["train", "--resume", str(back), *stop_here]) == 0
    results = json.loads((back / "results.json").read_text())
    assert results["stop_reason"] == "max updates"
    assert results["best_update"] == (last["progress"]["best_update"] if killed_between else best["update"])


def test_a_chain_that_fails_fails_the_script_and_the_others_still_come_back(tmp_path):
    data = tiny_ptb(tmp_path / "data")
    good = "ptb-char:rnn:" + ",".join([*TINY_TEXT, "max_updates=2"])
    bad = "ptb-char:rnn:" + ",".join([*TINY_TEXT, "lr=-1"])
    done = _gpu_runs(tmp_path, str(tmp_path / "out"), "120", good, bad, DEEPRNN_DATA=str(data))
    assert done.returncode == 1
    assert f"{bad.replace(':', '-')} FAILED (status 2)" in done.stdout
    assert f"{good.replace(':', '-')}/runs/ptb-char/rnn/results.json" in _unpacked(
        tmp_path / "out", tmp_path / "back"
    )


def _carry(*args: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(CARRY), *args], cwd=REPO, env=environment, capture_output=True, text=True
    )


def test_a_run_carried_from_here_starts_a_chain_there_and_stays_there(tmp_path):
    """A pretraining run made here (scripts/gpu-carry) seeds a chain there (GPU_RUNS_FROM): the
    chain starts from it and does not train it again, and it does not come back."""
    data = tiny_ptb(tmp_path / "data")
    argv = [
        "reproduce",
        "ptb-char",
        "--models",
        "rnn",
        "--out",
        str(tmp_path / "here"),
        "--data-dir",
        str(data),
    ]
    assert main([*argv, *[a for s in [*TINY_TEXT, "max_updates=4"] for a in ("--set", s)]]) == 0
    made = tmp_path / "here" / "runs" / "ptb-char" / "rnn"
    done = _carry(str(tmp_path / "carried"), str(made))
    assert done.returncode == 0, done.stderr
    carried = tmp_path / "carried" / "runs" / "ptb-char" / "rnn"
    assert sorted(p.name for p in (carried / "checkpoints").iterdir()) == ["best.pt"]  # no last.pt
    assert (
        not (carried / "tb").exists()
        and (carried / "results.json").read_bytes() == (made / "results.json").read_bytes()
    )
    light, full = (
        checkpoint.load(carried / "checkpoints" / "best.pt"),
        checkpoint.load(made / "checkpoints" / "best.pt"),
    )
    assert "resume" not in light and "resume" in full and light.keys() == full.keys() - {"resume"}
    assert all(light["model"][name].equal(tensor) for name, tensor in full["model"].items())

    chain = "ptb-char:srnn:" + ",".join([*TINY_TEXT, "max_updates=2"])
    done = _gpu_runs(
        tmp_path,
        str(tmp_path / "out"),
        "120",
        chain,
        DEEPRNN_DATA=str(data),
        GPU_RUNS_FROM=str(tmp_path / "carried"),
    )
    assert done.returncode == 0, done.stderr
    names = _unpacked(tmp_path / "out", tmp_path / "back")
    folder = chain.replace(":", "-")
    config = json.loads(
        (tmp_path / "back" / folder / "runs" / "ptb-char" / "srnn" / "config.json").read_text()
    )
    assert config["init_from"] == str(tmp_path / "work" / folder / "runs" / "ptb-char" / "rnn")
    assert f"{folder}/runs/ptb-char/srnn/checkpoints/best.pt" in names
    assert not [name for name in names if name.startswith(f"{folder}/runs/ptb-char/rnn/checkpoints")]


def test_gpu_carry_refuses_a_run_it_cannot_carry(tmp_path):
    loose = tmp_path / "loose"  # not under runs/<data>/
    loose.mkdir()
    unfinished = tmp_path / "out" / "runs" / "ptb-char" / "rnn"
    unfinished.mkdir(parents=True)
    for run, why in [(loose, "is not in a reproduce folder"), (unfinished, "is not a finished run")]:
        done = _carry(str(tmp_path / "dest"), str(run))
        assert done.returncode == 2 and why in done.stderr, done.stderr
    assert _carry(str(tmp_path / "dest")).returncode == 2
    assert not (tmp_path / "dest").exists()
    missing = _gpu_runs(
        tmp_path, str(tmp_path / "out"), "120", "ptb-char:rnn", GPU_RUNS_FROM=str(tmp_path / "no")
    )
    assert missing.returncode == 2 and "holds no runs/ folder" in missing.stderr


def test_a_malformed_chain_or_deadline_is_refused_before_anything_runs(tmp_path):
    malformed = [
        ["120", "ptb-char"],  # no model
        ["120", "ptb-word:,rnn"],  # an empty model name
        ["120", "ptb-char:rnn:lr 1"],  # a space in a setting
        ["120", "ptb-char:rnn:lr"],  # a setting without its value
        ["120", "ptb-char:rnn:lr=1,,seed=2"],  # an empty setting
        ["soon", "ptb-char:rnn"],  # a deadline that is not whole seconds
    ]
    for args in malformed:
        done = _gpu_runs(tmp_path, str(tmp_path / "out"), *args)
        assert done.returncode == 2, args
        assert "usage: scripts/gpu-runs OUT DEADLINE CHAIN" in done.stderr
        assert f"'{args[0] if args[0] == 'soon' else args[1]}'" in done.stderr
    twice = _gpu_runs(tmp_path, str(tmp_path / "out"), "120", "ptb-char:rnn", "ptb-char:rnn")
    assert twice.returncode == 2 and "'ptb-char:rnn' given twice" in twice.stderr
    assert not (tmp_path / "work").exists()
