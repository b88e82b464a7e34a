"""Mixed precision: a run's updates and validation under autocast (``precision = "bf16"``).

bfloat16 keeps float32's exponent range, so no loss scaling is needed. The parameters, the
optimiser's state, the loss and the carried state stay in float32; the matrix products and the
recurrence (:func:`deeprnn.driver.fused_unroll`) run in bfloat16. The final valid and test
scores of a run are computed in float32 whatever its precision: a table's number is the
model's likelihood, not an approximation of it.
"""

from __future__ import annotations

import torch

# precision -> autocast's dtype (None: autocast off)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The context a run's forward passes run in."""
    dtype = PRECISIONS[precision]
    # no cache of cast weights: a cache must not outlive a CUDA graph's capture
    # (deeprnn.training.graphs), and a forward pass casts each weight once anyway
    return torch.autocast(
        device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None, cache_enabled=False
    )
