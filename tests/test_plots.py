"""Figures 2-7 (llr.reporting.figures), Figure 4's tables, Table 1 and the claim checkers of
the paper comparison (llr.reporting.claims) on small DataFrames built here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr

from llr.errors import LLRError
from llr.reporting import claims, fig4, figures, frames, style, table1
from llr.reporting.modes import PLOT_MODES, plot_mode

PNG, PDF = b"\x89PNG\r\n\x1a\n", b"%PDF"
SEEDS = (1, 2, 3)
RATIOS = (0.05, 0.2, 0.5, 1.0)


def _check_files(*paths: Path) -> None:
    for p in map(Path, paths):
        data = p.read_bytes()
        assert len(data) > 1000, p
        assert data.startswith(PNG if p.suffix == ".png" else PDF), p


def _write(tmp: Path, name: str, df: pd.DataFrame) -> str:
    p = tmp / name
    df.to_csv(p, index=False)
    return str(p)


def _runs(cells: list[tuple], n_groups: int = 2) -> pd.DataFrame:
    """A runs table: cells (dataset, erm, method, heldout, {seed: wga}[,
    extra columns]); roles val and test; acc of the last group = wga."""
    rows = []
    for cell in cells:
        ds, erm, method, heldout, wgas = cell[:5]
        extra = cell[5] if len(cell) > 5 else {}
        for seed, w in wgas.items():
            for role in ("val", "test"):
                for g in range(n_groups):
                    rows.append(
                        {
                            "dataset": ds,
                            "seed": seed,
                            "erm": erm,
                            "method": method,
                            "heldout": heldout,
                            "role": role,
                            "group": g,
                            "acc": w + 0.1 * (n_groups - 1 - g),
                            "wga": w,
                            "mean_acc": w + 0.05,
                            **extra,
                        }
                    )
    return pd.DataFrame(rows)


def _same(w: float, seeds=SEEDS, spread: float = 0.0) -> dict[int, float]:
    """Per-seed values w - spread, w, w + spread (mean w, std = spread)."""
    offs = np.linspace(-1, 1, len(seeds)) if len(seeds) > 1 else [0.0]
    return {s: w + spread * o for s, o in zip(seeds, offs)}


def _holds(rows: list[dict], claim_part: str, ds: str | None = None, variant: str | None = None) -> str:
    hit = [
        r
        for r in rows
        if claim_part in r["claim"]
        and (ds is None or r["dataset"] == ds)
        and (variant is None or variant in r["variant"])
    ]
    assert len(hit) == 1, (claim_part, ds, [r["claim"] for r in rows])
    return hit[0]["holds"]


# --------------------------------------------------------------------------
# Dataset order, decisions
# --------------------------------------------------------------------------


def test_dataset_order_and_titles():
    got = style.dataset_order(
        ["foo", "synth_multinli", "celeba", "synth_waterbirds", "waterbirds", "civilcomments", "celeba"]
    )
    assert got == ["waterbirds", "synth_waterbirds", "celeba", "civilcomments", "synth_multinli", "foo"]
    assert style.real_name("synth_celeba") == "celeba" and style.real_name("synth_x") == "synth_x"
    assert style.dataset_title("synth_civilcomments") == "Synthetic CivilComments"


def test_decision_rules():
    assert claims._above(0.5, 0.1, 0.3) == "yes" and claims._above(0.1, 0.1, 0.3) == "no"
    assert claims._above(0.35, 0.1, 0.3) == "inconclusive" and claims._above(np.nan, 0, 0) == "inconclusive"
    assert claims._below(0.1, 0.1, 0.3) == "yes" and claims._below(0.5, 0.1, 0.3) == "no"
    assert claims._within(-0.02, 0.02, 0.05) == "yes" and claims._within(0.2, 0.1, 0.05) == "no"
    assert claims._within(0.04, 0.02, 0.05) == "inconclusive"
    assert claims._fraction(3, 0, 4, 0.75) == "yes" and claims._fraction(1, 1, 4, 0.75) == "no"
    assert claims._fraction(2, 1, 4, 0.75) == "inconclusive"


# --------------------------------------------------------------------------
# Figure 4: series, Pearson r, figure
# --------------------------------------------------------------------------


def _erm_wga(r: float) -> float:
    return 0.3 + 0.5 * r


def _fig4_cells(ds: str, llr, comb=_erm_wga, constructions=("subset",), spread: float = 0.0) -> list[tuple]:
    """ERM (train-only and combined) at each ratio and LLR at every (ERM
    ratio e, held-out ratio h): wga llr(e, h, seed)."""
    cells = []
    for r in RATIOS:
        cells.append((ds, f"train_ratio{r}_none", "erm", "-", _same(comb(r) - 0.05 + 0.1 * r * r, spread=spread)))
        cells.append((ds, f"combined_ratio{r}_none", "erm", "-", _same(comb(r), spread=spread)))
        cells.append((ds, f"train_ratio{r}_none", "dfr_subsetting", "heldout", _same(0.8)))
        for con in constructions:
            prefix = fig4.CONSTRUCTIONS[con]
            for h in RATIOS:
                cells.append((ds, f"train_ratio{r}_none", "llr", f"{prefix}{h}", {s: llr(r, h, s) for s in SEEDS}))
    return cells


def test_fig4_pearson_matches_scipy():
    llr = lambda e, h, s: 0.2 + 0.6 * h**0.5 + 0.1 * e + 0.01 * s * h
    runs = _runs(_fig4_cells("celeba", llr, constructions=("subset", "sampled")))
    pear = fig4.fig4_pearson(runs)
    assert len(pear) == 2 * len(RATIOS)
    assert list(pear["construction"]) == ["subset"] * len(RATIOS) + ["sampled"] * len(RATIOS)
    row = pear[(pear["construction"] == "sampled") & (pear["erm_ratio"] == 0.2)].iloc[0]
    x = [_erm_wga(r) for r in RATIOS]  # combined ERM, mean over seeds
    y = [np.mean([llr(0.2, h, s) for s in SEEDS]) for h in RATIOS]
    assert row["pearson_r"] == pytest.approx(pearsonr(x, y).statistic)
    xt = [_erm_wga(r) - 0.05 + 0.1 * r * r for r in RATIOS]  # train-only ERM
    assert row["pearson_r_train_erm"] == pytest.approx(pearsonr(xt, y).statistic)
    per_seed = [pearsonr(x, [llr(0.2, h, s) for h in RATIOS]).statistic for s in SEEDS]
    assert row["pearson_r_seed_std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert row["n_points"] == len(RATIOS) and row["n_seeds"] == len(SEEDS)
    d = fig4.fig4_data(runs)
    llr_rows = d[(d["series"] == "LLR") & (d["construction"] == "subset") & (d["erm_ratio"] == 1.0)]
    assert len(llr_rows) == len(RATIOS)
    assert llr_rows.set_index("x").loc[0.5, "mean"] == pytest.approx(np.mean([llr(1.0, 0.5, s) for s in SEEDS]))


def test_fig4_figure_both_constructions(tmp_path):
    llr = lambda e, h, s: _erm_wga(h) + 0.01 * s
    cells = _fig4_cells("synth_multinli", llr, constructions=("subset", "sampled")) + _fig4_cells("waterbirds", llr)
    src = _write(tmp_path, "fig4_runs.csv", _runs(cells))
    out = [str(tmp_path / "fig4.png"), str(tmp_path / "fig4.pdf"), str(tmp_path / "fig4_pearson.csv")]
    figures.fig4([src], out, {})
    _check_files(*out[:2])
    pear = pd.read_csv(out[2])
    assert list(dict.fromkeys(pear["dataset"])) == ["waterbirds", "synth_multinli"]  # paper order
    assert list(pear.loc[pear["dataset"] == "waterbirds", "erm_ratio"]) == list(RATIOS)
    assert np.allclose(pear["pearson_r"], 1.0)


# --------------------------------------------------------------------------
# Figures 2, 3, 5, 6, 7 render
# --------------------------------------------------------------------------


def _nc1_log(
    ds: str, collapse: bool, epochs: int = 8, per_epoch: int = 4, ratio: float = 50.0, seed_ratio: dict | None = None
) -> pd.DataFrame:
    """An ERM log with ``per_epoch`` evaluation points per epoch; train NC1
    falls 2x per epoch (collapse) or stays flat after epoch 1."""
    rows = []
    for s in SEEDS:
        for k in range(1, epochs * per_epoch + 1):
            ep = k / per_epoch
            nc1 = 4.0 * 0.5**ep if collapse else 1.0 + 0.05 * np.exp(-5 * ep)
            end = 4.0 * 0.5**epochs if collapse else 1.0
            rr = (seed_ratio or {}).get(s, ratio)
            rows.append(
                {
                    "dataset": ds,
                    "seed": s,
                    "erm": "train_none_long",
                    "epoch": ep,
                    "step": k,
                    "train_nc1": nc1,
                    "train_nc1_final": end,
                    "heldout_nc1_final": rr * end,
                }
            )
    return pd.DataFrame(rows)


def _test_wga_log(ds: str, drops: dict[str, dict[int, float]], epochs: int = 4) -> pd.DataFrame:
    """Per cell: WGA rises to 0.8 at the mid point, then falls by the seed's
    drop to the final point (4 evaluation points per epoch)."""
    rows = []
    n = epochs * 4
    for cell, by_seed in drops.items():
        for s, drop in by_seed.items():
            for k in range(1, n + 1):
                w = 0.8 * min(1.0, k / (n / 2)) - drop * max(0.0, (k - n / 2) / (n / 2))
                rows.append({"dataset": ds, "seed": s, "erm": cell, "epoch": k / 4, "step": k, "test_wga": w})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def figure_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("figs")
    ep2 = pd.concat([_nc1_log("synth_multinli", True), _nc1_log("celeba", False), _nc1_log("waterbirds", True)])
    figures.fig2(
        [_write(tmp, "fig2_epochs.csv", ep2)],
        [str(tmp / "fig2.png"), str(tmp / "fig2.pdf")],
        {"standard_epochs": {"synth_multinli": 4, "celeba": 4, "waterbirds": 4}},
    )
    svm = pd.DataFrame(
        [
            {"dataset": ds, "seed": s, "epoch": e, "directional_error": 1 / np.sqrt(e) + 0.01 * s, "separable": s != 2}
            for ds in ("celeba", "waterbirds")
            for s in SEEDS
            for e in range(1, 41)
        ]
    )
    figures.fig3(
        [_write(tmp, "fig3_svm.csv", svm)],
        [str(tmp / "fig3.png"), str(tmp / "fig3.pdf")],
        {"standard_epochs": {"celeba": 4}},
    )
    cells5 = [c for ds in ("celeba", "synth_waterbirds") for c in _fig5_cells(ds, 0.7, {"subsetting": 0.72})]
    figures.fig5([_write(tmp, "fig5_runs.csv", _runs(cells5))], [str(tmp / "fig5.png"), str(tmp / "fig5.pdf")], {})
    ep6 = pd.concat(
        [
            _test_wga_log(
                ds,
                {
                    f"combined_group_{m}": _same(d)
                    for m, d in (("subsetting", 0.0), ("upsampling", 0.2), ("upweighting", 0.4))
                }
                | {"combined_none": _same(0.0)},
            )
            for ds in ("multinli", "celeba")
        ]
    )
    figures.fig6([_write(tmp, "fig6_epochs.csv", ep6)], [str(tmp / "fig6.png"), str(tmp / "fig6.pdf")], {})
    cells7 = [c for ds in ("celeba", "synth_waterbirds") for c in _fig7_cells(ds, {"subsetting": 0.85})]
    figures.fig7([_write(tmp, "fig7_runs.csv", _runs(cells7))], [str(tmp / "fig7.png"), str(tmp / "fig7.pdf")], {})
    return tmp


@pytest.mark.parametrize("name", ["fig2", "fig3", "fig5", "fig6", "fig7"])
def test_figure_files(figure_dir, name):
    _check_files(figure_dir / f"{name}.png", figure_dir / f"{name}.pdf")


def test_plot_modes():
    for name in PLOT_MODES:
        assert callable(plot_mode(name)), name
    assert plot_mode("table1") is table1.table1 and plot_mode("paper_comparison") is claims.paper_comparison
    with pytest.raises(LLRError, match="unknown figure or table 'report'"):
        plot_mode("report")


def test_fig5_fig7_data_order_and_values():
    cells = _fig5_cells("synth_waterbirds", 0.7, {}) + _fig5_cells("celeba", 0.7, {"upsampling": 0.79})
    d5 = figures.fig5_data(frames.run_wga(_runs(cells)))
    assert list(dict.fromkeys(d5["dataset"])) == ["synth_waterbirds", "celeba"]
    assert list(d5.columns) == figures.BAR_COLUMNS
    row = d5[(d5["dataset"] == "celeba") & (d5["mode"] == "upsampling") & (d5["series"] == "(CB-)LLR (held-out)")]
    assert row["wga"].mean() == pytest.approx(0.79) and list(row["seed"]) == list(SEEDS)
    d7 = figures.fig7_data(frames.run_wga(_runs(_fig7_cells("celeba", {}))))
    assert set(d7["mode"]) == {"subsetting", "upsampling", "upweighting", "AFR"}


def test_fig7_other_methods(tmp_path, monkeypatch):
    """A last-layer method beyond the paper's series on train_none / heldout
    gets its own bar in Figure 7, named by its registered label (else its
    name); afr_gamma0 and cbllr_upweighting feed the claims only."""
    cells = _fig7_cells("celeba", {}) + [
        ("celeba", "train_none", "l1_llr", "heldout", _same(0.75, spread=0.02)),
        ("celeba", "train_none", "afr_gamma0", "heldout", _same(0.66)),
        ("celeba", "train_none", "cbllr_upweighting", "heldout", _same(0.66)),
    ]
    runs = _runs(cells)
    label = figures.method_label("l1_llr")
    d7 = figures.fig7_data(frames.run_wga(runs))
    assert set(d7["mode"]) == {"subsetting", "upsampling", "upweighting", "AFR", "l1_llr"}
    assert set(d7.loc[d7["mode"] == "l1_llr", "series"]) == {label}
    drawn = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, paths: drawn.append(fig))
    figures.fig7([_write(tmp_path, "fig7_runs.csv", runs)], [str(tmp_path / "a.png"), str(tmp_path / "a.pdf")], {})
    (fig,) = drawn
    ticks = [x.get_text() for x in fig.axes[0].get_xticklabels()]
    legend = [x.get_text() for x in fig.legends[0].get_texts()]
    assert ticks[-2:] == ["AFR", label] and legend[-1] == label and len(legend) == 4
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches)
    assert 75.0 in heights and 66.0 not in heights
    # a registered method is named by its label
    monkeypatch.setattr(figures, "method_label", lambda name: {"l1_llr": "L1-regularized LLR"}.get(name, name))
    assert set(figures.fig7_data(frames.run_wga(runs))["series"]) >= {"L1-regularized LLR"}


def test_fig2_final_only_and_fig7_missing_cells(tmp_path):
    """Figure 2 from end-of-training NC1 only (no per-epoch trace); a runs
    table without any Figure 7 cell is an error, not an empty figure."""
    ep = _nc1_log("celeba", False).drop(columns=["train_nc1"])
    figures.fig2([_write(tmp_path, "fig2_epochs.csv", ep)], [str(tmp_path / "a.png"), str(tmp_path / "a.pdf")], {})
    _check_files(tmp_path / "a.png", tmp_path / "a.pdf")
    with pytest.raises(LLRError, match="no run"):
        figures.fig7(
            [_write(tmp_path, "fig7_runs.csv", _runs(_fig5_cells("celeba", 0.7, {})[:1]))],
            [str(tmp_path / "b.png"), str(tmp_path / "b.pdf")],
            {},
        )


# --------------------------------------------------------------------------
# Table 1
# --------------------------------------------------------------------------


def _margins(ds: str, n_groups: int = 4, min_r: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Margin records: avg margin exactly linear in test accuracy; min margin
    independent noise (min_r = 0) or exactly linear (min_r = 1)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in SEEDS:
        for ep in (10, 20, 30, 40):
            for g in range(n_groups):
                acc = rng.uniform(0.5, 1.0)
                mn = acc if min_r == 1 else rng.normal()
                rows.append(
                    {
                        "dataset": ds,
                        "seed": s,
                        "epoch": ep,
                        "group": g,
                        "min_margin": mn,
                        "avg_margin": 2 * acc + 1,
                        "n_train": 10,
                        "test_acc": acc,
                    }
                )
    return pd.DataFrame(rows)


def test_table1_per_group(tmp_path):
    m = pd.concat([_margins("synth_multinli", 6), _margins("waterbirds")], ignore_index=True)
    m.loc[(m["dataset"] == "waterbirds") & (m["group"] == 1) & (m["seed"] == 2), "min_margin"] = np.nan
    out = [str(tmp_path / "table1.csv"), str(tmp_path / "table1.md")]
    table1.table1([_write(tmp_path, "table1_margins.csv", m)], out, {})
    t = pd.read_csv(out[0])
    assert list(t.columns) == table1.TABLE1_COLUMNS
    assert len(t) == 2 * 4 + 2 * 6 and list(dict.fromkeys(t["dataset"])) == ["waterbirds", "synth_multinli"]
    assert np.allclose(t.loc[t["margin"] == "average", "r"], 1.0)
    sub = m[(m["dataset"] == "waterbirds") & (m["group"] == 1)].dropna()
    row = t[(t["dataset"] == "waterbirds") & (t["margin"] == "minimum") & (t["group"] == 1)].iloc[0]
    ref = pearsonr(sub["min_margin"], sub["test_acc"])
    assert row["r"] == pytest.approx(ref.statistic) and row["p"] == pytest.approx(ref.pvalue)
    assert row["n_points"] == 8 and row["paper_r"] == pytest.approx(0.380)
    mnli = t[(t["dataset"] == "synth_multinli") & (t["margin"] == "average")]
    assert list(mnli["paper_r"]) == pytest.approx([0.865, 0.926, 0.858, 0.910, 0.823, 0.897])
    md = Path(out[1]).read_text()
    assert "### Waterbirds" in md and "### Synthetic MultiNLI (paper: MultiNLI)" in md
    assert "| average margin | 1.000 (0.865) | 1.000 (0.926) |" in md and "pooled over groups" in md
    from llr.analysis.margins import margin_correlation

    assert set(margin_correlation(m, by=["dataset", "group"])["over"]) == {"seeds x LLR checkpoints"}


def test_claims_table1():
    holds = table1.table1_data(_margins("celeba"))  # min margin: noise; average: r = 1
    loo = table1.table1_jackknife(_margins("celeba"))
    rows = claims.claims_table1(holds, loo)
    assert _holds(rows, "minimum margin of a group") == "yes"
    assert _holds(rows, "average margin is more correlated") == "yes"
    assert rows[0]["paper_value"].startswith("mean |r| = 0.332")
    fails = table1.table1_data(_margins("celeba", min_r=1).assign(avg_margin=lambda d: -(d["min_margin"] ** 3)))
    rows = claims.claims_table1(fails)
    assert _holds(rows, "minimum margin of a group") == "no"
    # |r| of the average margin (a cubic) is below 1 = |r| of the minimum margin.
    assert _holds(rows, "average margin is more correlated") == "no"
    # Inconclusive: mean |r| of the minimum margin 0.5 +- a seed spread.
    t1 = holds.copy()
    t1.loc[t1["margin"] == "minimum", "r"] = 0.5
    loo = [t1.assign(r=np.where(t1["margin"] == "minimum", v, t1["r"])) for v in (0.4, 0.5, 0.6)]
    rows = claims.claims_table1(t1, loo)
    assert _holds(rows, "minimum margin of a group") == "inconclusive"


# --------------------------------------------------------------------------
# Claims: Table 2, Figures 2 and 3
# --------------------------------------------------------------------------


def test_claims_table2():
    t2 = pd.DataFrame(
        [
            {"dataset": ds, "g": g, "train": tr, "val": va, "test": te}
            for ds, counts in (
                ("waterbirds", ((3498, 467, 2255), (184, 466, 2255), (56, 133, 642), (1057, 133, 642))),
                ("synth_waterbirds", ((1, 1, 1),) * 4),
            )
            for g, (tr, va, te) in enumerate(counts)
        ]
    )
    rows = claims.claims_table2(t2)
    assert len(rows) == 3 and {r["dataset"] for r in rows} == {"waterbirds"}
    by = {r["variant"]: r for r in rows}
    assert by["train"]["holds"] == "yes" and by["test"]["holds"] == "no" and "2225" in by["test"]["note"]


def test_claims_fig2():
    std = {"waterbirds": 4, "celeba": 4, "synth_multinli": 4, "civilcomments": 4}
    ep = pd.concat(
        [
            _nc1_log("waterbirds", True, ratio=50),
            _nc1_log("celeba", False, ratio=1.2),
            _nc1_log("synth_multinli", True, ratio=2),
            _nc1_log("civilcomments", True, ratio=20),
        ]
    )
    rows = claims.claims_fig2(ep, std)
    assert [r["dataset"] for r in rows] == ["waterbirds"] * 2 + ["celeba"] * 2 + ["civilcomments"] * 2 + [
        "synth_multinli"
    ] * 2
    # Waterbirds: held-out/train = 50 >= 10; NC1 falls 2^4 = 16x after the standard 4 epochs.
    assert _holds(rows, "at least 10x", "waterbirds") == "yes"
    assert _holds(rows, "not complete", "waterbirds") == "yes"
    # CelebA: flat NC1 after epoch 1, held-out/train 1.2 < 3.
    assert _holds(rows, "does not decrease significantly", "celeba") == "yes"
    assert _holds(rows, "comparable", "celeba") == "yes"
    # CivilComments collapses (falls 2^7x after epoch 1, held-out 20x train): both fail.
    assert _holds(rows, "does not decrease significantly", "civilcomments") == "no"
    assert _holds(rows, "comparable", "civilcomments") == "no"
    assert _holds(rows, "at least 10x", "synth_multinli") == "no"
    # Seed ratios 5, 10, 15: mean 10 +- 5 straddles 10; no standard epochs: inconclusive.
    rows = claims.claims_fig2(_nc1_log("multinli", True, seed_ratio={1: 5, 2: 10, 3: 15}), {})
    assert _holds(rows, "at least 10x") == "inconclusive" and _holds(rows, "not complete") == "inconclusive"
    # Collapse complete by the standard epoch count: NC1 flat after epoch 4 -> not "not complete".
    flat = _nc1_log("waterbirds", True)
    flat.loc[flat["epoch"] > 4, "train_nc1"] = 4.0 * 0.5**4
    assert _holds(claims.claims_fig2(flat, {"waterbirds": 4}), "not complete") == "no"


def test_claims_fig3():
    def svm(ds, finals):
        return pd.DataFrame(
            [
                {"dataset": ds, "seed": s, "epoch": e, "directional_error": 1.0 if e < 40 else f, "separable": s != 2}
                for s, f in finals.items()
                for e in range(1, 41)
            ]
        )

    df = pd.concat(
        [svm("celeba", _same(0.5)), svm("waterbirds", _same(0.01)), svm("civilcomments", _same(0.1, spread=0.05))]
    )
    rows = claims.claims_fig3(df, {"celeba": 4, "waterbirds": 2})
    assert [r["dataset"] for r in rows] == ["waterbirds", "celeba", "civilcomments"]
    assert _holds(rows, "far from 0", "celeba") == "yes"
    assert _holds(rows, "far from 0", "waterbirds") == "no"
    assert _holds(rows, "far from 0", "civilcomments") == "inconclusive"
    cel = [r for r in rows if r["dataset"] == "celeba"][0]
    assert "separable in 2/3 seeds" in cel["ours"] and "10.0x the standard" in cel["note"]


# --------------------------------------------------------------------------
# Claims: Figure 4
# --------------------------------------------------------------------------


def test_claims_fig4_holds_fails_inconclusive():
    good = lambda e, h, s: _erm_wga(h) + 0.002 * s  # LLR at h = ERM at h
    bad = lambda e, h, s: 0.9 - 0.5 * h + 0.002 * s  # the opposite trend
    alt = {0.05: 1, 0.2: -1, 0.5: 1, 1.0: -1}
    noisy = lambda e, h, s: _erm_wga(h) + (0.3 * alt[h] if s == 3 else 0.0)
    cells = (
        _fig4_cells("celeba", good, constructions=("subset", "sampled"))
        + _fig4_cells("civilcomments", bad)
        + _fig4_cells("waterbirds", noisy)
    )
    rows = claims.claims_fig4(_runs(cells))
    assert _holds(rows, "(a)", "celeba", "subset") == "yes" and _holds(rows, "(a)", "celeba", "sampled") == "yes"
    assert _holds(rows, "(b)", "celeba", "subset") == "yes" and _holds(rows, "(c)", "celeba", "subset") == "yes"
    assert _holds(rows, "(a)", "civilcomments") == "no"
    assert _holds(rows, "(b)", "civilcomments") == "no" and _holds(rows, "(c)", "civilcomments") == "no"
    # Seed 3 alone breaks the ERM-LLR match: spread covers both outcomes.
    assert _holds(rows, "(a)", "waterbirds") == "inconclusive"
    assert _holds(rows, "(b)", "waterbirds") == "inconclusive"  # 7/12 match, 5 within noise
    assert _holds(rows, "(c)", "waterbirds") == "inconclusive"
    cel = [r for r in rows if r["dataset"] == "celeba" and "(a)" in r["claim"]][0]
    assert cel["paper_value"] == "r > 0.99" and "exceeds 0.99" in cel["claim"]
    wb = [r for r in rows if r["dataset"] == "waterbirds" and "(a)" in r["claim"]][0]
    assert "close to 1" in wb["claim"] and wb["paper_value"] == ""
    b = [r for r in rows if r["dataset"] == "celeba" and "(b)" in r["claim"] and "subset" in r["variant"]][0]
    assert b["ours"].startswith("12/12 pairs")  # 4 x 4 pairs minus the 4 with equal ratios


# --------------------------------------------------------------------------
# Claims: Figures 5, 6, 7 and Section 3.2
# --------------------------------------------------------------------------


def _fig5_cells(
    ds: str,
    llr_none: float,
    over: dict[str, float],
    erm: dict[str, float] | None = None,
    spread: float = 0.01,
    llr_spread: float | None = None,
) -> list[tuple]:
    """ERM on 100% of the data per mode (default none 0.5, subsetting 0.72,
    upsampling 0.55, upweighting 0.64) and (CB-)LLR (default llr 0.7 after
    train_none, cbllr_m: 0.73 / 0.6), overridden by ``over`` / ``erm``;
    seed spread ``spread`` (``llr_spread`` for the LLR cells, if given)."""
    ls = spread if llr_spread is None else llr_spread
    e = {"none": 0.5, "subsetting": 0.72, "upsampling": 0.55, "upweighting": 0.64, **(erm or {})}
    ll = {"none": llr_none, "subsetting": 0.73, "upsampling": 0.73, "upweighting": 0.6, **over}
    cells = [
        (ds, "combined_none", "erm", "-", _same(e["none"], spread=spread)),
        (ds, "train_none", "llr", "heldout", _same(ll["none"], spread=ls)),
    ]
    for m in frames.BALANCED_MODES:
        cells += [
            (ds, f"combined_class_{m}", "erm", "-", _same(e[m], spread=spread)),
            (ds, f"train_class_{m}", f"cbllr_{m}", "heldout", _same(ll[m], spread=ls)),
        ]
    return cells


def test_claims_fig5():
    cells = (
        _fig5_cells("celeba", 0.7, {})  # best ERM 0.72, best LLR 0.73
        + _fig5_cells("multinli", 0.9, {"upsampling": 0.4})  # best LLR 0.9 vs 0.72; no recovery
        + _fig5_cells("waterbirds", 0.76, {"upsampling": 0.67}, spread=0.0, llr_spread=0.02)
    )
    rows = claims.claims_fig5(_runs(cells))
    assert _holds(rows, "about the same", "celeba") == "yes"
    assert _holds(rows, "recovers", "celeba") == "yes"  # upsampling ERM 0.55 -> CB-LLR 0.73
    assert _holds(rows, "about the same", "multinli") == "no"
    # none: ERM 0.5 -> LLR 0.9 recovers; so it holds (the paper: LLR *can* recover).
    assert _holds(rows, "recovers", "multinli") == "yes"
    # Waterbirds: best LLR 0.76 vs ERM 0.72: +0.04 +- 0.02 straddles 0.05; LLR after upsampling 0.67:
    # -0.05 +- 0.02 straddles -0.05, and after none 0.76 recovers.
    assert _holds(rows, "about the same", "waterbirds") == "inconclusive"
    only_bad = _fig5_cells("celeba", 0.5, {"upsampling": 0.5})  # nothing recovers
    assert _holds(claims.claims_fig5(_runs(only_bad)), "recovers") == "no"
    none_sub = _fig5_cells("celeba", 0.7, {}, erm={"none": 0.7, "upsampling": 0.7, "upweighting": 0.7})
    assert _holds(claims.claims_fig5(_runs(none_sub)), "recovers") == "inconclusive"
    assert claims.claims_fig5(_runs(_fig7_cells("celeba", {}))) == []  # no Figure 5 cells, no row


def test_claims_fig6():
    ep = pd.concat(
        [
            _test_wga_log(
                "celeba",
                {
                    "combined_group_upsampling": _same(0.3),
                    "combined_group_upweighting": _same(0.0),
                    "combined_group_subsetting": _same(0.5),
                },
            ),
            _test_wga_log("synth_waterbirds", {"combined_group_upweighting": _same(0.05)}),
            _test_wga_log("multinli", {"combined_group_upweighting": _same(0.1, spread=0.05)}),
        ]
    )
    rows = claims.claims_fig6(ep)
    assert [(r["dataset"], r["variant"]) for r in rows] == [
        ("synth_waterbirds", "combined_group_upweighting"),
        ("celeba", "combined_group_upsampling"),
        ("celeba", "combined_group_upweighting"),
        ("multinli", "combined_group_upweighting"),
    ]
    assert _holds(rows, "upsampling shows a collapse", "celeba") == "yes"
    assert _holds(rows, "upweighting shows a collapse", "celeba") == "no"
    assert _holds(rows, "mild decrease", "synth_waterbirds") == "yes"
    assert _holds(rows, "collapse", "multinli") == "inconclusive"
    cel = [r for r in rows if r["variant"] == "combined_group_upsampling"][0]
    assert "0.300" in cel["ours"] and "epoch 2 (best) to epoch 4 (final)" in cel["ours"]
    big = _test_wga_log("waterbirds", {"combined_group_upweighting": _same(0.3)})
    assert _holds(claims.claims_fig6(big), "mild decrease") == "no"


def _fig7_cells(
    ds: str,
    dfr: dict[str, float],
    erm: dict[str, float] | None = None,
    spread: float = 0.01,
    dfr_spread: float | None = None,
) -> list[tuple]:
    """Class-balanced ERM per mode (default 0.72 / 0.55 / 0.64) and DFR
    (0.8 / 0.5 / 0.7), overridden by ``erm`` / ``dfr``; AFR 0.8."""
    e = {"subsetting": 0.72, "upsampling": 0.55, "upweighting": 0.64, **(erm or {})}
    d = {"subsetting": 0.8, "upsampling": 0.5, "upweighting": 0.7, **dfr}
    cells = [(ds, "train_none", "afr", "heldout", _same(0.8))]
    for m in frames.BALANCED_MODES:
        cells += [
            (ds, f"combined_class_{m}", "erm", "-", _same(e[m], spread=spread)),
            (
                ds,
                f"train_class_{m}",
                f"dfr_{m}",
                "heldout",
                _same(d[m], spread=spread if dfr_spread is None else dfr_spread),
            ),
        ]
    return cells


def test_claims_fig7():
    cells = (
        _fig7_cells("celeba", {})
        + _fig7_cells("civilcomments", {"subsetting": 0.6})
        + _fig7_cells("waterbirds", {"subsetting": 0.73}, spread=0.0, dfr_spread=0.02)
    )
    rows = claims.claims_fig7(_runs(cells))
    assert [r["dataset"] for r in rows] == ["waterbirds", "celeba", "civilcomments"]
    assert _holds(rows, "beats", "celeba") == "yes"  # 0.80 vs 0.72
    assert _holds(rows, "beats", "civilcomments") == "no"  # best DFR 0.70 vs 0.72
    assert _holds(rows, "beats", "waterbirds") == "inconclusive"  # +0.01 +- 0.02


def test_claims_afr():
    def cells(ds, a0, cb, eff, spread=0.0):
        extra = {
            "effective_group_ratio": eff,
            "heldout_group_ratio": 0.1,
            "train_group_ratio": 0.1,
            "afr_gamma": 4.0,
            "afr_lambda": 0.1,
        }
        return [
            (ds, "train_none", "afr_gamma0", "heldout", _same(a0, spread=spread)),
            (ds, "train_none", "cbllr_upweighting", "heldout", _same(cb)),
            (ds, "train_none", "afr", "heldout", _same(0.8), extra),
        ]

    runs = _runs(
        cells("celeba", 0.66, 0.65, 0.5) + cells("multinli", 0.8, 0.6, 0.05) + cells("waterbirds", 0.69, 0.65, 0.1)
    )
    rows = claims.claims_afr(runs)
    assert _holds(rows, "gamma = 0", "celeba") == "yes" and _holds(rows, "effective group ratio", "celeba") == "yes"
    assert _holds(rows, "gamma = 0", "multinli") == "no" and _holds(rows, "effective", "multinli") == "no"
    assert _holds(rows, "effective", "waterbirds") == "inconclusive"  # equal ratios, no spread
    rows = claims.claims_afr(_runs(cells("waterbirds", 0.69, 0.65, 0.3, spread=0.03)))
    assert _holds(rows, "gamma = 0") == "inconclusive"  # +0.04 +- 0.03 around 0.05


# --------------------------------------------------------------------------
# The comparison file
# --------------------------------------------------------------------------


def test_paper_comparison_end_to_end(tmp_path):
    f5 = _write(tmp_path, "fig5_runs.csv", _runs(_fig5_cells("celeba", 0.7, {})))
    f7 = _write(tmp_path, "fig7_runs.csv", _runs(_fig7_cells("celeba", {})))
    mg = _write(tmp_path, "table1_margins.csv", _margins("celeba"))
    ep = _write(tmp_path, "fig2_epochs.csv", _nc1_log("celeba", False, ratio=1.2))
    out = tmp_path / "paper_comparison.csv"
    claims.paper_comparison([f5, f7, mg, ep], [str(out)], {"standard_epochs": {"celeba": 4}})
    pc = pd.read_csv(out, keep_default_na=False)
    assert list(pc.columns) == claims.COMPARISON_COLUMNS
    assert list(dict.fromkeys(pc["section"])) == ["Fig. 2", "Table 1", "Fig. 5", "Fig. 7"]
    assert set(pc["holds"]) <= {"yes", "no", "inconclusive"}
    assert not pc["claim"].str.contains("beats ERM with the same").any()
    assert len(pc) == 2 + 2 + 2 + 1
    # table1.csv alone also feeds the Table 1 claims (without a seed spread).
    table1.table1([mg], [str(tmp_path / "table1.csv"), str(tmp_path / "table1.md")], {})
    claims.paper_comparison([str(tmp_path / "table1.csv")], [str(out)], {})
    assert len(pd.read_csv(out)) == 2
    with pytest.raises(LLRError, match="unrecognized"):
        claims.paper_comparison([_write(tmp_path, "other.csv", _margins("celeba"))], [str(out)], {})
