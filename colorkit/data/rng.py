"""Shared by every source: the size argument (`_hw`) and counter-based randomness, uniforms from a
hash of (keys..., index, column). Part of `colorkit.data`."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    """`size` as (H, W): an int is a square; a pair is (height, width)."""
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        try:
            h, w = (int(s) for s in size)
        except (TypeError, ValueError):
            raise ValueError(f"size must be an int or a (height, width) pair, got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got (H, W) = ({h}, {w})")
    return h, w


# splitmix64's output function is a good 64-bit mixer. Hashing the keys and the item index gives a
# per-item state; hashing that with each column number gives that item's stream of uniforms. No
# generator is shared, so results do not depend on batch composition or worker count.

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z: np.ndarray) -> np.ndarray:
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _uniforms(keys: Sequence[int], indices: np.ndarray, n_cols: int) -> np.ndarray:
    """Uniforms in [0, 1), shaped (len(indices), n_cols), a pure function of (keys, index, column)."""
    state = np.zeros(1, dtype=np.uint64)
    for key in keys:
        state = _mix64(state ^ np.array([int(key) % 2**64], dtype=np.uint64))
    idx = np.asarray(indices, dtype=np.int64).astype(np.uint64).reshape(-1, 1)
    per_item = _mix64(state ^ idx)                                        # (n, 1)
    cols = np.arange(n_cols, dtype=np.uint64).reshape(1, -1) * _GOLDEN
    bits = _mix64(per_item + cols)                                        # (n, n_cols)
    return (bits >> np.uint64(11)).astype(np.float64) / float(2**53)     # top 53 bits


# Stream tags keep the sources' random choices unrelated even with the same seed.
_TOYWORLD_STREAM, _PHOTO_STREAM, _FOLDER_STREAM = 101, 202, 303
