"""The fast path of the driver: a deep transition run over time with hand-written
back-propagation through time (an ``autograd.Function``).

The loop does only what must be sequential: two BLAS calls and one in-place nonlinearity per
layer and step, into preallocated storage; nothing is recorded by autograd inside it. The unit
derivatives are computed for all steps at once, and the weight gradients are one large matrix
product each, after the loop. Pooling layers (L_p, maxout) run with their pieces as contiguous
rows (the model's column order is restored outside the loop); L_p takes x^p as exp(p/2 ln x²),
in place, and keeps it for the backward pass. It serves every
:class:`~deeprnn.operators.transitions.DeepTransition`; :func:`deeprnn.driver.unroll` chooses
it (where no gradient is wanted, :func:`deeprnn.inference.evaluate`), and its results equal the
plain loop's (``tests/test_models.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from deeprnn.operators.transitions import DeepTransition
from deeprnn.operators.units import ELEMENTWISE, LP_SMOOTHING, POOLING, lp_derivatives, lp_order

# Below this many steps the weights are read in place: copying them into the faster layout
# costs about as much as a few steps' products (and a sampler runs one step a call).
_STEPS_TO_TRANSPOSE = 8


@dataclass(frozen=True)
class _Plan:
    """What the fused loop needs to know about a transition, fixed at construction."""

    kinds: tuple[str, ...]  # unit of each layer: element-wise, "lp" or "maxout"
    widths: tuple[int, ...]  # outputs of each layer
    pre_sizes: tuple[int, ...]  # pre-activations of each layer (width × pieces)
    shortcut: bool

    @property
    def reading(self) -> int:
        """How many layers read h_{t-1} (all with a shortcut, else the first)."""
        return len(self.kinds) if self.shortcut else 1

    def pieces(self, layer: int) -> int:
        """Pre-activations per output of ``layer`` (explicit: a view of 0 steps cannot infer it)."""
        return self.pre_sizes[layer] // self.widths[layer]

    @property
    def lp_layers(self) -> list[int]:
        return [i for i, kind in enumerate(self.kinds) if kind == "lp"]

    @property
    def pooled_layers(self) -> list[int]:
        """The layers whose outputs pool pieces (L_p, maxout): they keep their pre-activations."""
        return [i for i, kind in enumerate(self.kinds) if kind in POOLING]


def _first_derivatives_only() -> None:
    """Refuse a backward asked for a graph of its own (create_graph=True): the hand-written one is
    not differentiable again, and would leave ⊕'s share out of second derivatives."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            "deeprnn's fast path gives first derivatives only; for a gradient of a gradient "
            "(create_graph=True) run the forward pass within deeprnn.plain_loop()"
        )


