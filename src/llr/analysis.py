"""Analyses of the paper's section 2.1 (DESIGN section 4): neural collapse
(NC1), margins of linear heads, the hard-margin SVM and the directional error
of an LLR head with respect to it (Figure 3), and the margin/accuracy
correlation of Table 1.

Everything here is numpy/scipy/pandas on CPU so that analysis jobs start fast;
torch is never imported at module level (the LLR fit function is imported
lazily, or passed in). Inputs may be float16 memory maps (the cached
embeddings): they are read in row chunks and upcast to float64 chunk by chunk.

Definitions (the paper's notation: K classes, features h in R^d):

* NC1 = tr(Sigma_W pinv(Sigma_B)) / K with
  Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T,
  Sigma_B = (1/K) sum_k (mu_k - mu_G)(mu_k - mu_G)^T, mu_G the mean of all N
  features (Papyan et al. 2020; the authors' ``exps/collapse.py``).
* Margin of a linear head f(x) = W x + b on (x, y):
  (f_y(x) - max_{k != y} f_k(x)) / (sqrt(2) ||W - mean_k W_k||_F). For K = 2
  this is exactly y f(x) / ||theta|| with theta = W[1] - W[0] and labels
  +-1 (DESIGN section 4); for K > 2 it is the normalized margin maximized by
  the multiclass hard-margin SVM below, divided by sqrt(2).
* Hard-margin SVM without intercept: min ||W||_F^2 s.t.
  (w_{y_i} - w_k) . x_i >= 1 for all i and k != y_i. For K = 2 it returns
  W = [-theta/2, theta/2] with theta the binary SVM
  (min ||theta||^2 s.t. y_i theta . x_i >= 1). Its direction is the limit of
  gradient descent on the cross-entropy on separable data (Soudry et al. 2018).
* Directional error || v/||v|| - v_ref/||v_ref|| || with v = W[1] - W[0] for
  K = 2 and v = W - mean_k W_k (flattened) for K > 2.

Where the authors' code (tmlabonte/understanding-llr) differs, we follow the
paper's and DESIGN's definitions and say so here:
``exps/collapse.py`` regularizes Sigma_B by 1e-3 I before the pinv (``nc1``'s
``ridge`` reproduces that) and hooks ResNet's layer4 output (before pooling);
its margins use softmax probabilities (p_y - max_{k!=y} p_k) divided by the
norm of all trainable parameters (W and b), with min over positive margins
set to 0 when there are none (NaN here); ``exps/svm_convergence.py`` fits
sklearn LinearSVC(fit_intercept=False, C=1e5) (squared hinge, one-vs-rest
for K > 2) on the LLR training (held-out) features and subtracts its (1, d)
coefficient from the (2, d) head W / ||W||_F by broadcasting, which is not
zero even for a head aligned with the SVM; here v = W[1] - W[0] is compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from llr.errors import LLRError

# Rows per chunk: about 2**21 float64 values (16 MiB) per chunk.
_CHUNK_VALUES = 2**21
# The SVM keeps its working set in memory up to 2**24 float64 values (128 MiB),
# and builds exact working-set solves up to 2**25 values (256 MiB).
_CACHE_VALUES = 2**24
_EXACT_VALUES = 2**25

__all__ = [
    "nc1",
    "margins",
    "group_margins",
    "hard_margin_svm",
    "SVMInfo",
    "check_margin_constraints",
    "directional_error",
    "svm_convergence",
    "margin_records",
    "margin_correlation",
]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

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
        raise LLRError(f"{name}: labels must lie in [0, {n_values}), got range "
                       f"[{y.min()}, {y.max()}]")
    return y


def _chunk_rows(d: int, chunk_rows: int | None) -> int:
    if chunk_rows is not None:
        return max(1, int(chunk_rows))
    return max(1, _CHUNK_VALUES // max(d, 1))


def _chunks(X: Any, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start, float64 block) over the rows of X (array or memmap)."""
    n = X.shape[0]
    for s in range(0, n, rows):
        yield s, np.asarray(X[s:s + rows], dtype=np.float64)


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


# --------------------------------------------------------------------------
# 1. NC1
# --------------------------------------------------------------------------

