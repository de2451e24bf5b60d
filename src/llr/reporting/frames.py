"""Reading the tidy CSVs for figures and claims: required columns, each run's test WGA,
the values of one run cell per seed and their mean / std over seeds."""

from __future__ import annotations

import pandas as pd

from llr.errors import LLRError
from llr.train.balancing import BALANCE_MODES

# The balancing modes other than "none", in llr.train.balancing's order (Figures 6 and 7).
BALANCED_MODES = tuple(m for m in BALANCE_MODES if m != "none")
RUN_KEYS = ["dataset", "seed", "erm", "method", "heldout"]
RUN_EXTRA = ["effective_group_ratio", "heldout_group_ratio", "train_group_ratio", "afr_gamma", "afr_lambda"]
# Columns of fig8_effective_ratio.csv and ablation_caching.csv that the figures and claims read.
FIG8_NEED = {"dataset", "seed", "erm", "method", "heldout", "family", "point", "effective_ratio", "test_wga"}
ABLATION_NEED = {"dataset", "seed", "erm", "method", "heldout", "mode", "test_wga"}


def need(df: pd.DataFrame, cols: set[str], path: str) -> pd.DataFrame:
    """``df`` if it has the columns ``cols`` and rows, else an LLRError naming ``path``."""
    missing = cols - set(df.columns)
    if missing:
        raise LLRError(f"{path}: columns {sorted(missing)} missing")
    if df.empty:
        raise LLRError(f"{path}: no rows")
    return df


def read_runs(path: str) -> pd.DataFrame:
    """A runs table (llr.reporting.tidy.collect_runs)."""
    return need(pd.read_csv(path), {*RUN_KEYS, "role", "wga"}, path)


def float_epochs(df: pd.DataFrame) -> pd.DataFrame:
    """Evaluation points as floats (log.csv may hold several per epoch:
    epoch 0.25, 0.5, ...), rounded so that equal points of different seeds
    group together."""
    return df.assign(epoch=df["epoch"].astype(float).round(6))


def run_wga(df: pd.DataFrame, role: str = "test") -> pd.DataFrame:
    """One row per run: its WGA and mean accuracy on ``role``, with the
    optional group-ratio / AFR columns when the table has them."""
    d = df[df["role"] == role]
    cols = RUN_KEYS + ["wga"] + [c for c in ("mean_acc", *RUN_EXTRA) if c in d.columns]
    return d.drop_duplicates(RUN_KEYS)[cols].reset_index(drop=True)


def read_run_wga(paths: list[str]) -> pd.DataFrame:
    """run_wga of several runs tables, each run once."""
    runs = pd.concat([run_wga(read_runs(p)) for p in paths], ignore_index=True)
    return runs.drop_duplicates(RUN_KEYS).reset_index(drop=True)


def ratio_of(name: str) -> float:
    """Group ratio in a cell name: ``train_ratio0.2_none`` -> 0.2."""
    for part in name.split("_"):
        if part.startswith("ratio"):
            return float(part[5:])
    return float("nan")


def seed_values(
    runs: pd.DataFrame, ds: str, erm: str, method: str, heldout: str | None = None, col: str = "wga"
) -> pd.Series:
    """``col`` of one cell, indexed by seed (heldout None: any held-out cell)."""
    m = (runs["dataset"] == ds) & (runs["erm"] == erm) & (runs["method"] == method)
    if heldout is not None:
        m &= runs["heldout"] == heldout
    d = runs.loc[m, ["seed", col]].dropna()
    return d.groupby("seed")[col].mean().astype(float)


def cell_values(runs: pd.DataFrame, ds: str, erm: str, method: str, heldout: str | None = None) -> pd.Series:
    """seed_values of one cell (test WGA) without the seed index."""
    return seed_values(runs, ds, erm, method, heldout).reset_index(drop=True)


def seed_stat(v: pd.Series) -> tuple[float, float, int]:
    """Mean, std over seeds (ddof 1; 0 for one seed) and count."""
    v = pd.Series(v, dtype=float).dropna()
    if v.empty:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std()) if len(v) > 1 else 0.0, int(len(v))


def fig5_cells(mode: str) -> tuple[str, tuple[str, str, str]]:
    """Figure 5's (ERM cell, (LLR ERM cell, method, held-out cell)) of a
    class-balancing mode."""
    if mode == "none":
        return "combined_none", ("train_none", "llr", "heldout")
    return f"combined_class_{mode}", (f"train_class_{mode}", f"cbllr_{mode}", "heldout")
