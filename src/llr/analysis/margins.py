"""Margins of linear heads and their correlation with group accuracy (paper
section 2.2, Table 1).

Margin of a linear head f(x) = W x + b on (x, y):
(f_y(x) - max_{k != y} f_k(x)) / (sqrt(2) ||W - mean_k W_k||_F). For K = 2
this is exactly y f(x) / ||theta|| with theta = W[1] - W[0] and labels +-1
(paper section 2.2); for K > 2 it is the normalized margin maximized by the
multiclass hard-margin SVM (llr.analysis.svm), divided by sqrt(2). numpy on
CPU; inputs may be float16 memory maps, read in float64 row chunks.

The authors' ``exps/collapse.py`` differs: its margins use softmax
probabilities (p_y - max_{k!=y} p_k) divided by the norm of all trainable
parameters (W and b), with min over positive margins set to 0 when there are
none (NaN here); we follow the paper's definition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from llr.analysis._arrays import _as_2d, _chunk_rows, _chunks, _labels, _weights
from llr.analysis._heads import _checkpoint, _default_fit, _history
from llr.errors import LLRError

__all__ = ["margins", "group_margins", "margin_records", "margin_correlation", "OVER"]


def _margin_norm(W: np.ndarray) -> float:
    """sqrt(2) ||W - mean_k W_k||_F; equals ||W[1] - W[0]|| for K = 2."""
    Wc = W - W.mean(axis=0, keepdims=True)
    return float(np.sqrt(2.0) * np.linalg.norm(Wc))


def margins(W: Any, b: Any | None, X: Any, y: Any, *, chunk_rows: int | None = None) -> np.ndarray:
    """Per-example normalized margins of the linear head f(x) = W x + b.

    margin_i = (f_{y_i}(x_i) - max_{k != y_i} f_k(x_i)) / (sqrt(2) ||W_c||_F),
    W_c = W - mean_k W_k (the softmax-invariant part of W). For K = 2 this is
    y_i f(x_i) / ||theta|| with theta = W[1] - W[0], beta = b[1] - b[0],
    labels +-1 (paper section 2.2). For K > 2 the numerator
    is the multiclass score margin and the norm the Frobenius norm minimized
    by the multiclass hard-margin SVM (``linear_svm``), so the SVM
    solution W* has minimum margin 1 / (sqrt(2) ||W*||_F), the largest
    attainable. A margin > 0 means correctly classified.

    W may also be a binary theta (d,) or (1, d) with a scalar b.
    """
    W, b = _weights(W, b)
    X = _as_2d(X)
    N, d = X.shape
    K = W.shape[0]
    if W.shape[1] != d:
        raise LLRError(f"margins: W has {W.shape[1]} features, X has {d}")
    y = _labels(y, N, K)
    norm = _margin_norm(W)
    if norm == 0:
        raise LLRError("margins: W is zero up to a shift shared by all classes")
    out = np.empty(N)
    rows = _chunk_rows(d, chunk_rows)
    for s, Xc in _chunks(X, rows):
        F = Xc @ W.T + b
        yc = y[s : s + Xc.shape[0]]
        ar = np.arange(Xc.shape[0])
        fy = F[ar, yc]
        F[ar, yc] = -np.inf
        out[s : s + Xc.shape[0]] = (fy - F.max(axis=1)) / norm
    return out


def group_margins(
    W: Any, b: Any | None, X: Any, y: Any, g: Any, n_groups: int, *, chunk_rows: int | None = None
) -> pd.DataFrame:
    """Per-group margins of a linear head (paper section 2.2, Table 1).

    Returns one row per group 0..n_groups-1 with columns
    ``group``; ``min_margin``: minimum margin over the group's correctly
    classified points (margin > 0), NaN if none; ``avg_margin``: mean margin
    over all the group's points (NaN for an empty group); ``n``: group size.
    Margins as in ``margins``.
    """
    m = margins(W, b, X, y, chunk_rows=chunk_rows)
    g = _labels(g, m.shape[0], int(n_groups), "g")
    n = np.bincount(g, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = np.bincount(g, weights=m, minlength=n_groups) / n
    mins = np.full(n_groups, np.inf)
    ok = m > 0
    np.minimum.at(mins, g[ok], m[ok])
    mins[~np.isfinite(mins)] = np.nan
    return pd.DataFrame({"group": np.arange(n_groups), "min_margin": mins, "avg_margin": avg, "n": n})


def margin_records(
    X_train: Any,
    y_train: Any,
    g_train: Any,
    X_test: Any,
    y_test: Any,
    g_test: Any,
    n_groups: int,
    n_classes: int,
    fit: Callable[..., Any] | None = None,
    epochs: int = 100,
    checkpoint_epochs: Sequence[int] = (),
    seed: int = 0,
    *,
    lr: float = 1e-2,
    batch_size: int = 32,
    device: str = "cpu",
) -> pd.DataFrame:
    """Per-group margins and test accuracy of LLR heads at checkpoints
    (paper Table 1).

    The LLR head is trained on (X_train, y_train) = the held-out set with the
    standard LLR settings (SGD lr 1e-2, batch 32) for ``epochs``; at each
    epoch in ``checkpoint_epochs`` (default: the last) its margins are taken
    on that same training set, per group (``group_margins``: min over the
    group's correctly classified points, average over all its points), and
    its accuracy on each test group. The authors' exps/collapse_heldout.py
    likewise logs margins on the LLR training (held-out) set.

    Returns columns seed, epoch, group, min_margin, avg_margin, n_train,
    test_acc.
    """
    from llr.train.metrics import group_accuracy

    fit = fit or _default_fit()
    X_train, X_test = _as_2d(X_train, "X_train"), _as_2d(X_test, "X_test")
    K, G = int(n_classes), int(n_groups)
    y_train = _labels(y_train, X_train.shape[0], K, "y_train")
    g_train = _labels(g_train, X_train.shape[0], G, "g_train")
    y_test = _labels(y_test, X_test.shape[0], K, "y_test")
    g_test = _labels(g_test, X_test.shape[0], G, "g_test")
    cps = tuple(sorted({int(e) for e in checkpoint_epochs})) or (int(epochs),)
    if cps[0] < 1 or cps[-1] > int(epochs):
        raise LLRError(f"margin_records: checkpoint epochs must lie in [1, {epochs}], got {cps}")
    res = fit(
        np.asarray(X_train, dtype=np.float32),
        y_train,
        n_classes=K,
        epochs=int(epochs),
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        checkpoint_epochs=cps,
        device=device,
    )
    hist = _history(res)
    rows = _chunk_rows(X_test.shape[1], None)
    out = []
    for e in cps:
        W, b = _checkpoint(hist, e)
        gm = group_margins(W, b, X_train, y_train, g_train, G)
        pred = np.empty(X_test.shape[0], dtype=np.int64)
        for s, Xc in _chunks(X_test, rows):
            pred[s : s + Xc.shape[0]] = np.argmax(Xc @ W.T + b, axis=1)
        acc = group_accuracy(pred, y_test, g_test, G)
        out.append(
            pd.DataFrame(
                {
                    "seed": seed,
                    "epoch": e,
                    "group": gm["group"],
                    "min_margin": gm["min_margin"],
                    "avg_margin": gm["avg_margin"],
                    "n_train": gm["n"],
                    "test_acc": acc,
                }
            )
        )
    return pd.concat(out, ignore_index=True)


OVER = "groups x seeds x LLR checkpoints"


def margin_correlation(df: pd.DataFrame, by: Sequence[str] | None = None) -> pd.DataFrame:
    """Pearson r between group margins and group test accuracy (paper Table 1).

    Each row of ``df`` (as from ``margin_records``, concatenated over seeds)
    is one point: (one group, one seed, one LLR checkpoint) with its margin on
    the LLR training (held-out) set and its test accuracy. For each margin
    kind (``min``: min_margin, ``avg``: avg_margin) r = scipy.stats.pearsonr
    over all rows with both values finite (rows whose group has no correctly
    classified point have min_margin NaN and are dropped for ``min``).
    ``by``: optional columns (e.g. dataset) to correlate within separately;
    ``by=["dataset", "group"]`` gives the paper's Table 1 layout, one r per
    group across seeds x LLR checkpoints.

    Returns columns [*by,] kind, r, p_value, n_points, over, where ``over``
    states what was pooled (of groups, seeds, LLR checkpoints, those not in
    ``by``; OVER when ``by`` is empty); r and p_value are NaN with fewer than
    3 points or a constant input.
    """
    from scipy.stats import pearsonr

    by = list(by or [])
    pooled = {"group": "groups", "seed": "seeds", "epoch": "LLR checkpoints"}
    over = " x ".join(v for k, v in pooled.items() if k not in by) or "one point"
    need = {"min_margin", "avg_margin", "test_acc", *by}
    missing = need - set(df.columns)
    if missing:
        raise LLRError(f"margin_correlation: missing column(s) {sorted(missing)}")
    groups = df.groupby(by, sort=True) if by else [((), df)]
    rows = []
    for key, sub in groups:
        key = key if isinstance(key, tuple) else (key,)
        for kind in ("min", "avg"):
            x = sub[f"{kind}_margin"].to_numpy(dtype=np.float64)
            t = sub["test_acc"].to_numpy(dtype=np.float64)
            ok = np.isfinite(x) & np.isfinite(t)
            x, t = x[ok], t[ok]
            r = p = np.nan
            if x.size >= 3 and np.ptp(x) > 0 and np.ptp(t) > 0:
                res = pearsonr(x, t)
                r, p = float(res.statistic), float(res.pvalue)
            rows.append((*key, kind, r, p, int(x.size), over))
    return pd.DataFrame(rows, columns=[*by, "kind", "r", "p_value", "n_points", "over"])
