"""Figure 8 (beyond the paper): every last-layer method on one axis, the
effective group ratio it trains with.

Paper section 3.1 shows that LLR's test WGA follows the held-out set's group
ratio; section 3.2 argues that CB-LLR and AFR succeed by *implicit*
group-balancing (class balancing; AFR's weights ``exp(-gamma p_i)``). If both
hold, one number, the group ratio of the held-out set *as the method weights
it*, should order the test WGA of every method. This module builds that table
from the last-layer jobs' ``metrics.json`` files:

- every run of Figures 4, 5 and 7 (LLR on each group-ratio subset and sampled
  set, DFR and CB-LLR in each mode, AFR at its chosen (gamma, lambda),
  AFR with gamma = 0) with its recorded ``effective_group_ratio`` and test WGA;
- every other point of AFR's (gamma, lambda) grid, from the ``afr.grid`` rows
  that the AFR job records (each point's effective ratio, computed from its
  weights, and its test WGA; the AFR job already holds every grid head, so
  recording costs one matrix product per point, where recomputing here would
  mean retraining the grid);

and the correlation of test WGA with the log effective ratio per dataset.

Two ratios per point: ``effective_ratio`` is :func:`llr.train.balancing.effective_group_ratio`
(per class, weighted minority mass over majority mass, averaged over classes:
the paper's "group ratio ... for each class"), which class-level reweighting
cannot change; ``pooled_ratio`` is the weighted mass of all minority groups
over that of all majority groups, which class balancing does change (section
3.2: "class-balancing methods partially group-balance the dataset").
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llr.data.registry import DatasetSpec, get_spec
from llr.errors import LLRError
from llr.train.balancing import balance, effective_group_ratio, rng_for

FIG8_COLUMNS = (
    "dataset",
    "seed",
    "erm",
    "method",
    "heldout",
    "family",
    "point",
    "effective_ratio",
    "pooled_ratio",
    "test_wga",
    "test_mean_acc",
    "afr_gamma",
    "afr_lambda",
    "heldout_construction",
    "heldout_group_ratio",
    "train_group_ratio",
)
CORR_COLUMNS = (
    "dataset",
    "points",
    "ratio",
    "n_points",
    "n_seeds",
    "pearson_r",
    "pearson_p",
    "spearman_r",
    "spearman_p",
    "pearson_r_seed_mean",
    "pearson_r_seed_std",
    "spearman_r_seed_mean",
    "spearman_r_seed_std",
)
# Marker families of Figure 8, in legend order.
FAMILIES = (
    "LLR (held-out subset)",
    "LLR (held-out sampled)",
    "LLR (whole held-out)",
    "DFR",
    "CB-LLR",
    "AFR (chosen)",
    "AFR gamma=0",
    "AFR grid",
)
POINT_SETS = {"runs": ("run",), "runs+grid": ("run", "grid")}
RATIOS = {"effective": "effective_ratio", "pooled": "pooled_ratio"}

_LL_PATH = re.compile(
    r"(?:^|/)(?P<dataset>[^/]+)/seed(?P<seed>\d+)/lastlayer/(?P<erm>[^/]+)/(?P<method>[^/]+)/"
    r"(?P<heldout>[^/]+)/metrics\.json$"
)


# --------------------------------------------------------------------------
# Effective ratios of training plans (sections 3.1-3.2)
# --------------------------------------------------------------------------


def pooled_group_ratio(y: np.ndarray, g: np.ndarray, weights: np.ndarray | None, spec: DatasetSpec) -> float:
    """Weighted mass of every minority group over that of every majority
    group, over the classes :func:`llr.train.balancing.effective_group_ratio` counts
    (a class's majority group: its group with the most examples, unweighted).
    Unlike the per-class ratio, class-level reweighting moves it. NaN when no
    class qualifies or the majority groups carry no weight."""
    from llr.train.balancing import class_group_masses

    maj, mino, keep = class_group_masses(y, g, weights, spec)
    den = float(maj[keep].sum())
    return float(mino[keep].sum() / den) if keep.any() and den > 0 else float("nan")


def pooled_from_mass(group_mass: list[float], group_counts: list[int], spec: DatasetSpec) -> float:
    """:func:`pooled_group_ratio` from what a metrics.json records: each
    group's share of the training weight and the cell's unweighted group
    counts (which fix each class's majority group)."""
    mass = np.asarray(group_mass, dtype=np.float64)
    counts = np.asarray(group_counts, dtype=np.int64)
    if mass.shape != (spec.n_groups,) or counts.shape != (spec.n_groups,):
        raise LLRError(
            f"{spec.name}: group_mass / group counts must list {spec.n_groups} groups, got "
            f"{mass.shape[0] if mass.ndim else 0} / {counts.shape[0] if counts.ndim else 0}"
        )
    g = np.repeat(np.arange(spec.n_groups), counts)
    w = np.repeat(np.divide(mass, counts, out=np.zeros_like(mass), where=counts > 0), counts)
    return pooled_group_ratio(g // spec.n_spurious, g, w, spec)


def balanced_plan(
    method: str, y: np.ndarray, g: np.ndarray, seed: int, sample_weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The training plan of a balanced-LLR method on a held-out cell, exactly
    as ``llr.lastlayer.methods`` builds it: ``(positions, sample_weights,
    loss_weights)`` into the cell. ``llr``: every example (``sample_weights``
    a sampler imposed by the sampled construction); ``dfr_<mode>`` balances
    groups, ``cbllr_<mode>`` classes (paper section 3.2; the same seeded
    generator as the cached job, so subsetting keeps the same examples)."""
    if method == "llr":
        return np.arange(len(y)), sample_weights, None
    m = re.fullmatch(r"(dfr|cbllr)_(subsetting|upsampling|upweighting)", method)
    if m is None:
        raise LLRError(f"method {method!r} is not a balanced LLR method; expected llr, dfr_<mode> or cbllr_<mode>")
    if sample_weights is not None:
        raise LLRError("a sampled held-out cell can only be used with plain LLR (method llr)")
    by = "g" if m[1] == "dfr" else "y"
    bal = balance(np.asarray(g if by == "g" else y), m[2], rng_for(seed, "lastlayer", by, m[2]))
    return bal.positions, bal.sample_weights, bal.loss_weights


def plan_weights(
    n: int, positions: np.ndarray, sample_weights: np.ndarray | None, loss_weights: np.ndarray | None
) -> np.ndarray:
    """Per-example training weight over a cell of ``n`` examples: sampling
    probability (upsampling) or loss weight (upweighting) of the examples
    used, 1 for plain use, 0 for examples left out (subsetting)."""
    pos = np.asarray(positions, dtype=np.int64)
    w = (
        sample_weights
        if sample_weights is not None
        else loss_weights
        if loss_weights is not None
        else np.ones(len(pos))
    )
    return np.bincount(pos, weights=np.asarray(w, dtype=np.float64), minlength=n)


def plan_ratios(
    method: str, y: np.ndarray, g: np.ndarray, seed: int, spec: DatasetSpec, sample_weights: np.ndarray | None = None
) -> dict[str, float]:
    """Effective (per-class) and pooled group ratio of a balanced-LLR
    method's plan on a cell (:func:`balanced_plan`)."""
    w = plan_weights(len(y), *balanced_plan(method, y, g, seed, sample_weights))
    return {"effective_ratio": effective_group_ratio(y, g, w, spec), "pooled_ratio": pooled_group_ratio(y, g, w, spec)}


def afr_ratios(
    erm_logits: np.ndarray, y: np.ndarray, g: np.ndarray, gamma: float, spec: DatasetSpec, balance_classes: bool = True
) -> dict[str, float]:
    """Effective and pooled group ratio of AFR's weights at ``gamma``
    (``exp(-gamma p_i)``, class-balanced; :func:`llr.lastlayer.afr.afr_weights`)
    on a held-out set with ERM logits ``erm_logits`` (paper section 3.2)."""
    from llr.lastlayer.afr import afr_weights

    w = afr_weights(np.asarray(erm_logits, dtype=np.float64), y, gamma, balance_classes)
    return {"effective_ratio": effective_group_ratio(y, g, w, spec), "pooled_ratio": pooled_group_ratio(y, g, w, spec)}


# --------------------------------------------------------------------------
# The Figure 8 table
# --------------------------------------------------------------------------


def method_family(method: str, heldout: str) -> str:
    """Marker family of a run: LLR by held-out construction, DFR, CB-LLR,
    AFR (chosen point) and AFR at gamma = 0."""
    if method == "llr":
        if heldout.startswith("heldout_ratio"):
            return FAMILIES[0]
        if heldout.startswith("heldout_sampled"):
            return FAMILIES[1]
        return FAMILIES[2]
    if method.startswith("dfr_"):
        return "DFR"
    if method.startswith("cbllr_"):
        return "CB-LLR"
    if method == "afr":
        return "AFR (chosen)"
    if method == "afr_gamma0":
        return "AFR gamma=0"
    return method


def _num(v: Any) -> float:
    try:
        return float("nan") if v is None else float(v)
    except (TypeError, ValueError):
        return float("nan")


def run_points(path: str, d: dict, ident: dict) -> list[dict]:
    """Rows of one last-layer metrics.json: the run itself (``point`` run)
    and, for AFR, every grid point (``point`` grid)."""
    try:
        spec = get_spec(d.get("dataset") or ident["dataset"])
    except LLRError as e:
        raise LLRError(f"{path}: {e}") from None
    test = (d.get("metrics") or {}).get("test")
    if not isinstance(test, dict) or "wga" not in test:
        raise LLRError(f"{path}: key metrics.test.wga missing; expected a last-layer run evaluated on the test role")
    if "effective_group_ratio" not in d:
        raise LLRError(f"{path}: key 'effective_group_ratio' missing; rerun the job with the current llr")
    counts = d.get("train_cell_group_counts") or d.get("train_group_counts")
    pooled = pooled_from_mass(d["group_mass"], counts, spec) if d.get("group_mass") and counts else float("nan")
    afr = d.get("afr") if isinstance(d.get("afr"), dict) else {}
    base = {
        **ident,
        "family": method_family(ident["method"], ident["heldout"]),
        "heldout_construction": d.get("heldout_construction", "subset"),
        "heldout_group_ratio": _num(d.get("heldout_group_ratio")),
        "train_group_ratio": _num(d.get("train_group_ratio")),
    }
    rows = [
        {
            **base,
            "point": "run",
            "effective_ratio": _num(d["effective_group_ratio"]),
            "pooled_ratio": pooled,
            "test_wga": _num(test["wga"]),
            "test_mean_acc": _num(test.get("mean_acc")),
            "afr_gamma": _num(afr.get("gamma")),
            "afr_lambda": _num(afr.get("lambda")),
        }
    ]
    grid = afr.get("grid") or []
    for i, r in enumerate(grid):
        missing = [k for k in ("gamma", "lambda", "effective_group_ratio", "test_wga") if k not in r]
        if missing:
            raise LLRError(
                f"{path}: afr.grid[{i}]: key {missing[0]!r} missing; the AFR job records each grid "
                f"point's effective_group_ratio and test_wga (rerun it with the current llr)"
            )
        gp = pooled_from_mass(r["group_mass"], counts, spec) if r.get("group_mass") and counts else float("nan")
        rows.append(
            {
                **base,
                "family": "AFR grid",
                "point": "grid",
                "effective_ratio": _num(r["effective_group_ratio"]),
                "pooled_ratio": gp,
                "test_wga": _num(r["test_wga"]),
                "test_mean_acc": _num(r.get("test_mean_acc")),
                "afr_gamma": _num(r["gamma"]),
                "afr_lambda": _num(r["lambda"]),
            }
        )
    return rows


def effective_ratio_table(files: list[str]) -> pd.DataFrame:
    """One row per last-layer run (``point`` run) and per AFR grid point
    (``point`` grid), columns ``FIG8_COLUMNS``, from ``metrics.json`` files
    at ``<results>/<dataset>/seed<k>/lastlayer/<erm>/<method>/<heldout>/``
    (signatures verified; a file listed twice counts once)."""
    from llr.io import read_json

    rows = []
    for f in dict.fromkeys(files):
        m = _LL_PATH.search(Path(f).as_posix())
        if not m:
            raise LLRError(
                f"{f}: not a last-layer run path <dataset>/seed<k>/lastlayer/<erm>/<method>/<heldout>/metrics.json"
            )
        ident = {
            "dataset": m["dataset"],
            "seed": int(m["seed"]),
            "erm": m["erm"],
            "method": m["method"],
            "heldout": m["heldout"],
        }
        rows += run_points(f, read_json(f, verify_signature=True), ident)
    df = pd.DataFrame(rows, columns=list(FIG8_COLUMNS))
    return df.sort_values(
        ["dataset", "seed", "erm", "method", "heldout", "point", "afr_gamma", "afr_lambda"],
        kind="stable",
        ignore_index=True,
    )


def _corr(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float, int]:
    """Pearson and Spearman (r, p) of finite pairs; NaN under 3 pairs or a
    constant series."""
    from scipy.stats import pearsonr, spearmanr

    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, math.nan, math.nan, int(x.size)
    p, s = pearsonr(x, y), spearmanr(x, y)
    return float(p.statistic), float(p.pvalue), float(s.statistic), float(s.pvalue), int(x.size)


def _mean_std(a: np.ndarray) -> tuple[float, float]:
    """Mean and std (ddof 1; 0 for one value; NaN for none)."""
    return (
        float(a.mean()) if a.size else math.nan,
        float(a.std(ddof=1)) if a.size > 1 else (0.0 if a.size else math.nan),
    )


def ratio_correlations(table: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, point set (``runs``: every last-layer run, AFR at its
    chosen point; ``runs+grid``: plus AFR's other grid points) and ratio
    (``effective``, ``pooled``): Pearson and Spearman r of test WGA against
    log(ratio) over every run of every seed (points with a positive finite
    ratio), and the mean and std (ddof 1) over seeds of the r computed on
    each seed alone. Columns ``CORR_COLUMNS``."""
    rows = []
    for ds, d in table.groupby("dataset", sort=False):
        for pts, kinds in POINT_SETS.items():
            e = d[d["point"].isin(kinds)]
            for rname, col in RATIOS.items():
                x = np.log(np.where(e[col].to_numpy(float) > 0, e[col].to_numpy(float), np.nan))
                yv = e["test_wga"].to_numpy(float)
                pr, pp, sr, sp, n = _corr(x, yv)
                per = [
                    _corr(x[(e["seed"] == s).to_numpy()], yv[(e["seed"] == s).to_numpy()])
                    for s in sorted(e["seed"].unique())
                ]
                pe = np.array([v[0] for v in per if np.isfinite(v[0])])
                se = np.array([v[2] for v in per if np.isfinite(v[2])])
                rows.append(
                    {
                        "dataset": ds,
                        "points": pts,
                        "ratio": rname,
                        "n_points": n,
                        "n_seeds": int(e["seed"].nunique()),
                        "pearson_r": pr,
                        "pearson_p": pp,
                        "spearman_r": sr,
                        "spearman_p": sp,
                        **dict(zip(("pearson_r_seed_mean", "pearson_r_seed_std"), _mean_std(pe))),
                        **dict(zip(("spearman_r_seed_mean", "spearman_r_seed_std"), _mean_std(se))),
                    }
                )
    return pd.DataFrame(rows, columns=list(CORR_COLUMNS))


def write_fig8_tables(
    files: list[str], out_table: str | os.PathLike, out_corr: str | os.PathLike
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``fig8_effective_ratio.csv`` (:func:`effective_ratio_table`)
    and ``fig8_correlation.csv`` (:func:`ratio_correlations`)."""
    from llr.io import write_csv

    if not files:
        raise LLRError("fig8: no last-layer metrics.json given")
    table = effective_ratio_table(files)
    corr = ratio_correlations(table)
    write_csv(out_table, table)
    write_csv(out_corr, corr)
    return table, corr
