"""The last-layer method registry: :class:`Method`, :class:`Task`, :data:`METHODS`, hyper-parameter
resolution and :func:`run_method` (built-ins register in :mod:`llr.lastlayer.methods` and :mod:`llr.lastlayer.afr`)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from llr.data.registry import DatasetSpec
from llr.errors import LLRError
from llr.lastlayer.params import param_error
from llr.train.balancing import effective_group_ratio


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


@dataclass(frozen=True)
class Method:
    """A last-layer method: ``fn(task, hp) -> (W, b, info)``. ``defaults`` are
    its hyper-parameters and ``types`` their :class:`Param` types;
    ``per_dataset`` overrides defaults by dataset family (``synth_`` prefix
    dropped; key ``"default"`` for the rest). ``label``: the legend label in
    figures (empty: the name). ``figures``: ids of figures (e.g. ``"fig7"``)
    in whose grid the method is also run, on the ERM cell ``train_none`` and
    the whole held-out set ``heldout``, beside the paper's series (the
    built-ins keep ``()``: the experiment grid lists them explicitly)."""

    name: str
    fn: Callable[[Task, dict], tuple[np.ndarray, np.ndarray, dict]]
    defaults: dict
    per_dataset: dict = field(default_factory=dict)
    description: str = ""
    types: dict = field(default_factory=dict)
    label: str = ""
    figures: tuple[str, ...] = ()

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
        why = param_error(p, value)
        if why:
            raise LLRError(f"method {name}: parameter {key}={value!r}: {why}")


def dataset_family(spec: DatasetSpec) -> str:
    """Real dataset a spec stands for: ``synth_waterbirds`` -> ``waterbirds``."""
    return spec.name.removeprefix("synth_")


def mass_shares(labels: np.ndarray, weights: np.ndarray, n: int) -> list[float]:
    """Each of the ``n`` labels' share of the total weight."""
    m = np.bincount(labels, weights=weights, minlength=n)
    return (m / m.sum()).tolist()


def plan_info(task: Task, pos: np.ndarray, weight: np.ndarray) -> dict:
    """Effective training set: examples used, their group counts, each
    group's / class's share of the expected training weight, and the group
    ratio of the cell as trained on (``effective_group_ratio``: ``weight`` on
    the examples ``pos`` of the cell, duplicates adding up) and unweighted
    (``heldout_group_ratio``), paper sections 3.1-3.2."""
    g, y = task.g[pos], task.y[pos]
    w_cell = np.bincount(
        np.asarray(pos, dtype=np.int64), weights=np.asarray(weight, dtype=np.float64), minlength=len(task.y)
    )
    return {
        "n_train": int(len(pos)),
        "train_group_counts": np.bincount(g, minlength=task.spec.n_groups).tolist(),
        "group_mass": mass_shares(g, weight, task.spec.n_groups),
        "class_mass": mass_shares(y, weight, task.spec.n_classes),
        "effective_group_ratio": effective_group_ratio(task.y, task.g, w_cell, task.spec),
        "heldout_group_ratio": effective_group_ratio(task.y, task.g, None, task.spec),
    }


METHODS: dict[str, Method] = {}


def register(m: Method) -> Method:
    """Add ``m`` to :data:`METHODS` (under its name) and return it."""
    METHODS[m.name] = m
    return m


def get_method(name: str) -> Method:
    """The registered method ``name``; LLRError listing the known ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise LLRError(f"unknown last-layer method {name!r}; expected one of {sorted(METHODS)}") from None


def resolve_hp(name: str, spec: DatasetSpec, params: dict | None = None) -> dict:
    """A method's hyper-parameters for a dataset, ``params`` overriding."""
    return get_method(name).hp(spec, params)


def run_method(
    name: str,
    X_all: np.ndarray,
    meta: pd.DataFrame,
    roles: np.ndarray,
    train_pos: np.ndarray,
    val_pos: np.ndarray,
    erm_head: tuple[np.ndarray, np.ndarray],
    hp: dict | None,
    seed: int,
    epochs: int,
    spec: DatasetSpec,
    device: str = "cpu",
    sample_weights: np.ndarray | None = None,
    report_sets: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
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
        raise LLRError(
            f"ERM head has shape {W0.shape}/{b0.shape}, expected ({spec.n_classes}, {X_all.shape[1]})/({spec.n_classes},)"
        )
    task = Task(
        X=np.asarray(X_all[train_pos], dtype=np.float32),
        y=y[train_pos],
        g=g[train_pos],
        X_val=np.asarray(X_all[val_pos], dtype=np.float32),
        y_val=y[val_pos],
        g_val=g[val_pos],
        erm_W=W0,
        erm_b=b0,
        spec=spec,
        seed=int(seed),
        epochs=int(epochs),
        device=device,
        sample_weights=None if sample_weights is None else np.asarray(sample_weights, dtype=np.float64),
        report_sets=report_sets,
    )
    if task.sample_weights is not None and task.sample_weights.shape != task.y.shape:
        raise LLRError(f"sample_weights have shape {task.sample_weights.shape}, expected ({len(task.y)},)")
    W, b, info = get_method(name).fn(task, hp_r)
    info["hp"] = hp_r
    return np.asarray(W, dtype=np.float32), np.asarray(b, dtype=np.float32), info