def nc1(H: Any, y: Any, n_classes: int, *, ridge: float = 0.0,
        rtol: float | None = None, chunk_rows: int | None = None) -> float:
    """Within-class variability collapse NC1 = tr(Sigma_W pinv(Sigma_B)) / K.

    Paper section 2.1 / DESIGN section 4. ``H`` (N, d) are penultimate
    features (any float dtype, memmaps welcome), ``y`` the N labels in
    [0, n_classes). Pass group labels and the number of groups to get the
    per-group variant the authors also logged (``group_trace``).

    Sigma_B = M M^T / K with M = [mu_k - mu_G] (d, K) of rank <= K - 1, so with
    the thin SVD M = U S V^T, pinv(Sigma_B) = K U S^-2 U^T and
    NC1 = sum_j (u_j^T Sigma_W u_j) / s_j^2. The projections u_j^T Sigma_W u_j
    come from ((H - mu_y) U) in one O(N d K) pass; no d x d matrix is formed.
    Two passes over H in chunks of ``chunk_rows`` rows, O((chunk + K) d) memory.

    ``rtol``: eigenvalues of Sigma_B below rtol * max eigenvalue count as zero
    (default max(d, K) * machine epsilon).

    ``ridge`` = eps > 0 computes tr(Sigma_W (Sigma_B + eps I)^-1) / K instead,
    which is what the authors' final ``exps/collapse.py`` logs (eps = 1e-3,
    earlier 1e-6, first none): the complement of the class-mean subspace then
    adds (tr Sigma_W - sum_j u_j^T Sigma_W u_j) / eps. Default 0: the paper's
    definition.

    Raises LLRError if a class has no example or the input is malformed.
    """
    H = _as_2d(H, "H")
    N, d = H.shape
    K = int(n_classes)
    if K < 2:
        raise LLRError(f"nc1: n_classes must be >= 2, got {K}")
    y = _labels(y, N, K)
    counts = np.bincount(y, minlength=K).astype(np.float64)
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        raise LLRError(f"nc1: class(es) {missing.tolist()} have no example; "
                       f"NC1 needs all {K} classes present")
    if ridge < 0:
        raise LLRError(f"nc1: ridge must be >= 0, got {ridge}")
    rows = _chunk_rows(d, chunk_rows)
    classes = np.arange(K)

    # Pass 1: class sums.
    sums = np.zeros((K, d))
    for s, Hc in _chunks(H, rows):
        onehot = (y[s:s + Hc.shape[0], None] == classes).astype(np.float64)
        sums += onehot.T @ Hc
    mu = sums / counts[:, None]
    mu_g = counts @ mu / N                        # = mean of all features
    M = (mu - mu_g).T                              # (d, K), rank <= K - 1

    U, sv, _ = np.linalg.svd(M, full_matrices=False)
    lam = sv**2                                    # K * eigenvalues of Sigma_B
    if rtol is None:
        rtol = max(d, K) * np.finfo(np.float64).eps
    keep = lam > rtol * lam.max() if lam.max() > 0 else np.zeros_like(lam, bool)
    U, lam = U[:, keep], lam[keep]

    # Pass 2: projections of within-class deviations on the class-mean subspace.
    proj_mu = (mu - mu_g) @ U                      # (K, r)
    a = np.zeros(U.shape[1])
    tr_w = 0.0
    for s, Hc in _chunks(H, rows):
        yc = y[s:s + Hc.shape[0]]
        Hc -= mu_g
        P = Hc @ U - proj_mu[yc]
        a += np.einsum("ij,ij->j", P, P)
        if ridge > 0:
            Dc = Hc - (mu - mu_g)[yc]
            tr_w += float(np.einsum("ij,ij->", Dc, Dc))
    a /= N                                          # u_j^T Sigma_W u_j
    if ridge == 0:
        return float(np.sum(a / lam))
    tr_w /= N
    inside = np.sum(a / (lam / K + ridge))
    outside = max(tr_w - float(a.sum()), 0.0) / ridge
    return float((inside + outside) / K)


# --------------------------------------------------------------------------
# 2. Margins
# --------------------------------------------------------------------------

def _margin_norm(W: np.ndarray) -> float:
    """sqrt(2) ||W - mean_k W_k||_F; equals ||W[1] - W[0]|| for K = 2."""
    Wc = W - W.mean(axis=0, keepdims=True)
    return float(np.sqrt(2.0) * np.linalg.norm(Wc))


