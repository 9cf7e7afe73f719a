"""Safe loading of older checkpoints that pickle numpy arrays next to the weights.

PANNs' official files keep the training sampler's state (numpy int64 arrays) beside ``model``, and
torchvggish's PCA file holds plain numpy arrays. ``torch.load(weights_only=True)`` refuses numpy
objects unless they are allow-listed; numpy arrays, scalars and dtypes are data (no code runs when
they are rebuilt), so allow-listing exactly those keeps the load safe. Files pickled by numpy 1.x
name ``numpy.core.multiarray`` and numpy 2.x names ``numpy._core.multiarray``: both are accepted.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from evar.encoders.weights import load_state_dict

_DTYPE_CODES = "?bBhHiIlLqQefdgFDG"


def _numpy_globals() -> list:
    core = getattr(np, "_core", None) or np.core
    reconstruct, scalar = core.multiarray._reconstruct, core.multiarray.scalar
    entries: list = [np.ndarray, np.dtype, reconstruct, scalar]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        entries += [(reconstruct, f"{module}._reconstruct"), (scalar, f"{module}.scalar")]
    entries += list({type(np.dtype(code)) for code in _DTYPE_CODES} - {np.dtype})
    return entries


@contextmanager
def numpy_safe_globals() -> Iterator[None]:
    """Within this block ``torch.load(weights_only=True)`` also accepts numpy arrays, scalars and dtypes."""
    with torch.serialization.safe_globals(_numpy_globals()):
        yield


def load_state_dict_with_numpy(path: str | Path) -> dict[str, torch.Tensor]:
    """:func:`evar.encoders.weights.load_state_dict` that also reads numpy arrays (returned as tensors)."""
    with numpy_safe_globals():
        state = load_state_dict(path)
    return {k: torch.from_numpy(np.asarray(v)) if isinstance(v, (np.ndarray, np.generic)) else v
            for k, v in state.items()}
