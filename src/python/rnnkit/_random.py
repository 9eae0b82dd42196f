"""Where rnnkit's randomness comes from: one rule for every generator.

A generator made with an explicit seed is that seed's. A generator made without one takes its
seed from NumPy's global random state (like the initializers do), so that ``np.random.seed(k)`` or
:func:`rnnkit.utils.set_random_seed` makes a whole run reproducible: initial weights, dropout
masks and ``fit``'s shuffling alike.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["generator"]


def generator(seed: Optional[int] = None) -> np.random.Generator:
    """``np.random.default_rng(seed)``; without a seed, one drawn from NumPy's global state."""
    if seed is None:
        seed = int(np.random.randint(0, 2**62, dtype=np.int64))
    return np.random.default_rng(seed)
