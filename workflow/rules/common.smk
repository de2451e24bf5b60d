# Snakemake wiring: config check, plugins, folders, wildcard constraints and
# the input functions that adapt wildcards to the experiment grid
# (llr.experiments: which jobs exist and their settings), caching, hooks.
import glob
import hashlib
import os
import shlex
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
    check_config(config)  # also turns numeric strings from --config into numbers; imports the plugins
except LLRError as e:
    _fail(e)

from llr.experiments import (  # noqa: E402
    SUBSET_ROLES,
    Grid,
    alternatives,
    dataset_names,
    erm_wildcard,
    heldout_wildcard,
    method_wildcard,
    plot_code,
)
from llr.plugins import ENV as PLUGINS_ENV, to_env  # noqa: E402

DATA_ROOT = os.environ.get("LLR_DATA_ROOT", config["data_root"])
# A model folder may live beside the data: "{data_root}" in a model_path.
for _erm in config["erm"].values():
    for _block in (_erm, _erm.get("section2") or {}):
        if isinstance(_block.get("model_path"), str):
            _block["model_path"] = _block["model_path"].replace("{data_root}", DATA_ROOT)
SRC = os.path.join(workflow.basedir, "src", "llr")
# The plotting sources: code inputs of every plot rule (editing one redraws, retrains nothing).
PLOT_CODE = plot_code(SRC)
# Each config writes into its own folders (results_dir, logs_dir): a tiny or a
# paper-grid run never overwrites the embedded default's results/.
RESULTS = config.get("results_dir", "results").rstrip("/")
LOGS = config.get("logs_dir", "logs").rstrip("/")
BENCH = os.path.join(LOGS, "benchmarks") if LOGS != "logs" else "benchmarks/out"
GRID = Grid(config, RESULTS)


def res(path):
    return f"{RESULTS}/{path}"


def logp(path):
    return f"{LOGS}/{path}"


def bench(path):
    return f"{BENCH}/{path}"


# Every job imports the config's plugins (LLR_PLUGINS), so that `python -m llr`
# knows the methods they register; jobs start through a warm fork server
# (llr.runtime.forkserver) unless forkserver: false.
_PREFIX = ""
if config.get("plugins"):
    _PREFIX += f"export {PLUGINS_ENV}={shlex.quote(to_env(config['plugins']))}; "
if config.get("forkserver", True):
    _PREFIX += "export LLR_FORKSERVER=1; "
if _PREFIX:

    shell.prefix(_PREFIX)


wildcard_constraints:
    dataset=alternatives(GRID.datasets),
    seed=r"\d+",
    ratio=alternatives(GRID.ratios),
    role="|".join(SUBSET_ROLES),
    erm=erm_wildcard(),  # the one ERM-cell grammar, named groups read as <pathvars>
    method=method_wildcard(),
    heldout=heldout_wildcard(),


# ---------------------------------------------------------------- input functions
def inputs_file(wc):
    return GRID.inputs_file(wc.dataset)


def pretrained_file(wc):
    return GRID.pretrained_files(wc.dataset)


def erm_subset(wc):
    return GRID.erm_subset(wc.dataset, wc.seed, wc.erm)


def heldout_subset(wc):
    return GRID.heldout_subset(wc.dataset, wc.seed, wc.heldout)


def heldout_args(wc, input):
    return GRID.heldout_args(wc.heldout, input.heldout)


def analysis_emb(wc):
    return GRID.analysis_emb(wc.dataset, wc.seed)


def erm_params(wc):
    return GRID.erm_params(wc.dataset, wc.erm, cache_code_hash())


def erm_epochs(wc):
    return GRID.erm_epochs(wc.dataset, wc.erm)


def llr_epochs(wc):
    return GRID.llr_epochs(wc.dataset)


def method_params(wc):
    return GRID.method_params(wc.method)


def ablation_hp(wc):
    return GRID.ablation_hp(wc.dataset, wc.erm, wc.method)


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
            problems.append(
                "config device is 'cuda' (the local-gpu profile sets it) but this machine has "
                "no usable CUDA device; run with --profile local (CPU) instead"
            )
    from llr.data.preflight import check_workflow_data

    problems += check_workflow_data(GRID.datasets, DATA_ROOT, config)
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