def margins(W: Any, b: Any | None, X: Any, y: Any, *,
            chunk_rows: int | None = None) -> np.ndarray:
    """Per-example normalized margins of the linear head f(x) = W x + b.

    margin_i = (f_{y_i}(x_i) - max_{k != y_i} f_k(x_i)) / (sqrt(2) ||W_c||_F),
    W_c = W - mean_k W_k (the softmax-invariant part of W). For K = 2 this is
    y_i f(x_i) / ||theta|| with theta = W[1] - W[0], beta = b[1] - b[0],
    labels +-1 (paper section 2.1, DESIGN section 4). For K > 2 the numerator
    is the multiclass score margin and the norm the Frobenius norm minimized
    by the multiclass hard-margin SVM (``hard_margin_svm``), so the SVM
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
        yc = y[s:s + Xc.shape[0]]
        ar = np.arange(Xc.shape[0])
        fy = F[ar, yc]
        F[ar, yc] = -np.inf
        out[s:s + Xc.shape[0]] = (fy - F.max(axis=1)) / norm
    return out


def group_margins(W: Any, b: Any | None, X: Any, y: Any, g: Any,
                  n_groups: int, *, chunk_rows: int | None = None) -> pd.DataFrame:
    """Per-group margins of a linear head (paper section 2.1, Table 1).

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
    return pd.DataFrame({"group": np.arange(n_groups), "min_margin": mins,
                         "avg_margin": avg, "n": n})


# --------------------------------------------------------------------------
# 3. Hard-margin SVM without intercept (dual coordinate descent)
# --------------------------------------------------------------------------

@dataclass
class SVMInfo:
    """Diagnostics of ``hard_margin_svm``.

    alpha: (N, K) dual variables of the constraints (w_{y_i} - w_k).x_i >= 1
    (alpha[i, y_i] = 0); W = sum_{i,k} alpha_ik x_i (e_{y_i} - e_k)^T.
    primal = ||W||_F^2 / 2 and dual = sum(alpha) - ||W||_F^2 / 2 at the
    returned W; gap = (primal of W / min constraint, which is feasible) - dual,
    rel_gap = gap / that primal; kkt = largest projected-gradient violation;
    min_constraint = min_{i, k != y_i} (w_{y_i} - w_k).x_i; epochs = coordinate
    sweeps done; n_support = number of examples with some alpha > 0;
    polished = whether an exact working-set solve was accepted; history =
    (epochs, KKT violation, min constraint) at each full check.
    """

    alpha: np.ndarray
    primal: float
    dual: float
    gap: float
    rel_gap: float
    kkt: float
    min_constraint: float
    epochs: int
    n_support: int
    polished: bool
    history: list = field(default_factory=list)


def check_margin_constraints(W: Any, X: Any, y: Any, *,
                             chunk_rows: int | None = None) -> float:
    """min over i and k != y_i of (w_{y_i} - w_k) . x_i (no bias).

    >= 1 - tol for a valid ``hard_margin_svm`` solution. For K = 2 this is
    min_i y_i theta . x_i with theta = W[1] - W[0]; W may be a theta (d,).
    """
    W, _ = _weights(W)
    X = _as_2d(X)
    y = _labels(y, X.shape[0], W.shape[0])
    return float(_constraints_min_rows(W, X, y, _chunk_rows(X.shape[1], chunk_rows)).min())


def _constraints_min_rows(W: np.ndarray, X: Any, y: np.ndarray, rows: int) -> np.ndarray:
    """Per example, min_{k != y_i} (w_{y_i} - w_k) . x_i."""
    out = np.empty(X.shape[0])
    for s, Xc in _chunks(X, rows):
        S = Xc @ W.T
        ar = np.arange(Xc.shape[0])
        yc = y[s:s + Xc.shape[0]]
        C = S[ar, yc][:, None] - S
        C[ar, yc] = np.inf
        out[s:s + Xc.shape[0]] = C.min(axis=1)
    return out


def _kkt(W: np.ndarray, Xc: np.ndarray, yc: np.ndarray, ac: np.ndarray,
         inv2C: float) -> tuple[np.ndarray, np.ndarray]:
    """Projected-gradient violation (per example, max over k) and min
    constraint (per example) for rows Xc with duals ac (m, K)."""
    S = Xc @ W.T
    ar = np.arange(Xc.shape[0])
    C = S[ar, yc][:, None] - S
    G = C - 1.0 + ac * inv2C
    PG = np.where(ac > 0, np.abs(G), np.maximum(-G, 0.0))
    PG[ar, yc] = 0.0
    C[ar, yc] = np.inf
    return PG.max(axis=1), C.min(axis=1)


