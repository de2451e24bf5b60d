"""The last-layer fitting core on cached embeddings: a softmax-regression trainer written once
against the array API (NumPy, or torch on any device) with analytic gradients (paper Appendix B.2)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import array_api_compat
import numpy as np

from llr.errors import LLRError
from llr.train.metrics import evaluate

Array = Any  # a NumPy array or a torch tensor


# --------------------------------------------------------------------------
# Backend helpers
# --------------------------------------------------------------------------


def _is_torch(x: Any) -> bool:
    return array_api_compat.is_torch_array(x)  # never imports torch itself


def _to_numpy(x: Array) -> np.ndarray:
    if _is_torch(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class _Backend:
    """Array namespace, device and dtype of one fit: NumPy, or torch when ``X``
    is a tensor or ``device`` is not ``'cpu'`` (torch is imported only then).
    A tensor ``X`` keeps its own device unless ``device`` names another one."""

    def __init__(self, X: Array, device: str, dtype: str):
        if dtype not in ("float32", "float64"):
            raise LLRError(f"dtype {dtype!r} unknown, expected 'float32' or 'float64'")
        self.torch = _is_torch(X) or str(device) != "cpu"
        if self.torch:
            import torch

            self.dev = X.device if (_is_torch(X) and str(device) == "cpu") else torch.device(device)
            self.dtype = getattr(torch, dtype)
            self.xp = array_api_compat.array_namespace(torch.empty(0))
        else:
            self.dev = "cpu"
            self.dtype = np.dtype(dtype)
            self.xp = array_api_compat.array_namespace(np.empty(0))

    def float(self, a: Array) -> Array:
        """Move/convert to a floating array of the fit's dtype on its device."""
        if self.torch:
            import torch

            return torch.as_tensor(a).to(device=self.dev, dtype=self.dtype)
        return np.asarray(a, dtype=self.dtype)

    def int(self, a: Array) -> Array:
        if self.torch:
            import torch

            return torch.as_tensor(a).to(device=self.dev, dtype=torch.int64)
        return np.asarray(a, dtype=np.int64)


def _one_hot(xp, y: Array, n_classes: int, be: _Backend) -> Array:
    y_np = _to_numpy(y).astype(np.int64)
    if y_np.ndim != 1 or (len(y_np) and (y_np.min() < 0 or y_np.max() >= n_classes)):
        raise LLRError(f"labels must be a 1-d array of integers in 0..{n_classes - 1}")
    return be.float(np.eye(n_classes)[y_np])


# --------------------------------------------------------------------------
# Loss and analytic gradient
# --------------------------------------------------------------------------


def _loss_grad(
    xp,
    X: Array,
    Y: Array,
    W: Array,
    b: Array,
    w: Array | None,
    anchor: tuple[Array, Array] | None,
    lam: Array | None,
    weighted_mean: bool = False,
):
    """Objective and analytic gradient for F heads at once.

    Internal layout, class axis before fit axis so that reductions over the
    (small) class axis run over contiguous (n, F) slices: X (n,d), Y one-hot
    (n,K), W (K,F,d), b (K,F), w loss weights (n,F) or None, anchor
    (W_a (K,F,d), b_a (K,F)), lam (F,). Per fit f::

        L_f = (1/n) sum_i w_if CE(x_i W_f^T + b_f, y_i)
              + lam_f (||W_f - W_a,f||^2 + ||b_f - b_a,f||^2)

    dL/dZ = (softmax(Z) - Y) * w / n. With ``weighted_mean`` the data term's
    1/n becomes 1/sum_i w_if (the batch's weight total, as
    ``torch.nn.functional.cross_entropy(..., weight=class_weights)``, which
    the authors' upweighting uses). Returns (L (F,), dW (K,F,d), db (K,F)).
    """
    n, d = X.shape
    K, F, _ = W.shape
    Z = xp.reshape(xp.matmul(X, xp.matrix_transpose(xp.reshape(W, (K * F, d)))), (n, K, F))
    Z = Z + b[None, :, :]
    m = xp.max(Z, axis=1)  # (n, F)
    E = xp.exp(Z - m[:, None, :])
    S = xp.sum(E, axis=1)  # (n, F)
    Yb = Y[:, :, None]
    ce = xp.log(S) + m - xp.sum(Z * Yb, axis=1)  # (n, F)
    G = E / S[:, None, :] - Yb
    denom = n
    if w is not None:
        ce = ce * w
        G = G * w[:, None, :]
        if weighted_mean:
            tot = xp.sum(w, axis=0)  # (F,)
            denom = xp.where(tot > 0, tot, xp.ones_like(tot))
    loss = xp.sum(ce, axis=0) / denom
    G = G / (denom[None, None, :] if w is not None and weighted_mean else denom)
    gW = xp.reshape(xp.matmul(xp.matrix_transpose(xp.reshape(G, (n, K * F))), X), (K, F, d))
    gb = xp.sum(G, axis=0)
    if anchor is not None:
        dW, db = W - anchor[0], b - anchor[1]
        sq = xp.sum(xp.sum(dW * dW, axis=2), axis=0) + xp.sum(db * db, axis=0)
        loss = loss + lam * sq
        gW = gW + (2.0 * lam)[None, :, None] * dW
        gb = gb + (2.0 * lam)[None, :] * db
    return loss, gW, gb


