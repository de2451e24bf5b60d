"""The experiment grid (llr.experiments): cells per figure, the ERM-cell grammar and the
wildcard constraints built from it, job settings, targets; run-time method registration
(llr.plugins) reaching the workflow's DAG and the jobs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, snakemake_env

from llr.errors import LLRError
from llr.experiments import (
    BAL_MODES,
    CELL_FIGURES,
    ERM_CELL_PATTERN,
    ErmCell,
    Grid,
    alternatives,
    dataset_names,
    erm_wildcard,
    figure_methods,
    heldout_wildcard,
    method_wildcard,
    parse_heldout,
    plot_code,
)
from llr.train.balancing import BALANCE_MODES

TINY = REPO / "tests" / "configs" / "tiny.yaml"
PAPER = REPO / "workflow" / "configs" / "paper.yaml"


def load(path: Path) -> dict:
    from llr.config import check_config

    cfg = yaml.safe_load(path.read_text())
    check_config(cfg)
    return cfg


@pytest.fixture(scope="module")
def tiny() -> Grid:
    return Grid(load(TINY))


# ------------------------------------------------------------ grammar and wildcards
@pytest.mark.parametrize(
    "name",
    [
        "train_none",
        "combined_none",
        "train_ratio0.05_none",
        "combined_ratio1.0_none",
        "train_class_subsetting",
        "combined_group_upweighting",
        "train_none_long",
        "train_none_long_arch-resnet18",
        "train_none_arch-bert-tiny",
        "combined_class_upsampling_arch-resnet18-small",
    ],
)
def test_erm_cell_round_trip(name):
    c = ErmCell.parse(name)
    assert c.name == name and ErmCell.parse(c.name) == c


def test_erm_cell_fields():
    assert ErmCell.parse("train_ratio0.05_none") == ErmCell("train", 0.05, None, "none")
    assert ErmCell.parse("combined_class_upsampling") == ErmCell("combined", None, "class", "upsampling")
    assert ErmCell.parse("train_none_long").long
    assert ErmCell.parse("train_none_arch-resnet18").arch == "resnet18"
    for bad in (
        "train_class_none",
        "full_none",
        "train_group",
        "train_ratiox_none",
        "train_ratio1.5_none",
        "train_class_oversampling",
        "train_none_arch-",
    ):
        with pytest.raises(LLRError):
            ErmCell.parse(bad)


def test_balancing_modes_are_one_list():
    assert BAL_MODES == tuple(m for m in BALANCE_MODES if m != "none")
    for m in BAL_MODES:
        assert f"(?:{'|'.join(BAL_MODES)})" in ERM_CELL_PATTERN
        ErmCell.parse(f"train_class_{m}")


@pytest.mark.parametrize(
    "regex, good, bad",
    [
        (
            erm_wildcard(),
            ["train_none", "combined_ratio0.2_none", "train_none_long_arch-resnet18", "combined_group_subsetting"],
            ["train", "train_none/x", "heldout", "train_class_none"],
        ),
        (
            heldout_wildcard(),
            ["heldout", "heldout_ratio0.2", "heldout_sampled1.0"],
            ["held", "heldout_ratio", "heldout_other0.2", "heldout_ratio0.2/x"],
        ),
        (method_wildcard(), ["llr", "dfr_subsetting", "l1_llr", "afr_gamma0"], ["LLR", "llr/x", "a-b", ""]),
        (alternatives(["0.2", "1.0", "0.05"]), ["0.2", "1.0", "0.05"], ["0x2", "1", "0.5", "0.2|1.0"]),
    ],
)
def test_wildcard_constraints(regex, good, bad):
    assert "(?P<" not in regex  # Snakemake reads named groups as path variables
    assert all(re.fullmatch(regex, g) for g in good)
    assert not any(re.fullmatch(regex, b) for b in bad)


def test_heldout_names():
    assert parse_heldout("heldout") == (None, None)
    assert parse_heldout("heldout_ratio0.2") == ("subset", "0.2")
    assert parse_heldout("heldout_sampled1.0") == ("sampled", "1.0")
    assert Grid.heldout_args("heldout_ratio0.2", ["s.csv"]) == "--heldout s.csv"
    assert Grid.heldout_args("heldout_sampled0.2", []) == "--heldout full --heldout-sampling-ratio 0.2"
    assert Grid.heldout_args("heldout", []) == "--heldout full"


def test_dataset_names_and_plot_code():
    assert set(dataset_names(synthetic=False)) == {"waterbirds", "celeba", "civilcomments", "multinli"}
    assert set(dataset_names(synthetic=True, modality="text")) == {"synth_civilcomments", "synth_multinli"}
    code = [os.path.basename(f) for f in plot_code(str(REPO / "src" / "llr"))]
    assert "figures.py" in code and "tidy.py" not in code and code == sorted(code)


# ------------------------------------------------------------ cells per figure
def test_tiny_cells_per_figure(tiny):
    ds = "synth_waterbirds"
    assert tiny.figure_cells("fig2", ds) == (["train_none_long"], [])
    erm, ll = tiny.figure_cells("fig4", ds)
    assert erm == ["train_ratio0.2_none", "train_ratio1.0_none", "combined_ratio0.2_none", "combined_ratio1.0_none"]
    assert ll == [
        (e, "llr", f"heldout_{c}{r}") for e in erm[:2] for r in ("0.2", "1.0") for c in ("ratio", "sampled")
    ] + [(e, "dfr_subsetting", "heldout") for e in erm[:2]]
    erm, ll = tiny.figure_cells("fig5", ds)
    assert erm == [
        f"{p}_{b}"
        for p in ("combined", "train")
        for b in ("none", "class_subsetting", "class_upsampling", "class_upweighting")
    ]
    assert ll == [("train_none", "llr", "heldout")] + [(f"train_class_{m}", f"cbllr_{m}", "heldout") for m in BAL_MODES]
    assert tiny.figure_cells("fig6", ds) == (["combined_none"] + [f"combined_group_{m}" for m in BAL_MODES], [])
    erm, ll = tiny.figure_cells("fig7", ds)
    assert erm == [f"combined_class_{m}" for m in BAL_MODES]
    assert ll == [(f"train_class_{m}", f"dfr_{m}", "heldout") for m in BAL_MODES] + [
        ("train_none", "afr", "heldout"),
        ("train_none", "afr_gamma0", "heldout"),
        ("train_none", "cbllr_upweighting", "heldout"),
    ]
    with pytest.raises(LLRError):
        tiny.figure_cells("fig3", ds)


def test_tiny_counts_and_paths(tiny):
    n = len(tiny.datasets) * len(tiny.seeds)
    for fig in CELL_FIGURES:
        erm, ll = tiny.figure_cells(fig, "synth_multinli")
        runs = tiny.figure_runs(fig)
        assert len(runs) == len(set(runs)) == n * (len(erm) + len(ll))
        assert all(f.startswith("results/tiny/") and f.endswith("/metrics.json") for f in runs)
    assert len(tiny.figure_runs("fig4")) == n * (4 + 2 * 2 * 2 + 2)
    assert tiny.figure_logs("fig6") == [
        f"results/tiny/{d}/seed1/erm/{c}/log.csv"
        for d in tiny.datasets
        for c in ["combined_none"] + [f"combined_group_{m}" for m in BAL_MODES]
    ]
    assert tiny.analysis_files("margins") == [f"results/tiny/{d}/seed1/analysis/margins.csv" for d in tiny.datasets]
    # Figure 8: every last-layer run of Figures 4, 5 and 7 once (CB-LLR upweighting: on train_class_upweighting
    # in Figure 5, on train_none in Figure 7)
    assert len(tiny.fig8_files()) == n * (10 + 4 + 6)
    assert Grid(load(TINY), "out").res("x") == "out/x"


def test_section2_cells_and_settings():
    paper = Grid(load(PAPER))
    assert paper.section2_cell("waterbirds", "train_none") == "train_none_arch-resnet18"
    assert paper.figure_cells("fig2", "multinli")[0] == ["train_none_long_arch-bert-tiny"]
    assert (
        paper.analysis_emb("waterbirds", 1)
        == "results/paper/waterbirds/seed1/erm/train_none_arch-resnet18/embeddings.npy"
    )
    s = paper.erm_settings("waterbirds", "train_none_long_arch-resnet18")
    assert s["arch"] == "resnet18" and s["nc1"] and s["epochs"] == 3 * paper.standard_epochs()["waterbirds"]
    assert paper.erm_epochs("waterbirds", "train_none_long") == paper.standard_epochs()["waterbirds"]
    assert paper.llr_epochs("waterbirds") == 100


def test_tiny_settings(tiny):
    s = tiny.erm_settings("synth_waterbirds", "train_none_long")
    assert s["epochs"] == 2 and s["nc1"] and s["evals_per_epoch"] == 2
    assert "evals_per_epoch" not in tiny.erm_settings("synth_waterbirds", "combined_class_upweighting")
    assert tiny.erm_settings("synth_waterbirds", "combined_group_upweighting")["evals_per_epoch"] == 2
    assert '"device": "cpu"' in tiny.erm_params("synth_waterbirds", "train_none")
    assert '"code": "abc"' in tiny.erm_params("synth_waterbirds", "train_none", code="abc")
    assert tiny.method_params("llr") == '{"epochs": 5}' and tiny.method_params("afr") == "{}"
    assert tiny.inputs_file("synth_multinli").endswith("/tokens.npz")
    assert tiny.erm_subset("synth_waterbirds", 1, "train_ratio0.2_none") == [
        "results/tiny/synth_waterbirds/seed1/subsets/train_ratio0.2.csv"
    ]
    assert tiny.heldout_subset("synth_waterbirds", 1, "heldout_sampled0.2") == []
    assert tiny.figure_params("fig4") == '{"ratios": [0.2, 1.0]}'
    assert tiny.margin_checkpoints() == 3


def test_ablation_epochs():
    tiny = Grid(load(TINY))
    # ablation_caching.epochs: 2 for every dataset; the cached llr runs 5 (lastlayer.llr.epochs)
    assert tiny.ablation_epochs("synth_waterbirds", "train_none", "llr") == 2
    assert tiny.cached_epochs("synth_waterbirds", "train_none", "llr") == 5
    assert "/lastlayer_matched/" in tiny.ablation_cached_file("synth_waterbirds", 1, "train_none", "llr", "heldout")
    assert tiny.ablation_erm_cell("synth_waterbirds") == "train_ratio0.2_none"
    assert len(tiny.ablation_cells("synth_waterbirds")) == 2 + 1 + len(BAL_MODES)
    assert len(tiny.ablation_files()) == 2 * len(tiny.datasets) * (2 + 1 + len(BAL_MODES))
    default = Grid(load(REPO / "config.yaml"))
    assert default.ablation_epochs("synth_waterbirds", "train_none", "llr") == 40
    assert default.ablation_epochs("synth_multinli", "train_none", "llr") == 50
    # no AB_EPOCHS entry: the cached run's epochs, so the standard cached run is compared
    assert default.ablation_epochs("synth_celeba", "train_none", "cbllr_subsetting") == 100
    assert default.ablation_cached_file("synth_celeba", 1, "train_none", "llr", "heldout") == default.ll_file(
        "synth_celeba", 1, "train_none", "llr", "heldout"
    )


def test_targets(tiny):
    t = tiny.all_targets()
    figs = ["fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "ablation_caching"]
    assert t == [f"results/tiny/figures/{f}.{e}" for f in figs for e in ("png", "pdf")] + [
        f"results/tiny/tables/{n}.csv"
        for n in (
            "fig4_pearson",
            "fig8_correlation",
            "ablation_caching_summary",
            "table1",
            "table2",
            "paper_comparison",
        )
    ]
    assert not any("report" in f for f in t)
    assert tiny.comparison_inputs()[0] == "results/tiny/tables/table2.csv"
    assert "results/tiny/tables/ablation_caching.csv" in tiny.comparison_inputs()


# ------------------------------------------------------------ run-time registration
PLUGIN = '''"""A throwaway last-layer method: LLR under another name, run in Figure 7's grid."""
from llr.lastlayer.registry import Method, get_method, register

