"""Figures 2-7, Table 1 and the comparison with the paper's claims.

Each function reads tidy CSVs written by the workflow (llr.reporting.tidy) and writes
its files; nothing here trains or fits anything, so restyling a figure never
reruns an experiment. One dataset order in every figure and table:
Waterbirds, CelebA, CivilComments, MultiNLI, each synthetic stand-in
(``synth_<name>``) in its counterpart's position.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from llr.errors import LLRError
from llr.io import atomic_path, write_csv

PAPER_STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 7,
               "axes.spines.top": False, "axes.spines.right": False}
REAL_ORDER = ("waterbirds", "celeba", "civilcomments", "multinli")
REAL_TITLES = {"waterbirds": "Waterbirds", "celeba": "CelebA", "civilcomments": "CivilComments",
               "multinli": "MultiNLI"}
BALANCE_MODES = ("subsetting", "upsampling", "upweighting")
MODE_LABELS = {"none": "none", "subsetting": "subsetting", "upsampling": "upsampling",
               "upweighting": "upweighting"}
DEVIATION_NOTE = ("LLR trains on cached eval-mode embeddings (no augmentation); the authors ran LLR "
                  "through the frozen network with training augmentation.")
# Held-out constructions of Figure 4: the paper's text removes data until the
# group ratio is reached; the authors' plotting script keeps every held-out
# example and reaches the ratio by sampling.
CONSTRUCTIONS = {"subset": "heldout_ratio", "sampled": "heldout_sampled"}
CONSTRUCTION_LABELS = {"subset": "held-out subset (data removed; heldout_ratio{r})",
                       "sampled": "held-out sampled (all data kept; heldout_sampled{r})"}
CONSTRUCTION_SHORT = {"subset": "held-out subset (data removed)", "sampled": "held-out sampled (all data kept)"}
RUN_KEYS = ["dataset", "seed", "erm", "method", "heldout"]
RUN_EXTRA = ["effective_group_ratio", "heldout_group_ratio", "train_group_ratio", "afr_gamma", "afr_lambda"]


# --------------------------------------------------------------------------
# Datasets: names, order, titles
# --------------------------------------------------------------------------

def real_name(ds: str) -> str:
    """The real dataset a name stands for: ``synth_<real>`` -> ``<real>``."""
    return ds[6:] if ds.startswith("synth_") and ds[6:] in REAL_ORDER else ds


def is_stand_in(ds: str) -> bool:
    return real_name(ds) != ds


def dataset_order(names: Iterable[str]) -> list[str]:
    """Unique names in the one order of every figure: Waterbirds, CelebA,
    CivilComments, MultiNLI; a stand-in right after its real counterpart;
    unknown names last, in their order of appearance."""
    names = list(dict.fromkeys(names))

    def key(ds: str) -> tuple[int, int, int]:
        real = real_name(ds)
        pos = REAL_ORDER.index(real) if real in REAL_ORDER else len(REAL_ORDER)
        return pos, int(is_stand_in(ds)), names.index(ds)

    return sorted(names, key=key)


def _title(ds: str) -> str:
    real = real_name(ds)
    if real in REAL_TITLES:
        return ("Synthetic " if is_stand_in(ds) else "") + REAL_TITLES[real]
    return ds


DATASET_TITLES = {ds: _title(ds) for ds in (*REAL_ORDER, *(f"synth_{r}" for r in REAL_ORDER))}


def _stand_in_note(ds: str) -> str:
    return f"synthetic stand-in, judged against the paper's claim for {_title(real_name(ds))}" \
        if is_stand_in(ds) else ""


# --------------------------------------------------------------------------
# Plumbing
# --------------------------------------------------------------------------

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


def _need(df: pd.DataFrame, cols: set[str], path: str) -> pd.DataFrame:
    missing = cols - set(df.columns)
    if missing:
        raise LLRError(f"{path}: columns {sorted(missing)} missing")
    if df.empty:
        raise LLRError(f"{path}: no rows")
    return df


def _read(path: str) -> pd.DataFrame:
    """A runs table (llr.reporting.tidy.collect_runs)."""
    return _need(pd.read_csv(path), {*RUN_KEYS, "role", "wga"}, path)


def _epochs(df: pd.DataFrame) -> pd.DataFrame:
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


def _runs(paths: list[str]) -> pd.DataFrame:
    runs = pd.concat([run_wga(_read(p)) for p in paths], ignore_index=True)
    return runs.drop_duplicates(RUN_KEYS).reset_index(drop=True)


def _ratio_of(name: str) -> float:
    """Group ratio in a cell name: ``train_ratio0.2_none`` -> 0.2."""
    for part in name.split("_"):
        if part.startswith("ratio"):
            return float(part[5:])
    return float("nan")


def _heldout_kind(name: str) -> tuple[str | None, float]:
    """(construction, ratio) of a held-out cell: ``heldout_ratio0.2`` ->
    ("subset", 0.2), ``heldout_sampled0.2`` -> ("sampled", 0.2)."""
    for kind, prefix in CONSTRUCTIONS.items():
        if name.startswith(prefix):
            try:
                return kind, float(name[len(prefix):])
            except ValueError:
                break
    return None, float("nan")


def _seeds(runs: pd.DataFrame, ds: str, erm: str, method: str, heldout: str | None = None,
           col: str = "wga") -> pd.Series:
    """``col`` of one cell, indexed by seed (heldout None: any held-out cell)."""
    m = (runs["dataset"] == ds) & (runs["erm"] == erm) & (runs["method"] == method)
    if heldout is not None:
        m &= runs["heldout"] == heldout
    d = runs.loc[m, ["seed", col]].dropna()
    return d.groupby("seed")[col].mean().astype(float)


def _cell(runs: pd.DataFrame, ds: str, erm: str, method: str, heldout: str | None = None) -> pd.Series:
    return _seeds(runs, ds, erm, method, heldout).reset_index(drop=True)


def _stat(v: pd.Series) -> tuple[float, float, int]:
    """Mean, std over seeds (ddof 1; 0 for one seed) and count."""
    v = pd.Series(v, dtype=float).dropna()
    if v.empty:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std()) if len(v) > 1 else 0.0, int(len(v))


def _mean_std(d: pd.DataFrame, by: list[str], col: str) -> pd.DataFrame:
    """Mean, std (ddof 1; 0 for a single seed) and count of ``col`` over seeds."""
    g = d.groupby(by, sort=True)[col].agg(mean="mean", std="std", n="count").reset_index()
    g["std"] = g["std"].fillna(0.0)
    return g


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


# --------------------------------------------------------------------------
# Drawing helpers
# --------------------------------------------------------------------------

def _panels(plt, n: int, width: float = 4.2, height: float = 3.4, sharey: bool = False, rows: int = 1):
    fig, axes = plt.subplots(rows, n, figsize=(width * n, height * rows), squeeze=False, sharey=sharey,
                             gridspec_kw={"wspace": 0.32, "hspace": 0.45})
    return fig, (axes[0] if rows == 1 else axes)


def _band(ax, x, mean, std, color, label, log: bool = False, **kw) -> None:
    x, mean, std = np.asarray(x, float), np.asarray(mean, float), np.asarray(std, float)
    lo, hi = mean - std, mean + std
    if log:  # keep the band on a log axis
        floor = np.nanmin(mean[mean > 0]) / 10 if np.any(mean > 0) else 1e-12
        lo = np.maximum(lo, floor)
    ax.plot(x, mean, color=color, lw=1.5, label=label, **kw)
    ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)


def _note(fig, text: str) -> None:
    """A footnote under the panels, wrapped to the figure's width."""
    import textwrap

    chars = max(70, int(fig.get_figwidth() * 17))
    renderer = fig.canvas.get_renderer()
    bottom = min(ax.get_tightbbox(renderer).y0 for ax in fig.axes) / fig.bbox.height
    fig.text(0.5, min(bottom, 0.0) - 0.02, textwrap.fill(text, chars), fontsize=8, ha="center", va="top")


