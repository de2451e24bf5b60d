"""Figure 4's tables (paper section 3.1): the series of test WGA across group ratios and
the Pearson r between ERM and LLR with group ratios fixed (fig4_pearson.csv)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from llr.reporting.frames import ratio_of, run_wga
from llr.reporting.style import dataset_order

# Held-out constructions of Figure 4: the paper's text removes data until the
# group ratio is reached; the authors' plotting script keeps every held-out
# example and reaches the ratio by sampling.
CONSTRUCTIONS = {"subset": "heldout_ratio", "sampled": "heldout_sampled"}
CONSTRUCTION_LABELS = {
    "subset": "held-out subset (data removed; heldout_ratio{r})",
    "sampled": "held-out sampled (all data kept; heldout_sampled{r})",
}
CONSTRUCTION_SHORT = {"subset": "held-out subset (data removed)", "sampled": "held-out sampled (all data kept)"}


def heldout_kind(name: str) -> tuple[str | None, float]:
    """(construction, ratio) of a held-out cell: ``heldout_ratio0.2`` ->
    ("subset", 0.2), ``heldout_sampled0.2`` -> ("sampled", 0.2)."""
    for kind, prefix in CONSTRUCTIONS.items():
        if name.startswith(prefix):
            try:
                return kind, float(name[len(prefix) :])
            except ValueError:
                break
    return None, float("nan")


def _pearson(x, y) -> tuple[float, float, int]:
    """scipy Pearson r and p over the pairs with both values finite; NaN with
    fewer than 3 pairs or a constant series."""
    from scipy.stats import pearsonr

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan"), int(x.size)
    res = pearsonr(x, y)
    return float(res.statistic), float(res.pvalue), int(x.size)


def ratio_table(runs: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """The ERM runs of cells ``{prefix}{r}_none`` with their group ratio r
    as column ``x``."""
    e = runs[(runs["method"] == "erm") & runs["erm"].str.startswith(prefix) & runs["erm"].str.endswith("_none")]
    return e.assign(x=e["erm"].map(ratio_of))


def fig4_pearson(runs: pd.DataFrame) -> pd.DataFrame:
    """Figure 4's Pearson r, as the paper's caption defines it: "between the
    test WGA of ERM and the test WGA of LLR for each dataset while keeping
    group ratios fixed in the comparison". For each dataset, held-out
    construction and ERM training ratio e, the points are the group ratios r:
    x = WGA of the ERM trained with the held-out data added at ratio r
    (combined_ratio{r}_none, the gray line), y = WGA of LLR on the held-out
    set of ratio r after the ERM of ratio e; each point a mean over seeds
    (the authors' plotting script computes the same per ERM ratio). Columns:
    ``pearson_r``/``p_value`` (that definition), ``pearson_r_seed_std`` (std
    over seeds of the r computed on each seed alone), ``pearson_r_train_erm``
    / ``p_value_train_erm`` (x = ERM on the training pool only,
    train_ratio{r}_none), n_points, n_seeds. ``runs``: a runs table or its
    run_wga rows."""
    runs = run_wga(runs) if "role" in runs.columns else runs
    comb = ratio_table(runs, "combined_ratio")
    train = ratio_table(runs, "train_ratio")
    llr = runs[runs["method"] == "llr"]
    kinds = llr["heldout"].map(heldout_kind)
    llr = llr.assign(construction=kinds.str[0], x=kinds.str[1], erm_ratio=llr["erm"].map(ratio_of))
    llr = llr.dropna(subset=["construction", "erm_ratio"])
    rows = []
    for (ds, con, e), l in llr.groupby(["dataset", "construction", "erm_ratio"]):
        L = l.pivot_table(index="seed", columns="x", values="wga", aggfunc="mean")
        out = {"dataset": ds, "construction": con, "erm_ratio": float(e)}
        for tag, ref in (("", comb), ("_train_erm", train)):
            R = ref[ref["dataset"] == ds].pivot_table(index="seed", columns="x", values="wga", aggfunc="mean")
            cols = L.columns.intersection(R.columns)
            r, p, n = _pearson(R[cols].mean(axis=0), L[cols].mean(axis=0)) if len(cols) else (np.nan, np.nan, 0)
            out[f"pearson_r{tag}"], out[f"p_value{tag}"] = r, p
            if not tag:
                seeds = L.index.intersection(R.index)
                per_seed = [_pearson(R.loc[s, cols], L.loc[s, cols])[0] for s in seeds]
                per_seed = [v for v in per_seed if np.isfinite(v)]
                out.update(
                    n_points=n,
                    n_seeds=len(seeds),
                    pearson_r_seed_std=float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else np.nan,
                )
        rows.append(out)
    cols = [
        "dataset",
        "construction",
        "erm_ratio",
        "pearson_r",
        "p_value",
        "n_points",
        "n_seeds",
        "pearson_r_seed_std",
        "pearson_r_train_erm",
        "p_value_train_erm",
    ]
    df = pd.DataFrame(rows, columns=cols)
    if df.empty:
        return df.assign(x=pd.Series(dtype=str), y=pd.Series(dtype=str))
    order = {ds: i for i, ds in enumerate(dataset_order(df["dataset"]))}
    df = df.sort_values(
        ["dataset", "construction", "erm_ratio"],
        key=lambda s: (
            s.map(order)
            if s.name == "dataset"
            else (s.map({"subset": 0, "sampled": 1}) if s.name == "construction" else s)
        ),
    )
    df["x"] = "ERM with the held-out data added (combined_ratio{r}_none) test WGA at group ratio r, mean over seeds"
    df["y"] = "LLR test WGA on the held-out set of group ratio r after the ERM of ratio erm_ratio, mean over seeds"
    return df.reset_index(drop=True)


def fig4_points(df: pd.DataFrame) -> pd.DataFrame:
    """Figure 4's runs, one row per run with its ``series``, held-out
    ``construction``, ``erm_ratio`` (LLR only) and ``x`` (see fig4_data) and
    its test ``wga``. ``df``: a runs table or its run_wga rows."""
    runs = run_wga(df) if "role" in df.columns else df
    runs = runs.assign(erm_ratio=runs["erm"].map(ratio_of), construction="")
    parts = []
    erm = runs[(runs["method"] == "erm") & runs["erm"].str.startswith("train_ratio")]
    parts.append(erm.assign(series="ERM", x=erm["erm_ratio"]))
    comb = runs[(runs["method"] == "erm") & runs["erm"].str.startswith("combined_ratio")]
    parts.append(comb.assign(series="ERM + held-out", x=comb["erm_ratio"]))
    llr = runs[runs["method"] == "llr"]
    kinds = llr["heldout"].map(heldout_kind)
    llr = llr.assign(series="LLR", construction=kinds.str[0], x=kinds.str[1]).dropna(subset=["construction"])
    parts.append(llr)
    dfr = runs[runs["method"] == "dfr_subsetting"]
    parts.append(dfr.assign(series="DFR", x=dfr["erm_ratio"]))
    d = pd.concat(parts, ignore_index=True)
    d.loc[d["series"] != "LLR", "erm_ratio"] = np.nan
    return d


def fig4_data(df: pd.DataFrame) -> pd.DataFrame:
    """Figure 4 series from a runs table: per dataset, series ``ERM`` (ERM on
    the training pool at group ratio x, train_ratio{x}_none), ``ERM +
    held-out`` (ERM with the held-out data added at ratio x,
    combined_ratio{x}_none: the paper's gray line), ``LLR`` (one line per ERM
    ratio ``erm_ratio`` and held-out ``construction``, x = held-out ratio) and
    ``DFR`` (dfr_subsetting on the whole held-out set, x = ERM ratio); mean,
    std and count of test WGA over seeds."""
    d = fig4_points(df)
    g = d.groupby(["dataset", "series", "construction", "erm_ratio", "x"], dropna=False)["wga"]
    return g.agg(mean="mean", std="std", n="count").reset_index()