def _sweep(Xa: np.ndarray, qa: np.ndarray, ya: np.ndarray, A: np.ndarray,
           W: np.ndarray, order: np.ndarray, inv2C: float) -> None:
    """One dual coordinate-descent sweep over the rows of the working set.

    Dual (min form): D(alpha) = ||W(alpha)||^2 / 2 - sum alpha
    (+ sum alpha^2 / (4C) for the squared-hinge soft margin). Coordinate
    (i, k): gradient G = (w_y - w_k).x_i - 1 (+ alpha/(2C)), curvature
    2 ||x_i||^2 (+ 1/(2C)); exact minimization clipped at alpha >= 0.
    Updates A (duals, rows of the working set) and W in place.
    """
    K = W.shape[0]
    if K == 2:
        # W = [-theta/2, theta/2]: keep w1 and use (w_y - w_k).x = +-2 w1.x.
        w1 = W[1].copy()
        for j in order:
            x = Xa[j]
            c = ya[j]
            k = 1 - c
            sgn = 1.0 if c == 1 else -1.0
            a = A[j, k]
            G = 2.0 * sgn * (w1 @ x) - 1.0 + a * inv2C
            if a == 0.0 and G >= 0.0:
                continue
            new = a - G / (2.0 * qa[j] + inv2C)
            if new < 0.0:
                new = 0.0
            delta = new - a
            if delta != 0.0:
                A[j, k] = new
                w1 += (sgn * delta) * x
        W[1] = w1
        W[0] = -w1
        return
    for j in order:
        x = Xa[j]
        c = ya[j]
        q = qa[j]
        s = W @ x
        a = A[j]
        e = None
        for k in range(K):
            if k == c:
                continue
            G = s[c] - s[k] - 1.0 + a[k] * inv2C
            if a[k] == 0.0 and G >= 0.0:
                continue
            new = a[k] - G / (2.0 * q + inv2C)
            if new < 0.0:
                new = 0.0
            delta = new - a[k]
            if delta != 0.0:
                a[k] = new
                s[c] += delta * q
                s[k] -= delta * q
                if e is None:
                    e = np.zeros(K)
                e[c] += delta
                e[k] -= delta
        if e is not None:
            W += e[:, None] * x[None, :]


def _w_from_alpha(alpha: np.ndarray, X: Any, y: np.ndarray, K: int, rows: int) -> np.ndarray:
    """W(alpha) = sum_{i,k} alpha_ik x_i (e_{y_i} - e_k)^T."""
    coef = -alpha.copy()
    coef[np.arange(len(y)), y] = alpha.sum(axis=1)
    W = np.zeros((K, X.shape[1]))
    for s, Xc in _chunks(X, rows):
        W += coef[s:s + Xc.shape[0]].T @ Xc
    return W


def _dual_value(alpha: np.ndarray, W: np.ndarray, inv2C: float) -> float:
    """Dual objective (max form) sum alpha - ||W||^2/2 - sum alpha^2/(4C)."""
    return float(alpha.sum() - 0.5 * np.sum(W * W) - 0.5 * inv2C * np.sum(alpha * alpha))


def _exact_restricted(ws: np.ndarray, X: Any, y: np.ndarray, K: int, inv2C: float,
                      max_pairs: int) -> tuple[np.ndarray, float] | None:
    """Solve the SVM exactly on the constraints of the examples ``ws``.

    Max-margin duality: with constraint vectors Z_ik = x_i (e_{y_i} - e_k)^T,
    the hard-margin solution is W* = p / ||p||^2 where p is the minimum-norm
    point of conv{Z_ik} (its norm is the best margin), and the minimum-norm
    point is the NNLS problem min_{lam >= 0} ||Z^T lam||^2 + (1 - sum lam)^2
    (p = Z^T lam / sum lam). Solved with scipy.optimize.nnls (Lawson-Hanson
    active set, exact). For the squared-hinge soft margin the Z_ik get
    orthogonal extra coordinates 1/sqrt(2C) (the soft margin is the hard
    margin on those augmented vectors). Returns (alpha over the ws rows,
    ||p||), with alpha = mu / ||p~||^2, mu = lam / sum lam; None if too large
    or the solver fails.
    """
    from scipy.optimize import nnls
    m = ws.size
    n_pairs = m * (K - 1)
    extra = n_pairs if inv2C > 0 else 0
    if m == 0 or n_pairs > max_pairs or n_pairs * (K * X.shape[1] + 1 + extra) > _EXACT_VALUES:
        return None
    Xs = np.asarray(X[ws], dtype=np.float64)
    d = Xs.shape[1]
    ys = y[ws]
    ks = np.array([[k for k in range(K) if k != c] for c in ys]).reshape(-1)
    rows_i = np.repeat(np.arange(m), K - 1)
    # Columns Z_ik flattened as (K, d): +x_i in row y_i, -x_i in row k.
    A = np.zeros((K * d + extra + 1, n_pairs))
    xi = Xs[rows_i].T                                   # (d, n_pairs)
    cols = np.arange(n_pairs)
    for c in range(K):
        sel_y = ys[rows_i] == c
        sel_k = ks == c
        A[c * d:(c + 1) * d, cols[sel_y]] += xi[:, sel_y]
        A[c * d:(c + 1) * d, cols[sel_k]] -= xi[:, sel_k]
    if extra:
        A[K * d + cols, cols] = np.sqrt(inv2C)
    A[-1] = 1.0
    b = np.zeros(A.shape[0])
    b[-1] = 1.0
    try:
        lam, _ = nnls(A, b, maxiter=max(50 * n_pairs, 1000))
    except Exception:  # noqa: BLE001 - any solver failure: fall back to CD
        return None
    tot = lam.sum()
    if not np.isfinite(tot) or tot <= 0:
        return None
    mu = lam / tot
    p = A[:-1] @ mu
    pn2 = float(p @ p)
    out = np.zeros((m, K))
    if pn2 > 0:
        out[rows_i, ks] = mu / pn2
    return out, float(np.linalg.norm(A[:K * d] @ mu))


