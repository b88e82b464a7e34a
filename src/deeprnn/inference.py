"""The fast path where no gradient is wanted: a deep transition's steps computed in place.

Evaluation, scoring and sampling need only the states, so nothing is kept for a backward pass
and nothing is copied: each step's pre-activations of every layer are computed where its input
projections lie, one product for the layers that read h_{t-1}, one product for each later
layer, each unit in place. :func:`evaluate` runs a whole sequence over a copy of u
(:func:`deeprnn.driver.unroll` chooses it under ``torch.no_grad``), :func:`evaluate_input` over
U x_t + b projected straight into its buffer (a model in evaluation mode chooses it);
:class:`Stepper` runs a step a call in two preallocated rows, for a sampler. Their results
equal the plain loop's (``tests/test_models.py``).
"""

from __future__ import annotations

import torch

from deeprnn.fused import (
    _STEPS_TO_TRANSPOSE,
    _grid,
    _LpPool,
    _Plan,
    _reordered,
    _weights_in_loop_order,
    plan_of,
)
from deeprnn.operators.transitions import DeepTransition
from deeprnn.operators.units import ELEMENTWISE, POOLING


def evaluate(
    plan: _Plan, u: torch.Tensor, h0: torch.Tensor, mask: torch.Tensor | None, *params: torch.Tensor
) -> torch.Tensor:
    """:class:`~deeprnn.fused.FusedUnroll`'s states where no gradient is wanted (evaluation,
    scoring, priming a sampler): every pre-activation is computed in place, over a copy of u,
    so that a step is one product and one unit per layer (the layers that read h_{t-1}: one
    product for all), with no copy and nothing kept for a backward pass. The result is a view
    of the buffer's state columns, (T+1, B, H)."""
    run = _in_place_run(plan, u.shape[0], h0, params)
    if plan.pooled_layers:  # u in the loop's order, in the one pass that copies it in
        _reordered(plan, u, 2, range(len(plan.kinds)), True, out=run.pre[1:])
    else:
        run.pre[1:] = u
    return run.unroll(h0, mask)


