"""Figure 8: effective group ratios of every last-layer method, the table,
the correlations and the claim (llr.analysis.effective_ratio; issue "Beyond the paper")."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llr.analysis.effective_ratio import (
    FIG8_COLUMNS,
    afr_ratios,
    effective_ratio_table,
    plan_ratios,
    pooled_from_mass,
    pooled_group_ratio,
    ratio_correlations,
)
from llr.data.registry import get_spec
from llr.errors import LLRError
from llr.io import write_json
from llr.lastlayer import fit, registry
from llr.train.balancing import group_ratio_sampling_weights

WB = get_spec("synth_waterbirds")  # groups 0..3; class 0: majority g0, class 1: majority g3
MN = get_spec("synth_multinli")


def _cell(counts):
    g = np.repeat(np.arange(len(counts)), counts)
    return g // 2, g


# class 0: 6 majority / 2 minority; class 1: 1 minority / 4 majority
Y, G = _cell([6, 2, 1, 4])


@pytest.mark.parametrize(
    "method, effective, pooled",
    [
        ("llr", (2 / 6 + 1 / 4) / 2, 3 / 10),  # the cell as it is
        ("dfr_subsetting", 1.0, 1.0),  # one example per group
        ("dfr_upsampling", 1.0, 1.0),  # equal group masses
        ("dfr_upweighting", 1.0, 1.0),  # weights 6/n_g: mass 6 per group
        ("cbllr_upweighting", (2 / 6 + 1 / 4) / 2, 3.6 / 12.4),  # class 1 weight 8/5: minority 2+1.6, majority 6+6.4
        ("cbllr_upsampling", (2 / 6 + 1 / 4) / 2, 0.45 / 1.55),  # class masses equal: g 6/8, 2/8, 1/5, 4/5
    ],
)
def test_plan_ratios_hand_computed(method, effective, pooled):
    r = plan_ratios(method, Y, G, seed=3, spec=WB)
    assert r["effective_ratio"] == pytest.approx(effective, abs=1e-12)
    assert r["pooled_ratio"] == pytest.approx(pooled, abs=1e-12)


def test_class_subsetting_ratio_is_that_of_the_kept_examples():
    y, g = _cell([30, 10, 5, 12])
    from llr.analysis.effective_ratio import balanced_plan

    pos, sw, lw = balanced_plan("cbllr_subsetting", y, g, seed=5)
    assert sw is None and lw is None and np.bincount(y[pos]).tolist() == [17, 17]
    c = np.bincount(g[pos], minlength=4)
    expect = (c[1] / c[0] + c[2] / c[3]) / 2
    assert plan_ratios("cbllr_subsetting", y, g, 5, WB)["effective_ratio"] == pytest.approx(expect)


def test_sampled_construction_reaches_its_ratio():
    y, g = _cell([40, 10, 6, 30])
    sw = group_ratio_sampling_weights(y, g, 0.5, WB)
    r = plan_ratios("llr", y, g, 1, WB, sample_weights=sw)
    assert r["effective_ratio"] == pytest.approx(0.5)
    assert r["pooled_ratio"] == pytest.approx(0.5)  # class-balanced sampler: every class at 1 : 0.5
    with pytest.raises(LLRError, match="only be used with plain LLR"):
        plan_ratios("cbllr_upsampling", y, g, 1, WB, sample_weights=sw)


def _logits_for(p_true: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Two-class logits whose softmax gives the true class probability p."""
    z = np.zeros((len(y), 2))
    z[np.arange(len(y)), y] = np.log(p_true / (1 - p_true))
    return z


