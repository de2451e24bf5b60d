"""Figures 2-8 and the caching-ablation figure, drawn from the tidy CSVs (llr.reporting.tidy);
mean +- std over seeds by seaborn. Nothing here trains or fits, so restyling reruns no experiment."""

from __future__ import annotations

import numpy as np
import pandas as pd

from llr.errors import LLRError
from llr.io import write_csv
from llr.reporting.fig4 import (
    CONSTRUCTION_LABELS,
    CONSTRUCTION_SHORT,
    CONSTRUCTIONS,
    fig4_data,
    fig4_pearson,
    fig4_points,
)
from llr.reporting.frames import (
    ABLATION_NEED,
    BALANCED_MODES,
    FIG8_NEED,
    fig5_cells,
    float_epochs,
    need,
    ratio_of,
    read_run_wga,
    read_runs,
    run_wga,
    seed_values,
)
from llr.reporting.style import (
    DEVIATION_NOTE,
    FIG8_STYLE,
    MODE_LABELS,
    dataset_order,
    dataset_title,
    finish,
    footnote,
    panels,
    pyplot,
    save_figure,
    std_line,
)
from llr.train.balancing import BALANCE_MODES

# --------------------------------------------------------------------------
# Figure 4
# --------------------------------------------------------------------------


def fig4(inputs: list[str], outputs: list[str], params: dict) -> None:
    """Figure 4: LLR test WGA across held-out group ratios, one line per ERM
    group ratio; ERM trained with the held-out data added (gray line, the
    paper's ERM) and ERM on the training pool only (triangles); DFR on the
    whole held-out set; mean +- std over seeds. One panel row per held-out
    construction (subset: data removed, as the paper's text; sampled: every
    example kept, as the authors' plotting script). Each panel prints the
    Pearson r of every LLR line against the gray line (fig4_pearson).
    outputs = [png, pdf, fig4_pearson.csv]."""
    plt = pyplot()
    runs = run_wga(read_runs(inputs[0]))
    series = fig4_data(runs)
    points = fig4_points(runs).assign(y=lambda d: 100 * d["wga"])
    png, pdf, pearson_csv = outputs
    pear = fig4_pearson(runs)
    write_csv(pearson_csv, pear)
    datasets = dataset_order(series["dataset"])
    cons = [c for c in CONSTRUCTIONS if (series["construction"] == c).any()] or ["subset"]
    fig, axes = panels(plt, len(datasets), rows=len(cons))
    axes = np.atleast_2d(axes)
    ratios = sorted(series.loc[series["series"].isin(["ERM", "ERM + held-out", "LLR"]), "x"].dropna().unique())
    erm_ratios = sorted(series["erm_ratio"].dropna().unique())
    cmap = plt.get_cmap("viridis")
    for row, con in enumerate(cons):
        for ax, ds in zip(axes[row], datasets):
            d = points[points["dataset"] == ds]
            for i, r in enumerate(erm_ratios):
                lin = d[(d["series"] == "LLR") & (d["erm_ratio"] == r) & (d["construction"] == con)]
                if lin.empty:
                    continue
                _seed_line(
                    ax,
                    lin,
                    "x",
                    "y",
                    color=cmap(i / max(len(erm_ratios) - 1, 1)),
                    lw=1.5,
                    label=f"LLR after ERM of ratio {r:g}",
                )
            for name, lab, style in (
                (
                    "ERM + held-out",
                    "ERM with held-out data added (paper's ERM)",
                    dict(color="0.5", marker="s", ls="-", ms=4, lw=2),
                ),
                ("ERM", "ERM on the training pool only", dict(color="black", marker="^", ls="none", ms=6)),
                (
                    "DFR",
                    "DFR (whole held-out set, x = ERM ratio)",
                    dict(color="tab:red", marker="o", ls="--", ms=4, lw=1),
                ),
            ):
                e = d[d["series"] == name]
                if len(e):
                    _seed_line(ax, e, "x", "y", label=lab, err_style="bars", err_kws={"capsize": 2}, **style)
            ax.set_xscale("log")
            if ratios:
                ax.set_xticks(ratios)
                ax.set_xticklabels([f"{r:g}" for r in ratios])
            ax.minorticks_off()
            ax.set_xlabel("group ratio (held-out for LLR, training for ERM)")
            ax.set_ylabel("test worst-group accuracy (%)")
            ax.set_title(dataset_title(ds) + (f"\n{CONSTRUCTION_SHORT[con]}" if len(cons) > 1 else ""))
            ax.grid(alpha=0.3)
            p = pear[(pear["dataset"] == ds) & (pear["construction"] == con)]
            if len(p):
                text = "Pearson r vs gray line\n" + "\n".join(
                    f"ERM ratio {e:g}: {v:.3f}" if np.isfinite(v) else f"ERM ratio {e:g}: n.a."
                    for e, v in zip(p["erm_ratio"], p["pearson_r"])
                )
                ax.text(
                    0.98,
                    0.03,
                    text,
                    transform=ax.transAxes,
                    ha="right",
                    va="bottom",
                    fontsize=6.5,
                    bbox=dict(boxstyle="round", fc="white", ec="0.8", alpha=0.85),
                )
    finish(
        fig,
        axes[0],
        "Pearson r per ERM ratio, over the group ratios r: LLR on the held-out set of ratio r "
        "against ERM trained with the held-out data added at ratio r (gray). "
        + (
            "Rows: " + "; ".join(CONSTRUCTION_LABELS[c] for c in cons) + ". "
            if len(cons) > 1
            else CONSTRUCTION_LABELS[cons[0]] + ". "
        )
        + DEVIATION_NOTE,
    )
    save_figure(fig, [png, pdf])
    plt.close(fig)


