"""The caching ablation's tidy tables: cached versus through-network last-layer retraining
(:mod:`llr.lastlayer.through_backbone`), per run and summarized per dataset."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from llr.errors import LLRError
from llr.io import read_json, write_csv

ABLATION_COLUMNS = (
    "dataset",
    "seed",
    "erm",
    "method",
    "heldout",
    "mode",
    "epochs",
    "test_wga",
    "test_mean_acc",
    "effective_group_ratio",
)
SUMMARY_COLUMNS = (
    "dataset",
    "n_pairs",
    "n_seeds",
    "epochs",
    "mean_abs_wga_diff",
    "seed_std_mean_abs_wga_diff",
    "mean_wga_diff",
    "max_abs_wga_diff",
    "mean_abs_mean_acc_diff",
    "pearson_r",
)
# result folder -> mode: the standard cached runs, cached runs at the
# ablation's epoch count, and the through-backbone runs
_MODE_DIRS = {"lastlayer": "cached", "lastlayer_matched": "cached", "lastlayer_backbone": "through_backbone"}
_AB_PATH = (
    r"(?:^|/)(?P<dataset>[^/]+)/seed(?P<seed>\d+)/(?P<kind>lastlayer|lastlayer_matched|lastlayer_backbone)/"
    r"(?P<erm>[^/]+)/(?P<method>[^/]+)/(?P<heldout>[^/]+)/metrics\.json$"
)


def ablation_table(files: list[str]) -> pd.DataFrame:
    """One row per run and mode (cached | through_backbone), columns
    ``ABLATION_COLUMNS``, from last-layer metrics.json files under
    ``lastlayer/`` or ``lastlayer_matched/`` (cached) and
    ``lastlayer_backbone/`` (signatures verified). A run given twice in one
    mode is an error (pass either the standard or the matched cached run)."""
    rows = []
    for f in dict.fromkeys(files):
        m = re.search(_AB_PATH, Path(f).as_posix())
        if not m:
            raise LLRError(
                f"{f}: not a run path <dataset>/seed<k>/(lastlayer|lastlayer_matched|lastlayer_backbone)/"
                f"<erm>/<method>/<heldout>/metrics.json"
            )
        d = read_json(f, verify_signature=True)
        test = (d.get("metrics") or {}).get("test")
        if not isinstance(test, dict) or "wga" not in test:
            raise LLRError(f"{f}: key metrics.test.wga missing")
        ep = d.get("epochs", (d.get("hp") or {}).get("epochs"))
        rows.append(
            {
                "dataset": m["dataset"],
                "seed": int(m["seed"]),
                "erm": m["erm"],
                "method": m["method"],
                "heldout": m["heldout"],
                "mode": _MODE_DIRS[m["kind"]],
                "epochs": np.nan if ep is None else int(ep),
                "test_wga": float(test["wga"]),
                "test_mean_acc": float(test.get("mean_acc", np.nan)),
                "effective_group_ratio": float(d.get("effective_group_ratio") or np.nan),
            }
        )
    df = pd.DataFrame(rows, columns=list(ABLATION_COLUMNS))
    key = ["dataset", "seed", "erm", "method", "heldout", "mode"]
    dup = df.duplicated(key, keep=False)
    if dup.any():
        r = df[dup].iloc[0]
        raise LLRError(
            f"ablation: run {r['dataset']}/seed{r['seed']}/{r['erm']}/{r['method']}/{r['heldout']} given "
            f"twice in mode {r['mode']}; pass the standard or the epoch-matched cached run, not both"
        )
    return df.sort_values(key, ignore_index=True)


def ablation_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, over the runs present in both modes: d = through-backbone
    minus cached test WGA; mean |d| (and the std over seeds of each seed's
    mean |d|), mean d, max |d|, mean |difference| of test mean accuracy,
    and the Pearson r of the two modes' WGA. Columns ``SUMMARY_COLUMNS``."""
    key = ["dataset", "seed", "erm", "method", "heldout"]
    wide = table.pivot_table(index=key, columns="mode", values=["test_wga", "test_mean_acc", "epochs"], aggfunc="first")
    rows = []
    if not {("test_wga", "cached"), ("test_wga", "through_backbone")} <= set(wide.columns):
        return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    wide = wide.dropna(subset=[("test_wga", "cached"), ("test_wga", "through_backbone")])
    for ds, w in wide.groupby(level="dataset", sort=False):
        d = w[("test_wga", "through_backbone")] - w[("test_wga", "cached")]
        dm = w[("test_mean_acc", "through_backbone")] - w[("test_mean_acc", "cached")]
        per_seed = d.abs().groupby(level="seed").mean()
        eps = sorted({int(v) for v in w["epochs"].to_numpy().ravel() if np.isfinite(v)})
        a, b = w[("test_wga", "cached")].to_numpy(float), w[("test_wga", "through_backbone")].to_numpy(float)
        r = float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 and np.ptp(a) > 0 and np.ptp(b) > 0 else np.nan
        rows.append(
            {
                "dataset": ds,
                "n_pairs": int(len(d)),
                "n_seeds": int(per_seed.size),
                "epochs": "/".join(str(e) for e in eps),
                "mean_abs_wga_diff": float(d.abs().mean()),
                "seed_std_mean_abs_wga_diff": float(per_seed.std(ddof=1)) if per_seed.size > 1 else 0.0,
                "mean_wga_diff": float(d.mean()),
                "max_abs_wga_diff": float(d.abs().max()),
                "mean_abs_mean_acc_diff": float(dm.abs().mean()),
                "pearson_r": r,
            }
        )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def write_ablation_tables(files: list[str], out_table: str, out_summary: str) -> tuple:
    """Write ``ablation_caching.csv`` (:func:`ablation_table`) and
    ``ablation_caching_summary.csv`` (:func:`ablation_summary`)."""
    if not files:
        raise LLRError("ablation_caching: no metrics.json given")
    table = ablation_table(files)
    summary = ablation_summary(table)
    write_csv(out_table, table)
    write_csv(out_summary, summary)
    return table, summary
