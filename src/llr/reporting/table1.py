"""Table 1 (paper Appendix A): per group, Pearson r between the LLR head's margins and
its test accuracy, beside the paper's r; CSV, Markdown and the jackknife over seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd

from llr.io import atomic_path, write_csv
from llr.reporting.frames import need
from llr.reporting.style import DEVIATION_NOTE, dataset_order, dataset_title, is_stand_in, real_name

# The paper's Table 1 (Appendix A): Pearson r per group, minimum and average margin.
PAPER_TABLE1: dict[str, dict[str, tuple[float, ...]]] = {
    "waterbirds": {"minimum": (0.349, 0.380, -0.026, 0.282), "average": (-0.418, 0.585, 0.662, -0.185)},
    "celeba": {"minimum": (0.245, 0.326, 0.385, 0.370), "average": (0.469, 0.290, 0.475, 0.495)},
    "civilcomments": {"minimum": (0.214, 0.237, 0.227, 0.113), "average": (0.209, 0.271, 0.298, 0.247)},
    "multinli": {
        "minimum": (0.574, 0.266, 0.027, 0.726, 0.492, 0.591),
        "average": (0.865, 0.926, 0.858, 0.910, 0.823, 0.897),
    },
}
MARGIN_KINDS = {"min": "minimum", "avg": "average"}
TABLE1_COLUMNS = ["dataset", "margin", "group", "r", "p", "n_points", "paper_r"]
TABLE1_WHAT = (
    "Each cell is Pearson's r, over seeds x LLR checkpoints, between one group's margin of the LLR "
    "head on the held-out set it was trained on (minimum: over the group's correctly classified "
    "held-out examples; average: over all its held-out examples) and the same head's test accuracy "
    "on that group. Margin of a head f(x) = W x + b: (f_y(x) - max_{k!=y} f_k(x)) / "
    "(sqrt(2) ||W - mean_k W_k||_F), which is y f(x) / ||theta|| for two classes."
)


def _paper_r(ds: str, margin: str, group: int) -> float:
    vals = PAPER_TABLE1.get(real_name(ds), {}).get(margin, ())
    return float(vals[group]) if 0 <= group < len(vals) else float("nan")


def table1_data(margins: pd.DataFrame) -> pd.DataFrame:
    """Table 1 tidy (paper Appendix A): per dataset, margin kind (minimum /
    average) and group, r and p over seeds x LLR checkpoints
    (llr.analysis.margins.margin_correlation by dataset and group), n_points and the
    paper's r (a stand-in gets its counterpart's)."""
    from llr.analysis.margins import margin_correlation

    corr = margin_correlation(margins, by=["dataset", "group"])
    out = corr.assign(margin=corr["kind"].map(MARGIN_KINDS), p=corr["p_value"], group=corr["group"].astype(int))
    out["paper_r"] = [_paper_r(d, m, g) for d, m, g in zip(out["dataset"], out["margin"], out["group"])]
    order = {ds: i for i, ds in enumerate(dataset_order(out["dataset"]))}
    out = out.assign(_o=out["dataset"].map(order), _k=out["margin"].map({"minimum": 0, "average": 1}))
    return out.sort_values(["_o", "_k", "group"])[TABLE1_COLUMNS].reset_index(drop=True)


def table1_pooled(margins: pd.DataFrame) -> pd.DataFrame:
    """The r pooled over groups x seeds x checkpoints, per dataset and kind."""
    from llr.analysis.margins import margin_correlation

    corr = margin_correlation(margins, by=["dataset"])
    return corr.assign(margin=corr["kind"].map(MARGIN_KINDS))


def format_r(v: float) -> str:
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
        lines = [
            f"### {dataset_title(ds)}"
            + (f" (paper: {dataset_title(real_name(ds))})" if is_stand_in(ds) and has_paper else ""),
            "",
            "| " + " | ".join(head) + " |",
            "|---|" + "---:|" * (len(head) - 1),
        ]
        for margin in ("minimum", "average"):
            m = d[d["margin"] == margin].set_index("group")
            cells = []
            for g in groups:
                ours, paper = m.loc[g, "r"], m.loc[g, "paper_r"]
                cells.append(format_r(ours) + (f" ({paper:.3f})" if np.isfinite(paper) else ""))
            if pooled is not None:
                p = pooled[(pooled["dataset"] == ds) & (pooled["margin"] == margin)]
                cells.append(format_r(float(p["r"].iloc[0])) if len(p) else "n.a.")
            lines.append(f"| {margin} margin | " + " | ".join(cells) + " |")
        n = d["n_points"]
        lines += [
            "",
            f"Points per cell: {int(n.min())}"
            + (f" to {int(n.max())}" if n.max() != n.min() else "")
            + " (seeds x LLR checkpoints).",
        ]
        parts.append("\n".join(lines))
    return (
        "\n\n".join(parts)
        + "\n\nCells: our Pearson r (the paper's r in parentheses). "
        + TABLE1_WHAT
        + "\n\nCheckpoints are LLR epochs (SGD lr 1e-2, batch 32). "
        + DEVIATION_NOTE
        + "\n"
    )


def table1(inputs: list[str], outputs: list[str], params: dict) -> None:
    """Table 1 per group, as the paper lays it out (Appendix A):
    inputs = [table1_margins.csv] (llr.analysis.margins.margin_records rows stacked
    with dataset and seed), outputs = [table1.csv (TABLE1_COLUMNS), table1.md]."""
    df = need(
        pd.read_csv(inputs[0]), {"dataset", "seed", "epoch", "group", "min_margin", "avg_margin", "test_acc"}, inputs[0]
    )
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
