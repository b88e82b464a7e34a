"""``deeprnn bench``: throughput of every preset against ``torch.nn.RNN``, in the same process.

A case is (task, model, batch B, steps T, hidden H, mode). Each model is its preset's structure
for the task with every width set to H, scored by its head's NLL:

- ``music``: 88 keys in, its head over 88 keys (Bernoulli, or a NADE of 150 units for the
  ``-nade`` presets); the baseline is ``nn.RNN(88, H, num_layers=levels)`` with a linear output
  and the Bernoulli loss;
- ``ptb-char`` and ``ptb-word``: token ids in (50 characters, 10,000 words), a softmax over them
  out; the baseline is an embedding of width H, ``nn.RNN(H, H, num_layers=levels)`` and a linear
  output with the cross-entropy. These shapes decide how long the Penn Treebank tables take.

``train`` times forward + backward + an SGD update, ``eval`` a forward pass without gradients,
``sample`` the drawing of one sequence of T steps, a step a call (:func:`deeprnn.sampling.sample`
against nn.RNN run a step at a time, its draw fed back), at B=1 whatever the shape's batch.
Each case also gives the peak memory of one call, ours and the baseline's, and for training the
bytes autograd saves for the backward pass (:mod:`deeprnn.memory`), both of the eager call (with
``cuda_graphs`` too).
The ratio is our throughput over the baseline's. Every weight matrix is used once per step (an
embedding is a lookup, not a product, and is not counted), so the FLOP parity ratio is
(baseline's multiplied weights) / (ours), and ``ratio / parity`` is throughput per FLOP.

At B=1 a step is a product of a vector by each matrix of the loop, and its cost is reading those
matrices from memory: nn.RNN reads only W_hh there (its W_ih is one product for all steps, before
the loop), a deep transition all of its matrices. The loop parity, (baseline's weights read in
the loop) / (ours), is the ratio that memory traffic alone predicts at B=1 once the matrices
outgrow the cache.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from deeprnn import memory
from deeprnn.errors import UserError
from deeprnn.models import DeepRNN, count_parameters
from deeprnn.names import MODELS, NADE_MODELS
from deeprnn.operators.projection import Projection
from deeprnn.presets import preset
from deeprnn.runtime import own_random_state
from deeprnn.sampling import sample
from deeprnn.training.graphs import capture
from deeprnn.training.precision import autocast

SHAPES = ((32, 100), (1, 200))  # (batch, steps)
MODES = ("train", "eval", "sample")
# task -> (its preset's data set, the input and output size, the hidden sizes measured)
TASKS = {
    "music": ("nottingham", 88, (256, 512)),
    "ptb-char": ("ptb-char", 50, (400, 600)),
    "ptb-word": ("ptb-word", 10_000, (200, 400)),
}
NOTES = 4  # keys on per frame, on average: 3.0-4.0 in the four music data sets' training splits
ROUNDS = 5


class _Baseline(nn.Module):
    """nn.RNN with a linear output; for text, behind an embedding of its width."""

    def __init__(self, size: int, hidden: int, levels: int, tokens: bool) -> None:
        super().__init__()
        self.embedding = nn.Embedding(size, hidden) if tokens else None
        self.rnn = nn.RNN(hidden if tokens else size, hidden, num_layers=levels)
        self.output = nn.Linear(hidden, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.rnn(x if self.embedding is None else self.embedding(x))[0])

    @torch.no_grad()
    def sample(self, steps: int, generator: torch.Generator) -> None:
        """What a user of nn.RNN writes to draw a sequence: a step a call, the draw fed back."""
        tokens = self.embedding is not None
        shape, device = (1, 1) if tokens else (1, 1, self.rnn.input_size), self.output.weight.device
        x = torch.zeros(shape, dtype=torch.int64 if tokens else None, device=device)
        h = None
        for _ in range(steps):
            out, h = self.rnn(self.embedding(x) if tokens else x, h)
            logits = self.output(out[-1])
            if tokens:
                x = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).view(1, 1)
            else:
                x = torch.bernoulli(torch.sigmoid(logits), generator=generator).view(1, 1, -1)


def bench_model(name: str, hidden: int, task: str = "music") -> DeepRNN:
    """The preset's structure for ``task`` at width ``hidden`` everywhere."""
    c = preset(name, TASKS[task][0])
    return DeepRNN(
        replace(
            c,
            hidden_size=hidden,
            transition_sizes=tuple(hidden for _ in c.transition_sizes),
            output_sizes=tuple(hidden for _ in c.output_sizes),
        )
    )


