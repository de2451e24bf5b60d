"""Figures 2-7, Table 1, the paper comparison and the HTML report (llr.plots,
llr.report) on small fake tidy CSVs: 2 datasets x 2 seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llr import plots, report
from llr.errors import LLRError

DATASETS = ("synth_waterbirds", "celeba")
SEEDS = (1, 2)
PNG, PDF = b"\x89PNG\r\n\x1a\n", b"%PDF"


def _runs_rows(cells: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    """RUNS csv rows: every (erm, method, heldout, wga) cell for each dataset
    and seed, roles val and test, 4 groups; seed 2 is 2 pp above seed 1."""
    rows = []
    for ds in DATASETS:
        for seed in SEEDS:
            for erm, method, heldout, wga in cells:
                w = wga + 0.02 * (seed - 1)
                for role in ("val", "test"):
                    for g in range(4):
                        rows.append({"dataset": ds, "seed": seed, "erm": erm, "method": method,
                                     "heldout": heldout, "role": role, "group": g, "acc": w + 0.05 * g,
                                     "wga": w if role == "test" else 0.0, "mean_acc": w + 0.1})
    return pd.DataFrame(rows)


FIG5_CELLS = [("combined_none", "erm", "-", 0.50), ("train_none", "llr", "heldout", 0.70)] + [
    c for m, e, l in (("subsetting", 0.60, 0.75), ("upsampling", 0.62, 0.78), ("upweighting", 0.64, 0.60))
    for c in ((f"combined_class_{m}", "erm", "-", e), (f"train_class_{m}", f"cbllr_{m}", "heldout", l))]
FIG7_CELLS = [("train_none", "afr", "heldout", 0.80), ("combined_none", "erm", "-", 0.50)] + [
    c for m, e, d in (("subsetting", 0.60, 0.85), ("upsampling", 0.62, 0.50), ("upweighting", 0.64, 0.82))
    for c in ((f"combined_class_{m}", "erm", "-", e), (f"train_class_{m}", f"dfr_{m}", "heldout", d))]
RATIOS = (0.05, 0.2, 1.0)
FIG4_CELLS = [c for r in RATIOS for c in (
    (f"train_ratio{r}_none", "erm", "-", 0.3 + 0.4 * r),
    (f"combined_ratio{r}_none", "erm", "-", 0.35 + 0.4 * r),
    (f"train_ratio{r}_none", "dfr_subsetting", "heldout", 0.8),
    *((f"train_ratio{r}_none", "llr", f"heldout_ratio{h}", 0.3 + 0.3 * r + 0.3 * h) for h in RATIOS))]


def _epochs(long: bool = True) -> pd.DataFrame:
    rows = []
    cells = ["train_none"] if long else ["combined_none", "combined_group_subsetting",
                                         "combined_group_upsampling", "combined_group_upweighting"]
    for ds in DATASETS:
        for seed in SEEDS:
            for k, erm in enumerate(cells):
                for ep in range(1, 11):
                    rows.append({"dataset": ds, "seed": seed, "erm": erm, "epoch": ep,
                                 "train_loss": 1.0 / ep, "val_wga": 0.5, "val_mean_acc": 0.8,
                                 "test_wga": 0.4 + 0.03 * ep * (k + 1) / 4 + 0.01 * seed,
                                 "test_mean_acc": 0.8, "train_nc1": 2.0 * 0.7 ** ep * (1 + 0.1 * seed),
                                 "heldout_nc1_final": 1.5 + 0.1 * seed})
    return pd.DataFrame(rows)


def _margins(perfect: bool = True) -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    for ds in DATASETS:
        for seed in SEEDS:
            for ep in (5, 10):
                for g in range(4):
                    m = 0.1 * g + 0.01 * seed + 0.001 * ep
                    acc = 0.5 + 2 * m if perfect else rng.uniform(0.5, 1.0)
                    rows.append({"dataset": ds, "seed": seed, "epoch": ep, "group": g, "min_margin": m,
                                 "avg_margin": 3 * m + 0.2, "n_train": 50, "test_acc": acc})
    return pd.DataFrame(rows)


def _write(tmp: Path, name: str, df: pd.DataFrame) -> str:
    p = tmp / name
    df.to_csv(p, index=False)
    return str(p)


def _check_files(*paths: Path) -> None:
    for p in map(Path, paths):
        data = p.read_bytes()
        assert len(data) > 1000, p
        assert data.startswith(PNG if p.suffix == ".png" else PDF), p


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """Every figure and table built once from the fake inputs."""
    tmp = tmp_path_factory.mktemp("plots")
    f = {"fig5_runs": _write(tmp, "fig5_runs.csv", _runs_rows(FIG5_CELLS)),
         "fig7_runs": _write(tmp, "fig7_runs.csv", _runs_rows(FIG7_CELLS)),
         "fig4_runs": _write(tmp, "fig4_runs.csv", _runs_rows(FIG4_CELLS)),
         "fig2_epochs": _write(tmp, "fig2_epochs.csv", _epochs(long=True)),
         "fig6_epochs": _write(tmp, "fig6_epochs.csv", _epochs(long=False)),
         "margins": _write(tmp, "table1_margins.csv", _margins())}
    svm = pd.DataFrame([{"dataset": ds, "seed": s, "epoch": e, "directional_error": 1.0 / np.sqrt(e) + 0.01 * s}
                        for ds in DATASETS for s in SEEDS for e in range(1, 101)])
    f["svm"] = _write(tmp, "fig3_svm.csv", svm)
    out = {k: Path(v) for k, v in f.items()}
    figs = tmp / "figures"
    tabs = tmp / "tables"
    F = plots.FIGURES
    F["fig2"]([f["fig2_epochs"]], [str(figs / "fig2.png"), str(figs / "fig2.pdf")],
              {"standard_epochs": {"synth_waterbirds": 3, "celeba": 5}})
    F["fig3"]([f["svm"]], [str(figs / "fig3.png"), str(figs / "fig3.pdf")], {})
    # Figure 4 is drawn by the workflow tests; here only its Pearson table is needed.
    tabs.mkdir()
    plots.fig4_pearson(plots.fig4_data(plots._read(f["fig4_runs"]))).to_csv(tabs / "fig4_pearson.csv", index=False)
    F["fig5"]([f["fig5_runs"]], [str(figs / "fig5.png"), str(figs / "fig5.pdf")], {})
    F["fig6"]([f["fig6_epochs"]], [str(figs / "fig6.png"), str(figs / "fig6.pdf")], {})
    F["fig7"]([f["fig7_runs"]], [str(figs / "fig7.png"), str(figs / "fig7.pdf")], {})
    F["table1"]([f["margins"]], [str(tabs / "table1.csv"), str(tabs / "table1.md")], {})
    F["paper_comparison"]([str(tabs / "fig4_pearson.csv"), f["fig4_runs"], f["fig5_runs"], f["fig7_runs"],
                           str(tabs / "table1.csv"), f["fig2_epochs"]], [str(tabs / "paper_comparison.csv")], {})
    out.update({"figs": figs, "tabs": tabs, "tmp": tmp})
    return out


@pytest.mark.parametrize("name", ["fig2", "fig3", "fig5", "fig6", "fig7"])
def test_figure_files(made, name):
    _check_files(made["figs"] / f"{name}.png", made["figs"] / f"{name}.pdf")


def test_registry():
    for name in ("fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "table1", "paper_comparison", "report"):
        assert callable(plots.FIGURES[name])


def test_fig5_fig7_data():
    runs = plots.run_wga(_runs_rows(FIG5_CELLS + FIG7_CELLS[:1]))
    d5 = plots.fig5_data(runs)
    row = d5[(d5["dataset"] == "celeba") & (d5["mode"] == "upsampling") & (d5["series"] != "ERM (100% of data)")]
    assert row["mean"].iloc[0] == pytest.approx(0.79) and row["std"].iloc[0] == pytest.approx(0.02 / np.sqrt(2))
    d7 = plots.fig7_data(plots.run_wga(_runs_rows(FIG7_CELLS)))
    assert set(d7["mode"]) == {"subsetting", "upsampling", "upweighting", "AFR"}
    assert d7.loc[d7["series"] == "AFR", "mean"].iloc[0] == pytest.approx(0.81)


def test_table1_perfect_correlation(made):
    t = pd.read_csv(made["tabs"] / "table1.csv")
    assert list(t.columns) == ["dataset", "kind", "r", "p_value", "n_points", "over"]
    assert len(t) == 4 and np.allclose(t["r"], 1.0)
    assert (t["n_points"] == 16).all()
    md = (made["tabs"] / "table1.md").read_text()
    assert "one group x one seed x one LLR checkpoint" in md and "test accuracy" in md
    assert "| CelebA | minimum | 1.000 |" in md


def test_paper_comparison(made):
    pc = pd.read_csv(made["tabs"] / "paper_comparison.csv")
    assert list(pc.columns) == plots.COMPARISON_COLUMNS
    assert set(pc["holds"]) <= {"yes", "no", "n.a."}

    def holds(cid, ds="celeba", contains=None):
        d = pc[(pc["claim_id"] == cid) & (pc["dataset"] == ds)]
        if contains:
            d = d[d["our_value"].str.contains(contains)]
        assert len(d) == 1, (cid, ds, contains, d)
        return d["holds"].iloc[0]

    # Table 1: r = 1 -> holds; Figure 4: LLR WGA is exactly linear in ERM WGA -> r = 1 > 0.99.
    assert holds("s3e_table1_min") == "yes" and holds("s3e_table1_avg", "synth_waterbirds") == "yes"
    assert holds("fig4_pearson") == "yes"
    fig4 = pc[(pc["claim_id"] == "fig4_pearson") & (pc["dataset"] == "synth_waterbirds")]
    assert "Waterbirds" in fig4["note"].iloc[0]
    # (a) LLR on the balanced held-out set (0.3 + 0.015 + 0.3) beats ERM at ratio 0.05 (0.32).
    assert holds("s3a_llr_balance") == "yes"
    # (b) CB-LLR beats class-balanced ERM for subsetting/upsampling, not upweighting (0.60 < 0.64).
    assert holds("s3b_cbllr", contains="subsetting") == "yes"
    assert holds("s3b_cbllr", contains="upweighting") == "no"
    # (c) DFR beats class-balanced ERM except with upsampling (0.50 < 0.62); AFR beats ERM.
    assert holds("s3c_dfr", contains="subsetting") == "yes"
    assert holds("s3c_dfr", contains="upsampling") == "no"
    assert holds("s3c_afr") == "yes"
    # (d) train NC1 decreases; held-out NC1 (1.65) > final train NC1 (~0.06).
    assert holds("s3d_nc1_decreases") == "yes" and holds("s3d_heldout_nc1") == "yes"


def test_paper_comparison_failing_claims(tmp_path):
    """Claims that fail on the numbers come out 'no'; Table 2 against the
    paper's printed counts."""
    margins = _margins(perfect=True)
    margins["test_acc"] = 1.0 - margins["min_margin"]  # negative correlation
    margins["avg_margin"] = margins["min_margin"]
    plots.table1([_write(tmp_path, "m.csv", margins)], [str(tmp_path / "table1.csv"), str(tmp_path / "t1.md")], {})
    ep = _epochs()
    ep["train_nc1"] = ep["epoch"] * 1.0  # increasing NC1, ending above held-out NC1
    t2 = pd.DataFrame([{"dataset": "waterbirds", "g": g, "train": tr, "val": va, "test": te}
                       for g, (tr, va, te) in enumerate(zip((3498, 184, 56, 1057), (467, 466, 133, 133),
                                                            (2255, 2255, 642, 642)))])
    t2_path = _write(tmp_path, "table2.csv", t2)
    out = tmp_path / "paper_comparison.csv"
    plots.paper_comparison([str(tmp_path / "table1.csv"), _write(tmp_path, "fig2_epochs.csv", ep), t2_path],
                           [str(out)], {})
    pc = pd.read_csv(out)
    assert set(pc.loc[pc["claim_id"].str.startswith("s3e_table1"), "holds"]) == {"no"}
    assert set(pc.loc[pc["claim_id"].str.startswith("s3d"), "holds"]) == {"no"}
    t2r = pc[pc["claim_id"] == "table2_counts"].set_index("claim")
    assert len(t2r) == 3
    assert t2r.filter(like="train", axis=0)["holds"].iloc[0] == "yes"
    test_row = t2r.filter(like="test", axis=0).iloc[0]
    assert test_row["holds"] == "no" and "2225" in test_row["note"]
    with pytest.raises(LLRError):
        plots.paper_comparison([str(tmp_path / "m.csv")], [str(out)], {})


