"""Group metrics (paper section 1, "Setting"; docs/design.md, "Worst-group
accuracy"): per-group accuracy, worst-group accuracy (WGA) and mean
accuracy, the latter weighted by training group proportions for Waterbirds-like
datasets (their val/test sets are group-balanced within class).
"""

from __future__ import annotations

import numpy as np


def group_accuracy(pred: np.ndarray, y: np.ndarray, g: np.ndarray, n_groups: int) -> np.ndarray:
    """Accuracy of each group; NaN for a group with no example."""
    pred, y, g = (np.asarray(a) for a in (pred, y, g))
    correct = np.bincount(g, weights=(pred == y).astype(np.float64), minlength=n_groups)
    total = np.bincount(g, minlength=n_groups).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return correct / total


def worst_group_accuracy(acc_by_group: np.ndarray) -> float:
    return float(np.nanmin(acc_by_group))


def mean_accuracy(
    pred: np.ndarray, y: np.ndarray, g: np.ndarray, n_groups: int, group_weights: np.ndarray | None = None
) -> float:
    """Plain accuracy, or with ``group_weights`` (training group proportions)
    the weighted mean of per-group accuracies."""
    if group_weights is None:
        return float(np.mean(np.asarray(pred) == np.asarray(y)))
    acc = group_accuracy(pred, y, g, n_groups)
    w = np.asarray(group_weights, dtype=np.float64)
    return float(np.nansum(acc * w) / w[~np.isnan(acc)].sum())


def evaluate(
    pred: np.ndarray, y: np.ndarray, g: np.ndarray, n_groups: int, group_weights: np.ndarray | None = None
) -> dict:
    """Per-group accuracy, WGA and mean accuracy as a JSON-ready dict."""
    acc = group_accuracy(pred, y, g, n_groups)
    return {
        "acc_by_group": [None if np.isnan(a) else float(a) for a in acc],
        "wga": worst_group_accuracy(acc),
        "mean_acc": mean_accuracy(pred, y, g, n_groups, group_weights),
        "n": int(len(y)),
    }


def train_group_weights(meta_g_train: np.ndarray, n_groups: int) -> np.ndarray:
    """Training group proportions, for the weighted mean accuracy."""
    c = np.bincount(np.asarray(meta_g_train), minlength=n_groups).astype(np.float64)
    return c / c.sum()