def test_afr_ratios_hand_computed():
    y = np.array([0, 0, 0, 1, 1, 1])
    g = np.array([0, 0, 1, 2, 3, 3])
    p = np.array([0.9, 0.9, 0.2, 0.3, 0.8, 0.8])
    z = _logits_for(p, y)
    e = math.exp
    r = afr_ratios(z, y, g, 2.0, WB)
    per_class = (e(-0.4) / (2 * e(-1.8)) + e(-0.6) / (2 * e(-1.6))) / 2
    assert r["effective_ratio"] == pytest.approx(per_class, rel=1e-12)
    assert r["pooled_ratio"] == pytest.approx((e(-0.4) + e(-0.6)) / (2 * e(-1.8) + 2 * e(-1.6)), rel=1e-12)
    r0 = afr_ratios(z, y, g, 0.0, WB)  # gamma = 0: class-balanced upweighting, the cell's own ratio
    assert r0["effective_ratio"] == pytest.approx(0.5) and r0["pooled_ratio"] == pytest.approx(0.5)
    # class balancing moves the pooled ratio only: class 1 doubled
    y2, g2 = np.append(y, [1, 1, 1]), np.append(g, [3, 3, 3])
    p2 = np.append(p, [0.8, 0.8, 0.8])
    r2 = afr_ratios(_logits_for(p2, y2), y2, g2, 0.0, WB)
    assert r2["effective_ratio"] == pytest.approx((1 / 2 + 1 / 5) / 2)
    # class 0 (3 examples) weight 6/3 = 2: minority 1*2 + 1, majority 2*2 + 5
    assert r2["pooled_ratio"] == pytest.approx((2 + 1) / (4 + 5))


def test_pooled_from_mass_equals_pooled_of_weights():
    rng = np.random.default_rng(0)
    y, g = _cell([20, 4, 3, 9, 11, 2])
    w = rng.uniform(0.1, 3, len(y))
    mass = np.bincount(g, weights=w, minlength=6)
    assert pooled_from_mass((mass / mass.sum()).tolist(), np.bincount(g).tolist(), MN) == pytest.approx(
        pooled_group_ratio(y, g, w, MN)
    )


def _task_data(seed=0, n=160, d=6):
    """Random held-out and validation data with a spurious feature."""
    rng = np.random.default_rng(seed)
    g = rng.choice(4, size=n, p=[0.5, 0.1, 0.1, 0.3])
    y = g // 2
    X = rng.normal(size=(n, d)) + np.c_[2.0 * y - 1, 2.0 * (g % 2) - 1, np.zeros((n, d - 2))]
    return X.astype(np.float32), y, g


@pytest.mark.parametrize(
    "method",
    [
        "llr",
        "dfr_subsetting",
        "dfr_upsampling",
        "dfr_upweighting",
        "cbllr_subsetting",
        "cbllr_upsampling",
        "cbllr_upweighting",
    ],
)
def test_plan_ratios_match_what_the_lastlayer_job_records(method):
    X, y, g = _task_data()
    meta = pd.DataFrame({"y": y, "g": g})
    roles = np.array(["heldout"] * 120 + ["val"] * 40, dtype=object)
    head = fit.torch_linear_init(X.shape[1], 2, 0)
    _, _, info = registry.run_method(
        method, X, meta, roles, np.arange(120), np.arange(120, 160), head, {"epochs": 1}, 7, 1, WB
    )
    r = plan_ratios(method, y[:120], g[:120], 7, WB)
    assert r["effective_ratio"] == pytest.approx(info["effective_group_ratio"], abs=1e-12)
    counts = np.bincount(g[:120], minlength=4).tolist()
    assert pooled_from_mass(info["group_mass"], counts, WB) == pytest.approx(r["pooled_ratio"], abs=1e-9)


def test_afr_grid_rows_record_ratio_and_test_wga():
    """The AFR job's grid rows: each point's effective ratio is that of its
    weights on the ERM logits; test WGA is reported per point."""
    X, y, g = _task_data(1, n=200)
    meta = pd.DataFrame({"y": y, "g": g})
    roles = np.array(["heldout"] * 120 + ["val"] * 40 + ["test"] * 40, dtype=object)
    W0, b0 = (np.asarray(a, np.float32) for a in fit.torch_linear_init(X.shape[1], 2, 3))
    rep = {"test": (X[160:], y[160:], g[160:], None)}
    hp = {"gammas": [0.0, 2.0, 8.0], "lambdas": [0.0, 0.5], "epochs": 5, "lr": 0.1}
    W, b, info = registry.run_method(
        "afr", X, meta, roles, np.arange(120), np.arange(120, 160), (W0, b0), hp, 1, 1, WB, report_sets=rep
    )
    logits = X[:120].astype(np.float64) @ W0.T.astype(np.float64) + b0
    grid = info["afr"]["grid"]
    assert len(grid) == 6
    for row in grid:
        assert row["effective_group_ratio"] == pytest.approx(
            afr_ratios(logits, y[:120], g[:120], row["gamma"], WB)["effective_ratio"], rel=1e-9
        )
        assert 0.0 <= row["test_wga"] <= 1.0
    best = [r for r in grid if r["gamma"] == info["afr"]["gamma"] and r["lambda"] == info["afr"]["lambda"]][0]
    ev = fit.evaluate_head(W, b, X[160:], y[160:], g[160:], 4)
    assert best["test_wga"] == pytest.approx(ev["wga"])


