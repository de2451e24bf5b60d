"""Figures (paper Figures 2-7). Each function reads tidy CSVs written by the
workflow and writes its files; nothing here trains or fits anything, so
restyling a figure never reruns an experiment.
"""

from __future__ import annotations

import json
import os
from typing import Callable

import numpy as np
import pandas as pd

from llr.errors import LLRError
from llr.io import atomic_path, write_csv

PAPER_STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 7,
               "axes.spines.top": False, "axes.spines.right": False}
DATASET_TITLES = {"waterbirds": "Waterbirds", "celeba": "CelebA", "civilcomments": "CivilComments",
                  "multinli": "MultiNLI", "synth_waterbirds": "Synthetic Waterbirds",
                  "synth_multinli": "Synthetic MultiNLI"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(PAPER_STYLE)
    return plt


def _save(fig, paths: list[str]) -> None:
    for p in paths:
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=os.path.splitext(p)[1][1:], dpi=200, bbox_inches="tight")


def _read(path: str) -> pd.DataFrame:
    df = pd.read_csv(path)
    need = {"dataset", "seed", "erm", "method", "heldout", "role", "wga"}
    if not need <= set(df.columns):
        raise LLRError(f"{path}: columns {sorted(need - set(df.columns))} missing")
    return df


def run_wga(df: pd.DataFrame, role: str = "test") -> pd.DataFrame:
    """One row per run: its WGA on ``role``."""
    d = df[df["role"] == role]
    return d.drop_duplicates(["dataset", "seed", "erm", "method", "heldout"])[
        ["dataset", "seed", "erm", "method", "heldout", "wga", "mean_acc"]]


def _ratio_of(name: str) -> float:
    for part in name.split("_"):
        if part.startswith("ratio"):
            return float(part[5:])
    return float("nan")


def fig4_data(df: pd.DataFrame) -> pd.DataFrame:
    """Figure 4 series: per dataset, series (erm, erm+heldout, llr@erm ratio,
    dfr@erm ratio) and x ratio, the mean and std of test WGA over seeds."""
    runs = run_wga(df)
    runs = runs.assign(erm_ratio=runs["erm"].map(_ratio_of))
    parts = []
    erm = runs[(runs["method"] == "erm") & runs["erm"].str.startswith("train_ratio")]
    parts.append(erm.assign(series="ERM", x=erm["erm_ratio"]))
    comb = runs[(runs["method"] == "erm") & runs["erm"].str.startswith("combined_ratio")]
    parts.append(comb.assign(series="ERM + held-out", x=comb["erm_ratio"]))
    llr = runs[runs["method"] == "llr"]
    parts.append(llr.assign(series="LLR", x=llr["heldout"].map(_ratio_of)))
    dfr = runs[runs["method"] == "dfr_subsetting"]
    parts.append(dfr.assign(series="DFR", x=dfr["erm_ratio"]))
    d = pd.concat(parts, ignore_index=True)
    d.loc[d["series"].isin(["ERM", "ERM + held-out", "DFR"]), "erm_ratio"] = np.nan
    g = d.groupby(["dataset", "series", "erm_ratio", "x"], dropna=False)["wga"]
    return g.agg(mean="mean", std="std", n="count").reset_index()


def fig4_pearson(series: pd.DataFrame) -> pd.DataFrame:
    """Pearson r between ERM test WGA over the group ratios and, for each ERM
    group ratio, LLR test WGA over the held-out group ratios (each point a
    mean over seeds), as the authors computed it for Figure 4."""
    from scipy.stats import pearsonr

    rows = []
    for ds, d in series.groupby("dataset"):
        erm = d[d["series"] == "ERM"].set_index("x")["mean"].sort_index()
        for r, l in d[d["series"] == "LLR"].groupby("erm_ratio"):
            l = l.set_index("x")["mean"].reindex(erm.index)
            ok = erm.notna() & l.notna()
            if ok.sum() >= 2 and erm[ok].std() > 0 and l[ok].std() > 0:
                res = pearsonr(erm[ok], l[ok])
                rr, p = float(res.statistic), float(res.pvalue)
            else:
                rr, p = float("nan"), float("nan")
            rows.append({"dataset": ds, "erm_ratio": r, "pearson_r": rr, "p_value": p, "n_points": int(ok.sum()),
                         "x": "ERM test WGA at each group ratio (mean over seeds)",
                         "y": "LLR test WGA at each held-out group ratio (mean over seeds)"})
    return pd.DataFrame(rows)


def fig4(inputs: list[str], outputs: list[str], params: dict) -> None:
    """Figure 4: LLR test WGA across held-out group ratios, one line per ERM
    group ratio; ERM triangles; ERM trained with the held-out data added;
    DFR on the whole held-out set; mean +- std over seeds; Pearson r."""
    plt = _plt()
    series = fig4_data(_read(inputs[0]))
    png, pdf, pearson_csv = outputs
    pear = fig4_pearson(series)
    write_csv(pearson_csv, pear)
    datasets = list(dict.fromkeys(series["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.4), squeeze=False)
    ratios = sorted(series.loc[series["series"] == "ERM", "x"].unique())
    cmap = plt.get_cmap("viridis")
    for ax, ds in zip(axes[0], datasets):
        d = series[series["dataset"] == ds]
        for i, r in enumerate(ratios):
            l = d[(d["series"] == "LLR") & (d["erm_ratio"] == r)].sort_values("x")
            rr = pear[(pear["dataset"] == ds) & (pear["erm_ratio"] == r)]["pearson_r"]
            lab = f"LLR, ERM ratio {r:g} (r={rr.iloc[0]:.2f})" if len(rr) else f"LLR, ERM ratio {r:g}"
            c = cmap(i / max(len(ratios) - 1, 1))
            ax.plot(l["x"], 100 * l["mean"], color=c, lw=1.5, label=lab)
            ax.fill_between(l["x"], 100 * (l["mean"] - l["std"].fillna(0)), 100 * (l["mean"] + l["std"].fillna(0)),
                            color=c, alpha=0.15, lw=0)
        for name, style in (("ERM", dict(color="black", marker="^", ls="none", ms=6)),
                            ("ERM + held-out", dict(color="gray", marker="s", ls="-", ms=4)),
                            ("DFR", dict(color="tab:red", marker="o", ls="--", ms=4))):
            e = d[d["series"] == name].sort_values("x")
            if len(e):
                ax.errorbar(e["x"], 100 * e["mean"], yerr=100 * e["std"].fillna(0), label=name, capsize=2,
                            lw=1, **style)
        ax.set_xscale("log")
        ax.set_xticks(ratios)
        ax.set_xticklabels([f"{r:g}" for r in ratios])
        ax.minorticks_off()
        ax.set_xlabel("group ratio (held-out for LLR, training for ERM)")
        ax.set_ylabel("test worst-group accuracy (%)")
        ax.set_title(DATASET_TITLES.get(ds, ds))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.suptitle("LLR on cached embeddings; DFR = LLR on the group-balanced (subsetted) held-out set", fontsize=8,
                 y=-0.04, va="top")
    _save(fig, [png, pdf])


FIGURES: dict[str, Callable[[list[str], list[str], dict], None]] = {"fig4": fig4}
