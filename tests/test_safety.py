"""Nothing lost, ever: run-folder safety, divergence, corrupt files and limits (every setting's
checks: test_config.py).

Each test names the case of the safety review it covers; all run on a tiny piano-roll file made
here, so none needs the benchmark data.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_recipe import scripted_validation

from deeprnn import DeepRNN, preset
from deeprnn.cli import main
from deeprnn.errors import ConfigError, RunFolderError
from deeprnn.names import DATA_SETS, MODELS, NADE_MODELS
from deeprnn.training import checkpoint, loop, run_folder, trainer
from deeprnn.training.config import TrainConfig, apply, paper_config_file, resolve

SETTINGS = {
    "model": "dts-rnn",
    "hidden_size": 8,
    "transition_sizes": [6],
    "batch_size": 2,
    "bptt_steps": 5,
    "max_updates": 30,
    "eval_every": 10,
    "checkpoint_every": 3,
    "weight_noise": 0.05,
    "device": "cpu",
}
QUIET = {"log": lambda _: None}


def config(rolls: Path, **overrides) -> TrainConfig:
    return apply({**SETTINGS, "data": str(rolls), **overrides})


def cli_sets(rolls: Path, **overrides) -> list[str]:
    values = {**SETTINGS, "data": str(rolls), **overrides}
    args = ["--model", values.pop("model"), "--data", values.pop("data")]
    for key, value in values.items():
        args += ["--set", f"{key}={json.dumps(value) if isinstance(value, list) else value}"]
    return args


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a run folder but its lock (which records who last held it)."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != run_folder.LOCK]
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


# -- 1. --force replaces only a run folder, and only once the new run has loaded -----------------


def test_force_refuses_a_folder_that_is_not_a_run(tmp_path, rolls, capsys):
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    assert main(["train", *cli_sets(rolls), "--force", "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"{folder} is not a deeprnn run folder (it holds thesis.tex)" in err
    assert (folder / "thesis.tex").read_text() == "precious"


def test_what_a_run_folder_may_hold(tmp_path):
    """A run's own files and folders, its lock and an atomic write's leftover (.NAME.tmp) are
    its own; anything else is foreign: a hidden file, a .tmp file without the dot. The refusal
    names five of them and counts the rest."""
    folder = tmp_path / "run"
    folder.mkdir()
    for name in (*run_folder.FILES, run_folder.LOCK, ".results.json.x1y2.tmp"):
        (folder / name).write_text("")
    for name in run_folder.FOLDERS:
        (folder / name).mkdir()
    assert run_folder.foreign(folder) == []
    run_folder.check_replaceable(folder)
    for name in (".hidden", "notes.tmp", "a", "b"):
        (folder / name).write_text("")
    assert run_folder.foreign(folder) == [".hidden", "a", "b", "notes.tmp"]
    with pytest.raises(RunFolderError, match=r"\(it holds \.hidden, a, b, notes\.tmp\); --force"):
        run_folder.check_replaceable(folder)
    for name, shown in (("c", r"c, notes\.tmp"), ("d", "c, d and 1 more"), ("e", "c, d and 2 more")):
        (folder / name).write_text("")  # five, six, seven foreign entries
        with pytest.raises(RunFolderError, match=rf"\(it holds \.hidden, a, b, {shown}\); --force"):
            run_folder.check_replaceable(folder)
    for name in ("f", "g", "h"):
        (folder / name).write_text("")  # ten: the count is not a remainder
    with pytest.raises(RunFolderError, match=r"\(it holds \.hidden, a, b, c, d and 5 more\); --force"):
        run_folder.check_replaceable(folder)


def test_force_with_bad_data_keeps_the_old_run(tmp_path, rolls, capsys):
    run = tmp_path / "run"
    trainer.train(config(rolls), run, **QUIET)
    before = snapshot(run)
    argv = ["train", *cli_sets(rolls), "--force", "--out", str(run)]
    argv[argv.index("--data") + 1] = str(tmp_path / "missing.pickle")
    assert main(argv) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert snapshot(run) == before


def test_force_replaces_a_run(tmp_path, rolls):
    run = tmp_path / "run"
    first = trainer.train(config(rolls), run, **QUIET)
    (run / "checkpoints" / ".last.pt.abc.tmp").write_bytes(b"torn")
    second = trainer.train(config(rolls, seed=3), run, force=True, **QUIET)
    assert second["test_nll"] != first["test_nll"]
    assert json.loads((run / "config.json").read_text())["seed"] == 3
    assert not (run / "checkpoints" / ".last.pt.abc.tmp").exists()


# -- 2. a run folder is locked while a process trains in it -------------------------------------


@pytest.fixture
def at_once():
    """A refusal must come at once: a lock that waited for its holder would hang the test (the
    holder is this very process), so an alarm fails it after 20 s instead."""

    def waited(*_):
        raise TimeoutError("the lock waited for its holder instead of refusing")

    previous = signal.signal(signal.SIGALRM, waited)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.usefixtures("at_once")
def test_a_locked_folder_is_refused_naming_the_holder(tmp_path, rolls, capsys):
    run = tmp_path / "run"
    trainer.train(config(rolls), run, **QUIET)
    with run_folder.locked(run):
        for extra in (["--resume", str(run)], [*cli_sets(rolls), "--force", "--out", str(run)]):
            assert main(["train", *extra]) == 2
            err = capsys.readouterr().err
            assert f"{run} is in use: process {os.getpid()} on " in err
    assert main(["train", "--resume", str(run)]) == 0  # released


DAMAGED = [b"", b"not json", b'{"pid": 7}', b"[7]", b'{"pid": 7, "host": "h", "since": ']


@pytest.mark.usefixtures("at_once")
@pytest.mark.parametrize("record", DAMAGED)
def test_a_lock_whose_record_is_damaged_still_refuses(tmp_path, record):
    """The holder's record is only a courtesy: empty, not JSON, short of a field or of another
    shape, the lock still refuses, saying "another process"."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / run_folder.LOCK).write_bytes(record)
    with open(folder / run_folder.LOCK, "rb") as holder:  # another open file: another holder
        fcntl.flock(holder, fcntl.LOCK_EX)
        refused = pytest.raises(RunFolderError, match="is in use: another process trains in it")
        with refused, run_folder.locked(folder):
            pass


