"""Data-parallel training under torchrun (Gloo on CPU): the updates of one process with the
global batch, a resume that continues exactly, and the shares each process reads; and the
process group's helpers (joining, leaving, the world from torchrun's variables) without it."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from deeprnn.cli import main
from deeprnn.data import MusicCorpus
from deeprnn.data.batching import MusicBatches, TextBatches
from deeprnn.data.text import TextCorpus
from deeprnn.training import builder, distributed, evaluation
from deeprnn.training.config import TrainConfig
from deeprnn.training.distributed import World

SMALL = {
    "hidden_size": 12,
    "transition_sizes": "[10]",
    "bptt_steps": 20,
    "lr": 1.0,
    "weight_noise": 0.0,
    "state_dropout": 0.0,
    "eval_every": 10,
    "checkpoint_every": 3,
    "eval_batch_size": 64,
    "device": "cpu",
}


def _args(data: str, data_root, out, **settings) -> list[str]:
    sets = [a for k, v in {**SMALL, **settings}.items() for a in ("--set", f"{k}={v}")]
    return ["--model", "dts-rnn", "--data", data, "--data-dir", str(data_root), *sets, "--out", str(out)]


def _torchrun(args: list[str], processes: int = 2) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={processes}", "-m", "deeprnn", "train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def _results(run) -> dict:
    return json.loads((run / "results.json").read_text())


def _curve(run, column: str = "value") -> list[float]:
    return [json.loads(x)[column] for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_train_as_one_with_the_global_batch(tmp_path, data_root):
    assert main(["train", *_args("jsb", data_root, tmp_path / "one", batch_size=8, max_updates=20)]) == 0
    done = _torchrun(_args("jsb", data_root, tmp_path / "two", batch_size=4, max_updates=20))
    assert done.returncode == 0, done.stderr[-12000:]
    one, two = _results(tmp_path / "one"), _results(tmp_path / "two")
    assert two["updates"] == one["updates"] == 20
    assert two["test_nll"] == pytest.approx(one["test_nll"], abs=1e-4)
    assert _curve(tmp_path / "two") == pytest.approx(_curve(tmp_path / "one"), abs=1e-4)
    assert _curve(tmp_path / "two", "train_loss") == pytest.approx(
        _curve(tmp_path / "one", "train_loss"), abs=1e-4
    )
    assert "2 processes" in (tmp_path / "two" / "train.log").read_text()


def test_a_distributed_run_resumes_exactly(tmp_path, data_root):
    # Dropout and weight noise draw from each process's own generator: both must be restored.
    noisy = {"batch_size": 4, "weight_noise": 0.05, "state_dropout": 0.2}
    whole = _torchrun(_args("jsb", data_root, tmp_path / "whole", max_updates=20, **noisy))
    assert whole.returncode == 0, whole.stderr[-12000:]
    part = _torchrun(_args("jsb", data_root, tmp_path / "part", max_updates=11, **noisy))
    assert part.returncode == 0, part.stderr[-12000:]
    assert _results(tmp_path / "part")["updates"] == 11  # stopped mid-piece: states carried over
    resumed = _torchrun(
        ["--resume", str(tmp_path / "part"), "--set", "max_updates=20", "--data-dir", str(data_root)]
    )
    assert resumed.returncode == 0, resumed.stderr[-12000:]
    # Bit for bit: weight noise leaves every process's copy of W exactly as it was
    # (test_recipe), so the first process's checkpoint is every process's state.
    assert _results(tmp_path / "part")["test_nll"] == _results(tmp_path / "whole")["test_nll"]
    # The data position and carried states belong to two processes: one cannot take them over.
    alone = main(
        ["train", "--resume", str(tmp_path / "part"), "--set", "max_updates=30", "--data-dir", str(data_root)]
    )
    assert alone == 2


def test_text_columns_are_shared_among_processes():
    ids = torch.arange(103)
    whole = TextBatches(ids, 6, 5, boundary=0)
    shares = [TextBatches(ids, 3, 5, boundary=0, rank=r, world=2) for r in range(2)]
    for full, *parts in zip(whole, *shares, strict=True):
        assert torch.equal(torch.cat([p.inputs for p in parts], dim=1), full.inputs)
        assert all(p.total == full.count for p in parts)
        assert sum(p.count for p in parts) == full.count


def test_music_groups_are_dealt_to_processes():
    rng = np.random.default_rng(0)
    pieces = [np.zeros((int(n), 88), np.uint8) for n in rng.integers(1, 40, size=9)]  # groups of 4, 4 and 1
    whole = MusicBatches(pieces, 4, 8, shuffle=True, seed=1)
    shares = [MusicBatches(pieces, 2, 8, shuffle=True, seed=1, rank=r, world=2) for r in range(2)]
    for epoch in range(3):
        assert shares[0].count(epoch) == shares[1].count(epoch)
        streams = [list(s.batches(epoch)) for s in shares]
        assert len(streams[0]) == len(streams[1])
        for a, b in zip(*streams, strict=True):
            assert a.total == b.total == a.count + b.count
        # Every piece but those of a last group too small to reach each process, read once.
        frames = sum(b.count for s in streams for b in s)
        left_out = [g for g in whole.groups(epoch) if len(g) < 2]
        assert len(left_out) == 1
        assert frames == whole.frames - sum(len(pieces[i]) for g in left_out for i in g)
    with pytest.raises(ValueError, match="rank"):
        MusicBatches(pieces, 2, rank=2, world=2)


def test_reproduce_under_torchrun_writes_the_table_once(tmp_path, data_root):
    sets = [a for k, v in {**SMALL, "batch_size": 4, "max_updates": 6}.items() for a in ("--set", f"{k}={v}")]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "deeprnn", "reproduce", "music", "--models", "rnn", "srnn", "--data", "jsb"]
    command += ["--out", str(tmp_path), "--data-dir", str(data_root), *sets]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-12000:]
    rows = json.loads((tmp_path / "music.json").read_text())["rows"]
    assert [(r["model"], r["updates"]) for r in rows] == [("rnn", 6), ("srnn", 6)]
    assert done.stdout.count("music.json: 2 rows") == 1


def _scored(batches) -> tuple[float, int]:
    """A stand-in score that depends on every target: the sum of target values and their count."""
    total = count = 0
    for b in batches.batches():
        values, mask = b.targets.double(), evaluation.valid_mask(b)
        if mask is not None:
            values = torch.where(mask if values.dim() == 2 else mask.unsqueeze(-1), values, 0.0)
        total, count = total + float(values.sum()), count + b.count
    return total, count


def test_evaluation_is_split_among_processes_and_adds_up_to_the_whole():
    rng = np.random.default_rng(0)
    pieces = [rng.integers(0, 2, size=(int(n), 88)).astype(np.uint8) for n in rng.integers(1, 30, size=7)]
    music = MusicCorpus("toy", {"valid": pieces})
    text = TextCorpus("toy", "char", ["a", "b", "c"], {"valid": torch.randint(0, 3, (101,))}, boundary=0)
    config = TrainConfig(model="rnn", data="toy", eval_batch_size=4)
    for corpus in (music, text):
        whole = _scored(builder.batches(config, corpus, "valid", training=False))
        for size in (2, 4):
            assert builder.shares_evaluation(config, corpus, "valid", World(0, size))
            parts = [
                _scored(builder.batches(config, corpus, "valid", training=False, world=World(r, size)))
                for r in range(size)
            ]
            assert sum(c for _, c in parts) == whole[1]
            assert sum(t for t, _ in parts) == pytest.approx(whole[0])
            assert all(c > 0 for _, c in parts)
    # What cannot be shared is scored whole by every process: more processes than pieces, text
    # columns that do not divide among them, and the final one-column text scores.
    final = TrainConfig(model="rnn", data="toy", eval_batch_size=1)
    assert not builder.shares_evaluation(config, music, "valid", World(0, 8))
    assert not builder.shares_evaluation(config, text, "valid", World(0, 3))
    assert not builder.shares_evaluation(final, text, "valid", World(0, 2))
    alone = builder.batches(final, text, "valid", training=False, world=World(1, 2))
    assert _scored(alone) == _scored(builder.batches(final, text, "valid", training=False))


# -- the process group's helpers, without torchrun: PyTorch's calls replaced by recorders ---------


def test_the_world_comes_from_torchruns_variables(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    alone = distributed.from_environment()
    assert alone == World() == World(0, 1, 0) and alone.main and not alone.distributed
    with pytest.raises(dataclasses.FrozenInstanceError):
        alone.rank = 1  # a process's place never changes
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    third = distributed.from_environment()
    assert third == World(3, 4, 1) and not third.main and third.distributed
    monkeypatch.setenv("RANK", "three")
    with pytest.raises(ValueError, match="WORLD_SIZE, RANK and LOCAL_RANK must be integers"):
        distributed.from_environment()


@pytest.fixture
def group(monkeypatch):
    """torch.distributed and the GPU calls as recorders: what setup and leaving would do."""
    calls = []
    monkeypatch.setattr(distributed.dist, "is_available", lambda: True)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: "joined" in calls)
    monkeypatch.setattr(
        distributed.dist, "init_process_group", lambda backend: calls.extend([backend, "joined"])
    )
    monkeypatch.setattr(distributed.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append("left"))
    monkeypatch.setattr(distributed.gc, "collect", lambda: calls.append("collected"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(str(device)))
    return calls


def test_setup_joins_with_gloo_on_cpus_and_nccl_on_the_gpu_of_the_local_rank(group):
    cpu = torch.device("cpu")
    assert distributed.setup(World(), cpu) is cpu and group == []  # one process: nothing to join
    assert distributed.setup(World(1, 2, 1), cpu) == cpu and group == ["gloo", "joined"]
    group.clear()
    assert distributed.setup(World(3, 4, 1), torch.device("cuda")) == torch.device("cuda", 1)
    assert group == ["cuda:1", "nccl", "joined"]
    assert distributed.setup(World(3, 4, 1), torch.device("cuda")) == torch.device("cuda", 1)
    assert group == ["cuda:1", "nccl", "joined", "cuda:1"]  # joined once
    for local_rank in (2, 3):
        with pytest.raises(ValueError, match=f"LOCAL_RANK {local_rank} has no GPU: this machine has 2"):
            distributed.setup(World(3, 4, local_rank), torch.device("cuda"))
    group.clear()  # any other device joins with gloo and is kept as it is
    assert distributed.setup(World(1, 2, 0), torch.device("meta")) == torch.device("meta")
    assert group == ["gloo", "joined"]


def test_leaving_waits_for_the_others_only_after_a_finished_command(group):
    distributed.leave_process_group(finished=True)
    assert group == []  # never joined: nothing to leave
    group.append("joined")
    distributed.leave_process_group(finished=True)
    assert group == ["joined", "barrier", "collected", "left"]
    group[:] = ["joined"]
    distributed.leave_process_group(finished=False)
    assert group == ["joined", "collected", "left"]


def test_one_process_sums_and_gathers_its_own_values():
    assert distributed.sum_across([1.5, 2.0], World(), torch.device("cpu")) == [1.5, 2.0]
    assert distributed.gather({"a": 1}, World()) == [{"a": 1}]
