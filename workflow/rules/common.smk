# Config validation, cell lists and input functions. No science here: every
# name below is parsed and computed on by the llr package.
import json
import os
import sys

sys.path.insert(0, os.path.join(workflow.basedir, "src"))
from llr.config import check_config  # noqa: E402

from llr.errors import LLRError  # noqa: E402

try:
    check_config(config)
except LLRError as e:
    sys.stderr.write(f"llr: error: {e}\n")
    sys.exit(1)

DATA_ROOT = os.environ.get("LLR_DATA_ROOT", config["data_root"])
SRC = os.path.join(workflow.basedir, "src", "llr")
# Jobs start through a warm fork server (llr.forkserver) unless forkserver: false.
PY = ("LLR_FORKSERVER=1 " if config.get("forkserver", True) else "") + "python -m llr"
DATASETS = list(config["datasets"])
SEEDS = [int(s) for s in config["seeds"]]
RATIOS = [str(float(r)) for r in config["group_ratios"]]
FIGURES = list(config["figures"])
BAL_MODES = ["subsetting", "upsampling", "upweighting"]


def is_synthetic(ds):
    from llr.data import get_spec

    return get_spec(ds).synthetic


def _alt(values):
    return "|".join(sorted((v.replace(".", r"\.") for v in values), key=len, reverse=True))


wildcard_constraints:
    dataset=_alt(DATASETS),
    seed=r"\d+",
    ratio=_alt(RATIOS),
    role="train|heldout|combined",
    erm=r"(train|combined)(_ratio[0-9.]+)?_(none|class_[a-z]+|group_[a-z]+)(_long)?",
    method=r"[a-z0-9_]+",
    heldout=r"heldout(_ratio[0-9.]+)?",


# ---------------------------------------------------------------- cells
def fig4_cells():
    """(erm, method, heldout) of Figure 4: for each ERM group ratio, LLR on
    each held-out group ratio and DFR on the whole held-out set; plus the
    ERM reference trained with the held-out data added."""
    erm = [f"train_ratio{r}_none" for r in RATIOS]
    ll = [(e, "llr", f"heldout_ratio{h}") for e in erm for h in RATIOS]
    ll += [(e, "dfr_subsetting", "heldout") for e in erm]
    return erm + [f"combined_ratio{r}_none" for r in RATIOS], ll


CLASS_BAL = ["none"] + [f"class_{m}" for m in BAL_MODES]


def fig5_cells():
    """Figure 5: class balancing. ERM on 100% of the data (combined pool)
    versus LLR/CB-LLR on the held-out set after the train/held-out split."""
    erm = [f"{pool}_{b}" for pool in ("combined", "train") for b in CLASS_BAL]
    ll = [("train_none", "llr", "heldout")]
    ll += [(f"train_class_{m}", f"cbllr_{m}", "heldout") for m in BAL_MODES]
    return erm, ll


def fig6_cells():
    """Figure 6: ERM with group balancing (test WGA per epoch)."""
    return ["combined_none"] + [f"combined_group_{m}" for m in BAL_MODES], []


def fig7_cells():
    """Figure 7: class-balanced ERM versus group-balanced DFR; AFR beside."""
    erm = [f"combined_class_{m}" for m in BAL_MODES]
    ll = [(f"train_class_{m}", f"dfr_{m}", "heldout") for m in BAL_MODES]
    ll.append(("train_none", "afr", "heldout"))
    return erm, ll


def fig2_cells():
    """Figure 2: NC1 per epoch of longer ERM runs."""
    return ["train_none_long"], []


FIGURE_CELLS = {"fig2": fig2_cells, "fig4": fig4_cells, "fig5": fig5_cells, "fig6": fig6_cells,
                "fig7": fig7_cells}
LOG_FIGURES = ("fig2", "fig6")  # figures drawn from per-epoch ERM logs


def erm_dir(ds, seed, erm):
    return f"results/{ds}/seed{seed}/erm/{erm}"


def ll_file(ds, seed, erm, method, heldout):
    return f"results/{ds}/seed{seed}/lastlayer/{erm}/{method}/{heldout}/metrics.json"


def figure_runs(fig):
    """Every metrics file a figure needs, over datasets and seeds."""
    erm, ll = FIGURE_CELLS[fig]()
    files = [f"{erm_dir(d, s, e)}/metrics.json" for d in DATASETS for s in SEEDS for e in erm]
    files += [ll_file(d, s, *c) for d in DATASETS for s in SEEDS for c in ll]
    return files


def figure_logs(fig):
    erm, _ = FIGURE_CELLS[fig]()
    return [f"{erm_dir(d, s, e)}/log.csv" for d in DATASETS for s in SEEDS for e in erm]


def analysis_files(name):
    return [f"results/{d}/seed{s}/analysis/{name}.csv" for d in DATASETS for s in SEEDS]


