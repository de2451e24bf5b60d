"""The experiment grid: which ERM and last-layer cells each figure and table needs (paper sections 2-3,
docs/design.md, "The DAG"), the cell-name grammar and every job's settings, from the validated config.
Pure Python: workflow/rules/*.smk only wire rules to it."""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from llr.errors import LLRError
from llr.train.balancing import BALANCE_MODES

# ---------------------------------------------------------------- names and wildcards
BAL_MODES: tuple[str, ...] = tuple(m for m in BALANCE_MODES if m != "none")
CLASS_BAL: tuple[str, ...] = ("none", *(f"class_{m}" for m in BAL_MODES))
ERM_POOLS: tuple[str, ...] = ("train", "combined")  # ERM's share; train + held-out ("100% of the data")
SUBSET_ROLES: tuple[str, ...] = ("train", "heldout", "combined")  # pools of the group-ratio subsets

ERM_CELL_PATTERN = (
    rf"(?P<pool>{'|'.join(ERM_POOLS)})(?:_ratio(?P<ratio>[0-9]*\.?[0-9]+))?"
    rf"_(?P<balance>none|(?:class|group)_(?:{'|'.join(BAL_MODES)}))"
    r"(?P<long>_long)?(?:_arch-(?P<arch>[a-z0-9][a-z0-9.-]*))?"
)


@dataclass(frozen=True)
class ErmCell:
    """An ERM cell name, ``ERM_CELL_PATTERN`` (the one definition; the
    workflow's wildcard constraint is built from it):
    ``{pool}[_ratio{r}]_{balance}[_long][_arch-{arch}]`` where pool is train
    (ERM's share) or combined (train + held-out, "100% of the data"), r a
    group ratio of that pool's subset, balance ``none`` or
    ``{class|group}_{subsetting|upsampling|upweighting}``; ``_long`` marks the
    longer NC1 runs (Figure 2) and ``_arch-<name>`` a cell trained with
    another architecture than the dataset's standard one (paper section 2
    uses ResNet-18 / BERT-Tiny, Figures 4-7 ResNet-50 / BERT-base)."""

    pool: str
    ratio: float | None
    level: str | None
    mode: str
    long: bool = False
    arch: str | None = None

    @classmethod
    def parse(cls, name: str) -> ErmCell:
        m = re.fullmatch(ERM_CELL_PATTERN, name)
        if m is None:
            raise LLRError(
                f"ERM cell {name!r} malformed, expected {{train|combined}}[_ratio<r>]_"
                f"{{none|class_<mode>|group_<mode>}}[_long][_arch-<arch>]"
            )
        level, _, mode = m["balance"].rpartition("_")
        ratio = float(m["ratio"]) if m["ratio"] is not None else None
        if ratio is not None and not 0 < ratio <= 1:
            raise LLRError(f"ERM cell {name!r}: group ratio {ratio} outside (0, 1]")
        return cls(m["pool"], ratio, level or None, mode, bool(m["long"]), m["arch"])

    @property
    def name(self) -> str:
        """The cell's name (``parse`` inverted; a ratio written as ``str(float)``)."""
        ratio = "" if self.ratio is None else f"_ratio{float(self.ratio)}"
        balance = self.mode if self.level is None else f"{self.level}_{self.mode}"
        return (
            f"{self.pool}{ratio}_{balance}"
            + ("_long" if self.long else "")
            + (f"_arch-{self.arch}" if self.arch else "")
        )


# Held-out cells: the whole held-out role, or a group-ratio set of it per construction
# (Figure 4): subset (data removed, the paper's text) or sampled (every example kept).
HELDOUT = "heldout"
HELDOUT_PREFIX = {"subset": "heldout_ratio", "sampled": "heldout_sampled"}
METHOD_PATTERN = r"[a-z0-9_]+"


def parse_heldout(name: str) -> tuple[str | None, str | None]:
    """(construction, ratio string) of a held-out cell name; (None, None) for ``heldout``."""
    for construction, prefix in HELDOUT_PREFIX.items():
        if name.startswith(prefix):
            return construction, name[len(prefix) :]
    return None, None


def alternatives(values: Iterable[str]) -> str:
    """A regex matching exactly the given names (longest first, dots escaped)."""
    return "|".join(sorted((v.replace(".", r"\.") for v in values), key=len, reverse=True))


