"""benchmarks/compare_tables.py: the check that a change left every table as it was."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("compare_tables", REPO / "benchmarks" / "compare_tables.py")
ct = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ct)


def _folder(root: Path, rows: str, md: str = "| a |\n") -> Path:
    (root / "tables").mkdir(parents=True)
    (root / "tables" / "fig2_epochs.csv").write_text("dataset,epoch,seconds,test_wga\n" + rows)
    (root / "tables" / "table1.md").write_text(md)
    return root


def test_wall_clock_ignored_values_compared_as_text(tmp_path):
    a = _folder(tmp_path / "a", "wb,1,3.5,0.812\nwb,2,7.1,0.9\n")
    b = _folder(tmp_path / "b", "wb,1,4.0,0.812\nwb,2,8.2,0.9\n")
    assert ct.compare(a, b) == []
    c = _folder(tmp_path / "c", "wb,1,3.5,0.8120\nwb,2,7.1,0.9\n")  # same number, other text
    assert ct.compare(a, c) == ["fig2_epochs.csv: column test_wga: 1 of 2 rows differ, e.g. row 0: '0.812' vs '0.8120'"]
    assert ct.main([str(a), str(c)]) == 1 and ct.main([str(a), str(b)]) == 0


def test_missing_table_and_markdown_differences(tmp_path):
    a = _folder(tmp_path / "a", "wb,1,3.5,0.8\n")
    b = _folder(tmp_path / "b", "wb,1,3.5,0.8\n", md="| b |\n")
    (a / "tables" / "extra.csv").write_text("x\n1\n")
    assert ct.compare(a, b) == [f"extra.csv: only in {a / 'tables'}", "table1.md: text differs"]
