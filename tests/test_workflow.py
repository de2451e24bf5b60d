"""The Snakemake workflow: config validation, DAG shape, an end-to-end run
of the tiny config, and what reruns after an edit of the plotting code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, snakemake_env

TINY = REPO / "tests" / "configs" / "tiny.yaml"


def smk(*args, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(cwd), *args]
    res = subprocess.run(cmd, cwd=cwd, env=snakemake_env(), capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"snakemake failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run."""
    counts, inside = {}, False
    for line in output.splitlines():
        if line.startswith("Job stats"):
            inside, counts = True, {}
            continue
        if inside:
            m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
            if m and m.group(1) != "total":
                counts[m.group(1)] = int(m.group(2))
            elif line.strip().startswith("total"):
                inside = False
    return counts


def write_config(tmp: Path, **overrides) -> Path:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg.update(overrides)
    p = tmp / "config.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_default_config_dry_run_counts(tmp_path):
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    res = smk("-n", "all", "--configfile", str(REPO / "config.yaml"), cwd=tmp_path)
    counts = job_counts(res.stdout + res.stderr)
    n_ds, n_seeds, n_r = len(cfg["datasets"]), len(cfg["seeds"]), len(cfg["group_ratios"])
    figs = set(cfg["figures"])
    erm_cells = set()
    if "fig4" in figs:
        erm_cells |= {f"train_ratio{r}" for r in range(n_r)} | {f"combined_ratio{r}" for r in range(n_r)}
    if figs & {"fig5"}:
        erm_cells |= {f"{p}_{b}" for p in ("combined", "train") for b in ("none", "cs", "cu", "cw")}
    if figs & {"fig6"}:
        erm_cells |= {"combined_none", "combined_gs", "combined_gu", "combined_gw"}
    if "fig7" in figs:
        erm_cells |= {"combined_cs", "combined_cu", "combined_cw", "train_cs", "train_cu", "train_cw", "train_none"}
    if "fig2" in figs:
        erm_cells |= {"train_none_long"}
    if figs & {"fig3"} or "table1" in cfg.get("tables", []):
        erm_cells |= {"train_none"}
    # One erm job per dataset x seed x ERM cell.
    assert counts["erm"] == n_ds * n_seeds * len(erm_cells)
    ll_cells = 0
    if "fig4" in figs:
        ll_cells += n_r * n_r + n_r  # LLR per (ERM ratio, held-out ratio) + DFR per ERM ratio
    if "fig5" in figs:
        ll_cells += 4  # llr + three CB-LLR
    if "fig7" in figs:
        ll_cells += 4  # three DFR + AFR
    # One lastlayer job per dataset x seed x ERM cell x method x held-out cell.
    assert counts["lastlayer"] == n_ds * n_seeds * ll_cells
    assert counts["split"] == n_ds * n_seeds
    assert counts.get("pretrain", 0) == sum(1 for d in cfg["datasets"] if d.startswith("synth_"))


@pytest.mark.parametrize("override, message", [
    ({"sedes": [1]}, "unknown key 'sedes'; allowed: "),
    ({"seeds": ["x"]}, "config: seeds[0] = 'x' is invalid"),
    ({"group_ratios": [0.5, 1.5]}, "config: group_ratios[1] = 1.5 is invalid"),
    ({"device": "tpu"}, "config: device = 'tpu' not allowed; expected one of"),
    ({"datasets": ["imagenet"]}, "config: datasets[0] = 'imagenet' not allowed"),
])
def test_bad_config_one_line_error(tmp_path, override, message):
    cfg = write_config(tmp_path, **override)
    res = smk("-n", "all", "--configfile", str(cfg), cwd=tmp_path, check=False)
    assert res.returncode != 0
    lines = [l for l in (res.stdout + res.stderr).splitlines() if l.startswith("llr: error:")]
    assert len(lines) == 1 and message in lines[0], res.stdout + res.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny config end to end (about a minute or two on 2 cores)."""
    work = tmp_path_factory.mktemp("tiny")
    smk("--configfile", str(TINY), "--cores", "2", "all", cwd=work)
    return work


def test_tiny_run_outputs(tiny_run):
    import pandas as pd

    cfg = yaml.safe_load(TINY.read_text())
    res = tiny_run / "results"
    for fig in cfg["figures"]:
        for ext, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
            f = res / "figures" / f"{fig}.{ext}"
            assert f.read_bytes()[:4] == magic
    runs = pd.read_csv(res / "tables" / "fig4_runs.csv")
    assert runs["wga"].between(0, 1).all() and runs["acc"].between(0, 1).all()
    n_r = len(cfg["group_ratios"])
    test = runs[runs["role"] == "test"]
    run_keys = ["dataset", "seed", "erm", "method", "heldout"]
    per_run = test.drop_duplicates(run_keys)
    assert sorted(per_run["dataset"].unique()) == sorted(cfg["datasets"])
    assert len(per_run) == len(cfg["datasets"]) * len(cfg["seeds"]) * (2 * n_r + n_r * n_r + n_r)
    # WGA is the minimum of the per-group accuracies of the same run.
    wga = test.groupby(run_keys).agg(acc=("acc", "min"), wga=("wga", "first"))
    assert (wga["acc"] - wga["wga"]).abs().max() < 1e-12
    pear = pd.read_csv(res / "tables" / "fig4_pearson.csv")
    for ds in cfg["datasets"]:
        assert list(pear.loc[pear["dataset"] == ds, "erm_ratio"]) == [float(r) for r in cfg["group_ratios"]]
    assert pear["pearson_r"].dropna().between(-1, 1).all()
    # Every ERM cell cached its embeddings once, for every example.
    import numpy as np

    for ds, dim in (("synth_waterbirds", 512), ("synth_multinli", 64)):
        meta = pd.read_csv(res / ds / "metadata.csv")
        emb = np.load(res / ds / "seed1" / "erm" / "train_ratio1.0_none" / "embeddings.npy")
        assert emb.shape == (len(meta), dim) and emb.dtype == np.float16


def test_plot_edit_reruns_only_the_plot(tiny_run):
    """Snakemake reruns a job when an input's content changed (a mere touch
    keeps the recorded checksum): edit the plotting module for real."""
    plots = REPO / "src" / "llr" / "plots.py"
    text, st = plots.read_text(), plots.stat()
    try:
        plots.write_text(text + "\n# restyled\n")
        res = smk("-n", "results/figures/fig4.png", "--configfile", str(TINY), cwd=tiny_run)
        assert job_counts(res.stdout + res.stderr) == {"fig4": 1}
        # Restyling retrains nothing anywhere: the whole workflow only redraws.
        res = smk("-n", "all", "--configfile", str(TINY), cwd=tiny_run)
        assert set(job_counts(res.stdout + res.stderr)) <= {"fig4", "figure", "table1", "paper_comparison",
                                                            "report", "all"}
    finally:
        plots.write_text(text)
        os.utime(plots, ns=(st.st_atime_ns, st.st_mtime_ns))
    res = smk("-n", "results/figures/fig4.png", "--configfile", str(TINY), cwd=tiny_run)
    assert "Nothing to be done" in res.stdout + res.stderr