def _metrics(path: Path, wga: float, eff: float, **extra) -> str:
    d = {
        "dataset": "synth_waterbirds",
        "effective_group_ratio": eff,
        "heldout_group_ratio": 0.2,
        "train_group_ratio": 0.1,
        "heldout_construction": "subset",
        "group_mass": [0.4, 0.1, 0.1, 0.4],
        "train_cell_group_counts": [40, 10, 10, 40],
        "metrics": {"test": {"acc_by_group": [wga] * 4, "wga": wga, "mean_acc": 0.9}},
        **extra,
    }
    write_json(path, d)
    return str(path)


def test_effective_ratio_table(tmp_path):
    base = tmp_path / "results/synth_waterbirds/seed1/lastlayer"
    grid = [
        {
            "gamma": 4.0,
            "lambda": 0.0,
            "val_wga": 0.5,
            "effective_group_ratio": 0.6,
            "test_wga": 0.7,
            "test_mean_acc": 0.8,
            "group_mass": [0.3, 0.2, 0.2, 0.3],
        },
        {"gamma": 8.0, "lambda": 0.1, "val_wga": 0.6, "effective_group_ratio": 1.2, "test_wga": 0.65},
    ]
    files = [
        _metrics(base / "train_ratio0.2_none/llr/heldout_ratio0.5/metrics.json", 0.6, 0.5),
        _metrics(base / "train_none/llr/heldout_sampled0.1/metrics.json", 0.3, 0.1),
        _metrics(base / "train_class_upweighting/cbllr_upweighting/heldout/metrics.json", 0.5, 0.25),
        _metrics(
            base / "train_none/afr/heldout/metrics.json", 0.7, 0.6, afr={"gamma": 4.0, "lambda": 0.0, "grid": grid}
        ),
    ]
    t = effective_ratio_table(files + files[:1])  # a file listed twice counts once
    assert list(t.columns) == list(FIG8_COLUMNS)
    assert len(t) == 6 and (t["point"] == "grid").sum() == 2
    fam = dict(zip(t["method"] + "/" + t["heldout"] + "/" + t["point"], t["family"]))
    assert fam["llr/heldout_ratio0.5/run"] == "LLR (held-out subset)"
    assert fam["llr/heldout_sampled0.1/run"] == "LLR (held-out sampled)"
    assert fam["cbllr_upweighting/heldout/run"] == "CB-LLR" and fam["afr/heldout/run"] == "AFR (chosen)"
    g = t[t["point"] == "grid"].set_index("afr_gamma")
    assert g.loc[8.0, "effective_ratio"] == 1.2 and g.loc[8.0, "test_wga"] == 0.65 and g.loc[8.0, "afr_lambda"] == 0.1
    assert g.loc[4.0, "pooled_ratio"] == pytest.approx(0.4 / 0.6)
    assert np.isnan(g.loc[8.0, "pooled_ratio"])  # no group_mass recorded
    run = t[(t["point"] == "run") & (t["method"] == "afr")].iloc[0]
    assert run["afr_gamma"] == 4.0 and run["pooled_ratio"] == pytest.approx(0.25)
    bad = _metrics(
        base / "train_none/afr_gamma0/heldout/metrics.json",
        0.7,
        0.6,
        afr={"gamma": 0.0, "lambda": 0.0, "grid": [{"gamma": 0.0, "lambda": 0.0, "val_wga": 0.5}]},
    )
    with pytest.raises(LLRError, match=r"afr.grid\[0\]: key 'effective_group_ratio' missing"):
        effective_ratio_table([bad])
    with pytest.raises(LLRError, match="not a last-layer run path"):
        effective_ratio_table([str(tmp_path / "x/metrics.json")])