@pytest.mark.usefixtures("at_once")
def test_a_long_command_line_is_named_in_full(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    command = "deeprnn train " + " ".join(f"--set note{i}=x" for i in range(800))  # ~10 kB
    record = {"pid": 7, "host": "h", "since": "then", "command": command}
    (folder / run_folder.LOCK).write_text(json.dumps(record))
    with open(folder / run_folder.LOCK, "rb") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(RunFolderError) as caught, run_folder.locked(folder):
            pass
    assert str(caught.value).endswith(f"process 7 on h (since then: {command}) trains in it")


def test_the_lock_file_is_its_owners_to_write_and_everyones_to_read(tmp_path):
    """rw-r--r-- as created (umask 0 here, so that nothing masks the mode asked for): anyone may
    read who holds the folder, only its owner write, and nobody execute it."""
    previous = os.umask(0)
    try:
        with run_folder.locked(tmp_path):
            pass
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / run_folder.LOCK).stat().st_mode) == 0o644


@pytest.mark.usefixtures("at_once")
def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    code = (
        "import pathlib, time\nfrom deeprnn.training import run_folder\n"
        f"with run_folder.locked(pathlib.Path({str(folder)!r})):\n"
        "    print('held', flush=True)\n    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunFolderError, match=f"process {holder.pid} on"), run_folder.locked(folder):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with run_folder.locked(folder):  # the kernel released it with the process
        assert json.loads((folder / run_folder.LOCK).read_text())["pid"] == os.getpid()


def test_two_trainings_on_one_folder_one_is_refused(tmp_path, rolls):
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "deeprnn", "train", *cli_sets(rolls, max_updates=300), "--out", str(run)]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outcomes = sorted((p.wait(), p.stderr.read()) for p in procs)
    assert [code for code, _ in outcomes] == [0, 2]
    assert "is in use" in outcomes[1][1] or "already holds a run" in outcomes[1][1]
    assert json.loads((run / "results.json").read_text())["updates"] == 300


