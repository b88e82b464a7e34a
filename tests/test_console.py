"""What a run prints (deeprnn.training.console): the progress line's figures worked out by hand
on a clock that the test moves, and the log kept in train.log."""

from __future__ import annotations

import os
import select
import subprocess
import sys

import pytest
import torch

from deeprnn.data.batching import Batch
from deeprnn.training import console


def batch(count: int) -> Batch:
    return Batch(torch.zeros(1, 1), torch.zeros(1, 1), None, False, count, count)


@pytest.fixture
def clock(monkeypatch):
    """time.perf_counter as the test sets it; stderr not a terminal, so the plain lines print."""
    now = [1.0]  # not a round start: elapsed time is a difference, not a remainder
    monkeypatch.setattr(console.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(console.sys.stderr, "isatty", lambda: False)
    return now


def test_the_progress_line_every_tenth_of_the_epoch(clock, capsys):
    bar = console.ProgressBar(total=20, done=0, label="epoch 3")
    clock[0] = 3.0
    bar.update(batch(10), 2.0)
    assert capsys.readouterr().out == ""  # a line every 20 // 10 = 2 batches
    clock[0] = 5.0
    bar.update(batch(10), 3.0)  # the shown loss: 0.95 x 2.0 + 0.05 x 3.0
    # 20 targets in 4 s; 18 batches left at 2 s a batch
    assert (
        capsys.readouterr().out
        == "epoch 3: 2/20 batches, loss 2.0500, 5 targets/s, ~36 s left in the epoch\n"
    )
    clock[0] = 9.0
    bar.update(batch(20), None)  # a skipped update leaves the shown loss as it was
    bar.update(batch(0), None)
    assert (
        capsys.readouterr().out
        == "epoch 3: 4/20 batches, loss 2.0500, 5 targets/s, ~32 s left in the epoch\n"
    )


def test_a_bar_not_shown_prints_nothing_even_on_a_terminal(clock, monkeypatch, capsys):
    """Every process of a distributed run but the first trains silently."""
    monkeypatch.setattr(console.sys.stderr, "isatty", lambda: True)
    bar = console.ProgressBar(total=4, done=0, label="epoch 0", shown=False)
    for _ in range(4):
        clock[0] += 1.0
        bar.update(batch(10), 1.0)
    bar.close()
    assert capsys.readouterr() == ("", "") and bar.bar is None and bar.done == 4


def test_a_resumed_epoch_counts_its_pace_from_where_it_resumed(clock, capsys):
    bar = console.ProgressBar(total=1000, done=600, label="epoch 9")
    for _ in range(100):
        clock[0] += 0.5
        bar.update(batch(3), None)
    # 100 batches in 50 s since the resume (not 700), 300 left; no loss seen yet
    assert (
        capsys.readouterr().out
        == "epoch 9: 700/1000 batches, loss nan, 6 targets/s, ~150 s left in the epoch\n"
    )


def test_a_short_epoch_prints_every_batch(clock, capsys):
    bar = console.ProgressBar(total=3, done=0, label="e")
    for _ in range(3):
        clock[0] += 1.0
        bar.update(batch(1), 2.0)
    assert capsys.readouterr().out.splitlines() == [  # one target a second from the first batch on
        f"e: {k}/3 batches, loss 2.0000, 1 targets/s, ~{3 - k} s left in the epoch" for k in (1, 2, 3)
    ]


def test_the_lines_come_every_tenth_of_the_epoch_rounded_down(clock, capsys):
    bar = console.ProgressBar(total=25, done=0, label="e")  # 25 // 10 = 2: a line every 2 batches
    for _ in range(6):
        clock[0] += 1.0
        bar.update(batch(1), None)
    assert [line.split(" batches")[0] for line in capsys.readouterr().out.splitlines()] == [
        "e: 2/25",
        "e: 4/25",
        "e: 6/25",
    ]


def test_the_pace_since_the_bar_began(clock):
    bar = console.ProgressBar(total=11, done=1, label="e")  # resumed after one batch
    clock[0] = 1.25
    assert bar.pace() == (0.0, 10 * 0.25)  # no batch yet: the quarter second taken as one batch's
    clock[0] = 1.5
    bar.update(batch(7), None)
    assert bar.pace() == (14.0, 4.5)  # 7 targets in half a second; 9 batches left at 0.5 s
    clock[0] = 3.0
    bar.update(batch(0), None)
    bar.update(batch(0), None)
    assert bar.pace() == (3.5, 7 * 2.0 / 3)  # 7 targets in 2 s; 7 left at 2/3 s a batch
    at_once = console.ProgressBar(total=4, done=0, label="e")
    at_once.update(batch(3), None)  # no time has passed: a rate all the same, not a division by 0
    rate, left = at_once.pace()
    assert rate > 0 and rate == rate and left == 0.0


def test_on_a_terminal_tqdm_counts_the_batches_and_clears_its_line(clock, monkeypatch, capsys):
    monkeypatch.setattr(console.sys.stderr, "isatty", lambda: True)
    bar = console.ProgressBar(total=10, done=4, label="epoch 2")
    for _ in range(3):
        clock[0] += 1.0
        bar.update(batch(5), 2.0)
    assert bar.bar.n == 7
    assert bar.bar.postfix == "loss 2.0000, 5 targets/s"
    bar.close()
    out = capsys.readouterr()
    assert out.out == ""  # no plain lines beside the bar
    assert out.err.startswith("\repoch 2:") and out.err.endswith("\r")  # gone at the epoch's end
    assert "\n" not in out.err


def test_the_progress_line_reaches_a_pipe_at_once():
    """Under nohup the output is a file or a pipe, which Python buffers: each line is flushed."""
    code = (
        "import sys, torch\n"
        "from deeprnn.data.batching import Batch\n"
        "from deeprnn.training.console import ProgressBar\n"
        "ProgressBar(1, 0, 'e').update(Batch(torch.zeros(1, 1), torch.zeros(1, 1), None, False, 1, 1), 1.0)\n"
        "sys.stdin.readline()  # alive until the test has read the line\n"
    )
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL}
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    with subprocess.Popen([sys.executable, "-c", code], text=True, env=buffered, **pipes) as child:
        try:
            ready, _, _ = select.select([child.stdout], [], [], 60)
            line = child.stdout.readline() if ready else ""
        finally:
            child.stdin.close()
    assert line.startswith("e: 1/1 batches, loss 1.0000,")


def test_the_log_is_echoed_and_kept(tmp_path):
    echoed = []
    log = console.Logger(tmp_path / "train.log", echoed.append)
    log("first")
    log("second")
    assert echoed == ["first", "second"]
    assert (tmp_path / "train.log").read_text(encoding="utf-8") == "first\nsecond\n"
