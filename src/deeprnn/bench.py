"""``deeprnn bench``: throughput of every preset against ``torch.nn.RNN``, in the same process.

A case is (model, batch B, steps T, hidden H, mode). Each model is its preset's structure with
every width set to H, 88 inputs and its head over 88 keys (a music model: Bernoulli, or a NADE
of 150 units for the ``-nade`` presets), scored by the head's NLL; the baseline is
``nn.RNN(88, H, num_layers=levels)`` with a linear output and the Bernoulli loss. ``train`` times
forward + backward + an SGD update, ``eval`` a forward pass without gradients. The ratio is our
throughput over the baseline's; every weight matrix is used once per step, so the FLOP parity
ratio is (baseline weights) / (our weights), and ``ratio / parity`` is throughput per FLOP.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from deeprnn.models import DeepRNN, count_parameters
from deeprnn.names import MODELS
from deeprnn.presets import preset
from deeprnn.runtime import own_random_state

SHAPES = ((32, 100), (1, 200))  # (batch, steps)
HIDDEN = (256, 512)
FEATURES = 88
NOTES = 4  # keys on per frame, on average: 3.0-4.0 in the four music data sets' training splits
ROUNDS = 5


class _Baseline(nn.Module):
    def __init__(self, hidden: int, levels: int) -> None:
        super().__init__()
        self.rnn = nn.RNN(FEATURES, hidden, num_layers=levels)
        self.output = nn.Linear(hidden, FEATURES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.rnn(x)[0])


def bench_model(name: str, hidden: int) -> DeepRNN:
    """The preset's structure at width ``hidden`` everywhere, reading 88-key frames."""
    c = preset(name, "nottingham")
    return DeepRNN(
        replace(
            c,
            hidden_size=hidden,
            transition_sizes=tuple(hidden for _ in c.transition_sizes),
            output_sizes=tuple(hidden for _ in c.output_sizes),
        )
    )


def _step_fn(model: nn.Module, x: torch.Tensor, target: torch.Tensor, mode: str):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def forward() -> torch.Tensor:
        out = model(x)
        return out[0] if isinstance(out, tuple) else out

    def loss(logits: torch.Tensor) -> torch.Tensor:
        if isinstance(model, DeepRNN):
            return model.head.nll(logits, target).mean()
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1).mean()

    def train() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss(forward()).backward()
        optimizer.step()

    def evaluate() -> None:
        with torch.no_grad():
            forward()

    return train if mode == "train" else evaluate


def _time(fn, device: torch.device, seconds: float) -> float:
    """Median seconds per call, after a warm-up, over about ``seconds`` of calls."""

    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    first = min(once(), once())
    repeats = max(3, min(50, int(seconds / max(first, 1e-6))))
    return statistics.median(once() for _ in range(repeats))


def run_case(
    name: str, batch: int, steps: int, hidden: int, mode: str, device: torch.device, seconds: float = 1.0
) -> dict:
    with own_random_state():
        torch.manual_seed(0)
        ours = bench_model(name, hidden).to(device)
        base = _Baseline(hidden, ours.config.levels).to(device)
        x = torch.rand(steps, batch, FEATURES, device=device).bernoulli_(NOTES / FEATURES)
        target = torch.rand(steps, batch, FEATURES, device=device).bernoulli_(NOTES / FEATURES)
    levels = ours.config.levels
    if mode == "eval":
        ours.eval()
        base.eval()
    ours_fn, base_fn = _step_fn(ours, x, target, mode), _step_fn(base, x, target, mode)
    # Alternate the two so that a change of machine load affects both alike; keep the best
    # round of each (the least disturbed).
    t_ours, t_base = [], []
    for _ in range(ROUNDS):
        t_base.append(_time(base_fn, device, seconds / ROUNDS))
        t_ours.append(_time(ours_fn, device, seconds / ROUNDS))
    ours_s, base_s = min(t_ours), min(t_base)
    parity = count_parameters(base)["weights"] / count_parameters(ours)["weights"]
    ratio = base_s / ours_s
    return {
        "model": name,
        "batch": batch,
        "steps": steps,
        "hidden": hidden,
        "mode": mode,
        "ratio": round(ratio, 3),
        "flop_parity": round(parity, 3),
        "ratio_per_flop": round(ratio / parity, 3),
        "ours_ms": round(ours_s * 1e3, 3),
        "baseline_ms": round(base_s * 1e3, 3),
        "baseline": f"nn.RNN(num_layers={levels})" + (" cuDNN" if device.type == "cuda" else ""),
        "steps_per_s": round(batch * steps / ours_s, 1),
    }


def run(
    models=MODELS,
    hidden=HIDDEN,
    shapes=SHAPES,
    modes=("train", "eval"),
    device: str = "cpu",
    seconds: float = 1.0,
    progress=None,
) -> dict:
    dev = torch.device(device)
    cases = []
    for h in hidden:
        for batch, steps in shapes:
            for mode in modes:
                for name in models:
                    case = run_case(name, batch, steps, h, mode, dev, seconds)
                    cases.append(case)
                    if progress is not None:
                        progress(case)
    return {"cases": cases, "machine": machine(dev)}


def machine(device: torch.device) -> dict:
    info = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def format_row(case: dict) -> str:
    return (
        f"{case['model']:>10} {case['mode']:>5} B={case['batch']:<3} T={case['steps']:<4} "
        f"H={case['hidden']:<4} ratio {case['ratio']:6.3f}  parity {case['flop_parity']:5.3f}  "
        f"per-FLOP {case['ratio_per_flop']:5.2f}  ({case['ours_ms']:.1f} ms vs {case['baseline_ms']:.1f} ms)"
    )
