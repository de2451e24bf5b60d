"""Automatic Feature Reweighting (Qiu et al. 2023) and AFR at gamma = 0: weights, grid-tuned
batched training and registration (paper section 3.2)."""

from __future__ import annotations

import numpy as np

from llr.errors import LLRError
from llr.lastlayer.fit import BestValWGA, evaluate_head, fit_softmax_batched, predict, softmax_np
from llr.lastlayer.params import DTYPE, POS_INT, Param
from llr.lastlayer.registry import Method, Task, mass_shares, plan_info, register
from llr.train.balancing import effective_group_ratio, upweights
from llr.train.metrics import group_accuracy


def afr_weights(erm_logits: np.ndarray, y: np.ndarray, gamma: float, balance_classes: bool = True) -> np.ndarray:
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


# AFR's published sweeps (AndPotap/afr notebooks): gamma grid, lambda grid,
# epochs and lr per dataset; all with class balancing and grad-norm clip 1.
AFR_GRIDS: dict[str, dict] = {
    "waterbirds": {
        "gammas": np.linspace(4, 20, 33).tolist(),
        "lambdas": [0.0, 0.1, 0.2, 0.3],
        "epochs": 500,
        "lr": 1e-2,
    },
    "celeba": {"gammas": np.linspace(1, 3, 10).tolist(), "lambdas": [1e-3, 1e-2, 1e-1], "epochs": 1000, "lr": 2e-2},
    "multinli": {
        "gammas": np.logspace(2, 5, 10).tolist(),
        "lambdas": np.linspace(0, 50, 26).tolist(),
        "epochs": 200,
        "lr": 1e-2,
    },
    "civilcomments": {"gammas": [0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0], "lambdas": [0.0], "epochs": 50, "lr": 1e-2},
}
AFR_GRIDS["default"] = AFR_GRIDS["waterbirds"]
AFR_SELECT = ("best_val_wga", "final")
AFR_DEFAULTS = {
    "gammas": None,
    "lambdas": None,
    "epochs": None,
    "lr": None,
    "balance_classes": True,
    "max_grad_norm": 1.0,
    "max_chunk_elems": 2**25,
    "dtype": "float32",
    "select": "best_val_wga",
    "eval_every": 1,
}
AFR_TYPES = {
    "gammas": Param("numbers", low=0, none_ok=True),
    "lambdas": Param("numbers", low=0, none_ok=True),
    "epochs": Param("int", low=0, low_open=True, none_ok=True),
    "lr": Param("number", low=0, low_open=True, none_ok=True),
    "balance_classes": Param("bool"),
    "max_grad_norm": Param("number", low=0, low_open=True, none_ok=True),
    "max_chunk_elems": POS_INT,
    "dtype": DTYPE,
    "select": Param("choice", choices=AFR_SELECT),
    "eval_every": POS_INT,
}
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
        part = grid[s : s + chunk]
        tracker = BestValWGA(task.X_val, task.y_val, task.g_val) if best_sel else None
        res = fit_softmax_batched(
            task.X,
            task.y,
            n_classes=K,
            epochs=epochs,
            batch_size=None,
            lr=hp["lr"],
            loss_weights=np.stack([N * wts[gm] for gm, _ in part]),
            init=(task.erm_W, task.erm_b),
            anchor=(task.erm_W, task.erm_b),
            anchor_lambda=[lm for _, lm in part],
            max_grad_norm=hp["max_grad_norm"],
            seed=task.seed,
            device=task.device,
            dtype=hp["dtype"],
            callback=tracker,
            eval_every=int(hp["eval_every"]),
        )
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
    gmass = {gm: mass_shares(task.g, wts[gm], task.spec.n_groups) for gm in gammas}
    rows = []
    for f, (gm, lm) in enumerate(grid):
        pred = predict(W_all[f], b_all[f], task.X_val)
        acc = group_accuracy(pred, task.y_val, task.g_val, task.spec.n_groups)
        rows.append(
            {
                "gamma": gm,
                "lambda": lm,
                "epoch": int(ep_all[f]),
                "val_wga": float(np.nanmin(acc)),
                "val_mean_acc": float(np.mean(pred == task.y_val)),
                "effective_group_ratio": eff[gm],
                "group_mass": gmass[gm],
            }
        )
        for name, (Xr, yr, gr, gwr) in (task.report_sets or {}).items():
            ev = evaluate_head(W_all[f], b_all[f], Xr, yr, gr, task.spec.n_groups, gwr)
            rows[-1].update({f"{name}_wga": ev["wga"], f"{name}_mean_acc": ev["mean_acc"]})
    best = max(range(len(grid)), key=lambda f: (rows[f]["val_wga"], rows[f]["val_mean_acc"], -f))
    gm, lm = grid[best]
    info = plan_info(task, np.arange(N), wts[gm])
    info.update(
        epochs=epochs,
        afr={
            "gamma": gm,
            "lambda": lm,
            "epoch": rows[best]["epoch"],
            "select": hp["select"],
            "val_wga": rows[best]["val_wga"],
            "grid": rows,
        },
    )
    return W_all[best], b_all[best], info


register(
    Method(
        "afr",
        _afr,
        AFR_DEFAULTS,
        per_dataset=AFR_GRIDS,
        types=AFR_TYPES,
        description="AFR: ERM-confidence weights, anchored to the ERM head, grid-tuned",
        label="AFR",
    )
)
register(
    Method(
        "afr_gamma0",
        _afr,
        AFR_DEFAULTS,
        per_dataset=AFR_GAMMA0_GRIDS,
        types=AFR_TYPES,
        description="AFR with gamma = 0 (class-balanced upweighting), lambda grid-tuned",
        label="AFR (gamma=0)",
    )
)