_llr = get_method("llr")


def fit(task, hp):
    return _llr.fn(task, hp)


register(Method("l1_llr", fit, dict(_llr.defaults), types=dict(_llr.types), description="LLR (test plugin)",
                label="LLR (L1)", figures=("fig7",)))
'''


@pytest.fixture
def plugin(tmp_path):
    from llr.lastlayer.registry import METHODS

    before = dict(METHODS)
    p = tmp_path / "l1_plugin.py"
    p.write_text(PLUGIN)
    yield p
    METHODS.clear()
    METHODS.update(before)


def test_registered_method_joins_its_figure(plugin):
    from llr.plugins import load_plugins

    cfg = load(TINY)
    before = {f: Grid(cfg).figure_runs(f) for f in CELL_FIGURES}
    load_plugins([str(plugin)])
    assert figure_methods("fig7") == ["l1_llr"] and figure_methods("fig5") == []
    grid = Grid(cfg)
    for fig in CELL_FIGURES:
        extra = [f for f in grid.figure_runs(fig) if f not in before[fig]]
        want = [f"results/tiny/{d}/seed1/lastlayer/train_none/l1_llr/heldout/metrics.json" for d in grid.datasets]
        assert extra == (want if fig == "fig7" else [])


def test_plugin_errors_are_one_line(tmp_path):
    from llr.config import check_config
    from llr.plugins import load_plugin

    with pytest.raises(LLRError, match=r"plugin 'nope\.py': no such file"):
        load_plugin("nope.py")
    with pytest.raises(LLRError, match=r"plugin 'llr_no_such_module': cannot import: ModuleNotFoundError"):
        load_plugin("llr_no_such_module")
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('broken')\n")
    with pytest.raises(LLRError, match=r"cannot import: RuntimeError: broken"):
        load_plugin(str(bad))
    cfg = yaml.safe_load(TINY.read_text())
    cfg["plugins"] = [str(tmp_path / "missing.py")]
    with pytest.raises(LLRError, match=r"^config: plugins\[0\]: plugin '.*missing\.py': no such file"):
        check_config(cfg)


def smk(*args: str, cwd: Path) -> str:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(cwd), *args]
    res = subprocess.run(cmd, cwd=cwd, env=snakemake_env(), capture_output=True, text=True)
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout + res.stderr


def test_plugin_method_in_the_dag(tmp_path, plugin):
    """A method registered by a plugin named in the config: a dry run of `all`
    plans its lastlayer jobs (every dataset and seed) and Figure 7's runs table
    reads them; no other file of the repository is edited."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["plugins"] = [plugin.name]  # relative to the working directory
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = smk("-n", "-p", "all", "--configfile", "c.yaml", cwd=tmp_path)
    want = [
        f"results/tiny/{d}/seed{s}/lastlayer/train_none/l1_llr/heldout/metrics.json"
        for d in cfg["datasets"]
        for s in cfg["seeds"]
    ]
    jobs = re.findall(r"rule lastlayer:\n(?:    .*\n)*?    output: (\S+)\n", out)
    assert sorted(j for j in jobs if "/l1_llr/" in j) == sorted(want)
    collect = re.search(r"rule collect:\n    input: (.*)\n    output: results/tiny/tables/fig7_runs\.csv", out)
    assert collect and all(w in collect[1].split(", ") for w in want)
    assert "--method l1_llr" in out


def test_plugin_method_runs(tmp_path, plugin):
    """The workflow's jobs import the config's plugins (LLR_PLUGINS, through
    the fork server): the plugin's method runs, and as it wraps LLR it gives
    LLR's head (with its config entry, the same settings)."""
    import json

    cfg = yaml.safe_load(TINY.read_text())
    ds = "synth_waterbirds"
    cfg.update(
        datasets=[ds],
        erm={ds: cfg["erm"][ds]},
        synthetic={ds: cfg["synthetic"][ds]},
        plugins=[str(plugin)],
        lastlayer={"llr": {"epochs": 5}, "l1_llr": {"epochs": 5}},
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    runs = [f"results/tiny/{ds}/seed1/lastlayer/train_none/{m}/heldout/metrics.json" for m in ("l1_llr", "llr")]
    smk("--cores", "2", *runs, "--configfile", "c.yaml", cwd=tmp_path)
    a, b = (json.loads((tmp_path / r).read_text()) for r in runs)
    assert a["method"] == "l1_llr" and b["method"] == "llr"
    assert a["hp"] == b["hp"] and a["head"] == b["head"] and a["metrics"] == b["metrics"]


def test_jobs_import_the_plugins(tmp_path, plugin):
    """`python -m llr` imports LLR_PLUGINS first, also in a fork server's child
    (the method is known: the job gets past the method check to the missing files)."""
    env = dict(
        os.environ,
        LLR_PLUGINS="l1_plugin.py",
        LLR_FORKSERVER_DIR=str(tmp_path / "fs"),
        LLR_FORKSERVER_IDLE="20",
        LLR_FORKSERVER_PRELOAD="numpy,llr.cli",
    )
    meta = tmp_path / "synth_waterbirds" / "metadata.csv"
    argv = [
        sys.executable,
        "-m",
        "llr",
        "lastlayer",
        "--embeddings",
        "missing.npy",
        "--head",
        "h.npz",
        "--metadata",
        str(meta),
        "--split",
        "s.csv",
        "--heldout",
        "full",
        "--method",
        "l1_llr",
        "--seed",
        "1",
        "--epochs",
        "1",
        "--out",
        "o.json",
    ]
    for fork in ("0", "1"):
        r = subprocess.run(argv, cwd=plugin.parent, env=dict(env, LLR_FORKSERVER=fork), capture_output=True, text=True)
        assert r.returncode == 2 and "missing.npy" in r.stderr and "unknown" not in r.stderr, r.stderr
    assert list((tmp_path / "fs").glob("*.sock"))  # the second run went through a fork server
    r = subprocess.run(
        argv, cwd=plugin.parent, env=dict(env, LLR_PLUGINS="", LLR_FORKSERVER="0"), capture_output=True, text=True
    )
    assert r.returncode == 2 and "unknown last-layer method 'l1_llr'" in r.stderr, r.stderr
