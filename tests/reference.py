"""A plain, slow, obviously-correct reading of the paper's equations (docs/paper.md §2).

It loops over every sequence and every step on its own, one matrix-vector product at a time,
and reads only the model's parameter tensors: none of the library's step, unroll or unit code.
Padding is handled the obvious way: a sequence is simply not run past its length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def unit(spec: str, a: torch.Tensor, rho: torch.Tensor | None) -> torch.Tensor:
    kind, _, pieces = spec.partition(":")
    if kind == "sigmoid":
        return 1.0 / (1.0 + torch.exp(-a))
    if kind == "tanh":
        return (torch.exp(a) - torch.exp(-a)) / (torch.exp(a) + torch.exp(-a))
    if kind == "relu":
        return torch.where(a > 0, a, torch.zeros_like(a))
    if kind == "linear":
        return a
    k = int(pieces)
    groups = a.reshape(-1, k)
    if kind == "maxout":
        return groups.max(dim=1).values
    assert kind == "lp"
    p = 1.0 + torch.log1p(torch.exp(rho))
    return (groups.abs().pow(p[:, None]).mean(dim=1)).pow(1.0 / p)


def _rho(u) -> torch.Tensor | None:
    return getattr(u, "rho", None)


def affine(projection, x: torch.Tensor, vocab: int | None = None) -> torch.Tensor:
    """U x + b, with x a token id turned into a one-hot vector when the projection reads tokens."""
    if projection.tokens:
        onehot = F.one_hot(x, vocab).to(projection.weight.dtype)
        y = projection.weight.t() @ onehot
    else:
        y = projection.weight @ x
    return y if projection.bias is None else y + projection.bias


def transition_step(
    level, x: torch.Tensor, h: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """z_1 = φ(W_1 h + U_1 x + b_1); then DT: z_l = φ(W_l z_{l-1} + b_l), or DT(S):
    z_l = φ(W_l z_{l-1} + U_l x + S_l h + b_l); h_t = z_L. With a recurrent dropout ``mask``,
    h ⊙ mask wherever h is read (W_1 h and S_l h)."""
    if mask is not None:
        h = h * mask
    u = affine(level.input, x, level.input_size)
    sizes = level.pre_sizes
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    W1 = level.recurrent_weight[: sizes[0]]
    units = level.units
    z = unit(units[0].spec, W1 @ h + u[: sizes[0]], _rho(units[0]))
    for layer in range(1, len(sizes)):
        lo, hi = starts[layer], starts[layer] + sizes[layer]
        a = level.layer_weights[layer - 1] @ z
        if level.shortcut:
            a = a + u[lo:hi] + level.recurrent_weight[lo:hi] @ h
        elif level.layer_bias is not None:
            a = a + level.layer_bias[lo - sizes[0] : hi - sizes[0]]
        z = unit(units[layer].spec, a, _rho(units[layer]))
    return z


def output_step(output, h: torch.Tensor) -> torch.Tensor:
    o = h
    for layer, u in zip(output.hidden.layers, output.hidden.units, strict=True):
        o = unit(u.spec, affine(layer, o), _rho(u))
    return affine(output.logits, o)


def reference_forward(model, x: torch.Tensor, h0: torch.Tensor, lengths: list[int]):
    """x time-major (T, B, in) or (T, B) ids; returns ([logits (len_b, out)] per sequence, h_n)."""
    rec = model.recurrence
    logits, finals = [], []
    for b, length in enumerate(lengths):
        states = [h0[level, b] for level in range(rec.num_levels)]
        rows = []
        for t in range(length):
            inp = x[t, b]
            if rec.input_map is not None:
                for i, (layer, u) in enumerate(zip(rec.input_map.layers, rec.input_map.units, strict=True)):
                    inp = unit(u.spec, affine(layer, inp, rec.input_size if i == 0 else None), _rho(u))
            for index, level in enumerate(rec.levels):
                states[index] = transition_step(level, inp, states[index])
                inp = states[index]
            rows.append(output_step(model.output, inp))
        width = model.config.output_size
        logits.append(torch.stack(rows) if rows else h0.new_zeros(0, width))
        finals.append(torch.stack(states))
    return logits, torch.stack(finals, dim=1)