def multiplied_weights(model: nn.Module) -> int:
    """The weights a step multiplies: every matrix but the embeddings (a lookup per token)."""
    tables = [m.weight for m in model.modules() if isinstance(m, nn.Embedding)]
    tables += [m.weight for m in model.modules() if isinstance(m, Projection) and m.tokens]
    return count_parameters(model)["weights"] - sum(t.numel() for t in tables)


def loop_weights(model: nn.Module) -> int:
    """The weights every step of the recurrence multiplies (the rest are applied to all steps at
    once): each level's matrices that read h_{t-1} and those between the layers of ⊕, or nn.RNN's
    W_hh of each level."""
    if isinstance(model, DeepRNN):
        return sum(
            level.recurrent_weight.numel() + sum(w.numel() for w in level.layer_weights)
            for level in model.recurrence.levels
        )
    return sum(p.numel() for name, p in model.named_parameters() if name.startswith("rnn.weight_hh"))


def _step_fn(model: nn.Module, x: torch.Tensor, target: torch.Tensor, mode: str, precision: str):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def forward() -> torch.Tensor:
        with autocast(x.device, precision):  # the loss after it, in float32
            out = model(x)
        return (out[0] if isinstance(out, tuple) else out).float()

    def loss(logits: torch.Tensor) -> torch.Tensor:
        if isinstance(model, DeepRNN):
            return model.head.nll(logits, target).mean()
        if not target.is_floating_point():  # token ids
            return F.cross_entropy(logits.flatten(0, 1), target.flatten())
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1).mean()

    def train() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss(forward()).backward()
        optimizer.step()

    def evaluate() -> None:
        with torch.no_grad():
            forward()

    return train if mode == "train" else evaluate


def _sample_fn(model: nn.Module, steps: int, device: torch.device, precision: str) -> Callable[[], object]:
    """Draw one sequence of ``steps`` (ours by deeprnn.sampling.sample, nn.RNN's a step a call)."""
    generator = torch.Generator(device).manual_seed(0)

    def draw() -> None:
        with autocast(device, precision):
            if isinstance(model, DeepRNN):
                sample(model, steps, generator=generator)
            else:
                model.sample(steps, generator)

    return draw


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


def _data(task: str, batch: int, steps: int, device: torch.device) -> torch.Tensor:
    """Frames with about NOTES keys on (music), or token ids (text)."""
    size = TASKS[task][1]
    if task == "music":
        return torch.rand(steps, batch, size, device=device).bernoulli_(NOTES / size)
    return torch.randint(0, size, (steps, batch), device=device)


