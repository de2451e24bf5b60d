"""Tests of llr.analysis: NC1, margins, hard-margin SVM, directional error and
the Figure 3 / Table 1 drivers, against brute force on small data."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from llr.analysis import (OVER, check_margin_constraints, directional_error, group_margins,
                          hard_margin_svm, margin_correlation, margin_records, margins, nc1,
                          svm_convergence)
from llr.errors import LLRError


# --------------------------------------------------------------------------
# NC1
# --------------------------------------------------------------------------

def _nc1_brute(H, y, K, ridge=0.0):
    N, d = H.shape
    mu = np.stack([H[y == k].mean(0) for k in range(K)])
    mg = H.mean(0)
    Sb = sum(np.outer(m - mg, m - mg) for m in mu) / K
    D = H - mu[y]
    Sw = D.T @ D / N
    if ridge:
        return np.trace(Sw @ np.linalg.inv(Sb + ridge * np.eye(d))) / K
    return np.trace(Sw @ np.linalg.pinv(Sb, rcond=1e-10, hermitian=True)) / K


@pytest.mark.parametrize("N,d,K", [(200, 10, 3), (30, 50, 4), (101, 7, 2)])
def test_nc1_matches_brute_force(N, d, K):
    rng = np.random.default_rng(N + d + K)
    y = np.r_[np.arange(K), rng.integers(0, K, N - K)]
    H = rng.normal(size=(N, d)) + 3 * rng.normal(size=(K, d))[y] + 5.0
    ref = _nc1_brute(H, y, K)
    assert nc1(H, y, K) == pytest.approx(ref, rel=1e-8, abs=1e-12)
    # chunked reading gives the same value
    assert nc1(H, y, K, chunk_rows=7) == pytest.approx(ref, rel=1e-8)
    # the authors' ridge variant (exps/collapse.py, eps = 1e-3)
    assert nc1(H, y, K, ridge=1e-3) == pytest.approx(_nc1_brute(H, y, K, 1e-3), rel=1e-8)


def test_nc1_exact_values_and_float16_memmap(tmp_path):
    # Class means (-1, 0) and (1, 0), deviations (+-s, +-3): Sigma_B = e1 e1^T,
    # pinv(Sigma_B) = e1 e1^T, e1^T Sigma_W e1 = s^2, so NC1 = s^2 / K = s^2 / 2
    # (the spread along e2, orthogonal to the class means, does not count).
    s = 0.5
    H = np.array([[-1 - s, 3], [-1 + s, -3], [1 - s, 3], [1 + s, -3]])
    y = np.array([0, 0, 1, 1])
    assert nc1(H, y, 2) == pytest.approx(s**2 / 2, abs=1e-14)
    # collapsed features: NC1 = 0
    assert nc1(np.array([[0.0, 1], [0, 1], [2, 0], [2, 0]]), y, 2) == 0.0
    # float16 memmap, read in chunks
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 500)
    H = (rng.normal(size=(500, 64)) + 2 * rng.normal(size=(3, 64))[y]).astype(np.float16)
    path = tmp_path / "h.npy"
    np.save(path, H)
    mm = np.load(path, mmap_mode="r")
    assert nc1(mm, y, 3, chunk_rows=64) == pytest.approx(_nc1_brute(H.astype(np.float64), y, 3),
                                                         rel=1e-8)


def test_nc1_errors():
    H = np.zeros((4, 3))
    with pytest.raises(LLRError, match="no example"):
        nc1(H, np.array([0, 0, 1, 1]), 3)
    with pytest.raises(LLRError, match=r"\[0, 2\)"):
        nc1(H, np.array([0, 2, 1, 1]), 2)
    with pytest.raises(LLRError, match="2-D"):
        nc1(np.zeros(4), np.array([0, 0, 1, 1]), 2)


# --------------------------------------------------------------------------
# Margins
# --------------------------------------------------------------------------

def _margins_brute(W, b, X, y):
    K = W.shape[0]
    Wc = W - W.mean(0)
    norm = np.sqrt(2) * np.sqrt((Wc**2).sum())
    out = []
    for x, c in zip(X, y):
        f = W @ x + b
        out.append((f[c] - max(f[k] for k in range(K) if k != c)) / norm)
    return np.array(out)


def test_binary_margin_is_y_f_over_theta_norm():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(50, 4)), rng.integers(0, 2, 50)
    W, b = rng.normal(size=(2, 4)), rng.normal(size=2)
    theta, beta = W[1] - W[0], b[1] - b[0]
    ref = (2 * y - 1) * (X @ theta + beta) / np.linalg.norm(theta)
    np.testing.assert_allclose(margins(W, b, X, y), ref, rtol=1e-12, atol=1e-14)
    # a bare theta with a scalar bias gives the same margins
    np.testing.assert_allclose(margins(theta, beta, X, y), ref, rtol=1e-12, atol=1e-14)
    # hand-computed: theta = (3, 4), beta = 1, x = (1, 0), y = +1 -> 4/5
    assert margins(np.array([3.0, 4.0]), 1.0, np.array([[1.0, 0.0]]), [1])[0] == pytest.approx(0.8)


def test_group_margins_against_loop():
    rng = np.random.default_rng(2)
    N, d, K, G = 120, 5, 3, 6
    X, y, g = rng.normal(size=(N, d)), rng.integers(0, K, N), rng.integers(0, G - 1, N)
    W, b = rng.normal(size=(K, d)), rng.normal(size=K)
    m = _margins_brute(W, b, X, y)
    np.testing.assert_allclose(margins(W, b, X, y, chunk_rows=11), m, rtol=1e-12, atol=1e-14)
    df = group_margins(W, b, X, y, g, G)
    assert list(df.columns) == ["group", "min_margin", "avg_margin", "n"]
    for k in range(G):
        mk = m[g == k]
        assert df.n[k] == len(mk)
        if len(mk) == 0:  # group 5 is empty
            assert np.isnan(df.avg_margin[k]) and np.isnan(df.min_margin[k])
            continue
        assert df.avg_margin[k] == pytest.approx(mk.mean(), rel=1e-12)
        pos = mk[mk > 0]
        if len(pos):
            assert df.min_margin[k] == pytest.approx(pos.min(), rel=1e-12)
        else:
            assert np.isnan(df.min_margin[k])


def test_group_min_margin_nan_without_correct_points():
    X = np.array([[1.0], [2.0], [-1.0]])
    y = np.array([0, 1, 1])        # theta = (1,): point 0 misclassified (margin -1)
    g = np.array([0, 1, 1])
    df = group_margins(np.array([[-0.5], [0.5]]), None, X, y, g, 2)
    assert np.isnan(df.min_margin[0]) and df.avg_margin[0] == pytest.approx(-1.0)
    assert df.min_margin[1] == pytest.approx(2.0) and df.avg_margin[1] == pytest.approx(0.5)


# --------------------------------------------------------------------------
# Hard-margin SVM
# --------------------------------------------------------------------------

def _separable(rng, N, d, K, gap=0.1):
    X = rng.normal(size=(N, d))
    Wt = rng.normal(size=(K, d))
    S = X @ Wt.T
    y = S.argmax(1)
    srt = np.sort(S, 1)
    keep = srt[:, -1] - srt[:, -2] > gap
    return X[keep], y[keep]


def test_binary_svm_matches_slsqp_primal():
    rng = np.random.default_rng(3)
    X, y = _separable(rng, 40, 2, 2, gap=0.3)
    W, info = hard_margin_svm(X, y, 2, return_info=True)
    theta = W[1] - W[0]
    assert np.allclose(W[0], -W[1])
    s = 2 * y - 1
    res = minimize(lambda t: t @ t, x0=theta * 1.5, jac=lambda t: 2 * t, method="SLSQP",
                   constraints=[{"type": "ineq", "fun": lambda t: s * (X @ t) - 1,
                                 "jac": lambda t: s[:, None] * X}],
                   options={"ftol": 1e-14, "maxiter": 500})
    assert res.success
    assert directional_error(theta, res.x) < 1e-4
    np.testing.assert_allclose(theta, res.x, rtol=1e-4)
    assert check_margin_constraints(W, X, y) >= 1 - 1e-6
    assert check_margin_constraints(theta, X, y) == pytest.approx(np.min(s * (X @ theta)))
    assert info.rel_gap < 1e-6 and info.kkt <= 1e-6


@pytest.mark.parametrize("exact", [True, False])
def test_multiclass_svm_kkt_and_duality(exact):
    rng = np.random.default_rng(4)
    X, y = _separable(rng, 80, 6, 3, gap=0.5)
    W, info = hard_margin_svm(X, y, 3, tol=1e-7, exact=exact, return_info=True)
    assert check_margin_constraints(W, X, y) >= 1 - 1e-7
    assert info.primal == pytest.approx(info.dual, rel=1e-6)
    assert 0 <= info.rel_gap < 1e-6
    # dual feasibility and W = sum alpha_ik x_i (e_y - e_k)^T
    a = info.alpha
    assert (a >= 0).all() and np.all(a[np.arange(len(y)), y] == 0)
    coef = -a.copy()
    coef[np.arange(len(y)), y] = a.sum(1)
    np.testing.assert_allclose(coef.T @ X, W, atol=1e-8)
    # complementary slackness: active constraints hold with equality
    S = X @ W.T
    C = S[np.arange(len(y)), y][:, None] - S
    assert np.all(np.abs(C[a > 0] - 1) < 1e-6)
    # the optimum is centered (sum_k w_k = 0) and beats any feasible rescaling
    np.testing.assert_allclose(W.sum(0), 0, atol=1e-8)
    Wr = rng.normal(size=W.shape)
    if check_margin_constraints(Wr, X, y) > 0:
        Wr = Wr / check_margin_constraints(Wr, X, y)
        assert (Wr**2).sum() >= (W**2).sum()


def test_svm_exact_and_cd_paths_agree():
    rng = np.random.default_rng(5)
    X, y = _separable(rng, 60, 5, 2, gap=0.4)
    W1 = hard_margin_svm(X, y, 2, tol=1e-9)
    W2 = hard_margin_svm(X, y, 2, tol=1e-9, exact=False)
    assert directional_error(W1, W2) < 1e-6


def test_svm_min_margin_equals_max_margin():
    # The SVM's minimum margin (multiclass definition) is 1 / (sqrt(2) ||W||_F).
    rng = np.random.default_rng(6)
    X, y = _separable(rng, 60, 4, 3, gap=0.5)
    W = hard_margin_svm(X, y, 3, tol=1e-9)
    assert margins(W, None, X, y).min() == pytest.approx(1 / (np.sqrt(2) * np.linalg.norm(W)),
                                                         rel=1e-6)


@pytest.mark.parametrize("exact", [True, False])
def test_svm_not_separable(exact):
    X = np.array([[1.0, 1], [-1, -1], [1, -1], [-1, 1]])  # XOR through the origin
    y = np.array([0, 0, 1, 1])
    with pytest.raises(LLRError, match="not linearly separable"):
        hard_margin_svm(X, y, 2, exact=exact, max_epochs=500)
    with pytest.raises(LLRError, match="not linearly separable"):
        hard_margin_svm(np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([0, 1]), 2)
    # the squared-hinge soft margin (authors' LinearSVC loss) still solves it
    W, info = hard_margin_svm(X, y, 2, C=10.0, exact=exact, return_info=True)
    assert info.kkt <= 1e-6 and info.primal == pytest.approx(info.dual, rel=1e-5)


# --------------------------------------------------------------------------
# Directional error
# --------------------------------------------------------------------------

def test_directional_error_hand_computed():
    # binary: theta = W[1] - W[0]
    W = np.array([[0.0, 0.0], [1.0, 0.0]])
    assert directional_error(W, np.array([[0.0, 0.0], [5.0, 0.0]])) == pytest.approx(0.0)
    assert directional_error(W, np.array([[0.0, 0.0], [0.0, 2.0]])) == pytest.approx(np.sqrt(2))
    assert directional_error(W, np.array([[1.0, 0.0], [0.0, 0.0]])) == pytest.approx(2.0)
    # a common shift of both rows does not matter, a 1-D theta is accepted
    assert directional_error(W + 7.0, np.array([3.0, 0.0])) == pytest.approx(0.0)
    # K = 3: centering removes the shared part
    W3 = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    assert directional_error(W3 + np.array([4.0, -2.0]), 2 * W3) == pytest.approx(0.0, abs=1e-12)
    # centered W3 = [[2,-1],[-1,2],[-1,-1]]/3; against [[1,0],[0,0],[0,0]] centered
    V = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    v1 = (W3 - W3.mean(0)).ravel()
    v2 = (V - V.mean(0)).ravel()
    ref = np.linalg.norm(v1 / np.linalg.norm(v1) - v2 / np.linalg.norm(v2))
    assert directional_error(W3, V) == pytest.approx(ref)
    # cos = (2*2/3 + 1/3*... ) computed by hand: <v1, v2> = (2/3)(2/3)+(1/3)(1/3)*2 = 2/3
    # |v1|^2 = (4+1+1+4+1+1)/9 = 4/3, |v2|^2 = (4+1+1)/9 = 2/3 -> cos = (2/3)/sqrt(8/9)
    cos = (2 / 3) / np.sqrt(8 / 9)
    assert directional_error(W3, V) == pytest.approx(np.sqrt(2 - 2 * cos))
    with pytest.raises(LLRError):
        directional_error(np.zeros((2, 2)), W)


# --------------------------------------------------------------------------
# Drivers
# --------------------------------------------------------------------------

@dataclass
class _Fit:
    W: np.ndarray
    b: np.ndarray
    history: dict = field(default_factory=dict)


def _gd_fit(X, y, *, n_classes, epochs, batch_size=32, lr=1e-2, seed=0,
            checkpoint_epochs=(), device="cpu", **_):
    """Full-batch gradient descent on the softmax cross-entropy (stand-in for
    llr.lastlayer.fit_softmax), 20 steps per epoch."""
    X = np.asarray(X, dtype=np.float64)
    rng = np.random.default_rng(seed)
    W = rng.normal(scale=0.01, size=(n_classes, X.shape[1]))
    b = np.zeros(n_classes)
    Y = np.eye(n_classes)[y]
    hist = {}
    for e in range(1, epochs + 1):
        for _ in range(20):
            F = X @ W.T + b
            P = np.exp(F - F.max(1, keepdims=True))
            P /= P.sum(1, keepdims=True)
            G = (P - Y) / len(y)
            W -= lr * G.T @ X
            b -= lr * G.sum(0)
        if e in set(checkpoint_epochs):
            hist[e] = (W.copy(), b.copy())
    return _Fit(W, b, hist)


def test_svm_convergence_records_every_epoch():
    rng = np.random.default_rng(7)
    X, y = _separable(rng, 60, 3, 2, gap=0.5)
    X16 = X.astype(np.float16)
    df = svm_convergence(X16, y, 2, fit=_gd_fit, epochs=30, seed=0, lr=1.0)
    assert list(df.columns) == ["epoch", "directional_error"]
    assert df.epoch.tolist() == list(range(1, 31))
    assert df.attrs["svm_min_constraint"] >= 1 - 1e-6
    # each value is the directional error of that epoch's W to the SVM on the
    # (upcast) held-out features; the bias is not part of the direction
    W_svm = hard_margin_svm(X16.astype(np.float64), y, 2)
    hist = _gd_fit(X16, y, n_classes=2, epochs=30, lr=1.0, seed=0,
                   checkpoint_epochs=range(1, 31)).history
    ref = [directional_error(hist[e][0], W_svm) for e in range(1, 31)]
    np.testing.assert_allclose(df.directional_error, ref, rtol=1e-6)
    assert ref[-1] < 0.3


def test_svm_convergence_with_lastlayer_fit():
    pytest.importorskip("llr.lastlayer")
    rng = np.random.default_rng(8)
    X, y = _separable(rng, 40, 3, 3, gap=0.5)
    df = svm_convergence(X, y, 3, epochs=3, seed=0)
    assert len(df) == 3 and np.isfinite(df.directional_error).all()


def test_margin_records_and_correlation():
    rng = np.random.default_rng(9)
    K, G = 2, 4
    def make(n):
        g = rng.integers(0, G, n)
        y = g // 2
        X = rng.normal(size=(n, 3)) + np.c_[2 * y - 1, (g % 2) * 2 - 1, 0 * y] * 1.0
        return X, y, g
    Xtr, ytr, gtr = make(80)
    Xte, yte, gte = make(100)
    frames = [margin_records(Xtr, ytr, gtr, Xte, yte, gte, G, K, fit=_gd_fit, epochs=4,
                             checkpoint_epochs=(2, 4), seed=s) for s in (0, 1)]
    df = pd.concat(frames, ignore_index=True)
    assert {"epoch", "group", "min_margin", "avg_margin", "test_acc", "seed"} <= set(df.columns)
    assert len(df) == 2 * 2 * G
    # recompute one row by hand
    W, b = _gd_fit(Xtr, ytr, n_classes=K, epochs=4, seed=1, checkpoint_epochs=(4,)).history[4]
    row = df[(df.seed == 1) & (df.epoch == 4) & (df.group == 3)].iloc[0]
    gm = group_margins(W, b, Xtr, ytr, gtr, G)
    assert row.avg_margin == pytest.approx(gm.avg_margin[3])
    pred = np.argmax(Xte @ W.T + b, 1)
    assert row.test_acc == pytest.approx(np.mean(pred[gte == 3] == yte[gte == 3]))
    # correlation pooled over groups x seeds x checkpoints
    corr = margin_correlation(df)
    assert corr.kind.tolist() == ["min", "avg"]
    assert set(corr.columns) == {"kind", "r", "p_value", "n_points", "over"}
    assert (corr.over == OVER).all()
    from scipy.stats import pearsonr
    ok = df.min_margin.notna()
    assert corr.r[0] == pytest.approx(pearsonr(df.min_margin[ok], df.test_acc[ok]).statistic)
    assert corr.n_points[0] == ok.sum() and corr.n_points[1] == len(df)
    assert corr.r[1] == pytest.approx(pearsonr(df.avg_margin, df.test_acc).statistic)
    # per-dataset correlation
    df2 = pd.concat([df.assign(dataset="a"), df.assign(dataset="b")])
    by = margin_correlation(df2, by=["dataset"])
    assert by.dataset.tolist() == ["a", "a", "b", "b"]
    assert by.r[0] == pytest.approx(corr.r[0])


def test_margin_correlation_exact_and_degenerate():
    df = pd.DataFrame({"min_margin": [1.0, 2.0, 3.0, np.nan], "avg_margin": [1.0, 1.0, 1.0, 1.0],
                       "test_acc": [0.2, 0.4, 0.6, 0.9]})
    out = margin_correlation(df)
    assert out.r[0] == pytest.approx(1.0) and out.n_points[0] == 3
    assert np.isnan(out.r[1]) and out.n_points[1] == 4   # constant margins


def test_svm_blockwise_working_set_and_memmap(tmp_path, monkeypatch):
    # Force the out-of-memory paths: working set read in blocks from a memmap.
    import llr.analysis as an
    rng = np.random.default_rng(10)
    X, y = _separable(rng, 90, 4, 3, gap=0.5)
    ref = hard_margin_svm(X, y, 3, tol=1e-9)
    path = tmp_path / "x.npy"
    np.save(path, X)
    monkeypatch.setattr(an, "_CACHE_VALUES", 16)
    W = hard_margin_svm(np.load(path, mmap_mode="r"), y, 3, tol=1e-9, exact=False, chunk_rows=8)
    assert directional_error(W, ref) < 1e-6
    assert check_margin_constraints(W, X, y) >= 1 - 1e-9


def test_svm_not_separable_random_labels_fast():
    rng = np.random.default_rng(11)
    X, y = rng.normal(size=(400, 5)), rng.integers(0, 2, 400)
    with pytest.raises(LLRError, match="not linearly separable"):
        hard_margin_svm(X, y, 2)