class FusedUnroll(torch.autograd.Function):
    """states (T+1, B, H) = [h_0, h_1, …, h_T] for u (T, B, P) = the input projections.

    ``params`` = recurrent_weight, the weights between layers, then ρ of each L_p layer."""

    @staticmethod
    def forward(ctx, plan, u, h0, mask, *params):
        steps, batch, _ = u.shape
        depth = len(plan.kinds)
        u, recurrent_weight, *layer_weights = _in_loop_order(plan, u, *params[:depth])
        rhos = params[depth:]
        states = u.new_empty(steps + 1, batch, h0.shape[-1])
        states[0] = h0
        inner = [u.new_empty(steps, batch, w) for w in plan.widths[:-1]]
        state_steps = states.unbind(0)
        outputs = [z.unbind(0) for z in inner] + [state_steps[1:]]
        # Pooling layers keep their pre-activations (the backward pass needs them); the others
        # compute theirs in the output slot and apply the unit in place.
        pre = {layer: u.new_empty(steps, batch, plan.pre_sizes[layer]) for layer in plan.pooled_layers}
        pre_slots = [pre[layer].unbind(0) if layer in pre else outputs[layer] for layer in range(depth)]
        pre_groups = {layer: _step_groups(plan, layer, p) for layer, p in pre.items()}
        powers = {layer: torch.empty_like(pre[layer]) for layer in plan.lp_layers}  # x^p, for the backward
        power_groups = {layer: _step_groups(plan, layer, p) for layer, p in powers.items()}
        reads_h, *between = (w.t() for w in (recurrent_weight, *layer_weights))
        if steps >= _STEPS_TO_TRANSPOSE:  # (H, P): the fast layout for h @ W, worth a copy
            reads_h, *between = (w.contiguous() for w in (reads_h, *between))
        if plan.shortcut:  # one product gives every layer its h_{t-1} term and input term
            summed = u.new_empty(batch, sum(plan.pre_sizes))
            sources = summed.split(plan.pre_sizes, -1)
            whole = u.unbind(0)
        else:
            inputs = [part.unbind(0) for part in u.split(plan.pre_sizes, -1)]
        units = _units_in_loop(plan, _LpPool(plan, rhos, u), outputs, pre_groups, power_groups)

        for t in range(steps):
            h = state_steps[t] if mask is None else state_steps[t] * mask
            if plan.shortcut:
                torch.addmm(whole[t], h, reads_h, out=summed)
                first = sources[0]
                if 0 in pre:
                    first = pre_slots[0][t].copy_(first)
            else:
                first = torch.addmm(inputs[0][t], h, reads_h, out=pre_slots[0][t])
            units[0](first, t)
            for layer in range(1, depth):
                source = sources[layer] if plan.shortcut else inputs[layer][t]
                a = pre_slots[layer][t]
                torch.addmm(source, outputs[layer - 1][t], between[layer - 1], out=a)
                units[layer](a, t)
        ctx.plan = plan
        kept = (*inner, *pre.values(), *powers.values())
        ctx.save_for_backward(states, mask, recurrent_weight, *layer_weights, *rhos, *kept)
        return states

    @staticmethod
    def backward(ctx, d_states):
        _first_derivatives_only()
        plan = ctx.plan
        depth, lp_layers, pooled = len(plan.kinds), plan.lp_layers, plan.pooled_layers
        states, mask, recurrent_weight, *rest = ctx.saved_tensors
        layer_weights, rest = rest[: depth - 1], rest[depth - 1 :]
        rhos, rest = rest[: len(lp_layers)], rest[len(lp_layers) :]
        inner, rest = rest[: depth - 1], rest[depth - 1 :]
        pre = dict(zip(pooled, rest[: len(pooled)], strict=True))
        powers = dict(zip(lp_layers, rest[len(pooled) :], strict=True))
        outputs = [*inner, states[1:]]
        steps, batch, hidden = outputs[-1].shape
        # One buffer for all layers, those that read h_{t-1} first: one product per step gives
        # h_{t-1} its gradient from all of them, and d_pre is the gradient of u as it stands.
        d_pre_all = states.new_empty(steps, batch, sum(plan.pre_sizes))
        d_pre = d_pre_all.split(plan.pre_sizes, -1)
        d_pre_steps = [d.unbind(0) for d in d_pre]
        d_reading = d_pre_all[..., : recurrent_weight.shape[0]]
        d_reading_steps = d_pre_steps[0] if plan.reading == 1 else d_reading.unbind(0)
        local, d_order = _local_derivatives(plan, outputs, pre, powers, rhos)
        incoming = {layer: torch.empty_like(outputs[layer]) for layer in lp_layers}
        incoming_steps = {layer: g.unbind(0) for layer, g in incoming.items()}
        d_state_steps = d_states.unbind(0)
        g = d_state_steps[steps]
        for t in range(steps - 1, -1, -1):
            g_layer = g
            for layer in range(depth - 1, -1, -1):
                slot = d_pre_steps[layer][t]
                if layer in pre:
                    if layer in incoming:
                        incoming_steps[layer][t].copy_(g_layer)
                    groups = slot.view(_grid(plan, layer, batch))
                    torch.mul(g_layer.unsqueeze(-2), local[layer][t], out=groups)
                elif local[layer] is None:
                    slot.copy_(g_layer)
                else:
                    torch.mul(g_layer, local[layer][t], out=slot)
                if layer > 0:
                    g_layer = torch.mm(slot, layer_weights[layer - 1])
            if mask is None:
                g = torch.addmm(d_state_steps[t], d_reading_steps[t], recurrent_weight)
            else:
                g = torch.addcmul(d_state_steps[t], d_reading_steps[t] @ recurrent_weight, mask)
        previous = states[:-1] if mask is None else states[:-1] * mask
        d_recurrent = _flat(d_reading).t() @ previous.reshape(-1, hidden)
        d_between = [_flat(d).t() @ _flat(z) for d, z in zip(d_pre[1:], outputs[:-1], strict=True)]
        d_rhos = [
            (incoming[layer] * d_order[layer]).sum((0, 1)) * torch.sigmoid(rho)
            for layer, rho in zip(lp_layers, rhos, strict=True)
        ]
        needs = ctx.needs_input_grad
        d_mask = None
        if needs[3]:
            d_mask = (states[:-1] * (d_reading @ recurrent_weight)).sum(0)
        d_u = d_pre_all if needs[1] else None
        d_u, d_recurrent, *d_between = _in_model_order(plan, d_u, d_recurrent, *d_between)
        return (None, d_u, g if needs[2] else None, d_mask, d_recurrent, *d_between, *d_rhos)


