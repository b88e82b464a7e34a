"""Loading the original pickles of the music data sets without running their code.

A pickle may name any importable callable and call it while loading (``__reduce__``). The
music pickles (a dict of splits, each a list of pieces, each a list of frames, each a tuple
of MIDI pitches, stored as ints or NumPy integer scalars) need only two: NumPy's scalar
constructor and ``numpy.dtype``. Every other global is refused before it is looked up, so no
code of the file ever runs.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

try:  # NumPy >= 2 moved the module; pickles name the old one.
    from numpy._core.multiarray import scalar as _scalar
except ImportError:  # pragma: no cover
    from numpy.core.multiarray import scalar as _scalar

_ALLOWED = {
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "dtype"): np.dtype,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names something other than the containers and numbers of the music layout."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[module, name]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: a music pickle may hold only dicts, lists, "
                "tuples, ints and NumPy integer scalars"
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickleError("refusing a pickle with persistent references")


def safe_load(data: bytes) -> object:
    """Unpickle ``data`` (Python 2 or 3 pickles), allowing only the music layout's types."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
