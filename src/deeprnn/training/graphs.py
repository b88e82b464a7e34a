"""CUDA graphs: a training segment's forward and backward pass captured once per shape, then
replayed for every batch of that shape (``cuda_graphs``; by default where :func:`graphs_wanted` says).

On a GPU the per-step loop is bound by kernel launches, not arithmetic (README, "Speed"): a
DT(S)-RNN update of 100 steps launches thousands of small kernels, each costing the CPU more
than the GPU spends on it. A replayed graph launches them all at once.

What a graph needs, and how a run gives it:

- fixed shapes: each batch is copied into static buffers, its steps padded to ``bptt_steps``
  (its lengths mark the valid steps: padded steps change nothing, ``deeprnn.recurrence``), so a
  run has one shape, two with a smaller last batch; the carried state is copied in as well;
- no synchronisation inside: the checks of the input's values step aside while a stream is
  captured (``deeprnn.driver.checks_values``), the loss's scale is a tensor, and a NADE
  head, whose shapes follow each frame's notes, is refused;
- fixed gradient buffers: every graph accumulates into the same ``.grad`` tensors, zeroed
  inside it, so clipping, the guard and the optimiser step stay outside, as in an eager update.

If a capture fails, the run goes on eagerly, said once in the log. Token ids are checked
before each replay (a graph checks nothing, and a bad id would end the CUDA context). The
random numbers that the warm-up and the capture draw (weight noise, dropout) are given back, so
that the replays draw the eager run's: a graphed run follows the eager run's curve within
rounding, noise and dropout included (``tests/test_graphs.py``: on the CPU with a stand-in for
the capture, and on a GPU).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from deeprnn.data.batching import Batch
from deeprnn.driver import map_carry
from deeprnn.errors import ConfigError
from deeprnn.models import DeepRNN
from deeprnn.operators.protocol import Carry
from deeprnn.operators.transitions import DeepTransition
from deeprnn.training.console import Log

# (batch, state, scale) -> (loss, state after): one segment's forward and backward pass.
Segment = Callable[[Batch, Carry, float | torch.Tensor], tuple[torch.Tensor, Carry]]
WARMUP = 3  # eager passes on a side stream before a capture, as PyTorch's recipe asks
SHAPES = 4  # graphs kept at most; a run has one or two shapes


def graphs_wanted(setting: bool | None, device: torch.device, distributed: bool, model: DeepRNN) -> bool:
    """Whether a run captures its segments: as ``cuda_graphs`` says, or where it is None, wherever
    graphs are known to run: one process on a GPU, a head of fixed shapes, and the paper's ⊕ at
    every level (a transition of one's own may do what a capture cannot: ask for graphs with
    ``cuda_graphs = true``)."""
    if setting is None:
        own_parts = all(isinstance(level, DeepTransition) for level in model.recurrence.levels)
        return device.type == "cuda" and not distributed and model.config.head != "nade" and own_parts
    return setting


def check_possible(device: torch.device, distributed: bool) -> None:
    """Refuse a run whose segments cannot be captured: on a CPU, or under torchrun."""
    if device.type != "cuda":
        raise ConfigError(f"cuda_graphs needs a CUDA device; this run is on {device}")
    if distributed:
        raise ConfigError(
            "cuda_graphs: not under torchrun (DistributedDataParallel's hooks are not captured)"
        )


def capture(segment: Callable[[], object]) -> Callable[[], None]:
    """``segment`` (on the current CUDA device, reading static buffers) captured after a
    warm-up on a side stream; returns the replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    # the outer context restores the caller's stream even if the capture fails
    with torch.cuda.stream(stream):
        for _ in range(WARMUP):
            segment()
        with torch.cuda.graph(graph, stream=stream):
            segment()
    torch.cuda.current_stream().wait_stream(stream)
    return graph.replay


@dataclass
class _Graph:
    replay: Callable[[], None]
    batch: Batch  # the static inputs, targets and lengths
    state: Carry  # the static initial state
    scale: torch.Tensor
    outputs: list  # [loss, state after], written by every replay