@pytest.mark.usefixtures("at_once")
def test_a_refused_training_leaves_the_folder_it_did_not_create_to_its_holder(tmp_path, rolls, monkeypatch):
    """The race of the test above, made certain: the folder is new when the second process looks,
    and the first takes its lock before the second asks for it (while it loads its data, say).
    The refused process must not remove the folder, nor the lock file, under its holder."""
    run, holder = tmp_path / "run", []
    real_locked = run_folder.locked

    def taken_first(folder):
        holder.append(real_locked(folder))
        holder[0].__enter__()  # the winner, holding the lock on the empty new folder
        return real_locked(folder)

    monkeypatch.setattr(run_folder, "locked", taken_first)
    try:
        with pytest.raises(RunFolderError, match="is in use"):
            trainer.train(config(rolls), run, **QUIET)
        assert (run / run_folder.LOCK).is_file()
    finally:
        holder[0].__exit__(None, None, None)


def test_a_lock_file_removed_before_it_was_locked_is_refused(tmp_path, monkeypatch):
    """A lock taken on a lock file that its holder removed meanwhile (a run that came to nothing)
    would lock nothing: a second process could lock the new file at the same time."""
    folder = tmp_path / "run"
    folder.mkdir()
    real_flock = run_folder.fcntl.flock

    def removed_first(fd, operation):
        (folder / run_folder.LOCK).unlink()
        return real_flock(fd, operation)

    monkeypatch.setattr(run_folder.fcntl, "flock", removed_first)
    with pytest.raises(RunFolderError, match="removed or replaced"), run_folder.locked(folder):
        pytest.fail("the block ran under a lock on a removed file")


# -- 3. divergence is detected and named --------------------------------------------------------


def test_a_diverging_run_stops_and_says_so(tmp_path, rolls, capsys):
    run = tmp_path / "run"
    sets = cli_sets(
        rolls, lr=1e12, clip_norm=0, transition_units="relu", schedule="constant", max_updates=200
    )
    assert main(["train", *sets, "--out", str(run)]) == 3
    err = capsys.readouterr().err
    assert "training diverged at update" in err and "last good checkpoint" in err
    results = json.loads((run / "results.json").read_text())
    assert results["stop_reason"] == "diverged" and results["diverged"]["update"] < 200
    written = [
        path for path in (run / "checkpoints" / name for name in ("last.pt", "best.pt")) if path.exists()
    ]
    assert written  # the checks below have something to check
    for path in written:  # whatever was written is finite
        state = torch.load(path, weights_only=True)
        assert all(torch.isfinite(t).all() for t in state["model"].values())
    log = (run / "train.log").read_text()
    assert main(["train", "--resume", str(run)]) == 3  # a resume says so again, at once
    assert "training diverged" in capsys.readouterr().err
    assert (run / "train.log").read_text() == log  # nothing resumed, nothing trained


def test_restores_go_back_to_finite_parameters_only(tmp_path, rolls, monkeypatch):
    """Parameters made NaN by a step are never checkpointed; the restore after three non-finite
    updates returns to the last finite checkpoint (update 9), not to the NaN state."""
    original = loop.Run.update
    seen = {"restored_to": None}

    def poisoning(self, batch):
        loss = original(self, batch)
        if self.progress.updates == 10:  # this update (the 11th) leaves NaN weights behind
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))
        if self.progress.restores and seen["restored_to"] is None:
            seen["restored_to"] = {k: v.clone() for k, v in self.model.state_dict().items()}
        return loss

    monkeypatch.setattr(loop.Run, "update", poisoning)
    result = trainer.train(
        config(rolls, checkpoint_every=3, eval_every=100, max_updates=20), tmp_path / "r", **QUIET
    )
    assert result["skipped_updates"] == 3
    good = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)
    assert good["progress"]["restores"] == 1
    assert all(torch.isfinite(t).all() for t in seen["restored_to"].values())


# -- 4. a corrupt checkpoint is a clear error; resume falls back -------------------------------


def test_resume_falls_back_to_best_when_last_is_damaged(tmp_path, rolls):
    """best.pt holds the run as it was at its best point, so a resume from it ends where an
    uninterrupted run ends (it redoes the updates after that point)."""
    whole = trainer.train(config(rolls), tmp_path / "whole", **QUIET)
    run = tmp_path / "cut"
    trainer.train(config(rolls, max_updates=20), run, **QUIET)
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    lines = []
    resumed = trainer.train(None, run, resume=True, limits={"max_updates": 30}, log=lines.append)
    assert f"resuming from {run / 'checkpoints' / 'best.pt'}; skipped: {last} is damaged" in lines[0]
    assert resumed["test_nll"] == whole["test_nll"]
    assert _metrics(run) == _metrics(tmp_path / "whole")