def loss_and_grad(
    X: Array,
    y: Array,
    W: Array,
    b: Array,
    *,
    n_classes: int,
    loss_weights: Array | None = None,
    anchor: tuple[Array, Array] | None = None,
    anchor_lambda: float = 0.0,
    dtype: str = "float64",
    loss_reduction: str = "mean",
):
    """Objective of one head (see :func:`fit_softmax`) and its analytic gradient,
    ``(loss, dW, db)`` as NumPy; on torch when ``X`` is a tensor. For tests."""
    _check_reduction(loss_reduction)
    be = _Backend(X, "cpu", dtype)
    xp = be.xp
    Xb, Y = be.float(X), _one_hot(xp, y, n_classes, be)
    w = None if loss_weights is None else be.float(loss_weights)[:, None]
    anc = None
    lam = be.float(np.array([anchor_lambda]))
    if anchor is not None:
        anc = (be.float(anchor[0])[:, None, :], be.float(anchor[1])[:, None])
    loss, gW, gb = _loss_grad(
        xp, Xb, Y, be.float(W)[:, None, :], be.float(b)[:, None], w, anc, lam, loss_reduction == "weighted_mean"
    )
    return float(_to_numpy(loss)[0]), _to_numpy(gW)[:, 0], _to_numpy(gb)[:, 0]


# --------------------------------------------------------------------------
# Fitting core
# --------------------------------------------------------------------------

LOSS_REDUCTIONS = ("mean", "weighted_mean")


def _check_reduction(loss_reduction: str) -> None:
    if loss_reduction not in LOSS_REDUCTIONS:
        raise LLRError(f"loss_reduction {loss_reduction!r} unknown, expected one of {list(LOSS_REDUCTIONS)}")


@dataclass
class FitResult:
    """A trained head. ``W`` (K,d) and ``b`` (K,) for :func:`fit_softmax`;
    a leading fit axis F for :func:`fit_softmax_batched`. ``history`` maps an
    epoch (0 = initialization) to ``(W, b)`` after it; ``loss`` is the mean
    objective per epoch (computed before each step's update), shape (epochs,)
    or (epochs, F)."""

    W: np.ndarray
    b: np.ndarray
    history: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    loss: np.ndarray = field(default_factory=lambda: np.zeros(0))


