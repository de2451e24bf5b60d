# Config validation, folders, the experiment cells of each figure, and input
# functions. Formulas live in the llr package; this file only names jobs.
import glob
import hashlib
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(workflow.basedir, "src"))
from llr.config import check_config  # noqa: E402

from llr.errors import LLRError  # noqa: E402

WORKFLOW_START = time.time()


def _fail(msg):
    sys.stderr.write(f"llr: error: {msg}\n")
    sys.exit(1)


try:
    check_config(config)  # also turns numeric strings from --config into numbers
except LLRError as e:
    _fail(e)

DATA_ROOT = os.environ.get("LLR_DATA_ROOT", config["data_root"])
# A model folder may live beside the data: "{data_root}" in a model_path.
for _erm in config["erm"].values():
    for _block in (_erm, _erm.get("section2") or {}):
        if isinstance(_block.get("model_path"), str):
            _block["model_path"] = _block["model_path"].replace("{data_root}", DATA_ROOT)
SRC = os.path.join(workflow.basedir, "src", "llr")
# Captions of figures and tables: one source for `snakemake --report` and report.html.
CAPTIONS = sorted(glob.glob(os.path.join(workflow.basedir, "workflow", "report", "*.rst")))
# Each config writes into its own folders (results_dir, logs_dir): a tiny or a
# paper-grid run never overwrites the embedded default's results/.
RESULTS = config.get("results_dir", "results").rstrip("/")
LOGS = config.get("logs_dir", "logs").rstrip("/")
BENCH = os.path.join(LOGS, "benchmarks") if LOGS != "logs" else "benchmarks/out"


def res(path):
    return f"{RESULTS}/{path}"


def logp(path):
    return f"{LOGS}/{path}"


def bench(path):
    return f"{BENCH}/{path}"


# Jobs start through a warm fork server (llr.runtime.forkserver) unless forkserver: false.
if config.get("forkserver", True):

    shell.prefix("export LLR_FORKSERVER=1; ")
DATASETS = list(config["datasets"])
SEEDS = [int(s) for s in config["seeds"]]
RATIOS = [str(float(r)) for r in config["group_ratios"]]
FIGURES = list(config["figures"])
TABLES = list(config.get("tables", []))
FIG4_CONSTRUCTIONS = list(config.get("fig4", {}).get("heldout_constructions", ["subset"]))

from llr.train.balancing import BALANCE_MODES, ERM_CELL_PATTERN, ErmCell  # noqa: E402

BAL_MODES = [m for m in BALANCE_MODES if m != "none"]


def is_synthetic(ds):
    from llr.data.registry import get_spec

    return get_spec(ds).synthetic


def synthetic_names(modality=None):
    """Wildcard alternatives of the registered synthetic datasets."""
    from llr.data.registry import DATASETS as _SPECS

    return _alt(
        [n for n, sp in _SPECS.items() if sp.synthetic and modality in (None, sp.modality)]
    )


def _alt(values):
    return "|".join(sorted((v.replace(".", r"\.") for v in values), key=len, reverse=True))


wildcard_constraints:
    dataset=_alt(DATASETS),
    seed=r"\d+",
    ratio=_alt(RATIOS),
    role="train|heldout|combined",
    erm=re.sub(r"\(\?P<\w+>", "(?:", ERM_CELL_PATTERN),  # named groups read as <pathvars>
    method=r"[a-z0-9_]+",
    heldout=r"heldout(_ratio[0-9.]+|_sampled[0-9.]+)?",


# ---------------------------------------------------------------- cells
def section2_cell(ds, base):
    """Paper section 2 (Figures 2-3, Table 1) trains ResNet-18 / BERT-Tiny
    where Figures 4-7 use ResNet-50 / BERT-base: ``erm.<ds>.section2``
    overrides the ERM settings, and a different architecture shows in the
    cell's name (``_arch-<arch>``). Without an override the section-2 cells
    are the standard ones."""
    over = config["erm"][ds].get("section2") or {}
    arch = over.get("arch")
    if arch and arch != config["erm"][ds]["arch"]:
        return f"{base}_arch-{arch}"
    return base


