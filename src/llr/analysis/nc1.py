"""Analyses of the paper's sections 2.1-2.2: neural collapse (NC1), margins
of linear heads, the linear SVM without intercept and the directional error
of an LLR head with respect to it (Figure 3), and the margin/accuracy
correlation of Table 1.

Everything here is numpy/scipy/pandas on CPU so that analysis jobs start fast;
torch is never imported at module level (the LLR fit function is imported
lazily, or passed in). Inputs may be float16 memory maps (the cached
embeddings): they are read in row chunks and upcast to float64 chunk by chunk.

Definitions (the paper's notation: K classes, features h in R^d):

* NC1 = tr(Sigma_W pinv(Sigma_B)) / K with
  Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T,
  Sigma_B = (1/K) sum_k (mu_k - mu_G)(mu_k - mu_G)^T, mu_G = (1/K) sum_k mu_k
  the mean of the class means (paper section 2.1); ``nc1(global_mean="all")``
  takes the mean of all N features instead (Papyan et al. 2020; the authors'
  ``exps/collapse.py``).
* Margin of a linear head f(x) = W x + b on (x, y):
  (f_y(x) - max_{k != y} f_k(x)) / (sqrt(2) ||W - mean_k W_k||_F). For K = 2
  this is exactly y f(x) / ||theta|| with theta = W[1] - W[0] and labels
  +-1 (paper section 2.2); for K > 2 it is the normalized margin maximized
  by the multiclass hard-margin SVM below, divided by sqrt(2).
* SVM without intercept (``linear_svm``, scikit-learn LinearSVC, C = 1e5 as
  the authors): on separable data it reaches the hard-margin SVM
  min ||W||_F^2 s.t. (w_{y_i} - w_k) . x_i >= 1 for all i and k != y_i; for
  K = 2, W = [-theta/2, theta/2] with theta the binary SVM
  (min ||theta||^2 s.t. y_i theta . x_i >= 1, paper section 2.2). Its
  direction is the limit of gradient descent on the cross-entropy on
  separable data (Soudry et al. 2018). Real held-out features are often not
  separable: the soft-margin fit is then the reference, flagged
  ``separable=False``.
* Directional error || v/||v|| - v_ref/||v_ref|| || (Figure 3) with
  v = W[1] - W[0] for K = 2 and v = W - mean_k W_k (flattened) for K > 2
  (the part of W the softmax sees; the multiclass SVM's W is centered).

Where the authors' code (tmlabonte/understanding-llr) differs, we follow the
paper's definitions and say so here:
``exps/collapse.py`` regularizes Sigma_B by 1e-3 I before the pinv (``nc1``'s
``ridge`` reproduces that) and hooks ResNet's layer4 output (before pooling);
its margins use softmax probabilities (p_y - max_{k!=y} p_k) divided by the
norm of all trainable parameters (W and b), with min over positive margins
set to 0 when there are none (NaN here); ``exps/svm_convergence.py`` fits
sklearn LinearSVC(fit_intercept=False, C=1e5) (squared hinge) on the LLR
training (held-out) features, as here, but subtracts its (1, d) coefficient
from the (2, d) head W / ||W||_F by broadcasting, which is not zero even for
a head aligned with the SVM (here v = W[1] - W[0] is compared), and for
K > 2 uses one-vs-rest SVMs and averages per-class errors of row-normalized
weights (here: the multiclass SVM, Kesler's construction, and the centered
W as one vector; MultiNLI is not in the paper's Figure 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from llr.errors import LLRError

# Rows per chunk: about 2**21 float64 values (16 MiB) per chunk.
_CHUNK_VALUES = 2**21

__all__ = [
    "NC1_GLOBAL_MEANS",
    "nc1",
    "margins",
    "group_margins",
    "SVM_C",
    "SVMFit",
    "kesler",
    "linear_svm",
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

NC1_GLOBAL_MEANS = ("class_means", "all")


def nc1(H: Any, y: Any, n_classes: int, *, global_mean: str = "class_means", ridge: float = 0.0,
        rtol: float | None = None, chunk_rows: int | None = None) -> float:
    """Within-class variability collapse NC1 = tr(Sigma_W pinv(Sigma_B)) / K.

    Paper section 2.1. ``H`` (N, d) are penultimate
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

    ``global_mean``: ``"class_means"`` (default, the paper's section 2.1:
    mu_G = (1/K) sum_k mu_k) or ``"all"`` (mu_G = the mean of all N features,
    Papyan et al. 2020 and the authors' ``exps/collapse.py``). They differ
    when classes are imbalanced; Sigma_W does not depend on the choice.

    Raises LLRError if a class has no example or the input is malformed.
    """
    if global_mean not in NC1_GLOBAL_MEANS:
        raise LLRError(f"nc1: global_mean = {global_mean!r}, expected one of {list(NC1_GLOBAL_MEANS)}")
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
    # mu_G: mean of the class means (paper) or of all features; either way
    # some weighted sum of the mu_k - mu_G vanishes, so M has rank <= K - 1.
    mu_g = mu.mean(axis=0) if global_mean == "class_means" else counts @ mu / N
    M = (mu - mu_g).T                              # (d, K)

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
        yc = y[s:s + Xc.shape[0]]
        ar = np.arange(Xc.shape[0])
        fy = F[ar, yc]
        F[ar, yc] = -np.inf
        out[s:s + Xc.shape[0]] = (fy - F.max(axis=1)) / norm
    return out


def group_margins(W: Any, b: Any | None, X: Any, y: Any, g: Any,
                  n_groups: int, *, chunk_rows: int | None = None) -> pd.DataFrame:
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
    return pd.DataFrame({"group": np.arange(n_groups), "min_margin": mins,
                         "avg_margin": avg, "n": n})


# --------------------------------------------------------------------------
# 3. Linear SVM without intercept (scikit-learn LinearSVC)
# --------------------------------------------------------------------------

# The authors' exps/svm_convergence.py: LinearSVC(fit_intercept=False, C=1e5).
SVM_C = 1e5


@dataclass
class SVMFit:
    """A linear SVM without intercept (``linear_svm``).

    ``W`` (K, d): for K = 2, [-theta/2, theta/2] with theta the binary SVM
    (so W[1] - W[0] = theta). ``min_constraint`` = min over i and k != y_i of
    (w_{y_i} - w_k) . x_i (K = 2: min_i y_i theta . x_i, labels +-1).
    ``separable`` = min_constraint > 0: the SVM classifies every point
    correctly through the origin, which certifies that the data are linearly
    separable without intercept; False means the SVM found no separating
    direction (non-separable features, as real held-out features often are).
    ``converged``: liblinear stopped on ``tol`` before ``max_iter``;
    ``n_iter``: its iterations; ``C``: the penalty used.
    """

    W: np.ndarray
    min_constraint: float
    separable: bool
    converged: bool
    n_iter: int
    C: float


def check_margin_constraints(W: Any, X: Any, y: Any, *,
                             chunk_rows: int | None = None) -> float:
    """min over i and k != y_i of (w_{y_i} - w_k) . x_i (no bias).

    >= 1 for a hard-margin SVM solution (up to the soft margin's slack), > 0
    iff W separates every point. For K = 2 this is min_i y_i theta . x_i with
    theta = W[1] - W[0]; W may be a theta (d,).
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


def kesler(X: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Kesler's construction: the K-class margin constraints as binary ones.

    Row j = (i, k) for each example i and class k != y_i is
    s_j * vec(x_i (e_{y_i} - e_k)^T) (length K d, W flattened row-major) with
    label s_j = +1, -1, +1, ... alternating (both labels occur, as LinearSVC
    needs; s_j theta . (s_j z) = theta . z, so the constraints are the same).
    A binary SVM without intercept on these rows is the multiclass SVM
    min ||W||_F^2 / 2 (+ C sum_{i, k != y_i} max(0, 1 - (w_{y_i} - w_k).x_i)^2).
    Returns (Z of shape (N (K-1), K d), s); O(N K^2 d) memory.
    """
    N, d = X.shape
    K = int(n_classes)
    others = np.tile(np.arange(K), (N, 1))
    others = others[others != y[:, None]].reshape(N, K - 1)     # classes k != y_i
    i = np.repeat(np.arange(N), K - 1)
    k = others.reshape(-1)
    rows = np.arange(i.size)
    Z = np.zeros((i.size, K, d))
    Z[rows, y[i]] = X[i]
    Z[rows, k] = -X[i]
    s = np.where(rows % 2 == 0, 1, -1)
    Z *= s[:, None, None]
    return Z.reshape(i.size, K * d), s


def linear_svm(X: Any, y: Any, n_classes: int, *, C: float = SVM_C, tol: float = 1e-5,
               max_iter: int = 10_000, seed: int = 0) -> SVMFit:
    """Linear SVM without intercept, scikit-learn's ``LinearSVC`` (liblinear,
    squared hinge, dual coordinate descent), as the authors fit Figure 3's
    reference (paper section 2.2; ``exps/svm_convergence.py``:
    ``LinearSVC(fit_intercept=False, C=1e5)``).

    K = 2: min ||theta||^2 / 2 + C sum_i max(0, 1 - y_i theta . x_i)^2 with
    labels +-1 (class 1 positive); on separable data C = 1e5 reaches the
    hard-margin SVM of the paper's section 2.2 (min ||theta||^2 s.t.
    y_i theta . x_i >= 1) to about 1e-4 in direction (tests/test_analysis.py).
    K > 2: the multiclass SVM whose hard-margin limit is
    min ||W||_F^2 s.t. (w_{y_i} - w_k) . x_i >= 1 for all k != y_i, the
    direction gradient descent on the cross-entropy converges to on separable
    data (Soudry et al. 2018): the same binary LinearSVC on Kesler's
    construction (``kesler``). Not LinearSVC's one-vs-rest (the authors' code
    for K > 2), whose K binary SVMs are not that limit, nor its
    ``multi_class="crammer_singer"`` (same hard-margin limit, but liblinear
    ignores ``max_iter`` there: 100000 sweeps, 240 s on 5000 x 128
    non-separable features, where the Kesler fit takes 5 s).

    Non-separable data are no error: the soft-margin fit is returned with
    ``separable=False`` (``SVMFit``). X may be a float16 memmap (read into
    float64 memory). Raises LLRError for malformed input or, for K = 2, a
    single class.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    X = np.asarray(_as_2d(X), dtype=np.float64)
    N, d = X.shape
    K = int(n_classes)
    if K < 2:
        raise LLRError(f"linear_svm: n_classes must be >= 2, got {K}")
    y = _labels(y, N, K)
    if N == 0:
        raise LLRError("linear_svm: no examples")
    if not C > 0:
        raise LLRError(f"linear_svm: C must be > 0, got {C}")
    if K == 2:
        if np.unique(y).size < 2:
            raise LLRError(f"linear_svm: every example has class {int(y[0])}; a binary SVM needs both classes")
        Z, t = X, y
    else:
        Z, t = kesler(X, y, K)
    svc = LinearSVC(C=C, loss="squared_hinge", penalty="l2", dual=True, fit_intercept=False, tol=tol,
                    max_iter=int(max_iter), random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported as SVMFit.converged
        svc.fit(Z, t)
    theta = svc.coef_[0]
    W = np.vstack([-theta / 2.0, theta / 2.0]) if K == 2 else theta.reshape(K, d)
    n_iter = int(np.max(svc.n_iter_))
    m = check_margin_constraints(W, X, y)
    return SVMFit(W=W, min_constraint=m, separable=bool(m > 0), converged=n_iter < int(max_iter),
                  n_iter=n_iter, C=float(C))


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
    """|| v/||v|| - v_ref/||v_ref|| || (paper section 2.2, Figure 3).

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
    from llr.lastlayer.methods import fit_softmax  # lazy: imports torch
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
                    batch_size: int = 32, svm_C: float = SVM_C, svm_tol: float = 1e-5,
                    svm_max_iter: int = 10_000, device: str = "cpu") -> pd.DataFrame:
    """Directional error of the LLR head to the SVM, per epoch (paper
    section 2.2, Figure 3).

    X, y: the held-out embeddings and labels (float16 memmaps are upcast).
    The reference is ``linear_svm(X, y, C=svm_C)`` (no intercept; the
    authors' LinearSVC with C = 1e5), which never fails on non-separable
    features. The LLR head is fit with ``fit`` (default
    llr.lastlayer.methods.fit_softmax: SGD, batch 32) at ``lr`` (1e-3 in Figure 3, for
    10x the standard epochs, hence 10x the steps: pass ``epochs``
    accordingly), recording every epoch. The head keeps its bias during
    training, as in the authors' exps/svm_convergence.py (nn.Linear with bias,
    SVM with fit_intercept=False); the bias is not part of the direction.

    Returns columns epoch (1..epochs), directional_error and separable (bool,
    the same in every row: ``SVMFit.separable``, the SVM classifies every
    held-out point correctly); ``df.attrs`` holds separable, svm_min_constraint,
    svm_converged, svm_n_iter, svm_C, seed and lr.
    """
    fit = fit or _default_fit()
    X = _as_2d(X)
    Xf = np.asarray(X, dtype=np.float32)
    y = _labels(y, Xf.shape[0], int(n_classes))
    svm = linear_svm(X, y, n_classes, C=svm_C, tol=svm_tol, max_iter=svm_max_iter, seed=seed)
    res = fit(Xf, y, n_classes=int(n_classes), epochs=int(epochs), batch_size=batch_size,
              lr=lr, seed=seed, checkpoint_epochs=tuple(range(1, int(epochs) + 1)),
              device=device)
    hist = _history(res)
    err = [directional_error(_checkpoint(hist, e)[0], svm.W) for e in range(1, int(epochs) + 1)]
    df = pd.DataFrame({"epoch": np.arange(1, int(epochs) + 1), "directional_error": err,
                       "separable": svm.separable})
    df.attrs.update({"separable": svm.separable, "svm_min_constraint": svm.min_constraint,
                     "svm_converged": svm.converged, "svm_n_iter": svm.n_iter, "svm_C": svm.C,
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
