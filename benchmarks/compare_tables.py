"""Compare the tables of two results folders cell by cell, as text.

Usage: python benchmarks/compare_tables.py RESULTS_A RESULTS_B

Every ``tables/*.csv`` and ``tables/*.md`` of either folder must exist in
both with the same columns, rows and values (compared as the written text,
so a difference in the last printed digit counts). The only columns left out
are wall-clock times (``seconds``), which no two runs share. Exit status 0
when everything agrees, 1 otherwise (each difference printed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

WALL_CLOCK = ("seconds",)


def compare(a: Path, b: Path) -> list[str]:
    problems = []
    names = sorted({p.name for d in (a, b) for p in (d / "tables").glob("*") if p.suffix in (".csv", ".md")})
    for name in names:
        fa, fb = a / "tables" / name, b / "tables" / name
        if not (fa.exists() and fb.exists()):
            problems.append(f"{name}: only in {fa.parent if fa.exists() else fb.parent}")
            continue
        if fa.suffix == ".md":
            if fa.read_text() != fb.read_text():
                problems.append(f"{name}: text differs")
            continue
        da = pd.read_csv(fa, dtype=str, keep_default_na=False)
        db = pd.read_csv(fb, dtype=str, keep_default_na=False)
        if list(da.columns) != list(db.columns) or da.shape != db.shape:
            problems.append(f"{name}: columns or shape differ ({da.shape} vs {db.shape})")
            continue
        cols = [c for c in da.columns if c not in WALL_CLOCK]
        diff = da[cols].ne(db[cols])
        for col in diff.columns[diff.any()]:
            rows = diff.index[diff[col]]
            problems.append(
                f"{name}: column {col}: {len(rows)} of {len(da)} rows differ, e.g. row {rows[0]}: "
                f"{da.at[rows[0], col]!r} vs {db.at[rows[0], col]!r}"
            )
    print(f"compared {len(names)} tables of {a} and {b}: {len(problems)} differences")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    problems = compare(Path(argv[0]), Path(argv[1]))
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
