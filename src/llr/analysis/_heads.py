"""The LLR heads the analyses fit (Figure 3, Table 1): the default fit
(llr.lastlayer.fit.fit_softmax, imported lazily: it imports torch) and its
checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from llr.analysis._arrays import _to_numpy
from llr.errors import LLRError


def _default_fit() -> Callable[..., Any]:
    from llr.lastlayer.fit import fit_softmax  # lazy: imports torch

    return fit_softmax


def _history(result: Any) -> dict:
    hist = getattr(result, "history", None)
    if hist is None and isinstance(result, dict):
        hist = result.get("history")
    if hist is None:
        raise LLRError("fit result has no history of checkpoints")
    return hist


def _checkpoint(hist: dict, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    if epoch not in hist:
        raise LLRError(f"fit history lacks epoch {epoch} (has {sorted(hist)[:5]}...)")
    W, b = hist[epoch]
    return _to_numpy(W), _to_numpy(b)
