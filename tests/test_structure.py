"""Guard rails of the code base: lint and format (ruff, snakefmt), no import
cycles in the llr package, no experiment cell spelled out in a rule file, and
no citation of a design file outside the repository (docs/design.md)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "src" / "llr"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    exe = BIN / name
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed (pip install -e '.[test]')")
    return found


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)


def test_ruff_lint_is_clean():
    r = _run(_tool("ruff"), "check", "src", "tests", "benchmarks")
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format_is_clean():
    r = _run(_tool("ruff"), "format", "--check", "src", "tests", "benchmarks")
    assert r.returncode == 0, r.stdout + r.stderr


def test_snakefmt_is_clean():
    r = _run(_tool("snakefmt"), "--check", "Snakefile", "workflow/rules")
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------- imports
def _module_name(path: Path, root: Path = PKG) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def import_graph(root: Path = PKG) -> dict[str, set[str]]:
    """llr module -> the llr modules it imports, at module level or inside a
    function (``from llr.x import y`` counts as llr.x.y when that is a module)."""
    mods = {_module_name(p, root): p for p in root.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {resolve(a.name) for a in node.names if a.name.split(".")[0] == "llr"}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if base.split(".")[0] != "llr":
                    continue
                for a in node.names:
                    full = f"{base}.{a.name}"
                    deps.add(full if full in mods else resolve(base))
        deps.discard(None)
        deps.discard(name)
        graph[name] = {d for d in deps if d is not None}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle(tmp_path):
    pkg = tmp_path / "llr"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from llr.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from llr.a import x\n")  # inside a function
    (pkg / "c.py").write_text("from llr import a\n")
    g = import_graph(pkg)
    assert g["llr.a"] == {"llr.sub.b"} and g["llr.c"] == {"llr.a"}
    assert cycles(g) == [["llr.a", "llr.sub.b"]]


def test_no_module_imports_one_that_imports_it_back():
    assert cycles(import_graph()) == []


def test_every_module_says_what_it_holds():
    missing = [_module_name(p) for p in PKG.rglob("*.py") if not ast.get_docstring(ast.parse(p.read_text()))]
    assert missing == []


# ---------------------------------------------------------------- workflow
CELL_WORDS = re.compile(r"\b(train|combined)_(none|ratio|class|group|long)|heldout_(ratio|sampled)|\b(cbllr|dfr)_")


def test_no_rule_file_defines_an_experiment_cell():
    """Cells come from llr.experiments; the rule files only wire them (comments aside)."""
    found = []
    for f in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        for i, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if CELL_WORDS.search(code):
                found.append(f"{f.name}:{i}: {line.strip()}")
    assert found == []


def test_code_cites_the_design_document_in_the_repository():
    hits = [
        f"{p.relative_to(REPO)}"
        for d in ("src", "workflow", "tests", "benchmarks")
        for p in (REPO / d).rglob("*")
        if p.is_file() and p.suffix in {".py", ".smk", ".rst", ".yaml"} and "DESIGN" + ".md" in p.read_text()
    ]
    assert hits == []
    assert (REPO / "docs" / "design.md").is_file()