def _finish(fig, axes, note: str | None = None, legend_ax=None) -> None:
    axes = list(np.ravel(axes))
    if legend_ax is not None:
        handles, labels = legend_ax.get_legend_handles_labels()
    else:  # every distinct label of every panel, in first-seen order
        seen: dict[str, object] = {}
        for ax in axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(lab, h)
        handles, labels = list(seen.values()), list(seen)
    if handles:
        axes[-1].legend(handles, labels, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    if note:
        _note(fig, note)


def _std_line(ax, x: float) -> None:
    """Dashed vertical line at the standard epoch count, labelled in place."""
    ax.axvline(x, color="gray", ls="--", lw=1, label="standard epoch count")
    ax.annotate(f"{x:g}", (x, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                textcoords="offset points", ha="left", va="top", fontsize=7, color="gray")


# --------------------------------------------------------------------------
# Figure 4
# --------------------------------------------------------------------------

def fig4_data(df: pd.DataFrame) -> pd.DataFrame:
    """Figure 4 series from a runs table: per dataset, series ``ERM`` (ERM on
    the training pool at group ratio x, train_ratio{x}_none), ``ERM +
    held-out`` (ERM with the held-out data added at ratio x,
    combined_ratio{x}_none: the paper's gray line), ``LLR`` (one line per ERM
    ratio ``erm_ratio`` and held-out ``construction``, x = held-out ratio) and
    ``DFR`` (dfr_subsetting on the whole held-out set, x = ERM ratio); mean,
    std and count of test WGA over seeds."""
    runs = run_wga(df) if "role" in df.columns else df
    runs = runs.assign(erm_ratio=runs["erm"].map(_ratio_of), construction="")
    parts = []
    erm = runs[(runs["method"] == "erm") & runs["erm"].str.startswith("train_ratio")]
    parts.append(erm.assign(series="ERM", x=erm["erm_ratio"]))
    comb = runs[(runs["method"] == "erm") & runs["erm"].str.startswith("combined_ratio")]
    parts.append(comb.assign(series="ERM + held-out", x=comb["erm_ratio"]))
    llr = runs[runs["method"] == "llr"]
    kinds = llr["heldout"].map(_heldout_kind)
    llr = llr.assign(series="LLR", construction=kinds.str[0], x=kinds.str[1]).dropna(subset=["construction"])
    parts.append(llr)
    dfr = runs[runs["method"] == "dfr_subsetting"]
    parts.append(dfr.assign(series="DFR", x=dfr["erm_ratio"]))
    d = pd.concat(parts, ignore_index=True)
    d.loc[d["series"] != "LLR", "erm_ratio"] = np.nan
    g = d.groupby(["dataset", "series", "construction", "erm_ratio", "x"], dropna=False)["wga"]
    return g.agg(mean="mean", std="std", n="count").reset_index()


def _ratio_table(runs: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """The ERM runs of cells ``{prefix}{r}_none`` with their group ratio r
    as column ``x``."""
    e = runs[(runs["method"] == "erm") & runs["erm"].str.startswith(prefix) & runs["erm"].str.endswith("_none")]
    return e.assign(x=e["erm"].map(_ratio_of))


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
    comb = _ratio_table(runs, "combined_ratio")
    train = _ratio_table(runs, "train_ratio")
    llr = runs[runs["method"] == "llr"]
    kinds = llr["heldout"].map(_heldout_kind)
    llr = llr.assign(construction=kinds.str[0], x=kinds.str[1], erm_ratio=llr["erm"].map(_ratio_of))
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
                out.update(n_points=n, n_seeds=len(seeds),
                           pearson_r_seed_std=float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else np.nan)
        rows.append(out)
    cols = ["dataset", "construction", "erm_ratio", "pearson_r", "p_value", "n_points", "n_seeds",
            "pearson_r_seed_std", "pearson_r_train_erm", "p_value_train_erm"]
    df = pd.DataFrame(rows, columns=cols)
    if df.empty:
        return df.assign(x=pd.Series(dtype=str), y=pd.Series(dtype=str))
    order = {ds: i for i, ds in enumerate(dataset_order(df["dataset"]))}
    df = df.sort_values(["dataset", "construction", "erm_ratio"],
                        key=lambda s: s.map(order) if s.name == "dataset" else
                        (s.map({"subset": 0, "sampled": 1}) if s.name == "construction" else s))
    df["x"] = "ERM with the held-out data added (combined_ratio{r}_none) test WGA at group ratio r, mean over seeds"
    df["y"] = "LLR test WGA on the held-out set of group ratio r after the ERM of ratio erm_ratio, mean over seeds"
    return df.reset_index(drop=True)


def fig4(inputs: list[str], outputs: list[str], params: dict) -> None:
    """Figure 4: LLR test WGA across held-out group ratios, one line per ERM
    group ratio; ERM trained with the held-out data added (gray line, the
    paper's ERM) and ERM on the training pool only (triangles); DFR on the
    whole held-out set; mean +- std over seeds. One panel row per held-out
    construction (subset: data removed, as the paper's text; sampled: every
    example kept, as the authors' plotting script). Each panel prints the
    Pearson r of every LLR line against the gray line (fig4_pearson).
    outputs = [png, pdf, fig4_pearson.csv]."""
    plt = _plt()
    runs = run_wga(_read(inputs[0]))
    series = fig4_data(runs)
    png, pdf, pearson_csv = outputs
    pear = fig4_pearson(runs)
    write_csv(pearson_csv, pear)
    datasets = dataset_order(series["dataset"])
    cons = [c for c in CONSTRUCTIONS if (series["construction"] == c).any()] or ["subset"]
    fig, axes = _panels(plt, len(datasets), rows=len(cons))
    axes = np.atleast_2d(axes)
    ratios = sorted(series.loc[series["series"].isin(["ERM", "ERM + held-out", "LLR"]), "x"].dropna().unique())
    erm_ratios = sorted(series["erm_ratio"].dropna().unique())
    cmap = plt.get_cmap("viridis")
    for row, con in enumerate(cons):
        for ax, ds in zip(axes[row], datasets):
            d = series[series["dataset"] == ds]
            for i, r in enumerate(erm_ratios):
                lin = d[(d["series"] == "LLR") & (d["erm_ratio"] == r) & (d["construction"] == con)].sort_values("x")
                if lin.empty:
                    continue
                _band(ax, lin["x"], 100 * lin["mean"], 100 * lin["std"].fillna(0),
                      cmap(i / max(len(erm_ratios) - 1, 1)), f"LLR after ERM of ratio {r:g}")
            for name, lab, style in (
                    ("ERM + held-out", "ERM with held-out data added (paper's ERM)",
                     dict(color="0.5", marker="s", ls="-", ms=4, lw=2)),
                    ("ERM", "ERM on the training pool only", dict(color="black", marker="^", ls="none", ms=6)),
                    ("DFR", "DFR (whole held-out set, x = ERM ratio)",
                     dict(color="tab:red", marker="o", ls="--", ms=4, lw=1))):
                e = d[d["series"] == name].sort_values("x")
                if len(e):
                    ax.errorbar(e["x"], 100 * e["mean"], yerr=100 * e["std"].fillna(0), label=lab, capsize=2,
                                **style)
            ax.set_xscale("log")
            if ratios:
                ax.set_xticks(ratios)
                ax.set_xticklabels([f"{r:g}" for r in ratios])
            ax.minorticks_off()
            ax.set_xlabel("group ratio (held-out for LLR, training for ERM)")
            ax.set_ylabel("test worst-group accuracy (%)")
            ax.set_title(_title(ds) + (f"\n{CONSTRUCTION_SHORT[con]}" if len(cons) > 1 else ""))
            ax.grid(alpha=0.3)
            p = pear[(pear["dataset"] == ds) & (pear["construction"] == con)]
            if len(p):
                text = "Pearson r vs gray line\n" + "\n".join(
                    f"ERM ratio {e:g}: {v:.3f}" if np.isfinite(v) else f"ERM ratio {e:g}: n.a."
                    for e, v in zip(p["erm_ratio"], p["pearson_r"]))
                ax.text(0.98, 0.03, text, transform=ax.transAxes, ha="right", va="bottom", fontsize=6.5,
                        bbox=dict(boxstyle="round", fc="white", ec="0.8", alpha=0.85))
    _finish(fig, axes[0], "Pearson r per ERM ratio, over the group ratios r: LLR on the held-out set of ratio r "
            "against ERM trained with the held-out data added at ratio r (gray). " +
            ("Rows: " + "; ".join(CONSTRUCTION_LABELS[c] for c in cons) + ". " if len(cons) > 1 else
             CONSTRUCTION_LABELS[cons[0]] + ". ") + DEVIATION_NOTE)
    _save(fig, [png, pdf])
    plt.close(fig)


# --------------------------------------------------------------------------
# Figures 2 and 3
# --------------------------------------------------------------------------

def fig2(inputs: list[str], outputs: list[str], params: dict) -> None:
    """Figure 2: NC1 of the training features at every evaluation point of
    ERM (fractional epochs, log scale, mean +- std over seeds), a dashed line
    at the standard epoch count (params {"standard_epochs": {dataset: n}})
    and NC1 of the held-out features at the end of training (star)."""
    plt = _plt()
    from matplotlib.ticker import FuncFormatter, LogFormatter

    df = _epochs(_need(pd.read_csv(inputs[0]), {"dataset", "seed", "erm", "epoch"}, inputs[0]))
    if "train_nc1" not in df.columns and "heldout_nc1_final" not in df.columns:
        raise LLRError(f"{inputs[0]}: neither train_nc1 nor heldout_nc1_final present")
    std_ep = (params or {}).get("standard_epochs", {}) or {}
    datasets = dataset_order(df["dataset"])
    fig, axes = _panels(plt, len(datasets))
    colors = plt.get_cmap("tab10")
    for ax, ds in zip(axes, datasets):
        d = df[df["dataset"] == ds]
        cells = list(dict.fromkeys(d["erm"]))
        for i, cell in enumerate(cells):
            c = d[d["erm"] == cell]
            tag = f" ({cell})" if len(cells) > 1 else ""
            color = colors(i)
            if "train_nc1" in c.columns and c["train_nc1"].notna().any():
                s = _mean_std(c.dropna(subset=["train_nc1"]), ["epoch"], "train_nc1")
                _band(ax, s["epoch"], s["mean"], s["std"], color, f"train NC1{tag}", log=True)
            elif "train_nc1_final" in c.columns and c["train_nc1_final"].notna().any():
                last = c.groupby("seed").agg(epoch=("epoch", "max"), t=("train_nc1_final", "last"))
                t = last["t"].dropna()
                ax.errorbar([last["epoch"].max()], [t.mean()], yerr=[t.std() if len(t) > 1 else 0.0],
                            marker="o", ms=6, color=color, ls="none", capsize=3,
                            label=f"train NC1 at the end{tag}", zorder=5)
            if "heldout_nc1_final" in c.columns and c["heldout_nc1_final"].notna().any():
                last = c.groupby("seed").agg(epoch=("epoch", "max"), h=("heldout_nc1_final", "last"))
                h = last["h"].dropna()
                ax.errorbar([last["epoch"].max()], [h.mean()], yerr=[h.std() if len(h) > 1 else 0.0],
                            marker="*", ms=10, color="tab:red" if len(cells) == 1 else color, ls="none",
                            capsize=3, label=f"held-out NC1 at the end{tag}", zorder=5)
        if ds in std_ep:
            _std_line(ax, float(std_ep[ds]))
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
        ax.tick_params(axis="y", which="minor", labelsize=6)
        ax.set_xlabel("ERM epoch")
        ax.set_title(_title(ds))
        ax.grid(alpha=0.3, which="both")
    # One y label for the row: per-panel labels collided with the previous
    # panel's tick labels.
    axes[0].set_ylabel(r"NC1 = tr($\Sigma_W \Sigma_B^{+}$) / K  (log scale)")
    _finish(fig, axes, "NC1 of penultimate features (no augmentation) at every evaluation point; "
            "mean ± std over seeds")
    _save(fig, outputs[:2])
    plt.close(fig)


def fig3(inputs: list[str], outputs: list[str], params: dict) -> None:
    """Figure 3: directional error ||θ/||θ|| − θ_svm/||θ_svm|||| between the
    LLR head (SGD lr 1e-3, 10x the standard epochs) and the linear SVM
    (LinearSVC, C = 1e5, no intercept, as the authors) on the held-out features, per epoch; log-log axes; mean +- std over seeds.
    Optional params {"standard_epochs": {dataset: int}} draws a dashed line."""
    plt = _plt()
    from matplotlib.ticker import FormatStrFormatter

    df = _epochs(_need(pd.read_csv(inputs[0]), {"dataset", "seed", "epoch", "directional_error"}, inputs[0]))
    std_ep = (params or {}).get("standard_epochs", {}) or {}
    datasets = dataset_order(df["dataset"])
    fig, axes = _panels(plt, len(datasets))
    for ax, ds in zip(axes, datasets):
        d = df[(df["dataset"] == ds) & (df["epoch"] > 0)]
        s = _mean_std(d, ["epoch"], "directional_error")
        _band(ax, s["epoch"], s["mean"], s["std"], "tab:blue", "LLR head vs SVM", log=True)
        if ds in std_ep:
            _std_line(ax, float(std_ep[ds]))
        if "separable" in d.columns:
            sep = d.groupby("seed")["separable"].first().astype(str).str.lower().isin(["true", "1", "1.0"])
            ax.text(0.03, 0.03, f"separable: {int(sep.sum())}/{len(sep)} seeds", transform=ax.transAxes,
                    fontsize=7, ha="left", va="bottom", color="0.3")
        ax.set_xscale("log")
        ax.set_yscale("log")
        fmt = FormatStrFormatter("%g")
        ax.yaxis.set_major_formatter(fmt)
        ax.yaxis.set_minor_formatter(fmt)
        ax.set_xlabel("LLR epoch (SGD, lr 1e-3)")
        ax.set_title(_title(ds))
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("directional error to the SVM")
    _finish(fig, axes, "LinearSVC (C = 1e5, no intercept) on the held-out embeddings; mean ± std over seeds")
    _save(fig, outputs[:2])
    plt.close(fig)


# --------------------------------------------------------------------------
# Figures 5, 6, 7
# --------------------------------------------------------------------------

def _fig5_cells(mode: str) -> tuple[str, tuple[str, str, str]]:
    """Figure 5's (ERM cell, (LLR ERM cell, method, held-out cell)) of a
    class-balancing mode."""
    if mode == "none":
        return "combined_none", ("train_none", "llr", "heldout")
    return f"combined_class_{mode}", (f"train_class_{mode}", f"cbllr_{mode}", "heldout")


def fig5_data(runs: pd.DataFrame) -> pd.DataFrame:
    """Figure 5 bars: per dataset and class-balancing mode, test WGA of ERM on
    100% of the data and of (CB-)LLR after the train/held-out split."""
    rows = []
    for ds in dataset_order(runs["dataset"]):
        for mode in ("none", *BALANCE_MODES):
            erm_cell, ll = _fig5_cells(mode)
            for series, v in (("ERM (100% of data)", _cell(runs, ds, erm_cell, "erm")),
                              ("(CB-)LLR (held-out)", _cell(runs, ds, *ll))):
                m, s, n = _stat(v)
                rows.append({"dataset": ds, "mode": mode, "series": series, "mean": m, "std": s, "n": n})
    return pd.DataFrame(rows)


def fig7_data(runs: pd.DataFrame) -> pd.DataFrame:
    """Figure 7 bars: per dataset and mode, class-balanced ERM on 100% of the
    data vs DFR (group-balanced held-out set), plus AFR if present."""
    rows = []
    for ds in dataset_order(runs["dataset"]):
        for mode in BALANCE_MODES:
            for series, v in (("class-balanced ERM (100% of data)", _cell(runs, ds, f"combined_class_{mode}", "erm")),
                              ("DFR (group-balanced held-out)",
                               _cell(runs, ds, f"train_class_{mode}", f"dfr_{mode}", "heldout"))):
                m, s, n = _stat(v)
                rows.append({"dataset": ds, "mode": mode, "series": series, "mean": m, "std": s, "n": n})
        afr = _cell(runs, ds, "train_none", "afr", "heldout")
        if afr.empty:
            afr = _cell(runs, ds, "train_none", "afr")
        m, s, n = _stat(afr)
        if n:
            rows.append({"dataset": ds, "mode": "AFR", "series": "AFR", "mean": m, "std": s, "n": n})
    return pd.DataFrame(rows)


def _bars(plt, data: pd.DataFrame, modes: list[str], series: list[str], colors: list[str], xlabel: str,
          outputs: list[str], note: str) -> None:
    """Grouped bars, one panel per dataset: one group per mode, one bar per
    series present there (centred), error bars = std over seeds."""
    if not (data["n"] > 0).any():
        raise LLRError(f"no run of the cells this figure needs ({', '.join(series)}); check the runs table")
    datasets = dataset_order(data.loc[data["n"] > 0, "dataset"])
    fig, axes = _panels(plt, len(datasets), width=4.0)
    width = 0.8 / len(series)
    labelled: dict[str, object] = {}
    for ax, ds in zip(axes, datasets):
        d = data[(data["dataset"] == ds) & (data["n"] > 0)]
        present = [m for m in modes if (d["mode"] == m).any()]
        for i, mode in enumerate(present):
            here = [(nm, c) for nm, c in zip(series, colors) if ((d["mode"] == mode) & (d["series"] == nm)).any()]
            for j, (name, color) in enumerate(here):
                e = d[(d["mode"] == mode) & (d["series"] == name)].iloc[0]
                bar = ax.bar(i + (j - (len(here) - 1) / 2) * width, 100 * e["mean"], width, yerr=100 * e["std"],
                             color=color, capsize=2, error_kw={"lw": 0.8})
                labelled.setdefault(name, bar)
        ax.set_xticks(np.arange(len(present)))
        ax.set_xticklabels([MODE_LABELS.get(m, m) for m in present], rotation=20, ha="right",
                           rotation_mode="anchor")
        ax.set_xlabel(xlabel)
        ax.set_title(_title(ds))
        ax.grid(alpha=0.3, axis="y")
        ax.set_axisbelow(True)
    axes[0].set_ylabel("test worst-group accuracy (%)")
    names = [n for n in series if n in labelled]
    fig.legend([labelled[n] for n in names], names, loc="lower center", bbox_to_anchor=(0.5, 1.0),
               ncol=len(names), frameon=False)
    _note(fig, note)
    _save(fig, outputs[:2])
    plt.close(fig)


def fig5(inputs: list[str], outputs: list[str], params: dict) -> None:
    """Figure 5: per class-balancing mode (none, subsetting, upsampling,
    upweighting) test WGA of ERM on 100% of the data (combined_*) and of LLR
    (mode none) or CB-LLR (cbllr_{mode} on train_class_{mode}) on the whole
    held-out set; error bars = std over seeds."""
    plt = _plt()
    data = fig5_data(_runs(inputs))
    series = ["ERM (100% of data)", "(CB-)LLR (held-out)"]
    _bars(plt, data, ["none", *BALANCE_MODES], series, ["0.55", "tab:orange"], "class balancing",
          outputs, "ERM on train + held-out vs (CB-)LLR after the train/held-out split; " + DEVIATION_NOTE)


FIG6_CELLS = [("combined_none", "no balancing", "0.45")] + [
    (f"combined_group_{m}", f"group {m}", c) for m, c in zip(BALANCE_MODES, ("tab:blue", "tab:green", "tab:purple"))]


def fig6(inputs: list[str], outputs: list[str], params: dict) -> None:
    """Figure 6: test WGA at every evaluation point (fractional epochs) of ERM
    with group balancing on 100% of the data
    (combined_group_{subsetting,upsampling,upweighting}), with combined_none
    as the reference when present; mean +- std over seeds."""
    plt = _plt()
    df = _epochs(_need(pd.read_csv(inputs[0]), {"dataset", "seed", "erm", "epoch", "test_wga"}, inputs[0]))
    datasets = dataset_order(df["dataset"])
    fig, axes = _panels(plt, len(datasets))
    for ax, ds in zip(axes, datasets):
        d = df[df["dataset"] == ds]
        for cell, label, color in FIG6_CELLS:
            c = d[d["erm"] == cell].dropna(subset=["test_wga"])
            if c.empty:
                continue
            s = _mean_std(c, ["epoch"], "test_wga")
            _band(ax, s["epoch"], 100 * s["mean"], 100 * s["std"], color, label,
                  ls="--" if cell == "combined_none" else "-")
        ax.set_xlabel("ERM epoch")
        ax.set_title(_title(ds))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test worst-group accuracy (%)")
    _finish(fig, axes, "ERM on train + held-out (100% of the data) with group balancing, test WGA at every "
            "evaluation point; mean ± std over seeds")
    _save(fig, outputs[:2])
    plt.close(fig)


def fig7(inputs: list[str], outputs: list[str], params: dict) -> None:
    """Figure 7: per mode (subsetting, upsampling, upweighting) test WGA of
    class-balanced ERM on 100% of the data vs DFR (dfr_{mode} on the whole
    held-out set after train_class_{mode}); AFR (after train_none) as its own
    bar when present; error bars = std over seeds."""
    plt = _plt()
    data = fig7_data(_runs(inputs))
    series = ["class-balanced ERM (100% of data)", "DFR (group-balanced held-out)", "AFR"]
    _bars(plt, data, [*BALANCE_MODES, "AFR"], series, ["0.55", "tab:red", "tab:cyan"],
          "balancing mode", outputs,
          "Mode = class balancing of ERM (trained on train + held-out) and group balancing of the held-out "
          "set for DFR (LLR after class-balanced ERM on the train split); AFR after unbalanced ERM. "
          + DEVIATION_NOTE)


# --------------------------------------------------------------------------
# Table 1
# --------------------------------------------------------------------------

# The paper's Table 1 (Appendix A): Pearson r per group, minimum and average margin.
PAPER_TABLE1: dict[str, dict[str, tuple[float, ...]]] = {
    "waterbirds": {"minimum": (0.349, 0.380, -0.026, 0.282), "average": (-0.418, 0.585, 0.662, -0.185)},
    "celeba": {"minimum": (0.245, 0.326, 0.385, 0.370), "average": (0.469, 0.290, 0.475, 0.495)},
    "civilcomments": {"minimum": (0.214, 0.237, 0.227, 0.113), "average": (0.209, 0.271, 0.298, 0.247)},
    "multinli": {"minimum": (0.574, 0.266, 0.027, 0.726, 0.492, 0.591),
                 "average": (0.865, 0.926, 0.858, 0.910, 0.823, 0.897)},
}
MARGIN_KINDS = {"min": "minimum", "avg": "average"}
TABLE1_COLUMNS = ["dataset", "margin", "group", "r", "p", "n_points", "paper_r"]
TABLE1_WHAT = ("Each cell is Pearson's r, over seeds x LLR checkpoints, between one group's margin of the LLR "
               "head on the held-out set it was trained on (minimum: over the group's correctly classified "
               "held-out examples; average: over all its held-out examples) and the same head's test accuracy "
               "on that group. Margin of a head f(x) = W x + b: (f_y(x) - max_{k!=y} f_k(x)) / "
               "(sqrt(2) ||W - mean_k W_k||_F), which is y f(x) / ||theta|| for two classes.")


def _paper_r(ds: str, margin: str, group: int) -> float:
    vals = PAPER_TABLE1.get(real_name(ds), {}).get(margin, ())
    return float(vals[group]) if 0 <= group < len(vals) else float("nan")


def table1_data(margins: pd.DataFrame) -> pd.DataFrame:
    """Table 1 tidy (paper Appendix A): per dataset, margin kind (minimum /
    average) and group, r and p over seeds x LLR checkpoints
    (llr.analysis.nc1.margin_correlation by dataset and group), n_points and the
    paper's r (a stand-in gets its counterpart's)."""
    from llr.analysis.nc1 import margin_correlation

    corr = margin_correlation(margins, by=["dataset", "group"])
    out = corr.assign(margin=corr["kind"].map(MARGIN_KINDS), p=corr["p_value"], group=corr["group"].astype(int))
    out["paper_r"] = [_paper_r(d, m, g) for d, m, g in zip(out["dataset"], out["margin"], out["group"])]
    order = {ds: i for i, ds in enumerate(dataset_order(out["dataset"]))}
    out = out.assign(_o=out["dataset"].map(order), _k=out["margin"].map({"minimum": 0, "average": 1}))
    return out.sort_values(["_o", "_k", "group"])[TABLE1_COLUMNS].reset_index(drop=True)


def table1_pooled(margins: pd.DataFrame) -> pd.DataFrame:
    """The r pooled over groups x seeds x checkpoints, per dataset and kind."""
    from llr.analysis.nc1 import margin_correlation

    corr = margin_correlation(margins, by=["dataset"])
    return corr.assign(margin=corr["kind"].map(MARGIN_KINDS))


def _r(v: float) -> str:
    return f"{v:.3f}" if np.isfinite(v) else "n.a."


def table1_markdown(t1: pd.DataFrame, pooled: pd.DataFrame | None = None) -> str:
    """Table 1 in the paper's layout: one small table per dataset, rows
    minimum / average margin, columns groups, each cell our r and the
    paper's r in parentheses; the pooled r as an extra column when given."""
    parts = []
    for ds in dataset_order(t1["dataset"]):
        d = t1[t1["dataset"] == ds]
        groups = sorted(d["group"].unique())
        has_paper = d["paper_r"].notna().any()
        head = ["margin", *(f"group {g}" for g in groups)] + (["pooled over groups"] if pooled is not None else [])
        lines = [f"### {_title(ds)}" + (f" (paper: {_title(real_name(ds))})" if is_stand_in(ds) and has_paper else ""),
                 "", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        for margin in ("minimum", "average"):
            m = d[d["margin"] == margin].set_index("group")
            cells = []
            for g in groups:
                ours, paper = m.loc[g, "r"], m.loc[g, "paper_r"]
                cells.append(_r(ours) + (f" ({paper:.3f})" if np.isfinite(paper) else ""))
            if pooled is not None:
                p = pooled[(pooled["dataset"] == ds) & (pooled["margin"] == margin)]
                cells.append(_r(float(p["r"].iloc[0])) if len(p) else "n.a.")
            lines.append(f"| {margin} margin | " + " | ".join(cells) + " |")
        n = d["n_points"]
        lines += ["", f"Points per cell: {int(n.min())}" + (f" to {int(n.max())}" if n.max() != n.min() else "")
                  + " (seeds x LLR checkpoints)."]
        parts.append("\n".join(lines))
    return ("\n\n".join(parts) + "\n\nCells: our Pearson r (the paper's r in parentheses). " + TABLE1_WHAT
            + "\n\nCheckpoints are LLR epochs (SGD lr 1e-2, batch 32). " + DEVIATION_NOTE + "\n")


def table1(inputs: list[str], outputs: list[str], params: dict) -> None:
    """Table 1 per group, as the paper lays it out (Appendix A):
    inputs = [table1_margins.csv] (llr.analysis.nc1.margin_records rows stacked
    with dataset and seed), outputs = [table1.csv (TABLE1_COLUMNS), table1.md]."""
    df = _need(pd.read_csv(inputs[0]), {"dataset", "seed", "epoch", "group", "min_margin", "avg_margin",
                                        "test_acc"}, inputs[0])
    t1 = table1_data(df)
    write_csv(outputs[0], t1)
    with atomic_path(outputs[1]) as tmp:
        tmp.write_text(table1_markdown(t1, table1_pooled(df)))


def table1_jackknife(margins: pd.DataFrame) -> list[pd.DataFrame]:
    """table1_data with each seed left out in turn (for the seed spread of a
    statistic of Table 1: the jackknife over seeds)."""
    seeds = sorted(margins["seed"].unique())
    if len(seeds) < 2:
        return []
    return [table1_data(margins[margins["seed"] != s]) for s in seeds]


# --------------------------------------------------------------------------
# Comparison with the paper's claims
# --------------------------------------------------------------------------
# Every checker is a pure function of DataFrames returning rows with
# COMPARISON_COLUMNS. ``holds`` is yes / no / inconclusive: the value is
# compared with the threshold of the rule, and where the seed spread (mean
# +- std over seeds, or a jackknife over seeds for a statistic pooling
# seeds) covers both sides of the threshold, the claim is inconclusive.

COMPARISON_COLUMNS = ["section", "claim", "dataset", "variant", "paper_value", "ours", "holds", "rule", "note"]
TOL_WGA = 0.05            # "about the same" test WGA: within 5 points
NC1_ORDER = 10.0          # "an order of magnitude larger"
NC1_COMPARABLE = 3.0      # "comparable": within a factor of 3
NC1_DECREASE = 2.0        # a "significant decrease" / collapse still in progress: a factor of 2
SVM_FAR = 0.1             # directional error "far from 0" (it lies in [0, 2])
R_PAPER = 0.99            # Figure 4: r > 0.99 on CelebA and CivilComments
R_CLOSE = 0.9             # Figure 4: "close to 1" on the other datasets
FRACTION = 0.75           # share of (ratio, ratio) pairs needed for a "trend"
MIN_MARGIN_UNCORRELATED = 0.5   # Table 1: mean |r| of the minimum margin below this
COLLAPSE_DROP = 0.10      # Figure 6: "catastrophic collapse", a drop of at least 10 points of WGA
MILD_DROP = 0.02          # Figure 6: "mild decrease", a drop between 2 and 10 points
SPREAD_RULE = "inconclusive when the seed spread covers both outcomes"


def _num(v: float) -> float:
    return float(v) if v is not None and np.isfinite(v) else float("nan")


def _above(v: float, s: float, thr: float) -> str:
    """yes if v - s > thr, no if v + s < thr, else inconclusive (s: the seed
    spread; NaN counts as 0, a NaN value as inconclusive)."""
    v, s = _num(v), _num(s)
    s = 0.0 if not np.isfinite(s) else s
    if not np.isfinite(v):
        return "inconclusive"
    return "yes" if v - s > thr else "no" if v + s < thr else "inconclusive"


def _below(v: float, s: float, thr: float) -> str:
    return _above(-_num(v), s, -thr)


def _within(v: float, s: float, tol: float) -> str:
    """yes if |v| + s <= tol, no if |v| - s > tol, else inconclusive."""
    v, s = _num(v), _num(s)
    s = 0.0 if not np.isfinite(s) else s
    if not np.isfinite(v):
        return "inconclusive"
    return "yes" if abs(v) + s <= tol else "no" if abs(v) - s > tol else "inconclusive"


def _fraction(k_yes: int, k_open: int, n: int, thr: float) -> str:
    """yes if at least ``thr`` of n cases hold; no if fewer would hold even
    with every undecided case counted; else inconclusive."""
    if n == 0:
        return "inconclusive"
    return "yes" if k_yes / n >= thr else "no" if (k_yes + k_open) / n < thr else "inconclusive"


def _all(decisions: list[str]) -> str:
    """yes if every decision is yes, no if any is no, else inconclusive."""
    if not decisions:
        return "inconclusive"
    return "no" if "no" in decisions else "yes" if set(decisions) == {"yes"} else "inconclusive"


def _pm(m: float, s: float, n: int, fmt: str = "{:.3f}") -> str:
    """'0.930 ± 0.040 (3 seeds)'."""
    if not np.isfinite(m):
        return "n.a."
    spread = f" ± {fmt.replace('+', '').format(s)}" if np.isfinite(s) and n > 1 else ""
    return f"{fmt.format(m)}{spread} ({n} seed{'s' if n != 1 else ''})"


def _row(section: str, claim: str, ds: str, holds: str, ours: str, rule: str, paper_value: str = "",
         variant: str = "", note: str = "") -> dict:
    note = "; ".join(x for x in (_stand_in_note(ds), note) if x)
    return {"section": section, "claim": claim, "dataset": ds, "variant": variant, "paper_value": paper_value,
            "ours": ours, "holds": holds, "rule": rule, "note": note}


def _paired(a: pd.Series, b: pd.Series) -> pd.Series:
    """a - b over the seeds both have."""
    return (a - b).dropna()


# ---------------------------------------------------------------- Table 2

def claims_table2(t2: pd.DataFrame) -> list[dict]:
    """Table 2: our group counts per split equal the paper's (datasets the
    paper's Table 2 covers; synthetic counts are set by the config)."""
    from llr.reporting.tidy import compare_table2

    rows = []
    cmp = compare_table2(t2)
    order = {ds: i for i, ds in enumerate(dataset_order(cmp["dataset"]))} if len(cmp) else {}
    cmp = cmp.assign(_o=cmp["dataset"].map(order)) if len(cmp) else cmp
    for (_, ds, sp), c in (cmp.groupby(["_o", "dataset", "split"], sort=True) if len(cmp) else []):
        c = c.sort_values("g")
        bad = c[~c["match"]]
        note = "; ".join(f"g{r.g}: paper {r.paper}, ours {r.ours}" for r in bad.itertuples())
        if ds == "waterbirds" and sp == "test" and len(bad):
            note += " (the paper prints 2225 for the landbird groups; the metadata has 2255, CUB test = 5794)"
        rows.append(_row("Table 2", f"group counts of the {sp} split (g = y*|S| + s)", ds,
                         "yes" if bad.empty else "no", " / ".join(str(v) for v in c["ours"]),
                         "yes if every group count equals the paper's, else no",
                         " / ".join(str(v) for v in c["paper"]), variant=sp, note=note))
    return rows


# ---------------------------------------------------------------- Figure 2

FIG2_COLLAPSE = ("waterbirds", "multinli")
FIG2_NO_COLLAPSE = ("celeba", "civilcomments")


def _longest_cell(d: pd.DataFrame) -> str:
    """The ERM cell of a dataset with the most epochs (Figure 2's longer run)."""
    last = d.groupby("erm")["epoch"].max()
    return str(max(last.index, key=lambda c: (last[c], c.endswith("_long"))))


def _nc1_per_seed(c: pd.DataFrame, standard: float | None) -> pd.DataFrame:
    """Per seed of one ERM cell: last evaluation point; train NC1 at the end
    (the trace's last point), at the last point <= the standard epoch count
    and at the first point >= epoch 1; the end-of-training train and held-out
    NC1 from metrics.json (train falls back to the trace)."""
    out = pd.DataFrame(index=pd.Index(sorted(c["seed"].unique()), name="seed"))
    out["last_epoch"] = c.groupby("seed")["epoch"].max()
    nan = pd.Series(np.nan, index=out.index)
    tr = c.dropna(subset=["train_nc1"]) if "train_nc1" in c.columns else c.iloc[0:0]

    def at(sub: pd.DataFrame, last: bool) -> pd.Series:
        if sub.empty:
            return nan
        idx = sub.groupby("seed")["epoch"].idxmax() if last else sub.groupby("seed")["epoch"].idxmin()
        return sub.loc[idx.to_numpy()].set_index("seed")["train_nc1"].reindex(out.index)

    out["trace_end"] = at(tr, True)
    out["at_standard"] = at(tr[tr["epoch"] <= standard + 1e-9], True) if standard else nan
    out["at_epoch1"] = at(tr[tr["epoch"] >= 1 - 1e-9], False)
    for col in ("train_nc1_final", "heldout_nc1_final"):
        out[col] = (c.dropna(subset=[col]).groupby("seed")[col].last().reindex(out.index)
                    if col in c.columns else nan)
    out["train_end"] = out["train_nc1_final"].fillna(out["trace_end"])
    return out


def claims_fig2(epochs: pd.DataFrame, standard_epochs: dict | None = None) -> list[dict]:
    """Figure 2 / Section 2.1. Waterbirds and MultiNLI: held-out NC1 at the
    end of training is at least 10x the training NC1, and collapse is not
    complete by the standard epoch count; CelebA and CivilComments: training
    NC1 does not decrease significantly after epoch 1, and held-out and
    training NC1 stay comparable even at the longer runs. ``epochs``: stacked
    ERM logs (fig2_epochs.csv); ``standard_epochs``: {dataset: n}."""
    std_ep = standard_epochs or {}
    epochs = _epochs(epochs)
    rows = []
    for ds in dataset_order(epochs["dataset"]):
        real = real_name(ds)
        if real not in FIG2_COLLAPSE + FIG2_NO_COLLAPSE:
            continue
        d = epochs[epochs["dataset"] == ds]
        cell = _longest_cell(d)
        standard = float(std_ep[ds]) if ds in std_ep else None
        t = _nc1_per_seed(d[d["erm"] == cell], standard)
        end = float(t["last_epoch"].max())
        length = f"ERM cell {cell}, last evaluation at epoch {end:g}" + (
            f" ({end / standard:.1f}x the standard {standard:g})" if standard else "")
        ratio = (t["heldout_nc1_final"] / t["train_end"]).dropna()
        m, s, n = _stat(ratio)
        ho = (f"held-out / train NC1 at the end = {_pm(m, s, n, '{:.3g}')}; held-out "
              f"{_stat(t['heldout_nc1_final'])[0]:.3g}, train {_stat(t['train_end'])[0]:.3g}" if n
              else "n.a. (no end-of-training NC1 of both sets)")
        if real in FIG2_COLLAPSE:
            rows.append(_row(
                "Fig. 2", "held-out NC1 at the end of training is at least 10x the training NC1", ds,
                _above(m, s, NC1_ORDER), ho,
                f"per seed, held-out NC1 / train NC1 at the end of the longest ERM run; yes if mean - std > "
                f"{NC1_ORDER:g}, no if mean + std < {NC1_ORDER:g}; {SPREAD_RULE}",
                "≥ 10x (an order of magnitude)", note=length))
            r = (t["at_standard"] / t["trace_end"]).dropna()
            m2, s2, n2 = _stat(r)
            if standard is None:
                holds, ours = "inconclusive", "n.a.: standard epoch count not given (params standard_epochs)"
            elif not n2 or end <= standard:
                holds, ours = "inconclusive", "n.a.: no per-epoch train NC1 after the standard epoch count"
            else:
                holds = _above(m2, s2, NC1_DECREASE)
                ours = f"train NC1 at epoch {standard:g} / at epoch {end:g} = {_pm(m2, s2, n2, '{:.3g}')}"
            rows.append(_row(
                "Fig. 2", "collapse is not complete by the standard epoch count (train NC1 keeps falling)", ds,
                holds, ours,
                f"not complete = train NC1 still falls by at least {NC1_DECREASE:g}x after the standard epoch "
                f"count: per seed NC1(last point <= standard epochs) / NC1(end of the longer run); yes if mean - "
                f"std > {NC1_DECREASE:g}, no if mean + std < {NC1_DECREASE:g}; {SPREAD_RULE}", note=length))
        else:
            r = (t["at_epoch1"] / t["trace_end"]).dropna()
            m1, s1, n1 = _stat(r)
            rows.append(_row(
                "Fig. 2", "training NC1 does not decrease significantly after epoch 1", ds,
                _below(m1, s1, NC1_DECREASE) if n1 else "inconclusive",
                f"train NC1 at epoch 1 / at the end = {_pm(m1, s1, n1, '{:.3g}')}" if n1
                else "n.a.: no per-epoch train NC1 from epoch 1",
                f"significant decrease = NC1 falls by at least {NC1_DECREASE:g}x from epoch 1 to the end of the "
                f"longer run: yes if mean + std of NC1(epoch 1) / NC1(end) < {NC1_DECREASE:g}, no if mean - std > "
                f"{NC1_DECREASE:g}; {SPREAD_RULE}", note=length))
            longer = standard is not None and end > standard
            rows.append(_row(
                "Fig. 2", "held-out and training NC1 stay comparable even at the longer runs", ds,
                _below(m, s, NC1_COMPARABLE), ho,
                f"comparable = held-out NC1 / train NC1 at the end of the longest run below {NC1_COMPARABLE:g}: "
                f"yes if mean + std < {NC1_COMPARABLE:g}, no if mean - std > {NC1_COMPARABLE:g}; {SPREAD_RULE}",
                note=length + ("" if longer else "; the run is not longer than the standard epoch count")))
    return rows


# ---------------------------------------------------------------- Figure 3

def _truthy(v: pd.Series) -> pd.Series:
    return v.astype(str).str.strip().str.lower().isin(["true", "1", "1.0", "yes"])


def claims_fig3(svm: pd.DataFrame, standard_epochs: dict | None = None) -> list[dict]:
    """Figure 3 / Section 2.2: after 10x the standard LLR steps, the
    directional error to the SVM is still far from 0 (> SVM_FAR), with
    whether the held-out features were separable. ``svm``: fig3_svm.csv."""
    std_ep = standard_epochs or {}
    svm = _epochs(svm)
    rows = []
    for ds in dataset_order(svm["dataset"]):
        d = svm[svm["dataset"] == ds].dropna(subset=["directional_error"])
        if d.empty:
            continue
        last = d.loc[d.groupby("seed")["epoch"].idxmax()]
        m, s, n = _stat(last["directional_error"])
        end = float(last["epoch"].min())
        notes = []
        if "separable" in d.columns:
            sep = _truthy(d.groupby("seed")["separable"].first())
            sep_text = f"; held-out features separable in {int(sep.sum())}/{len(sep)} seeds"
            if not sep.all():
                notes.append("non-separable features: gradient descent's direction tends to the SVM only on the "
                             "separable part (Ji & Telgarsky), so a large error is expected there")
        else:
            sep_text = "; separability not recorded"
        if ds in std_ep:
            k = end / float(std_ep[ds])
            notes.insert(0, f"last epoch {end:g} = {k:.1f}x the standard {float(std_ep[ds]):g} epochs")
            if k < 10 - 1e-9:
                notes.append("shorter than the paper's 10x the standard steps")
        if real_name(ds) == "multinli":
            notes.append("the paper's Figure 3 has no MultiNLI panel")
        rows.append(_row(
            "Fig. 3", "after 10x the standard LLR steps the directional error to the SVM is still far from 0", ds,
            _above(m, s, SVM_FAR), f"directional error at epoch {end:g} = {_pm(m, s, n)}{sep_text}",
            f"far from 0 = final directional error ||θ/||θ|| - θ_svm/||θ_svm|||| above {SVM_FAR:g} (it lies in "
            f"[0, 2]): yes if mean - std > {SVM_FAR:g}, no if mean + std < {SVM_FAR:g}; {SPREAD_RULE}",
            note="; ".join(notes)))
    return rows


# ---------------------------------------------------------------- Table 1

def _t1_stats(t1: pd.DataFrame, ds: str) -> tuple[float, float]:
    """(mean over groups of |r| of the minimum margin, mean |r| average -
    mean |r| minimum) of one dataset."""
    d = t1[t1["dataset"] == ds]
    mn = d.loc[d["margin"] == "minimum", "r"].abs().mean()
    av = d.loc[d["margin"] == "average", "r"].abs().mean()
    return float(mn), float(av - mn)


def _jackknife_se(values: list[float]) -> float:
    v = np.asarray([x for x in values if np.isfinite(x)], float)
    if v.size < 2:
        return float("nan")
    return float(np.sqrt((v.size - 1) / v.size * np.sum((v - v.mean()) ** 2)))


def claims_table1(t1: pd.DataFrame, loo: list[pd.DataFrame] | None = None) -> list[dict]:
    """Table 1 / Section 2.2: per group, the minimum margin is (largely)
    uncorrelated with the group's test accuracy (mean |r| over groups below
    MIN_MARGIN_UNCORRELATED), and the average margin is more correlated than
    the minimum margin (mean |r| larger). ``t1``: table1_data output;
    ``loo``: table1_data with each seed left out (seed spread = jackknife
    standard error); without it the point values decide."""
    rows = []
    for ds in dataset_order(t1["dataset"]):
        d = t1[t1["dataset"] == ds]
        mn, diff = _t1_stats(t1, ds)
        jk = [_t1_stats(x, ds) for x in (loo or [])]
        s_mn = _jackknife_se([x[0] for x in jk])
        s_diff = _jackknife_se([x[1] for x in jk])
        n_seeds = len(loo or [])
        spread = f"± jackknife SE over {n_seeds} seeds" if n_seeds else "no seed spread available"

        def per_group(margin: str, col: str = "r") -> str:
            return " ".join(_r(v) for v in d.loc[d["margin"] == margin].sort_values("group")[col])

        paper = PAPER_TABLE1.get(real_name(ds))
        if paper:
            p_mn = float(np.mean(np.abs(paper["minimum"])))
            p_diff = float(np.mean(np.abs(paper["average"]))) - p_mn
        pm = (lambda v, s: f"{v:.3f}" + (f" ± {s:.3f}" if np.isfinite(s) else ""))
        rows.append(_row(
            "Table 1", "the minimum margin of a group is (largely) uncorrelated with its test accuracy", ds,
            _below(mn, s_mn, MIN_MARGIN_UNCORRELATED),
            f"mean |r| over groups = {pm(mn, s_mn)} ({spread}); r per group: {per_group('minimum')}",
            f"Pearson r per group over seeds x LLR checkpoints; largely uncorrelated = mean |r| over groups below "
            f"{MIN_MARGIN_UNCORRELATED:g}: yes if mean |r| + SE < {MIN_MARGIN_UNCORRELATED:g}, no if mean |r| - SE "
            f"> {MIN_MARGIN_UNCORRELATED:g}; {SPREAD_RULE} (SE: leave-one-seed-out jackknife)",
            f"mean |r| = {p_mn:.3f}; r per group: {' '.join(f'{v:.3f}' for v in paper['minimum'])}" if paper else ""))
        rows.append(_row(
            "Table 1", "the average margin is more correlated with group test accuracy than the minimum margin", ds,
            _above(diff, s_diff, 0.0),
            f"mean |r| average - mean |r| minimum = {pm(diff, s_diff)} ({spread}); average-margin r per group: "
            f"{per_group('average')}",
            f"more correlated = mean |r| over groups of the average margin exceeds that of the minimum margin: yes "
            f"if the difference - SE > 0, no if difference + SE < 0; {SPREAD_RULE} (SE: leave-one-seed-out "
            f"jackknife)",
            f"difference = {p_diff:+.3f}; average-margin r per group: "
            f"{' '.join(f'{v:.3f}' for v in paper['average'])}" if paper else ""))
    return rows


# ---------------------------------------------------------------- Figure 4

def _seed_ratio(runs: pd.DataFrame, ds: str, prefix: str) -> pd.DataFrame:
    """Seed x group-ratio test WGA of ERM cells {prefix}{r}_none of a dataset."""
    e = _ratio_table(runs[runs["dataset"] == ds], prefix)
    return e.pivot_table(index="seed", columns="x", values="wga", aggfunc="mean")


def claims_fig4(runs: pd.DataFrame) -> list[dict]:
    """Figure 4 / Section 3.1, per dataset and held-out construction:
    (a) the Pearson r between ERM (with the held-out data added) and LLR test
    WGA, group ratios fixed (fig4_pearson), is close to 1 (> R_CLOSE), and
    > 0.99 on CelebA and CivilComments, for every ERM ratio; (b) LLR improves
    over ERM only when the held-out group ratio is higher than the training
    ratio, and vice versa; (c) LLR on a held-out set of ratio r has about the
    WGA of ERM trained at ratio r. ``runs``: fig4_runs.csv (or its run_wga)."""
    runs = run_wga(runs) if "role" in runs.columns else runs
    pear = fig4_pearson(runs)
    llr = runs[runs["method"] == "llr"]
    kinds = llr["heldout"].map(_heldout_kind)
    llr = llr.assign(construction=kinds.str[0], h=kinds.str[1], e=llr["erm"].map(_ratio_of))
    llr = llr.dropna(subset=["construction", "e"])
    rows = []
    for ds in dataset_order(llr["dataset"]):
        comb = _seed_ratio(runs, ds, "combined_ratio")
        ref_label = "ERM with the held-out data added (combined_ratio{r}_none)"
        if comb.empty:
            comb = _seed_ratio(runs, ds, "train_ratio")
            ref_label = "ERM on the training pool only (train_ratio{r}_none)"
        for con in (c for c in CONSTRUCTIONS if ((llr["dataset"] == ds) & (llr["construction"] == c)).any()):
            variant = CONSTRUCTION_LABELS[con]
            # (a) Pearson r per ERM ratio.
            p = pear[(pear["dataset"] == ds) & (pear["construction"] == con)]
            strict = real_name(ds) in ("celeba", "civilcomments")
            thr = R_PAPER if strict else R_CLOSE
            dec = [_above(r, s, thr) for r, s in zip(p["pearson_r"], p["pearson_r_seed_std"])]
            fin = p.dropna(subset=["pearson_r"])
            if len(fin):
                w = fin.loc[fin["pearson_r"].idxmin()]
                ours = (f"min r = {w.pearson_r:.3f}" + (f" ± {w.pearson_r_seed_std:.3f}"
                                                         if np.isfinite(w.pearson_r_seed_std) else "")
                        + f" (ERM ratio {w.erm_ratio:g}); r per ERM ratio: "
                        + " ".join(f"{e:g}: {_r(r)}" for e, r in zip(p["erm_ratio"], p["pearson_r"]))
                        + f"; {int(p['n_seeds'].max())} seeds; r vs train-only ERM: "
                        + " ".join(_r(r) for r in p["pearson_r_train_erm"]))
            else:
                ours = "n.a. (fewer than 3 group ratios or a constant series)"
            rows.append(_row(
                "Fig. 4", "(a) Pearson r between ERM and LLR test WGA, group ratios fixed, "
                + ("exceeds 0.99" if strict else "is close to 1"), ds,
                _all(dec) if len(fin) else "inconclusive", ours,
                f"for each ERM training ratio, r over the group ratios r of (WGA of {ref_label} at r, WGA of LLR on "
                f"the held-out set of ratio r), each point a mean over seeds; spread = std over seeds of the r of "
                f"each seed alone; an ERM ratio passes if r - std > {thr:g} and fails if r + std < {thr:g}; yes if "
                f"every ERM ratio passes, no if any fails, inconclusive otherwise",
                "r > 0.99" if strict else "", variant))
            # (b) and (c): every (ERM ratio e, held-out ratio h) pair.
            l = llr[(llr["dataset"] == ds) & (llr["construction"] == con)]
            b_yes = b_open = b_n = c_yes = c_open = c_n = 0
            worst_c = []
            for (e, h), cell in l.groupby(["e", "h"]):
                L = cell.groupby("seed")["wga"].mean()
                if e != h and e in comb.columns:
                    d = _paired(L, comb[e])
                    m, s, n = _stat(d)
                    if n:
                        b_n += 1
                        sign = np.sign(h - e)
                        if abs(m) > s and np.sign(m) == sign:
                            b_yes += 1
                        elif not (abs(m) > s):
                            b_open += 1
                if h in comb.columns:
                    d = _paired(L, comb[h])
                    m, s, n = _stat(d)
                    if n:
                        c_n += 1
                        dec_c = _within(m, s, TOL_WGA)
                        c_yes += dec_c == "yes"
                        c_open += dec_c == "inconclusive"
                        worst_c.append((abs(m), e, h, m))
            if b_n:
                rows.append(_row(
                    "Fig. 4", "(b) LLR improves over ERM only when the held-out group ratio is higher than the "
                    "training group ratio, and vice versa", ds, _fraction(b_yes, b_open, b_n, FRACTION),
                    f"{b_yes}/{b_n} pairs ({b_yes / b_n:.0%}) match the sign beyond noise, {b_open} within noise, "
                    f"{b_n - b_yes - b_open} opposite",
                    f"pairs (ERM training ratio e, held-out ratio h), e != h; d = LLR WGA - WGA of {ref_label} at e, "
                    f"per seed; noise = std over seeds of d; a pair matches if |mean d| > noise and sign(d) = "
                    f"sign(h - e); yes if at least {FRACTION:.0%} of pairs match, no if fewer would match even with "
                    f"every within-noise pair counted, inconclusive otherwise", "", variant))
            if c_n:
                worst = max(worst_c)
                rows.append(_row(
                    "Fig. 4", "(c) LLR on a held-out set of group ratio r has about the test WGA of ERM trained at "
                    "ratio r", ds, _fraction(c_yes, c_open, c_n, FRACTION),
                    f"{c_yes}/{c_n} pairs ({c_yes / c_n:.0%}) within {TOL_WGA:g}, {c_open} undecided; largest gap "
                    f"{worst[3]:+.3f} (ERM ratio {worst[1]:g}, held-out ratio {worst[2]:g})",
                    f"every pair (ERM training ratio e, held-out ratio r); d = LLR WGA - WGA of {ref_label} at r, per "
                    f"seed; a pair is 'about the same' if |mean d| + std <= {TOL_WGA:g}, not if |mean d| - std > "
                    f"{TOL_WGA:g}; yes if at least {FRACTION:.0%} of pairs are about the same, no if fewer would be "
                    f"even with every undecided pair counted, inconclusive otherwise", "", variant))
    return rows


# ---------------------------------------------------------------- Figure 5

def _best_vs_best(base: dict, other: dict) -> tuple[str, str, tuple[float, float, int]]:
    """Best mode of each side (highest mean over seeds) and the seed-paired
    statistic of other[best] - base[best] (Figures 5 and 7: best against best)."""
    bb = max(base, key=lambda k: base[k].mean())
    bo = max(other, key=lambda k: other[k].mean())
    return bb, bo, _stat(_paired(other[bo], base[bb]))


def claims_fig5(runs: pd.DataFrame) -> list[dict]:
    """Figure 5 / Section 3.2: the best class-balanced ERM (best of none /
    subsetting / upsampling / upweighting, on 100% of the data) reaches about
    the same WGA as the best class-balanced LLR (llr after train_none,
    cbllr_<m> after train_class_<m>); and LLR recovers the optimally
    class-balanced WGA even after a suboptimally balanced ERM."""
    runs = run_wga(runs) if "role" in runs.columns else runs
    rows = []
    for ds in dataset_order(runs["dataset"]):
        erm = {m: _seeds(runs, ds, _fig5_cells(m)[0], "erm") for m in ("none", *BALANCE_MODES)}
        llr = {m: _seeds(runs, ds, *_fig5_cells(m)[1]) for m in ("none", *BALANCE_MODES)}
        erm = {m: v for m, v in erm.items() if len(v)}
        llr = {m: v for m, v in llr.items() if len(v)}
        if not erm or not llr:
            continue
        be, bl, (m, s, n) = _best_vs_best(erm, llr)
        rows.append(_row(
            "Fig. 5", "the best class-balanced ERM reaches about the same test WGA as the best class-balanced LLR",
            ds, _within(m, s, TOL_WGA),
            f"best ERM ({be}) {_pm(*_stat(erm[be]))}, best (CB-)LLR ({bl}) {_pm(*_stat(llr[bl]))}; LLR - ERM = "
            f"{_pm(m, s, n, '{:+.3f}')}",
            f"best = highest mean test WGA over the modes present ({', '.join(erm)} for ERM on 100% of the data; "
            f"{', '.join(llr)} for (CB-)LLR); d = best LLR - best ERM per seed; yes if |mean d| + std <= "
            f"{TOL_WGA:g}, no if |mean d| - std > {TOL_WGA:g}; {SPREAD_RULE}",
            note="MultiNLI is class-balanced a priori" if real_name(ds) == "multinli" else ""))
        best = erm[be].mean()
        sub = [k for k in erm if k in llr and erm[k].mean() < best - TOL_WGA]
        decisions, parts = [], []
        for k in sub:
            g = _paired(llr[k], erm[be])
            gm, gs, gn = _stat(g)
            dec = _above(gm, gs, -TOL_WGA)
            decisions.append(dec)
            parts.append(f"{k}: ERM {erm[k].mean():.3f} -> LLR {llr[k].mean():.3f} (LLR - best ERM "
                         f"{_pm(gm, gs, gn, '{:+.3f}')}: {dec})")
        if not sub:
            holds, ours = "inconclusive", f"no ERM mode more than {TOL_WGA:g} below the best ({be}); nothing to recover"
        else:
            holds = "yes" if "yes" in decisions else "no" if set(decisions) == {"no"} else "inconclusive"
            ours = "; ".join(parts)
        rows.append(_row(
            "Fig. 5", "LLR recovers the optimally class-balanced WGA even after a suboptimally balanced ERM", ds,
            holds, ours,
            f"suboptimal ERM modes: mean WGA more than {TOL_WGA:g} below the best ERM; for each, d = (CB-)LLR after "
            f"that ERM - best ERM, per seed; recovered if mean d - std > -{TOL_WGA:g}, not if mean d + std < "
            f"-{TOL_WGA:g}; yes if some suboptimal mode is recovered (the paper: LLR 'can' recover), no if none is, "
            f"inconclusive otherwise"))
    return rows


# ---------------------------------------------------------------- Figure 6

FIG6_EXPECT: dict[str, dict[str, str]] = {
    "waterbirds": {"upweighting": "mild"},
    "celeba": {"upsampling": "collapse", "upweighting": "collapse"},
    "civilcomments": {"upsampling": "collapse", "upweighting": "collapse"},
    "multinli": {"upweighting": "collapse"},
}


def _drop(c: pd.DataFrame) -> tuple[pd.Series, float, float]:
    """Per seed: test WGA at the best evaluation point of the mean curve
    minus at the last point; and those two epochs."""
    t = c.pivot_table(index="seed", columns="epoch", values="test_wga", aggfunc="mean")
    mean = t.mean(axis=0)
    best, last = float(mean.idxmax()), float(t.columns.max())
    return (t[best] - t[last]).dropna(), best, last


def claims_fig6(epochs: pd.DataFrame) -> list[dict]:
    """Figure 6 / Appendix A: group-balanced upsampling and upweighting
    (combined_group_{upsampling,upweighting}) show a collapse of test WGA
    during training on CelebA and CivilComments, upweighting also on
    MultiNLI, a mild decrease on Waterbirds. ``epochs``: fig6_epochs.csv."""
    epochs = _epochs(epochs).dropna(subset=["test_wga"])
    rows = []
    for ds in dataset_order(epochs["dataset"]):
        for mode, kind in FIG6_EXPECT.get(real_name(ds), {}).items():
            c = epochs[(epochs["dataset"] == ds) & (epochs["erm"] == f"combined_group_{mode}")]
            if c.empty:
                continue
            d, best, last = _drop(c)
            m, s, n = _stat(d)
            ours = f"drop from epoch {best:g} (best) to epoch {last:g} (final) = {_pm(m, s, n)}"
            if kind == "collapse":
                rows.append(_row(
                    "Fig. 6", f"group-balanced {mode} shows a collapse of test WGA during training", ds,
                    _above(m, s, COLLAPSE_DROP), ours,
                    f"drop = test WGA at the best evaluation point of the mean curve - at the final point, per seed; "
                    f"collapse = a drop of at least {COLLAPSE_DROP:g}: yes if mean - std > {COLLAPSE_DROP:g}, no if "
                    f"mean + std < {COLLAPSE_DROP:g}; {SPREAD_RULE}", variant=f"combined_group_{mode}"))
            else:
                s0 = s if np.isfinite(s) else 0.0
                holds = ("yes" if m - s0 > MILD_DROP and m + s0 < COLLAPSE_DROP else
                         "no" if m + s0 < MILD_DROP or m - s0 > COLLAPSE_DROP else "inconclusive")
                rows.append(_row(
                    "Fig. 6", f"group-balanced {mode} shows a mild decrease of test WGA during training", ds, holds,
                    ours, f"drop as for a collapse; mild = between {MILD_DROP:g} and {COLLAPSE_DROP:g}: yes if mean - "
                    f"std > {MILD_DROP:g} and mean + std < {COLLAPSE_DROP:g}, no if mean + std < {MILD_DROP:g} or "
                    f"mean - std > {COLLAPSE_DROP:g}; {SPREAD_RULE}", variant=f"combined_group_{mode}"))
    return rows


# ---------------------------------------------------------------- Figure 7

def claims_fig7(runs: pd.DataFrame) -> list[dict]:
    """Figure 7 / Appendix A: the best group-balanced DFR (best over
    subsetting / upsampling / upweighting) beats the best class-balanced ERM
    (best over the same modes, 100% of the data) on every dataset."""
    runs = run_wga(runs) if "role" in runs.columns else runs
    rows = []
    for ds in dataset_order(runs["dataset"]):
        erm = {m: _seeds(runs, ds, f"combined_class_{m}", "erm") for m in BALANCE_MODES}
        dfr = {m: _seeds(runs, ds, f"train_class_{m}", f"dfr_{m}", "heldout") for m in BALANCE_MODES}
        erm = {m: v for m, v in erm.items() if len(v)}
        dfr = {m: v for m, v in dfr.items() if len(v)}
        if not erm or not dfr:
            continue
        be, bd, (m, s, n) = _best_vs_best(erm, dfr)
        rows.append(_row(
            "Fig. 7", "the best group-balanced DFR beats the best class-balanced ERM", ds, _above(m, s, 0.0),
            f"best DFR ({bd}) {_pm(*_stat(dfr[bd]))}, best class-balanced ERM ({be}) {_pm(*_stat(erm[be]))}; "
            f"DFR - ERM = {_pm(m, s, n, '{:+.3f}')}",
            f"best = highest mean test WGA over the modes present; d = best DFR - best ERM per seed; yes if mean d - "
            f"std > 0, no if mean d + std < 0; {SPREAD_RULE}"))
    return rows


# ---------------------------------------------------------------- Section 3.2 (AFR)

def claims_afr(runs: pd.DataFrame) -> list[dict]:
    """Section 3.2: AFR with gamma = 0 is class-balanced upweighted LLR
    (afr_gamma0 vs cbllr_upweighting after train_none, whole held-out set,
    test WGA about the same); AFR's weights give the held-out set a higher
    effective group ratio than the training set's (effective_group_ratio of
    afr vs its train_group_ratio)."""
    runs = run_wga(runs) if "role" in runs.columns else runs
    rows = []
    for ds in dataset_order(runs["dataset"]):
        a0 = _seeds(runs, ds, "train_none", "afr_gamma0", "heldout")
        cb = _seeds(runs, ds, "train_none", "cbllr_upweighting", "heldout")
        if len(a0) and len(cb):
            m, s, n = _stat(_paired(a0, cb))
            rows.append(_row(
                "Sec. 3.2", "AFR with gamma = 0 is class-balanced upweighted LLR (about the same test WGA)", ds,
                _within(m, s, TOL_WGA),
                f"AFR gamma=0 {_pm(*_stat(a0))}, CB-LLR upweighting {_pm(*_stat(cb))}; difference "
                f"{_pm(m, s, n, '{:+.3f}')}",
                f"d = afr_gamma0 - cbllr_upweighting test WGA per seed (ERM cell train_none, whole held-out set); "
                f"yes if |mean d| + std <= {TOL_WGA:g}, no if |mean d| - std > {TOL_WGA:g}; {SPREAD_RULE}",
                variant="whole held-out set, ERM train_none"))
        if {"effective_group_ratio", "train_group_ratio"} <= set(runs.columns):
            eff = _seeds(runs, ds, "train_none", "afr", "heldout", col="effective_group_ratio")
            tr = _seeds(runs, ds, "train_none", "afr", "heldout", col="train_group_ratio")
            if len(eff) and len(tr):
                m, s, n = _stat(_paired(eff, tr))
                raw = (_seeds(runs, ds, "train_none", "afr", "heldout", col="heldout_group_ratio")
                       if "heldout_group_ratio" in runs.columns else pd.Series(dtype=float))
                rows.append(_row(
                    "Sec. 3.2", "AFR's weights give the held-out set a higher effective group ratio than the "
                    "training set's", ds, _above(m, s, 0.0),
                    f"effective group ratio {_pm(*_stat(eff))} vs training {_pm(*_stat(tr))}"
                    + (f" (unweighted held-out {_stat(raw)[0]:.3f})" if len(raw) else "")
                    + f"; difference {_pm(m, s, n, '{:+.3f}')}",
                    "group ratio = per class, weighted minority-group mass / majority-group mass, averaged over "
                    f"classes; d = AFR's effective ratio - training ratio per seed; yes if mean d - std > 0, no if "
                    f"mean d + std < 0; {SPREAD_RULE}", variant="afr, ERM train_none"))
    return rows


# ---------------------------------------------------------------- driver

COMPARISON_INPUTS = ("table2.csv", "fig2_epochs.csv", "fig3_svm.csv", "table1.csv", "table1_margins.csv",
                     "fig4_runs.csv", "fig4_pearson.csv", "fig5_runs.csv", "fig6_epochs.csv", "fig7_runs.csv",
                     "fig8_effective_ratio.csv", "ablation_caching.csv")


def paper_comparison(inputs: list[str], outputs: list[str], params: dict) -> None:
    """Compare our results with the paper's claims, one row per claim and
    dataset (COMPARISON_COLUMNS, holds yes / no / inconclusive). ``inputs``:
    any of COMPARISON_INPUTS, recognised by file name; a claim whose input is
    absent gives no row. Table 1 claims use table1_margins.csv (seed spread
    by jackknife) or else table1.csv (point values); fig4_pearson.csv is
    accepted but the Figure 4 claims are recomputed from fig4_runs.csv.
    params: {"standard_epochs": {dataset: n}} for Figures 2 and 3.
    outputs = [paper_comparison.csv]."""
    by_name: dict[str, list[str]] = {}
    for p in inputs:
        by_name.setdefault(os.path.basename(p), []).append(p)
    unknown = set(by_name) - set(COMPARISON_INPUTS)
    if unknown:
        raise LLRError(f"paper_comparison: unrecognized input(s) {sorted(unknown)}; expected file names among "
                       f"{', '.join(COMPARISON_INPUTS)}")
    std_ep = (params or {}).get("standard_epochs", {}) or {}

    def read(name: str, need: set[str]) -> pd.DataFrame | None:
        paths = by_name.get(name, [])
        if not paths:
            return None
        return pd.concat([_need(pd.read_csv(p), need, p) for p in paths], ignore_index=True)

    def runs(name: str) -> pd.DataFrame | None:
        paths = by_name.get(name, [])
        return _runs(paths) if paths else None

    rows: list[dict] = []
    if (t2 := read("table2.csv", {"dataset", "g", "train", "val", "test"})) is not None:
        rows += claims_table2(t2)
    if (ep := read("fig2_epochs.csv", {"dataset", "seed", "erm", "epoch"})) is not None:
        rows += claims_fig2(ep, std_ep)
    if (sv := read("fig3_svm.csv", {"dataset", "seed", "epoch", "directional_error"})) is not None:
        rows += claims_fig3(sv, std_ep)
    margins = read("table1_margins.csv", {"dataset", "seed", "epoch", "group", "min_margin", "avg_margin",
                                          "test_acc"})
    if margins is not None:
        rows += claims_table1(table1_data(margins), table1_jackknife(margins))
    elif (t1 := read("table1.csv", set(TABLE1_COLUMNS))) is not None:
        rows += claims_table1(t1)
    for name, check in (("fig4_runs.csv", claims_fig4), ("fig5_runs.csv", claims_fig5)):
        if (r := runs(name)) is not None:
            rows += check(r)
    if (e6 := read("fig6_epochs.csv", {"dataset", "seed", "erm", "epoch", "test_wga"})) is not None:
        rows += claims_fig6(e6)
    if (r := runs("fig7_runs.csv")) is not None:
        rows += claims_fig7(r)
    run_files = [p for n in ("fig4_runs.csv", "fig5_runs.csv", "fig7_runs.csv") for p in by_name.get(n, [])]
    if run_files:
        rows += claims_afr(_runs(run_files))
    # beyond the paper: Figure 8's thesis and the caching deviation, measured
    if (f8 := read("fig8_effective_ratio.csv", FIG8_NEED)) is not None:
        rows += claims_fig8(f8)
    if (ab := read("ablation_caching.csv", ABLATION_NEED)) is not None:
        rows += claims_caching(ab)
    write_csv(outputs[0], pd.DataFrame(rows, columns=COMPARISON_COLUMNS))


def report(inputs: list[str], outputs: list[str], params: dict) -> None:
    """HTML report: inputs = figure PNGs and table files (.csv/.md; other
    files such as PDFs are ignored), outputs = [report.html];
    params {"title": str} optional."""
    from llr.reporting.report import build_report

    figs = [p for p in inputs if p.lower().endswith(".png")]
    tabs = [p for p in inputs if p.lower().endswith((".csv", ".md"))]
    build_report(figs, tabs, outputs[0], (params or {}).get("title", "Last-layer retraining: reproduction report"))


FIGURES: dict[str, Callable[[list[str], list[str], dict], None]] = {
    "fig2": fig2, "fig3": fig3, "fig4": fig4, "fig5": fig5, "fig6": fig6, "fig7": fig7, "table1": table1,
    "paper_comparison": paper_comparison, "report": report}


# --------------------------------------------------------------------------
# Beyond the paper: Figure 8 (every last-layer method on one axis) and the
# caching ablation (cached embeddings vs the authors' through-backbone LLR)
# --------------------------------------------------------------------------

FIG8_RHO = 0.7            # Figure 8: "WGA is determined by the effective ratio" when Spearman r >= 0.7
FIG8_XLIM = (1e-3, 1e2)   # Figure 8's x range: ratios beyond (AFR's large gammas) are drawn at its edge
FIG8_STYLE = {  # family -> marker, colour
    "LLR (held-out subset)": ("o", "tab:blue"), "LLR (held-out sampled)": ("s", "tab:cyan"),
    "LLR (whole held-out)": ("D", "tab:purple"), "DFR": ("^", "tab:red"), "CB-LLR": ("v", "tab:orange"),
    "AFR (chosen)": ("*", "tab:green"), "AFR gamma=0": ("P", "tab:olive"), "AFR grid": (".", "0.55")}
FIG8_NEED = {"dataset", "seed", "erm", "method", "heldout", "family", "point", "effective_ratio", "test_wga"}
ABLATION_NEED = {"dataset", "seed", "erm", "method", "heldout", "mode", "test_wga"}


def fig8_table(inputs: list[str], outputs: list[str], params: dict) -> None:
    """Figure 8's data from last-layer metrics.json files (llr.analysis.effective_ratio):
    outputs = [fig8_effective_ratio.csv, fig8_correlation.csv]."""
    from llr.analysis.effective_ratio import write_fig8_tables

    if len(outputs) != 2:
        raise LLRError("fig8_table: expected --out fig8_effective_ratio.csv fig8_correlation.csv")
    write_fig8_tables(inputs, outputs[0], outputs[1])


def _fig8_means(t: pd.DataFrame, col: str = "effective_ratio") -> pd.DataFrame:
    """Mean ratio and mean / std (ddof 1, 0 for one seed) of test WGA over
    seeds per run cell (grid points per (gamma, lambda))."""
    key = ["dataset", "family", "method", "erm", "heldout", "point", "afr_gamma", "afr_lambda"]
    t = t.assign(afr_gamma=t["afr_gamma"].fillna(-1.0), afr_lambda=t["afr_lambda"].fillna(-1.0))
    g = t.groupby(key, sort=False)
    out = g.agg(x=(col, "mean"), y=("test_wga", "mean"), y_std=("test_wga", "std"), n=("test_wga", "count"))
    return out.reset_index().assign(y_std=lambda d: d["y_std"].fillna(0.0))


def fig8(inputs: list[str], outputs: list[str], params: dict) -> None:
    """Figure 8 (beyond the paper): test WGA of every last-layer run against
    the effective group ratio it trained with (log x; mean +- std over seeds;
    one marker per method family; AFR's other grid points as small dots),
    Figure 4's LLR curves (subset construction, one per ERM ratio) faint
    behind, one panel per dataset with the Pearson and Spearman r of WGA
    against log ratio. inputs = [fig8_effective_ratio.csv]; params
    {"ratio": "effective" | "pooled"} (default effective); outputs = [png, pdf]."""
    from llr.analysis.effective_ratio import RATIOS, ratio_correlations

    plt = _plt()
    table = _need(pd.read_csv(inputs[0]), FIG8_NEED, inputs[0])
    rname = (params or {}).get("ratio", "effective")
    if rname not in RATIOS:
        raise LLRError(f"fig8: params ratio={rname!r}, expected one of {sorted(RATIOS)}")
    col = RATIOS[rname]
    corr = ratio_correlations(table)
    datasets = dataset_order(table["dataset"])
    fig, axes = _panels(plt, len(datasets), width=4.6, height=3.8)
    cmap = plt.get_cmap("viridis")
    lo, hi = FIG8_XLIM
    for ax, ds in zip(axes, datasets):
        t = table[(table["dataset"] == ds) & (table[col] > 0)]
        m = _fig8_means(t, col)
        n_out = int(((m["x"] < lo) | (m["x"] > hi)).sum())
        m = m.assign(x=m["x"].clip(lo, hi))
        sub = m[(m["family"] == "LLR (held-out subset)") & m["erm"].str.startswith("train_ratio")]
        erm_ratios = sorted(sub["erm"].map(_ratio_of).dropna().unique())
        for i, e in enumerate(erm_ratios):
            line = sub[sub["erm"].map(_ratio_of) == e].sort_values("x")
            ax.plot(line["x"], 100 * line["y"], color=cmap(i / max(len(erm_ratios) - 1, 1)), alpha=0.3, lw=1.2,
                    zorder=1, label=f"Fig. 4 LLR curve, ERM ratio {e:g}")
        grid = m[m["point"] == "grid"]
        if len(grid):
            mk, c = FIG8_STYLE["AFR grid"]
            ax.plot(grid["x"], 100 * grid["y"], ls="none", marker=mk, color=c, ms=3, alpha=0.5, zorder=2,
                    label="AFR grid point (gamma, lambda)")
        runs = m[m["point"] == "run"]
        for fam in [f for f in FIG8_STYLE if f != "AFR grid"] + sorted(set(runs["family"]) - set(FIG8_STYLE)):
            f = runs[runs["family"] == fam]
            if f.empty:
                continue
            mk, c = FIG8_STYLE.get(fam, ("x", "black"))
            ax.errorbar(f["x"], 100 * f["y"], yerr=100 * f["y_std"], ls="none", marker=mk, color=c,
                        ms=8 if mk == "*" else 5, capsize=2, lw=0.8, zorder=3, label=fam)
        ax.set_xscale("log")
        ax.set_xlim(lo / 1.5, hi * 1.5)
        ax.set_xlabel(f"{'effective' if rname == 'effective' else 'pooled'} group ratio of the training weights")
        ax.set_ylabel("test worst-group accuracy (%)")
        ax.grid(alpha=0.3)
        lines = []
        for pts, label in (("runs", "runs"), ("runs+grid", "with AFR grid")):
            c = corr[(corr["dataset"] == ds) & (corr["points"] == pts) & (corr["ratio"] == rname)]
            if len(c):
                c = c.iloc[0]
                lines.append(f"{label}: Spearman {c['spearman_r']:.2f}, Pearson {c['pearson_r']:.2f} "
                             f"(n={int(c['n_points'])})")
        ax.set_title(_title(ds) + "".join(f"\n{x}" for x in lines), fontsize=9)
        if n_out:
            ax.text(0.98, 0.02, f"{n_out} point(s) beyond [{lo:g}, {hi:g}]\ndrawn at the edge", ha="right",
                    va="bottom", transform=ax.transAxes, fontsize=6.5, color="0.4")
    _finish(fig, axes, "Each marker: one last-layer run (Figures 4, 5, 7), mean +- std of test WGA over seeds "
            "against the group ratio of its training weights (per class, weighted minority mass / majority mass, "
            "averaged over classes" + (")" if rname == "effective" else "; pooled over classes)") +
            ". Small dots: AFR's other (gamma, lambda) grid points. Faint lines: Figure 4's LLR on held-out "
            "subsets, one per ERM ratio. r of test WGA against log ratio over every run of every seed (all "
            "ratios, also those drawn at the axis edge). " + DEVIATION_NOTE)
    _save(fig, outputs[:2])
    plt.close(fig)


def claims_fig8(table: pd.DataFrame) -> list[dict]:
    """Beyond the paper (sections 3.1-3.2 extrapolated): "WGA is determined
    by the effective group ratio across methods". Per dataset and ratio
    (per-class effective ratio; pooled ratio as a variant): the Spearman r of
    test WGA against log ratio over every last-layer run (AFR at its chosen
    point), computed per seed; yes if mean - std > FIG8_RHO, no if mean +
    std < FIG8_RHO, else inconclusive (one seed: the pooled r against the
    threshold). ``table``: fig8_effective_ratio.csv."""
    from llr.analysis.effective_ratio import ratio_correlations

    table = _need(table, FIG8_NEED, "fig8_effective_ratio.csv")
    corr = ratio_correlations(table)
    rows = []
    for ds in dataset_order(corr["dataset"]):
        for rname, variant in (("effective", "per-class effective group ratio"),
                               ("pooled", "pooled group ratio (minority over majority mass, all classes)")):
            c = corr[(corr["dataset"] == ds) & (corr["points"] == "runs") & (corr["ratio"] == rname)]
            if c.empty:
                continue
            c = c.iloc[0]
            m, s, k = c["spearman_r_seed_mean"], c["spearman_r_seed_std"], int(c["n_seeds"])
            if k <= 1 or not np.isfinite(m):
                m, s = c["spearman_r"], 0.0
            g = corr[(corr["dataset"] == ds) & (corr["points"] == "runs+grid") & (corr["ratio"] == rname)]
            grid = f"; with AFR's grid points Spearman {g.iloc[0]['spearman_r']:.3f}" if len(g) else ""
            rows.append(_row(
                "Beyond (Sec. 3)", "WGA is determined by the effective group ratio across methods", ds,
                _above(m, s, FIG8_RHO),
                f"Spearman r per seed {_pm(m, s, k)}; pooled over seeds Spearman {c['spearman_r']:.3f}, Pearson "
                f"{c['pearson_r']:.3f} (n={int(c['n_points'])} runs){grid}",
                f"r of test WGA against log(ratio) over every last-layer run of Figures 4, 5, 7 (LLR, DFR, CB-LLR, "
                f"AFR at its chosen point, AFR gamma=0), per seed; holds if mean Spearman r - std > {FIG8_RHO:g}, "
                f"not if mean + std < {FIG8_RHO:g}; {SPREAD_RULE}",
                "not in the paper (extrapolates sections 3.1-3.2)", variant))
    return rows


def ablation_caching_table(inputs: list[str], outputs: list[str], params: dict) -> None:
    """The caching ablation's tables (llr.lastlayer.through_backbone): inputs = cached
    and through-backbone metrics.json files; outputs = [ablation_caching.csv,
    ablation_caching_summary.csv]."""
    from llr.lastlayer.through_backbone import write_ablation_tables

    if len(outputs) != 2:
        raise LLRError("ablation_caching_table: expected --out ablation_caching.csv ablation_caching_summary.csv")
    write_ablation_tables(inputs, outputs[0], outputs[1])


def ablation_caching(inputs: list[str], outputs: list[str], params: dict) -> None:
    """Cached versus through-backbone LLR: test WGA of each run in both modes
    (one point per run and seed, marker per method family) with the
    diagonal, one panel per dataset, the mean |difference| printed.
    inputs = [ablation_caching.csv]; outputs = [png, pdf]."""
    from llr.analysis.effective_ratio import method_family
    from llr.lastlayer.through_backbone import ablation_summary

    plt = _plt()
    t = _need(pd.read_csv(inputs[0]), ABLATION_NEED, inputs[0])
    summary = ablation_summary(t)
    key = ["dataset", "seed", "erm", "method", "heldout"]
    wide = t.pivot_table(index=key, columns="mode", values="test_wga", aggfunc="first").reset_index()
    for c in ("cached", "through_backbone"):
        if c not in wide.columns:
            raise LLRError(f"{inputs[0]}: no run in mode {c!r}; expected both cached and through_backbone runs")
    wide = wide.dropna(subset=["cached", "through_backbone"])
    datasets = dataset_order(t["dataset"])
    fig, axes = _panels(plt, len(datasets), width=3.6, height=3.4)
    for ax, ds in zip(axes, datasets):
        w = wide[wide["dataset"] == ds]
        fams = w.apply(lambda r: method_family(r["method"], r["heldout"]), axis=1) if len(w) else pd.Series(dtype=str)
        for fam in sorted(dict.fromkeys(fams), key=lambda f: list(FIG8_STYLE).index(f) if f in FIG8_STYLE else 99):
            f = w[fams == fam]
            mk, c = FIG8_STYLE.get(fam, ("x", "black"))
            ax.plot(100 * f["cached"], 100 * f["through_backbone"], ls="none", marker=mk, color=c, ms=5, alpha=0.8,
                    label=fam)
        ax.plot([0, 100], [0, 100], color="0.5", ls="--", lw=1, label="equal WGA")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_aspect("equal")
        ax.set_xlabel("cached embeddings: test WGA (%)")
        ax.set_ylabel("through the network (authors'): test WGA (%)")
        ax.set_title(_title(ds))
        ax.grid(alpha=0.3)
        s = summary[summary["dataset"] == ds]
        if len(s):
            s = s.iloc[0]
            ax.text(0.98, 0.03, f"mean |diff| {100 * s['mean_abs_wga_diff']:.1f} pts\nmean diff "
                    f"{100 * s['mean_wga_diff']:+.1f} pts\n{int(s['n_pairs'])} runs, {s['epochs']} epochs",
                    transform=ax.transAxes, ha="right", va="bottom", fontsize=6.5,
                    bbox=dict(boxstyle="round", fc="white", ec="0.8", alpha=0.85))
    _finish(fig, axes, "Each point: one LLR / CB-LLR run (ERM cell, held-out cell, seed) trained on cached eval-mode "
            "embeddings (x) and through the frozen network in training mode with augmentation, BatchNorm batch "
            "statistics and dropout, as the authors (y), same epochs, initial head and example order.")
    _save(fig, outputs[:2])
    plt.close(fig)


def claims_caching(table: pd.DataFrame) -> list[dict]:
    """Deviation check: LLR on cached eval-mode embeddings reaches about the
    test WGA of the authors' through-backbone LLR. Per dataset: each seed's
    mean |through-backbone - cached| WGA over the paired runs; yes if mean
    + std <= TOL_WGA, no if mean - std > TOL_WGA. ``table``:
    ablation_caching.csv."""
    table = _need(table, ABLATION_NEED, "ablation_caching.csv")
    key = ["dataset", "seed", "erm", "method", "heldout"]
    wide = table.pivot_table(index=key, columns="mode", values="test_wga", aggfunc="first")
    if not {"cached", "through_backbone"} <= set(wide.columns):
        return []
    d = (wide["through_backbone"] - wide["cached"]).dropna().abs()
    rows = []
    for ds in dataset_order(d.index.get_level_values("dataset")):
        per_seed = d.xs(ds, level="dataset").groupby(level="seed").mean()
        m, s, n = _stat(per_seed)
        rows.append(_row(
            "Deviation", "LLR on cached eval-mode embeddings matches the authors' through-network LLR (test WGA)", ds,
            _within(m, s, TOL_WGA), f"mean |through-network - cached| WGA per seed {_pm(m, s, n)} over "
            f"{int(d.xs(ds, level='dataset').size)} paired runs",
            f"per seed, mean |d| over the paired runs (LLR on Figure 4's held-out subsets after one ERM cell, Figure "
            f"5's LLR/CB-LLR), d = through-network - cached test WGA at the same epochs; yes if mean + std <= "
            f"{TOL_WGA:g}, no if mean - std > {TOL_WGA:g}; {SPREAD_RULE}", "not in the paper (a deviation check)"))
    return rows


FIGURES.update({"fig8_table": fig8_table, "fig8": fig8, "ablation_caching_table": ablation_caching_table,
                "ablation_caching": ablation_caching})
