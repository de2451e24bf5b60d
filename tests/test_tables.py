"""Table 2 (llr.reporting.table2): counts and train proportions per dataset x group, the
paper's printed counts, and the real Waterbirds/CelebA metadata when ../shared/datasets is
present; the tidy collectors (llr.reporting.tidy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llr.data.registry import get_spec, standardize
from llr.errors import LLRError
from llr.reporting import table2
from llr.reporting import tidy as tables

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"


def _meta(name: str, counts: dict[str, list[int]]) -> pd.DataFrame:
    """A standardized metadata table with the given group counts per split."""
    spec = get_spec(name)
    recs = [
        (sp, g // spec.n_spurious, g % spec.n_spurious)
        for sp, cs in counts.items()
        for g, c in enumerate(cs)
        for _ in range(c)
    ]
    df = pd.DataFrame(recs, columns=["split", "y", "s"])
    return standardize(df, spec, "test")


def test_table2_values_synthetic():
    counts = {"train": [8, 2, 1, 4, 3, 2], "val": [1] * 6, "test": [2] * 6}
    df = table2.table2({"synth_multinli": _meta("synth_multinli", counts)})
    assert list(df.columns) == list(table2.TABLE2_COLUMNS)
    assert len(df) == 6
    assert df["g"].tolist() == list(range(6))
    assert df["y"].tolist() == [0, 0, 1, 1, 2, 2] and df["s"].tolist() == [0, 1] * 3
    assert df["class_name"].tolist()[::2] == ["contradiction", "entailment", "neutral"]
    assert df["spurious_name"].tolist()[:2] == ["no-negation", "negation"]
    assert df["train"].tolist() == counts["train"] and df["test"].tolist() == [2] * 6
    n = 20
    np.testing.assert_allclose(df["p_g"], np.array(counts["train"]) / n)
    np.testing.assert_allclose(df["p_y"], np.repeat([10 / n, 5 / n, 5 / n], 2))
    # P(y | s): s=0 has 8+1+3 = 12, s=1 has 2+4+2 = 8
    np.testing.assert_allclose(df["p_y_given_s"], [8 / 12, 2 / 8, 1 / 12, 4 / 8, 3 / 12, 2 / 8])
    np.testing.assert_allclose(df.groupby("s")["p_y_given_s"].sum(), [1.0, 1.0])
    # synthetic datasets have no paper counts
    assert table2.compare_table2(df).empty
    md = table2.table2_markdown(df)
    assert md.count("\n| synth_multinli |") == 6 and "contradiction / negation" in md


def test_compare_with_paper_and_markdown():
    wb = {sp: list(c) for sp, c in table2.PAPER_TABLE2["waterbirds"].items()}
    wb["test"] = [2255, 2255, 642, 642]  # what the metadata file holds
    metas = {
        "waterbirds": _meta("waterbirds", wb),
        "synth_waterbirds": _meta("synth_waterbirds", {sp: [3, 1, 1, 3] for sp in ("train", "val", "test")}),
    }
    df = table2.table2(metas)
    assert df["dataset"].tolist() == ["waterbirds"] * 4 + ["synth_waterbirds"] * 4
    cmp = table2.compare_table2(df)
    assert list(cmp.columns) == ["dataset", "g", "split", "paper", "ours", "match"]
    assert len(cmp) == 12 and set(cmp["dataset"]) == {"waterbirds"}
    bad = cmp[~cmp["match"]]
    assert bad[["g", "split", "paper", "ours"]].values.tolist() == [[0, "test", 2225, 2255], [1, "test", 2225, 2255]]
    md = table2.table2_markdown(df)
    assert "paper 2225, ours 2255" in md and "5794" in md
    assert "| waterbirds | landbird / land | 0 | 3,498 | 467 | 2,255 |" in md


def test_paper_table2_consistent():
    for name, t in table2.PAPER_TABLE2.items():
        spec = get_spec(name)
        assert set(t) == {"train", "val", "test"}
        assert all(len(c) == spec.n_groups for c in t.values())
    # split sizes of the standard benchmarks (WILDS CivilComments, group_DRO MultiNLI)
    assert [sum(c) for c in table2.PAPER_TABLE2["civilcomments"].values()] == [269038, 45180, 133782]
    assert [sum(c) for c in table2.PAPER_TABLE2["multinli"].values()] == [206175, 82462, 123712]
    assert [sum(c) for c in table2.PAPER_TABLE2["celeba"].values()] == [162770, 19867, 19962]


def test_write_table2(tmp_path):
    paths = []
    for name in ("synth_waterbirds", "synth_multinli"):
        spec = get_spec(name)
        m = _meta(name, {sp: [2] * spec.n_groups for sp in ("train", "val", "test")})
        p = tmp_path / "results" / name / "metadata.csv"
        p.parent.mkdir(parents=True)
        m.to_csv(p, index=False)
        paths.append(str(p))
    out_csv, out_md = tmp_path / "tables" / "table2.csv", tmp_path / "tables" / "table2.md"
    df = table2.write_table2(paths, out_csv, out_md)
    back = pd.read_csv(out_csv)
    assert back["dataset"].tolist() == ["synth_waterbirds"] * 4 + ["synth_multinli"] * 6
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert out_md.read_text().startswith("| dataset |")
    assert sorted(p.name for p in out_csv.parent.iterdir()) == ["table2.csv", "table2.md"]
    # a folder name that is no dataset, or a missing file: LLRError, nothing written
    odd = tmp_path / "results" / "nonsense" / "metadata.csv"
    odd.parent.mkdir()
    odd.write_text(Path(paths[0]).read_text())
    for bad in ([str(odd)], [str(tmp_path / "missing" / "metadata.csv")]):
        with pytest.raises(LLRError) as e:
            table2.write_table2(bad, tmp_path / "t2" / "a.csv", tmp_path / "t2" / "a.md")
        assert "\n" not in str(e.value)
        assert not (tmp_path / "t2").exists() or list((tmp_path / "t2").iterdir()) == []


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} absent")
def test_table2_real(tmp_path):
    from llr.data.real import prepare

    paths = []
    for name in ("waterbirds", "celeba"):
        out = tmp_path / "results" / name / "metadata.csv"
        prepare(name, SHARED, out)
        paths.append(str(out))
    df = table2.write_table2(paths, tmp_path / "table2.csv", tmp_path / "table2.md")
    wb = df[df["dataset"] == "waterbirds"]
    assert wb["train"].tolist() == [3498, 184, 56, 1057]
    assert wb["val"].tolist() == [467, 466, 133, 133]
    assert wb["test"].tolist() == [2255, 2255, 642, 642]
    n = 4795
    np.testing.assert_allclose(wb["p_g"], np.array([3498, 184, 56, 1057]) / n)
    np.testing.assert_allclose(wb["p_y"], [3682 / n, 3682 / n, 1113 / n, 1113 / n])
    np.testing.assert_allclose(wb["p_y_given_s"], [3498 / 3554, 184 / 1241, 56 / 3554, 1057 / 1241])
    ce = df[df["dataset"] == "celeba"]
    assert ce["train"].tolist() == [71629, 66874, 22880, 1387]
    assert ce["val"].tolist() == [8535, 8276, 2874, 182]
    assert ce["test"].tolist() == [9767, 7535, 2480, 180]
    n = 162770
    np.testing.assert_allclose(ce["p_g"].iloc[3], 1387 / n)
    np.testing.assert_allclose(ce["p_y"].iloc[2], (22880 + 1387) / n)
    np.testing.assert_allclose(ce["p_y_given_s"].iloc[3], 1387 / (66874 + 1387))
    cmp = table2.compare_table2(df)
    assert len(cmp) == 24
    bad = cmp[~cmp["match"]]
    assert bad[["dataset", "g", "split"]].values.tolist() == [["waterbirds", 0, "test"], ["waterbirds", 1, "test"]]
    assert "paper 2225, ours 2255" in (tmp_path / "table2.md").read_text()


# ------------------------------------------------------------------ collectors
from llr.io import write_json  # noqa: E402


def _role(acc):
    return {"acc_by_group": acc, "wga": min(a for a in acc if a is not None), "mean_acc": 0.9, "n": 10}


def _runs(tmp_path):
    base = tmp_path / "results" / "synth_waterbirds" / "seed2"
    erm = base / "erm" / "train_none" / "metrics.json"
    write_json(erm, {"roles": {"test": _role([1.0, 0.5, None, 0.75])}, "nc1": {"train": 0.3, "heldout": 0.4}})
    afr = base / "lastlayer" / "train_none" / "afr" / "heldout_ratio0.5" / "metrics.json"
    write_json(
        afr,
        {
            "metrics": {"val": _role([0.9, 0.8, 0.7, 0.6]), "test": _role([0.5, 0.6, 0.7, 0.8])},
            "effective_group_ratio": 0.25,
            "heldout_group_ratio": 0.5,
            "train_group_ratio": 0.125,
            "heldout_construction": "subset",
            "afr": {"gamma": 4.5, "lambda": 0.1, "val_wga": 0.6},
        },
    )
    llr = base / "lastlayer" / "train_none" / "llr" / "full" / "metrics.json"
    write_json(llr, {"metrics": {"test": _role([0.1, 0.2, 0.3, 0.4])}, "heldout_construction": "full"})
    return erm, afr, llr


def test_collect_runs_columns_and_last_layer_info(tmp_path):
    files = [str(p) for p in _runs(tmp_path)]
    df = tables.collect_runs(files, tmp_path / "runs.csv")
    assert list(df.columns) == list(tables.RUN_COLUMNS)
    assert len(df) == 4 + 8 + 4
    back = pd.read_csv(tmp_path / "runs.csv")
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    erm = df[df["method"] == "erm"]
    assert erm["heldout"].tolist() == ["-"] * 4 and erm["acc"].isna().tolist() == [False, False, True, False]
    for c in (
        "effective_group_ratio",
        "heldout_group_ratio",
        "train_group_ratio",
        "heldout_construction",
        "afr_gamma",
        "afr_lambda",
    ):
        assert erm[c].isna().all(), c
    afr = df[df["method"] == "afr"]
    assert (
        afr["heldout"].unique().tolist() == ["heldout_ratio0.5"] and afr["role"].tolist() == ["test"] * 4 + ["val"] * 4
    )  # keys sorted on write
    assert (afr["effective_group_ratio"] == 0.25).all() and (afr["heldout_group_ratio"] == 0.5).all()
    assert (afr["train_group_ratio"] == 0.125).all() and (afr["heldout_construction"] == "subset").all()
    assert (afr["afr_gamma"] == 4.5).all() and (afr["afr_lambda"] == 0.1).all()
    assert afr[afr["role"] == "test"]["acc"].tolist() == [0.5, 0.6, 0.7, 0.8]
    llr = df[df["method"] == "llr"]
    assert (llr["heldout_construction"] == "full").all() and llr["afr_gamma"].isna().all()
    assert llr["effective_group_ratio"].isna().all()


def test_collect_runs_refuses_edited_truncated_and_foreign_json(tmp_path):
    import json

    erm, afr, llr = _runs(tmp_path)
    out = tmp_path / "tables" / "runs.csv"
    raw = json.loads(afr.read_text())
    raw["metrics"]["test"]["wga"] = 0.55  # a valid but wrong number
    afr.write_text(json.dumps(raw, indent=2, sort_keys=True))
    with pytest.raises(LLRError) as e:
        tables.collect_runs([str(erm), str(afr)], out)
    assert str(e.value).startswith(f"{afr}: content does not match") and "\n" not in str(e.value)
    llr.write_text(llr.read_text()[:-40])  # truncated
    with pytest.raises(LLRError) as e:
        tables.collect_runs([str(llr)], out)
    assert str(e.value).startswith(f"{llr}: incomplete or not JSON")
    erm.write_text(json.dumps({"roles": {"test": _role([1.0, 1.0, 1.0, 1.0])}}))  # not written by llr
    with pytest.raises(LLRError) as e:
        tables.collect_runs([str(erm)], out)
    assert str(e.value).startswith(f"{erm}: no '_llr' signature")
    write_json(erm, {"roles": {"test": {"acc_by_group": [1.0], "mean_acc": 1.0}}})  # signed, incomplete
    with pytest.raises(LLRError) as e:
        tables.collect_runs([str(erm)], out)
    assert str(e.value) == f"{erm}: role 'test': key 'wga' missing, expected acc_by_group, wga, mean_acc"
    assert not out.parent.exists()


def _log(path, epochs=3, drop=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    d = pd.DataFrame(
        {"epoch": np.arange(1, epochs + 1), "train_loss": 0.5, "lr": 1e-3, "seconds": 1.0, "test_wga": 0.5}
    )
    d.drop(columns=list(drop)).to_csv(path, index=False)
    return path


def test_collect_logs_checks_columns_epochs_and_metrics(tmp_path):
    erm, _, _ = _runs(tmp_path)
    log = _log(erm.parent / "log.csv")
    other = _log(tmp_path / "results" / "synth_waterbirds" / "seed3" / "erm" / "train_none" / "log.csv", 2)
    df = tables.collect_logs([str(log), str(other)], tmp_path / "logs.csv")
    assert df["seed"].tolist() == [2, 2, 2, 3, 3] and df["epoch"].tolist() == [1, 2, 3, 1, 2]
    assert df["heldout_nc1_final"].iloc[:3].tolist() == [0.4] * 3 and df["heldout_nc1_final"].iloc[3:].isna().all()
    _log(other, 2, drop=("train_loss",))
    with pytest.raises(LLRError) as e:
        tables.collect_logs([str(other)], tmp_path / "x.csv")
    assert str(e.value) == f"{other}: column 'train_loss' missing, expected columns {list(tables.LOG_COLUMNS)}"
    pd.read_csv(log).iloc[[0, 2]].to_csv(log, index=False)  # epoch 2 lost
    with pytest.raises(LLRError, match="epoch' must rise to the end of every epoch 1..n"):
        tables.collect_logs([str(log)], tmp_path / "x.csv")
    # several evaluation points per epoch are complete when they reach every epoch's end
    frac = pd.DataFrame({"epoch": [0.5, 1.0, 1.5, 2.0], "train_loss": 0.1, "lr": 0.1, "seconds": 1.0})
    frac.to_csv(log, index=False)
    assert tables.collect_logs([str(log)], tmp_path / "frac.csv")["epoch"].tolist() == [0.5, 1.0, 1.5, 2.0]
    frac.iloc[:3].to_csv(log, index=False)  # stops mid-epoch
    with pytest.raises(LLRError, match="epoch' must rise"):
        tables.collect_logs([str(log)], tmp_path / "x.csv")
    other.write_text("")
    with pytest.raises(LLRError) as e:
        tables.collect_logs([str(other)], tmp_path / "x.csv")
    assert str(e.value).startswith(f"{other}: empty file")
    _log(log)
    erm.write_text(erm.read_text().replace("0.4", "0.41"))  # edited metrics.json next to the log
    with pytest.raises(LLRError, match="content does not match"):
        tables.collect_logs([str(log)], tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_collect_analysis_checks_columns(tmp_path):
    a = tmp_path / "results" / "synth_waterbirds" / "seed1" / "analysis"
    a.mkdir(parents=True)
    pd.DataFrame({"epoch": [1, 2], "directional_error": [0.5, 0.4]}).to_csv(a / "svm_convergence.csv", index=False)
    pd.DataFrame(
        {
            "seed": 1,
            "epoch": [5],
            "group": [0],
            "min_margin": [0.1],
            "avg_margin": [0.2],
            "n_train": [9],
            "test_acc": [0.8],
        }
    ).to_csv(a / "margins.csv", index=False)
    df = tables.collect_analysis([str(a / "svm_convergence.csv")], tmp_path / "svm.csv")
    assert list(df.columns) == ["dataset", "seed", "epoch", "directional_error"] and len(df) == 2
    assert len(tables.collect_analysis([str(a / "margins.csv")], tmp_path / "m.csv")) == 1
    pd.DataFrame(
        {"epoch": [5], "group": [0], "min_margin": [0.1], "n_train": [9], "test_acc": [0.8], "seed": 1}
    ).to_csv(a / "margins.csv", index=False)
    with pytest.raises(LLRError) as e:
        tables.collect_analysis([str(a / "margins.csv")], tmp_path / "x.csv")
    assert str(e.value).startswith(f"{a / 'margins.csv'}: column 'avg_margin' missing")
    (a / "svm_convergence.csv").write_text("epoch,directional_error\n")
    with pytest.raises(LLRError, match="svm_convergence.csv: no rows"):
        tables.collect_analysis([str(a / "svm_convergence.csv")], tmp_path / "x.csv")
    (a / "svm_convergence.csv").write_text('epoch,directional_error\n1,"0.5\n')
    with pytest.raises(LLRError, match="svm_convergence.csv: not a readable CSV"):
        tables.collect_analysis([str(a / "svm_convergence.csv")], tmp_path / "x.csv")
