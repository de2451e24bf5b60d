"""Shared look of every figure and table: the one dataset order (Waterbirds, CelebA,
CivilComments, MultiNLI, each stand-in after its counterpart), titles, stand-in notes,
the method-family palette and the matplotlib plumbing (panels, legend, footnote, saving)."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from llr.io import atomic_path

PAPER_STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
REAL_ORDER = ("waterbirds", "celeba", "civilcomments", "multinli")
REAL_TITLES = {"waterbirds": "Waterbirds", "celeba": "CelebA", "civilcomments": "CivilComments", "multinli": "MultiNLI"}
MODE_LABELS = {"none": "none", "subsetting": "subsetting", "upsampling": "upsampling", "upweighting": "upweighting"}
DEVIATION_NOTE = (
    "LLR trains on cached eval-mode embeddings (no augmentation); the authors ran LLR "
    "through the frozen network with training augmentation."
)


# --------------------------------------------------------------------------
# Datasets: names, order, titles
# --------------------------------------------------------------------------


def real_name(ds: str) -> str:
    """The real dataset a name stands for: ``synth_<real>`` -> ``<real>``."""
    return ds[6:] if ds.startswith("synth_") and ds[6:] in REAL_ORDER else ds


def is_stand_in(ds: str) -> bool:
    """Whether ``ds`` is a synthetic stand-in (``synth_<real>``)."""
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


def dataset_title(ds: str) -> str:
    """Panel title: ``synth_celeba`` -> "Synthetic CelebA"; unknown names as they are."""
    real = real_name(ds)
    if real in REAL_TITLES:
        return ("Synthetic " if is_stand_in(ds) else "") + REAL_TITLES[real]
    return ds


DATASET_TITLES = {ds: dataset_title(ds) for ds in (*REAL_ORDER, *(f"synth_{r}" for r in REAL_ORDER))}


def stand_in_note(ds: str) -> str:
    """The note of a claim row judged on a stand-in (empty for a real dataset)."""
    return (
        f"synthetic stand-in, judged against the paper's claim for {dataset_title(real_name(ds))}"
        if is_stand_in(ds)
        else ""
    )


# --------------------------------------------------------------------------
# Plumbing
# --------------------------------------------------------------------------


def pyplot():
    """matplotlib.pyplot on the Agg backend with PAPER_STYLE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(PAPER_STYLE)
    return plt


def save_figure(fig, paths: list[str]) -> None:
    """Write ``fig`` atomically to each path, the format from its extension (png, pdf)."""
    for p in paths:
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=os.path.splitext(p)[1][1:], dpi=200, bbox_inches="tight")


# --------------------------------------------------------------------------
# Drawing helpers
# --------------------------------------------------------------------------


def panels(plt, n: int, width: float = 4.2, height: float = 3.4, sharey: bool = False, rows: int = 1):
    """A figure of ``rows`` x ``n`` panels; the axes (a row, or a 2-d array for rows > 1)."""
    fig, axes = plt.subplots(
        rows,
        n,
        figsize=(width * n, height * rows),
        squeeze=False,
        sharey=sharey,
        gridspec_kw={"wspace": 0.32, "hspace": 0.45},
    )
    return fig, (axes[0] if rows == 1 else axes)


def footnote(fig, text: str) -> None:
    """A footnote under the panels, wrapped to the figure's width."""
    import textwrap

    chars = max(70, int(fig.get_figwidth() * 17))
    renderer = fig.canvas.get_renderer()
    bottom = min(ax.get_tightbbox(renderer).y0 for ax in fig.axes) / fig.bbox.height
    fig.text(0.5, min(bottom, 0.0) - 0.02, textwrap.fill(text, chars), fontsize=8, ha="center", va="top")


def finish(fig, axes, note: str | None = None, legend_ax=None) -> None:
    """One legend right of the last panel (labels of ``legend_ax`` or of every panel) and the footnote."""
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
        footnote(fig, note)


def std_line(ax, x: float) -> None:
    """Dashed vertical line at the standard epoch count, labelled in place."""
    ax.axvline(x, color="gray", ls="--", lw=1, label="standard epoch count")
    ax.annotate(
        f"{x:g}",
        (x, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(2, -2),
        textcoords="offset points",
        ha="left",
        va="top",
        fontsize=7,
        color="gray",
    )


# Palette of the last-layer method families (llr.analysis.effective_ratio.method_family):
# marker and colour in Figure 8 and the caching-ablation figure.
FIG8_STYLE = {  # family -> marker, colour
    "LLR (held-out subset)": ("o", "tab:blue"),
    "LLR (held-out sampled)": ("s", "tab:cyan"),
    "LLR (whole held-out)": ("D", "tab:purple"),
    "DFR": ("^", "tab:red"),
    "CB-LLR": ("v", "tab:orange"),
    "AFR (chosen)": ("*", "tab:green"),
    "AFR gamma=0": ("P", "tab:olive"),
    "AFR grid": (".", "0.55"),
}
