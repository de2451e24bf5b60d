"""Neural collapse NC1 of penultimate features (paper section 2.1, Figure 2).

numpy on CPU, no torch; inputs may be float16 memory maps (the cached
embeddings): they are read in row chunks and upcast to float64 chunk by chunk.

NC1 = tr(Sigma_W pinv(Sigma_B)) / K (K classes, features h in R^d) with
Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T,
Sigma_B = (1/K) sum_k (mu_k - mu_G)(mu_k - mu_G)^T, mu_G = (1/K) sum_k mu_k
the mean of the class means (paper section 2.1); ``nc1(global_mean="all")``
takes the mean of all N features instead (Papyan et al. 2020; the authors'
``exps/collapse.py``). That script also regularizes Sigma_B by 1e-3 I before
the pinv (``nc1``'s ``ridge`` reproduces that) and hooks ResNet's layer4
output (before pooling).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llr.analysis._arrays import _as_2d, _chunk_rows, _chunks, _labels
from llr.errors import LLRError

__all__ = ["NC1_GLOBAL_MEANS", "nc1"]


NC1_GLOBAL_MEANS = ("class_means", "all")


def nc1(
    H: Any,
    y: Any,
    n_classes: int,
    *,
    global_mean: str = "class_means",
    ridge: float = 0.0,
    rtol: float | None = None,
    chunk_rows: int | None = None,
) -> float:
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
        raise LLRError(f"nc1: class(es) {missing.tolist()} have no example; NC1 needs all {K} classes present")
    if ridge < 0:
        raise LLRError(f"nc1: ridge must be >= 0, got {ridge}")
    rows = _chunk_rows(d, chunk_rows)
    classes = np.arange(K)

    # Pass 1: class sums.
    sums = np.zeros((K, d))
    for s, Hc in _chunks(H, rows):
        onehot = (y[s : s + Hc.shape[0], None] == classes).astype(np.float64)
        sums += onehot.T @ Hc
    mu = sums / counts[:, None]
    # mu_G: mean of the class means (paper) or of all features; either way
    # some weighted sum of the mu_k - mu_G vanishes, so M has rank <= K - 1.
    mu_g = mu.mean(axis=0) if global_mean == "class_means" else counts @ mu / N
    M = (mu - mu_g).T  # (d, K)

    U, sv, _ = np.linalg.svd(M, full_matrices=False)
    lam = sv**2  # K * eigenvalues of Sigma_B
    if rtol is None:
        rtol = max(d, K) * np.finfo(np.float64).eps
    keep = lam > rtol * lam.max() if lam.max() > 0 else np.zeros_like(lam, bool)
    U, lam = U[:, keep], lam[keep]

    # Pass 2: projections of within-class deviations on the class-mean subspace.
    proj_mu = (mu - mu_g) @ U  # (K, r)
    a = np.zeros(U.shape[1])
    tr_w = 0.0
    for s, Hc in _chunks(H, rows):
        yc = y[s : s + Hc.shape[0]]
        Hc -= mu_g
        P = Hc @ U - proj_mu[yc]
        a += np.einsum("ij,ij->j", P, P)
        if ridge > 0:
            Dc = Hc - (mu - mu_g)[yc]
            tr_w += float(np.einsum("ij,ij->", Dc, Dc))
    a /= N  # u_j^T Sigma_W u_j
    if ridge == 0:
        return float(np.sum(a / lam))
    tr_w /= N
    inside = np.sum(a / (lam / K + ridge))
    outside = max(tr_w - float(a.sum()), 0.0) / ridge
    return float((inside + outside) / K)