# --------------------------------------------------------------------------
# Figures 2 and 3
# --------------------------------------------------------------------------


def _final_point(ax, c: pd.DataFrame, col: str, marker: str, ms: float, color, label: str) -> None:
    """One marker at the last epoch: mean +- std over seeds of each seed's last ``col``."""
    last = c.groupby("seed").agg(epoch=("epoch", "max"), v=(col, "last"))
    _seed_line(
        ax,
        last.assign(epoch=last["epoch"].max()),
        "epoch",
        "v",
        err_style="bars",
        err_kws={"capsize": 3},
        marker=marker,
        ms=ms,
        ls="none",
        color=color,
        label=label,
        zorder=5,
    )


def fig2(inputs: list[str], outputs: list[str], params: dict) -> None:
    """Figure 2: NC1 of the training features at every evaluation point of
    ERM (fractional epochs, log scale, mean +- std over seeds), a dashed line
    at the standard epoch count (params {"standard_epochs": {dataset: n}})
    and NC1 of the held-out features at the end of training (star)."""
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter, LogFormatter

    df = float_epochs(need(pd.read_csv(inputs[0]), {"dataset", "seed", "erm", "epoch"}, inputs[0]))
    if "train_nc1" not in df.columns and "heldout_nc1_final" not in df.columns:
        raise LLRError(f"{inputs[0]}: neither train_nc1 nor heldout_nc1_final present")
    std_ep = (params or {}).get("standard_epochs", {}) or {}
    datasets = dataset_order(df["dataset"])
    fig, axes = panels(plt, len(datasets))
    colors = plt.get_cmap("tab10")
    for ax, ds in zip(axes, datasets):
        d = df[df["dataset"] == ds]
        cells = list(dict.fromkeys(d["erm"]))
        for i, cell in enumerate(cells):
            c = d[d["erm"] == cell]
            tag = f" ({cell})" if len(cells) > 1 else ""
            color = colors(i)
            if "train_nc1" in c.columns and c["train_nc1"].notna().any():
                _seed_line(
                    ax,
                    c.dropna(subset=["train_nc1"]),
                    "epoch",
                    "train_nc1",
                    color=color,
                    lw=1.5,
                    label=f"train NC1{tag}",
                )
            elif "train_nc1_final" in c.columns and c["train_nc1_final"].notna().any():
                _final_point(ax, c, "train_nc1_final", "o", 6, color, f"train NC1 at the end{tag}")
            if "heldout_nc1_final" in c.columns and c["heldout_nc1_final"].notna().any():
                red = "tab:red" if len(cells) == 1 else color
                _final_point(ax, c, "heldout_nc1_final", "*", 10, red, f"held-out NC1 at the end{tag}")
        if ds in std_ep:
            std_line(ax, float(std_ep[ds]))
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
        ax.tick_params(axis="y", which="minor", labelsize=6)
        ax.set_xlabel("ERM epoch")
        ax.set_title(dataset_title(ds))
        ax.grid(alpha=0.3, which="both")
    # One y label for the row: per-panel labels collided with the previous
    # panel's tick labels.
    axes[0].set_ylabel(r"NC1 = tr($\Sigma_W \Sigma_B^{+}$) / K  (log scale)")
    finish(fig, axes, "NC1 of penultimate features (no augmentation) at every evaluation point; mean ± std over seeds")
    save_figure(fig, outputs[:2])
    plt.close(fig)


