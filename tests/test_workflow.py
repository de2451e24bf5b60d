"""The Snakemake workflow: config validation, DAG shape, an end-to-end run
of the tiny config, and what reruns after an edit of the plotting code."""

from __future__ import annotations

import os
import re
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
    """The DAG has one job per cell the experiment grid (llr.experiments) names."""
    from llr.config import check_config
    from llr.experiments import CELL_FIGURES, Grid

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    res = smk("-n", "all", "--configfile", str(REPO / "config.yaml"), cwd=tmp_path)
    counts = job_counts(res.stdout + res.stderr)
    check_config(cfg)
    grid = Grid(cfg)
    figs = set(cfg["figures"])
    files = [f for fig in CELL_FIGURES if fig in figs for f in grid.figure_runs(fig)]
    files += grid.figure_logs("fig2") if "fig2" in figs else []
    files += grid.fig8_files() if "fig8" in figs else []
    files += grid.ablation_files() if "ablation_caching" in figs else []
    if figs & {"fig3"} or "table1" in cfg.get("tables", []):
        files += [grid.analysis_emb(d, s) for d in grid.datasets for s in grid.seeds]
    cell = re.compile(r"^results/(\w+)/seed(\d+)/(erm|lastlayer\w*)/([^/]+)/(?:([^/]+)/([^/]+)/)?")
    jobs = {k: set() for k in ("erm", "lastlayer", "lastlayer_matched", "lastlayer_backbone")}
    for f in files:
        m = cell.match(f)
        jobs["erm"].add(m.group(1, 2, 4))  # every last-layer run reads its ERM cell
        if m[3] != "erm":
            jobs[m[3]].add(m.group(1, 2, 4, 5, 6))
    # One erm job per dataset x seed x ERM cell; one last-layer job per
    # dataset x seed x ERM cell x method x held-out cell, in each mode.
    for rule, cells in jobs.items():
        assert counts.get(rule, 0) == len(cells), rule
    assert counts["lastlayer"] > 0 and counts["erm"] > 0
    assert jobs["erm"] == {(d, str(s), c) for d in grid.datasets for s in grid.seeds for c in grid.erm_cells(d)}
    assert counts["split"] == len(grid.datasets) * len(grid.seeds)
    assert counts.get("pretrain", 0) == sum(1 for d in cfg["datasets"] if d.startswith("synth_"))


@pytest.mark.parametrize(
    "override, message",
    [
        ({"sedes": [1]}, "unknown key 'sedes' (did you mean 'seeds'?); allowed: "),
        ({"seeds": ["x"]}, "config: seeds[0] = 'x' is invalid"),
        ({"group_ratios": [0.5, 1.5]}, "config: group_ratios[1] = 1.5 is invalid"),
        ({"device": "tpu"}, "config: device = 'tpu' not allowed; expected one of"),
        ({"datasets": ["imagenet"]}, "config: datasets[0] = 'imagenet' is not a registered dataset; expected one of"),
        ({"datasets": ["waterbird"]}, "config: datasets[0] = 'waterbird' is not a registered dataset (did you mean"),
    ],
)
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

    from llr.config import check_config
    from llr.experiments import Grid

    cfg = yaml.safe_load(TINY.read_text())
    res = tiny_run / "results" / "tiny"
    for fig in cfg["figures"]:
        for ext, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
            f = res / "figures" / f"{fig}.{ext}"
            assert f.read_bytes()[:4] == magic
    fig8 = pd.read_csv(res / "tables" / "fig8_effective_ratio.csv")
    ab = pd.read_csv(res / "tables" / "ablation_caching.csv")
    assert set(ab["mode"]) == {"cached", "through_backbone"}
    assert ab.groupby("mode").size().nunique() == 1  # the same cells in both modes
    runs = pd.read_csv(res / "tables" / "fig4_runs.csv")
    assert runs["wga"].between(0, 1).all() and runs["acc"].between(0, 1).all()
    # Figure 8 has one row per last-layer run of Figures 4, 5, 7 (plus AFR grid points)
    ll = runs[(runs["method"] != "erm")].drop_duplicates(["dataset", "seed", "erm", "method", "heldout"])
    assert len(fig8[fig8["point"] == "run"].merge(ll[["dataset", "seed", "erm", "method", "heldout"]])) == len(ll)
    test = runs[runs["role"] == "test"]
    run_keys = ["dataset", "seed", "erm", "method", "heldout"]
    per_run = test.drop_duplicates(run_keys)
    assert sorted(per_run["dataset"].unique()) == sorted(cfg["datasets"])
    check_config(cfg)
    assert len(per_run) == len(Grid(cfg).figure_runs("fig4"))  # one per ERM and last-layer run
    # WGA is the minimum of the per-group accuracies of the same run.
    wga = test.groupby(run_keys).agg(acc=("acc", "min"), wga=("wga", "first"))
    assert (wga["acc"] - wga["wga"]).abs().max() < 1e-12
    pear = pd.read_csv(res / "tables" / "fig4_pearson.csv")
    for ds in cfg["datasets"]:
        for con in ("subset", "sampled"):
            sel = (pear["dataset"] == ds) & (pear["construction"] == con)
            assert list(pear.loc[sel, "erm_ratio"]) == [float(r) for r in cfg["group_ratios"]]
    assert pear["pearson_r"].dropna().between(-1, 1).all()
    assert pear["pearson_r_train_erm"].dropna().between(-1, 1).all()
    # Every ERM cell cached its embeddings once, for every example.
    import numpy as np

    for ds, dim in (("synth_waterbirds", 512), ("synth_multinli", 64)):
        meta = pd.read_csv(res / ds / "metadata.csv")
        emb = np.load(res / ds / "seed1" / "erm" / "train_ratio1.0_none" / "embeddings.npy")
        assert emb.shape == (len(meta), dim) and emb.dtype == np.float16


