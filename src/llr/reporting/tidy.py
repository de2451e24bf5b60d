"""Tidy tables from the results folder (docs/design.md, "Path contract"): runs, ERM logs and
analysis tables stacked with their run identity, and the tables of Figure 8 and the caching ablation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from llr.errors import LLRError
from llr.io import write_csv

# Run identity from the path contract, under any results folder (results_dir).
_RUN_PATH = (
    r"(?:^|/)(?P<dataset>[^/]+)/seed(?P<seed>\d+)/(?:erm/(?P<erm_only>[^/]+)"
    r"|lastlayer/(?P<erm>[^/]+)/(?P<method>[^/]+)/(?P<heldout>[^/]+))/metrics\.json$"
)

# Last-layer metrics.json keys copied to every row of the run (NaN where absent).
RUN_INFO_KEYS = ("effective_group_ratio", "heldout_group_ratio", "train_group_ratio", "heldout_construction")
RUN_COLUMNS = (
    "dataset",
    "seed",
    "erm",
    "method",
    "heldout",
    "role",
    "group",
    "acc",
    "wga",
    "mean_acc",
    *RUN_INFO_KEYS,
    "afr_gamma",
    "afr_lambda",
)
LOG_COLUMNS = ("epoch", "train_loss", "lr", "seconds")
# Columns each analysis table must have, by file name (llr.analysis.svm, llr.analysis.margins).
ANALYSIS_COLUMNS = {
    "svm_convergence": ("epoch", "directional_error"),
    "margins": ("seed", "epoch", "group", "min_margin", "avg_margin", "n_train", "test_acc"),
}


def _num(v) -> float:
    """A JSON number or null as float (null -> NaN)."""
    return np.nan if v is None else float(v)


def _run_rows(f: str, d: dict, ident: dict) -> list[dict]:
    per_role = d.get("roles") or d.get("metrics")
    if not per_role or not isinstance(per_role, dict):
        raise LLRError(f"{f}: no per-role metrics (keys 'roles' or 'metrics')")
    afr = d.get("afr") if isinstance(d.get("afr"), dict) else {}
    info = {k: d.get(k, np.nan) for k in RUN_INFO_KEYS}
    for k in RUN_INFO_KEYS[:3]:
        info[k] = _num(d.get(k))
    info["afr_gamma"], info["afr_lambda"] = _num(afr.get("gamma")), _num(afr.get("lambda"))
    rows = []
    for role, r in per_role.items():
        missing = [k for k in ("acc_by_group", "wga", "mean_acc") if not isinstance(r, dict) or k not in r]
        if missing:
            raise LLRError(f"{f}: role {role!r}: key {missing[0]!r} missing, expected acc_by_group, wga, mean_acc")
        for grp, acc in enumerate(r["acc_by_group"]):
            rows.append(
                {
                    **ident,
                    "role": role,
                    "group": grp,
                    "acc": _num(acc),
                    "wga": _num(r["wga"]),
                    "mean_acc": _num(r["mean_acc"]),
                    **info,
                }
            )
    return rows


def collect_runs(files: list[str], out_csv: str | os.PathLike) -> pd.DataFrame:
    """Tidy table of ERM and last-layer runs: one row per run, role and
    group, with columns ``RUN_COLUMNS``: dataset, seed, erm, method, heldout,
    role, group, acc, wga, mean_acc, then the last-layer run's
    effective/heldout/train group ratios and held-out construction and AFR's
    chosen gamma and lambda (NaN where absent, e.g. ERM rows). ERM runs have
    method ``erm`` and heldout ``-``. Run identity comes from the path
    contract; every metrics.json must carry a valid llr signature
    (``llr.io.verify``), so hand-edited or truncated files are refused."""
    import re

    from llr.io import read_json

    rows = []
    for f in files:
        m = re.search(_RUN_PATH, Path(f).as_posix())
        if not m:
            raise LLRError(
                f"{f}: not a run path results/<dataset>/seed<k>/(erm/<cell>|lastlayer/<cell>/<method>/<heldout>)/metrics.json"
            )
        d = read_json(f, verify_signature=True)
        ident = {
            "dataset": m["dataset"],
            "seed": int(m["seed"]),
            "erm": m["erm_only"] or m["erm"],
            "method": m["method"] or "erm",
            "heldout": m["heldout"] or "-",
        }
        rows.extend(_run_rows(f, d, ident))
    df = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    write_csv(out_csv, df)
    return df


def _dataset_seed(path: str) -> tuple[str, int]:
    import re

    m = re.search(r"(?:^|/)(?P<dataset>[^/]+)/seed(?P<seed>\d+)/", Path(path).as_posix())
    if not m:
        raise LLRError(f"{path}: not under results/<dataset>/seed<k>/")
    return m["dataset"], int(m["seed"])


def collect_logs(files: list[str], out_csv: str | os.PathLike) -> pd.DataFrame:
    """Per-epoch ERM logs (``.../erm/<cell>/log.csv``) stacked with columns
    dataset, seed, erm first; ``heldout_nc1_final`` comes from the run's
    metrics.json (signature verified) when the run tracked NC1 (Figure 2).
    Each log must parse, have columns ``LOG_COLUMNS`` and epochs 1..n."""
    from llr.io import read_csv, read_json

    frames = []
    for f in files:
        ds, seed = _dataset_seed(f)
        p = Path(f)
        d = read_csv(p, LOG_COLUMNS)
        ep = pd.to_numeric(d["epoch"], errors="coerce").to_numpy(dtype=np.float64)
        # complete: increasing evaluation points (several per epoch allowed)
        # that reach every epoch's end 1..n
        ends = ep[np.isclose(ep, np.round(ep))]
        if (
            len(d) == 0
            or np.isnan(ep).any()
            or not (np.diff(ep) > 0).all()
            or not np.array_equal(ends, np.arange(1, len(ends) + 1))
            or not np.isclose(ep[-1], len(ends))
        ):
            raise LLRError(
                f"{f}: column 'epoch' must rise to the end of every epoch 1..n (a complete log), "
                f"found {d['epoch'].tolist()[:8]}"
            )
        d.insert(0, "erm", p.parent.name)
        d.insert(0, "seed", seed)
        d.insert(0, "dataset", ds)
        m = p.parent / "metrics.json"
        if m.exists():
            nc1 = read_json(m, verify_signature=True).get("nc1")
            if nc1:
                try:
                    d["heldout_nc1_final"] = nc1["heldout"]
                    d["train_nc1_final"] = nc1["train"]
                except (KeyError, TypeError):
                    raise LLRError(f"{m}: key 'nc1' must hold 'train' and 'heldout'") from None
        frames.append(d)
    df = pd.concat(frames, ignore_index=True)
    write_csv(out_csv, df)
    return df


def collect_analysis(files: list[str], out_csv: str | os.PathLike) -> pd.DataFrame:
    """Per-seed analysis tables (``results/<dataset>/seed<k>/analysis/*.csv``)
    stacked with dataset and seed columns. Each must parse, hold rows and,
    for the tables of ``ANALYSIS_COLUMNS``, have their columns."""
    from llr.io import read_csv

    frames = []
    for f in files:
        ds, seed = _dataset_seed(f)
        d = read_csv(f, ANALYSIS_COLUMNS.get(Path(f).stem, ()))
        if len(d) == 0:
            raise LLRError(f"{f}: no rows")
        d = d.drop(columns=[c for c in ("dataset", "seed") if c in d.columns])
        d.insert(0, "seed", seed)
        d.insert(0, "dataset", ds)
        frames.append(d)
    df = pd.concat(frames, ignore_index=True)
    write_csv(out_csv, df)
    return df


def fig8_table(inputs: list[str], outputs: list[str], params: dict) -> None:
    """Figure 8's data from last-layer metrics.json files (llr.analysis.effective_ratio):
    outputs = [fig8_effective_ratio.csv, fig8_correlation.csv]."""
    from llr.analysis.effective_ratio import write_fig8_tables

    if len(outputs) != 2:
        raise LLRError("fig8_table: expected --out fig8_effective_ratio.csv fig8_correlation.csv")
    write_fig8_tables(inputs, outputs[0], outputs[1])


def ablation_caching_table(inputs: list[str], outputs: list[str], params: dict) -> None:
    """The caching ablation's tables (llr.reporting.ablation): inputs = cached
    and through-backbone metrics.json files; outputs = [ablation_caching.csv,
    ablation_caching_summary.csv]."""
    from llr.reporting.ablation import write_ablation_tables

    if len(outputs) != 2:
        raise LLRError("ablation_caching_table: expected --out ablation_caching.csv ablation_caching_summary.csv")
    write_ablation_tables(inputs, outputs[0], outputs[1])
