"""The stacked recurrence: a deep input map and levels of ⊕ (sRNN), with the conventions of
:class:`torch.nn.RNN`; each level run over time by the driver (:mod:`deeprnn.driver`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from deeprnn.driver import checks_values, fast_path_applies, map_carry, projects_in_place, unroll
from deeprnn.errors import ConfigError
from deeprnn.inference import Stepper, evaluate_input
from deeprnn.operators.dropout import locked_dropout
from deeprnn.operators.feedforward import FeedForward
from deeprnn.operators.projection import Projection
from deeprnn.operators.protocol import Carry, Transition


class Recurrence(nn.Module):
    """Deep input map ▸ ⊕ (one level, or stacked levels: sRNN) over time, as ``torch.nn.RNN``.

    ``forward(input, hx=None, lengths=None) -> (output, h_n)``:

    - input: (T, B, input_size) floats, or (T, B) token ids when the first level (or the
      input map) reads tokens; (B, T, …) with ``batch_first``; unbatched (T, …) also accepted;
    - hx: (levels, B, H) initial states, zeros if omitted; for levels whose carry is a tuple
      (``carries`` > 1, an LSTM's (h, c)), a tuple of such tensors, h first, as ``nn.LSTM``'s;
    - lengths: (B,) valid steps per sequence (0 … T), or ``mask``: (T, B) bools ((B, T) with
      ``batch_first``), true on a prefix of each sequence. Padded steps change nothing: their
      outputs are 0, h_n is the state after each sequence's last valid step, and no gradient
      flows through them;
    - output: (T, B, H) states of the top level; h_n: (levels, B, H), or a tuple as hx.

    Level l > 1 reads the new state of level l-1 (h^0_t = g(x_t)); all levels have the same
    hidden size H. Dropout (training only, one mask per sequence): ``input_dropout`` on what the
    first level reads, x_t or g(x_t) after an input map, or, where it reads token ids itself, the
    vectors U x_t its embedding looks up (AWD-LSTM's dropouti), never a bias; ``state_dropout``
    on each level's output states; ``recurrent_dropout`` on h_{t-1} inside ⊕.
    """

    def __init__(
        self,
        levels: Sequence[Transition],
        input_map: FeedForward | None = None,
        *,
        batch_first: bool = False,
        input_dropout: float = 0.0,
        state_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        levels = list(levels)
        if not levels:
            raise ValueError("a recurrence needs at least one transition level")
        hidden = levels[0].hidden_size
        expected_in = input_map.out_size if input_map is not None else levels[0].input_size
        for index, level in enumerate(levels):
            if level.hidden_size != hidden:
                raise ValueError(
                    f"stacked levels must share the hidden size: level 0 has {hidden}, "
                    f"level {index} has {level.hidden_size}"
                )
            if level.input_size != expected_in:
                raise ValueError(
                    f"level {index} reads inputs of size {level.input_size}, but gets {expected_in}"
                )
            if index > 0 and level.tokens:
                raise ValueError(f"level {index} reads the states below, not token ids")
            if level.carries != levels[0].carries:
                raise ValueError(
                    f"stacked levels must carry the same number of states: level 0 carries "
                    f"{levels[0].carries}, level {index} {level.carries}"
                )
            expected_in = hidden
        if input_map is not None and levels[0].tokens:
            raise ValueError("the first level reads the input map's output, not token ids")
        for name, p in (("state", state_dropout), ("recurrent", recurrent_dropout)):  # input: its setter
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name}_dropout must be in [0, 1), got {p}")
        self.levels = nn.ModuleList(levels)
        self.input_map = input_map
        self.batch_first = batch_first
        self.state_dropout, self.recurrent_dropout = state_dropout, recurrent_dropout
        self.hidden_size = hidden
        self.tokens = input_map.layers[0].tokens if input_map is not None else levels[0].tokens
        self.carries = levels[0].carries
        self.input_size = input_map.in_size if input_map is not None else levels[0].input_size
        self.input_dropout = input_dropout

    @property
    def input_dropout(self) -> float:
        return self._input_dropout

    @input_dropout.setter
    def input_dropout(self, p: float) -> None:
        # a first level that reads token ids drops the vectors its embedding looks up: the
        # embedding holds the probability (Projection.vector_dropout), written through from here
        if not 0.0 <= p < 1.0:
            raise ValueError(f"input_dropout must be in [0, 1), got {p}")
        if self.levels[0].tokens:
            embedding = self.token_embedding()
            if embedding is not None:
                embedding.vector_dropout = p
            elif p:
                raise ConfigError(
                    f"input_dropout: {type(self.levels[0]).__name__} reads token ids without an embedding"
                )
        self._input_dropout = float(p)

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    def token_embedding(self) -> Projection | None:
        """The embedding that reads the token ids, if there is one: the input map's first layer,
        else the first level's input projection (a level of your own may have none)."""
        if not self.tokens:
            return None
        if self.input_map is not None:
            return self.input_map.layers[0]
        embedding = getattr(self.levels[0], "input", None)
        return embedding if isinstance(embedding, Projection) and embedding.tokens else None

    def forward(
        self,
        input: torch.Tensor,
        hx: Carry | None = None,
        lengths: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Carry]:
        output, h_n, unbatched = self.run(input, hx, lengths, mask)
        # contiguous in time-major order, as nn.RNN's (the evaluation path's states are a view)
        return self.restore_layout(output.contiguous(), unbatched), self.restore_state(h_n, unbatched)

    def _states(self, index: int, level: Transition, x: torch.Tensor, h0: Carry) -> Carry:
        """One level's states (T+1, B, H) from its input x: in evaluation, x projected straight
        into the in-place loop's buffer (no dropout, nothing copied); else its projection u of x
        (with the input dropout on the first level's), and the recurrent dropout mask, run by
        the driver."""
        if not self.training and projects_in_place(level, x):
            return evaluate_input(level, x, h0)
        if index == 0 and not level.tokens:  # token ids: their embedding drops what it looks up
            x = locked_dropout(x, self.input_dropout, self.training)
        u = level.project(x)
        drop = None
        if self.training and self.recurrent_dropout > 0:
            keep = 1.0 - self.recurrent_dropout
            drop = u.new_empty(u.shape[1], self.hidden_size).bernoulli_(keep).div_(keep)
        return unroll(level, u, h0, drop)

    def run(
        self,
        input: torch.Tensor,
        hx: Carry | None = None,
        lengths: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Carry, bool]:
        """Like ``forward``, but the output stays time-major (T, B, H) and the batch dimension
        stays in place; the last value says whether the input was unbatched."""
        x, unbatched = self._check_input(input)
        steps, batch = x.shape[0], x.shape[1]
        dtype = next(self.levels[0].parameters()).dtype
        hx = self._check_state(hx, batch, unbatched, x.device, dtype)
        lengths = self._lengths(lengths, mask, steps, batch, x.device, self.batch_first and not unbatched)
        if lengths is not None:  # whatever the padding holds (even NaN) must not reach ⊕
            valid = torch.arange(steps, device=x.device).unsqueeze(1) < lengths
            x = torch.where(valid.view(valid.shape + (1,) * (x.dim() - 2)), x, 0)
        if self.tokens and checks_values():
            self.check_token_range(x)
        if self.input_map is not None:
            x = self.input_map(x)
        finals = []
        for index, level in enumerate(self.levels):
            states = self._states(index, level, x, map_carry(lambda part, i=index: part[i], hx))
            seen = states if self.carries == 1 else states[0]  # h, what the level above reads
            if lengths is None:
                output, final = seen[1:], map_carry(lambda part: part[-1], states)
            else:
                output = torch.where(valid.unsqueeze(-1), seen[1:], 0.0)
                rows = torch.arange(batch, device=x.device)
                final = map_carry(lambda part, r=rows: part[lengths, r], states)
            finals.append(final)
            x = locked_dropout(output, self.state_dropout, self.training)
        if self.carries == 1:
            return x, torch.stack(finals), unbatched
        return x, tuple(torch.stack(parts) for parts in zip(*finals, strict=True)), unbatched

    def step(self, x: torch.Tensor, hx: Carry | None = None) -> tuple[torch.Tensor, Carry]:
        """One step of every level, for generation: x (B, …) one step of input, hx (levels, B, H)
        (or a tuple, as ``forward``'s; zeros if omitted) -> (h_t of the top level (B, H), the
        new hx).

        ``forward``'s numbers over one step in evaluation mode (up to rounding: it may take the
        fast path), with none of its per-call work (layouts, lengths, the fast path's set-up):
        a sampler calls it once a step."""
        embedding = self.token_embedding()
        types = embedding.type_dropout if embedding is not None else 0.0
        if self.training and max(self.input_dropout, self.state_dropout, self.recurrent_dropout, types) > 0:
            raise RuntimeError("step computes the model without dropout: call .eval() first")
        return self.advance(*self._check_step(x, hx))

    def advance(self, x: torch.Tensor, hx: Carry) -> tuple[torch.Tensor, Carry]:
        """:meth:`step` without its checks, for a caller that made them once (the sampler): x
        (1, B, …) one step as a time-major sequence, hx (levels, B, H) or a tuple."""
        if self.input_map is not None:
            x = self.input_map(x)
        new = []
        for index, level in enumerate(self.levels):
            carry = level.step(level.project(x)[0], map_carry(lambda part, i=index: part[i], hx))
            new.append(carry)
            x = (carry if self.carries == 1 else carry[0]).unsqueeze(0)
        if self.carries == 1:
            return x[0], torch.stack(new)
        return x[0], tuple(torch.stack(parts) for parts in zip(*new, strict=True))

    def stepper(self, batch: int = 1) -> Callable[[torch.Tensor, Carry], tuple[torch.Tensor, Carry]]:
        """:meth:`advance` for a run of calls without gradients (a sampler's): where every level
        takes the fast path, each steps in place in preallocated buffers
        (:class:`~deeprnn.inference.Stepper`), and the carry it returns is a list of the levels'
        (B, H) states, overwritten by the call after next; elsewhere, :meth:`advance` itself.
        Build it after the last change to the weights."""
        if not all(fast_path_applies(level) for level in self.levels):
            return self.advance
        input_map, levels = self.input_map, [(level.project, Stepper(level, batch)) for level in self.levels]

        def advance(x: torch.Tensor, hx: Carry) -> tuple[torch.Tensor, Carry]:
            if input_map is not None:
                x = input_map(x)
            new = []
            for (project, stepper), h in zip(levels, hx, strict=True):
                new.append(stepper(project(x)[0], h))
                x = new[-1].unsqueeze(0)
            return new[-1], new

        return advance

    def _check_step(self, x: torch.Tensor, hx: Carry | None) -> tuple[torch.Tensor, Carry]:
        """One step of input as a sequence of one step (1, B, …), and hx checked as forward's."""
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != (
            () if self.tokens else (self.input_size,)
        ):
            kind = "(B,) token ids" if self.tokens else f"(B, {self.input_size}) floats"
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"step reads one step of input, {kind}; got {shape}")
        sequence, _ = self._check_input(x.unsqueeze(1 if self.batch_first else 0))
        if self.tokens:
            self.check_token_range(sequence)
        dtype = next(self.levels[0].parameters()).dtype
        return sequence, self._check_state(hx, x.shape[0], False, x.device, dtype)

    @staticmethod
    def restore_state(h_n: Carry, unbatched: bool) -> Carry:
        """h_n (levels, B, H), or a tuple of them, without the batch axis of an unbatched input."""
        return map_carry(lambda part: part.squeeze(1), h_n) if unbatched else h_n

    def restore_layout(self, output: torch.Tensor, unbatched: bool) -> torch.Tensor:
        """Time-major (T, B, …) back to the caller's layout (batch_first, or unbatched)."""
        if unbatched:
            return output.squeeze(1)
        return output.transpose(0, 1) if self.batch_first else output

    def _check_input(self, input: torch.Tensor) -> tuple[torch.Tensor, bool]:
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
        if self.tokens:
            if input.dtype not in (torch.int64, torch.int32):
                raise TypeError(f"this model reads token ids: expected an int64 tensor, got {input.dtype}")
            if input.dim() not in (1, 2):
                raise ValueError(
                    f"token input must be (T, B), (B, T) with batch_first, or (T,); "
                    f"got shape {tuple(input.shape)}"
                )
            feature_dims = 0
        else:
            if not input.is_floating_point():
                raise TypeError(f"expected a floating-point input, got {input.dtype}")
            if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
                raise ValueError(
                    f"input must be (T, B, {self.input_size}) ((B, T, {self.input_size}) with "
                    f"batch_first) or unbatched (T, {self.input_size}); got {tuple(input.shape)}"
                )
            feature_dims = 1
        unbatched = input.dim() == 1 + feature_dims
        if unbatched:
            return input.unsqueeze(1), True
        return (input.transpose(0, 1) if self.batch_first else input), False

    def check_token_range(self, x: torch.Tensor) -> None:
        """Refuse token ids outside [0, input_size) (it waits for the device to tell)."""
        if x.numel() and (x.min() < 0 or x.max() >= self.input_size):
            raise ValueError(
                f"token ids must lie in [0, {self.input_size}) at valid steps; got values in "
                f"[{int(x.min())}, {int(x.max())}]"
            )

    def _check_state(self, hx, batch, unbatched, device, dtype) -> Carry:
        shape = (self.num_levels, batch, self.hidden_size)
        if hx is None:
            zeros = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(self.carries)]
            return zeros[0] if self.carries == 1 else tuple(zeros)
        if self.carries > 1 and not (isinstance(hx, tuple) and len(hx) == self.carries):
            raise ValueError(f"hx must be a tuple of {self.carries} tensors (h first), as the levels carry")
        if self.carries == 1 and not isinstance(hx, torch.Tensor):
            raise TypeError(f"hx must be a tensor of shape (levels, batch, hidden), got {type(hx).__name__}")
        if unbatched:
            hx = map_carry(lambda part: part.unsqueeze(1) if part.dim() == 2 else part, hx)
        kind = torch.device(device).type  # under autocast, its h_n (of autocast's dtype) is taken back
        taken = {dtype, torch.get_autocast_dtype(kind)} if torch.is_autocast_enabled(kind) else {dtype}
        for part in (hx,) if self.carries == 1 else hx:
            if tuple(part.shape) != shape:
                raise ValueError(
                    f"hx must have shape (levels, batch, hidden) = {shape}, got {tuple(part.shape)}"
                )
            if part.dtype not in taken:
                also = "" if len(taken) == 1 else " (or autocast's, under autocast)"
                raise TypeError(f"hx must have the parameters' dtype {dtype}{also}, got {part.dtype}")
        return map_carry(lambda part: part.to(dtype), hx)

    @staticmethod
    def _lengths(lengths, mask, steps, batch, device, batch_first=False) -> torch.Tensor | None:
        if lengths is not None and mask is not None:
            raise ValueError("give either lengths or mask, not both")
        if mask is not None:
            layout, shape = ("(B, T)", (batch, steps)) if batch_first else ("(T, B)", (steps, batch))
            if mask.dtype != torch.bool or tuple(mask.shape) != shape:
                raise ValueError(
                    f"mask must be a bool tensor of shape {layout} = {shape}, "
                    f"got {mask.dtype} {tuple(mask.shape)}"
                )
            mask = mask.t() if batch_first else mask
            lengths = mask.sum(0)
            prefix = torch.arange(steps, device=mask.device).unsqueeze(1) < lengths
            if checks_values() and not torch.equal(prefix, mask):
                raise ValueError("mask must be true on a prefix of each sequence (padding at the end)")
        if lengths is None:
            return None
        lengths = torch.as_tensor(lengths)
        if lengths.dtype not in (torch.int64, torch.int32) or tuple(lengths.shape) != (batch,):
            raise ValueError(
                f"lengths must be an integer tensor of shape (batch,) = ({batch},), "
                f"got {lengths.dtype} {tuple(lengths.shape)}"
            )
        if lengths.numel() and checks_values() and (lengths.min() < 0 or lengths.max() > steps):
            raise ValueError(
                f"lengths must lie in [0, T={steps}]; got values in "
                f"[{int(lengths.min())}, {int(lengths.max())}]"
            )
        return lengths.to(device=device, dtype=torch.int64)