def heldout_cells(r):
    """Figure 4's held-out cells of group ratio r, one per construction:
    subset (the paper's text: data removed) and sampled (every held-out
    example kept, the ratio reached by sampling: the authors' plots)."""
    names = {"subset": f"heldout_ratio{r}", "sampled": f"heldout_sampled{r}"}
    return [names[c] for c in FIG4_CONSTRUCTIONS]


def fig4_cells(ds):
    """(erm, method, heldout) of Figure 4: for each ERM group ratio, LLR on
    each held-out group ratio and DFR on the whole held-out set; plus the
    ERM reference trained with the held-out data added."""
    erm = [f"train_ratio{r}_none" for r in RATIOS]
    ll = [(e, "llr", h) for e in erm for r in RATIOS for h in heldout_cells(r)]
    ll += [(e, "dfr_subsetting", "heldout") for e in erm]
    return erm + [f"combined_ratio{r}_none" for r in RATIOS], ll


CLASS_BAL = ["none"] + [f"class_{m}" for m in BAL_MODES]


def fig5_cells(ds):
    """Figure 5: class balancing. ERM on 100% of the data (combined pool)
    versus LLR/CB-LLR on the held-out set after the train/held-out split."""
    erm = [f"{pool}_{b}" for pool in ("combined", "train") for b in CLASS_BAL]
    ll = [("train_none", "llr", "heldout")]
    ll += [(f"train_class_{m}", f"cbllr_{m}", "heldout") for m in BAL_MODES]
    return erm, ll


def fig6_cells(ds):
    """Figure 6: ERM with group balancing (test WGA over training)."""
    return ["combined_none"] + [f"combined_group_{m}" for m in BAL_MODES], []


def fig7_cells(ds):
    """Figure 7: class-balanced ERM versus group-balanced DFR; AFR beside,
    with AFR at gamma = 0 and CB-LLR (upweighting) on the same ERM for the
    section 3.2 comparison."""
    erm = [f"combined_class_{m}" for m in BAL_MODES]
    ll = [(f"train_class_{m}", f"dfr_{m}", "heldout") for m in BAL_MODES]
    ll += [("train_none", "afr", "heldout"), ("train_none", "afr_gamma0", "heldout"),
           ("train_none", "cbllr_upweighting", "heldout")]
    return erm, ll


def fig2_cells(ds):
    """Figure 2: NC1 over the longer ERM runs (section 2 architecture)."""
    return [section2_cell(ds, "train_none_long")], []


FIGURE_CELLS = {"fig2": fig2_cells, "fig4": fig4_cells, "fig5": fig5_cells, "fig6": fig6_cells,
                "fig7": fig7_cells}


def erm_dir(ds, seed, erm):
    return res(f"{ds}/seed{seed}/erm/{erm}")


def ll_file(ds, seed, erm, method, heldout):
    return res(f"{ds}/seed{seed}/lastlayer/{erm}/{method}/{heldout}/metrics.json")


def figure_runs(fig):
    """Every metrics file a figure needs, over datasets and seeds."""
    files = []
    for d in DATASETS:
        erm, ll = FIGURE_CELLS[fig](d)
        files += [f"{erm_dir(d, s, e)}/metrics.json" for s in SEEDS for e in erm]
        files += [ll_file(d, s, *c) for s in SEEDS for c in ll]
    return files


def figure_logs(fig):
    return [f"{erm_dir(d, s, e)}/log.csv" for d in DATASETS for s in SEEDS for e in FIGURE_CELLS[fig](d)[0]]


def analysis_files(name):
    return [res(f"{d}/seed{s}/analysis/{name}.csv") for d in DATASETS for s in SEEDS]