class _LpPool:
    """L_p pooling (:func:`~deeprnn.operators.units.lp_pool`) in place, for the loop: a step's
    pieces in rows (piece-major), x^p = exp(p/2 ln(a² + ε²)) and h = (Σ_i x_i^p / k)^(1/p) =
    exp(ln(Σ_i x_i^p) / p - ln(k) / p), with p/2, 1/p and -ln(k)/p of each layer computed once;
    x^p where the caller says (kept for the backward pass, or scratch)."""

    def __init__(self, plan: _Plan, rhos, like: torch.Tensor) -> None:
        orders = dict(zip(plan.lp_layers, (lp_order(r) for r in rhos), strict=True))
        self.half_orders = {layer: p / 2 for layer, p in orders.items()}
        self.inverses = {layer: 1.0 / p for layer, p in orders.items()}
        self.shifts = {layer: -math.log(plan.pieces(layer)) * self.inverses[layer] for layer in orders}
        self.smoothing = like.new_tensor(LP_SMOOTHING**2)

    def __call__(self, layer: int, groups: torch.Tensor, out: torch.Tensor, powers: torch.Tensor) -> None:
        """h = L_p of ``groups`` (batch, pieces, width) into ``out`` (batch, width), x^p into
        ``powers`` (as ``groups``)."""
        x = torch.addcmul(self.smoothing, groups, groups, out=powers)
        torch.sum(x.log_().mul_(self.half_orders[layer]).exp_(), -2, out=out).log_()
        torch.addcmul(self.shifts[layer], out, self.inverses[layer], out=out).exp_()


def _grid(plan: _Plan, layer: int, batch: int) -> tuple[int, int, int]:
    """An L_p layer's pre-activations at one step in the loop's order: (batch, pieces, width)."""
    return (batch, plan.pieces(layer), plan.widths[layer])


def _units_in_loop(plan: _Plan, pool: _LpPool, outputs: list, pre_groups: dict, power_groups: dict) -> list:
    """The unit of each layer at step t, as ``unit(a, t)``: from its pre-activations a (a pooling
    layer's kept pieces, with L_p's x^p kept too) into its output slot."""

    def unit_of(layer: int):
        out, kind = outputs[layer], plan.kinds[layer]
        if kind == "lp":
            pieces, kept = pre_groups[layer], power_groups[layer]
            return lambda a, t: pool(layer, pieces[t], out[t], kept[t])
        if kind == "maxout":
            pieces = pre_groups[layer]
            return lambda a, t: torch.amax(pieces[t], -2, out=out[t])
        into = ELEMENTWISE[kind].into
        return lambda a, t: into(a, out[t])

    return [unit_of(layer) for layer in range(len(plan.kinds))]