def fig3(inputs: list[str], outputs: list[str], params: dict) -> None:
    """Figure 3: directional error ||θ/||θ|| − θ_svm/||θ_svm|||| between the
    LLR head (SGD lr 1e-3, 10x the standard epochs) and the linear SVM
    (LinearSVC, C = 1e5, no intercept, as the authors) on the held-out features, per epoch; log-log axes; mean +- std over seeds.
    Optional params {"standard_epochs": {dataset: int}} draws a dashed line."""
    plt = pyplot()
    from matplotlib.ticker import FormatStrFormatter

    df = float_epochs(need(pd.read_csv(inputs[0]), {"dataset", "seed", "epoch", "directional_error"}, inputs[0]))
    std_ep = (params or {}).get("standard_epochs", {}) or {}
    datasets = dataset_order(df["dataset"])
    fig, axes = panels(plt, len(datasets))
    for ax, ds in zip(axes, datasets):
        d = df[(df["dataset"] == ds) & (df["epoch"] > 0)]
        _seed_line(ax, d, "epoch", "directional_error", color="tab:blue", lw=1.5, label="LLR head vs SVM")
        if ds in std_ep:
            std_line(ax, float(std_ep[ds]))
        if "separable" in d.columns:
            sep = d.groupby("seed")["separable"].first().astype(str).str.lower().isin(["true", "1", "1.0"])
            ax.text(
                0.03,
                0.03,
                f"separable: {int(sep.sum())}/{len(sep)} seeds",
                transform=ax.transAxes,
                fontsize=7,
                ha="left",
                va="bottom",
                color="0.3",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        fmt = FormatStrFormatter("%g")
        ax.yaxis.set_major_formatter(fmt)
        ax.yaxis.set_minor_formatter(fmt)
        ax.set_xlabel("LLR epoch (SGD, lr 1e-3)")
        ax.set_title(dataset_title(ds))
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("directional error to the SVM")
    finish(fig, axes, "LinearSVC (C = 1e5, no intercept) on the held-out embeddings; mean ± std over seeds")
    save_figure(fig, outputs[:2])
    plt.close(fig)


# --------------------------------------------------------------------------
# Figures 5, 6, 7
# --------------------------------------------------------------------------

BAR_COLUMNS = ["dataset", "mode", "series", "seed", "wga"]
FIG5_OWN = ("llr",)  # fig5's own method on train_none / heldout
FIG7_OWN = ("afr", "afr_gamma0", "cbllr_upweighting")  # fig7's own (afr_gamma0, cbllr_upweighting: claims only)
EXTRA_COLORS = ("tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:blue")


def method_label(name: str) -> str:
    """Legend label of a registered last-layer method (its ``label``), else its name."""
    from llr.lastlayer.registry import get_method

    try:
        return get_method(name).label or name
    except LLRError:
        return name


def _seed_rows(ds: str, mode: str, series: str, v: pd.Series) -> list[dict]:
    """BAR_COLUMNS rows of one bar: ``v`` is test WGA indexed by seed."""
    return [{"dataset": ds, "mode": mode, "series": series, "seed": s, "wga": float(w)} for s, w in v.items()]


def _extra_methods(runs: pd.DataFrame, ds: str, own: tuple[str, ...]) -> list[str]:
    """Last-layer methods of ``ds`` on ERM cell train_none and the whole
    held-out set other than the figure's ``own``, sorted by name."""
    m = (runs["dataset"] == ds) & (runs["erm"] == "train_none") & (runs["heldout"] == "heldout")
    m &= (runs["method"] != "erm") & ~runs["method"].isin(own)
    return sorted(set(runs.loc[m, "method"]))


def fig5_data(runs: pd.DataFrame) -> pd.DataFrame:
    """Figure 5 bars, one row per seed (BAR_COLUMNS): per dataset and
    class-balancing mode, test WGA of ERM on 100% of the data and of
    (CB-)LLR after the train/held-out split; any other last-layer method on
    train_none / heldout as its own mode (the method's name; series: its
    label)."""
    rows = []
    for ds in dataset_order(runs["dataset"]):
        for mode in BALANCE_MODES:
            erm_cell, ll = fig5_cells(mode)
            rows += _seed_rows(ds, mode, "ERM (100% of data)", seed_values(runs, ds, erm_cell, "erm"))
            rows += _seed_rows(ds, mode, "(CB-)LLR (held-out)", seed_values(runs, ds, *ll))
        for m in _extra_methods(runs, ds, FIG5_OWN):
            rows += _seed_rows(ds, m, method_label(m), seed_values(runs, ds, "train_none", m, "heldout"))
    return pd.DataFrame(rows, columns=BAR_COLUMNS)


def fig7_data(runs: pd.DataFrame) -> pd.DataFrame:
    """Figure 7 bars, one row per seed (BAR_COLUMNS): per dataset and mode,
    class-balanced ERM on 100% of the data vs DFR (group-balanced held-out
    set), plus AFR and any other last-layer method on train_none / heldout
    (not afr_gamma0 or cbllr_upweighting) as their own modes."""
    rows = []
    for ds in dataset_order(runs["dataset"]):
        for mode in BALANCED_MODES:
            rows += _seed_rows(
                ds, mode, "class-balanced ERM (100% of data)", seed_values(runs, ds, f"combined_class_{mode}", "erm")
            )
            rows += _seed_rows(
                ds,
                mode,
                "DFR (group-balanced held-out)",
                seed_values(runs, ds, f"train_class_{mode}", f"dfr_{mode}", "heldout"),
            )
        afr = seed_values(runs, ds, "train_none", "afr", "heldout")
        if afr.empty:
            afr = seed_values(runs, ds, "train_none", "afr")
        rows += _seed_rows(ds, "AFR", "AFR", afr)
        for m in _extra_methods(runs, ds, FIG7_OWN):
            rows += _seed_rows(ds, m, method_label(m), seed_values(runs, ds, "train_none", m, "heldout"))
    return pd.DataFrame(rows, columns=BAR_COLUMNS)


def _seed_line(ax, data: pd.DataFrame, x: str, y: str, **kw) -> None:
    """Mean of ``y`` over seeds against ``x`` with a +- std band (seaborn,
    errorbar="sd", ddof 1); ``kw`` as for sns.lineplot (label, color,
    err_style="bars", ...). The axis labels are left as they were."""
    import seaborn as sns

    xlabel, ylabel = ax.get_xlabel(), ax.get_ylabel()
    sns.lineplot(data=data, x=x, y=y, errorbar="sd", legend=False, ax=ax, **kw)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def _bars(
    plt,
    data: pd.DataFrame,
    modes: list[str],
    series: list[str],
    colors: list[str],
    xlabel: str,
    outputs: list[str],
    note: str,
) -> None:
    """Grouped bars (seaborn, mean +- std over seeds), one panel per
    dataset: one group per mode, one bar per series present there
    (centred). ``data``: BAR_COLUMNS rows; modes and series beyond the given
    ones (other last-layer methods) follow, one bar each, ticked by series."""
    import seaborn as sns
    from matplotlib.patches import Patch

    if data.empty:
        raise LLRError(f"no run of the cells this figure needs ({', '.join(series)}); check the runs table")
    width = 0.8 / len(series)
    extra = [s for s in dict.fromkeys(data["series"]) if s not in series]
    palette = dict(zip(series, colors)) | {s: EXTRA_COLORS[k % len(EXTRA_COLORS)] for k, s in enumerate(extra)}
    series = series + extra
    modes = list(modes) + [m for m in dict.fromkeys(data["mode"]) if m not in modes]
    ticks = {m: MODE_LABELS.get(m, m) for m in modes} | {
        m: s for m, s in zip(data["mode"], data["series"]) if m not in MODE_LABELS and s in extra
    }
    datasets = dataset_order(data["dataset"])
    fig, axes = panels(plt, len(datasets), width=4.0)
    for ax, ds in zip(axes, datasets):
        d = data[data["dataset"] == ds]
        present = [m for m in modes if (d["mode"] == m).any()]
        pos = {}
        for i, mode in enumerate(present):
            here = [nm for nm in series if ((d["mode"] == mode) & (d["series"] == nm)).any()]
            for j, name in enumerate(here):
                pos[mode, name] = i + (j - (len(here) - 1) / 2) * width
        d = d.assign(pos=[pos[k] for k in zip(d["mode"], d["series"])], y=100 * d["wga"])
        xs = np.unique(d["pos"])
        step = float(np.diff(xs).min()) if len(xs) > 1 else 1.0  # seaborn's width unit on a native x scale
        sns.barplot(
            data=d,
            x="pos",
            y="y",
            hue="series",
            hue_order=[s for s in series if (d["series"] == s).any()],
            palette=palette,
            native_scale=True,
            dodge=False,
            width=width / step,
            errorbar="sd",
            capsize=0.3,
            err_kws={"linewidth": 0.8},
            saturation=1,
            legend=False,
            ax=ax,
        )
        ax.set_xticks(np.arange(len(present)))
        ax.set_xticklabels([ticks[m] for m in present], rotation=20, ha="right", rotation_mode="anchor")
        ax.set_xlim(-0.6, len(present) - 0.4)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("")
        ax.set_title(dataset_title(ds))
        ax.grid(alpha=0.3, axis="y")
        ax.set_axisbelow(True)
    axes[0].set_ylabel("test worst-group accuracy (%)")
    names = [n for n in series if (data["series"] == n).any()]
    fig.legend(
        [Patch(color=palette[n]) for n in names],
        names,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=len(names),
        frameon=False,
    )
    footnote(fig, note)
    save_figure(fig, outputs[:2])
    plt.close(fig)


def fig5(inputs: list[str], outputs: list[str], params: dict) -> None:
    """Figure 5: per class-balancing mode (none, subsetting, upsampling,
    upweighting) test WGA of ERM on 100% of the data (combined_*) and of LLR
    (mode none) or CB-LLR (cbllr_{mode} on train_class_{mode}) on the whole
    held-out set; any other last-layer method on train_none / heldout as its
    own bar; error bars = std over seeds."""
    plt = pyplot()
    data = fig5_data(read_run_wga(inputs))
    series = ["ERM (100% of data)", "(CB-)LLR (held-out)"]
    _bars(
        plt,
        data,
        list(BALANCE_MODES),
        series,
        ["0.55", "tab:orange"],
        "class balancing",
        outputs,
        "ERM on train + held-out vs (CB-)LLR after the train/held-out split; " + DEVIATION_NOTE,
    )


FIG6_CELLS = [("combined_none", "no balancing", "0.45")] + [
    (f"combined_group_{m}", f"group {m}", c) for m, c in zip(BALANCED_MODES, ("tab:blue", "tab:green", "tab:purple"))
]


def fig6(inputs: list[str], outputs: list[str], params: dict) -> None:
    """Figure 6: test WGA at every evaluation point (fractional epochs) of ERM
    with group balancing on 100% of the data
    (combined_group_{subsetting,upsampling,upweighting}), with combined_none
    as the reference when present; mean +- std over seeds."""
    plt = pyplot()
    df = float_epochs(need(pd.read_csv(inputs[0]), {"dataset", "seed", "erm", "epoch", "test_wga"}, inputs[0]))
    datasets = dataset_order(df["dataset"])
    fig, axes = panels(plt, len(datasets))
    for ax, ds in zip(axes, datasets):
        d = df[df["dataset"] == ds]
        for cell, label, color in FIG6_CELLS:
            c = d[d["erm"] == cell].dropna(subset=["test_wga"])
            if c.empty:
                continue
            _seed_line(
                ax,
                c.assign(y=100 * c["test_wga"]),
                "epoch",
                "y",
                color=color,
                lw=1.5,
                label=label,
                ls="--" if cell == "combined_none" else "-",
            )
        ax.set_xlabel("ERM epoch")
        ax.set_title(dataset_title(ds))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test worst-group accuracy (%)")
    finish(
        fig,
        axes,
        "ERM on train + held-out (100% of the data) with group balancing, test WGA at every "
        "evaluation point; mean ± std over seeds",
    )
    save_figure(fig, outputs[:2])
    plt.close(fig)


def fig7(inputs: list[str], outputs: list[str], params: dict) -> None:
    """Figure 7: per mode (subsetting, upsampling, upweighting) test WGA of
    class-balanced ERM on 100% of the data vs DFR (dfr_{mode} on the whole
    held-out set after train_class_{mode}); AFR (after train_none) as its own
    bar when present, and so any other last-layer method on train_none /
    heldout but afr_gamma0 and cbllr_upweighting; error bars = std over seeds."""
    plt = pyplot()
    data = fig7_data(read_run_wga(inputs))
    series = ["class-balanced ERM (100% of data)", "DFR (group-balanced held-out)", "AFR"]
    _bars(
        plt,
        data,
        [*BALANCED_MODES, "AFR"],
        series,
        ["0.55", "tab:red", "tab:cyan"],
        "balancing mode",
        outputs,
        "Mode = class balancing of ERM (trained on train + held-out) and group balancing of the held-out "
        "set for DFR (LLR after class-balanced ERM on the train split); AFR after unbalanced ERM. " + DEVIATION_NOTE,
    )


# --------------------------------------------------------------------------
# Beyond the paper: Figure 8 (every last-layer method on one axis) and the
# caching ablation (cached embeddings vs the authors' through-backbone LLR)
# --------------------------------------------------------------------------

FIG8_XLIM = (1e-3, 1e2)  # Figure 8's x range: ratios beyond (AFR's large gammas) are drawn at its edge


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

    plt = pyplot()
    table = need(pd.read_csv(inputs[0]), FIG8_NEED, inputs[0])
    rname = (params or {}).get("ratio", "effective")
    if rname not in RATIOS:
        raise LLRError(f"fig8: params ratio={rname!r}, expected one of {sorted(RATIOS)}")
    col = RATIOS[rname]
    corr = ratio_correlations(table)
    datasets = dataset_order(table["dataset"])
    fig, axes = panels(plt, len(datasets), width=4.6, height=3.8)
    cmap = plt.get_cmap("viridis")
    lo, hi = FIG8_XLIM
    for ax, ds in zip(axes, datasets):
        t = table[(table["dataset"] == ds) & (table[col] > 0)]
        m = _fig8_means(t, col)
        n_out = int(((m["x"] < lo) | (m["x"] > hi)).sum())
        m = m.assign(x=m["x"].clip(lo, hi))
        sub = m[(m["family"] == "LLR (held-out subset)") & m["erm"].str.startswith("train_ratio")]
        erm_ratios = sorted(sub["erm"].map(ratio_of).dropna().unique())
        for i, e in enumerate(erm_ratios):
            line = sub[sub["erm"].map(ratio_of) == e].sort_values("x")
            ax.plot(
                line["x"],
                100 * line["y"],
                color=cmap(i / max(len(erm_ratios) - 1, 1)),
                alpha=0.3,
                lw=1.2,
                zorder=1,
                label=f"Fig. 4 LLR curve, ERM ratio {e:g}",
            )
        grid = m[m["point"] == "grid"]
        if len(grid):
            mk, c = FIG8_STYLE["AFR grid"]
            ax.plot(
                grid["x"],
                100 * grid["y"],
                ls="none",
                marker=mk,
                color=c,
                ms=3,
                alpha=0.5,
                zorder=2,
                label="AFR grid point (gamma, lambda)",
            )
        runs = m[m["point"] == "run"]
        for fam in [f for f in FIG8_STYLE if f != "AFR grid"] + sorted(set(runs["family"]) - set(FIG8_STYLE)):
            f = runs[runs["family"] == fam]
            if f.empty:
                continue
            mk, c = FIG8_STYLE.get(fam, ("x", "black"))
            ax.errorbar(
                f["x"],
                100 * f["y"],
                yerr=100 * f["y_std"],
                ls="none",
                marker=mk,
                color=c,
                ms=8 if mk == "*" else 5,
                capsize=2,
                lw=0.8,
                zorder=3,
                label=fam,
            )
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
                lines.append(
                    f"{label}: Spearman {c['spearman_r']:.2f}, Pearson {c['pearson_r']:.2f} (n={int(c['n_points'])})"
                )
        ax.set_title(dataset_title(ds) + "".join(f"\n{x}" for x in lines), fontsize=9)
        if n_out:
            ax.text(
                0.98,
                0.02,
                f"{n_out} point(s) beyond [{lo:g}, {hi:g}]\ndrawn at the edge",
                ha="right",
                va="bottom",
                transform=ax.transAxes,
                fontsize=6.5,
                color="0.4",
            )
    finish(
        fig,
        axes,
        "Each marker: one last-layer run (Figures 4, 5, 7), mean +- std of test WGA over seeds "
        "against the group ratio of its training weights (per class, weighted minority mass / majority mass, "
        "averaged over classes"
        + (")" if rname == "effective" else "; pooled over classes)")
        + ". Small dots: AFR's other (gamma, lambda) grid points. Faint lines: Figure 4's LLR on held-out "
        "subsets, one per ERM ratio. r of test WGA against log ratio over every run of every seed (all "
        "ratios, also those drawn at the axis edge). " + DEVIATION_NOTE,
    )
    save_figure(fig, outputs[:2])
    plt.close(fig)


def ablation_caching(inputs: list[str], outputs: list[str], params: dict) -> None:
    """Cached versus through-backbone LLR: test WGA of each run in both modes
    (one point per run and seed, marker per method family) with the
    diagonal, one panel per dataset, the mean |difference| printed.
    inputs = [ablation_caching.csv]; outputs = [png, pdf]."""
    from llr.analysis.effective_ratio import method_family
    from llr.reporting.ablation import ablation_summary

    plt = pyplot()
    t = need(pd.read_csv(inputs[0]), ABLATION_NEED, inputs[0])
    summary = ablation_summary(t)
    key = ["dataset", "seed", "erm", "method", "heldout"]
    wide = t.pivot_table(index=key, columns="mode", values="test_wga", aggfunc="first").reset_index()
    for c in ("cached", "through_backbone"):
        if c not in wide.columns:
            raise LLRError(f"{inputs[0]}: no run in mode {c!r}; expected both cached and through_backbone runs")
    wide = wide.dropna(subset=["cached", "through_backbone"])
    datasets = dataset_order(t["dataset"])
    fig, axes = panels(plt, len(datasets), width=3.6, height=3.4)
    for ax, ds in zip(axes, datasets):
        w = wide[wide["dataset"] == ds]
        fams = w.apply(lambda r: method_family(r["method"], r["heldout"]), axis=1) if len(w) else pd.Series(dtype=str)
        for fam in sorted(dict.fromkeys(fams), key=lambda f: list(FIG8_STYLE).index(f) if f in FIG8_STYLE else 99):
            f = w[fams == fam]
            mk, c = FIG8_STYLE.get(fam, ("x", "black"))
            ax.plot(
                100 * f["cached"],
                100 * f["through_backbone"],
                ls="none",
                marker=mk,
                color=c,
                ms=5,
                alpha=0.8,
                label=fam,
            )
        ax.plot([0, 100], [0, 100], color="0.5", ls="--", lw=1, label="equal WGA")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_aspect("equal")
        ax.set_xlabel("cached embeddings: test WGA (%)")
        ax.set_ylabel("through the network (authors'): test WGA (%)")
        ax.set_title(dataset_title(ds))
        ax.grid(alpha=0.3)
        s = summary[summary["dataset"] == ds]
        if len(s):
            s = s.iloc[0]
            ax.text(
                0.98,
                0.03,
                f"mean |diff| {100 * s['mean_abs_wga_diff']:.1f} pts\nmean diff "
                f"{100 * s['mean_wga_diff']:+.1f} pts\n{int(s['n_pairs'])} runs, {s['epochs']} epochs",
                transform=ax.transAxes,
                ha="right",
                va="bottom",
                fontsize=6.5,
                bbox=dict(boxstyle="round", fc="white", ec="0.8", alpha=0.85),
            )
    finish(
        fig,
        axes,
        "Each point: one LLR / CB-LLR run (ERM cell, held-out cell, seed) trained on cached eval-mode "
        "embeddings (x) and through the frozen network in training mode with augmentation, BatchNorm batch "
        "statistics and dropout, as the authors (y), same epochs, initial head and example order.",
    )
    save_figure(fig, outputs[:2])
    plt.close(fig)
