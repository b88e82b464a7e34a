"""The driver shared by every transition: ⊕ run over time, and what chooses how.

:func:`unroll` runs any transition (:class:`~deeprnn.operators.protocol.Transition`: the
paper's, a gated one, a PyTorch cell, your own) over a sequence whose input projections
U x_t + b are already computed for all steps:

- the fast path, for a transition that says it can take it (``cell.fusable``: the paper's
  ⊕, :class:`~deeprnn.operators.transitions.DeepTransition`): hand-written back-propagation
  through time (:mod:`deeprnn.fused`), or where no gradient is wanted the in-place loop of
  :mod:`deeprnn.inference` (in evaluation, :func:`projects_in_place`, it takes x itself and
  projects it straight into its buffer);
- otherwise (highway layers, your own ⊕), wherever PyTorch must see the plain operations
  (tracing, ``torch.compile`` and ``torch.export``), and within :func:`plain_loop` (a gradient
  of a gradient, ``torch.func``), a plain loop over ``cell.step``; under ``torch.export`` that
  loop is one ``scan``, so that the exported program keeps T free.

The driver knows nothing of a cell's insides; :class:`deeprnn.recurrence.Recurrence` stacks
levels over it with the conventions of :class:`torch.nn.RNN`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from deeprnn.fused import FusedUnroll, plan_of
from deeprnn.inference import evaluate
from deeprnn.operators.protocol import Carry, Transition


def unroll(
    cell: Transition,
    u: torch.Tensor,
    h0: Carry,
    dropout_mask: torch.Tensor | None = None,
    fused: bool | None = None,
) -> Carry:
    """Run ⊕ over all steps: u (T, B, P) projected inputs, h0 (B, H) -> states (T+1, B, H);
    for a cell whose carry is a tuple (``cell.carries`` > 1, as an LSTM's (h, c)), h0 and the
    result are tuples of such tensors.

    ``dropout_mask`` (B, H), if given, multiplies h_{t-1} where the step reads it (variational
    dropout of the recurrent state, the same mask at every step). ``fused``: None (the default)
    takes the fast path wherever it applies (:func:`fast_path_applies`); False, the plain loop
    (both give the same results)."""
    if fused is None:
        fused = fast_path_applies(cell)
    if fused and cell.fusable:
        rhos = [unit.rho for unit in cell.units if unit.kind == "lp"]
        return fused_unroll(cell, u, h0, dropout_mask, (cell.recurrent_weight, *cell.layer_weights, *rhos))
    if exporting():
        return scanned(cell, u, h0, dropout_mask)
    carries = [h0]
    for u_t in u.unbind(0):
        carries.append(cell.step(u_t, carries[-1], dropout_mask))
    if cell.carries == 1:
        return torch.stack(carries)
    return tuple(torch.stack(part) for part in zip(*carries, strict=True))


def fused_unroll(
    cell: Transition, u: torch.Tensor, h0: torch.Tensor, mask: torch.Tensor | None, params: tuple
) -> torch.Tensor:
    """The fast path: where no gradient is wanted, :func:`~deeprnn.inference.evaluate` (nothing kept
    for a backward pass); under autocast, all of it in autocast's dtype (bfloat16: the products
    that dominate, and the states between them, as cuDNN's half-precision RNNs), the gradients
    cast back to each parameter's dtype by autograd."""
    device = u.device.type
    run = FusedUnroll.apply
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in (u, h0, *params))):
        run = evaluate
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        u, h0, *params = (t.to(dtype) for t in (u, h0, *params))
        mask = None if mask is None else mask.to(dtype)
        with torch.autocast(device, enabled=False):
            return run(plan_of(cell), u, h0, mask, *params)
    return run(plan_of(cell), u, h0, mask, *params)


def scanned(cell: Transition, u: torch.Tensor, h0: Carry, dropout_mask: torch.Tensor | None) -> Carry:
    """The plain loop as PyTorch's ``scan`` (a prototype higher-order op of PyTorch >= 2.6): one
    step in the graph, run T times, rather than T copies of it, so torch.export keeps T symbolic."""
    from torch._higher_order_ops import scan

    def step(carry: Carry, u_t: torch.Tensor) -> tuple[Carry, Carry]:
        new = cell.step(u_t, carry, dropout_mask)
        return new, map_carry(torch.clone, new)  # scan's outputs may not alias its carry

    _, states = scan(step, h0, u)
    if cell.carries == 1:
        return torch.cat([h0.unsqueeze(0), states])
    return tuple(torch.cat([first.unsqueeze(0), rest]) for first, rest in zip(h0, states, strict=True))


def map_carry(function: Callable[[torch.Tensor], torch.Tensor], carry: Carry | None) -> Carry | None:
    """``function`` applied to a carry's tensor, or to each of a tuple's (None stays None)."""
    if carry is None or isinstance(carry, torch.Tensor):
        return None if carry is None else function(carry)
    return tuple(function(part) for part in carry)


_PLAIN_LOOP = ContextVar("deeprnn_plain_loop", default=False)


@contextmanager
def plain_loop() -> Iterator[None]:
    """Within it, every ⊕ runs as a loop of autograd's own operations rather than the fast path,
    whose hand-written backward cannot be differentiated again: for a gradient of a gradient
    (a gradient penalty, meta-learning) or ``torch.func``'s transforms. The same values, slower.
    It holds in the thread that enters it (a context variable), not in threads started from it."""
    token = _PLAIN_LOOP.set(True)
    try:
        yield
    finally:
        _PLAIN_LOOP.reset(token)


def fast_path_applies(cell: Transition) -> bool:
    """Whether the hand-written BPTT can serve ``cell`` here: its units allow it, nothing needs
    to see the operations one by one (a tracer, the compiler), and no :func:`plain_loop` asks
    for autograd's own."""
    return cell.fusable and not traced() and not _PLAIN_LOOP.get()


def projects_in_place(cell: Transition, x: torch.Tensor) -> bool:
    """Whether an evaluation may project x straight into the in-place loop's buffer
    (:func:`~deeprnn.inference.evaluate_input`): the fast path, no gradient, no autocast, and no
    pooling layer (whose pieces the loop reorders, as it copies u in)."""
    return (
        fast_path_applies(cell)
        and (cell.tokens or x.dtype == cell.recurrent_weight.dtype)  # else the product's own error
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled(x.device.type)
        and not plan_of(cell).pooled_layers
    )


def traced() -> bool:
    """Whether a tracer records the operations (jit.trace, torch.compile, torch.export): it needs
    the plain ones, and no checks on the data's values."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or exporting()


def checks_values() -> bool:
    """Whether the input's values may be checked (token range, lengths): not while a tracer
    records the operations, nor while a CUDA graph is captured (a check waits for the GPU)."""
    return not traced() and not (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


def exporting() -> bool:
    """Whether torch.export records the operations (PyTorch >= 2.6 can tell; before, never)."""
    return getattr(torch.compiler, "is_exporting", lambda: False)()