def test_plot_edit_reruns_only_the_plot(tiny_run):
    """Snakemake reruns a job when an input's content changed (a mere touch
    keeps the recorded checksum): edit the plotting module for real."""
    plots = REPO / "src" / "llr" / "reporting" / "figures.py"
    text, st = plots.read_text(), plots.stat()
    try:
        plots.write_text(text + "\n# restyled\n")
        res = smk("-n", "results/tiny/figures/fig4.png", "--configfile", str(TINY), cwd=tiny_run)
        assert job_counts(res.stdout + res.stderr) == {"fig4": 1}
        # Restyling retrains nothing anywhere: the whole workflow only redraws.
        res = smk("-n", "all", "--configfile", str(TINY), cwd=tiny_run)
        assert set(job_counts(res.stdout + res.stderr)) <= {
            "fig4",
            "table1",
            "paper_comparison",
            "all",
            "fig8",
            "fig8_table",
            "ablation_caching",
            "ablation_caching_table",
            *(f"figure_{f}" for f in ("fig2", "fig3", "fig5", "fig6", "fig7")),
        }
    finally:
        plots.write_text(text)
        os.utime(plots, ns=(st.st_atime_ns, st.st_mtime_ns))
    res = smk("-n", "results/tiny/figures/fig4.png", "--configfile", str(TINY), cwd=tiny_run)
    assert "Nothing to be done" in res.stdout + res.stderr


# ------------------------------------------------ documented commands, configs
def _doc_commands() -> list[str]:
    """Every snakemake command in a code block of README.md and docs/*.md."""
    cmds = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        inside = False
        for line in doc.read_text().splitlines():
            if line.strip().startswith("```"):
                inside = not inside
                continue
            cmd = line.split("  #")[0].strip()
            # --report needs a finished run (tested on the tiny run below)
            if inside and re.match(r"^([A-Z_]+=\S+ )*snakemake ", cmd) and "..." not in cmd and "--report" not in cmd:
                cmds.append(cmd)
    return cmds


def test_docs_show_commands():
    cmds = _doc_commands()
    assert any("workflow/configs/paper.yaml" in c for c in cmds) and len(cmds) >= 8, cmds


