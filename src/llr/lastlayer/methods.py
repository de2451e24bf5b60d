"""Last-layer retraining on cached embeddings (paper sections 3.1-3.2, Appendix B.2;
docs/design.md, "Last-layer methods").

One fitting core, a softmax-regression trainer written once against the array
API (``array_api_compat``): it runs on NumPy by default, so that the hundreds
of CPU last-layer jobs start without importing torch, and on torch tensors
(CPU or CUDA) when given tensors or a device other than ``'cpu'``. Gradients
are analytic (softmax cross-entropy); nothing loops over examples in Python.

Methods (a registry, :data:`METHODS`):

- ``llr``: reinitialize the head like ``torch.nn.Linear`` and train it with
  plain SGD (lr 1e-2, momentum 0, weight decay 0, constant lr, batch 32) for as
  many epochs as ERM, on the held-out cell (paper Appendix B.2; docs/design.md, "Last-layer methods").
- ``dfr_{subsetting,upsampling,upweighting}``: LLR on the held-out cell
  balanced by group (DFR). Upweighting (paper section 3.2): loss weight
  n_max/n_c (the largest class/group keeps 1, as the authors' class weights)
  in a per-batch weighted mean (torch's ``cross_entropy(weight=...)``).
- ``cbllr_{subsetting,upsampling,upweighting}``: LLR balanced by class.
- ``afr``: Automatic Feature Reweighting (Qiu et al. 2023): per-example
  weights proportional to ``exp(-gamma * p_i)`` (``p_i`` the ERM head's
  probability of the true class), class-rebalanced, summing to 1; start from
  the ERM head; loss ``sum_i w_i CE_i + lambda * (||W - W_erm||^2 +
  ||b - b_erm||^2)``; full-batch gradient descent with the gradient norm
  clipped at 1 (as AFR's code); (gamma, lambda) chosen by validation WGA over
  a per-dataset grid taken from AFR's published sweeps, each grid point
  early-stopped at its best validation-WGA epoch as AFR's code does
  (``select``). The whole grid is trained as one batched tensor program
  (:func:`fit_softmax_batched`, validation evaluated by :class:`BestValWGA`).
- ``afr_gamma0``: AFR with gamma = 0, which reduces AFR to class-balanced
  upweighted LLR (paper section 3.2), lambda still grid-tuned.

Hyper-parameters are typed (:class:`Param`) and checked up front by
:func:`check_method_params`.

The job entry :func:`run_lastlayer_job` reads the ERM cell's embeddings,
head, metadata, split and held-out cell, runs one method and writes one JSON.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

import array_api_compat

from llr.train.balancing import (ROLES, balance, effective_group_ratio, group_ratio_sampling_weights, rng_for,
                           upweights)
from llr.data.registry import DatasetSpec, get_spec, read_metadata
from llr.errors import LLRError
from llr.io import load_embeddings, write_json
from llr.train.metrics import evaluate, group_accuracy, train_group_weights

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

def _loss_grad(xp, X: Array, Y: Array, W: Array, b: Array, w: Array | None,
               anchor: tuple[Array, Array] | None, lam: Array | None, weighted_mean: bool = False):
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


def loss_and_grad(X: Array, y: Array, W: Array, b: Array, *, n_classes: int,
                  loss_weights: Array | None = None, anchor: tuple[Array, Array] | None = None,
                  anchor_lambda: float = 0.0, dtype: str = "float64",
                  loss_reduction: str = "mean"):
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
    loss, gW, gb = _loss_grad(xp, Xb, Y, be.float(W)[:, None, :], be.float(b)[:, None], w, anc, lam,
                              loss_reduction == "weighted_mean")
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


def _fit_core(X: Array, y: Array, *, n_classes: int, epochs: int, batch_size: int | None,
              lr: float, momentum: float, weight_decay: float, max_grad_norm: float | None,
              loss_weights: np.ndarray | Array | None, sample_weights: np.ndarray | None,
              init: tuple[Array, Array], anchor: tuple[Array, Array] | None,
              anchor_lambda: np.ndarray, seed: int, checkpoint_epochs: Sequence[int],
              device: str, dtype: str, loss_reduction: str = "mean",
              callback: Callable[[int, Array, Array], None] | None = None,
              eval_every: int = 1) -> FitResult:
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
        raise LLRError(f"init head has shape {W0.shape}/{b0.shape}, expected ({F}, {n_classes}, {d})/({F}, {n_classes})")
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
            raise LLRError(f"anchor head has shape {Wa.shape}/{ba.shape}, expected ({F}, {n_classes}, {d})/({F}, {n_classes})")
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
                idx = order[start:start + B]
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


def fit_softmax(X: Array, y: Array, *, n_classes: int, epochs: int, batch_size: int | None = 32,
                lr: float = 1e-2, momentum: float = 0.0, weight_decay: float = 0.0,
                loss_weights: Array | None = None, sample_weights: Array | None = None,
                init: tuple[Array, Array] | None = None, anchor: tuple[Array, Array] | None = None,
                anchor_lambda: float = 0.0, max_grad_norm: float | None = None, seed: int = 0,
                checkpoint_epochs: Sequence[int] = (), device: str = "cpu",
                dtype: str = "float32", loss_reduction: str = "mean") -> FitResult:
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
    r = _fit_core(X, y, n_classes=n_classes, epochs=epochs, batch_size=batch_size, lr=lr,
                  momentum=momentum, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                  loss_weights=lw, sample_weights=sample_weights, init=(W0[None], b0[None]),
                  anchor=anc, anchor_lambda=np.asarray([anchor_lambda]), seed=seed,
                  checkpoint_epochs=checkpoint_epochs, device=device, dtype=dtype,
                  loss_reduction=loss_reduction)
    return FitResult(r.W[0], r.b[0], {e: (w[0], c[0]) for e, (w, c) in r.history.items()}, r.loss[:, 0])


def fit_softmax_batched(X: Array, y: Array, *, n_classes: int, epochs: int,
                        batch_size: int | None = None, lr: float = 1e-2, momentum: float = 0.0,
                        weight_decay: float = 0.0, loss_weights: Array | None = None,
                        sample_weights: Array | None = None,
                        init: tuple[Array, Array] | None = None,
                        anchor: tuple[Array, Array] | None = None,
                        anchor_lambda: float | Sequence[float] = 0.0,
                        max_grad_norm: float | None = None, n_fits: int | None = None,
                        seed: int = 0, checkpoint_epochs: Sequence[int] = (),
                        device: str = "cpu", dtype: str = "float32",
                        loss_reduction: str = "mean",
                        callback: Callable[[int, Array, Array], None] | None = None,
                        eval_every: int = 1) -> FitResult:
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
    return _fit_core(X, y, n_classes=n_classes, epochs=epochs, batch_size=batch_size, lr=lr,
                     momentum=momentum, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                     loss_weights=lw, sample_weights=sample_weights, init=init_f, anchor=anc,
                     anchor_lambda=lam, seed=seed,
                     checkpoint_epochs=checkpoint_epochs, device=device, dtype=dtype,
                     loss_reduction=loss_reduction, callback=callback, eval_every=eval_every)


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
        Z = xp.reshape(xp.matmul(self.X, xp.matrix_transpose(xp.reshape(W, (F * K, d)))),
                       (self.X.shape[0], F, K)) + b[None, :, :]
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
        return (np.ascontiguousarray(_to_numpy(self.bW)), np.ascontiguousarray(_to_numpy(self.bb)),
                _to_numpy(self.epoch).astype(np.int64), _to_numpy(self.best).astype(np.float64))


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------

def predict(W: np.ndarray, b: np.ndarray, X: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Predicted classes ``argmax(x W^T + b)`` (float32, in chunks, so a
    memory-mapped float16 matrix is never converted whole)."""
    W = np.asarray(W, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    out = [np.argmax(np.asarray(X[s:s + chunk], dtype=np.float32) @ W.T + b, axis=1)
           for s in range(0, len(X), chunk)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def evaluate_head(W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, g: np.ndarray,
                  n_groups: int, group_weights: np.ndarray | None = None) -> dict:
    """Per-group accuracy, WGA and mean accuracy of a linear head
    (:func:`llr.train.metrics.evaluate`)."""
    return evaluate(predict(W, b, X), np.asarray(y), np.asarray(g), n_groups, group_weights)


# --------------------------------------------------------------------------
# AFR weights
# --------------------------------------------------------------------------

def softmax_np(Z: np.ndarray) -> np.ndarray:
    Z = Z - Z.max(axis=-1, keepdims=True)
    E = np.exp(Z)
    return E / E.sum(axis=-1, keepdims=True)


def afr_weights(erm_logits: np.ndarray, y: np.ndarray, gamma: float,
                balance_classes: bool = True) -> np.ndarray:
    """AFR's example weights: ``w_i ∝ exp(-gamma * p_i)`` with ``p_i`` the ERM
    softmax probability of the true class, times the class upweighting
    weight n_max/n_c when ``balance_classes`` (:func:`llr.train.balancing.upweights`;
    AFR's notebooks multiply class c by n_0/n_c, the same after
    normalization), normalized to sum 1. Computed in log space so
    that AFR's MultiNLI gammas (up to 1e5) cannot underflow to all zeros."""
    y = np.asarray(y, dtype=np.int64)
    p = softmax_np(np.asarray(erm_logits, dtype=np.float64))[np.arange(len(y)), y]
    logw = -float(gamma) * p
    if balance_classes:
        logw = logw + np.log(upweights(y))
    w = np.exp(logw - logw.max())
    return w / w.sum()


# --------------------------------------------------------------------------
# Methods registry
# --------------------------------------------------------------------------

@dataclass
class Task:
    """What a method sees: the training cell (X, y, g), the validation role
    (for AFR's tuning), the ERM head and the run's settings.
    ``sample_weights``: a sampler over the cell imposed by the job (the
    sampled held-out construction, :func:`llr.train.balancing.group_ratio_sampling_weights`).
    ``report_sets``: name -> (X, y, g, group_weights) on which AFR reports
    every grid point's WGA and mean accuracy (``<name>_wga``,
    ``<name>_mean_acc`` in ``afr.grid``); never used for any choice."""

    X: np.ndarray
    y: np.ndarray
    g: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    g_val: np.ndarray
    erm_W: np.ndarray
    erm_b: np.ndarray
    spec: DatasetSpec
    seed: int
    epochs: int
    device: str = "cpu"
    sample_weights: np.ndarray | None = None
    report_sets: dict | None = None


# --------------------------------------------------------------------------
# Hyper-parameter types (start-up validation)
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    """The type of one hyper-parameter. ``kind``: 'int', 'number', 'bool',
    'choice' or 'numbers' (a list of numbers); ``low``/``low_open`` a lower
    bound (``low_open``: strictly above), ``high_open`` a strict upper bound;
    ``choices`` for 'choice'; ``none_ok``: None allowed (None means "the
    dataset's / ERM's value")."""

    kind: str
    low: float | None = None
    low_open: bool = False
    high_open: float | None = None
    choices: tuple = ()
    none_ok: bool = False

    def describe(self) -> str:
        if self.kind == "choice":
            what = f"one of {list(self.choices)}"
        elif self.kind == "bool":
            what = "true or false"
        else:
            noun = {"int": "an integer", "number": "a number", "numbers": "a list of numbers"}[self.kind]
            bound = ""
            if self.low is not None:
                bound = f" {'>' if self.low_open else '>='} {self.low:g}"
            if self.high_open is not None:
                bound += f"{' and' if bound else ''} < {self.high_open:g}"
            if self.kind == "int" and self.low == 0 and self.low_open:
                noun, bound = "a positive integer", ""
            elif self.kind == "number" and self.low == 0 and self.low_open and self.high_open is None:
                noun, bound = "a positive number", ""
            what = noun + (f" (each{bound})" if self.kind == "numbers" and bound else bound)
        return what + (" or null" if self.none_ok else "")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _got(v: Any, number: bool = False) -> str:
    """', got ...' for an error message; for a numeric string where a number
    is expected, the YAML hint (YAML 1.1 reads 1e-3 as a string)."""
    if not isinstance(v, str):
        return f", got {type(v).__name__} {v!r}"
    try:
        float(v)
    except ValueError:
        return f", got the string {v!r}"
    if not number:
        return f", got the string {v!r}"
    if "." not in v and ("e" in v or "E" in v):
        return (f", got the string {v!r} (YAML reads a number like {v} without a decimal point as a "
                f"string; write it with one, e.g. 1.0e-3)")
    return f", got the string {v!r} (write the number without quotes)"


def _param_error(p: Param, v: Any) -> str | None:
    """Why ``v`` does not fit ``p`` (None if it does)."""
    if v is None:
        return None if p.none_ok else f"expected {p.describe()}, got null"
    if p.kind == "bool":
        return None if isinstance(v, (bool, np.bool_)) else f"expected true or false{_got(v)}"
    if p.kind == "choice":
        return None if v in p.choices else f"expected {p.describe()}, got {v!r}"
    if p.kind == "numbers" and not isinstance(v, (list, tuple)):
        return f"expected {p.describe()}{_got(v, number=True)}"
    if p.kind == "numbers" and not v:
        return f"expected {p.describe()}, got an empty list"
    noun = {"int": "an integer", "number": "a number", "numbers": "a list of numbers"}[p.kind]
    for x in (v if p.kind == "numbers" else [v]):
        if not _is_number(x):
            return f"expected {noun}{_got(x, number=True)}"
        if p.kind == "int" and not isinstance(x, (int, np.integer)):
            hint = " (write it without a decimal point)" if float(x).is_integer() else ""
            return f"expected {p.describe()}, got {x!r}{hint}"
        bad = not math.isfinite(float(x))
        bad |= p.low is not None and (float(x) <= p.low if p.low_open else float(x) < p.low)
        bad |= p.high_open is not None and float(x) >= p.high_open
        if bad:
            return f"expected {p.describe()}, got {x!r}"
    return None


POS_INT = Param("int", low=0, low_open=True)
POS_NUM = Param("number", low=0, low_open=True)
NONNEG_NUM = Param("number", low=0)
DTYPE = Param("choice", choices=("float32", "float64"))


@dataclass(frozen=True)
class Method:
    """A last-layer method: ``fn(task, hp) -> (W, b, info)``. ``defaults`` are
    its hyper-parameters and ``types`` their :class:`Param` types;
    ``per_dataset`` overrides defaults by dataset family (``synth_`` prefix
    dropped; key ``"default"`` for the rest)."""

    name: str
    fn: Callable[[Task, dict], tuple[np.ndarray, np.ndarray, dict]]
    defaults: dict
    per_dataset: dict = field(default_factory=dict)
    description: str = ""
    types: dict = field(default_factory=dict)

    def hp(self, spec: DatasetSpec, params: dict | None = None) -> dict:
        """Resolved hyper-parameters: defaults < dataset family < params
        (checked by :func:`check_method_params`)."""
        params = dict(params or {})
        check_method_params(self.name, params)
        fam = dataset_family(spec)
        over = self.per_dataset.get(fam, self.per_dataset.get("default", {}))
        return {**self.defaults, **over, **params}


def check_method_params(name: str, params: dict) -> None:
    """Validate a method's hyper-parameter overrides before anything runs:
    raises a one-line LLRError for an unknown method, an unknown key (with a
    close-match suggestion) or a value of the wrong type or range."""
    m = get_method(name)
    if params is None:
        return
    if not isinstance(params, dict):
        raise LLRError(f"method {name}: parameters must be a mapping, got {type(params).__name__} {params!r}")
    for key, value in params.items():
        if key not in m.defaults:
            near = difflib.get_close_matches(str(key), list(m.defaults), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise LLRError(f"method {name}: unknown parameter {key!r}{hint}; expected one of {sorted(m.defaults)}")
        p = m.types.get(key)
        if p is None:
            continue
        why = _param_error(p, value)
        if why:
            raise LLRError(f"method {name}: parameter {key}={value!r}: {why}")


def dataset_family(spec: DatasetSpec) -> str:
    """Real dataset a spec stands for: ``synth_waterbirds`` -> ``waterbirds``."""
    return spec.name.removeprefix("synth_")


def _mass(labels: np.ndarray, weights: np.ndarray, n: int) -> list[float]:
    m = np.bincount(labels, weights=weights, minlength=n)
    return (m / m.sum()).tolist()


def _plan_info(task: Task, pos: np.ndarray, weight: np.ndarray) -> dict:
    """Effective training set: examples used, their group counts, each
    group's / class's share of the expected training weight, and the group
    ratio of the cell as trained on (``effective_group_ratio``: ``weight`` on
    the examples ``pos`` of the cell, duplicates adding up) and unweighted
    (``heldout_group_ratio``), paper sections 3.1-3.2."""
    g, y = task.g[pos], task.y[pos]
    w_cell = np.bincount(np.asarray(pos, dtype=np.int64), weights=np.asarray(weight, dtype=np.float64),
                         minlength=len(task.y))
    return {
        "n_train": int(len(pos)),
        "train_group_counts": np.bincount(g, minlength=task.spec.n_groups).tolist(),
        "group_mass": _mass(g, weight, task.spec.n_groups),
        "class_mass": _mass(y, weight, task.spec.n_classes),
        "effective_group_ratio": effective_group_ratio(task.y, task.g, w_cell, task.spec),
        "heldout_group_ratio": effective_group_ratio(task.y, task.g, None, task.spec),
    }


LLR_DEFAULTS = {"lr": 1e-2, "momentum": 0.0, "weight_decay": 0.0, "batch_size": 32,
                "epochs": None, "init": "reinit", "max_grad_norm": None, "dtype": "float32",
                "loss_reduction": "weighted_mean"}
LLR_TYPES = {"lr": POS_NUM, "momentum": Param("number", low=0, high_open=1.0), "weight_decay": NONNEG_NUM,
             "batch_size": Param("int", low=0, low_open=True, none_ok=True),
             "epochs": Param("int", low=0, low_open=True, none_ok=True),
             "init": Param("choice", choices=("reinit", "erm")),
             "max_grad_norm": Param("number", low=0, low_open=True, none_ok=True), "dtype": DTYPE,
             "loss_reduction": Param("choice", choices=LOSS_REDUCTIONS)}


def _init_head(task: Task, hp: dict) -> tuple[np.ndarray, np.ndarray] | None:
    if hp["init"] == "reinit":
        return None
    if hp["init"] == "erm":
        return task.erm_W, task.erm_b
    raise LLRError(f"parameter init={hp['init']!r} unknown, expected 'reinit' or 'erm'")


def _balanced_llr(by: str | None, mode: str) -> Callable[[Task, dict], tuple]:
    """LLR on the training cell balanced by ``by`` ('g' for DFR, 'y' for
    CB-LLR, None for plain LLR) with ``mode`` (llr.train.balancing.balance; paper
    section 3.2). Upweighting's n_max/n_c loss weights enter a weighted mean
    per batch (``loss_reduction``, torch's ``cross_entropy(weight=...)``)."""

    def fn(task: Task, hp: dict):
        if by is None:
            bal_pos, sw, lw = np.arange(len(task.y)), task.sample_weights, None
        else:
            if task.sample_weights is not None:
                raise LLRError("a sampled held-out cell can only be used with plain LLR (method llr)")
            labels = task.g if by == "g" else task.y
            bal = balance(labels, mode, rng_for(task.seed, "lastlayer", by, mode))
            bal_pos, sw, lw = bal.positions, bal.sample_weights, bal.loss_weights
        epochs = int(hp["epochs"] if hp["epochs"] is not None else task.epochs)
        res = fit_softmax(task.X[bal_pos], task.y[bal_pos], n_classes=task.spec.n_classes,
                          epochs=epochs, batch_size=hp["batch_size"], lr=hp["lr"],
                          momentum=hp["momentum"], weight_decay=hp["weight_decay"],
                          loss_weights=lw, sample_weights=sw, init=_init_head(task, hp),
                          max_grad_norm=hp["max_grad_norm"], seed=task.seed,
                          device=task.device, dtype=hp["dtype"], loss_reduction=hp["loss_reduction"])
        weight = sw if sw is not None else lw if lw is not None else np.ones(len(bal_pos))
        info = _plan_info(task, bal_pos, weight)
        info.update(epochs=epochs, final_loss=float(res.loss[-1]) if len(res.loss) else None)
        return res.W, res.b, info

    return fn


# AFR's published sweeps (AndPotap/afr notebooks): gamma grid, lambda grid,
# epochs and lr per dataset; all with class balancing and grad-norm clip 1.
AFR_GRIDS: dict[str, dict] = {
    "waterbirds": {"gammas": np.linspace(4, 20, 33).tolist(), "lambdas": [0.0, 0.1, 0.2, 0.3],
                   "epochs": 500, "lr": 1e-2},
    "celeba": {"gammas": np.linspace(1, 3, 10).tolist(), "lambdas": [1e-3, 1e-2, 1e-1],
               "epochs": 1000, "lr": 2e-2},
    "multinli": {"gammas": np.logspace(2, 5, 10).tolist(), "lambdas": np.linspace(0, 50, 26).tolist(),
                 "epochs": 200, "lr": 1e-2},
    "civilcomments": {"gammas": [0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0], "lambdas": [0.0],
                      "epochs": 50, "lr": 1e-2},
}
AFR_GRIDS["default"] = AFR_GRIDS["waterbirds"]
AFR_SELECT = ("best_val_wga", "final")
AFR_DEFAULTS = {"gammas": None, "lambdas": None, "epochs": None, "lr": None,
                "balance_classes": True, "max_grad_norm": 1.0, "max_chunk_elems": 2 ** 25,
                "dtype": "float32", "select": "best_val_wga", "eval_every": 1}
AFR_TYPES = {"gammas": Param("numbers", low=0, none_ok=True), "lambdas": Param("numbers", low=0, none_ok=True),
             "epochs": Param("int", low=0, low_open=True, none_ok=True),
             "lr": Param("number", low=0, low_open=True, none_ok=True), "balance_classes": Param("bool"),
             "max_grad_norm": Param("number", low=0, low_open=True, none_ok=True),
             "max_chunk_elems": POS_INT, "dtype": DTYPE, "select": Param("choice", choices=AFR_SELECT),
             "eval_every": POS_INT}
# AFR with gamma fixed at 0 (paper section 3.2: then AFR is class-balanced
# upweighted LLR), lambda grid, epochs and lr as AFR's.
AFR_GAMMA0_GRIDS = {fam: {**grid, "gammas": [0.0]} for fam, grid in AFR_GRIDS.items()}


def _afr(task: Task, hp: dict):
    """AFR (Qiu et al. 2023; paper section 3.2): the (gamma, lambda) grid
    trained batched (full-batch GD). ``select="best_val_wga"`` (AFR's code):
    every ``eval_every`` epochs the validation WGA of all grid points is
    evaluated on the batched weights and each point keeps its best epoch's
    head (first epoch at the maximum); ``"final"``: the last epoch's head.
    Then the pair with the best validation WGA is kept (ties: best validation
    mean accuracy, then grid order)."""
    if task.sample_weights is not None:
        raise LLRError("a sampled held-out cell can only be used with plain LLR (method llr)")
    if len(task.y_val) == 0:
        raise LLRError("afr: the validation role is empty; AFR needs it to choose gamma and lambda")
    if hp["select"] not in AFR_SELECT:
        raise LLRError(f"afr: parameter select={hp['select']!r} unknown, expected one of {list(AFR_SELECT)}")
    gammas = [float(v) for v in hp["gammas"]]
    lambdas = [float(v) for v in hp["lambdas"]]
    if not gammas or not lambdas:
        raise LLRError("afr: parameters gammas and lambdas must be non-empty lists")
    grid = [(gm, lm) for gm in gammas for lm in lambdas]
    N, K = len(task.y), task.spec.n_classes
    epochs = int(hp["epochs"])
    best_sel = hp["select"] == "best_val_wga"
    if best_sel and epochs < 1:
        raise LLRError("afr: select='best_val_wga' needs epochs >= 1")
    erm_logits = np.asarray(task.X, dtype=np.float64) @ task.erm_W.T.astype(np.float64) + task.erm_b
    wts = {gm: afr_weights(erm_logits, task.y, gm, hp["balance_classes"]) for gm in gammas}
    # chunk the grid so the (N, F, K) activations stay bounded
    chunk = max(1, int(hp["max_chunk_elems"]) // max(1, N * K))
    Ws, bs, eps = [], [], []
    for s in range(0, len(grid), chunk):
        part = grid[s:s + chunk]
        tracker = BestValWGA(task.X_val, task.y_val, task.g_val) if best_sel else None
        res = fit_softmax_batched(
            task.X, task.y, n_classes=K, epochs=epochs, batch_size=None, lr=hp["lr"],
            loss_weights=np.stack([N * wts[gm] for gm, _ in part]),
            init=(task.erm_W, task.erm_b), anchor=(task.erm_W, task.erm_b),
            anchor_lambda=[lm for _, lm in part], max_grad_norm=hp["max_grad_norm"],
            seed=task.seed, device=task.device, dtype=hp["dtype"],
            callback=tracker, eval_every=int(hp["eval_every"]))
        if tracker is not None:
            W_c, b_c, ep_c, _ = tracker.result()
        else:
            W_c, b_c, ep_c = res.W, res.b, np.full(len(part), epochs)
        Ws.append(W_c)
        bs.append(b_c)
        eps.append(ep_c)
    W_all, b_all, ep_all = np.concatenate(Ws), np.concatenate(bs), np.concatenate(eps)
    # each grid point's effective group ratio (its weights; paper section 3.2)
    eff = {gm: effective_group_ratio(task.y, task.g, wts[gm], task.spec) for gm in gammas}
    gmass = {gm: _mass(task.g, wts[gm], task.spec.n_groups) for gm in gammas}
    rows = []
    for f, (gm, lm) in enumerate(grid):
        pred = predict(W_all[f], b_all[f], task.X_val)
        acc = group_accuracy(pred, task.y_val, task.g_val, task.spec.n_groups)
        rows.append({"gamma": gm, "lambda": lm, "epoch": int(ep_all[f]), "val_wga": float(np.nanmin(acc)),
                     "val_mean_acc": float(np.mean(pred == task.y_val)), "effective_group_ratio": eff[gm],
                     "group_mass": gmass[gm]})
        for name, (Xr, yr, gr, gwr) in (task.report_sets or {}).items():
            ev = evaluate_head(W_all[f], b_all[f], Xr, yr, gr, task.spec.n_groups, gwr)
            rows[-1].update({f"{name}_wga": ev["wga"], f"{name}_mean_acc": ev["mean_acc"]})
    best = max(range(len(grid)), key=lambda f: (rows[f]["val_wga"], rows[f]["val_mean_acc"], -f))
    gm, lm = grid[best]
    info = _plan_info(task, np.arange(N), wts[gm])
    info.update(epochs=epochs,
                afr={"gamma": gm, "lambda": lm, "epoch": rows[best]["epoch"], "select": hp["select"],
                     "val_wga": rows[best]["val_wga"], "grid": rows})
    return W_all[best], b_all[best], info


METHODS: dict[str, Method] = {}


def register(m: Method) -> Method:
    METHODS[m.name] = m
    return m


register(Method("llr", _balanced_llr(None, "none"), LLR_DEFAULTS, types=LLR_TYPES,
                description="reinitialized head, SGD on the held-out cell"))
for _mode in ("subsetting", "upsampling", "upweighting"):
    register(Method(f"dfr_{_mode}", _balanced_llr("g", _mode), LLR_DEFAULTS, types=LLR_TYPES,
                    description=f"LLR on the held-out cell, groups balanced by {_mode}"))
    register(Method(f"cbllr_{_mode}", _balanced_llr("y", _mode), LLR_DEFAULTS, types=LLR_TYPES,
                    description=f"LLR on the held-out cell, classes balanced by {_mode}"))
register(Method("afr", _afr, AFR_DEFAULTS, per_dataset=AFR_GRIDS, types=AFR_TYPES,
                description="AFR: ERM-confidence weights, anchored to the ERM head, grid-tuned"))
register(Method("afr_gamma0", _afr, AFR_DEFAULTS, per_dataset=AFR_GAMMA0_GRIDS, types=AFR_TYPES,
                description="AFR with gamma = 0 (class-balanced upweighting), lambda grid-tuned"))


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise LLRError(f"unknown last-layer method {name!r}; expected one of {sorted(METHODS)}") from None


def resolve_hp(name: str, spec: DatasetSpec, params: dict | None = None) -> dict:
    """A method's hyper-parameters for a dataset, ``params`` overriding."""
    return get_method(name).hp(spec, params)


def run_method(name: str, X_all: np.ndarray, meta: pd.DataFrame, roles: np.ndarray,
               train_pos: np.ndarray, val_pos: np.ndarray, erm_head: tuple[np.ndarray, np.ndarray],
               hp: dict | None, seed: int, epochs: int, spec: DatasetSpec,
               device: str = "cpu", sample_weights: np.ndarray | None = None,
               report_sets: dict | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Run one method. Rows of ``X_all``, ``meta`` (columns y, g) and ``roles``
    are aligned; ``train_pos`` are the held-out cell's positions, ``val_pos``
    the validation role's. ``hp`` overrides the method's defaults.
    ``sample_weights`` (aligned with ``train_pos``): a sampler over the cell
    (plain LLR only). ``report_sets``: see :class:`Task` (AFR's per-grid-point
    test metrics). Returns the head and an info dict (resolved hp,
    effective training set and group ratios, AFR choice)."""
    hp_r = resolve_hp(name, spec, hp)
    train_pos = np.asarray(train_pos, dtype=np.int64)
    val_pos = np.asarray(val_pos, dtype=np.int64)
    roles = np.asarray(roles)
    leak = np.isin(roles[train_pos], ["val", "test"])
    if leak.any():
        raise LLRError(f"training cell contains row {int(train_pos[leak][0])} of role {roles[train_pos][leak][0]!r}")
    y = meta["y"].to_numpy(dtype=np.int64)
    g = meta["g"].to_numpy(dtype=np.int64)
    W0, b0 = (np.asarray(a, dtype=np.float32) for a in erm_head)
    if W0.shape != (spec.n_classes, X_all.shape[1]) or b0.shape != (spec.n_classes,):
        raise LLRError(f"ERM head has shape {W0.shape}/{b0.shape}, expected ({spec.n_classes}, {X_all.shape[1]})/({spec.n_classes},)")
    task = Task(X=np.asarray(X_all[train_pos], dtype=np.float32), y=y[train_pos], g=g[train_pos],
                X_val=np.asarray(X_all[val_pos], dtype=np.float32), y_val=y[val_pos], g_val=g[val_pos],
                erm_W=W0, erm_b=b0, spec=spec, seed=int(seed), epochs=int(epochs), device=device,
                sample_weights=None if sample_weights is None else np.asarray(sample_weights, dtype=np.float64),
                report_sets=report_sets)
    if task.sample_weights is not None and task.sample_weights.shape != task.y.shape:
        raise LLRError(f"sample_weights have shape {task.sample_weights.shape}, expected ({len(task.y)},)")
    W, b, info = get_method(name).fn(task, hp_r)
    info["hp"] = hp_r
    return np.asarray(W, dtype=np.float32), np.asarray(b, dtype=np.float32), info


# --------------------------------------------------------------------------
# Job entry
# --------------------------------------------------------------------------

def _parse_params(params: str | dict | None) -> dict:
    if params is None or params == "":
        return {}
    if isinstance(params, dict):
        return dict(params)
    try:
        out = json.loads(params)
    except json.JSONDecodeError as e:
        raise LLRError(f"params {params!r} is not valid JSON ({e.msg})") from None
    if not isinstance(out, dict):
        raise LLRError(f"params {params!r} must be a JSON object")
    return out


def _read_csv(path: str, columns: Sequence[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise LLRError(f"{path}: file not found") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LLRError(f"{path}: column {missing[0]!r} missing, expected {list(columns)}")
    return df


def _require(path: str) -> None:
    if not Path(path).is_file():
        raise LLRError(f"{path}: file not found")


def _load_head(path: str) -> tuple[np.ndarray, np.ndarray]:
    _require(path)
    try:
        with np.load(path) as z:
            missing = [k for k in ("W", "b") if k not in z.files]
            if missing:
                raise LLRError(f"{path}: array {missing[0]!r} missing, expected arrays W and b")
            return np.asarray(z["W"], dtype=np.float32), np.asarray(z["b"], dtype=np.float32)
    except (ValueError, OSError) as e:
        raise LLRError(f"{path}: not a readable .npz ({type(e).__name__})") from None


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def heldout_cell(heldout: str, roles: np.ndarray, split: str | None = None) -> np.ndarray:
    """Sorted positions of a last-layer job's training cell: the whole
    held-out role (``heldout='full'``) or a subset csv (column idx), which
    may hold only heldout (or train) rows of ``split``."""
    n = len(roles)
    if heldout == "full":
        pos = np.flatnonzero(roles == "heldout")
    else:
        pos = np.sort(_read_csv(heldout, ("idx",))["idx"].to_numpy(dtype=np.int64))
        if len(pos) and (pos.min() < 0 or pos.max() >= n):
            raise LLRError(f"{heldout}: idx {int(pos.max())} out of range 0..{n - 1}")
    if len(pos) == 0:
        raise LLRError(f"{heldout}: the held-out cell is empty")
    leak = np.isin(roles[pos], ["val", "test"])
    if leak.any():
        where = f" in {split}" if split else ""
        raise LLRError(f"{heldout}: idx {int(pos[leak][0])} has role {roles[pos][leak][0]!r}{where}; "
                       f"a held-out cell may hold only heldout (or train) rows")
    return pos


def run_lastlayer_job(embeddings: str, head: str, metadata: str, split: str, heldout: str,
                      method: str, params: str | dict | None, seed: int, epochs: int,
                      out_json: str, device: str = "cpu", dataset: str | None = None,
                      heldout_sampling_ratio: float | None = None) -> dict:
    """One ``lastlayer`` DAG node (docs/design.md, "The DAG"): retrain the last layer
    of an ERM cell with ``method`` on a held-out cell and write metrics.

    ``embeddings``: float16 (N, d) ``.npy``, row i = metadata idx i;
    ``head``: ``.npz`` with the ERM head W (K,d), b (K,); ``split``: csv
    idx,role; ``heldout``: a subset csv (column idx) or ``'full'`` for the
    whole heldout role; ``epochs``: ERM's epoch count (LLR trains as long);
    ``dataset``: the DatasetSpec name, by default the metadata's folder name
    (``results/{dataset}/metadata.csv``).

    Held-out group ratio r (paper section 3.1, Figure 4): the paper reaches
    r by removing data (``heldout`` a group-ratio subset csv;
    ``heldout_construction: "subset"``); ``heldout_sampling_ratio=r`` with
    ``heldout="full"`` and method ``llr`` keeps every held-out example and
    samples (with replacement, epoch length unchanged) so that each class's
    expected minority/majority mass is r, as the authors' code does
    (:func:`llr.train.balancing.group_ratio_sampling_weights`;
    ``heldout_construction: "sampled"``). Every run records
    ``effective_group_ratio`` (the cell as the method weights it),
    ``heldout_group_ratio`` (the cell unweighted) and ``train_group_ratio``
    (the rows of role 'train', unweighted); AFR's ``afr.grid`` rows also
    record each grid point's ``effective_group_ratio`` and its ``test_wga`` /
    ``test_mean_acc`` (reported, never used to choose). Writes ``out_json`` atomically with
    metrics on the training cell, the val and the test roles; Waterbirds-like
    datasets weight mean accuracy by the train split's group proportions.
    """
    name = dataset or Path(metadata).parent.name
    try:
        spec = get_spec(name)
    except LLRError as e:
        raise LLRError(f"{metadata}: dataset {name!r} (the metadata's folder) unknown; pass dataset= ({e})") from None
    hp_in = _parse_params(params)
    check_method_params(method, hp_in)  # fail early on a bad name or value
    if heldout_sampling_ratio is not None:
        r = heldout_sampling_ratio
        if isinstance(r, bool) or not _is_number(r) or not 0.0 < float(r) <= 1.0:
            raise LLRError(f"heldout_sampling_ratio {r!r} out of range, expected a number in (0, 1]")
        if heldout != "full":
            raise LLRError(f"heldout_sampling_ratio needs heldout='full' (the whole held-out role), got {heldout!r}")
        if method != "llr":
            raise LLRError(f"heldout_sampling_ratio is for plain LLR (method llr), got method {method!r}")
    for path in (embeddings, head, metadata, split) + (() if heldout == "full" else (heldout,)):
        _require(path)
    meta = read_metadata(metadata)
    X_all = load_embeddings(embeddings)
    N = len(meta)
    if X_all.ndim != 2 or X_all.shape[0] != N:
        raise LLRError(f"{embeddings}: shape {X_all.shape}, expected ({N}, d) for the {N} rows of {metadata}")
    idx = meta["idx"].to_numpy(dtype=np.int64)
    if not np.array_equal(np.sort(idx), np.arange(N)):
        raise LLRError(f"{metadata}: column 'idx' must hold 0..{N - 1} (row i of the embeddings is idx i)")
    meta = meta.set_index("idx", drop=False).loc[np.arange(N)].reset_index(drop=True)

    sp = _read_csv(split, ("idx", "role"))
    bad = ~sp["role"].isin(ROLES)
    if bad.any():
        raise LLRError(f"{split}: role {sp['role'][bad].iloc[0]!r} not in {list(ROLES)}")
    sidx = sp["idx"].to_numpy(dtype=np.int64)
    if len(sp) != N or not np.array_equal(np.sort(sidx), np.arange(N)):
        raise LLRError(f"{split}: column 'idx' must list each of the {N} rows of {metadata} once")
    roles = np.empty(N, dtype=object)
    roles[sidx] = sp["role"].to_numpy()

    train_pos = heldout_cell(heldout, roles, split)
    val_pos = np.flatnonzero(roles == "val")

    W0, b0 = _load_head(head)
    if W0.shape != (spec.n_classes, X_all.shape[1]) or b0.shape != (spec.n_classes,):
        raise LLRError(f"{head}: W {W0.shape}, b {b0.shape}, expected ({spec.n_classes}, {X_all.shape[1]}) and ({spec.n_classes},)")
    y = meta["y"].to_numpy(dtype=np.int64)
    g = meta["g"].to_numpy(dtype=np.int64)
    sw = None
    if heldout_sampling_ratio is not None:
        sw = group_ratio_sampling_weights(y[train_pos], g[train_pos], float(heldout_sampling_ratio), spec)
    gw = None
    if spec.weighted_mean:
        gw = train_group_weights(g[meta["split"].to_numpy() == "train"], spec.n_groups)
    test_pos = np.flatnonzero(roles == "test")
    report = {"test": (X_all[test_pos], y[test_pos], g[test_pos], gw)} if len(test_pos) else None
    W, b, info = run_method(method, X_all, meta, roles, train_pos, val_pos, (W0, b0), hp_in,
                            seed, epochs, spec, device=device, sample_weights=sw, report_sets=report)
    tr = roles == "train"
    info["train_group_ratio"] = effective_group_ratio(y[tr], g[tr], None, spec)
    metrics = {}  # roles without rows are left out
    for role, pos in (("train_cell", train_pos), ("val", val_pos), ("test", np.flatnonzero(roles == "test"))):
        if len(pos):
            metrics[role] = evaluate_head(W, b, X_all[pos], y[pos], g[pos], spec.n_groups, gw)
    hp = info.pop("hp")
    out = {
        "method": method,
        "dataset": spec.name,
        "hp": hp,
        "seed": int(seed),
        "erm_epochs": int(epochs),
        "heldout": "full" if heldout == "full" else Path(heldout).name,
        "heldout_construction": "sampled" if heldout_sampling_ratio is not None else "subset",
        "heldout_sampling_ratio": None if heldout_sampling_ratio is None else float(heldout_sampling_ratio),
        "train_cell_n": int(len(train_pos)),
        "train_cell_group_counts": np.bincount(g[train_pos], minlength=spec.n_groups).tolist(),
        **info,
        "metrics": metrics,
        "mean_acc_weighted_by_train_groups": bool(spec.weighted_mean),
        "head": {"W": W.tolist(), "b": b.tolist()},
        "device": str(device),
    }
    out = _jsonable(out)
    write_json(out_json, out)
    return out