def erm_wildcard() -> str:
    """The ``erm`` wildcard constraint: ``ERM_CELL_PATTERN`` without its named
    groups (Snakemake reads ``(?P<name>`` as a path variable)."""
    return re.sub(r"\(\?P<\w+>", "(?:", ERM_CELL_PATTERN)


def heldout_wildcard() -> str:
    """The ``heldout`` wildcard constraint: ``heldout`` or a construction's prefix and a ratio."""
    suffixes = "|".join(f"{p[len(HELDOUT) :]}[0-9.]+" for p in HELDOUT_PREFIX.values())
    return f"{HELDOUT}({suffixes})?"


def method_wildcard() -> str:
    """The ``method`` wildcard constraint: a last-layer method name."""
    return METHOD_PATTERN


def plot_code(package_dir: str) -> list[str]:
    """The plotting sources a plot rule lists as code inputs: every
    ``reporting/*.py`` of the package but the tidy tables (editing one reruns
    the plots and nothing upstream)."""
    files = glob.glob(os.path.join(package_dir, "reporting", "*.py"))
    return sorted(f for f in files if os.path.basename(f) != "tidy.py")


# Keys of erm.<dataset> that each upstream step reads: a change of any other
# ERM setting (lr, epochs, ...) invalidates only the ERM jobs and what reads them.
PRETRAIN_ERM_KEYS = ("arch", "batch_size", "schedule", "weight_decay", "max_length", "eval_batch_size")
PREPARE_ERM_KEYS = ("max_length",)
INPUTS_ERM_KEYS = {"image": ("cache_size",), "text": ("arch", "model_path", "max_length")}

# Figures whose runs come from experiment cells (the others read analyses or tables).
CELL_FIGURES = ("fig2", "fig4", "fig5", "fig6", "fig7")

# Caching ablation epochs, sized for at most ~90 s of job time per dataset and
# seed on this 2-core CPU (9 through-backbone jobs each, ~0.03 s per batch of
# 32 through the synthetic ResNet, ~0.02 s through the synthetic BERT;
# measured 78 s at 50 epochs for synth_waterbirds, 58 s for synth_multinli):
# 40 and 50 of the cached default's 100 epochs; the cached mode is rerun at
# the same epochs (lastlayer_matched). Other datasets (synth_celeba,
# synth_civilcomments, the real ones) run both modes at the cached mode's
# epochs (measured: make all stays under 12 minutes with them at 100).
AB_EPOCHS = {"synth_waterbirds": 40, "synth_multinli": 50}


def _pick(d: dict, keys: Iterable[str]) -> dict:
    return {k: d[k] for k in keys if k in d}


def _modality(ds: str) -> str:
    from llr.data.registry import get_spec

    return get_spec(ds).modality


def _synthetic(ds: str) -> bool:
    from llr.data.registry import get_spec

    return get_spec(ds).synthetic


def dataset_names(synthetic: bool | None = None, modality: str | None = None) -> list[str]:
    """Registered dataset names, optionally only the synthetic (or real) ones of a modality."""
    from llr.data.registry import DATASETS

    return [n for n, sp in DATASETS.items() if synthetic in (None, sp.synthetic) and modality in (None, sp.modality)]


def figure_methods(fig: str) -> list[str]:
    """Registered last-layer methods that ask to run in ``fig``'s grid
    (``Method.figures``), in registration order."""
    from llr.lastlayer.registry import METHODS

    return [name for name, m in METHODS.items() if fig in getattr(m, "figures", ())]