def analysis_emb(wc):
    """Figure 3 and Table 1 read the section-2 ERM cell's embeddings."""
    return f"{erm_dir(wc.dataset, wc.seed, section2_cell(wc.dataset, 'train_none'))}/embeddings.npy"


FIGURE_DATA = {
    "fig2": [res("tables/fig2_epochs.csv")],
    "fig3": [res("tables/fig3_svm.csv")],
    "fig5": [res("tables/fig5_runs.csv")],
    "fig6": [res("tables/fig6_epochs.csv")],
    "fig7": [res("tables/fig7_runs.csv")],
}


def standard_epochs():
    return {d: int(config["erm"][d]["epochs"]) for d in DATASETS}


def figure_params(fig):
    if fig == "fig2":
        return json.dumps({"standard_epochs": standard_epochs()})
    return "{}"


def comparison_inputs():
    """Whatever the configured figures and tables produce, for the paper
    comparison (each checker recognises its file by name)."""
    out = [res("tables/table2.csv")]
    if "fig4" in FIGURES:
        out += [res("tables/fig4_pearson.csv"), res("tables/fig4_runs.csv")]
    for fig, f in (("fig5", "fig5_runs"), ("fig7", "fig7_runs"), ("fig2", "fig2_epochs"),
                   ("fig6", "fig6_epochs"), ("fig3", "fig3_svm")):
        if fig in FIGURES:
            out.append(res(f"tables/{f}.csv"))
    if "table1" in TABLES:
        out += [res("tables/table1.csv"), res("tables/table1_margins.csv")]
    if "fig8" in FIGURES:
        out.append(res("tables/fig8_effective_ratio.csv"))
    if "ablation_caching" in FIGURES:
        out.append(res("tables/ablation_caching.csv"))
    return out


def report_inputs():
    figs = [res(f"figures/{f}.png") for f in FIGURES]
    tabs = [res(f"tables/{t}.csv") for t in TABLES]
    if "fig4" in FIGURES:
        tabs.append(res("tables/fig4_pearson.csv"))
    if "fig8" in FIGURES:
        tabs.append(res("tables/fig8_correlation.csv"))
    if "ablation_caching" in FIGURES:
        tabs.append(res("tables/ablation_caching_summary.csv"))
    return figs + tabs


def all_targets():
    out = []
    for fig in FIGURES:
        out += [res(f"figures/{fig}.png"), res(f"figures/{fig}.pdf")]
    if "fig4" in FIGURES:
        out.append(res("tables/fig4_pearson.csv"))
    if "fig8" in FIGURES:
        out.append(res("tables/fig8_correlation.csv"))
    if "ablation_caching" in FIGURES:
        out.append(res("tables/ablation_caching_summary.csv"))
    out += [res(f"tables/{t}.csv") for t in TABLES]
    if config.get("report", False):
        out.append(res("report.html"))
    return out


# ---------------------------------------------------------------- inputs
def inputs_file(wc):
    """The model inputs of a dataset: generated images/tokens for synthetic
    datasets, the pre-decoded image cache or token cache for real ones."""
    from llr.data.registry import get_spec

    spec = get_spec(wc.dataset)
    if spec.modality == "image":
        return res(f"{wc.dataset}/inputs.npy")
    return res(f"{wc.dataset}/tokens.npz")


def pretrained_file(wc):
    return [res(f"{wc.dataset}/pretrain/backbone.pt")] if is_synthetic(wc.dataset) else []


def erm_subset(wc):
    c = ErmCell.parse(wc.erm)
    if c.ratio is None:
        return []
    return [res(f"{wc.dataset}/seed{wc.seed}/subsets/{c.pool}_ratio{c.ratio}.csv")]


def heldout_subset(wc):
    if not wc.heldout.startswith("heldout_ratio"):
        return []
    return [res(f"{wc.dataset}/seed{wc.seed}/subsets/{wc.heldout}.csv")]