def test_damaged_checkpoints_are_clear_errors(tmp_path, rolls, capsys):
    run = tmp_path / "run"
    trainer.train(config(rolls), run, **QUIET)
    garbage = random.Random(1)
    (run / "checkpoints" / "last.pt").write_bytes(garbage.randbytes(600))
    best = run / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])  # truncated
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "holds no checkpoint to resume from" in err
    assert "last.pt is damaged: truncated, or not a checkpoint deeprnn wrote" in err  # an UnpicklingError
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err
    assert "best.pt is damaged: truncated" in err and "weights_only" not in err and "Traceback" not in err


def test_a_missing_last_pt_resumes_from_best_and_an_old_best_pt_is_named(tmp_path, rolls):
    """No last.pt: the run at its best point, silently (nothing was skipped). A best.pt of
    parameters only (as deeprnn wrote it before it kept the run there) cannot be resumed from,
    and the refusal says so."""
    run = tmp_path / "run"
    trainer.train(config(rolls, max_updates=20), run, **QUIET)
    folder = run / "checkpoints"
    (folder / "last.pt").unlink()
    said = []
    best = checkpoint.load(folder / "best.pt")
    assert run_folder.resumable_state(run, said.append)["progress"] == best["resume"]["progress"]
    assert said == []
    checkpoint.save(folder / "best.pt", {k: v for k, v in best.items() if k != "resume"})
    with pytest.raises(RunFolderError) as caught:
        run_folder.resumable_state(run, said.append)
    old = f"{folder / 'best.pt'} holds parameters only (written before deeprnn kept the run in it)"
    assert str(caught.value) == f"{run} holds no checkpoint to resume from ({old})"


class _Touch:
    """Unpickled, it would create ``marker``: what a malicious checkpoint could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker, path = tmp_path / "code-ran", tmp_path / "last.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "extra": _Touch(marker)}, path)
    with pytest.raises(RunFolderError, match="holds objects other than tensors and plain values"):
        checkpoint.load(path)
    assert not marker.exists()
    torch.save([torch.zeros(2)], path)  # tensors and plain values, but not a checkpoint's dict
    with pytest.raises(RunFolderError, match="is damaged: not a checkpoint deeprnn wrote"):
        checkpoint.load(path)


def test_generator_states_round_trip_and_a_gpu_checkpoint_resumes_on_a_cpu():
    state = checkpoint.rng_state()
    assert set(state) == ({"torch", "cuda"} if torch.cuda.is_available() else {"torch"})
    expected = torch.rand(3)
    written_on_a_gpu = {"cuda": [torch.zeros(16, dtype=torch.uint8)], **state}  # here: this machine's
    checkpoint.set_rng_state(written_on_a_gpu)
    assert torch.equal(torch.rand(3), expected)


def test_a_checkpoint_of_two_gpus_resumes_where_one_is_visible(monkeypatch):
    """The saved generators of the GPUs still visible are restored, by index; the others are
    left (no IndexError from a machine with fewer GPUs)."""
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, index: restored.append((index, state)))
    first, second = torch.zeros(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)
    checkpoint.set_rng_state({"torch": torch.get_rng_state(), "cuda": [first, second]})
    assert restored == [(0, first)]


def test_a_model_too_large_for_memory_is_a_clear_error(tmp_path, rolls, capsys):
    sets = cli_sets(rolls, hidden_size=1_000_000_000)
    assert main(["train", *sets, "--out", str(tmp_path / "big")]) == 2
    assert "do not fit in memory" in capsys.readouterr().err
    assert not (tmp_path / "big").exists()  # a folder made for nothing is removed


def test_a_music_config_on_text_data_is_refused(tmp_path):
    text = tmp_path / "text"
    text.mkdir()
    for split in ("train", "valid", "test"):
        (text / f"{split}.txt").write_text("the cat sat on the mat\n" * 5)
    settings = resolve("dts-rnn", str(text), str(paper_config_file("dts-rnn", "jsb")), sets=["max_updates=1"])
    assert settings.data_kind == "music"
    with pytest.raises(ConfigError, match=f"these settings are for music .* but {text} is text"):
        trainer.train(settings, tmp_path / "run", **QUIET)


# -- 5. other crashes and silent failures -------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--steps", "60000"], "above the limit of 10,000"),
        (["--count", "0"], "must be at least 1"),
        (["--temperature", "nan"], "must be a finite number above 0"),
        (["--temperature", "-1"], "must be a finite number above 0"),
    ],
)
def test_sample_limits(tmp_path, rolls, capsys, extra, message):
    run = tmp_path / "run"
    trainer.train(config(rolls, max_updates=10), run, **QUIET)
    assert exit_code(["sample", str(run), "--out", str(tmp_path / "s"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def exit_code(argv: list[str]) -> int:
    """The command's exit status, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as error:
        return error.code


