"""Array helpers shared by the analyses (llr.analysis.nc1, margins, svm):
input checks, float64 row chunks of (memmapped) arrays, head weights."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from llr.errors import LLRError

# Rows per chunk: about 2**21 float64 values (16 MiB) per chunk.
_CHUNK_VALUES = 2**21


def _as_2d(X: Any, name: str = "X") -> Any:
    """Return X unchanged if it is a 2-D array-like (memmaps stay memmaps)."""
    if not hasattr(X, "shape") or not hasattr(X, "__getitem__"):
        X = np.asarray(X)
    if len(X.shape) != 2:
        raise LLRError(f"{name}: expected a 2-D array (N, d), got shape {tuple(X.shape)}")
    return X


def _labels(y: Any, n: int, n_values: int, name: str = "y") -> np.ndarray:
    """Validate integer labels in [0, n_values) of length n."""
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise LLRError(f"{name}: expected {n} labels, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise LLRError(f"{name}: labels must be integers")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_values):
        raise LLRError(f"{name}: labels must lie in [0, {n_values}), got range [{y.min()}, {y.max()}]")
    return y


def _chunk_rows(d: int, chunk_rows: int | None) -> int:
    if chunk_rows is not None:
        return max(1, int(chunk_rows))
    return max(1, _CHUNK_VALUES // max(d, 1))


def _chunks(X: Any, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start, float64 block) over the rows of X (array or memmap)."""
    n = X.shape[0]
    for s in range(0, n, rows):
        yield s, np.asarray(X[s : s + rows], dtype=np.float64)


def _to_numpy(a: Any) -> np.ndarray:
    """numpy float64 copy of an array or a (CPU/GPU) torch tensor."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _weights(W: Any, b: Any | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Head weights as (K, d) float64 and bias as (K,) (zeros if None).

    A 1-D W (or shape (1, d)) is read as a binary theta and turned into
    [-theta/2, theta/2] (same logit differences, same margins)."""
    W = _to_numpy(W)
    if W.ndim == 1:
        W = W[None, :]
    if W.ndim != 2:
        raise LLRError(f"W: expected shape (K, d), got {W.shape}")
    if W.shape[0] == 1:
        W = np.vstack([-W[0] / 2.0, W[0] / 2.0])
        if b is not None:
            bb = _to_numpy(b).reshape(-1)
            b = np.array([-bb[0] / 2.0, bb[0] / 2.0]) if bb.size == 1 else bb
    K = W.shape[0]
    if b is None:
        b = np.zeros(K)
    b = _to_numpy(b).reshape(-1)
    if b.shape[0] != K:
        raise LLRError(f"b: expected {K} biases, got {b.shape[0]}")
    return W, b
