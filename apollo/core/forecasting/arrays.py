"""Helpers for per-series state arrays that grow and shrink as nodes come and go.

Every stateful piece of the forecaster (smoothing state, error buffers, seasonality buckets, accuracy
accumulators) keeps one row per series along a known axis. Adding or removing series must touch all of them
the same way, otherwise one array silently drifts out of step with the key map; these two helpers are the
only way rows change, so the invariant lives in one place. Both copy: membership changes are rare (a node
joins or leaves), while the per-tick hot path must never pay for spare capacity or indirection.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
Float32Array = NDArray[np.float32]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]


def grow(arr: NDArray[Any], count: int, fill: Any, axis: int = 0) -> NDArray[Any]:
    """Return ``arr`` with ``count`` new rows filled with ``fill`` appended along ``axis``."""
    if count <= 0:
        return arr
    shape = list(arr.shape)
    shape[axis] = count
    extra = np.full(shape, fill, dtype=arr.dtype)
    return np.concatenate([arr, extra], axis=axis)


def select(arr: NDArray[Any], rows: IntArray, axis: int = 0) -> NDArray[Any]:
    """Return the rows ``rows`` of ``arr`` along ``axis`` as a new contiguous array."""
    return np.ascontiguousarray(np.take(arr, rows, axis=axis))


# Series per block of the per-tick passes over ``[K, H, n]`` arrays. numpy makes one pass over a whole
# array per operation; on 50,000 series each ``[H, n]`` float64 array is 2.4 MB, so a chain of passes
# streams every operand from L3 or memory again. A block of 8,192 series (a 6 x 8,192 float64 slab is
# 384 KB) keeps a chain's operands in a core's L2 between passes; each block adds only a few
# microseconds of call overhead per operation. Elementwise results do not depend on the blocking.
BLOCK_SERIES = 8192


def column_blocks(n: int, size: int | None = None) -> list[slice]:
    """Consecutive slices covering ``0 .. n`` of at most ``size`` (default :data:`BLOCK_SERIES`) series each."""
    step = BLOCK_SERIES if size is None else size
    return [slice(start, min(n, start + step)) for start in range(0, n, step)]


def rotating_block(n: int, blocks: int, tick: int) -> slice:
    """Rows refreshed at ``tick`` when ``n`` rows are refreshed round-robin in ``blocks`` blocks.

    Expensive per-series statistics (sorting error windows, seasonality tests) are spread over ticks this
    way so that every tick costs the same instead of a periodic spike; each row is refreshed once every
    ``blocks`` ticks.
    """
    if n == 0:
        return slice(0, 0)
    size = -(-n // max(blocks, 1))
    start = (tick % max(blocks, 1)) * size
    if start >= n:
        return slice(0, 0)
    return slice(start, min(n, start + size))