def evaluate_input(cell: DeepTransition, x: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """:func:`evaluate` of the input x itself, for a cell without pooling layers: ``cell.project``
    writes U x_t + b straight into the buffer's rows, so u is neither built nor copied in."""
    plan = plan_of(cell)
    if plan.pooled_layers:  # the loop reads their pieces reordered: evaluate(cell.project(x)) does that
        raise ValueError("evaluate_input takes a cell without pooling layers; use evaluate on its projection")
    run = _in_place_run(plan, x.shape[0], h0, (cell.recurrent_weight, *cell.layer_weights))
    cell.project(x, out=run.pre[1:])
    return run.unroll(h0, None)


def _in_place_run(plan: _Plan, steps: int, h0: torch.Tensor, params) -> _InPlaceSteps:
    """The buffer and steps of a sequence of ``steps`` steps from h0 (B, H)."""
    depth = len(plan.kinds)
    weights = _weights_in_loop_order(plan, *params[:depth])
    transpose = steps >= _STEPS_TO_TRANSPOSE
    return _InPlaceSteps(plan, steps + 1, h0.shape[0], h0.shape[-1], weights, params[depth:], transpose)


class Stepper:
    """A transition's steps one call at a time without gradients, for a sampler:
    ``stepper(u_t, h_{t-1}) -> h_t``, u_t (B, P) as ``cell.project`` gives it. Each call is
    :func:`evaluate`'s step, in two preallocated rows used in turn, so h_t is overwritten by the
    call after next (clone it to keep it). It reads the weights once: build a new one after they
    change."""

    def __init__(self, cell: DeepTransition, batch: int) -> None:
        plan = plan_of(cell)
        weights = [w.detach() for w in (cell.recurrent_weight, *cell.layer_weights)]
        rhos = [unit.rho.detach() for unit in cell.units if unit.kind == "lp"]
        self.run = _InPlaceSteps(
            plan, 2, batch, cell.hidden_size, _weights_in_loop_order(plan, *weights), rhos
        )
        self.order = _loop_columns(plan, weights[0].device)  # None: the model's order is the loop's
        self.row = 0

    @torch.no_grad()  # in place in its own rows: no autograd history, whatever the caller's mode
    def __call__(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        self.row ^= 1
        self.run.pre[self.row].copy_(u if self.order is None else u[:, self.order])
        self.run.step(self.row, h)
        return self.run.state_steps[self.row]


class _InPlaceSteps:
    """The steps of :func:`evaluate` and :class:`Stepper`, over the rows of one buffer ``work``
    (rows, B, C): a row holds one step's pre-activations of every layer (``pre``, in the loop's
    order), then its h (``states``: the last layer's columns, or after them where that layer
    pools). ``step(t, h)`` computes row t from h = h_{t-1} in place: one product for the layers
    that read h_{t-1}, then one product for each later layer, and each layer's unit."""

    def __init__(
        self, plan: _Plan, rows: int, batch: int, hidden: int, weights: list, rhos, transpose: bool = True
    ) -> None:
        like, depth = weights[0], len(plan.kinds)
        summed, pooled_last = sum(plan.pre_sizes), plan.kinds[-1] in POOLING
        work = like.new_empty(rows, batch, summed + (hidden if pooled_last else 0))
        self.pre, self.states = work[..., :summed], work[..., -hidden:]
        layers = self.pre.split(plan.pre_sizes, -1)
        pre_steps = [p.unbind(0) for p in layers]
        groups = {i: layers[i].unflatten(-1, _grid(plan, i, batch)[1:]).unbind(0) for i in plan.pooled_layers}
        # z_l at each step: an element-wise unit's is its pre-activation (in place); a pooling
        # layer's is h_t (the last layer) or one buffer that every step reuses (the others)
        self.state_steps = self.states.unbind(0) if pooled_last else pre_steps[-1]
        outputs = [
            pre_steps[layer]
            if kind not in POOLING
            else self.state_steps
            if layer == depth - 1
            else [like.new_empty(batch, plan.widths[layer])] * rows
            for layer, kind in enumerate(plan.kinds)
        ]
        self.reads_h, *between = (w.t().contiguous() if transpose else w.t() for w in weights)
        self.whole = pre_steps[0] if plan.reading == 1 else self.pre.unbind(0)
        lp_pool = _LpPool(plan, rhos, like)
        scratch = like.new_empty(batch * max(plan.pre_sizes))  # an L_p layer's x^p, at every step
        powers = {i: scratch[: batch * plan.pre_sizes[i]].view(_grid(plan, i, batch)) for i in plan.lp_layers}

        def pool(layer: int, pieces: torch.Tensor, out: torch.Tensor) -> None:
            lp_pool(layer, pieces, out, powers[layer])

        units = [_unit_in_place(plan, layer, pool, pre_steps, groups, outputs) for layer in range(depth)]
        self.first = units[0]
        self.later = list(zip(pre_steps[1:], outputs[:-1], between, units[1:], strict=True))

    def unroll(self, h0: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Every row after the first from h0 (row 0), each step reading the row before
        (times ``mask``, if given): the states, (rows, B, H)."""
        self.states[0] = h0
        h = self.state_steps
        for t in range(1, len(h)):
            self.step(t, h[t - 1] if mask is None else h[t - 1] * mask)
        return self.states

    def step(self, t: int, h: torch.Tensor) -> None:
        self.whole[t].addmm_(h, self.reads_h)
        self.first(t)
        for pre, left, weight, unit in self.later:
            pre[t].addmm_(left[t], weight)
            unit(t)


def _unit_in_place(plan: _Plan, layer: int, pool, pre_steps, groups, outputs):
    """The unit of ``layer`` at step t, as ``unit(t)``: in place on its pre-activation, or
    pooled from its pieces into its output (L_p by ``pool(layer, pieces, out)``)."""
    kind, out = plan.kinds[layer], outputs[layer]
    if kind == "lp":
        pieces = groups[layer]
        return lambda t: pool(layer, pieces[t], out[t])
    if kind == "maxout":
        pieces = groups[layer]
        return lambda t: torch.amax(pieces[t], -2, out=out[t])
    inplace, pre = ELEMENTWISE[kind].inplace, pre_steps[layer]
    return lambda t: inplace(pre[t])


def _loop_columns(plan: _Plan, device: torch.device) -> torch.Tensor | None:
    """The model's column of each of the loop's pre-activation columns (None: the same order)."""
    if not plan.pooled_layers:
        return None
    columns = torch.arange(sum(plan.pre_sizes), device=device).view(1, 1, -1)
    return _reordered(plan, columns, 2, range(len(plan.kinds)), True).view(-1)