def hard_margin_svm(X: Any, y: Any, n_classes: int, tol: float = 1e-6,
                    max_epochs: int = 20_000, *, C: float | None = None,
                    seed: int = 0, exact: bool = True,
                    max_exact_pairs: int = 6000,
                    min_margin_ratio: float = 1e-9,
                    chunk_rows: int | None = None,
                    return_info: bool = False) -> np.ndarray | tuple[np.ndarray, SVMInfo]:
    """Hard-margin linear SVM without intercept, solved exactly in the dual.

    Primal (paper section 2.1, Figure 3): min ||W||_F^2 / 2 s.t.
    (w_{y_i} - w_k) . x_i >= 1 for all i and k != y_i; W is (K, d). For
    K = 2 the solution is W = [-theta/2, theta/2] with theta the binary
    hard-margin SVM min ||theta||^2 s.t. y_i theta . x_i >= 1 (labels +-1),
    so W[1] - W[0] = theta. On separable data gradient descent on the
    cross-entropy converges in direction to it (Soudry et al. 2018).

    Dual: max sum alpha - ||W(alpha)||^2 / 2 over alpha >= 0 (no equality
    constraint: there is no intercept), W(alpha) = sum alpha_ik x_i
    (e_{y_i} - e_k)^T. Solved by dual coordinate descent (exact coordinate
    minimization, random order) on a working set (examples with alpha > 0,
    violating KKT, or within 0.05 of their constraint), in rounds of doubling
    length, with vectorized full KKT checks over all N in chunks after each
    round. If ``exact``, each round ends with an exact solve of the SVM
    restricted to the current support plus the examples nearest to their
    constraints (at most ``max_exact_pairs`` constraints and 256 MiB;
    minimum-norm point by NNLS, ``_exact_restricted``), which replaces the
    iterate when it raises the dual objective: once that set holds the
    support, the next full check finds no violation and the answer is exact
    to rounding (column generation, with CD finding the columns). Stops when the largest projected-gradient
    (KKT) violation over all N is <= tol; the relative duality gap is then
    about 3 tol or less (``SVMInfo`` reports it).

    ``C``: None (default) for the hard margin. A number gives the squared-hinge
    soft margin min ||W||^2/2 + C sum_{i,k} max(0, 1 - (w_y - w_k).x_i)^2 (for
    K = 2 in theta: ||theta||^2/2 + 2C sum max(0, 1 - y theta.x)^2), the
    loss of sklearn's LinearSVC that the authors' exps/svm_convergence.py used
    with C = 1e5, for data that are not separable.

    Raises LLRError if the data are not linearly separable: a zero feature
    vector; or the certificate ||W(alpha)||_F / sum(alpha), an upper bound on
    the best margin max_W min (w_y - w_k).x / ||W||_F, falls below
    min_margin_ratio * max ||x_i|| (the dual grows without bound); or
    max_epochs sweeps end before any iterate meets all margin constraints;
    or the exact solve on a working set finds a best margin below
    min_margin_ratio * max ||x_i|| (the convex hull of the constraint vectors
    contains 0). Also raises if max_epochs end without reaching tol.
    """
    X = _as_2d(X)
    N, d = X.shape
    K = int(n_classes)
    if K < 2:
        raise LLRError(f"hard_margin_svm: n_classes must be >= 2, got {K}")
    y = _labels(y, N, K)
    if N == 0:
        raise LLRError("hard_margin_svm: no examples")
    if C is not None and not C > 0:
        raise LLRError(f"hard_margin_svm: C must be > 0 or None, got {C}")
    inv2C = 0.0 if C is None else 1.0 / (2.0 * C)
    rows = _chunk_rows(d, chunk_rows)
    q = np.empty(N)
    for s, Xc in _chunks(X, rows):
        q[s:s + Xc.shape[0]] = np.einsum("ij,ij->i", Xc, Xc)
    if C is None and np.any(q == 0):
        raise LLRError("hard_margin_svm: data are not linearly separable "
                       "(a feature vector is zero, so its margin constraint cannot be met)")
    R = float(np.sqrt(q.max()))
    rng = np.random.default_rng(seed)
    alpha = np.zeros((N, K))
    W = np.zeros((K, d))
    epochs = 0
    found_feasible = False
    polished = False
    history: list = []
    round_len = 10

    def certificate() -> float:
        tot = alpha.sum()
        return np.linalg.norm(W) / tot if tot > 0 else np.inf

    viol, cmin = _full_check(W, X, y, alpha, inv2C, rows)
    converged = False
    while True:
        kkt = float(viol.max())
        history.append((epochs, kkt, float(cmin.min())))
        if cmin.min() > 0:
            found_feasible = True
        if kkt <= tol:
            converged = True
            break
        if C is None and certificate() < min_margin_ratio * R:
            raise LLRError(
                "hard_margin_svm: data are not linearly separable (dual unbounded: "
                f"margin upper bound ||W||/sum(alpha) = {certificate():.3g} "
                f"< {min_margin_ratio:g} * max||x||)")
        if epochs >= max_epochs:
            break
        # Working set: support, violators and points close to their constraint.
        ws = np.flatnonzero((alpha.max(axis=1) > 0) | (viol > tol) | (cmin < 1.05))
        qa, ya, Aa = q[ws], y[ws], alpha[ws]
        cached = ws.size * d <= _CACHE_VALUES
        Xa = np.asarray(X[ws], dtype=np.float64) if cached else None
        check_every = 1 if ws.size < 5000 else 5
        for inner in range(1, round_len + 1):
            if epochs >= max_epochs:
                break
            if cached:
                _sweep(Xa, qa, ya, Aa, W, rng.permutation(ws.size), inv2C)
            else:  # read the working set in blocks of rows, in random order
                perm = rng.permutation(ws.size)
                for st in range(0, ws.size, rows):
                    blk = np.sort(perm[st:st + rows])
                    Ab = Aa[blk]
                    _sweep(np.asarray(X[ws[blk]], dtype=np.float64), qa[blk], ya[blk], Ab, W,
                           rng.permutation(blk.size), inv2C)
                    Aa[blk] = Ab
            epochs += 1
            if inner % check_every == 0:
                if cached:
                    v_ws = _kkt(W, Xa, ya, Aa, inv2C)[0].max()
                else:
                    v_ws = max(_kkt(W, np.asarray(X[ws[st:st + rows]], dtype=np.float64),
                                    ya[st:st + rows], Aa[st:st + rows], inv2C)[0].max()
                               for st in range(0, ws.size, rows))
                if v_ws <= tol * 0.5:
                    break
        round_len = min(2 * round_len, 640)
        alpha[ws] = Aa
        del Xa
        # Recompute W from alpha to wash out rounding drift of the updates.
        W = _w_from_alpha(alpha, X, y, K, rows)
        viol, cmin = _full_check(W, X, y, alpha, inv2C, rows)
        if exact and viol.max() > tol:
            # Exact solve on the support plus the examples nearest to their
            # constraints, within the size budget; if the support alone is
            # over budget, on the budget's worth of most violated examples
            # (a non-separable subset still proves non-separability).
            budget = min(max_exact_pairs, _EXACT_VALUES // (K * d + 1)) // (K - 1)
            sup = np.flatnonzero(alpha.max(axis=1) > 0)
            near = np.argsort(cmin, kind="stable")
            if sup.size <= budget:
                near = near[~np.isin(near, sup)][:budget - sup.size]
                ex = np.union1d(sup, near)
            else:
                ex = np.sort(near[:budget])
            if ex.size:
                got = _exact_restricted(ex, X, y, K, inv2C, max_exact_pairs)
                if got is not None:
                    a_ex, margin = got
                    if C is None and margin < min_margin_ratio * R:
                        raise LLRError(
                            "hard_margin_svm: data are not linearly separable (the convex hull "
                            f"of the margin constraint vectors contains 0: best margin "
                            f"{margin:.3g} < {min_margin_ratio:g} * max||x||)")
                    cand = np.zeros_like(alpha)
                    cand[ex] = a_ex
                    Wc = _w_from_alpha(cand, X, y, K, rows)
                    if _dual_value(cand, Wc, inv2C) >= _dual_value(alpha, W, inv2C):
                        alpha, W, polished = cand, Wc, True
                        viol, cmin = _full_check(W, X, y, alpha, inv2C, rows)

    kkt = float(viol.max())
    if not converged and C is None and not found_feasible:
        raise LLRError(
            f"hard_margin_svm: data are not linearly separable (no W met the margin "
            f"constraints in {max_epochs} epochs; dual still growing, KKT violation {kkt:.3g})")
    if not converged:
        raise LLRError(f"hard_margin_svm: no convergence in {max_epochs} epochs "
                       f"(KKT violation {kkt:.3g} > tol {tol:g}); raise max_epochs or tol")
    sq = float(np.sum(W * W))
    dual = _dual_value(alpha, W, inv2C)
    if C is not None:
        slack = np.maximum(0.0, 1.0 - _all_constraints(W, X, y, rows))
        primal = 0.5 * sq + C * float(np.sum(slack**2))
        feas_primal = primal
    else:
        primal = 0.5 * sq
        m = float(cmin.min())
        feas_primal = 0.5 * sq / (m * m) if m > 0 else np.inf
    gap = feas_primal - dual
    info = SVMInfo(alpha=alpha, primal=primal, dual=dual, gap=gap,
                   rel_gap=gap / feas_primal if feas_primal > 0 else np.nan,
                   kkt=kkt, min_constraint=float(cmin.min()), epochs=epochs,
                   n_support=int(np.count_nonzero(alpha.max(axis=1) > 0)),
                   polished=polished, history=history)
    return (W, info) if return_info else W


def _full_check(W: np.ndarray, X: Any, y: np.ndarray, alpha: np.ndarray,
                    inv2C: float, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """KKT violation and min constraint per example for given W and alpha."""
    N = X.shape[0]
    viol = np.empty(N)
    cmin = np.empty(N)
    for s, Xc in _chunks(X, rows):
        sl = slice(s, s + Xc.shape[0])
        viol[sl], cmin[sl] = _kkt(W, Xc, y[sl], alpha[sl], inv2C)
    return viol, cmin


def _all_constraints(W: np.ndarray, X: Any, y: np.ndarray, rows: int) -> np.ndarray:
    """All constraint values (w_{y_i} - w_k).x_i for k != y_i, flattened."""
    out = []
    for s, Xc in _chunks(X, rows):
        S = Xc @ W.T
        ar = np.arange(Xc.shape[0])
        yc = y[s:s + Xc.shape[0]]
        Cm = S[ar, yc][:, None] - S
        mask = np.ones_like(Cm, bool)
        mask[ar, yc] = False
        out.append(Cm[mask])
    return np.concatenate(out)


# --------------------------------------------------------------------------
# 4. Directional error
# --------------------------------------------------------------------------

def _direction(W: Any) -> np.ndarray:
    W = _to_numpy(W)
    if W.ndim == 1:
        return W
    if W.ndim != 2:
        raise LLRError(f"directional_error: expected W of shape (K, d), got {W.shape}")
    if W.shape[0] == 1:
        return W[0]
    if W.shape[0] == 2:
        return W[1] - W[0]
    return (W - W.mean(axis=0, keepdims=True)).ravel()


def directional_error(W: Any, W_ref: Any) -> float:
    """|| v/||v|| - v_ref/||v_ref|| || (paper Figure 3, DESIGN section 4).

    v = W[1] - W[0] (theta) for K = 2 (a 1-D or (1, d) W is taken as theta);
    for K > 2 v = W - mean_k W_k flattened (the part of W that the softmax
    sees). Biases are not part of the direction. Ranges over [0, 2].
    """
    v, r = _direction(W), _direction(W_ref)
    if v.shape != r.shape:
        raise LLRError(f"directional_error: shapes differ ({v.shape} vs {r.shape})")
    nv, nr = np.linalg.norm(v), np.linalg.norm(r)
    if nv == 0 or nr == 0:
        raise LLRError("directional_error: a weight direction is zero")
    return float(np.linalg.norm(v / nv - r / nr))


# --------------------------------------------------------------------------
# 5. Drivers
# --------------------------------------------------------------------------

def _default_fit() -> Callable[..., Any]:
    from llr.lastlayer import fit_softmax  # lazy: imports torch
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


def svm_convergence(X: Any, y: Any, n_classes: int, fit: Callable[..., Any] | None = None,
                    epochs: int = 1000, seed: int = 0, *, lr: float = 1e-3,
                    batch_size: int = 32, svm_tol: float = 1e-6,
                    svm_max_epochs: int = 20_000, svm_C: float | None = None,
                    device: str = "cpu") -> pd.DataFrame:
    """Directional error of the LLR head to the hard-margin SVM, per epoch
    (paper Figure 3, DESIGN section 4).

    X, y: the held-out embeddings and labels (float16 memmaps are upcast).
    W_svm = hard_margin_svm(X, y) (no intercept). The LLR head is fit with
    ``fit`` (default llr.lastlayer.fit_softmax) with SGD at ``lr`` (1e-3 in
    Figure 3, for 10x the standard epochs: pass ``epochs`` accordingly),
    recording every epoch. The head keeps its bias during training, as in the
    authors' exps/svm_convergence.py (nn.Linear with bias, SVM with
    fit_intercept=False); the bias is not part of the direction.

    Returns columns epoch (1..epochs), directional_error; ``df.attrs`` holds
    the SVM's diagnostics (min constraint, KKT violation, relative gap).
    """
    fit = fit or _default_fit()
    X = _as_2d(X)
    Xf = np.asarray(X, dtype=np.float32)
    y = _labels(y, Xf.shape[0], int(n_classes))
    W_svm, info = hard_margin_svm(X, y, n_classes, tol=svm_tol, max_epochs=svm_max_epochs,
                                  C=svm_C, return_info=True)
    res = fit(Xf, y, n_classes=int(n_classes), epochs=int(epochs), batch_size=batch_size,
              lr=lr, seed=seed, checkpoint_epochs=tuple(range(1, int(epochs) + 1)),
              device=device)
    hist = _history(res)
    rows = []
    for e in range(1, int(epochs) + 1):
        W, _ = _checkpoint(hist, e)
        rows.append((e, directional_error(W, W_svm)))
    df = pd.DataFrame(rows, columns=["epoch", "directional_error"])
    df.attrs.update({"svm_min_constraint": info.min_constraint, "svm_kkt": info.kkt,
                     "svm_rel_gap": info.rel_gap, "svm_n_support": info.n_support,
                     "seed": seed, "lr": lr})
    return df


def margin_records(X_train: Any, y_train: Any, g_train: Any, X_test: Any, y_test: Any,
                   g_test: Any, n_groups: int, n_classes: int,
                   fit: Callable[..., Any] | None = None, epochs: int = 100,
                   checkpoint_epochs: Sequence[int] = (), seed: int = 0, *,
                   lr: float = 1e-2, batch_size: int = 32,
                   device: str = "cpu") -> pd.DataFrame:
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
    from llr.metrics import group_accuracy
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
    res = fit(np.asarray(X_train, dtype=np.float32), y_train, n_classes=K, epochs=int(epochs),
              batch_size=batch_size, lr=lr, seed=seed, checkpoint_epochs=cps, device=device)
    hist = _history(res)
    rows = _chunk_rows(X_test.shape[1], None)
    out = []
    for e in cps:
        W, b = _checkpoint(hist, e)
        gm = group_margins(W, b, X_train, y_train, g_train, G)
        pred = np.empty(X_test.shape[0], dtype=np.int64)
        for s, Xc in _chunks(X_test, rows):
            pred[s:s + Xc.shape[0]] = np.argmax(Xc @ W.T + b, axis=1)
        acc = group_accuracy(pred, y_test, g_test, G)
        out.append(pd.DataFrame({"seed": seed, "epoch": e, "group": gm["group"],
                                 "min_margin": gm["min_margin"],
                                 "avg_margin": gm["avg_margin"], "n_train": gm["n"],
                                 "test_acc": acc}))
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
    ``by``: optional columns (e.g. dataset) to correlate within separately.

    Returns columns [*by,] kind, r, p_value, n_points, over, where ``over``
    states what was pooled ("groups x seeds x LLR checkpoints"); r and
    p_value are NaN with fewer than 3 points or a constant input.
    """
    from scipy.stats import pearsonr
    by = list(by or [])
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
            rows.append((*key, kind, r, p, int(x.size), OVER))
    return pd.DataFrame(rows, columns=[*by, "kind", "r", "p_value", "n_points", "over"])