def _step_groups(plan: _Plan, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A pooling layer's (T, B, pieces × width) tensor as its steps, each (batch, pieces, width)."""
    return x.view(x.shape[0], *_grid(plan, layer, x.shape[1])).unbind(0)


def _reordered(
    plan: _Plan, x: torch.Tensor, dim: int, layers: range, to_loop: bool, out: torch.Tensor | None = None
) -> torch.Tensor:
    """x, whose axis ``dim`` holds the pre-activations of ``layers``, with each pooling layer's
    in the loop's piece-major order (``to_loop``: piece i of unit j from column j·pieces + i to
    i·width + j, so that each piece is a contiguous row and pooling adds whole rows, many
    times faster than over pieces side by side), or back in the model's order; into ``out``
    (x's shape) if given, else a new tensor."""
    sizes = [plan.pre_sizes[layer] for layer in layers]
    ordered = torch.empty_like(x, memory_format=torch.contiguous_format) if out is None else out
    for layer, part, into in zip(layers, x.split(sizes, dim), ordered.split(sizes, dim), strict=True):
        if plan.kinds[layer] in POOLING:
            grid = (plan.widths[layer], plan.pieces(layer))
            into = into.unflatten(dim, grid[::-1] if to_loop else grid)  # one copy, no cat
            part = part.unflatten(dim, grid if to_loop else grid[::-1]).transpose(dim, dim + 1)
        into.copy_(part)
    return ordered


def _in_loop_order(plan: _Plan, u, recurrent_weight, *layer_weights) -> list[torch.Tensor]:
    """u's columns and the weights' rows (pre-activations) as the loop reads them."""
    if plan.pooled_layers:
        u = _reordered(plan, u, 2, range(len(plan.kinds)), True)
    return [u, *_weights_in_loop_order(plan, recurrent_weight, *layer_weights)]


def _weights_in_loop_order(plan: _Plan, recurrent_weight, *layer_weights) -> list[torch.Tensor]:
    """The weights' rows (pre-activations) as the loop reads them."""
    if not plan.pooled_layers:
        return [recurrent_weight, *layer_weights]
    return [
        _reordered(plan, recurrent_weight, 0, range(plan.reading), True),
        *(_reordered(plan, w, 0, range(layer, layer + 1), True) for layer, w in enumerate(layer_weights, 1)),
    ]


def _in_model_order(plan: _Plan, d_u, d_recurrent, *d_between) -> list[torch.Tensor | None]:
    """The gradients of :func:`_in_loop_order`'s results, back in the model's order."""
    if not plan.pooled_layers:
        return [d_u, d_recurrent, *d_between]
    depth = len(plan.kinds)
    return [
        None if d_u is None else _reordered(plan, d_u, 2, range(depth), False),
        _reordered(plan, d_recurrent, 0, range(plan.reading), False),
        *(_reordered(plan, d, 0, range(layer, layer + 1), False) for layer, d in enumerate(d_between, 1)),
    ]


def _local_derivatives(plan: _Plan, outputs: list, pre: dict, powers: dict, rhos) -> tuple[list, dict]:
    """∂z/∂a of every layer and step at once, as a list of per-step views (None: the identity):
    from the outputs (element-wise units) or from the kept pre-activations (pooling; L_p, with
    its kept powers x^p, also gives ∂z/∂p, by layer). Maxout's goes to the pieces at the
    maximum, shared among ties as ``amax``'s is."""
    local, d_order = [], {}
    for layer, (kind, z) in enumerate(zip(plan.kinds, outputs, strict=True)):
        if kind in POOLING:
            steps, batch, _ = z.shape
            groups = pre[layer].view(steps, *_grid(plan, layer, batch))
            if kind == "lp":
                rho = rhos[plan.lp_layers.index(layer)]
                layer_powers = powers[layer].view_as(groups)
                d_a, d_order[layer] = lp_derivatives(groups, z, lp_order(rho), layer_powers)
            else:
                at_max = (groups == z.unsqueeze(-2)).to(z.dtype)
                d_a = at_max.div_(at_max.sum(-2, keepdim=True))
            local.append(d_a.unbind(0))
        else:
            d = ELEMENTWISE[kind].derivative(z)
            local.append(None if d is None else d.unbind(0))
    return local, d_order


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])


def plan_of(cell: DeepTransition) -> _Plan:
    return _Plan(
        kinds=tuple(unit.kind for unit in cell.units),
        widths=tuple(cell.widths),
        pre_sizes=tuple(cell.pre_sizes),
        shortcut=cell.shortcut,
    )