def test_long_samples_are_allowed_when_asked(tmp_path, rolls):
    run = tmp_path / "run"
    trainer.train(config(rolls, max_updates=10), run, **QUIET)
    assert main(["sample", str(run), "--out", str(tmp_path / "s"), "--steps", "10001", "--long"]) == 0
    assert (tmp_path / "s" / "sample-0.png").stat().st_size > 0


@pytest.mark.parametrize("model", MODELS)
def test_zero_length_sequences_forward_and_backward(model):
    tasks = (("jsb", torch.zeros(0, 3, 88)), ("ptb-char", torch.zeros(0, 3, dtype=torch.int64)))
    for task, x in tasks[:1] if model in NADE_MODELS else tasks:  # a NADE head is for music only
        net = DeepRNN(preset(model, task))
        h0 = torch.randn(net.config.levels, 3, net.config.hidden_size, requires_grad=True)
        logits, h_n = net(x, h0)
        assert logits.shape[:2] == (0, 3)
        assert torch.equal(h_n, h0)
        (logits.sum() + h_n.sum()).backward()
        assert torch.equal(h0.grad, torch.ones_like(h0))


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, rolls, capsys, monkeypatch):
    run = tmp_path / "run"
    trainer.train(config(rolls, max_updates=10), run, **QUIET)
    before = snapshot(run)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert main(["train", "--resume", str(run), "--set", "max_updates=20"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("No space left on device") and str(run) in err[0]
    monkeypatch.undo()
    after = snapshot(run)
    assert {k: v for k, v in after.items() if k != "train.log"} == {
        k: v for k, v in before.items() if k != "train.log"
    }


def test_out_that_is_a_file(tmp_path, rolls, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["train", *cli_sets(rolls), "--out", str(target)]) == 2
    assert "a file is in the way" in capsys.readouterr().err
    assert target.read_text() == "x"


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"colour": "red"}', '{"lr": "fast"}'])
def test_a_garbage_config_json_is_a_clear_error(tmp_path, rolls, capsys, content):
    run = tmp_path / "run"
    trainer.train(config(rolls, max_updates=10), run, **QUIET)
    (run / "config.json").write_text(content)
    for argv in (["train", "--resume", str(run)], ["eval", str(run)]):
        assert main(argv) == 2
        assert f"{run / 'config.json'} is damaged" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content", [None, "{not json", '{"hidden_size": 8, "colour": "red"}', '{"levels": 0}']
)
def test_a_missing_or_damaged_model_json_is_a_clear_error(tmp_path, rolls, capsys, content):
    """Resuming rebuilds the model from model.json: without it, or with one that is not JSON, has
    a field ModelConfig lacks or a value it refuses, the resume is refused, naming the file."""
    run = tmp_path / "run"
    trainer.train(config(rolls, max_updates=10), run, **QUIET)
    if content is None:
        (run / "model.json").unlink()
    else:
        (run / "model.json").write_text(content)
    assert main(["train", "--resume", str(run), "--set", "max_updates=12"]) == 2
    expected = (
        f"{run} has no model.json: it cannot be resumed"
        if content is None
        else f"{run / 'model.json'} is damaged"
    )
    assert expected in capsys.readouterr().err


def test_data_verify_fails_when_files_are_missing(tmp_path, capsys):
    assert main(["data", "verify", "--data-dir", str(tmp_path)]) == 1
    assert f"missing data sets: {', '.join(DATA_SETS)} (" in capsys.readouterr().out


def test_a_missing_path_as_data_says_so(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "songs"
    assert main(["train", "--model", "rnn", "--data", str(missing), "--out", str(tmp_path / "r")]) == 2
    assert f"{missing}: no such file or folder" in capsys.readouterr().err


def test_internal_errors_keep_their_traceback(tmp_path, rolls, monkeypatch):
    def bug(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(loop, "batch_nll", bug)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["train", *cli_sets(rolls), "--out", str(tmp_path / "r")])


def test_a_closed_pipe_exits_quietly():
    proc = subprocess.Popen(
        [sys.executable, "-m", "deeprnn", "info", "--model", "dots-rnn*", "--task", "jsb", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before the command writes
    assert proc.wait() == 0
    assert proc.stderr.read() == b""


# -- 6. metrics and temporary files stay consistent ---------------------------------------------


class _Crash(Exception):
    pass


def test_metrics_are_complete_after_a_kill_before_their_last_write(tmp_path, rolls, monkeypatch):
    whole = trainer.train(config(rolls), tmp_path / "whole", **QUIET)
    original = loop.Run.write_metrics

    def dies_at_the_end(self):
        if self.progress.done:
            raise _Crash  # after the final last.pt, before the metrics
        original(self)

    monkeypatch.setattr(loop.Run, "write_metrics", dies_at_the_end)
    with pytest.raises(_Crash):
        trainer.train(config(rolls), tmp_path / "cut", **QUIET)
    monkeypatch.undo()
    (tmp_path / "cut" / "checkpoints" / ".best.pt.x1.tmp").write_bytes(b"torn")
    resumed = trainer.train(None, tmp_path / "cut", resume=True, **QUIET)
    assert resumed["test_nll"] == whole["test_nll"]
    assert _metrics(tmp_path / "cut") == _metrics(tmp_path / "whole")
    assert not list((tmp_path / "cut").rglob("*.tmp"))


def test_a_kill_between_writing_best_and_last_resumes_from_the_newer(tmp_path, rolls, monkeypatch):
    """At an evaluation that improved, both checkpoints are written; killed after the first, the
    resume starts from the newer of the two, so the best parameters it scores at the end are those
    its records name (the second of three evaluations is the best here)."""
    scripted_validation(monkeypatch, [5.0, 4.0, 6.0])
    whole = trainer.train(config(rolls), tmp_path / "whole", **QUIET)
    original, written = checkpoint.save, []

    def dies_between_the_two(path, state):
        update = state.get("resume", state)["progress"]["updates"]
        if update == 20 and written[-1] == (update, "best.pt" if path.name == "last.pt" else "last.pt"):
            raise _Crash
        written.append((update, path.name))
        return original(path, state)

    scripted_validation(monkeypatch, [5.0, 4.0])
    monkeypatch.setattr(checkpoint, "save", dies_between_the_two)
    with pytest.raises(_Crash):
        trainer.train(config(rolls), tmp_path / "cut", **QUIET)
    assert written[-1][0] == 20  # killed at the second evaluation, the one that improved
    monkeypatch.undo()
    scripted_validation(monkeypatch, [6.0])
    lines: list[str] = []
    resumed = trainer.train(None, tmp_path / "cut", resume=True, log=lines.append)
    assert resumed["best_update"] == whole["best_update"] == 20
    assert resumed["test_nll"] == whole["test_nll"]
    assert "resuming from" in lines[0] and "last.pt is older" in lines[0]
    assert _metrics(tmp_path / "cut") == _metrics(tmp_path / "whole")


def test_train_loss_is_continuous_across_a_resume(tmp_path, rolls, monkeypatch):
    trainer.train(config(rolls), tmp_path / "whole", **QUIET)
    original = loop.Run.update

    def crashing(self, batch):
        if self.progress.updates == 16:  # after the checkpoint at update 15, mid-way between evaluations
            raise _Crash
        return original(self, batch)

    monkeypatch.setattr(loop.Run, "update", crashing)
    with pytest.raises(_Crash):
        trainer.train(config(rolls), tmp_path / "cut", **QUIET)
    monkeypatch.undo()
    trainer.train(None, tmp_path / "cut", resume=True, **QUIET)
    assert _metrics(tmp_path / "cut") == _metrics(tmp_path / "whole")


def _metrics(run: Path) -> list[dict]:
    """metrics.jsonl without its wall-clock field."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "train_seconds"} for line in lines]


# -- the kill loop ------------------------------------------------------------------------------


def test_kill_loop(tmp_path, rolls):
    """SIGKILL at random (seeded) moments of a tiny run that checkpoints every other update,
    resumed after each kill: 2 trials of 10 kills, each ending as an uninterrupted run ends."""
    sets = cli_sets(rolls, max_updates=2000, eval_every=50, checkpoint_every=2, patience=0)
    base = [sys.executable, "-m", "deeprnn", "train"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a tiny model: threads would only contend
    subprocess.run([*base, *sets, "--out", str(tmp_path / "whole")], check=True, capture_output=True, env=env)
    expected = json.loads((tmp_path / "whole" / "results.json").read_text())
    rng = random.Random(20)
    kills = 0
    for trial in range(2):
        run = tmp_path / f"killed-{trial}"
        command = [*base, *sets, "--out", str(run)]
        for _ in range(10):
            log = run / "train.log"
            started = log.stat().st_size if log.exists() else 0
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            while proc.poll() is None and (not log.exists() or log.stat().st_size <= started):
                time.sleep(0.01)  # wait until it trains (it logs its start or its resume)
            time.sleep(rng.uniform(0.0, 0.4))
            proc.send_signal(signal.SIGKILL)
            assert proc.wait() == -signal.SIGKILL, "the run ended before its kill: make it longer"
            kills += 1
            command = [*base, "--resume", str(run)]
        subprocess.run(command, check=True, capture_output=True, env=env)
        got = json.loads((run / "results.json").read_text())
        for key in ("test_nll", "valid_nll", "best_update", "updates", "stop_reason"):
            assert got[key] == expected[key], (trial, key)
        assert _metrics(run) == _metrics(tmp_path / "whole")
        assert not list(run.rglob("*.tmp"))
    assert kills == 20


# -- run folders written before these changes -----------------------------------------------------


def test_a_run_folder_from_before_still_evaluates_and_resumes(tmp_path, rolls, capsys):
    """tests/fixtures/run-0.1.0: a 20-update run written by deeprnn at commit 6da3c5c (before the
    run-folder lock, best.pt's training state, the guard's state and data_kind). It scores as it
    did, and resumed to 30 updates it ends where a new 30-update run ends: to float rounding, since
    its first 20 updates ran on another machine's CPU kernels (runs resumed on the machine that
    started them end bit for bit where uninterrupted ones do: test_kill_loop and the tests above)."""
    run = tmp_path / "old"
    shutil.copytree(Path(__file__).parent / "fixtures" / "run-0.1.0", run)
    settings = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**settings, "data": str(rolls)}))
    old = json.loads((run / "results.json").read_text())
    assert main(["eval", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["value"] == pytest.approx(old["test_nll"], abs=1e-9)
    resumed = trainer.train(None, run, resume=True, limits={"max_updates": 30}, **QUIET)
    fresh = trainer.train(
        apply({**settings, "data": str(rolls), "max_updates": 30}), tmp_path / "new", **QUIET
    )
    assert resumed["test_nll"] == pytest.approx(fresh["test_nll"], rel=1e-6) and resumed["updates"] == 30
    old_course, new_course = _metrics(run), _metrics(tmp_path / "new")
    assert [sorted(line) for line in old_course] == [sorted(line) for line in new_course]
    for then, now in zip(old_course, new_course, strict=True):
        assert then == {k: pytest.approx(v, rel=1e-6) if isinstance(v, float) else v for k, v in now.items()}


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_the_start(tmp_path, rolls, monkeypatch):
    whole = trainer.train(config(rolls), tmp_path / "whole", **QUIET)
    original = loop.Run.update

    def dies_at_once(self, batch):
        raise _Crash

    monkeypatch.setattr(loop.Run, "update", dies_at_once)
    with pytest.raises(_Crash):
        trainer.train(config(rolls), tmp_path / "cut", **QUIET)
    monkeypatch.setattr(loop.Run, "update", original)
    assert not (tmp_path / "cut" / "checkpoints").exists()
    lines = []
    resumed = trainer.train(None, tmp_path / "cut", resume=True, log=lines.append)
    assert "no checkpoint yet: the run starts from the beginning" in lines
    assert resumed["test_nll"] == whole["test_nll"]
    assert _metrics(tmp_path / "cut") == _metrics(tmp_path / "whole")
