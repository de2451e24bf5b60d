"""Tests of llr.analysis (nc1, margins, svm): NC1, margins, the linear SVM (scikit-learn), the
directional error and the Figure 3 / Table 1 drivers, against brute force,
closed forms and scipy's SLSQP on small data."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from llr.analysis.margins import OVER, group_margins, margin_correlation, margin_records, margins
from llr.analysis.nc1 import nc1
from llr.analysis.svm import SVM_C, check_margin_constraints, directional_error, kesler, linear_svm, svm_convergence
from llr.errors import LLRError

# --------------------------------------------------------------------------
# NC1
# --------------------------------------------------------------------------


def _nc1_brute(H, y, K, ridge=0.0, global_mean="class_means"):
    """The paper's section 2.1 with d x d matrices and numpy's pinv."""
    N, d = H.shape
    mu = np.stack([H[y == k].mean(0) for k in range(K)])
    mg = mu.mean(0) if global_mean == "class_means" else H.mean(0)
    Sb = sum(np.outer(m - mg, m - mg) for m in mu) / K
    D = H - mu[y]
    Sw = D.T @ D / N
    if ridge:
        return np.trace(Sw @ np.linalg.inv(Sb + ridge * np.eye(d))) / K
    return np.trace(Sw @ np.linalg.pinv(Sb, rcond=1e-10, hermitian=True)) / K


@pytest.mark.parametrize("global_mean", ["class_means", "all"])
@pytest.mark.parametrize("N,d,K", [(200, 10, 3), (30, 50, 4), (101, 7, 2)])
def test_nc1_matches_brute_force(N, d, K, global_mean):
    rng = np.random.default_rng(N + d + K)
    y = np.r_[np.arange(K), rng.integers(0, K, N - K)]
    H = rng.normal(size=(N, d)) + 3 * rng.normal(size=(K, d))[y] + 5.0
    ref = _nc1_brute(H, y, K, global_mean=global_mean)
    assert nc1(H, y, K, global_mean=global_mean) == pytest.approx(ref, rel=1e-8, abs=1e-12)
    # chunked reading gives the same value
    assert nc1(H, y, K, global_mean=global_mean, chunk_rows=7) == pytest.approx(ref, rel=1e-8)
    # the authors' ridge variant (exps/collapse.py, eps = 1e-3)
    assert nc1(H, y, K, global_mean=global_mean, ridge=1e-3) == pytest.approx(
        _nc1_brute(H, y, K, 1e-3, global_mean), rel=1e-8
    )


@pytest.mark.parametrize("K", [2, 3, 5])
def test_nc1_global_mean_is_mean_of_class_means(K):
    """Imbalanced classes (the paper's setting): mu_G = mean of the class means
    (default, paper section 2.1) differs from the mean of all features, and
    so does NC1; each option equals its brute-force d x d computation."""
    rng = np.random.default_rng(K)
    counts = np.array([400, 40, 12, 90, 7][:K])
    y = np.repeat(np.arange(K), counts)
    d = 12
    H = rng.normal(size=(y.size, d)) + 2 * rng.normal(size=(K, d))[y]
    mu = np.stack([H[y == k].mean(0) for k in range(K)])
    assert np.linalg.norm(mu.mean(0) - H.mean(0)) > 0.3  # the two global means differ
    paper, old = nc1(H, y, K), nc1(H, y, K, global_mean="all")
    assert paper == pytest.approx(_nc1_brute(H, y, K), rel=1e-8)
    assert old == pytest.approx(_nc1_brute(H, y, K, global_mean="all"), rel=1e-8)
    assert abs(paper - old) > 0.05 * paper
    # balanced classes: the two means coincide, so do the NC1 values
    yb = np.repeat(np.arange(K), 30)
    Hb = rng.normal(size=(yb.size, d)) + 2 * rng.normal(size=(K, d))[yb]
    assert nc1(Hb, yb, K) == pytest.approx(nc1(Hb, yb, K, global_mean="all"), rel=1e-10)


def test_nc1_global_mean_closed_form_two_classes():
    # K = 2, class shares p and 1 - p, delta = mu_1 - mu_0: with mu_G the mean
    # of the class means Sigma_B = delta delta^T / 4; with the mean of all
    # features Sigma_B = (p^2 + (1 - p)^2) delta delta^T / 2. NC1 scales as
    # 1 / Sigma_B's eigenvalue: NC1_all / NC1_paper = 0.25 / ((p^2 + (1-p)^2) / 2).
    rng = np.random.default_rng(12)
    n0, n1 = 90, 10
    y = np.repeat([0, 1], [n0, n1])
    H = rng.normal(size=(100, 4)) + np.array([3.0, 0, 0, 0]) * y[:, None]
    p = n0 / 100
    ratio = nc1(H, y, 2, global_mean="all") / nc1(H, y, 2)
    assert ratio == pytest.approx(0.25 / ((p**2 + (1 - p) ** 2) / 2), rel=1e-10)


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
    assert nc1(mm, y, 3, chunk_rows=64) == pytest.approx(_nc1_brute(H.astype(np.float64), y, 3), rel=1e-8)


def test_nc1_errors():
    H = np.zeros((4, 3))
    with pytest.raises(LLRError, match="no example"):
        nc1(H, np.array([0, 0, 1, 1]), 3)
    with pytest.raises(LLRError, match=r"\[0, 2\)"):
        nc1(H, np.array([0, 2, 1, 1]), 2)
    with pytest.raises(LLRError, match="2-D"):
        nc1(np.zeros(4), np.array([0, 0, 1, 1]), 2)
    with pytest.raises(LLRError, match=r"global_mean = 'median', expected one of \['class_means', 'all'\]"):
        nc1(np.ones((4, 2)), np.array([0, 0, 1, 1]), 2, global_mean="median")


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
    y = np.array([0, 1, 1])  # theta = (1,): point 0 misclassified (margin -1)
    g = np.array([0, 1, 1])
    df = group_margins(np.array([[-0.5], [0.5]]), None, X, y, g, 2)
    assert np.isnan(df.min_margin[0]) and df.avg_margin[0] == pytest.approx(-1.0)
    assert df.min_margin[1] == pytest.approx(2.0) and df.avg_margin[1] == pytest.approx(0.5)


# --------------------------------------------------------------------------
# Linear SVM (scikit-learn LinearSVC, C = 1e5)
# --------------------------------------------------------------------------


def _separable(rng, N, d, K, gap=0.1):
    X = rng.normal(size=(N, d))
    Wt = rng.normal(size=(K, d))
    S = X @ Wt.T
    y = S.argmax(1)
    srt = np.sort(S, 1)
    keep = srt[:, -1] - srt[:, -2] > gap
    return X[keep], y[keep]


def test_linear_svm_reaches_analytic_hard_margin_binary():
    # Class 1 at (2, 1) and (1, 2), class 0 at (-1, -3), no intercept:
    # min ||theta||^2 s.t. 2a + b >= 1, a + 2b >= 1, a + 3b >= 1 has
    # theta* = (1/3, 1/3) (both class-1 constraints active, by symmetry; the
    # third holds with 4/3). LinearSVC with the authors' C = 1e5 reaches it.
    X = np.array([[2.0, 1.0], [1.0, 2.0], [-1.0, -3.0]])
    y = np.array([1, 1, 0])
    fit = linear_svm(X, y, 2)
    assert fit.C == SVM_C == 1e5 and fit.converged and fit.separable
    theta = fit.W[1] - fit.W[0]
    np.testing.assert_allclose(theta, [1 / 3, 1 / 3], rtol=1e-4)
    np.testing.assert_allclose(fit.W[0], -fit.W[1])
    assert fit.min_constraint == pytest.approx(1.0, abs=1e-4)
    assert check_margin_constraints(theta, X, y) == pytest.approx(fit.min_constraint)
    # the squared-hinge soft margin with C = 1: theta = (t, t) minimizing
    # t^2 + 2 (1 - 3t)^2 (the third point has 4t > 1): t = 12 / 38 = 6 / 19
    soft = linear_svm(X, y, 2, C=1.0)
    np.testing.assert_allclose(soft.W[1] - soft.W[0], [6 / 19, 6 / 19], rtol=1e-4)
    assert soft.separable and soft.min_constraint == pytest.approx(18 / 19, rel=1e-4)


def test_linear_svm_reaches_analytic_hard_margin_multiclass():
    # Three unit vectors at 120 degrees, one class each (plus farther copies
    # that are not support vectors): by symmetry W* = c X with
    # (w_k - w_j) . x_k = c (1 - cos 120) = 1.5 c = 1, so W* = (2/3) X.
    ang = np.deg2rad([90.0, 210.0, 330.0])
    U = np.c_[np.cos(ang), np.sin(ang)]
    X = np.vstack([U, 1.5 * U])
    y = np.array([0, 1, 2, 0, 1, 2])
    fit = linear_svm(X, y, 3)
    assert fit.converged and fit.separable
    np.testing.assert_allclose(fit.W, 2 / 3 * U, atol=1e-4)
    assert fit.min_constraint == pytest.approx(1.0, abs=1e-4)
    # its minimum margin is the largest attainable, 1 / (sqrt(2) ||W*||_F)
    assert margins(fit.W, None, X, y).min() == pytest.approx(1 / (np.sqrt(2) * np.linalg.norm(2 / 3 * U)), rel=1e-4)


def _ldp_hard_margin(X, y, K):
    """min ||W||_F^2 s.t. (w_y - w_k) . x >= 1 for k != y, exactly: Lawson and
    Hanson's least-distance programming through NNLS (min ||E u - f||, u >= 0,
    E = [G^T; h^T], f = e_last; then w = -r[:-1] / r[-1], r = E u - f), G the
    constraint rows (Kesler) and h = 1."""
    from scipy.optimize import nnls

    Z, s = kesler(X, y, K)
    G = Z * s[:, None]  # undo the alternating signs
    E = np.vstack([G.T, np.ones(len(G))])
    f = np.zeros(E.shape[0])
    f[-1] = 1.0
    u, _ = nnls(E, f)
    r = E @ u - f
    return (-r[:-1] / r[-1]).reshape(K, X.shape[1])


@pytest.mark.parametrize("K,seed", [(2, 3), (3, 4), (4, 5)])
def test_linear_svm_matches_exact_hard_margin(K, seed):
    rng = np.random.default_rng(seed)
    X, y = _separable(rng, 60, 4, K, gap=0.4)
    fit = linear_svm(X, y, K)
    ref = _ldp_hard_margin(X, y, K)  # for K = 2 also [-theta/2, theta/2]
    assert check_margin_constraints(ref, X, y) == pytest.approx(1.0, abs=1e-9)
    assert fit.separable and fit.converged
    # C = 1e5 reaches the hard margin to ~1e-5 (measured 2e-5, 7e-6, 4e-6)
    assert directional_error(fit.W, ref) < 1e-4
    np.testing.assert_allclose(fit.W, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    assert fit.min_constraint == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(fit.W.sum(0), 0, atol=1e-8)  # the multiclass SVM is centered


def test_kesler_rows_are_the_margin_constraints():
    rng = np.random.default_rng(13)
    N, d, K = 7, 3, 4
    X, y, W = rng.normal(size=(N, d)), rng.integers(0, K, N), rng.normal(size=(K, d))
    Z, s = kesler(X, y, K)
    assert Z.shape == (N * (K - 1), K * d) and set(s) == {-1, 1}
    want = [(W[y[i]] - W[k]) @ X[i] for i in range(N) for k in range(K) if k != y[i]]
    np.testing.assert_allclose(s * (Z @ W.ravel()), want, rtol=1e-12)


def test_linear_svm_non_separable_completes():
    # XOR through the origin: no linear separator without intercept.
    X = np.array([[1.0, 1], [-1, -1], [1, -1], [-1, 1]])
    y = np.array([0, 0, 1, 1])
    fit = linear_svm(X, y, 2)
    assert not fit.separable and fit.min_constraint <= 0 and np.isfinite(fit.W).all()
    # random labels on few dimensions, K = 2 and K = 3; a zero feature vector
    rng = np.random.default_rng(11)
    X = rng.normal(size=(400, 5))
    for K in (2, 3):
        fit = linear_svm(X, rng.integers(0, K, 400), K, max_iter=2000)
        assert not fit.separable and np.isfinite(fit.W).all()
    fit = linear_svm(np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([0, 1]), 2)
    assert not fit.separable and fit.min_constraint == 0.0
    with pytest.raises(LLRError, match="every example has class 1"):
        linear_svm(X[:3], np.array([1, 1, 1]), 2)
    with pytest.raises(LLRError, match="C must be > 0"):
        linear_svm(X, rng.integers(0, 2, 400), 2, C=0.0)


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


def _gd_fit(X, y, *, n_classes, epochs, batch_size=32, lr=1e-2, seed=0, checkpoint_epochs=(), device="cpu", **_):
    """Full-batch gradient descent on the softmax cross-entropy (stand-in for
    llr.lastlayer.fit.fit_softmax), 20 steps per epoch."""
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
    assert list(df.columns) == ["epoch", "directional_error", "separable"]
    assert df.epoch.tolist() == list(range(1, 31))
    assert df.separable.dtype == bool and df.separable.all() and df.attrs["separable"] is True
    assert df.attrs["svm_min_constraint"] == pytest.approx(1.0, abs=1e-3)
    assert df.attrs["svm_C"] == 1e5 and df.attrs["svm_converged"]
    # each value is the directional error of that epoch's W to the SVM on the
    # (upcast) held-out features; the bias is not part of the direction
    W_svm = linear_svm(X16.astype(np.float64), y, 2).W
    hist = _gd_fit(X16, y, n_classes=2, epochs=30, lr=1.0, seed=0, checkpoint_epochs=range(1, 31)).history
    ref = [directional_error(hist[e][0], W_svm) for e in range(1, 31)]
    np.testing.assert_allclose(df.directional_error, ref, rtol=1e-6)
    assert ref[-1] < 0.3


def test_svm_convergence_non_separable_writes_separable_false(tmp_path, capsys):
    """Non-separable held-out features (random labels): the analysis completes,
    through the CLI too, and the CSV and the log say separable=False."""
    import json

    from llr.cli import main

    rng = np.random.default_rng(14)
    X = rng.normal(size=(300, 4))
    y = rng.integers(0, 2, 300)
    df = svm_convergence(X, y, 2, fit=_gd_fit, epochs=3)
    assert len(df) == 3 and not df.separable.any() and np.isfinite(df.directional_error).all()
    # the CLI job: held-out = the first 200 rows
    n = 300
    meta = pd.DataFrame({"idx": np.arange(n), "split": "train", "y": y, "s": rng.integers(0, 2, n)})
    meta["g"] = 2 * meta.y + meta.s
    meta.to_csv(tmp_path / "meta.csv", index=False)
    pd.DataFrame({"idx": np.arange(n), "role": ["heldout"] * 200 + ["test"] * 100}).to_csv(
        tmp_path / "split.csv", index=False
    )
    np.save(tmp_path / "emb.npy", X.astype(np.float16))
    out = tmp_path / "svm.csv"
    rc = main(
        [
            "svm",
            "--dataset",
            "synth_waterbirds",
            "--embeddings",
            str(tmp_path / "emb.npy"),
            "--metadata",
            str(tmp_path / "meta.csv"),
            "--split",
            str(tmp_path / "split.csv"),
            "--epochs",
            "2",
            "--seed",
            "0",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    assert "svm: 200 held-out points, separable=False" in capsys.readouterr().out
    got = pd.read_csv(out)
    assert list(got.columns) == ["epoch", "directional_error", "separable"]
    assert got.separable.dtype == bool and not got.separable.any() and len(got) == 2
    json.dumps(df.attrs)  # the diagnostics are plain values


def test_svm_convergence_with_lastlayer_fit():
    pytest.importorskip("llr.lastlayer.fit")
    rng = np.random.default_rng(8)
    X, y = _separable(rng, 40, 3, 3, gap=0.5)
    df = svm_convergence(X, y, 3, epochs=3, seed=0)
    assert len(df) == 3 and np.isfinite(df.directional_error).all() and df.separable.all()


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
    frames = [
        margin_records(Xtr, ytr, gtr, Xte, yte, gte, G, K, fit=_gd_fit, epochs=4, checkpoint_epochs=(2, 4), seed=s)
        for s in (0, 1)
    ]
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
    df = pd.DataFrame(
        {"min_margin": [1.0, 2.0, 3.0, np.nan], "avg_margin": [1.0, 1.0, 1.0, 1.0], "test_acc": [0.2, 0.4, 0.6, 0.9]}
    )
    out = margin_correlation(df)
    assert out.r[0] == pytest.approx(1.0) and out.n_points[0] == 3
    assert np.isnan(out.r[1]) and out.n_points[1] == 4  # constant margins