def best_rounds(fns: list[Callable[[], object]], device: torch.device, seconds: float) -> list[float]:
    """Seconds per call of each of ``fns``, measured in alternation over ROUNDS rounds so that a
    change of machine load affects them alike; the best round of each (the least disturbed)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(ROUNDS):
        for fn, kept in zip(fns, times, strict=True):
            kept.append(_time(fn, device, seconds / ROUNDS))
    return [min(kept) for kept in times]


def _sides(
    name: str, batch: int, steps: int, hidden: int, mode: str, device: torch.device, task: str, precision: str
) -> tuple[DeepRNN, _Baseline, Callable[[], object], Callable[[], object]]:
    """Both models of a case, seeded alike, and the call that each side times."""
    with own_random_state():
        torch.manual_seed(0)
        ours = bench_model(name, hidden, task).to(device)
        base = _Baseline(TASKS[task][1], hidden, ours.config.levels, task != "music").to(device)
        x, target = _data(task, batch, steps, device), _data(task, batch, steps, device)
    if mode == "eval":
        ours.eval()
        base.eval()
    if mode == "sample":
        if task == "music":  # both draw about NOTES keys a frame, as trained models do
            keys = TASKS[task][1]
            with torch.no_grad():
                for bias in (ours.output.logits.bias[:keys], base.output.bias):
                    bias.fill_(math.log(NOTES / (keys - NOTES)))
        ours_fn, base_fn = (_sample_fn(m, steps, device, precision) for m in (ours, base))
    else:
        ours_fn, base_fn = (_step_fn(m, x, target, mode, precision) for m in (ours, base))
    return ours, base, ours_fn, base_fn


def run_case(
    name: str,
    batch: int,
    steps: int,
    hidden: int,
    mode: str,
    device: torch.device,
    seconds: float = 1.0,
    task: str = "music",
    precision: str = "fp32",
    cuda_graphs: bool = False,
    also: Callable[[], object] | None = None,
) -> dict:
    """One case, both sides timed in alternation; ``also``, one more function timed in the same
    alternation (``also_ms``: scripts/bench-floor's products alone)."""
    ours, base, ours_fn, base_fn = _sides(name, batch, steps, hidden, mode, device, task, precision)
    levels = ours.config.levels
    # not a sampler (its loop depends on its draws), nor a NADE (its shapes on the notes)
    graphed = cuda_graphs and mode != "sample" and ours.config.head != "nade"
    timed = [capture(fn) if graphed else fn for fn in (base_fn, ours_fn)]
    base_s, ours_s, *also_s = best_rounds(timed + ([also] if also else []), device, seconds)
    parity = multiplied_weights(base) / multiplied_weights(ours)
    loop_parity = loop_weights(base) / loop_weights(ours)
    ratio = base_s / ours_s
    return {
        "task": task,
        "model": name,
        "batch": batch,
        "steps": steps,
        "hidden": hidden,
        "mode": mode,
        "precision": precision,
        "cuda_graphs": graphed,
        "ratio": round(ratio, 3),
        "flop_parity": round(parity, 3),
        "ratio_per_flop": round(ratio / parity, 3),
        "loop_parity": round(loop_parity, 3),
        "ours_ms": round(ours_s * 1e3, 3),
        "baseline_ms": round(base_s * 1e3, 3),
        "baseline": f"nn.RNN(num_layers={levels})" + (" cuDNN" if device.type == "cuda" else ""),
        "steps_per_s": round(batch * steps / ours_s, 1),
        "peak_mb": round(memory.peak(ours_fn, device) / 1e6, 2),
        "baseline_peak_mb": round(memory.peak(base_fn, device) / 1e6, 2),
        "saved_mb": round(memory.saved_for_backward(ours_fn, ours) / 1e6, 2) if mode == "train" else None,
    } | ({"also_ms": round(also_s[0] * 1e3, 3)} if also else {})


def run(
    models: Sequence[str] = MODELS,
    hidden: Sequence[int] | None = None,
    shapes: Sequence[tuple[int, int]] = SHAPES,
    modes: Sequence[str] = ("train", "eval"),
    device: str = "cpu",
    seconds: float = 1.0,
    progress: Callable[[dict], object] | None = None,
    tasks: Sequence[str] = tuple(TASKS),
    precision: str = "fp32",
    cuda_graphs: bool = False,
) -> dict:
    """Every case of ``tasks`` × ``hidden`` (default: each task's own sizes) × ``shapes`` ×
    ``modes`` × ``models`` (the NADE presets on music only; ``sample``, at B=1 once per length);
    ``precision``: both sides' forward passes under its autocast (deeprnn.training.precision);
    ``cuda_graphs``: both sides' training steps and evaluations captured as CUDA graphs and
    replayed (deeprnn.training.graphs), sampling excepted."""
    dev = torch.device(device)
    if cuda_graphs and dev.type != "cuda":
        raise UserError(f"--cuda-graphs needs a CUDA device; got {device}")
    cases = []
    for task in tasks:
        for h in hidden or TASKS[task][2]:
            drawn = set()  # the lengths sampled so far (one sequence: B=1 whatever the shape's)
            for batch, steps in shapes:
                for mode in modes:
                    if mode == "sample":
                        if steps in drawn:
                            continue
                        drawn.add(steps)
                    for name in models:
                        if name in NADE_MODELS and task != "music":
                            continue
                        b = 1 if mode == "sample" else batch
                        case = run_case(name, b, steps, h, mode, dev, seconds, task, precision, cuda_graphs)
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
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def cpu_model() -> str | None:
    """The CPU's name as Linux gives it (``platform.processor()`` says only ``x86_64`` there):
    benchmark files made on different machines must say so."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            names = (line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
            return next(names, None)
    except OSError:
        return None


def format_row(case: dict) -> str:
    return (
        f"{case['task']:>8} {case['model']:>13} {case['mode']:>5} {case['precision']} "
        f"B={case['batch']:<3} T={case['steps']:<4} H={case['hidden']:<4} "
        f"ratio {case['ratio']:6.3f}  parity {case['flop_parity']:5.3f}  "
        f"per-FLOP {case['ratio_per_flop']:5.2f}  loop parity {case['loop_parity']:5.3f}  "
        f"({case['ours_ms']:.1f} ms vs {case['baseline_ms']:.1f} ms; "
        f"peak {case['peak_mb']:.1f} MB vs {case['baseline_peak_mb']:.1f} MB)"
    )
