"""The affine map that reads an input: a dense matrix, or an embedding for token ids; and the
map that scores tokens through that embedding (tied weights).

Reading token ids through an embedding is exactly the product of the one-hot input with a
matrix (the paper's U for words and characters), without building the one-hot vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deeprnn.errors import ConfigError
from deeprnn.operators.dropout import locked_dropout, type_dropout


class Projection(nn.Module):
    """x ↦ U x (+ b): ``x`` is (..., in_size) floats, or (...) token ids when ``tokens``.

    Dropout on token ids (training only, 0 unless set): ``type_dropout``, the probability with
    which each token type's row of U is dropped for a whole call (embedding dropout); and
    ``vector_dropout``, with which each coordinate of U x is dropped, one mask per sequence (x's
    first axis is time: locked dropout, before the bias is added)."""

    def __init__(self, in_size: int, out_size: int, *, tokens: bool = False, bias: bool = True):
        super().__init__()
        if in_size < 1 or out_size < 1:
            raise ConfigError(f"a projection needs positive sizes, got {in_size} -> {out_size}")
        self.in_size, self.out_size, self.tokens = in_size, out_size, tokens
        self._type_dropout = self._vector_dropout = 0.0
        shape = (in_size, out_size) if tokens else (out_size, in_size)
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.zeros(out_size)) if bias else None
        nn.init.normal_(self.weight, std=0.1)

    @property
    def type_dropout(self) -> float:
        return self._type_dropout

    @type_dropout.setter
    def type_dropout(self, p: float) -> None:
        self._type_dropout = self._checked(p, "a token type")

    @property
    def vector_dropout(self) -> float:
        return self._vector_dropout

    @vector_dropout.setter
    def vector_dropout(self, p: float) -> None:
        self._vector_dropout = self._checked(p, "a coordinate of the looked-up vectors")

    def _checked(self, p: float, what: str) -> float:
        if p and not self.tokens:
            raise ConfigError(f"dropping {what} needs an embedding: this projection reads vectors")
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"the probability of dropping {what} must be in [0, 1), got {p}")
        return float(p)

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """U x (+ b); written into ``out`` (x's leading shape, ``out_size``), a view whose
        leading axes fold into rows (as columns of the evaluation path's buffer), when given."""
        if out is not None:
            return self._into(x, out)
        if not self.tokens:
            if x.dim() <= 2:
                return F.linear(x, self.weight, self.bias)
            # one product over the leading axes folded (a view where their strides allow, as for
            # the evaluation path's states, columns of a wider buffer): F.linear folds only a
            # contiguous input, and takes a slower matmul and a separate bias add otherwise
            return F.linear(x.flatten(0, -2), self.weight, self.bias).unflatten(0, x.shape[:-1])
        # a fresh tensor, which its backward does not read (in place: the bias must have the
        # weight's dtype, as module.to() gives it)
        y = F.embedding(x, type_dropout(self.weight, self.type_dropout, self.training))
        y = locked_dropout(y, self.vector_dropout, self.training)
        return y if self.bias is None else y.add_(self.bias)

    def _into(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        rows = out.flatten(0, -2)  # a view: the product and the gather write into the buffer itself
        if self.tokens:
            torch.index_select(self.weight, 0, x.flatten(), out=rows)
            if self.bias is not None:
                rows.add_(self.bias)
        elif self.bias is None:
            torch.mm(x.flatten(0, -2), self.weight.t(), out=rows)
        else:
            torch.addmm(self.bias, x.flatten(0, -2), self.weight.t(), out=rows)
        return out

    def extra_repr(self) -> str:
        kind = "tokens" if self.tokens else "dense"
        dropout = "".join(
            f", {name}={p}"
            for name, p in (("type_dropout", self.type_dropout), ("vector_dropout", self.vector_dropout))
            if p
        )
        return f"{self.in_size} -> {self.out_size}, {kind}, bias={self.bias is not None}{dropout}"


class TiedProjection(nn.Module):
    """o ↦ E[:, :k] o + c: the logits of every token read through the first k columns of an
    input embedding E (vocab, ≥ k), so that one matrix both reads a token and scores it (weight
    tying: Press & Wolf 2017, Inan et al. 2017). E stays the embedding's own parameter: nothing
    is copied, and the state dict holds it once."""

    def __init__(self, embedding: Projection, in_size: int, out_size: int, *, bias: bool = True) -> None:
        super().__init__()
        if not embedding.tokens:
            raise ConfigError("tied weights score tokens through an embedding: this projection reads vectors")
        if not 1 <= in_size <= embedding.out_size or out_size != embedding.in_size:
            raise ConfigError(
                f"tied weights: the embedding maps {embedding.in_size} tokens to {embedding.out_size} "
                f"columns; the logits would read {in_size} and score {out_size}"
            )
        object.__setattr__(self, "embedding", embedding)  # not a submodule: its owner holds it
        self.in_size, self.out_size = in_size, out_size
        self.bias = nn.Parameter(torch.zeros(self.out_size)) if bias else None

    @property
    def weight(self) -> torch.Tensor:
        """E[:, :k], (vocab, k): a view of the embedding's parameter."""
        return self.embedding.weight[:, : self.in_size]

    def forward(self, o: torch.Tensor) -> torch.Tensor:
        return F.linear(o, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_size} -> {self.out_size}, tied to the input embedding, bias={self.bias is not None}"
