"""Table 2 (paper Table 2; docs/design.md, "Groups"): group counts and training-set
proportions of every dataset, the paper's printed counts and where a dataset departs from them.

Groups are ``g = y * |S| + s`` (paper section 1). Counts come from the standardized metadata
tables written by ``prepare``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from llr.data.registry import SPLITS, get_spec, read_metadata
from llr.errors import LLRError
from llr.io import atomic_path, write_csv

TABLE2_COLUMNS = (
    "dataset",
    "y",
    "s",
    "g",
    "class_name",
    "spurious_name",
    "train",
    "val",
    "test",
    "p_y",
    "p_g",
    "p_y_given_s",
)

# The paper's Table 2 (the standard group counts), per split, in group order
# g = y * 2 + s. Waterbirds: the paper prints 2225 for the two landbird test
# groups; the metadata file has 2255 (2 * 2255 + 2 * 642 = 5794, the CUB test
# size), so compare_table2 reports those two cells as mismatches.
PAPER_TABLE2: dict[str, dict[str, tuple[int, ...]]] = {
    "waterbirds": {  # landbird/land, landbird/water, waterbird/land, waterbird/water
        "train": (3498, 184, 56, 1057),
        "val": (467, 466, 133, 133),
        "test": (2225, 2225, 642, 642),
    },
    "celeba": {  # non-blond/female, non-blond/male, blond/female, blond/male
        "train": (71629, 66874, 22880, 1387),
        "val": (8535, 8276, 2874, 182),
        "test": (9767, 7535, 2480, 180),
    },
    "civilcomments": {  # non-toxic/no-identity, non-toxic/identity, toxic/no-identity, toxic/identity
        "train": (148186, 90337, 12731, 17784),
        "val": (25159, 14966, 2111, 2944),
        "test": (74780, 43778, 6455, 8769),
    },
    "multinli": {  # (contradiction, entailment, neutral) x (no negation, negation)
        "train": (57498, 11158, 67376, 1521, 66630, 1992),
        "val": (22814, 4634, 26949, 613, 26655, 797),
        "test": (34597, 6655, 40496, 886, 39930, 1148),
    },
}


def table2(metas: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per dataset x group: counts per split and, on the train split,
    p_y = P(class y), p_g = P(group g) and p_y_given_s = P(y | s)."""
    rows = []
    for name, meta in metas.items():
        spec = get_spec(name)
        G, S = spec.n_groups, spec.n_spurious
        g = meta["g"].to_numpy(dtype=np.int64)
        split = meta["split"].to_numpy()
        counts = {sp: np.bincount(g[split == sp], minlength=G)[:G] for sp in SPLITS}
        tr = counts["train"].astype(np.float64)
        n = tr.sum()
        by_ys = tr.reshape(spec.n_classes, S)  # [y, s]
        with np.errstate(invalid="ignore", divide="ignore"):
            p_g = tr / n
            p_y = np.repeat(by_ys.sum(1) / n, S)
            p_y_given_s = (by_ys / by_ys.sum(0, keepdims=True)).ravel()
        ys = np.arange(G)
        rows.append(
            pd.DataFrame(
                {
                    "dataset": name,
                    "y": ys // S,
                    "s": ys % S,
                    "g": ys,
                    "class_name": [spec.class_names[k // S] for k in ys],
                    "spurious_name": [spec.spurious_names[k % S] for k in ys],
                    **{sp: counts[sp].astype(np.int64) for sp in SPLITS},
                    "p_y": p_y,
                    "p_g": p_g,
                    "p_y_given_s": p_y_given_s,
                }
            )
        )
    if not rows:
        return pd.DataFrame(columns=list(TABLE2_COLUMNS))
    return pd.concat(rows, ignore_index=True)[list(TABLE2_COLUMNS)]


def compare_table2(df: pd.DataFrame) -> pd.DataFrame:
    """Long table ``dataset,g,split,paper,ours,match`` for the datasets of
    ``df`` that the paper's Table 2 covers."""
    out = []
    for row in df.itertuples(index=False):
        paper = PAPER_TABLE2.get(row.dataset)
        if paper is None:
            continue
        for sp in SPLITS:
            p, o = int(paper[sp][row.g]), int(getattr(row, sp))
            out.append((row.dataset, int(row.g), sp, p, o, p == o))
    return pd.DataFrame(out, columns=["dataset", "g", "split", "paper", "ours", "match"])


def table2_markdown(df: pd.DataFrame) -> str:
    """Markdown rendering of ``table2`` output, with the mismatches against
    the paper's printed counts listed below it."""
    head = ["dataset", "group (y/s)", "g", "train", "val", "test", "P(y)", "P(g)", "P(y\\|s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * 6]
    for r in df.itertuples(index=False):
        cells = [
            r.dataset,
            f"{r.class_name} / {r.spurious_name}",
            str(r.g),
            f"{r.train:,}",
            f"{r.val:,}",
            f"{r.test:,}",
            f"{r.p_y:.3f}",
            f"{r.p_g:.3f}",
            f"{r.p_y_given_s:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n\nP(.) are shares of the train split.\n"
    cmp = compare_table2(df)
    if len(cmp):
        bad = cmp[~cmp["match"]]
        if len(bad):
            text += "\nDifferences from the counts printed in the paper's Table 2:\n\n"
            for r in bad.itertuples(index=False):
                name = get_spec(r.dataset).group_name(r.g)
                text += f"- {r.dataset} {r.split} g{r.g} ({name}): paper {r.paper}, ours {r.ours}\n"
            if (
                (bad["dataset"] == "waterbirds")
                & (bad["split"] == "test")
                & (bad["paper"] == 2225)
                & (bad["ours"] == 2255)
            ).any():
                text += (
                    "\nWaterbirds test: the paper prints 2225 for both landbird groups; the "
                    "metadata has 2255 (2 x 2255 + 2 x 642 = 5794, the CUB test size).\n"
                )
        else:
            text += "\nAll counts match the paper's Table 2.\n"
    return text


def write_table2(metadata_csvs: list[str], out_csv: str | os.PathLike, out_md: str | os.PathLike) -> pd.DataFrame:
    """Table 2 from ``results/{dataset}/metadata.csv`` files (dataset = the
    parent folder's name), written atomically as CSV and Markdown."""
    for p in metadata_csvs:
        if not Path(p).is_file():
            raise LLRError(f"table2: metadata file {p} missing; expected results/{{dataset}}/metadata.csv from prepare")
    metas = {Path(p).parent.name: read_metadata(str(p)) for p in metadata_csvs}
    df = table2(metas)
    md = table2_markdown(df)
    write_csv(out_csv, df)
    with atomic_path(out_md) as tmp:
        tmp.write_text(md)
    return df
