"""Table 2 (llr.tables): counts and train proportions per dataset x group, the
paper's printed counts, and the real Waterbirds/CelebA metadata when
../shared/datasets is present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llr import tables
from llr.data import standardize, get_spec
from llr.errors import LLRError

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"


def _meta(name: str, counts: dict[str, list[int]]) -> pd.DataFrame:
    """A standardized metadata table with the given group counts per split."""
    spec = get_spec(name)
    recs = [(sp, g // spec.n_spurious, g % spec.n_spurious)
            for sp, cs in counts.items() for g, c in enumerate(cs) for _ in range(c)]
    df = pd.DataFrame(recs, columns=["split", "y", "s"])
    return standardize(df, spec, "test")


def test_table2_values_synthetic():
    counts = {"train": [8, 2, 1, 4, 3, 2], "val": [1] * 6, "test": [2] * 6}
    df = tables.table2({"synth_multinli": _meta("synth_multinli", counts)})
    assert list(df.columns) == list(tables.TABLE2_COLUMNS)
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
    assert tables.compare_table2(df).empty
    md = tables.table2_markdown(df)
    assert md.count("\n| synth_multinli |") == 6 and "contradiction / negation" in md


def test_compare_with_paper_and_markdown():
    wb = {sp: list(c) for sp, c in tables.PAPER_TABLE2["waterbirds"].items()}
    wb["test"] = [2255, 2255, 642, 642]  # what the metadata file holds
    metas = {"waterbirds": _meta("waterbirds", wb),
             "synth_waterbirds": _meta("synth_waterbirds", {sp: [3, 1, 1, 3] for sp in ("train", "val", "test")})}
    df = tables.table2(metas)
    assert df["dataset"].tolist() == ["waterbirds"] * 4 + ["synth_waterbirds"] * 4
    cmp = tables.compare_table2(df)
    assert list(cmp.columns) == ["dataset", "g", "split", "paper", "ours", "match"]
    assert len(cmp) == 12 and set(cmp["dataset"]) == {"waterbirds"}
    bad = cmp[~cmp["match"]]
    assert bad[["g", "split", "paper", "ours"]].values.tolist() == [[0, "test", 2225, 2255], [1, "test", 2225, 2255]]
    md = tables.table2_markdown(df)
    assert "paper 2225, ours 2255" in md and "5794" in md
    assert "| waterbirds | landbird / land | 0 | 3,498 | 467 | 2,255 |" in md


def test_paper_table2_consistent():
    for name, t in tables.PAPER_TABLE2.items():
        spec = get_spec(name)
        assert set(t) == {"train", "val", "test"}
        assert all(len(c) == spec.n_groups for c in t.values())
    # split sizes of the standard benchmarks (WILDS CivilComments, group_DRO MultiNLI)
    assert [sum(c) for c in tables.PAPER_TABLE2["civilcomments"].values()] == [269038, 45180, 133782]
    assert [sum(c) for c in tables.PAPER_TABLE2["multinli"].values()] == [206175, 82462, 123712]
    assert [sum(c) for c in tables.PAPER_TABLE2["celeba"].values()] == [162770, 19867, 19962]


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
    df = tables.write_table2(paths, out_csv, out_md)
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
            tables.write_table2(bad, tmp_path / "t2" / "a.csv", tmp_path / "t2" / "a.md")
        assert "\n" not in str(e.value)
        assert not (tmp_path / "t2").exists() or list((tmp_path / "t2").iterdir()) == []


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} absent")
def test_table2_real(tmp_path):
    from llr.datasets import prepare

    paths = []
    for name in ("waterbirds", "celeba"):
        out = tmp_path / "results" / name / "metadata.csv"
        prepare(name, SHARED, out)
        paths.append(str(out))
    df = tables.write_table2(paths, tmp_path / "table2.csv", tmp_path / "table2.md")
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
    cmp = tables.compare_table2(df)
    assert len(cmp) == 24
    bad = cmp[~cmp["match"]]
    assert bad[["dataset", "g", "split"]].values.tolist() == [["waterbirds", 0, "test"], ["waterbirds", 1, "test"]]
    assert "paper 2225, ours 2255" in (tmp_path / "table2.md").read_text()
