"""The built-in LLR, DFR and CB-LLR last-layer methods and their registration
(paper sections 3.1-3.2, Appendix B.2)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from llr.errors import LLRError
from llr.lastlayer.fit import LOSS_REDUCTIONS, fit_softmax
from llr.lastlayer.params import DTYPE, NONNEG_NUM, POS_NUM, Param
from llr.lastlayer.registry import Method, Task, plan_info, register
from llr.train.balancing import balance, rng_for

# LLR (paper Appendix B.2): the head reinitialized like torch.nn.Linear, plain SGD
# (lr 1e-2, momentum 0, weight decay 0, constant lr, batch 32) for ERM's epochs.
LLR_DEFAULTS = {
    "lr": 1e-2,
    "momentum": 0.0,
    "weight_decay": 0.0,
    "batch_size": 32,
    "epochs": None,
    "init": "reinit",
    "max_grad_norm": None,
    "dtype": "float32",
    "loss_reduction": "weighted_mean",
}
LLR_TYPES = {
    "lr": POS_NUM,
    "momentum": Param("number", low=0, high_open=1.0),
    "weight_decay": NONNEG_NUM,
    "batch_size": Param("int", low=0, low_open=True, none_ok=True),
    "epochs": Param("int", low=0, low_open=True, none_ok=True),
    "init": Param("choice", choices=("reinit", "erm")),
    "max_grad_norm": Param("number", low=0, low_open=True, none_ok=True),
    "dtype": DTYPE,
    "loss_reduction": Param("choice", choices=LOSS_REDUCTIONS),
}


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
        res = fit_softmax(
            task.X[bal_pos],
            task.y[bal_pos],
            n_classes=task.spec.n_classes,
            epochs=epochs,
            batch_size=hp["batch_size"],
            lr=hp["lr"],
            momentum=hp["momentum"],
            weight_decay=hp["weight_decay"],
            loss_weights=lw,
            sample_weights=sw,
            init=_init_head(task, hp),
            max_grad_norm=hp["max_grad_norm"],
            seed=task.seed,
            device=task.device,
            dtype=hp["dtype"],
            loss_reduction=hp["loss_reduction"],
        )
        weight = sw if sw is not None else lw if lw is not None else np.ones(len(bal_pos))
        info = plan_info(task, bal_pos, weight)
        info.update(epochs=epochs, final_loss=float(res.loss[-1]) if len(res.loss) else None)
        return res.W, res.b, info

    return fn


register(
    Method(
        "llr",
        _balanced_llr(None, "none"),
        LLR_DEFAULTS,
        types=LLR_TYPES,
        description="reinitialized head, SGD on the held-out cell",
        label="LLR",
    )
)
for _mode in ("subsetting", "upsampling", "upweighting"):
    register(
        Method(
            f"dfr_{_mode}",
            _balanced_llr("g", _mode),
            LLR_DEFAULTS,
            types=LLR_TYPES,
            description=f"LLR on the held-out cell, groups balanced by {_mode}",
            label=f"DFR ({_mode})",
        )
    )
    register(
        Method(
            f"cbllr_{_mode}",
            _balanced_llr("y", _mode),
            LLR_DEFAULTS,
            types=LLR_TYPES,
            description=f"LLR on the held-out cell, classes balanced by {_mode}",
            label=f"CB-LLR ({_mode})",
        )
    )