class SegmentGraphs:
    """Replays of ``segment`` for the batches of a run of ``model``, a graph per shape."""

    def __init__(self, segment: Segment, model: DeepRNN, steps: int, log: Log) -> None:
        if model.config.head == "nade":
            raise ConfigError(
                "cuda_graphs: a NADE head's shapes follow each frame's notes, it cannot be captured"
            )
        self.segment, self.model, self.steps, self.log = segment, model, steps, log
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.device = self.parameters[0].device
        self.graphs: dict[tuple, _Graph] = {}
        self.failed = False  # a capture failed: every segment runs eagerly from then on

    def run(self, batch: Batch, state: Carry | None, scale: float) -> tuple[float, Carry] | None:
        """The segment's loss and the state after it, by a graph; None where this batch has no
        graph (longer than ``steps``, a capture that failed, a shape beyond SHAPES): the caller
        runs the segment eagerly, into the same gradient buffers (:meth:`zero_grad`)."""
        steps, columns = batch.inputs.shape[:2]
        key = (columns, batch.inputs.dtype)
        if self.failed or steps > self.steps or (key not in self.graphs and len(self.graphs) >= SHAPES):
            return None
        if self.model.recurrence.tokens:  # a replay checks nothing: a bad id would kill the context
            self.model.recurrence.check_token_range(batch.inputs)
        state = self.zeros(columns) if state is None else state
        if key not in self.graphs:
            with self.on_device():
                captured = self._capture(batch, state)
            if captured is None:
                return None
            self.graphs[key] = captured
        graph = self.graphs[key]
        for static, new in zip(_tensors(graph.batch), _tensors(self.padded(batch)), strict=True):
            static.copy_(new)
        _copy_carry(graph.state, state)
        graph.scale.fill_(scale)
        with self.on_device():
            graph.replay()
        loss, after = graph.outputs
        return float(loss), map_carry(torch.clone, after)

    def on_device(self) -> contextlib.AbstractContextManager:
        """The run's GPU made current (captures and replays use the current device's streams);
        nothing to select on a CPU, where the tests replay with a stand-in."""
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    def zero_grad(self) -> None:
        """Zero the gradient buffers the graphs write, in place (never None: a graph holds them)."""
        for p in self.parameters:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            else:
                p.grad.zero_()

    def padded(self, batch: Batch) -> Batch:
        """``batch`` with ``self.steps`` steps, its lengths marking the valid ones."""
        steps, columns = batch.inputs.shape[:2]
        lengths = batch.lengths
        if lengths is None:
            lengths = torch.full((columns,), steps, dtype=torch.int64, device=batch.inputs.device)
        extra = self.steps - steps
        inputs, targets = _pad(batch.inputs, extra), _pad(batch.targets, extra)
        return Batch(inputs, targets, lengths, batch.reset, batch.count, batch.total)

    def zeros(self, columns: int) -> Carry:
        """The zero state of ``columns`` sequences (a reset), as the model would start them."""
        recurrence, weight = self.model.recurrence, self.parameters[0]
        shape = (recurrence.num_levels, columns, recurrence.hidden_size)
        parts = [weight.new_zeros(shape) for _ in range(recurrence.carries)]
        return parts[0] if recurrence.carries == 1 else tuple(parts)

    def _capture(self, batch: Batch, state: Carry) -> _Graph | None:
        static = self.padded(batch)
        static = Batch(*(t.clone() for t in _tensors(static)), static.reset, static.count, static.total)
        start = map_carry(torch.clone, state)
        scale = torch.ones((), device=batch.inputs.device)
        outputs: list = []

        def segment() -> None:
            self.zero_grad()
            outputs[:] = self.segment(static, start, scale)

        self.zero_grad()  # the buffers exist before the capture: it accumulates into them
        devices = [self.device] if self.device.type == "cuda" else []
        # The warm-up's random numbers and its rounding are given back: the replays then draw
        # what eager segments would (a replay reads the generator's state as it starts and moves
        # it on as an eager segment does), from the parameters as they were (weight noise is
        # added and taken away again, W + n - n, which may move W by a rounding).
        before = [p.detach().clone() for p in self.parameters]
        try:
            with torch.random.fork_rng(devices=devices):
                replay = capture(segment)
        except Exception as error:  # noqa: BLE001  (any failure: the run goes on eagerly)
            self.failed = True
            self.log(
                f"cuda_graphs: capturing a batch of shape {tuple(batch.inputs.shape)} failed ({error}); "
                "the run goes on without graphs (restart it to free what the capture held)"
            )
            return None
        finally:
            with torch.no_grad():
                for p, kept in zip(self.parameters, before, strict=True):
                    p.copy_(kept)
        return _Graph(replay, static, start, scale, outputs)


def _tensors(batch: Batch) -> tuple[torch.Tensor, ...]:
    return (batch.inputs, batch.targets, batch.lengths)


def _pad(x: torch.Tensor, steps: int) -> torch.Tensor:
    if not steps:
        return x
    return torch.cat([x, x.new_zeros((steps, *x.shape[1:]))])


def _copy_carry(static: Carry, new: Carry) -> Carry:
    if isinstance(static, torch.Tensor):
        return static.copy_(new)
    return tuple(s.copy_(n) for s, n in zip(static, new, strict=True))