def heldout_args(wc, input):
    """--heldout of the lastlayer command: a subset file, or the whole
    held-out role (sampled to a group ratio for heldout_sampled<r>)."""
    if input.heldout:
        return f"--heldout {input.heldout[0]}"
    if wc.heldout.startswith("heldout_sampled"):
        return f"--heldout full --heldout-sampling-ratio {wc.heldout[len('heldout_sampled'):]}"
    return "--heldout full"


def _device_params():
    return {"threads": config["threads"], "device": config["device"]}


# Keys of erm.<dataset> that each upstream step reads: a change of any other
# ERM setting (lr, epochs, ...) invalidates only the ERM jobs and what reads them.
PRETRAIN_ERM_KEYS = ("arch", "batch_size", "schedule", "weight_decay", "max_length", "eval_batch_size")
PREPARE_ERM_KEYS = ("max_length",)
INPUTS_ERM_KEYS = {"image": ("cache_size",), "text": ("arch", "model_path", "max_length")}


def _pick(d, keys):
    return {k: d[k] for k in keys if k in d}


def prepare_params(ds):
    """Generator settings of a synthetic dataset (and the token length)."""
    p = dict(config.get("synthetic", {}).get(ds, {}))
    p.update(_pick(config["erm"][ds], PREPARE_ERM_KEYS))
    return json.dumps(p, sort_keys=True)


def pretrain_params(ds):
    """Pretraining of a synthetic backbone: its generator and pretrain block,
    the ERM architecture and the batch/schedule settings it shares."""
    p = dict(config.get("synthetic", {}).get(ds, {}))
    p.update(_pick(config["erm"][ds], PRETRAIN_ERM_KEYS))
    p.update(_device_params())
    if cache_code_hash():
        p["code"] = cache_code_hash()
    return json.dumps(p, sort_keys=True)


def inputs_params(ds):
    from llr.data.registry import get_spec

    return json.dumps(_pick(config["erm"][ds], INPUTS_ERM_KEYS[get_spec(ds).modality]), sort_keys=True)


def erm_settings(ds, cell):
    """ERM settings of one cell: erm.<ds>, the section-2 overrides for an
    ``_arch-`` cell, and the longer epoch count of Figure 2's runs."""
    c = ErmCell.parse(cell)
    p = {k: v for k, v in config["erm"][ds].items() if k != "section2"}
    if c.arch is not None:
        p.update(config["erm"][ds].get("section2") or {})
    if c.long or (c.pool == "combined" and c.ratio is None and c.level in (None, "group")):
        # curves over training (Figures 2 and 6): several evaluations per epoch
        p.setdefault("evals_per_epoch", int(config.get("curves", {}).get("evals_per_epoch", 1)))
    if c.long:
        nc1 = config.get("nc1", {})
        p["epochs"] = int(nc1["epochs"]) if "epochs" in nc1 else int(round(nc1.get("factor", 2) * p["epochs"]))
        p["nc1"] = True
    return p


def erm_params(wc):
    p = erm_settings(wc.dataset, wc.erm)
    p.update(_device_params())
    if cache_code_hash():
        p["code"] = cache_code_hash()
    return json.dumps(p, sort_keys=True)


def erm_epochs(wc):
    """The standard epoch count of the ERM cell a last-layer job reads."""
    c = ErmCell.parse(wc.erm)
    return int(erm_settings(wc.dataset, wc.erm.replace("_long", "") if c.long else wc.erm)["epochs"])


def llr_epochs(wc):
    """LLR's standard epoch count: the section-2 ERM epochs unless
    lastlayer.llr.epochs overrides it (Figure 3 trains 10x this, Table 1
    checkpoints within it)."""
    std = int(erm_settings(wc.dataset, section2_cell(wc.dataset, "train_none"))["epochs"])
    return int(config.get("lastlayer", {}).get("llr", {}).get("epochs") or std)