FIGURE_DATA = {
    "fig2": ["results/tables/fig2_epochs.csv"],
    "fig3": ["results/tables/fig3_svm.csv"],
    "fig5": ["results/tables/fig5_runs.csv"],
    "fig6": ["results/tables/fig6_epochs.csv"],
    "fig7": ["results/tables/fig7_runs.csv"],
}


def figure_params(fig):
    if fig == "fig2":
        return json.dumps({"standard_epochs": {d: int(config["erm"][d]["epochs"]) for d in DATASETS}})
    return "{}"


TABLES = list(config.get("tables", []))


def comparison_inputs():
    """Whatever the configured figures and tables produce, for the paper
    comparison."""
    out = ["results/tables/table2.csv"]
    if "fig4" in FIGURES:
        out += ["results/tables/fig4_pearson.csv", "results/tables/fig4_runs.csv"]
    for fig, f in (("fig5", "fig5_runs"), ("fig7", "fig7_runs"), ("fig2", "fig2_epochs")):
        if fig in FIGURES:
            out.append(f"results/tables/{f}.csv")
    if "table1" in TABLES:
        out.append("results/tables/table1.csv")
    return out


def report_inputs():
    figs = [f"results/figures/{f}.png" for f in FIGURES]
    tabs = [f"results/tables/{t}.csv" for t in TABLES]
    if "fig4" in FIGURES:
        tabs.append("results/tables/fig4_pearson.csv")
    return figs + tabs


def all_targets():
    out = []
    for fig in FIGURES:
        out += [f"results/figures/{fig}.png", f"results/figures/{fig}.pdf"]
    if "fig4" in FIGURES:
        out.append("results/tables/fig4_pearson.csv")
    out += [f"results/tables/{t}.csv" for t in TABLES]
    if config.get("report", False):
        out.append("results/report.html")
    return out


# ---------------------------------------------------------------- inputs
def inputs_file(wc):
    """The model inputs of a dataset: generated images/tokens for synthetic
    datasets, the pre-decoded image cache or token cache for real ones."""
    from llr.data import get_spec

    spec = get_spec(wc.dataset)
    if spec.modality == "image":
        return f"results/{wc.dataset}/inputs.npy"
    return f"results/{wc.dataset}/tokens.npz"


def pretrained_file(wc):
    return [f"results/{wc.dataset}/pretrain/backbone.pt"] if is_synthetic(wc.dataset) else []


def erm_subset(wc):
    from llr.balancing import ErmCell

    c = ErmCell.parse(wc.erm)
    if c.ratio is None:
        return []
    return [f"results/{wc.dataset}/seed{wc.seed}/subsets/{c.pool}_ratio{c.ratio}.csv"]


def heldout_subset(wc):
    if wc.heldout == "heldout":
        return []
    return [f"results/{wc.dataset}/seed{wc.seed}/subsets/{wc.heldout}.csv"]


def dataset_params(ds):
    """Generator / pretraining parameters of a synthetic dataset."""
    p = dict(config.get("synthetic", {}).get(ds, {}))
    p.update(config["erm"][ds])
    p["threads"] = config["threads"]
    p["device"] = config["device"]
    return json.dumps(p, sort_keys=True)


def erm_params(wc):
    from llr.balancing import ErmCell

    p = dict(config["erm"][wc.dataset])
    if ErmCell.parse(wc.erm).long:
        nc1 = config.get("nc1", {})
        p["epochs"] = int(nc1["epochs"]) if "epochs" in nc1 else int(round(nc1.get("factor", 2) * p["epochs"]))
        p["nc1"] = True
    p["threads"] = config["threads"]
    p["device"] = config["device"]
    return json.dumps(p, sort_keys=True)


def erm_epochs(wc):
    return int(config["erm"][wc.dataset]["epochs"])


def llr_epochs(wc):
    """LLR's standard epoch count: the ERM epochs unless lastlayer.llr.epochs
    overrides it (Figure 3 trains 10x this, Table 1 checkpoints within it)."""
    return int(config.get("lastlayer", {}).get("llr", {}).get("epochs") or erm_epochs(wc))


def method_params(wc):
    return json.dumps(config.get("lastlayer", {}).get(wc.method, {}), sort_keys=True)


# ---------------------------------------------------------------- scheduler
onstart:
    # Snakemake 9's job-rate limiter (--max-jobs-per-timespan, default 100/1s)
    # re-arms a one-second timer after every scheduling round, and each
    # finished job starts one more such chain: with the ~500 short jobs of the
    # embedded default the scheduler ends up re-selecting hundreds of times a
    # second (a third of a core here, measured with py-spy). The limit guards
    # cluster submission; local runs go without it (cluster runs keep it).
    _sched = getattr(workflow, "scheduler", None)
    if workflow.local_exec and getattr(_sched, "job_rate_limiter", None) is not None:
        _sched.job_rate_limiter = None