@pytest.mark.parametrize("cmd", _doc_commands())
def test_documented_command_runs(cmd, tmp_path):
    """Each documented command, as written, plans its jobs (dry run) from the
    repository root: no target swallowed by --configfile, no missing profile."""
    for prof in ("local", "local-gpu", "slurm"):
        link = REPO / prof
        if not link.exists():
            link.symlink_to(Path("profiles") / prof)
    env = snakemake_env()
    env.pop("LLR_DATA_ROOT", None)
    env["SNAKEMAKE_OUTPUT_CACHE"] = str(tmp_path)  # for the --cache example
    res = subprocess.run(
        ["bash", "-c", cmd if " -n " in f"{cmd} " else f"{cmd} -n"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "This was a dry-run" in out or "Nothing to be done" in out, out[-2000:]


def _dry(cfg_path: Path, cwd: Path, *extra: str) -> str:
    res = smk("-n", "-p", "all", "--configfile", str(cfg_path), *extra, cwd=cwd)
    return res.stdout + res.stderr


def test_paper_config_stands_alone_with_paper_parameters(tmp_path):
    """paper.yaml inherits nothing from config.yaml: LLR trains as many
    epochs as ERM (paper B.2), Figure 3 10x that, Section 2 runs ResNet-18 /
    BERT-Tiny cells, Figure 2 3x the standard epochs, results in results/paper."""
    out = _dry(REPO / "workflow" / "configs" / "paper.yaml", tmp_path)
    lines = out.splitlines()
    ll = [l for l in lines if "-m llr lastlayer" in l and "/waterbirds/" in l and "/llr/" in l]
    assert ll and all("--epochs 100" in l and "--params '{}'" in l for l in ll)
    svm = [l for l in lines if "-m llr svm" in l]
    assert {re.search(r"--epochs (\d+)", l)[1] for l in svm if "--dataset waterbirds" in l} == {"1000"}
    assert {re.search(r"--epochs (\d+)", l)[1] for l in svm if "--dataset celeba" in l} == {"200"}
    assert all("erm/train_none_arch-resnet18/embeddings.npy" in l or "erm/train_none_arch-bert-tiny/" in l for l in svm)
    erm = [l for l in lines if "-m llr erm" in l]
    assert all(" --outdir results/paper/" in l for l in erm)
    long_wb = [l for l in erm if "train_none_long_arch-resnet18" in l and "--dataset waterbirds" in l]
    assert long_wb and all('"epochs": 300' in l and '"arch": "resnet18"' in l for l in long_wb)
    tiny = [l for l in erm if "--cell train_none_arch-bert-tiny" in l and "--dataset multinli" in l]
    assert tiny and all('"model_path": "prajjwal1/bert-tiny"' in l and '"epochs": 20' in l for l in tiny)
    std = [l for l in erm if "--cell train_none " in l and "--dataset celeba" in l]
    assert std and all('"arch": "resnet50"' in l for l in std)


def test_results_folder_per_config(tmp_path):
    tiny = _dry(TINY, tmp_path)
    outs = re.findall(r"--out(?:dir)? (\S+)", tiny)
    assert outs and all(o.startswith("results/tiny/") for o in outs)
    default = _dry(REPO / "config.yaml", tmp_path)
    outs = re.findall(r"--out(?:dir)? (\S+)", default)
    assert outs and all(o.startswith("results/") and not o.startswith("results/tiny") for o in outs)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"lastlayer": {"dfr_subseting": {}}}, "unknown last-layer method 'dfr_subseting'"),
        ({"lastlayer": {"llr": {"epoch": 5}}}, "'epoch'"),
        ({"lastlayer": {"llr": {"epochs": 0}}}, "epochs"),
        ({"lastlayer": {"llr": {"lr": "abc"}}}, "lr"),
        ({"lastlayer": {"llr": {"lr": "1e-3"}}}, "1.0e-3"),
        (
            {"erm": {"synth_waterbirds": {"arch": "resnet18-small", "epochs": 1, "lr": 1.0e-3, "lrr": 1}}},
            "unknown key 'lrr' under erm.synth_waterbirds (did you mean 'lr'?)",
        ),
        (
            {"erm": {"synth_waterbird": {"arch": "x", "epochs": 1, "lr": 1.0}}},
            "unknown key 'synth_waterbird' under erm",
        ),
        ({"lastlayr": {}}, "unknown key 'lastlayr' (did you mean 'lastlayer'?)"),
    ],
)
def test_config_typos_name_the_right_key(tmp_path, override, message):
    cfg = yaml.safe_load(TINY.read_text())
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict) and k == "erm":
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    res = smk("-n", "all", "--configfile", str(p), cwd=tmp_path, check=False)
    lines = [l for l in (res.stdout + res.stderr).splitlines() if l.startswith("llr: error:")]
    assert res.returncode != 0 and len(lines) == 1 and message in lines[0], res.stdout + res.stderr


def test_numbers_from_the_command_line(tmp_path):
    """--config passes numbers as strings: seeds and group ratios accept them."""
    out = _dry(TINY, tmp_path, "--config", "seeds=[1,2]", "group_ratios=[0.5,1.0]")
    assert "seed2/erm/train_ratio0.5_none" in out and "ratio0.2" not in out