def test_report(made):
    (made["figs"] / "fig4.png").write_bytes((made["figs"] / "fig3.png").read_bytes())  # any PNG stands in
    figs = [str(made["figs"] / f"fig{i}.png") for i in range(2, 8)]
    tabs = [str(made["tabs"] / n) for n in ("table1.csv", "table1.md", "fig4_pearson.csv",
                                             "paper_comparison.csv")]
    out = made["tmp"] / "report.html"
    plots.FIGURES["report"](figs + [str(made["figs"] / "fig2.pdf")] + tabs, [str(out)],
                            {"title": "Test report"})
    text = out.read_text()
    assert text.count("<img ") == len(figs)
    assert text.count("data:image/png;base64,") == len(figs)
    for stem in ("fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "table1", "fig4_pearson", "paper_comparison"):
        assert report.caption(stem) in text
    assert "cached" in text and "augmentation" in text
    assert "<table>" in text and 'class="yes"' in text
    assert "<details>" in text  # table1.csv folded under table1.md


def test_markdown_html():
    html = report.markdown_html("| a | b\\|c |\n|---|---:|\n| 1 | 2 |\n\nText **bold**.\n\n- x\n- y\n")
    assert "<th>b|c</th>" in html and "<td>2</td>" in html and "<strong>bold</strong>" in html
    assert html.count("<li>") == 2


def test_fig2_final_only_and_missing_cells(tmp_path):
    """Figure 2 from end-of-training NC1 only (no per-epoch trace); a runs
    table without any Figure 7 cell is an error, not an empty figure."""
    ep = _epochs().drop(columns=["train_nc1"]).assign(train_nc1_final=0.5)
    src = _write(tmp_path, "fig2_epochs.csv", ep)
    plots.fig2([src], [str(tmp_path / "a.png"), str(tmp_path / "a.pdf")], {})
    _check_files(tmp_path / "a.png", tmp_path / "a.pdf")
    plots.paper_comparison([src], [str(tmp_path / "pc.csv")], {})
    pc = pd.read_csv(tmp_path / "pc.csv")
    assert list(pc["claim_id"]) == ["s3d_heldout_nc1"] * 2 and set(pc["holds"]) == {"yes"}
    with pytest.raises(LLRError, match="no run"):
        plots.fig7([_write(tmp_path, "fig7_runs.csv", _runs_rows(FIG5_CELLS[:2]))],
                   [str(tmp_path / "b.png"), str(tmp_path / "b.pdf")], {})