# ---------------------------------------------------------------- the grid
class Grid:
    """The jobs of one validated config: cells per figure, result paths
    (under ``results_dir``, default the config's) and job settings."""

    def __init__(self, config: dict, results_dir: str | None = None):
        self.config = config
        self.results = (results_dir or config.get("results_dir", "results")).rstrip("/")
        self.datasets = list(config["datasets"])
        self.seeds = [int(s) for s in config["seeds"]]
        self.ratios = [str(float(r)) for r in config["group_ratios"]]
        self.figures = list(config["figures"])
        self.tables = list(config.get("tables", []))
        self.fig4_constructions = list(config.get("fig4", {}).get("heldout_constructions", ["subset"]))
        self.ablation = config.get("ablation_caching", {}) or {}

    def res(self, path: str) -> str:
        return f"{self.results}/{path}"

    # ------------------------------------------------------------ cells
    def section2_cell(self, ds: str, base: str) -> str:
        """Paper section 2 (Figures 2-3, Table 1) trains ResNet-18 / BERT-Tiny
        where Figures 4-7 use ResNet-50 / BERT-base: ``erm.<ds>.section2``
        overrides the ERM settings, and a different architecture shows in the
        cell's name (``_arch-<arch>``). Without an override the section-2 cells
        are the standard ones."""
        over = self.config["erm"][ds].get("section2") or {}
        arch = over.get("arch")
        if arch and arch != self.config["erm"][ds]["arch"]:
            return f"{base}_arch-{arch}"
        return base

    def heldout_cells(self, r: str) -> list[str]:
        """Figure 4's held-out cells of group ratio r, one per construction:
        subset (the paper's text: data removed) and sampled (every held-out
        example kept, the ratio reached by sampling: the authors' plots)."""
        return [f"{HELDOUT_PREFIX[c]}{r}" for c in self.fig4_constructions]

    def fig2_cells(self, ds: str) -> tuple[list[str], list[tuple[str, str, str]]]:
        """Figure 2: NC1 over the longer ERM runs (section 2 architecture)."""
        return [self.section2_cell(ds, "train_none_long")], []

    def fig4_cells(self, ds: str) -> tuple[list[str], list[tuple[str, str, str]]]:
        """(erm, method, heldout) of Figure 4: for each ERM group ratio, LLR on
        each held-out group ratio and DFR on the whole held-out set; plus the
        ERM reference trained with the held-out data added."""
        erm = [f"train_ratio{r}_none" for r in self.ratios]
        ll = [(e, "llr", h) for e in erm for r in self.ratios for h in self.heldout_cells(r)]
        ll += [(e, "dfr_subsetting", HELDOUT) for e in erm]
        return erm + [f"combined_ratio{r}_none" for r in self.ratios], ll

    def fig5_cells(self, ds: str) -> tuple[list[str], list[tuple[str, str, str]]]:
        """Figure 5: class balancing. ERM on 100% of the data (combined pool)
        versus LLR/CB-LLR on the held-out set after the train/held-out split."""
        erm = [f"{pool}_{b}" for pool in ("combined", "train") for b in CLASS_BAL]
        ll = [("train_none", "llr", HELDOUT)]
        ll += [(f"train_class_{m}", f"cbllr_{m}", HELDOUT) for m in BAL_MODES]
        return erm, ll

    def fig6_cells(self, ds: str) -> tuple[list[str], list[tuple[str, str, str]]]:
        """Figure 6: ERM with group balancing (test WGA over training)."""
        return ["combined_none"] + [f"combined_group_{m}" for m in BAL_MODES], []

    def fig7_cells(self, ds: str) -> tuple[list[str], list[tuple[str, str, str]]]:
        """Figure 7: class-balanced ERM versus group-balanced DFR; AFR beside,
        with AFR at gamma = 0 and CB-LLR (upweighting) on the same ERM for the
        section 3.2 comparison."""
        erm = [f"combined_class_{m}" for m in BAL_MODES]
        ll = [(f"train_class_{m}", f"dfr_{m}", HELDOUT) for m in BAL_MODES]
        ll += [
            ("train_none", "afr", HELDOUT),
            ("train_none", "afr_gamma0", HELDOUT),
            ("train_none", "cbllr_upweighting", HELDOUT),
        ]
        return erm, ll

    def figure_cells(self, fig: str, ds: str) -> tuple[list[str], list[tuple[str, str, str]]]:
        """(ERM cells, (erm, method, heldout) last-layer cells) of a figure for
        one dataset: the paper's, then every registered method that names the
        figure (``Method.figures``) on ``train_none`` and the whole held-out set."""
        if fig not in CELL_FIGURES:
            raise LLRError(f"figure {fig!r} has no experiment cells; expected one of {list(CELL_FIGURES)}")
        erm, ll = getattr(self, f"{fig}_cells")(ds)
        for name in figure_methods(fig):
            cell = ("train_none", name, HELDOUT)
            if cell not in ll:
                ll.append(cell)
        return erm, ll

    def erm_cells(self, ds: str) -> list[str]:
        """Every ERM cell the configured figures and tables need for one
        dataset (each once, in order of first use): the figures' ERM cells and
        those their last-layer runs read, the section-2 cell of Figure 3 and
        Table 1, and the caching ablation's."""
        cells: list[str] = []
        for fig in CELL_FIGURES:
            if fig in self.figures:
                erm, ll = self.figure_cells(fig, ds)
                cells += erm + [c[0] for c in ll]
        if "fig3" in self.figures or "table1" in self.tables:
            cells.append(self.section2_cell(ds, "train_none"))
        if "ablation_caching" in self.figures:
            cells += [c[0] for c in self.ablation_cells(ds)]
        return list(dict.fromkeys(cells))

    # ------------------------------------------------------------ paths
    def erm_dir(self, ds: str, seed: int | str, erm: str) -> str:
        return self.res(f"{ds}/seed{seed}/erm/{erm}")

    def ll_file(self, ds: str, seed: int | str, erm: str, method: str, heldout: str) -> str:
        return self.res(f"{ds}/seed{seed}/lastlayer/{erm}/{method}/{heldout}/metrics.json")

    def figure_runs(self, fig: str) -> list[str]:
        """Every metrics file a figure needs, over datasets and seeds."""
        files = []
        for d in self.datasets:
            erm, ll = self.figure_cells(fig, d)
            files += [f"{self.erm_dir(d, s, e)}/metrics.json" for s in self.seeds for e in erm]
            files += [self.ll_file(d, s, *c) for s in self.seeds for c in ll]
        return files

    def figure_logs(self, fig: str) -> list[str]:
        return [
            f"{self.erm_dir(d, s, e)}/log.csv"
            for d in self.datasets
            for s in self.seeds
            for e in self.figure_cells(fig, d)[0]
        ]

    def analysis_files(self, name: str) -> list[str]:
        return [self.res(f"{d}/seed{s}/analysis/{name}.csv") for d in self.datasets for s in self.seeds]

    def analysis_emb(self, ds: str, seed: int | str) -> str:
        """Figure 3 and Table 1 read the section-2 ERM cell's embeddings."""
        return f"{self.erm_dir(ds, seed, self.section2_cell(ds, 'train_none'))}/embeddings.npy"

    def figure_data(self, fig: str) -> list[str]:
        """The table a figure_<fig> plot rule reads."""
        name = {
            "fig2": "fig2_epochs",
            "fig3": "fig3_svm",
            "fig5": "fig5_runs",
            "fig6": "fig6_epochs",
            "fig7": "fig7_runs",
        }[fig]
        return [self.res(f"tables/{name}.csv")]

    def standard_epochs(self) -> dict[str, int]:
        return {d: int(self.config["erm"][d]["epochs"]) for d in self.datasets}

    def figure_params(self, fig: str) -> str:
        """--params of ``llr plot <fig>``."""
        if fig in ("fig2", "paper_comparison"):
            return json.dumps({"standard_epochs": self.standard_epochs()})
        if fig == "fig4":
            return json.dumps({"ratios": [float(r) for r in self.ratios]})
        return "{}"

    def comparison_inputs(self) -> list[str]:
        """Whatever the configured figures and tables produce, for the paper
        comparison (each checker recognises its file by name)."""
        res = self.res
        out = [res("tables/table2.csv")]
        if "fig4" in self.figures:
            out += [res("tables/fig4_pearson.csv"), res("tables/fig4_runs.csv")]
        for fig, f in (
            ("fig5", "fig5_runs"),
            ("fig7", "fig7_runs"),
            ("fig2", "fig2_epochs"),
            ("fig6", "fig6_epochs"),
            ("fig3", "fig3_svm"),
        ):
            if fig in self.figures:
                out.append(res(f"tables/{f}.csv"))
        if "table1" in self.tables:
            out += [res("tables/table1.csv"), res("tables/table1_margins.csv")]
        if "fig8" in self.figures:
            out.append(res("tables/fig8_effective_ratio.csv"))
        if "ablation_caching" in self.figures:
            out.append(res("tables/ablation_caching.csv"))
        return out

    def all_targets(self) -> list[str]:
        """What ``all`` builds: every configured figure and table."""
        res = self.res
        out = []
        for fig in self.figures:
            out += [res(f"figures/{fig}.png"), res(f"figures/{fig}.pdf")]
        if "fig4" in self.figures:
            out.append(res("tables/fig4_pearson.csv"))
        if "fig8" in self.figures:
            out.append(res("tables/fig8_correlation.csv"))
        if "ablation_caching" in self.figures:
            out.append(res("tables/ablation_caching_summary.csv"))
        out += [res(f"tables/{t}.csv") for t in self.tables]
        return out

    # ------------------------------------------------------------ inputs of a job
    def inputs_file(self, ds: str) -> str:
        """The model inputs of a dataset: generated images/tokens for synthetic
        datasets, the pre-decoded image cache or token cache for real ones."""
        if _modality(ds) == "image":
            return self.res(f"{ds}/inputs.npy")
        return self.res(f"{ds}/tokens.npz")

    def pretrained_files(self, ds: str) -> list[str]:
        return [self.res(f"{ds}/pretrain/backbone.pt")] if _synthetic(ds) else []

    def erm_subset(self, ds: str, seed: int | str, erm: str) -> list[str]:
        c = ErmCell.parse(erm)
        if c.ratio is None:
            return []
        return [self.res(f"{ds}/seed{seed}/subsets/{c.pool}_ratio{c.ratio}.csv")]

    def heldout_subset(self, ds: str, seed: int | str, heldout: str) -> list[str]:
        if parse_heldout(heldout)[0] != "subset":
            return []
        return [self.res(f"{ds}/seed{seed}/subsets/{heldout}.csv")]

    @staticmethod
    def heldout_args(heldout: str, subset: list[str]) -> str:
        """--heldout of the lastlayer command: a subset file, or the whole
        held-out role (sampled to a group ratio for heldout_sampled<r>)."""
        if subset:
            return f"--heldout {subset[0]}"
        construction, r = parse_heldout(heldout)
        if construction == "sampled":
            return f"--heldout full --heldout-sampling-ratio {r}"
        return "--heldout full"

    # ------------------------------------------------------------ settings of a job
    def device_params(self) -> dict[str, Any]:
        return {"threads": self.config["threads"], "device": self.config["device"]}

    def prepare_params(self, ds: str) -> str:
        """Generator settings of a synthetic dataset (and the token length)."""
        p = dict(self.config.get("synthetic", {}).get(ds, {}))
        p.update(_pick(self.config["erm"][ds], PREPARE_ERM_KEYS))
        return json.dumps(p, sort_keys=True)

    def pretrain_params(self, ds: str, code: str = "") -> str:
        """Pretraining of a synthetic backbone: its generator and pretrain block,
        the ERM architecture and the batch/schedule settings it shares;
        ``code``: the source hash of a cached run (empty: none)."""
        p = dict(self.config.get("synthetic", {}).get(ds, {}))
        p.update(_pick(self.config["erm"][ds], PRETRAIN_ERM_KEYS))
        p.update(self.device_params())
        if code:
            p["code"] = code
        return json.dumps(p, sort_keys=True)

    def inputs_params(self, ds: str) -> str:
        return json.dumps(_pick(self.config["erm"][ds], INPUTS_ERM_KEYS[_modality(ds)]), sort_keys=True)

    def erm_settings(self, ds: str, cell: str) -> dict:
        """ERM settings of one cell: erm.<ds>, the section-2 overrides for an
        ``_arch-`` cell, and the longer epoch count of Figure 2's runs."""
        c = ErmCell.parse(cell)
        p = {k: v for k, v in self.config["erm"][ds].items() if k != "section2"}
        if c.arch is not None:
            p.update(self.config["erm"][ds].get("section2") or {})
        if c.long or (c.pool == "combined" and c.ratio is None and c.level in (None, "group")):
            # curves over training (Figures 2 and 6): several evaluations per epoch
            p.setdefault("evals_per_epoch", int(self.config.get("curves", {}).get("evals_per_epoch", 1)))
        if c.long:
            nc1 = self.config.get("nc1", {})
            p["epochs"] = int(nc1["epochs"]) if "epochs" in nc1 else int(round(nc1.get("factor", 2) * p["epochs"]))
            p["nc1"] = True
        return p

    def erm_params(self, ds: str, cell: str, code: str = "") -> str:
        p = self.erm_settings(ds, cell)
        p.update(self.device_params())
        if code:
            p["code"] = code
        return json.dumps(p, sort_keys=True)

    def erm_epochs(self, ds: str, erm: str) -> int:
        """The standard epoch count of the ERM cell a last-layer job reads."""
        c = ErmCell.parse(erm)
        return int(self.erm_settings(ds, erm.replace("_long", "") if c.long else erm)["epochs"])

    def llr_epochs(self, ds: str) -> int:
        """LLR's standard epoch count: the section-2 ERM epochs unless
        lastlayer.llr.epochs overrides it (Figure 3 trains 10x this, Table 1
        checkpoints within it)."""
        std = int(self.erm_settings(ds, self.section2_cell(ds, "train_none"))["epochs"])
        return int(self.config.get("lastlayer", {}).get("llr", {}).get("epochs") or std)

    def margin_checkpoints(self) -> int:
        """Checkpoints of Table 1's margin runs."""
        return self.config.get("margins", {}).get("checkpoints", 10)

    def method_params(self, method: str) -> str:
        return json.dumps(self.config.get("lastlayer", {}).get(method, {}), sort_keys=True)

    # ------------------------------------------------------------ beyond the paper
    # Figure 8 and the caching ablation (rules in beyond.smk). Optional config
    # ablation_caching: {erm_cell, epochs} (schema).
    def ablation_erm_cell(self, ds: str) -> str:
        """Figure 4's ERM cell of the ablation: group ratio 0.2 (near the
        synthetic training sets' own, so that the held-out ratios lie on both
        sides of it), else the middle configured ratio."""
        if self.ablation.get("erm_cell"):
            return self.ablation["erm_cell"]
        r = "0.2" if "0.2" in self.ratios else self.ratios[len(self.ratios) // 2]
        return f"train_ratio{r}_none"

    def ablation_cells(self, ds: str) -> list[tuple[str, str, str]]:
        """(erm, method, heldout): LLR on every held-out subset (subset
        construction) after one Figure 4 ERM cell, and Figure 5's LLR / CB-LLR."""
        e = self.ablation_erm_cell(ds)
        cells = [(e, "llr", f"{HELDOUT_PREFIX['subset']}{r}") for r in self.ratios]
        cells += [("train_none", "llr", HELDOUT)]
        cells += [(f"train_class_{m}", f"cbllr_{m}", HELDOUT) for m in BAL_MODES]
        return cells

    def cached_epochs(self, ds: str, erm: str, method: str) -> int:
        """Epochs of the standard cached run: lastlayer.<method>.epochs, else the
        ERM cell's epochs (what the lastlayer rule passes)."""
        over = (self.config.get("lastlayer", {}) or {}).get(method, {}) or {}
        return int(over.get("epochs") or self.erm_settings(ds, erm)["epochs"])

    def ablation_epochs(self, ds: str, erm: str, method: str) -> int:
        ep = self.ablation.get("epochs")
        if isinstance(ep, dict):
            ep = ep.get(ds)
        if ep is None:
            ep = AB_EPOCHS.get(ds)
        return int(ep) if ep is not None else self.cached_epochs(ds, erm, method)

    def ablation_cached_file(self, ds: str, seed: int | str, erm: str, method: str, heldout: str) -> str:
        """The cached run to compare with: the standard one when the epochs
        agree, else a cached run at the ablation's epochs."""
        if self.ablation_epochs(ds, erm, method) == self.cached_epochs(ds, erm, method):
            return self.ll_file(ds, seed, erm, method, heldout)
        return self.res(f"{ds}/seed{seed}/lastlayer_matched/{erm}/{method}/{heldout}/metrics.json")

    def ablation_files(self) -> list[str]:
        out = []
        for d in self.datasets:
            for s in self.seeds:
                for c in self.ablation_cells(d):
                    out.append(self.ablation_cached_file(d, s, *c))
                    out.append(self.res(f"{d}/seed{s}/lastlayer_backbone/{c[0]}/{c[1]}/{c[2]}/metrics.json"))
        return out

    def fig8_files(self) -> list[str]:
        """Every last-layer run of Figures 4, 5 and 7, once."""
        files = [f for fig in ("fig4", "fig5", "fig7") for f in self.figure_runs(fig) if "/lastlayer/" in f]
        return list(dict.fromkeys(files))

    def ablation_hp(self, ds: str, erm: str, method: str) -> str:
        p = dict((self.config.get("lastlayer", {}) or {}).get(method, {}) or {})
        p["epochs"] = self.ablation_epochs(ds, erm, method)
        return json.dumps(p, sort_keys=True)