def test_erm_setting_invalidates_only_erm_jobs(tiny_run, tmp_path):
    """Changing one ERM learning rate reruns that dataset's ERM jobs and what
    reads them, never prepare, split, subset or pretrain."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["erm"]["synth_waterbirds"]["lr"] = 2.0e-4
    p = tmp_path / "lr.yaml"
    p.write_text(yaml.safe_dump(cfg))
    res = smk("-n", "all", "--configfile", str(p), cwd=tiny_run)
    counts = job_counts(res.stdout + res.stderr)
    assert counts.get("erm", 0) > 0
    assert not set(counts) & {"prepare_synthetic", "prepare_synthetic_text", "split", "subset", "pretrain"}
    erm_jobs = re.findall(r"rule erm:\n(?:.*\n)*?\s+wildcards: dataset=(\w+),", res.stdout + res.stderr)
    assert erm_jobs and set(erm_jobs) == {"synth_waterbirds"}


def test_report_zip_after_run(tiny_run):
    res = smk("--report", "results/tiny/report.zip", "--configfile", str(TINY), cwd=tiny_run)
    assert (tiny_run / "results" / "tiny" / "report.zip").stat().st_size > 10_000, res.stderr[-2000:]


def test_local_gpu_profile_without_cuda_stops_at_once(tmp_path):
    """--profile local-gpu on a machine without CUDA: one line pointing at
    --profile local, before any job, nothing written."""
    from llr.runtime.gpu import cuda_available

    if cuda_available():
        pytest.skip("this machine has CUDA")
    res = smk(
        "--profile", str(REPO / "profiles" / "local-gpu"), "all", "--configfile", str(TINY), cwd=tmp_path, check=False
    )
    out = res.stdout + res.stderr
    assert res.returncode != 0
    lines = [l for l in out.splitlines() if l.startswith("llr: error:")]
    assert len(lines) == 1 and "--profile local" in lines[0], out[-2000:]
    assert not (tmp_path / "results").exists()


def test_missing_real_data_all_datasets_at_once(tmp_path):
    """Every configured real dataset's problem is reported before any job."""
    cfg = yaml.safe_load((REPO / "workflow" / "configs" / "paper.yaml").read_text())
    cfg.update(device="cpu", data_root=str(tmp_path / "nodata"), seeds=[1])
    (tmp_path / "nodata").mkdir()
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(cfg))
    res = smk("--cores", "1", "all", "--configfile", str(p), cwd=tmp_path, check=False)
    out = res.stdout + res.stderr
    lines = [l for l in out.splitlines() if l.startswith("llr: error:")]
    assert res.returncode != 0
    named = list(dict.fromkeys(l.split(":")[2].strip() for l in lines))  # data, then weights, per dataset
    assert named == ["waterbirds", "celeba", "civilcomments", "multinli"], out
    assert not (tmp_path / "results").exists()


def test_snakemake_internals_the_hooks_use():
    """The onstart hook drops the job-rate limiter and fixes the cache's file
    modes through Snakemake attributes; fail loudly if an upgrade removes them."""
    import inspect

    from snakemake.caching.local import OutputFileCache
    from snakemake.scheduling.job_scheduler import JobScheduler

    assert "job_rate_limiter" in inspect.getsource(JobScheduler)
    assert "file_permissions" in inspect.getsource(OutputFileCache.__init__)
    assert "dir_permissions" in inspect.getsource(OutputFileCache.__init__)


def test_failed_job_error_line_reaches_the_console(tmp_path):
    """A job's one-line `llr: error:` is in its log; the console shows it too."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["datasets"] = ["synth_waterbirds"]
    cfg["erm"] = {"synth_waterbirds": {**cfg["erm"]["synth_waterbirds"], "arch": "resnet999"}}
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(cfg))
    res = smk(
        "--cores",
        "1",
        "results/tiny/synth_waterbirds/pretrain/backbone.pt",
        "--configfile",
        str(p),
        cwd=tmp_path,
        check=False,
    )
    out = res.stdout + res.stderr
    assert res.returncode != 0
    lines = [l for l in out.splitlines() if l.startswith("llr: error:")]
    assert lines and "resnet999" in lines[0] and "logs/tiny/pretrain/synth_waterbirds.log" in lines[0], out[-3000:]


def test_cache_key_follows_the_code(tmp_path):
    """With --cache the training rules' params carry a hash of src/llr (a code
    change never restores an older result); without it they do not (a code
    edit never retrains)."""
    plain = _dry(TINY, tmp_path)
    os.environ["SNAKEMAKE_OUTPUT_CACHE"] = str(tmp_path / "cache")
    try:
        (tmp_path / "cache").mkdir()
        cached = _dry(TINY, tmp_path, "--cache", "pretrain", "erm")
    finally:
        del os.environ["SNAKEMAKE_OUTPUT_CACHE"]
    erm_plain = [l for l in plain.splitlines() if "-m llr erm" in l]
    erm_cached = [l for l in cached.splitlines() if "-m llr erm" in l]
    assert erm_plain and not any('"code":' in l for l in erm_plain)
    assert erm_cached and all(re.search(r'"code": "[0-9a-f]{16}"', l) for l in erm_cached)


def test_snakemake_lint_is_clean(tmp_path):
    res = smk("--lint", cwd=tmp_path, check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "Congratulations" in out, out[-3000:]