def method_params(wc):
    return json.dumps(config.get("lastlayer", {}).get(wc.method, {}), sort_keys=True)


# ---------------------------------------------------------------- beyond the paper
# Figure 8 and the caching ablation (rules in beyond.smk). Optional config
# ablation_caching: {erm_cell, epochs} (schema).
_AB = config.get("ablation_caching", {}) or {}
# Sized for at most ~90 s of job time per dataset and seed on this 2-core CPU
# (9 through-backbone jobs each, ~0.03 s per batch of 32 through the synthetic
# ResNet, ~0.02 s through the synthetic BERT; measured 78 s at 50 epochs for
# synth_waterbirds, 58 s for synth_multinli): 40 and 50 of the cached
# default's 100 epochs; the cached mode is rerun at the same epochs
# (lastlayer_matched). Other datasets (synth_celeba, synth_civilcomments, the
# real ones) run both modes at the cached mode's epochs (measured: make all
# stays under 12 minutes with them at 100).
AB_EPOCHS = {"synth_waterbirds": 40, "synth_multinli": 50}


def ablation_erm_cell(ds):
    """Figure 4's ERM cell of the ablation: group ratio 0.2 (near the
    synthetic training sets' own, so that the held-out ratios lie on both
    sides of it), else the middle configured ratio."""
    if _AB.get("erm_cell"):
        return _AB["erm_cell"]
    r = "0.2" if "0.2" in RATIOS else RATIOS[len(RATIOS) // 2]
    return f"train_ratio{r}_none"


def ablation_cells(ds):
    """(erm, method, heldout): LLR on every held-out subset (subset
    construction) after one Figure 4 ERM cell, and Figure 5's LLR / CB-LLR."""
    e = ablation_erm_cell(ds)
    cells = [(e, "llr", f"heldout_ratio{r}") for r in RATIOS]
    cells += [("train_none", "llr", "heldout")]
    cells += [(f"train_class_{m}", f"cbllr_{m}", "heldout") for m in BAL_MODES]
    return cells


def cached_epochs(ds, erm, method):
    """Epochs of the standard cached run: lastlayer.<method>.epochs, else the
    ERM cell's epochs (what the lastlayer rule passes)."""
    over = (config.get("lastlayer", {}) or {}).get(method, {}) or {}
    return int(over.get("epochs") or erm_settings(ds, erm)["epochs"])


def ablation_epochs(ds, erm, method):
    ep = _AB.get("epochs")
    if isinstance(ep, dict):
        ep = ep.get(ds)
    if ep is None:
        ep = AB_EPOCHS.get(ds)
    return int(ep) if ep is not None else cached_epochs(ds, erm, method)


def ablation_cached_file(ds, seed, erm, method, heldout):
    """The cached run to compare with: the standard one when the epochs
    agree, else a cached run at the ablation's epochs."""
    if ablation_epochs(ds, erm, method) == cached_epochs(ds, erm, method):
        return ll_file(ds, seed, erm, method, heldout)
    return res(f"{ds}/seed{seed}/lastlayer_matched/{erm}/{method}/{heldout}/metrics.json")


def ablation_files():
    out = []
    for d in DATASETS:
        for s in SEEDS:
            for c in ablation_cells(d):
                out.append(ablation_cached_file(d, s, *c))
                out.append(res(f"{d}/seed{s}/lastlayer_backbone/{c[0]}/{c[1]}/{c[2]}/metrics.json"))
    return out


def fig8_files():
    """Every last-layer run of Figures 4, 5 and 7, once."""
    files = [f for fig in ("fig4", "fig5", "fig7") for f in figure_runs(fig) if "/lastlayer/" in f]
    return list(dict.fromkeys(files))


def ablation_hp(wc):
    p = dict((config.get("lastlayer", {}) or {}).get(wc.method, {}) or {})
    p["epochs"] = ablation_epochs(wc.dataset, wc.erm, wc.method)
    return json.dumps(p, sort_keys=True)



# ---------------------------------------------------------------- caching
def cache_if_asked(rule):
    """Between-workflow output cache of the training rules (pretrain, erm): on
    with `--cache pretrain erm` and $SNAKEMAKE_OUTPUT_CACHE (docs/cluster.md).
    The key hashes a rule's params, source inputs and upstream steps, not its
    wildcards: a cached rule's params name its cell and, see
    cache_code_hash, the package's source."""
    asked = workflow.workflow_settings.cache
    return "omit-software" if asked is not None and (not asked or rule in asked) else False


def no_benchmark_when_cached(proxy):
    """Snakemake refuses a benchmark on a cached rule."""
    if proxy.rule.cache and proxy.rule.cache.output:
        proxy.rule._benchmark = None


_CODE_HASH = []


def cache_code_hash():
    """With --cache, a hash of src/llr joins the cached rules' params, so a
    code change (then --forcerun) never restores a result of older code.
    Without --cache it is empty: an edit of src/llr does not rerun training."""
    if workflow.workflow_settings.cache is None:
        return ""
    if not _CODE_HASH:
        h = hashlib.sha256()
        for f in sorted(glob.glob(os.path.join(SRC, "**", "*.py"), recursive=True)):
            h.update(os.path.relpath(f, SRC).encode())
            with open(f, "rb") as fh:
                h.update(fh.read())
        _CODE_HASH.append(h.hexdigest()[:16])
    return _CODE_HASH[0]


# ---------------------------------------------------------------- start-up checks
def startup_checks():
    """Before any job (onstart: not in dry runs): CUDA where the config asks
    for it on a local run, and every configured real dataset and local model
    folder (llr.data.preflight), all problems at once."""
    problems = []
    if config["device"] == "cuda" and workflow.local_exec:
        from llr.runtime.gpu import cuda_available

        if not cuda_available():
            problems.append("config device is 'cuda' (the local-gpu profile sets it) but this machine has "
                            "no usable CUDA device; run with --profile local (CPU) instead")
    from llr.data.preflight import check_workflow_data

    problems += check_workflow_data(DATASETS, DATA_ROOT, config)
    for p in problems:
        sys.stderr.write(f"llr: error: {p}\n")
    if problems:
        raise SystemExit(1)


onstart:
    startup_checks()
    # Snakemake 9's job-rate limiter (--max-jobs-per-timespan, default 100/1s)
    # re-arms a one-second timer after every scheduling round, and each
    # finished job starts one more such chain: with the ~500 short jobs of the
    # embedded default the scheduler ends up re-selecting hundreds of times a
    # second (a third of a core here, measured with py-spy). The limit guards
    # cluster submission; local runs go without it (cluster runs keep it).
    # tests/test_workflow.py checks these Snakemake attributes still exist.
    _sched = getattr(workflow, "scheduler", None)
    if workflow.local_exec and getattr(_sched, "job_rate_limiter", None) is not None:
        _sched.job_rate_limiter = None
    # Snakemake's output cache makes its files world-writable; follow the umask.
    _cache = getattr(workflow, "output_file_cache", None)
    if _cache is not None and hasattr(_cache, "file_permissions"):
        _mask = os.umask(0)
        os.umask(_mask)
        _cache.file_permissions &= ~_mask
        _cache.dir_permissions &= ~_mask


onerror:
    # A failed job's one-line `llr: error:` sits in its log: show every such
    # line of this run in the console, with the log it came from.
    for _f in sorted(glob.glob(os.path.join(LOGS, "**", "*.log"), recursive=True)):
        try:
            if os.path.getmtime(_f) < WORKFLOW_START:
                continue
            with open(_f, errors="replace") as _fh:
                _lines = [l.rstrip() for l in _fh if l.startswith("llr: error:")]
        except OSError:
            continue
        for _l in _lines:
            sys.stderr.write(f"{_l}  [{_f}]\n")
