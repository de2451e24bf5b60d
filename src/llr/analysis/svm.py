"""The linear SVM without intercept and the directional error of an LLR head
with respect to it (paper section 2.2, Figure 3).

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

torch is never imported at module level (the LLR fit function is imported
lazily, or passed in). Where the authors' ``exps/svm_convergence.py``
differs we follow the paper: it fits sklearn LinearSVC(fit_intercept=False,
C=1e5) (squared hinge) on the LLR training (held-out) features, as here, but
subtracts its (1, d) coefficient from the (2, d) head W / ||W||_F by
broadcasting, which is not zero even for a head aligned with the SVM (here
v = W[1] - W[0] is compared), and for K > 2 uses one-vs-rest SVMs and
averages per-class errors of row-normalized weights (here: the multiclass
SVM, Kesler's construction, and the centered W as one vector; MultiNLI is not
in the paper's Figure 3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from llr.analysis._arrays import _as_2d, _chunk_rows, _chunks, _labels, _to_numpy, _weights
from llr.analysis._heads import _checkpoint, _default_fit, _history
from llr.errors import LLRError

__all__ = [
    "SVM_C",
    "SVMFit",
    "kesler",
    "linear_svm",
    "check_margin_constraints",
    "directional_error",
    "svm_convergence",
]


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


def check_margin_constraints(W: Any, X: Any, y: Any, *, chunk_rows: int | None = None) -> float:
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
        yc = y[s : s + Xc.shape[0]]
        C = S[ar, yc][:, None] - S
        C[ar, yc] = np.inf
        out[s : s + Xc.shape[0]] = C.min(axis=1)
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
    others = others[others != y[:, None]].reshape(N, K - 1)  # classes k != y_i
    i = np.repeat(np.arange(N), K - 1)
    k = others.reshape(-1)
    rows = np.arange(i.size)
    Z = np.zeros((i.size, K, d))
    Z[rows, y[i]] = X[i]
    Z[rows, k] = -X[i]
    s = np.where(rows % 2 == 0, 1, -1)
    Z *= s[:, None, None]
    return Z.reshape(i.size, K * d), s


def linear_svm(
    X: Any, y: Any, n_classes: int, *, C: float = SVM_C, tol: float = 1e-5, max_iter: int = 10_000, seed: int = 0
) -> SVMFit:
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
    svc = LinearSVC(
        C=C,
        loss="squared_hinge",
        penalty="l2",
        dual=True,
        fit_intercept=False,
        tol=tol,
        max_iter=int(max_iter),
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported as SVMFit.converged
        svc.fit(Z, t)
    theta = svc.coef_[0]
    W = np.vstack([-theta / 2.0, theta / 2.0]) if K == 2 else theta.reshape(K, d)
    n_iter = int(np.max(svc.n_iter_))
    m = check_margin_constraints(W, X, y)
    return SVMFit(
        W=W, min_constraint=m, separable=bool(m > 0), converged=n_iter < int(max_iter), n_iter=n_iter, C=float(C)
    )


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


def svm_convergence(
    X: Any,
    y: Any,
    n_classes: int,
    fit: Callable[..., Any] | None = None,
    epochs: int = 1000,
    seed: int = 0,
    *,
    lr: float = 1e-3,
    batch_size: int = 32,
    svm_C: float = SVM_C,
    svm_tol: float = 1e-5,
    svm_max_iter: int = 10_000,
    device: str = "cpu",
) -> pd.DataFrame:
    """Directional error of the LLR head to the SVM, per epoch (paper
    section 2.2, Figure 3).

    X, y: the held-out embeddings and labels (float16 memmaps are upcast).
    The reference is ``linear_svm(X, y, C=svm_C)`` (no intercept; the
    authors' LinearSVC with C = 1e5), which never fails on non-separable
    features. The LLR head is fit with ``fit`` (default
    llr.lastlayer.fit.fit_softmax: SGD, batch 32) at ``lr`` (1e-3 in Figure 3, for
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
    res = fit(
        Xf,
        y,
        n_classes=int(n_classes),
        epochs=int(epochs),
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        checkpoint_epochs=tuple(range(1, int(epochs) + 1)),
        device=device,
    )
    hist = _history(res)
    err = [directional_error(_checkpoint(hist, e)[0], svm.W) for e in range(1, int(epochs) + 1)]
    df = pd.DataFrame({"epoch": np.arange(1, int(epochs) + 1), "directional_error": err, "separable": svm.separable})
    df.attrs.update(
        {
            "separable": svm.separable,
            "svm_min_constraint": svm.min_constraint,
            "svm_converged": svm.converged,
            "svm_n_iter": svm.n_iter,
            "svm_C": svm.C,
            "seed": seed,
            "lr": lr,
        }
    )
    return df