def torch_linear_init(d: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``torch.nn.Linear``'s initialization, W, b ~ U(-1/sqrt(d), 1/sqrt(d)),
    drawn from a seeded NumPy generator so that every backend starts alike."""
    rng = np.random.default_rng([int(seed), 0])
    bound = 1.0 / math.sqrt(d)
    W = rng.uniform(-bound, bound, size=(n_classes, d))
    b = rng.uniform(-bound, bound, size=(n_classes,))
    return W, b


def _fit_core(
    X: Array,
    y: Array,
    *,
    n_classes: int,
    epochs: int,
    batch_size: int | None,
    lr: float,
    momentum: float,
    weight_decay: float,
    max_grad_norm: float | None,
    loss_weights: np.ndarray | Array | None,
    sample_weights: np.ndarray | None,
    init: tuple[Array, Array],
    anchor: tuple[Array, Array] | None,
    anchor_lambda: np.ndarray,
    seed: int,
    checkpoint_epochs: Sequence[int],
    device: str,
    dtype: str,
    loss_reduction: str = "mean",
    callback: Callable[[int, Array, Array], None] | None = None,
    eval_every: int = 1,
) -> FitResult:
    """Train F heads (init W (F,K,d), b (F,K), NumPy) on shared data with the
    same minibatch order.

    Plain SGD as ``torch.optim.SGD`` (dampening 0, no Nesterov): gradient of
    the objective, then norm clipping per fit (as ``clip_grad_norm_``), then
    ``+ weight_decay * param``, then momentum ``buf = momentum * buf + grad``,
    then ``param -= lr * buf``; constant lr.

    ``callback(epoch, W, b)``, if given, runs after every ``eval_every``-th
    epoch and after the last one, on the fit's own arrays (backend and device)
    with W (F,K,d) and b (F,K) (views; do not modify), e.g.
    :class:`BestValWGA`.
    """
    _check_reduction(loss_reduction)
    if isinstance(eval_every, bool) or not isinstance(eval_every, (int, np.integer)) or eval_every < 1:
        raise LLRError(f"eval_every {eval_every!r} must be a positive integer")
    be = _Backend(X, device, dtype)
    xp = be.xp
    Xb = be.float(X)
    if Xb.ndim != 2:
        raise LLRError(f"embeddings must be 2-d (N, d), got shape {tuple(Xb.shape)}")
    N, d = Xb.shape
    if N == 0:
        raise LLRError("cannot fit a head on an empty training set")
    Y = _one_hot(xp, y, n_classes, be)
    if Y.shape[0] != N:
        raise LLRError(f"{Y.shape[0]} labels for {N} embeddings")
    W0, b0 = (np.asarray(_to_numpy(a)) for a in init)
    F = W0.shape[0]
    if W0.shape != (F, n_classes, d) or b0.shape != (F, n_classes):
        raise LLRError(
            f"init head has shape {W0.shape}/{b0.shape}, expected ({F}, {n_classes}, {d})/({F}, {n_classes})"
        )
    # internal layout (K, F, d) / (K, F): see _loss_grad
    W = be.float(np.ascontiguousarray(np.swapaxes(W0, 0, 1)))
    b = be.float(np.ascontiguousarray(b0.T))
    lw = None
    if loss_weights is not None:
        lw = np.asarray(_to_numpy(loss_weights))
        if lw.shape != (F, N):
            raise LLRError(f"loss_weights have shape {lw.shape}, expected ({F}, {N})")
        lw = be.float(np.ascontiguousarray(lw.T))  # (N, F): rows gathered per batch
    anc = None
    lam_np = np.asarray(anchor_lambda, dtype=np.float64)
    if lam_np.ndim > 1 or (lam_np.ndim == 1 and len(lam_np) not in (1, F)):
        raise LLRError(f"anchor_lambda has shape {lam_np.shape}, expected a number or ({F},)")
    lam = be.float(np.broadcast_to(lam_np, (F,)).copy())
    if anchor is not None:
        Wa, ba = (np.asarray(_to_numpy(a)) for a in anchor)
        if Wa.shape != (F, n_classes, d) or ba.shape != (F, n_classes):
            raise LLRError(
                f"anchor head has shape {Wa.shape}/{ba.shape}, expected ({F}, {n_classes}, {d})/({F}, {n_classes})"
            )
        anc = (be.float(np.ascontiguousarray(np.swapaxes(Wa, 0, 1))), be.float(np.ascontiguousarray(ba.T)))
    sw = None
    if sample_weights is not None:
        sw = np.asarray(_to_numpy(sample_weights), dtype=np.float64)
        if sw.shape != (N,) or (sw < 0).any() or sw.sum() <= 0:
            raise LLRError(f"sample_weights must be {N} non-negative numbers with a positive sum")
        sw = sw / sw.sum()
    B = N if batch_size is None else int(batch_size)
    if B <= 0:
        raise LLRError(f"batch_size {batch_size!r} must be positive or None (full batch)")
    ckpts = {int(e) for e in checkpoint_epochs}
    bad = [e for e in ckpts if not 0 <= e <= epochs]
    if bad:
        raise LLRError(f"checkpoint epoch {bad[0]} outside 0..{epochs}")
    rng = np.random.default_rng([int(seed), 1])

    def export(W: Array, b: Array) -> tuple[np.ndarray, np.ndarray]:
        return np.ascontiguousarray(np.swapaxes(_to_numpy(W), 0, 1)), np.ascontiguousarray(_to_numpy(b).T)

    history: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if 0 in ckpts:
        history[0] = export(W, b)
    bufW = bufb = None
    losses = []
    full = B >= N and sw is None
    for epoch in range(1, int(epochs) + 1):
        if not full:
            order = rng.permutation(N) if sw is None else rng.choice(N, size=N, replace=True, p=sw)
            order = be.int(order)
        ep_loss = None
        for start in range(0, N, B):
            if full:
                Xs, Ys, ws = Xb, Y, lw
            else:
                idx = order[start : start + B]
                Xs, Ys = xp.take(Xb, idx, axis=0), xp.take(Y, idx, axis=0)
                ws = None if lw is None else xp.take(lw, idx, axis=0)
            n = Xs.shape[0]
            loss, gW, gb = _loss_grad(xp, Xs, Ys, W, b, ws, anc, lam, loss_reduction == "weighted_mean")
            if max_grad_norm is not None:
                norm = xp.sqrt(xp.sum(xp.sum(gW * gW, axis=2), axis=0) + xp.sum(gb * gb, axis=0))
                coef = xp.clip(max_grad_norm / (norm + 1e-6), max=1.0)
                gW, gb = gW * coef[None, :, None], gb * coef[None, :]
            if weight_decay:
                gW, gb = gW + weight_decay * W, gb + weight_decay * b
            if momentum:
                if bufW is None:
                    bufW, bufb = gW, gb
                else:
                    bufW, bufb = momentum * bufW + gW, momentum * bufb + gb
                gW, gb = bufW, bufb
            W = W - lr * gW
            b = b - lr * gb
            ep_loss = loss * n if ep_loss is None else ep_loss + loss * n
        losses.append(ep_loss / N)
        if epoch in ckpts:
            history[epoch] = export(W, b)
        if callback is not None and (epoch % int(eval_every) == 0 or epoch == int(epochs)):
            callback(epoch, xp.permute_dims(W, (1, 0, 2)), xp.permute_dims(b, (1, 0)))
    loss_trace = _to_numpy(xp.stack(losses)) if losses else np.zeros((0, F))
    return FitResult(*export(W, b), history, np.asarray(loss_trace))


def fit_softmax(
    X: Array,
    y: Array,
    *,
    n_classes: int,
    epochs: int,
    batch_size: int | None = 32,
    lr: float = 1e-2,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    loss_weights: Array | None = None,
    sample_weights: Array | None = None,
    init: tuple[Array, Array] | None = None,
    anchor: tuple[Array, Array] | None = None,
    anchor_lambda: float = 0.0,
    max_grad_norm: float | None = None,
    seed: int = 0,
    checkpoint_epochs: Sequence[int] = (),
    device: str = "cpu",
    dtype: str = "float32",
    loss_reduction: str = "mean",
) -> FitResult:
    """Train a softmax-regression head ``x -> x W^T + b`` (paper Appendix B.2;
    docs/design.md, "Last-layer methods").

    Objective on a batch of n examples::

        (1/n) sum_i loss_weights_i * CE_i + anchor_lambda * (||W - W_a||^2 + ||b - b_a||^2)

    ``loss_weights`` (None = 1) implement upweighting; ``loss_reduction``
    ``"mean"`` divides the weighted sum by the batch size n as above,
    ``"weighted_mean"`` by the batch's total weight (torch's
    ``cross_entropy(weight=...)``, the authors' upweighting), so that the
    weights' scale does not act as a step size;
    ``sample_weights`` implement upsampling: each epoch draws N examples with
    replacement with these probabilities (epoch length unchanged); otherwise
    each epoch is a seeded permutation. The last partial batch is kept;
    ``batch_size=None`` is full-batch gradient descent. The anchor term
    includes the bias, as in AFR's code. ``init=None`` reinitializes like
    ``torch.nn.Linear`` from ``seed`` (:func:`torch_linear_init`).
    ``max_grad_norm`` clips the gradient's norm (W and b together).

    Runs on NumPy; on torch when ``X`` is a tensor (its device) or ``device`` is
    not ``'cpu'`` (e.g. ``'cuda'``). All randomness comes from NumPy generators
    seeded by ``seed``, so both backends follow the same path. Returns NumPy.
    """
    n, d = X.shape
    if init is None:
        init = torch_linear_init(d, n_classes, seed)
    W0, b0 = (_to_numpy(a) for a in init)
    anc = None if anchor is None else tuple(_to_numpy(a)[None] for a in anchor)
    lw = None if loss_weights is None else _to_numpy(loss_weights)[None]
    r = _fit_core(
        X,
        y,
        n_classes=n_classes,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        loss_weights=lw,
        sample_weights=sample_weights,
        init=(W0[None], b0[None]),
        anchor=anc,
        anchor_lambda=np.asarray([anchor_lambda]),
        seed=seed,
        checkpoint_epochs=checkpoint_epochs,
        device=device,
        dtype=dtype,
        loss_reduction=loss_reduction,
    )
    return FitResult(r.W[0], r.b[0], {e: (w[0], c[0]) for e, (w, c) in r.history.items()}, r.loss[:, 0])


def fit_softmax_batched(
    X: Array,
    y: Array,
    *,
    n_classes: int,
    epochs: int,
    batch_size: int | None = None,
    lr: float = 1e-2,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    loss_weights: Array | None = None,
    sample_weights: Array | None = None,
    init: tuple[Array, Array] | None = None,
    anchor: tuple[Array, Array] | None = None,
    anchor_lambda: float | Sequence[float] = 0.0,
    max_grad_norm: float | None = None,
    n_fits: int | None = None,
    seed: int = 0,
    checkpoint_epochs: Sequence[int] = (),
    device: str = "cpu",
    dtype: str = "float32",
    loss_reduction: str = "mean",
    callback: Callable[[int, Array, Array], None] | None = None,
    eval_every: int = 1,
) -> FitResult:
    """F fits of :func:`fit_softmax` sharing X, y and the batch order, trained as
    one tensor program (one GEMM of X against all F heads per step) — used for
    AFR's (gamma, lambda) grid (docs/design.md, "Last-layer methods"). Per-fit inputs carry a
    leading F axis: ``loss_weights`` (F,N), ``init``/``anchor`` ((F,K,d),
    (F,K)), ``anchor_lambda`` (F,); unbatched ones are shared. F is taken from
    these or ``n_fits``. Equals F separate :func:`fit_softmax` calls with the
    same seed. Default full batch. ``callback``/``eval_every``: evaluate all F
    heads at once during training (see :func:`_fit_core`, :class:`BestValWGA`)."""
    n, d = X.shape
    sizes = set()
    lw = None if loss_weights is None else _to_numpy(loss_weights)
    if lw is not None and lw.ndim == 2:
        sizes.add(lw.shape[0])
    lam = np.asarray(anchor_lambda, dtype=np.float64)
    if lam.ndim == 1:
        sizes.add(len(lam))
    heads = {}
    for name, pair in (("init", init), ("anchor", anchor)):
        if pair is not None:
            a, c = (_to_numpy(t) for t in pair)
            if a.ndim == 3:
                sizes.add(a.shape[0])
            heads[name] = (a, c)
    if n_fits is not None:
        sizes.add(int(n_fits))
    if len(sizes) > 1:
        raise LLRError(f"fit_softmax_batched: inconsistent numbers of fits {sorted(sizes)}")
    F = sizes.pop() if sizes else 1

    def per_fit(a: np.ndarray, ndim: int) -> np.ndarray:
        return np.broadcast_to(a, (F,) + a.shape[-ndim:]) if a.ndim == ndim else a

    W0, b0 = heads.get("init") or torch_linear_init(d, n_classes, seed)
    init_f = (per_fit(W0, 2), per_fit(b0, 1))
    anc = None
    if "anchor" in heads:
        anc = (per_fit(heads["anchor"][0], 2), per_fit(heads["anchor"][1], 1))
    if lw is not None:
        lw = per_fit(lw, 1)
    return _fit_core(
        X,
        y,
        n_classes=n_classes,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        loss_weights=lw,
        sample_weights=sample_weights,
        init=init_f,
        anchor=anc,
        anchor_lambda=lam,
        seed=seed,
        checkpoint_epochs=checkpoint_epochs,
        device=device,
        dtype=dtype,
        loss_reduction=loss_reduction,
        callback=callback,
        eval_every=eval_every,
    )


class BestValWGA:
    """A :func:`fit_softmax_batched` callback that keeps, for each of the F
    fits, the head with the best validation worst-group accuracy seen so far
    (AFR's early stopping: AFR's code evaluates the validation WGA after every
    epoch and keeps the first epoch reaching the maximum). All F heads are
    evaluated at once on the fit's backend; nothing loops over fits or
    examples. Groups absent from the validation set are ignored.

    After training: ``wga`` (F,), ``epoch`` (F,) and ``W`` (F,K,d), ``b``
    (F,K) as NumPy (:meth:`result`)."""

    def __init__(self, X_val: np.ndarray, y_val: np.ndarray, g_val: np.ndarray):
        self._np = (np.asarray(X_val), np.asarray(y_val, dtype=np.int64), np.asarray(g_val, dtype=np.int64))
        if len(self._np[1]) == 0:
            raise LLRError("BestValWGA: the validation set is empty")
        self._ready = False
        self.best = self.epoch = self.bW = self.bb = None

    def _setup(self, W: Array) -> None:
        X, y, g = self._np
        present, gi = np.unique(g, return_inverse=True)
        M = np.zeros((len(present), len(g)))
        M[gi, np.arange(len(g))] = 1.0
        M /= M.sum(axis=1, keepdims=True)  # rows average over a group
        if _is_torch(W):
            import torch

            self.xp = array_api_compat.array_namespace(W)
            self.X = torch.as_tensor(np.asarray(X)).to(device=W.device, dtype=W.dtype)
            self.y = torch.as_tensor(y).to(device=W.device)
            self.M = torch.as_tensor(M).to(device=W.device, dtype=W.dtype)
        else:
            self.xp = array_api_compat.array_namespace(W)
            self.X, self.y, self.M = np.asarray(X, dtype=W.dtype), y, M.astype(W.dtype)
        self._ready = True

    def __call__(self, epoch: int, W: Array, b: Array) -> None:
        if not self._ready:
            self._setup(W)
        xp = self.xp
        F, K, d = W.shape
        Z = (
            xp.reshape(xp.matmul(self.X, xp.matrix_transpose(xp.reshape(W, (F * K, d)))), (self.X.shape[0], F, K))
            + b[None, :, :]
        )
        correct = xp.astype(xp.argmax(Z, axis=2) == self.y[:, None], W.dtype)  # (n, F)
        wga = xp.min(xp.matmul(self.M, correct), axis=0)  # (F,)
        if self.best is None:
            self.best, self.epoch = wga, xp.full_like(wga, float(epoch))
            self.bW, self.bb = xp.asarray(W, copy=True), xp.asarray(b, copy=True)
            return
        up = wga > self.best  # strict: the first epoch at the maximum stays
        self.best = xp.where(up, wga, self.best)
        self.epoch = xp.where(up, xp.full_like(wga, float(epoch)), self.epoch)
        self.bW = xp.where(up[:, None, None], W, self.bW)
        self.bb = xp.where(up[:, None], b, self.bb)

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(W (F,K,d), b (F,K), epoch (F,), wga (F,))`` as NumPy."""
        if self.best is None:
            raise LLRError("BestValWGA: no epoch was evaluated (epochs = 0?)")
        return (
            np.ascontiguousarray(_to_numpy(self.bW)),
            np.ascontiguousarray(_to_numpy(self.bb)),
            _to_numpy(self.epoch).astype(np.int64),
            _to_numpy(self.best).astype(np.float64),
        )


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------


def predict(W: np.ndarray, b: np.ndarray, X: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Predicted classes ``argmax(x W^T + b)`` (float32, in chunks, so a
    memory-mapped float16 matrix is never converted whole)."""
    W = np.asarray(W, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    out = [np.argmax(np.asarray(X[s : s + chunk], dtype=np.float32) @ W.T + b, axis=1) for s in range(0, len(X), chunk)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def evaluate_head(
    W: np.ndarray,
    b: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    g: np.ndarray,
    n_groups: int,
    group_weights: np.ndarray | None = None,
) -> dict:
    """Per-group accuracy, WGA and mean accuracy of a linear head
    (:func:`llr.train.metrics.evaluate`)."""
    return evaluate(predict(W, b, X), np.asarray(y), np.asarray(g), n_groups, group_weights)


def softmax_np(Z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits (NumPy, max-shifted)."""
    Z = Z - Z.max(axis=-1, keepdims=True)
    E = np.exp(Z)
    return E / E.sum(axis=-1, keepdims=True)