def _synthetic_table(slope: float, noise: float, seeds=(1, 2, 3), seed_rng=0) -> pd.DataFrame:
    """Runs whose WGA is slope * log(ratio) plus noise."""
    rng = np.random.default_rng(seed_rng)
    rows = []
    ratios = [0.05, 0.1, 0.2, 0.5, 1.0, 0.3, 0.7]
    for s in seeds:
        for i, r in enumerate(ratios):
            rows.append(
                {
                    "dataset": "synth_waterbirds",
                    "seed": s,
                    "erm": "train_none",
                    "method": f"m{i}",
                    "heldout": "heldout",
                    "family": "DFR",
                    "point": "run",
                    "effective_ratio": r,
                    "pooled_ratio": r,
                    "test_wga": 0.5 + slope * math.log(r) + noise * rng.normal(),
                }
            )
    return pd.DataFrame(rows)


def test_ratio_correlations_brute_force():
    t = _synthetic_table(0.1, 0.02)
    c = ratio_correlations(t)
    row = c[(c["points"] == "runs") & (c["ratio"] == "effective")].iloc[0]
    from scipy.stats import pearsonr, spearmanr

    x, y = np.log(t["effective_ratio"]), t["test_wga"]
    assert row["pearson_r"] == pytest.approx(pearsonr(x, y).statistic)
    assert row["spearman_r"] == pytest.approx(spearmanr(x, y).statistic)
    per = [spearmanr(np.log(d["effective_ratio"]), d["test_wga"]).statistic for _, d in t.groupby("seed")]
    assert row["spearman_r_seed_mean"] == pytest.approx(np.mean(per))
    assert row["spearman_r_seed_std"] == pytest.approx(np.std(per, ddof=1))
    assert row["n_points"] == 21 and row["n_seeds"] == 3


def test_claim_fig8_holds_fails_and_is_inconclusive():
    from llr.reporting.claims import claims_fig8

    yes = claims_fig8(_synthetic_table(0.1, 0.005))
    assert [r["holds"] for r in yes] == ["yes", "yes"]
    assert yes[0]["variant"].startswith("per-class") and "Spearman" in yes[0]["ours"]
    no = claims_fig8(_synthetic_table(-0.1, 0.005))  # WGA falls with the ratio
    assert no[0]["holds"] == "no"
    # per-seed Spearman r spread across 0.7: inconclusive
    t = pd.concat([_synthetic_table(0.1, 0.0, seeds=(1,)), _synthetic_table(0.0, 0.1, seeds=(2,), seed_rng=4)])
    from llr.analysis.effective_ratio import ratio_correlations as rc

    c = rc(t)
    c = c[(c["points"] == "runs") & (c["ratio"] == "effective")].iloc[0]
    m, s = c["spearman_r_seed_mean"], c["spearman_r_seed_std"]
    assert m - s <= 0.7 <= m + s
    assert claims_fig8(t)[0]["holds"] == "inconclusive"


def test_fig8_plot_and_table_commands(tmp_path):
    from llr.reporting.figures import fig8

    t = _synthetic_table(0.1, 0.02)
    t.loc[t.index[:3], "point"] = "grid"
    t.loc[t.index[3:8], ["family", "erm", "heldout"]] = [
        "LLR (held-out subset)",
        "train_ratio0.2_none",
        "heldout_ratio0.5",
    ]
    csv = tmp_path / "fig8_effective_ratio.csv"
    t.assign(afr_gamma=np.nan, afr_lambda=np.nan).to_csv(csv, index=False)
    fig8([str(csv)], [str(tmp_path / "fig8.png"), str(tmp_path / "fig8.pdf")], {})
    assert (tmp_path / "fig8.png").stat().st_size > 10_000 and (tmp_path / "fig8.pdf").exists()
    with pytest.raises(LLRError, match="ratio='x'"):
        fig8([str(csv)], [str(tmp_path / "a.png")], {"ratio": "x"})
