"""Last-layer retraining (llr.lastlayer): fitting core, methods, job entry.
Small random data only; the whole file runs in seconds."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from llr.data.registry import get_spec
from llr.errors import LLRError
from llr.lastlayer import afr, fit, job, methods, registry

torch = pytest.importorskip("torch")

SPEC = get_spec("synth_waterbirds")  # 2 classes x 2 spurious = 4 groups
SPEC3 = get_spec("synth_multinli")  # 3 classes x 2 = 6 groups


def toy(n=120, d=8, k=2, seed=0, groups=4):
    rng = np.random.default_rng(seed)
    g = rng.choice(groups, size=n, p=np.linspace(1, 3, groups) / np.linspace(1, 3, groups).sum())
    y = g // (groups // k)
    X = rng.normal(size=(n, d)) + 0.8 * np.eye(k, d)[y][:, :d] + 0.3 * (g % 2)[:, None]
    return X.astype(np.float32), y.astype(np.int64), g.astype(np.int64)


# ----------------------------------------------------------------- gradients


@pytest.mark.parametrize("reduction", ["mean", "weighted_mean"])
@pytest.mark.parametrize("k", [2, 3])
def test_analytic_gradient_matches_autograd(k, reduction):
    rng = np.random.default_rng(1)
    n, d = 17, 5
    X = rng.normal(size=(n, d))
    y = rng.integers(0, k, size=n)
    W, b = rng.normal(size=(k, d)), rng.normal(size=k)
    Wa, ba = rng.normal(size=(k, d)), rng.normal(size=k)
    lw = rng.uniform(0.1, 3, size=n)
    lam = 0.37
    loss, gW, gb = fit.loss_and_grad(
        X, y, W, b, n_classes=k, loss_weights=lw, anchor=(Wa, ba), anchor_lambda=lam, loss_reduction=reduction
    )
    tW = torch.tensor(W, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    ce = torch.nn.functional.cross_entropy(torch.tensor(X) @ tW.T + tb, torch.tensor(y), reduction="none")
    data = (torch.tensor(lw) * ce).mean() if reduction == "mean" else (torch.tensor(lw) * ce).sum() / lw.sum()
    ref = data + lam * (((tW - torch.tensor(Wa)) ** 2).sum() + ((tb - torch.tensor(ba)) ** 2).sum())
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(gW, tW.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-10, atol=1e-12)
    # same on the torch backend
    loss_t, gW_t, gb_t = fit.loss_and_grad(
        torch.tensor(X),
        y,
        W,
        b,
        n_classes=k,
        loss_weights=lw,
        anchor=(Wa, ba),
        anchor_lambda=lam,
        loss_reduction=reduction,
    )
    np.testing.assert_allclose(gW_t, gW, rtol=1e-12)


def _torch_reference_fit(
    X,
    y,
    k,
    *,
    epochs,
    batch_size,
    lr,
    momentum,
    wd,
    init,
    seed,
    sample_weights=None,
    loss_weights=None,
    max_grad_norm=None,
    class_weights=None,
):
    """Brute force: nn.Linear + torch.optim.SGD + autograd, same batch order.
    ``class_weights``: the authors' upweighting, ``cross_entropy(weight=...)``."""
    lin = torch.nn.Linear(X.shape[1], k).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(init[0]))
        lin.bias.copy_(torch.tensor(init[1]))
    opt = torch.optim.SGD(lin.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
    rng = np.random.default_rng([seed, 1])
    n = len(y)
    p = None if sample_weights is None else sample_weights / sample_weights.sum()
    Xt, yt = torch.tensor(X, dtype=torch.float64), torch.tensor(y)
    lwt = torch.ones(n, dtype=torch.float64) if loss_weights is None else torch.tensor(loss_weights)
    for _ in range(epochs):
        order = rng.permutation(n) if p is None else rng.choice(n, size=n, replace=True, p=p)
        for s in range(0, n, batch_size):
            i = torch.tensor(order[s : s + batch_size])
            opt.zero_grad()
            if class_weights is not None:
                torch.nn.functional.cross_entropy(lin(Xt[i]), yt[i], weight=torch.tensor(class_weights)).backward()
            else:
                ce = torch.nn.functional.cross_entropy(lin(Xt[i]), yt[i], reduction="none")
                (lwt[i] * ce).mean().backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(lin.parameters(), max_grad_norm)
            opt.step()
    return lin.weight.detach().numpy(), lin.bias.detach().numpy()


@pytest.mark.parametrize("variant", ["plain", "momentum_wd_clip", "upsampling", "upweighting", "class_weights"])
def test_fit_matches_torch_sgd_reference(variant):
    X, y, g = toy(n=50, d=6, k=3, groups=6)
    init = fit.torch_linear_init(6, 3, seed=4)
    kw = dict(epochs=3, batch_size=8, lr=0.1, momentum=0.0, wd=0.0, max_grad_norm=None)
    if variant == "momentum_wd_clip":
        kw.update(momentum=0.9, wd=1e-2, max_grad_norm=0.05)
    sw = lw = None
    if variant == "upsampling":
        sw = np.linspace(1, 2, len(y))
    if variant == "upweighting":
        lw = np.linspace(0.5, 1.5, len(y))
    cw, red = None, "mean"
    if variant == "class_weights":  # n_max / n_c in torch's weighted mean, as the authors
        counts = np.bincount(y, minlength=3)
        cw = counts.max() / counts
        red = "weighted_mean"
    Wr, br = _torch_reference_fit(
        X, y, 3, init=init, seed=4, sample_weights=sw, loss_weights=lw, class_weights=cw, **kw
    )
    if cw is not None:
        lw = cw[y]
    res = fit.fit_softmax(
        X,
        y,
        n_classes=3,
        epochs=3,
        batch_size=8,
        lr=0.1,
        momentum=kw["momentum"],
        weight_decay=kw["wd"],
        max_grad_norm=kw["max_grad_norm"],
        init=init,
        sample_weights=sw,
        loss_weights=lw,
        seed=4,
        dtype="float64",
        loss_reduction=red,
    )
    np.testing.assert_allclose(res.W, Wr, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(res.b, br, rtol=1e-9, atol=1e-11)


def test_numpy_and_torch_paths_agree():
    X, y, g = toy(n=70, d=5)
    kw = dict(
        n_classes=2,
        epochs=4,
        batch_size=16,
        lr=0.05,
        momentum=0.5,
        weight_decay=1e-3,
        sample_weights=np.linspace(1, 3, 70),
        loss_weights=np.linspace(0.5, 1.5, 70),
        anchor=(np.ones((2, 5)), np.zeros(2)),
        anchor_lambda=0.1,
        max_grad_norm=1.0,
        seed=3,
        checkpoint_epochs=(0, 2, 4),
        dtype="float64",
    )
    a = fit.fit_softmax(X, y, **kw)
    b = fit.fit_softmax(torch.tensor(X), torch.tensor(y), **kw)
    assert isinstance(b.W, np.ndarray)
    np.testing.assert_allclose(a.W, b.W, rtol=1e-10)
    np.testing.assert_allclose(a.b, b.b, rtol=1e-10)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-10)
    assert sorted(a.history) == [0, 2, 4]
    np.testing.assert_allclose(a.history[2][0], b.history[2][0], rtol=1e-10)
    # float32 default agrees too, to float32 precision
    c = fit.fit_softmax(X, y, **{**kw, "dtype": "float32"})
    np.testing.assert_allclose(c.W, a.W, rtol=1e-4, atol=1e-5)


def test_init_like_nn_linear_and_history_epoch0():
    X, y, _ = toy(n=30, d=9)
    res = fit.fit_softmax(X, y, n_classes=2, epochs=1, checkpoint_epochs=(0,))
    W0, b0 = res.history[0]
    np.testing.assert_allclose(W0, fit.torch_linear_init(9, 2, 0)[0], rtol=1e-6)
    bound = 1 / 3
    assert np.abs(W0).max() <= bound and np.abs(b0).max() <= bound
    assert np.abs(W0).max() > 0.5 * bound
    assert res.loss.shape == (1,)


def test_fixed_seed_reproducible_and_seed_matters():
    X, y, _ = toy()
    a = fit.fit_softmax(X, y, n_classes=2, epochs=3, seed=5)
    b = fit.fit_softmax(X, y, n_classes=2, epochs=3, seed=5)
    c = fit.fit_softmax(X, y, n_classes=2, epochs=3, seed=6)
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(a.b, b.b)
    assert not np.allclose(a.W, c.W)


@pytest.mark.parametrize("batch_size", [None, 32])
def test_batched_equals_separate_fits(batch_size):
    X, y, _ = toy(n=60, d=7, k=3, groups=6)
    F = 4
    rng = np.random.default_rng(2)
    lw = rng.uniform(0.2, 2, size=(F, 60))
    Wi, bi = rng.normal(size=(F, 3, 7)), rng.normal(size=(F, 3))
    Wa, ba = rng.normal(size=(F, 3, 7)), rng.normal(size=(F, 3))
    lam = np.array([0.0, 0.1, 0.5, 2.0])
    kw = dict(
        n_classes=3,
        epochs=5,
        batch_size=batch_size,
        lr=0.05,
        max_grad_norm=1.0,
        seed=1,
        dtype="float64",
        checkpoint_epochs=(3,),
    )
    bat = fit.fit_softmax_batched(X, y, loss_weights=lw, init=(Wi, bi), anchor=(Wa, ba), anchor_lambda=lam, **kw)
    assert bat.W.shape == (F, 3, 7) and bat.loss.shape == (5, F)
    for f in range(F):
        one = fit.fit_softmax(
            X, y, loss_weights=lw[f], init=(Wi[f], bi[f]), anchor=(Wa[f], ba[f]), anchor_lambda=lam[f], **kw
        )
        np.testing.assert_allclose(bat.W[f], one.W, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(bat.b[f], one.b, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(bat.loss[:, f], one.loss, rtol=1e-10)
        np.testing.assert_allclose(bat.history[3][0][f], one.history[3][0], rtol=1e-10, atol=1e-12)


def test_fit_errors_are_llr_errors():
    X, y, _ = toy(n=10, d=3)
    with pytest.raises(LLRError, match="labels"):
        fit.fit_softmax(X, y + 5, n_classes=2, epochs=1)
    with pytest.raises(LLRError, match="loss_weights"):
        fit.fit_softmax(X, y, n_classes=2, epochs=1, loss_weights=np.ones(3))
    with pytest.raises(LLRError, match="inconsistent"):
        fit.fit_softmax_batched(
            X, y, n_classes=2, epochs=1, loss_weights=np.ones((2, 10)), anchor_lambda=[0.0, 1.0, 2.0]
        )


# ------------------------------------------------------------------- methods


def _run(name, X, y, g, hp=None, erm=None, spec=SPEC, epochs=2, seed=0, val=None):
    n = len(y)
    meta = pd.DataFrame({"idx": np.arange(n), "y": y, "g": g})
    roles = np.array(["heldout"] * n, dtype=object)
    val_pos = np.arange(n) if val is None else val
    if val is None:
        roles[:] = "heldout"
    if erm is None:
        erm = (np.zeros((spec.n_classes, X.shape[1]), np.float32), np.zeros(spec.n_classes, np.float32))
    return registry.run_method(name, X, meta, roles, np.arange(n), val_pos, erm, hp, seed, epochs, spec)


def test_registry_names_and_defaults():
    assert set(registry.METHODS) == {"llr", "afr", "afr_gamma0"} | {
        f"{p}_{m}" for p in ("dfr", "cbllr") for m in ("subsetting", "upsampling", "upweighting")
    }
    hp = registry.resolve_hp("llr", SPEC)
    assert (hp["lr"], hp["momentum"], hp["weight_decay"], hp["batch_size"]) == (1e-2, 0.0, 0.0, 32)
    wb = registry.resolve_hp("afr", SPEC)
    assert min(wb["gammas"]) == 4 and max(wb["gammas"]) == 20 and wb["lambdas"][0] == 0
    assert registry.resolve_hp("afr", get_spec("celeba"))["gammas"][-1] == pytest.approx(3)
    mn = registry.resolve_hp("afr", SPEC3)["gammas"]
    assert mn[0] == pytest.approx(100) and mn[-1] == pytest.approx(1e5)
    assert registry.resolve_hp("afr", SPEC, {"gammas": [1.0]})["gammas"] == [1.0]
    assert wb["select"] == "best_val_wga" and wb["eval_every"] == 1
    for ds in ("waterbirds", "celeba", "multinli", "civilcomments", "synth_waterbirds"):
        g0, full = registry.resolve_hp("afr_gamma0", get_spec(ds)), registry.resolve_hp("afr", get_spec(ds))
        assert g0["gammas"] == [0.0]
        assert (g0["lambdas"], g0["epochs"], g0["lr"]) == (full["lambdas"], full["epochs"], full["lr"])
    with pytest.raises(LLRError, match="unknown parameter 'lrr'"):
        registry.resolve_hp("llr", SPEC, {"lrr": 1})
    with pytest.raises(LLRError, match="unknown last-layer method"):
        registry.get_method("jtt")


def test_llr_reinitializes_head():
    X, y, g = toy()
    rng = np.random.default_rng(0)
    A = (rng.normal(size=(2, 8)).astype(np.float32), rng.normal(size=2).astype(np.float32))
    B = (rng.normal(size=(2, 8)).astype(np.float32), rng.normal(size=2).astype(np.float32))
    Wa, ba, info = _run("llr", X, y, g, erm=A)
    Wb, bb, _ = _run("llr", X, y, g, erm=B)
    np.testing.assert_array_equal(Wa, Wb)
    np.testing.assert_array_equal(ba, bb)
    init = fit.torch_linear_init(8, 2, 0)
    assert not np.allclose(init[0], A[0])
    assert info["epochs"] == 2 and info["n_train"] == len(y)
    # with epochs=0 the result is the fresh nn.Linear-style init, not the ERM head
    W0, _, _ = _run("llr", X, y, g, erm=A, epochs=0)
    np.testing.assert_allclose(W0, init[0], rtol=1e-6)


class _Capture:
    def __init__(self):
        self.calls = []

    def __call__(self, X, y, **kw):
        self.calls.append((np.asarray(X), np.asarray(y), kw))
        k = kw["n_classes"]
        return fit.FitResult(np.zeros((k, X.shape[1])), np.zeros(k), {}, np.zeros(1))


@pytest.mark.parametrize("prefix,by", [("dfr", "g"), ("cbllr", "y")])
@pytest.mark.parametrize("mode", ["subsetting", "upsampling", "upweighting"])
def test_balanced_training_sets(monkeypatch, prefix, by, mode):
    X, y, g = toy(n=200)
    X[:, 0] = np.arange(len(y))  # row id travels with the example
    labels = g if by == "g" else y
    n_lab = 4 if by == "g" else 2
    assert len(set(np.bincount(labels))) > 1  # unbalanced to start with
    cap = _Capture()
    monkeypatch.setattr(methods, "fit_softmax", cap)
    _, _, info = _run(f"{prefix}_{mode}", X, y, g)
    ((Xc, yc, kw),) = cap.calls
    pos = Xc[:, 0].astype(int)
    np.testing.assert_array_equal(yc, y[pos])
    lab = labels[pos]
    if mode == "subsetting":
        counts = np.bincount(lab, minlength=n_lab)
        assert len(set(counts)) == 1 and counts[0] == np.bincount(labels).min()
        assert len(set(pos)) == len(pos)
        assert kw["sample_weights"] is None and kw["loss_weights"] is None
    elif mode == "upsampling":
        mass = np.bincount(lab, weights=kw["sample_weights"], minlength=n_lab)
        np.testing.assert_allclose(mass, 1 / n_lab)
        assert len(pos) == len(y) and kw["loss_weights"] is None
    else:
        counts = np.bincount(lab, minlength=n_lab)
        np.testing.assert_array_equal(kw["loss_weights"], counts.max() / counts[lab])  # n_max / n_c
        assert kw["loss_weights"].min() < 1.0 + 1e-12 and np.sum(kw["loss_weights"] == 1.0) == counts.max()
        assert kw["loss_reduction"] == "weighted_mean"
        assert len(pos) == len(y) and kw["sample_weights"] is None
    mass_key = "group_mass" if by == "g" else "class_mass"
    np.testing.assert_allclose(info[mass_key], 1 / n_lab)
    # group ratio of the cell as trained on (weights over kept examples)
    heldout = _brute_ratio(y, g)
    assert info["heldout_group_ratio"] == pytest.approx(heldout)
    if by == "g":
        assert info["effective_group_ratio"] == pytest.approx(1.0)
    elif mode != "subsetting":  # class balancing scales whole classes: ratio unchanged
        assert info["effective_group_ratio"] == pytest.approx(heldout)
    else:
        assert info["effective_group_ratio"] == pytest.approx(_brute_ratio(y[pos], g[pos], y, g))
    assert kw["init"] is None and kw["lr"] == 1e-2 and kw["batch_size"] == 32


def test_afr_weights_formula_bruteforce():
    rng = np.random.default_rng(3)
    n, k = 40, 3
    logits = rng.normal(size=(n, k)) * 2
    y = rng.choice(k, size=n, p=[0.6, 0.3, 0.1])
    for gamma in (0.0, 1.7, 10.0):
        for bal in (True, False):
            w = afr.afr_weights(logits, y, gamma, bal)
            counts = [sum(1 for t in y if t == c) for c in range(k)]
            ref = []
            for i in range(n):
                ex = [math.exp(v) for v in logits[i]]
                p = ex[y[i]] / sum(ex)
                wi = math.exp(-gamma * p)
                if bal:
                    wi *= counts[0] / counts[y[i]]  # AFR's notebooks
                ref.append(wi)
            ref = np.array(ref) / sum(ref)
            np.testing.assert_allclose(w, ref, rtol=1e-12)
    # huge gammas (AFR's MultiNLI grid) stay finite and normalized
    w = afr.afr_weights(logits, y, 1e5)
    assert np.isfinite(w).all() and w.sum() == pytest.approx(1.0)


def _brute_ratio(y, g, y_ref=None, g_ref=None, weights=None):
    """Mean over classes of (minority weight / majority weight), majority by
    the counts of (y_ref, g_ref); 2 spurious values, all classes with a minority."""
    y_ref = y if y_ref is None else y_ref
    g_ref = g if g_ref is None else g_ref
    w = np.ones(len(y)) if weights is None else weights
    out = []
    for c in sorted(set(y_ref.tolist())):
        n = {k: sum(1 for t in g_ref if t == k) for k in (2 * c, 2 * c + 1)}
        maj = max(n, key=lambda k: (n[k], -k))
        mino = 2 * c + 1 if maj == 2 * c else 2 * c
        if n[mino] == 0:
            continue
        out.append(sum(wi for wi, t in zip(w, g) if t == mino) / sum(wi for wi, t in zip(w, g) if t == maj))
    return sum(out) / len(out)


def test_afr_gamma0_weights_are_class_upweighting():
    """Paper section 3.2: with gamma = 0 and class balancing, AFR's weights are
    the class-upweighting weights n_max / n_c up to one common scale."""
    from llr.train.balancing import upweights

    rng = np.random.default_rng(5)
    y = rng.choice(3, size=70, p=[0.6, 0.3, 0.1])
    logits = rng.normal(size=(70, 3)) * 3
    w = afr.afr_weights(logits, y, 0.0, balance_classes=True)
    counts = np.bincount(y)
    ratio = w / (counts.max() / counts[y])
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)
    np.testing.assert_allclose(w / w.min(), upweights(y), rtol=1e-12)  # largest class: weight 1
    assert w.sum() == pytest.approx(1.0)
    # with gamma > 0 they are not (so the test above can fail)
    w2 = afr.afr_weights(logits, y, 2.0, balance_classes=True)
    assert np.ptp(w2 / upweights(y)) > 1e-3


def test_afr_gamma0_lambda0_equals_class_balanced_upweighting():
    """Paper section 3.2: AFR with gamma = lambda = 0 is class-balanced
    upweighted LLR (same init, full batch, same lr and epochs)."""
    X, y, g = toy(n=90, d=6)
    rng = np.random.default_rng(7)
    erm = (rng.normal(size=(2, 6)).astype(np.float32), rng.normal(size=2).astype(np.float32))
    common = {"epochs": 25, "lr": 0.1, "max_grad_norm": None, "dtype": "float64"}
    Wa, ba, ia = _run("afr", X, y, g, erm=erm, hp={**common, "gammas": [0.0], "lambdas": [0.0], "select": "final"})
    Wg, bg, ig = _run("afr_gamma0", X, y, g, erm=erm, hp={**common, "lambdas": [0.0], "select": "final"})
    np.testing.assert_array_equal(Wg, Wa)
    assert ig["afr"]["gamma"] == 0.0 and ig["afr"]["epoch"] == 25
    Wc, bc, _ = _run("cbllr_upweighting", X, y, g, erm=erm, hp={**common, "batch_size": None, "init": "erm"})
    np.testing.assert_allclose(Wa, Wc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ba, bc, rtol=1e-5, atol=1e-6)
    assert not np.allclose(Wa, erm[0])
    assert ia["afr"]["gamma"] == 0.0 and ia["afr"]["lambda"] == 0.0


def test_afr_grid_selects_best_validation_wga(monkeypatch):
    X, y, g = toy(n=100, d=6)
    erm = (np.zeros((2, 6), np.float32), np.zeros(2, np.float32))
    calls = []
    real = fit.fit_softmax_batched

    def spy(*a, **kw):
        calls.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr(afr, "fit_softmax_batched", spy)
    hp = {
        "gammas": [0.0, 2.0, 8.0],
        "lambdas": [0.0, 0.5],
        "epochs": 20,
        "lr": 0.1,
        "max_chunk_elems": 4 * 100 * 2,
    }  # forces chunks of 4 fits
    W, b, info = _run("afr", X, y, g, erm=erm, hp=hp)
    grid = info["afr"]["grid"]
    assert len(grid) == 6 and [len(c["anchor_lambda"]) for c in calls] == [4, 2]
    assert all(c["batch_size"] is None and c["max_grad_norm"] == 1.0 for c in calls)
    best = max(r["val_wga"] for r in grid)
    assert info["afr"]["val_wga"] == best
    chosen = next(r for r in grid if r["gamma"] == info["afr"]["gamma"] and r["lambda"] == info["afr"]["lambda"])
    assert chosen["val_wga"] == best
    acc = fit.evaluate_head(W, b, X, y, g, 4)
    assert acc["wga"] == pytest.approx(best)


@pytest.mark.parametrize("eval_every", [1, 3])
def test_best_val_wga_tracker_matches_bruteforce(eval_every):
    """The batched tracker keeps, per fit, the first epoch with the highest
    validation WGA (AFR's early stopping), among the evaluated epochs."""
    X, y, g = toy(n=80, d=5, seed=1)
    Xv, yv, gv = toy(n=60, d=5, seed=2)
    F, E = 3, 10
    rng = np.random.default_rng(0)
    Wi, bi = rng.normal(size=(F, 2, 5)), rng.normal(size=(F, 2))
    tracker = fit.BestValWGA(Xv, yv, gv)
    res = fit.fit_softmax_batched(
        X,
        y,
        n_classes=2,
        epochs=E,
        lr=0.5,
        init=(Wi, bi),
        loss_weights=rng.uniform(0.2, 3, size=(F, 80)),
        dtype="float64",
        checkpoint_epochs=range(E + 1),
        callback=tracker,
        eval_every=eval_every,
    )
    W, b, ep, wga = tracker.result()
    evaluated = [e for e in range(1, E + 1) if e % eval_every == 0 or e == E]
    for f in range(F):
        curve = [fit.evaluate_head(res.history[e][0][f], res.history[e][1][f], Xv, yv, gv, 4)["wga"] for e in evaluated]
        best = evaluated[int(np.argmax(curve))]  # first maximum
        assert ep[f] == best and wga[f] == pytest.approx(max(curve))
        np.testing.assert_array_equal(W[f], res.history[best][0][f])
        np.testing.assert_array_equal(b[f], res.history[best][1][f])
    # the torch backend (the fit's own device) gives the same choice
    trackers = []
    for Xb in (torch.tensor(X), X):
        trackers.append(fit.BestValWGA(Xv, yv, gv))
        fit.fit_softmax_batched(
            Xb,
            y,
            n_classes=2,
            epochs=E,
            lr=0.5,
            init=(Wi, bi),
            dtype="float64",
            n_fits=F,
            callback=trackers[-1],
            eval_every=eval_every,
        )
    (Wt, bt, ept, wgat), (Wn, bn, epn, wgan) = (t.result() for t in trackers)
    assert isinstance(Wt, np.ndarray) and ept.tolist() == epn.tolist()
    np.testing.assert_allclose(Wt, Wn, rtol=1e-10)
    np.testing.assert_allclose(wgat, wgan)


def _peaking_problem():
    """Validation WGA rises, peaks early and collapses: the ERM head uses the
    core feature (x0) weakly and the spurious one (x1) against the label; the
    training cell's labels follow x1 only, so training first cancels the
    anti-spurious weight (all validation groups right) and then overshoots
    (the validation minority groups flip)."""
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 2, n)
    s = y.copy()  # spurious = label on the training cell
    X = np.stack([rng.normal(0, 0.3, n), 2.0 * s - 1 + rng.normal(0, 0.1, n)], axis=1)
    yv = np.repeat([0, 0, 1, 1], 25)
    sv = np.tile(np.repeat([0, 1], 25), 2)
    Xv = np.stack([2.0 * yv - 1, 2.0 * sv - 1], axis=1) + rng.normal(0, 0.05, (100, 2))
    erm = (np.array([[-0.2, 0.3], [0.2, -0.3]], np.float32), np.zeros(2, np.float32))
    return X.astype(np.float32), y, 2 * y + s, Xv.astype(np.float32), yv, 2 * yv + sv, erm


@pytest.mark.parametrize("name", ["afr", "afr_gamma0"])
def test_afr_select_best_val_wga_vs_final(name):
    X, y, g, Xv, yv, gv, erm = _peaking_problem()
    Xall = np.concatenate([X, Xv])
    yall, gall = np.concatenate([y, yv]), np.concatenate([g, gv])
    meta = pd.DataFrame({"idx": np.arange(len(yall)), "y": yall, "g": gall})
    roles = np.array(["heldout"] * len(y) + ["val"] * len(yv), dtype=object)
    hp = {"lambdas": [0.0], "epochs": 60, "lr": 0.1, "dtype": "float64"}
    if name == "afr":
        hp["gammas"] = [0.0]

    def run(select):
        return registry.run_method(
            name,
            Xall,
            meta,
            roles,
            np.arange(len(y)),
            np.arange(len(y), len(yall)),
            erm,
            {**hp, "select": select},
            0,
            60,
            SPEC,
        )

    Wb, bb, ib = run("best_val_wga")
    Wf, bf, i_f = run("final")
    # brute force: the same full-batch fit, every epoch kept
    N = len(y)
    w = afr.afr_weights(X.astype(np.float64) @ erm[0].T.astype(np.float64) + erm[1], y, 0.0)
    ref = fit.fit_softmax(
        X,
        y,
        n_classes=2,
        epochs=60,
        batch_size=None,
        lr=0.1,
        loss_weights=N * w,
        init=erm,
        anchor=erm,
        anchor_lambda=0.0,
        max_grad_norm=1.0,
        dtype="float64",
        checkpoint_epochs=range(61),
    )
    curve = [fit.evaluate_head(*ref.history[e], Xv, yv, gv, 4)["wga"] for e in range(1, 61)]
    assert curve[0] < 0.5 and max(curve) == 1.0 and curve[-1] < 0.5  # rises, peaks, collapses
    best = 1 + int(np.argmax(curve))
    assert 1 < ib["afr"]["epoch"] == best < 60 and i_f["afr"]["epoch"] == 60
    np.testing.assert_allclose(Wb, ref.history[best][0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(Wf, ref.history[60][0], rtol=1e-6, atol=1e-6)
    assert ib["afr"]["val_wga"] == 1.0 and i_f["afr"]["val_wga"] == pytest.approx(curve[-1])
    assert ib["afr"]["grid"][0]["epoch"] == best


def test_check_method_params_errors():
    ok = {"lr": 1e-3, "epochs": 5, "batch_size": None, "init": "erm", "momentum": 0.9}
    registry.check_method_params("llr", ok)
    registry.check_method_params(
        "afr", {"gammas": [0, 1.5], "lambdas": [0.0], "select": "final", "balance_classes": False, "eval_every": 2}
    )
    registry.check_method_params("dfr_upweighting", {})
    cases = [
        ("jtt", {}, r"unknown last-layer method 'jtt'"),
        ("llr", {"epoch": 3}, r"unknown parameter 'epoch' \(did you mean 'epochs'\?\)"),
        ("afr", {"gamma": [1.0]}, r"did you mean 'gammas'"),
        ("llr", {"zzz": 1}, r"unknown parameter 'zzz'; expected one of"),
        ("llr", {"epochs": 0}, r"epochs=0: expected a positive integer"),
        ("llr", {"epochs": 2.5}, r"epochs=2.5: expected a positive integer"),
        ("llr", {"epochs": True}, r"epochs=True: expected an integer"),
        ("llr", {"epochs": "abc"}, r"epochs='abc': expected an integer, got the string 'abc'$"),
        ("llr", {"lr": "1e-3"}, r"lr='1e-3': expected a number, got the string '1e-3' \(YAML .*1\.0e-3"),
        ("llr", {"lr": "abc"}, r"expected a number, got the string 'abc'$"),
        ("llr", {"epochs": "5"}, r"expected an integer, got the string '5' \(write the number without quotes\)"),
        (
            "llr",
            {"epochs": 5.0},
            r"epochs=5.0: expected a positive integer or null, got 5.0 \(write it without a decimal",
        ),
        ("llr", {"lr": -0.1}, r"lr=-0.1: expected a positive number"),
        ("llr", {"lr": 0}, r"expected a positive number"),
        ("llr", {"lr": None}, r"lr=None: expected a positive number, got null"),
        ("llr", {"momentum": 1.0}, r"momentum=1.0: expected a number >= 0 and < 1"),
        ("llr", {"init": "zeros"}, r"init='zeros': expected one of \['reinit', 'erm'\]"),
        ("afr", {"gammas": [1.0, "x"]}, r"gammas=\[1.0, 'x'\]: expected a list of numbers, got the string 'x'"),
        ("afr", {"gammas": [-1.0]}, r"expected a list of numbers \(each >= 0\)"),
        ("afr", {"lambdas": 0.1}, r"lambdas=0.1: expected a list of numbers"),
        ("afr", {"select": "best"}, r"select='best': expected one of \['best_val_wga', 'final'\]"),
        ("afr", {"balance_classes": "yes"}, r"balance_classes='yes': expected true or false"),
        ("afr_gamma0", {"eval_every": 0}, r"eval_every=0: expected a positive integer"),
    ]
    for name, params, msg in cases:
        with pytest.raises(LLRError, match=msg) as e:
            registry.check_method_params(name, params)
        assert "\n" not in str(e.value)
    # the same checks guard every run
    with pytest.raises(LLRError, match="did you mean 'epochs'"):
        registry.resolve_hp("llr", SPEC, {"epoch": 3})


# ----------------------------------------------------------------- job entry


def _write_cell(tmp_path, n=160, d=6, seed=0):
    rng = np.random.default_rng(seed)
    root = tmp_path / "results" / "synth_waterbirds"
    root.mkdir(parents=True)
    split = rng.choice(["train", "val", "test"], size=n, p=[0.5, 0.25, 0.25])
    g = np.tile(np.arange(4), n // 4 + 1)[:n]
    rng.shuffle(g)
    y, s = g // 2, g % 2
    meta = pd.DataFrame({"idx": np.arange(n), "split": split, "y": y, "s": s, "g": g, "src": "x"})
    meta.sample(frac=1, random_state=0).to_csv(root / "metadata.csv", index=False)  # rows shuffled
    role = split.astype(object).copy()
    tr = np.flatnonzero(split == "train")
    role[tr[: len(tr) // 2]] = "heldout"
    pd.DataFrame({"idx": np.arange(n), "role": role}).to_csv(root / "split.csv", index=False)
    X = rng.normal(size=(n, d)) + 1.5 * np.eye(2, d)[y] + 0.5 * np.eye(2, d)[s][:, ::-1]
    np.save(root / "embeddings.npy", X.astype(np.float16))
    np.savez(root / "head.npz", W=rng.normal(size=(2, d)).astype(np.float32), b=np.zeros(2, np.float32))
    held = np.flatnonzero(role == "heldout")
    (root / "subsets").mkdir()
    pd.DataFrame({"idx": held[::2]}).to_csv(root / "subsets" / "heldout_ratio0.5.csv", index=False)
    return root, meta, role


def test_run_lastlayer_job_end_to_end(tmp_path):
    root, meta, role = _write_cell(tmp_path)
    args = dict(
        embeddings=str(root / "embeddings.npy"),
        head=str(root / "head.npz"),
        metadata=str(root / "metadata.csv"),
        split=str(root / "split.csv"),
        seed=1,
        epochs=3,
    )
    out = root / "ll" / "dfr_subsetting" / "metrics.json"
    res = job.run_lastlayer_job(
        heldout=str(root / "subsets" / "heldout_ratio0.5.csv"),
        method="dfr_subsetting",
        params='{"lr": 0.05}',
        out_json=str(out),
        **args,
    )
    saved = json.loads(out.read_text())
    saved.pop("_llr", None)  # provenance stamp added by llr.io.write_json
    assert saved == json.loads(json.dumps(res))
    assert saved["dataset"] == "synth_waterbirds" and saved["method"] == "dfr_subsetting"
    assert saved["hp"]["lr"] == 0.05 and saved["seed"] == 1 and saved["epochs"] == 3
    assert saved["train_cell_n"] == len(np.flatnonzero(role == "heldout")[::2])
    assert len(set(saved["train_group_counts"])) == 1  # group-balanced subset
    assert set(saved["metrics"]) == {"train_cell", "val", "test"}
    for m in saved["metrics"].values():
        assert set(m) == {"acc_by_group", "wga", "mean_acc", "n"}
    assert saved["metrics"]["test"]["n"] == int((role == "test").sum())
    W, b = np.array(saved["head"]["W"]), np.array(saved["head"]["b"])
    assert W.shape == (2, 6) and b.shape == (2,)
    # mean accuracy weighted by the train split's group proportions (Waterbirds-like)
    X = np.load(root / "embeddings.npy").astype(np.float32)
    m = meta.sort_values("idx")
    test = role == "test"
    pred = np.argmax(X[test] @ W.T.astype(np.float32) + b, axis=1)
    acc = [np.mean(pred[m.g.to_numpy()[test] == k] == k // 2) for k in range(4)]
    share = np.bincount(m.g[m.split == "train"], minlength=4) / (m.split == "train").sum()
    assert saved["metrics"]["test"]["mean_acc"] == pytest.approx(float(np.dot(acc, share)), abs=1e-6)

    # the full held-out role, and AFR with a small grid
    out2 = root / "ll" / "afr.json"
    res2 = job.run_lastlayer_job(
        heldout="full",
        method="afr",
        out_json=str(out2),
        params={"gammas": [0.0, 4.0], "lambdas": [0.0, 0.1], "epochs": 10},
        **args,
    )
    assert res2["train_cell_n"] == int((role == "heldout").sum())
    assert res2["afr"]["gamma"] in (0.0, 4.0) and len(res2["afr"]["grid"]) == 4
    assert res2["hp"]["epochs"] == 10
    assert 1 <= res2["afr"]["epoch"] <= 10 and res2["afr"]["select"] == "best_val_wga"


def test_job_records_group_ratios(tmp_path):
    root, meta, role = _write_cell(tmp_path)
    m = meta.sort_values("idx")
    y, g = m.y.to_numpy(), m.g.to_numpy()
    args = dict(
        embeddings=str(root / "embeddings.npy"),
        head=str(root / "head.npz"),
        metadata=str(root / "metadata.csv"),
        split=str(root / "split.csv"),
        seed=0,
        epochs=2,
    )
    sub = str(root / "subsets" / "heldout_ratio0.5.csv")
    cell = np.sort(pd.read_csv(sub)["idx"].to_numpy())
    res = job.run_lastlayer_job(heldout=sub, method="llr", params=None, out_json=str(root / "a.json"), **args)
    tr = role == "train"
    assert res["train_group_ratio"] == pytest.approx(_brute_ratio(y[tr], g[tr]))
    assert res["heldout_group_ratio"] == pytest.approx(_brute_ratio(y[cell], g[cell]))
    assert res["effective_group_ratio"] == pytest.approx(res["heldout_group_ratio"])  # plain LLR
    assert res["heldout_construction"] == "subset" and res["heldout_sampling_ratio"] is None
    res = job.run_lastlayer_job(
        heldout=sub, method="dfr_upweighting", params=None, out_json=str(root / "b.json"), **args
    )
    assert res["effective_group_ratio"] == pytest.approx(1.0)


def test_job_sampled_heldout_construction(tmp_path, monkeypatch):
    root, meta, role = _write_cell(tmp_path)
    m = meta.sort_values("idx")
    y, g = m.y.to_numpy(), m.g.to_numpy()
    held = np.flatnonzero(role == "heldout")
    args = dict(
        embeddings=str(root / "embeddings.npy"),
        head=str(root / "head.npz"),
        metadata=str(root / "metadata.csv"),
        split=str(root / "split.csv"),
        seed=0,
        epochs=2,
    )
    cap = _Capture()
    monkeypatch.setattr(methods, "fit_softmax", cap)
    res = job.run_lastlayer_job(
        heldout="full", method="llr", params=None, out_json=str(root / "s.json"), heldout_sampling_ratio=0.2, **args
    )
    assert res["heldout_construction"] == "sampled" and res["heldout_sampling_ratio"] == 0.2
    assert res["effective_group_ratio"] == pytest.approx(0.2, abs=1e-12)
    assert res["train_cell_n"] == len(held) and res["n_train"] == len(held)
    ((Xc, yc, kw),) = cap.calls
    sw = kw["sample_weights"]
    assert len(yc) == len(held) and sw is not None and kw["loss_weights"] is None
    assert _brute_ratio(y[held], g[held], weights=sw) == pytest.approx(0.2)
    assert kw["lr"] == 1e-2 and kw["batch_size"] == 32 and kw["init"] is None  # plain LLR
    for bad, msg in (
        (
            dict(heldout=str(root / "subsets" / "heldout_ratio0.5.csv"), method="llr", heldout_sampling_ratio=0.2),
            "needs heldout='full'",
        ),
        (dict(heldout="full", method="dfr_subsetting", heldout_sampling_ratio=0.2), "plain LLR"),
        (dict(heldout="full", method="llr", heldout_sampling_ratio=1.5), "out of range"),
    ):
        with pytest.raises(LLRError, match=msg):
            job.run_lastlayer_job(params=None, out_json=str(root / "x.json"), **bad, **args)


def test_cli_heldout_sampling_ratio_flag(tmp_path, monkeypatch):
    from llr import cli

    seen = {}
    monkeypatch.setattr(job, "run_lastlayer_job", lambda **kw: seen.update(kw))
    argv = [
        "lastlayer",
        "--embeddings",
        "e",
        "--head",
        "h",
        "--metadata",
        "m",
        "--split",
        "s",
        "--heldout",
        "full",
        "--method",
        "llr",
        "--out",
        "o",
        "--seed",
        "0",
        "--epochs",
        "1",
        "--heldout-sampling-ratio",
        "0.25",
    ]
    a = cli.build_parser().parse_args(argv)
    a.func(a)
    assert seen["heldout_sampling_ratio"] == 0.25 and seen["heldout"] == "full"


def test_run_lastlayer_job_errors(tmp_path):
    root, meta, role = _write_cell(tmp_path)
    args = dict(
        embeddings=str(root / "embeddings.npy"),
        head=str(root / "head.npz"),
        metadata=str(root / "metadata.csv"),
        split=str(root / "split.csv"),
        seed=0,
        epochs=1,
        out_json=str(root / "o.json"),
    )
    with pytest.raises(LLRError, match="not valid JSON"):
        job.run_lastlayer_job(heldout="full", method="llr", params="{lr: 1}", **args)
    with pytest.raises(LLRError, match="unknown last-layer method"):
        job.run_lastlayer_job(heldout="full", method="nope", params=None, **args)
    bad = root / "bad.csv"
    pd.DataFrame({"idx": np.flatnonzero(role == "test")[:3]}).to_csv(bad, index=False)
    with pytest.raises(LLRError, match="role 'test'"):
        job.run_lastlayer_job(heldout=str(bad), method="llr", params=None, **args)
    np.save(root / "short.npy", np.zeros((5, 6), np.float16))
    with pytest.raises(LLRError, match="short.npy"):
        job.run_lastlayer_job(
            heldout="full", method="llr", params=None, **{**args, "embeddings": str(root / "short.npy")}
        )
    np.savez(root / "nohead.npz", W=np.zeros((2, 6), np.float32))
    with pytest.raises(LLRError, match="nohead.npz: array 'b' missing"):
        job.run_lastlayer_job(heldout="full", method="llr", params=None, **{**args, "head": str(root / "nohead.npz")})
    with pytest.raises(LLRError, match="missing.csv: file not found"):
        job.run_lastlayer_job(heldout=str(root / "missing.csv"), method="llr", params=None, **args)
    assert not (root / "o.json").exists()
