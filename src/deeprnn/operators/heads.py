"""Heads: the distribution that the logits of ▷ parameterise, its loss and its samples.

- :class:`Bernoulli`: independent Bernoulli variables (music: 88 piano keys per frame); the NLL
  of a frame is the binary cross-entropy summed over the keys (docs/paper.md §3);
- :class:`Categorical`: a softmax over a vocabulary (characters, words); the NLL of a step is
  the cross-entropy of the target token;
- :class:`~deeprnn.operators.nade.NADE`: the keys of a frame one after another (RNN-NADE).

Each reads ``logit_size`` values of ▷ per step and samples with a temperature that divides its
logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deeprnn.errors import ConfigError
from deeprnn.operators import nade
from deeprnn.operators.nade import NADE


class Bernoulli:
    """Multi-label frames: targets are (…, K) 0/1 floats."""

    name = "bernoulli"

    def __init__(self, size: int) -> None:
        self.logit_size = size

    def nll(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of each frame, in nats: (…, K) -> (…). It neither shifts
        nor masks: ``logits`` must already be the predictions of ``targets`` (see
        :meth:`deeprnn.DeepRNN.loss`)."""
        if targets.shape != logits.shape:
            raise ValueError(
                f"targets must have the logits' shape {tuple(logits.shape)}, got {tuple(targets.shape)}"
            )
        targets = targets.to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1)

    def sample(
        self, logits: torch.Tensor, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        return torch.bernoulli(torch.sigmoid(logits / temperature), generator=generator)


class Categorical:
    """One token per step: targets are (…) integer ids."""

    name = "categorical"

    def __init__(self, size: int) -> None:
        self.logit_size = size

    def nll(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of each token, in nats: logits (…, V), targets (…) -> (…).
        It neither shifts nor masks (see :meth:`deeprnn.DeepRNN.loss`)."""
        if targets.shape != logits.shape[:-1]:
            raise ValueError(
                f"targets must have shape {tuple(logits.shape[:-1])} (the logits' without the "
                f"vocabulary), got {tuple(targets.shape)}"
            )
        flat = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
        return flat.view(targets.shape)

    def sample(
        self,
        logits: torch.Tensor,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        probs = torch.softmax(logits / temperature, dim=-1)
        flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
        return flat.view(probs.shape[:-1])


HEADS = {"bernoulli": Bernoulli, "categorical": Categorical, "nade": NADE}
Head = Bernoulli | Categorical | NADE


def make_head(name: str, size: int, nade_hidden: int, nade_order: str) -> Head:
    """The head called ``name`` over ``size`` keys or tokens (a NADE with ``nade_hidden`` units,
    reading the keys in ``nade_order``)."""
    check_head(name, size, nade_hidden, nade_order)
    return NADE(size, nade_hidden, nade_order) if name == "nade" else HEADS[name](size)


def check_head(name: str, size: int, nade_hidden: int, nade_order: str) -> None:
    """A ConfigError unless :func:`make_head` can make this head (it draws no random numbers)."""
    if name not in HEADS:
        raise ConfigError(f"unknown head {name!r}; expected one of: {', '.join(HEADS)}")
    if name == "nade":
        nade.check(size, nade_hidden, nade_order)
