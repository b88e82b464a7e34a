"""Batches for truncated back-propagation through time.

- Text (:class:`TextBatches`): the stream is split into B contiguous columns (lengths differing
  by at most one), read in segments of T steps; the state of column j is carried from one
  segment to the next. Every token of the split is a target exactly once: the first token's
  context is the boundary (line-end) token.
- Music (:class:`MusicBatches`): B pieces at a time, padded to the longest, cut into chunks of
  at most N steps; the state is carried from one chunk to the next of the same pieces and
  reset (``Batch.reset``) at the first chunk of new pieces. The input of frame 0 is silence,
  so every frame is a target exactly once. Padding is masked by ``Batch.lengths``.

Distributed data parallel training (``rank``, ``world``): the batch is per process, so the
global batch is ``world`` × ``batch`` columns or pieces. Every process builds the same global
batches and keeps its own share; ``Batch.total`` counts the targets of the global batch, so
that each process can scale its loss to the global mean. With ``world = 1`` nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Batch:
    inputs: torch.Tensor  # (T, B) token ids or (T, B, 88) frames
    targets: torch.Tensor  # same shape: what each step must predict
    lengths: torch.Tensor | None  # (B,) valid steps; None when every step is valid
    reset: bool  # the state starts from zeros (first segment of new sequences)
    count: int  # number of valid targets
    total: int  # valid targets of the global batch, over all processes (= count in one process)

    def to(self, device: torch.device | str) -> Batch:
        lengths = None if self.lengths is None else self.lengths.to(device)
        return Batch(
            self.inputs.to(device), self.targets.to(device), lengths, self.reset, self.count, self.total
        )


def _check_shard(rank: int, world: int) -> None:
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, world) and world at least 1, got rank {rank}, world {world}")


class TextBatches:
    """Segments of a token stream, ``batch`` columns wide and ``steps`` long (this process's
    ``batch`` columns of ``world`` × ``batch``)."""

    def __init__(
        self, ids: torch.Tensor, batch: int, steps: int, boundary: int, rank: int = 0, world: int = 1
    ) -> None:
        if batch < 1 or steps < 1:
            raise ValueError(f"batch and steps must be positive, got {batch} and {steps}")
        _check_shard(rank, world)
        n, columns = len(ids), batch * world
        if n < columns:
            raise ValueError(f"a stream of {n} tokens cannot fill {columns} columns")
        self.batch, self.steps = batch, steps
        sizes = torch.full((columns,), n // columns, dtype=torch.int64)
        sizes[: n % columns] += 1
        rows = int(sizes[0])
        context = torch.cat([ids.new_tensor([boundary]), ids[:-1]])
        mine = range(rank * batch, (rank + 1) * batch)
        self.inputs = torch.zeros(rows, batch, dtype=torch.int64)
        self.targets = torch.zeros(rows, batch, dtype=torch.int64)
        start = 0
        for j, size in enumerate(sizes.tolist()):
            if j in mine:
                self.inputs[:size, j - mine.start] = context[start : start + size]
                self.targets[:size, j - mine.start] = ids[start : start + size]
            start += size
        self.sizes = sizes[mine.start : mine.stop]  # this process's columns
        self.all_sizes = sizes
        self.tokens = n

    def __len__(self) -> int:
        return -(-self.inputs.shape[0] // self.steps)

    def count(self, epoch: int = 0) -> int:
        """Batches in ``epoch``: the same in every epoch."""
        return len(self)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """Segments ``start``, ``start + 1``, …: resuming at a segment carries on exactly. Every
        epoch reads the same stream (``epoch`` is accepted for the music batches' signature)."""
        for k in range(start, len(self)):
            lo = k * self.steps
            hi = min(lo + self.steps, self.inputs.shape[0])
            lengths = (self.sizes - lo).clamp(0, hi - lo)
            full = bool((lengths == hi - lo).all())
            total = int((self.all_sizes - lo).clamp(0, hi - lo).sum())
            yield Batch(
                self.inputs[lo:hi],
                self.targets[lo:hi],
                None if full else lengths,
                k == 0,
                int(lengths.sum()),
                total,
            )

    def __iter__(self) -> Iterator[Batch]:
        return self.batches()


class MusicBatches:
    """Chunks of batches of pieces; ``shuffle`` draws a new order of pieces each epoch.

    With ``world`` > 1, a group of ``world`` × ``batch`` pieces is dealt round-robin to the
    processes, all of which cut it into the same number of chunks (the longest piece's); a last
    group too small to give every process a piece is left out of that epoch."""

    def __init__(
        self,
        pieces: list[np.ndarray],
        batch: int,
        max_steps: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if batch < 1 or (max_steps is not None and max_steps < 1):
            raise ValueError(f"batch and max_steps must be positive, got {batch} and {max_steps}")
        _check_shard(rank, world)
        if len(pieces) < world:
            raise ValueError(f"{len(pieces)} pieces cannot be shared among {world} processes")
        self.pieces, self.batch, self.max_steps = pieces, batch, max_steps
        self.shuffle, self.seed, self.rank, self.world = shuffle, seed, rank, world
        self.frames = sum(len(p) for p in pieces)

    def groups(self, epoch: int = 0) -> list[list[int]]:
        """Which pieces go together (over all processes): a seeded random order per epoch, or
        (evaluation) by length."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.pieces)).tolist()
        else:
            order = sorted(range(len(self.pieces)), key=lambda i: -len(self.pieces[i]))
        size = self.batch * self.world
        groups = [order[i : i + size] for i in range(0, len(order), size)]
        return [g for g in groups if len(g) >= self.world]

    def _chunks(self, group: list[int]) -> int:
        longest = max(len(self.pieces[i]) for i in group)
        return 1 if self.max_steps is None else max(1, -(-longest // self.max_steps))

    def __len__(self) -> int:
        return self.count(0)

    def count(self, epoch: int = 0) -> int:
        """Batches in ``epoch``: it varies with the epoch's grouping when pieces are cut into chunks."""
        return sum(self._chunks(g) for g in self.groups(epoch))

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """The chunks of ``epoch`` from the ``start``-th on (for resuming mid-epoch)."""
        index = 0
        for group in self.groups(epoch):
            chunks = self._chunks(group)
            if index + chunks <= start:
                index += chunks
                continue
            everyone = torch.tensor([len(self.pieces[i]) for i in group], dtype=torch.int64)
            longest = int(everyone.max())
            mine = group[self.rank :: self.world]
            inputs, targets, lengths = self._pad(mine, longest)
            step = self.max_steps or longest
            for k in range(chunks):
                if index >= start:
                    lo, hi = k * step, min((k + 1) * step, longest)
                    valid = (lengths - lo).clamp(0, hi - lo)
                    full = bool((valid == hi - lo).all())
                    total = int((everyone - lo).clamp(0, hi - lo).sum())
                    yield Batch(
                        inputs[lo:hi],
                        targets[lo:hi],
                        None if full else valid,
                        k == 0,
                        int(valid.sum()),
                        total,
                    )
                index += 1

    def _pad(self, group: list[int], longest: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([len(self.pieces[i]) for i in group], dtype=torch.int64)
        targets = torch.zeros(longest, len(group), 88)
        for j, i in enumerate(group):
            targets[: len(self.pieces[i]), j] = torch.from_numpy(self.pieces[i].astype(np.float32))
        inputs = torch.zeros_like(targets)
        inputs[1:] = targets[:-1]
        return inputs, targets, lengths
