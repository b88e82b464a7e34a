"""The NADE head: the keys of a frame as an autoregressive distribution, not independent ones
(RNN-NADE, Boulanger-Lewandowski, Bengio and Vincent, 2012; docs/paper.md §5).

With the K keys in a fixed order (low to high by default), p(v) = ∏_k p(v_k | v_<k), where

    a_k = c + Σ_{j<k} v_j W_j                  (a_1 = c; H hidden units)
    p(v_k = 1 | v_<k) = σ(b_k + V_k · σ(a_k))

W, V (K × H) are shared across time; the biases b (K) and c (H) are what ▷ gives at each step,
▷ h_t = [b_t ; c_t], so that the recurrence conditions every key. The NLL is exact, and computed
for all keys at once (no loop over them): a_k changes only after a key that is on, so a frame of
S notes needs σ(a) S + 1 times, not K (:meth:`NADE.key_logits`). Sampling draws the keys one
after another, in S + 1 rounds (:meth:`NADE.sample`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deeprnn.errors import ConfigError

ORDERS = ("ascending", "descending")  # low to high, high to low
_ELEMENTS_PER_CHUNK = 1 << 23  # stretches × (keys + hidden units) scored at once, at most


def check(keys: int, hidden: int, order: str) -> None:
    """A ConfigError unless these make a NADE."""
    if keys < 1 or hidden < 1:
        raise ConfigError(f"a NADE needs at least one key and one hidden unit, got {keys} and {hidden}")
    if order not in ORDERS:
        raise ConfigError(f"nade_order must be one of {', '.join(ORDERS)}, got {order!r}")


class NADE(nn.Module):
    """Multi-label frames scored and sampled key by key: targets are (…, K) 0/1 floats."""

    name = "nade"

    def __init__(self, keys: int, hidden: int, order: str = "ascending") -> None:
        super().__init__()
        check(keys, hidden, order)
        self.keys, self.hidden, self.order = keys, hidden, order
        # row k of each belongs to key k (in pitch order, whatever the NADE's order)
        self.W = nn.Parameter(torch.randn(keys, hidden) / keys**0.5)  # what v_k adds to a
        self.V = nn.Parameter(torch.randn(keys, hidden) * 0.01)  # how the hidden units score v_k

    @property
    def logit_size(self) -> int:
        """What ▷ must give per step: b (K), then c (H)."""
        return self.keys + self.hidden

    def key_logits(self, logits: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """The logit of p(v_k = 1 | v_<k) for every key k of the 0/1 ``frames``:
        (…, K + H), (…, K) -> (…, K).

        a_k only changes after a key that is on, so it takes S + 1 values in a frame of S notes,
        a_s = c + W_1 + … + W_s over its first s notes: the hidden units are computed once per
        stretch of keys between two notes, and each key reads its stretch's (the same numbers as
        a_k key by key, at a fraction of the work). The frames are taken in groups of equal S,
        so that a group's stretches are one dense block, with no padding."""
        b, c = self._biases(logits, frames)
        shape = b.shape
        b, c = b.reshape(-1, self.keys), c.reshape(-1, self.hidden)
        on = self._ordered(frames).reshape(-1, self.keys) > 0.5
        notes = on.sum(-1)
        order = notes.argsort(stable=True)  # the frames by their number of notes
        on, c = on[order], c[order]
        stretch = on.cumsum(-1) - on.long()  # notes before key k: its stretch
        played = on.nonzero()[:, 1]  # the keys of every note, frame after frame, low keys first
        w, v = self._weights()
        chunks = [
            (n, s) for s, count in enumerate(torch.bincount(notes).tolist()) for n in self._chunks(count, s)
        ]
        if not chunks:  # no frames
            return self._ordered(b.view(shape))
        sizes = [n for n, _ in chunks]
        parts = [
            _stretch_scores(c_n, keys_n.view(n, s), stretch_n, w, v)
            for (n, s), c_n, keys_n, stretch_n in zip(
                chunks,
                c.split(sizes),
                played.split([n * s for n, s in chunks]),
                stretch.split(sizes),
                strict=True,
            )
        ]
        scores = b.new_empty(b.shape).index_copy(0, order, torch.cat(parts))  # back in the frames' order
        return self._ordered((b + scores).view(shape))

    def nll(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Exact negative log-likelihood of each frame, in nats: (…, K + H), (…, K) 0/1 -> (…).
        It neither shifts nor masks (see :meth:`deeprnn.DeepRNN.loss`)."""
        key_logits = self.key_logits(logits, targets)
        return F.binary_cross_entropy_with_logits(
            key_logits, targets.to(key_logits.dtype), reduction="none"
        ).sum(-1)

    def _chunks(self, frames: int, notes: int) -> list[int]:
        """``frames`` of ``notes`` notes each, in chunks whose stretches hold at most
        _ELEMENTS_PER_CHUNK of the hidden units' and the keys' numbers."""
        most = max(1, _ELEMENTS_PER_CHUNK // ((notes + 1) * (self.keys + self.hidden)))
        return [min(most, frames - start) for start in range(0, frames, most)]

    forward = nll

    def sample(
        self, logits: torch.Tensor, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        """One frame per logit vector, each key drawn given the keys drawn before it; the
        temperature divides each key's logit. (…, K + H) -> (…, K) 0/1.

        Key k is on when its uniform draw falls below p(v_k = 1 | v_<k), and a_k changes only
        after a key that is on: from the key after the last note, every key's probability is
        computed at once, and the first key whose draw falls below it is the next note (the
        keys between are off). A frame of S notes takes S + 1 rounds, not K."""
        b, c = logits.split([self.keys, self.hidden], -1)
        shape = b.shape
        w, u = self._weights()
        b, a = (
            self._ordered(b).reshape(-1, self.keys).to(u.dtype),
            c.reshape(-1, self.hidden).to(u.dtype, copy=True),
        )
        draws = torch.rand(b.shape, generator=generator, dtype=b.dtype, device=b.device)
        keys = torch.arange(self.keys, device=b.device)
        frames, rows = torch.zeros_like(b), torch.arange(b.shape[0], device=b.device)
        start = torch.zeros_like(rows)  # the first key each frame has still to draw
        while rows.numel():
            p = torch.sigmoid((b[rows] + torch.sigmoid(a[rows]) @ u.T) / temperature)
            on = (draws[rows] < p) & (keys >= start[rows].unsqueeze(-1))
            found = on.any(-1)
            rows, note = rows[found], on[found].to(torch.uint8).argmax(-1)  # the first key on
            frames[rows, note] = 1.0
            a[rows] += w[note]
            start[rows] = note + 1
        return self._ordered(frames.view(shape))

    def _ordered(self, keys: torch.Tensor) -> torch.Tensor:
        """Keys (…, K) from pitch order into the NADE's order, or back (the same flip)."""
        return keys.flip(-1) if self.order == "descending" else keys

    def _weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W and V with their rows (one per key, in pitch order) in the NADE's order."""
        if self.order == "descending":
            return self.W.flip(0), self.V.flip(0)
        return self.W, self.V

    def _biases(self, logits: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """b (in the NADE's order) and c of ``logits``, once their shape and the frames' are checked."""
        if logits.shape[-1] != self.logit_size or frames.shape != logits.shape[:-1] + (self.keys,):
            raise ValueError(
                f"a NADE of {self.keys} keys and {self.hidden} hidden units reads logits (…, "
                f"{self.logit_size}) and frames (…, {self.keys}) with the same leading shape; got "
                f"{tuple(logits.shape)} and {tuple(frames.shape)}"
            )
        b, c = logits.split([self.keys, self.hidden], -1)
        return self._ordered(b), c

    def extra_repr(self) -> str:
        return f"keys={self.keys}, hidden={self.hidden}, order={self.order}"


def _stretch_scores(
    c: torch.Tensor, keys: torch.Tensor, stretch: torch.Tensor, w: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """V_k · σ(a) of the stretch each key k reads, for n frames of S notes each: c (n, H), the
    keys of their notes (n, S), the stretch of each key (n, K) -> (n, K). The stretches lie
    stretch-major, (S + 1, n, H), so that a_s = c + W_1 + … + W_s is one product for all s."""
    terms = torch.cat([c[None], w[keys.T]])
    partial_sums = torch.ones(len(terms), len(terms), dtype=w.dtype, device=w.device).tril()
    a = (partial_sums @ terms.flatten(1)).view_as(terms)
    return (torch.sigmoid(a) @ v.T).gather(0, stretch[None])[0]
