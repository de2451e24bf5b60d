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
PY = "python -m llr"
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


FIGURE_CELLS = {"fig4": fig4_cells}


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


def all_targets():
    out = []
    for fig in FIGURES:
        out += [f"results/figures/{fig}.png", f"results/figures/{fig}.pdf"]
    if "fig4" in FIGURES:
        out.append("results/tables/fig4_pearson.csv")
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
        p["epochs"] = config["nc1"]["epochs"]
        p["nc1"] = True
    p["threads"] = config["threads"]
    p["device"] = config["device"]
    return json.dumps(p, sort_keys=True)


def erm_epochs(wc):
    return int(config["erm"][wc.dataset]["epochs"])


def method_params(wc):
    return json.dumps(config.get("lastlayer", {}).get(wc.method, {}), sort_keys=True)
