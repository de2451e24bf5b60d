"""Checks before any job runs, and ``python -m llr doctor``: every configured
real dataset (paper Appendix B.1) is where its layout says, its metadata is
readable with every group (Table 2) present in every split, the images /
texts it refers to are there, and the pretrained weights the config asks for
(ImageNet ResNets, BERT; paper Appendix B.2) are on disk. A missing file is
thus reported for all datasets at once, in seconds, instead of by a job in
the middle of the run.

Each problem is one line naming the dataset, the file, the expected layout
and the official place to get the data. Nothing is written.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llr.errors import LLRError

# Files besides the marker that each layout needs, relative to the folder
# holding the marker (alternatives separated by '|').
_COMPANIONS = {
    "celeba": ("list_eval_partition.txt|list_eval_partition.csv",),
    "multinli": (
        "train.tsv|glue_data/MNLI/train.tsv|MNLI/train.tsv|../glue_data/MNLI/train.tsv|../MNLI/train.tsv"
        "|cached_train_bert-base-uncased_128_mnli",
    ),
}

# Where to get each dataset (official sources).
SOURCES = {
    "waterbirds": "get it from the group_DRO Waterbirds tarball (Sagawa et al., 2020): "
    "https://nlp.stanford.edu/data/dro/waterbird_complete95_forest2water2.tar.gz",
    "celeba": "get it from the official CelebA site (Liu et al., 2015): "
    "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (img_align_celeba.zip, "
    "Anno/list_attr_celeba.txt, Eval/list_eval_partition.txt)",
    "civilcomments": "get it from WILDS (Koh et al., 2021): "
    "python -c \"import wilds; wilds.get_dataset('civilcomments', root_dir=DATA_ROOT, download=True)\"",
    "multinli": "get metadata_random.csv from group_DRO (Sagawa et al., 2020: github.com/kohpangwei/group_DRO, "
    "dataset_metadata/multinli) and train.tsv, dev_matched.tsv, dev_mismatched.tsv from GLUE MNLI "
    "(https://gluebenchmark.com/tasks)",
}

# sha256 of the official metadata files, computed from the copies in
# ../shared/datasets (Waterbirds: metadata.csv of the group_DRO tarball;
# CelebA: the official Anno/Eval files).
KNOWN_SHA256: dict[str, dict[str, tuple[str, str]]] = {
    "waterbirds": {
        "metadata.csv": (
            "2f023b9dc371f6fbb82c7cb810ff0f03e19c54c8055a2e37517ae7bb56644362",
            "group_DRO waterbird_complete95_forest2water2.tar.gz",
        ),
    },
    "celeba": {
        "list_attr_celeba.txt": (
            "f0e5da289d5ccf75ffe8811132694922b60f2af59256ed362afa03fefba324d0",
            "official CelebA Anno/list_attr_celeba.txt",
        ),
        "list_eval_partition.txt": (
            "fc955bcb3ef8fbdf7d5640d9a8693a8431b5f2ee291a5c1449a1549e7e073fe7",
            "official CelebA Eval/list_eval_partition.txt",
        ),
    },
}

# torchvision's ImageNet checkpoints: the weights llr.models.resnet loads for each
# architecture (its IMAGENET_WEIGHTS; a test keeps the two in step) and
# torchvision's file name for them in $TORCH_HOME/hub/checkpoints.
IMAGENET_VARIANT = {"resnet18": "IMAGENET1K_V1", "resnet50": "IMAGENET1K_V1"}  # milkshake's weights
TORCHVISION_FILES = {
    ("resnet18", "IMAGENET1K_V1"): "resnet18-f37072fd.pth",
    ("resnet50", "IMAGENET1K_V1"): "resnet50-0676ba61.pth",
    ("resnet50", "IMAGENET1K_V2"): "resnet50-11ad3fa6.pth",
}
BERT_WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
BERT_TOKENIZER_FILES = ("vocab.txt", "tokenizer.json")
SAMPLE_FILES = 2000  # image files checked per dataset by the doctor
WORKFLOW_SAMPLE_FILES = 500  # ... and at workflow start-up


@dataclass
class Row:
    """One line of the doctor's report."""

    dataset: str
    check: str
    status: str  # ok, info, MISSING, MALFORMED, DIFFERS
    detail: str
    problem: bool = False


def _where(name: str) -> str:
    from llr.data.real import LAYOUTS

    return f"expected {LAYOUTS[name].expected}; {SOURCES[name]}"


def _bad(name: str, check: str, status: str, detail: str) -> Row:
    """A problem row whose detail is one line: what is wrong, the expected
    layout and where to get the data (unless the message already says)."""
    detail = " ".join(detail.split())
    if "expected" not in detail:
        detail += f"; {_where(name)}"
    elif SOURCES[name] not in detail:
        detail += f"; {SOURCES[name]}"
    return Row(name, check, status, detail, True)


def check_dataset_files(name: str, data_root: str | os.PathLike) -> list[str]:
    """Problems (one line each) with a real dataset's files; [] when fine."""
    from llr.data.real import LAYOUTS, find_dataset_dir

    if name not in LAYOUTS:
        return []
    try:
        d = find_dataset_dir(name, data_root)
    except LLRError as e:
        return [f"{e}; {SOURCES[name]}"]
    out = []
    for need in _COMPANIONS.get(name, ()):
        alts = need.split("|")
        if not any((d / a).is_file() for a in alts):
            out.append(f"{name}: {d / alts[0]} missing; {_where(name)}")
    return out


# ---------------------------------------------------------------- datasets


def _sample(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, bool]:
    """Row positions to check: all when n <= k, else the first, the last and
    a seeded random sample (k in all); and whether it is a sample."""
    if n <= k:
        return np.arange(n), False
    rng = np.random.default_rng(seed)
    pick = rng.choice(np.arange(1, n - 1), size=k - 2, replace=False)
    return np.sort(np.concatenate([[0, n - 1], pick])), True


def _count_rows(name: str, meta) -> list[Row]:
    """Group counts per split against the paper's Table 2 (information: a
    miniature or re-split copy differs)."""
    from llr.data.registry import SPLITS, get_spec
    from llr.reporting.table2 import PAPER_TABLE2

    spec = get_spec(name)
    G = spec.n_groups
    g, split = meta["g"].to_numpy(), meta["split"].to_numpy()
    rows = []
    same = True
    for sp in SPLITS:
        c = np.bincount(g[split == sp], minlength=G)
        paper = np.asarray(PAPER_TABLE2[name][sp])
        same &= bool(np.array_equal(c, paper))
        cells = "  ".join(f"{spec.group_name(k)} {c[k]} ({paper[k]})" for k in range(G))
        rows.append(Row(name, f"counts {sp}", "ok" if np.array_equal(c, paper) else "info", cells))
    rows.append(
        Row(
            name,
            "table 2",
            "ok" if same else "info",
            "group counts equal the paper's Table 2"
            if same
            else "group counts (found, in parentheses the paper's Table 2) differ from Table 2",
        )
    )
    return rows


def _image_rows(name: str, data_root, meta, sample: int) -> list[Row]:
    from llr.data.real import image_paths, load_image

    try:
        paths = image_paths(name, data_root, meta, check=0)
    except LLRError as e:
        return [_bad(name, "images", "MISSING", str(e))]
    pos, sampled = _sample(len(paths), sample)
    exists = np.fromiter((os.path.isfile(paths[i]) for i in pos), dtype=bool, count=len(pos))
    what = (
        f"a seeded sample of {len(pos)} of {len(paths)} image files (first, last and random)"
        if sampled
        else f"all {len(paths)} image files"
    )
    if not exists.all():
        first = paths[pos[np.flatnonzero(~exists)[0]]]
        hint = {
            "waterbirds": f"every img_filename of metadata.csv under {first.parent.parent}",
            "celeba": f"every image of list_attr_celeba.txt in {first.parent}",
        }[name]
        return [
            _bad(
                name,
                "images",
                "MISSING",
                f"{name}: image {first} missing ({int((~exists).sum())} missing among {what}); expected {hint}",
            )
        ]
    rows = [Row(name, "images", "ok", f"{what} present")]
    for i in pos[:3]:  # a few decode
        try:
            load_image(paths[i], 32)
        except LLRError as e:
            return rows + [_bad(name, "decode", "MALFORMED", f"{name}: {e}")]
    rows.append(Row(name, "decode", "ok", f"{min(3, len(pos))} sampled images decode"))
    return rows


def _text_rows(name: str, data_root, meta, full: bool) -> list[Row]:
    """Texts: the file and column exist (fast), or (``full``) every text of
    the metadata loads and MultiNLI's tsv rows align with metadata_random.csv."""
    from llr.data.real import (
        _MNLI_TEXT_DIRS,
        CIVILCOMMENTS_TEXT_COLUMN,
        MNLI_TSV_FILES,
        find_cached_mnli,
        find_dataset_dir,
        load_texts,
    )

    d = find_dataset_dir(name, data_root)
    if full:
        try:
            texts = load_texts(name, data_root, meta)
        except LLRError as e:
            return [_bad(name, "texts", "MALFORMED", str(e))]
        empty = sum(1 for t in texts if not (t if isinstance(t, str) else "".join(t)).strip())
        note = f"; {empty} empty" if empty else ""
        return [
            Row(
                name,
                "texts",
                "ok",
                f"all {len(texts)} texts load{note}"
                + (" (tsv rows aligned with metadata_random.csv)" if name == "multinli" else ""),
            )
        ]
    if name == "civilcomments":
        import pandas as pd

        path = d / "all_data_with_identities.csv"
        header = pd.read_csv(path, nrows=0).columns
        if CIVILCOMMENTS_TEXT_COLUMN not in header:
            return [_bad(name, "texts", "MALFORMED", f"{name}: {path}: column '{CIVILCOMMENTS_TEXT_COLUMN}' missing")]
        return [Row(name, "texts", "ok", f"column {CIVILCOMMENTS_TEXT_COLUMN} present in {path.name}")]
    missing = [fn for fn in MNLI_TSV_FILES if not any((d / r / fn).is_file() for r in _MNLI_TEXT_DIRS)]
    if missing:
        cached = find_cached_mnli(d)
        return [
            _bad(
                name,
                "texts",
                "MISSING",
                f"{name}: GLUE MNLI file {d / missing[0]} missing (also looked in {d}/glue_data/MNLI)"
                + (
                    " (group_DRO's cached features are present, but the workflow tokenizes the tsv files)"
                    if cached
                    else ""
                ),
            )
        ]
    return [Row(name, "texts", "ok", f"{', '.join(MNLI_TSV_FILES)} present")]


def _checksum_rows(name: str, d: Path) -> list[Row]:
    rows = []
    for fn, (digest, source) in KNOWN_SHA256.get(name, {}).items():
        p = d / fn
        if not p.is_file():
            continue
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        got = h.hexdigest()
        if got == digest:
            rows.append(Row(name, "sha256", "ok", f"{fn} matches the {source} ({digest[:12]}...)"))
        else:
            rows.append(
                Row(
                    name,
                    "sha256",
                    "DIFFERS",
                    f"{fn} sha256 {got[:12]}... differs from the {source} ({digest[:12]}...): "
                    f"not the official file (expected for fixtures)",
                )
            )
    return rows


def dataset_rows(
    name: str, data_root: str | os.PathLike, *, sample: int = SAMPLE_FILES, full: bool = True, checksum: bool = True
) -> list[Row]:
    """Every check of one real dataset: folder found, companion files,
    metadata readable with every group in every split (``prepare_real``),
    group counts against Table 2, sampled image files present (text:
    texts load when ``full``, else their files/columns exist), and the
    sha256 of the metadata against the official file."""
    from llr.data.real import find_dataset_dir, prepare_real

    try:
        d = find_dataset_dir(name, data_root)
    except LLRError as e:
        return [_bad(name, "found", "MISSING", str(e))]
    rows = [Row(name, "found", "ok", str(d))]
    companions = check_dataset_files(name, data_root)
    if companions:
        return rows + [Row(name, "files", "MISSING", p, True) for p in companions]
    try:
        meta = prepare_real(name, data_root)
    except LLRError as e:
        return rows + [_bad(name, "metadata", "MALFORMED", str(e))]
    except (OSError, ValueError) as e:  # unreadable file, bad encoding
        return rows + [_bad(name, "metadata", "MALFORMED", f"{name}: metadata under {d} unreadable ({e})")]
    rows.append(Row(name, "metadata", "ok", f"{len(meta)} rows readable"))
    rows.append(Row(name, "groups", "ok", "every group non-empty in every split"))
    rows += _count_rows(name, meta)
    from llr.data.registry import get_spec

    if get_spec(name).modality == "image":
        rows += _image_rows(name, data_root, meta, sample)
    else:
        rows += _text_rows(name, data_root, meta, full)
    if checksum:
        rows += _checksum_rows(name, d)
    return rows


# ---------------------------------------------------------------- weights


def torch_hub_dir() -> Path:
    """torch.hub.get_dir() without importing torch: $TORCH_HOME/hub, else
    $XDG_CACHE_HOME/torch/hub, else ~/.cache/torch/hub."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub"


def _settings(ds: str, config: dict) -> list[tuple[str, dict]]:
    """(label, ERM settings) of the standard cells and, when a section-2
    figure/table is requested, of section 2's cells (base + overrides)."""
    erm = dict((config.get("erm") or {}).get(ds) or {})
    over = erm.pop("section2", None) or {}
    out = [(f"erm.{ds}", erm)]
    wants2 = set(config.get("figures", ["fig2", "fig3"])) & {"fig2", "fig3"} or "table1" in set(
        config.get("tables", ["table1"])
    )
    if over and wants2:
        out.append((f"erm.{ds}.section2", {**erm, **over}))
    return out


def _imagenet_row(ds: str, label: str, arch: str) -> Row:
    variant = IMAGENET_VARIANT.get(arch)
    if variant is None:
        return Row(ds, "weights", "info", f"{label}: arch {arch}: no ImageNet weights to check")
    fn = TORCHVISION_FILES[(arch, variant)]
    path = torch_hub_dir() / "checkpoints" / fn
    if path.is_file():
        return Row(ds, "weights", "ok", f"{label}: {arch} ImageNet weights {variant} at {path}")
    return Row(
        ds,
        "weights",
        "MISSING",
        f"{ds}: {label}.imagenet is true but the {arch} ImageNet weights ({variant}) {path} are missing; "
        f"expected torchvision's checkpoint in $TORCH_HOME/hub/checkpoints (TORCH_HOME="
        f"{os.environ.get('TORCH_HOME', 'unset')}); get it from https://download.pytorch.org/models/{fn} "
        f"(torchvision {arch} weights={variant}) or set imagenet: false",
        True,
    )


def _folder_missing(d: Path) -> list[str]:
    missing = [] if (d / "config.json").is_file() else ["config.json"]
    if not any((d / f).is_file() for f in BERT_TOKENIZER_FILES):
        missing.append("vocab.txt")
    if not any((d / f).is_file() for f in BERT_WEIGHT_FILES):
        missing.append("weights (" + " or ".join(BERT_WEIGHT_FILES[:2]) + ")")
    return missing


def _hub_missing(repo: str) -> list[str] | None:
    """Files of a hub model missing from the local Hugging Face cache; None
    when huggingface_hub is unavailable."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None

    def cached(fn: str) -> bool:
        try:
            return isinstance(try_to_load_from_cache(repo, fn), str)
        except Exception:  # noqa: BLE001 - an invalid repo id is a missing model
            return False

    missing = [] if cached("config.json") else ["config.json"]
    if not any(cached(f) for f in BERT_TOKENIZER_FILES):
        missing.append("vocab.txt")
    if not any(cached(f) for f in BERT_WEIGHT_FILES):
        missing.append("weights (" + " or ".join(BERT_WEIGHT_FILES[:2]) + ")")
    return missing


def _bert_row(ds: str, label: str, mp: str, tokenizer_only: bool = False) -> Row:
    what = "tokenizer" if tokenizer_only else "model"
    p = Path(mp).expanduser()
    local = mp.startswith((".", "/", "~")) or p.exists()
    if local:
        if p.is_file():
            return Row(ds, "bert", "ok", f"{label}: {mp} is a weights file")
        if not p.is_dir():
            return Row(
                ds,
                "bert",
                "MISSING",
                f"{ds}: {label}.model_path {mp} is not a folder; expected a local transformers folder "
                f"(config.json, vocab.txt, weights) or a hub name such as bert-base-uncased",
                True,
            )
        missing = _folder_missing(p)
        if tokenizer_only:
            missing = [m for m in missing if m == "vocab.txt"]
        if missing:
            return Row(
                ds,
                "bert",
                "MISSING",
                f"{ds}: {label}.model_path folder {p} lacks {', '.join(missing)}; expected a complete "
                f"transformers folder (config.json, vocab.txt, model.safetensors or pytorch_model.bin), "
                f"e.g. save_pretrained of the hub model",
                True,
            )
        return Row(ds, "bert", "ok", f"{label}: {what} folder {p} complete")
    missing = _hub_missing(mp)
    if missing is None:
        return Row(ds, "bert", "info", f"{label}: {mp}: huggingface_hub unavailable, cache not checked")
    if tokenizer_only:
        missing = [m for m in missing if m == "vocab.txt"]
    if missing:
        from huggingface_hub.constants import HF_HUB_CACHE

        return Row(
            ds,
            "bert",
            "MISSING",
            f"{ds}: {label}: {what} {mp!r} not in the Hugging Face cache {HF_HUB_CACHE} (lacks "
            f"{', '.join(missing)}); expected it cached for offline use (huggingface-cli download {mp}) "
            f"or model_path set to a local folder (config.json, vocab.txt, weights)",
            True,
        )
    return Row(ds, "bert", "ok", f"{label}: {what} {mp!r} in the Hugging Face cache")


def model_rows(ds: str, config: dict) -> list[Row]:
    """Pretrained weights the config asks for: torchvision ImageNet
    checkpoints when ``imagenet: true``; the BERT folder (or hub cache entry)
    of ``model_path``; for a real text dataset without model_path, the
    tokenizer of its arch."""
    from llr.data.registry import DATASETS

    rows: list[Row] = []
    spec = DATASETS.get(ds)
    for label, s in _settings(ds, config):
        arch = str(s.get("arch", ""))
        if s.get("imagenet") and arch.startswith("resnet"):
            rows.append(_imagenet_row(ds, label, arch))
        mp = s.get("model_path")
        if mp:
            rows.append(_bert_row(ds, label, str(mp)))
        elif spec is not None and spec.modality == "text" and not spec.synthetic and label == f"erm.{ds}" and arch:
            rows.append(_bert_row(ds, label, arch, tokenizer_only=True))
    return rows


# ---------------------------------------------------------------- entry points


def doctor_rows(
    datasets,
    data_root: str | os.PathLike,
    config: dict,
    *,
    sample: int = SAMPLE_FILES,
    full: bool = True,
    checksum: bool = True,
) -> list[Row]:
    """Every check of every configured dataset (real datasets: files; all:
    weights)."""
    from llr.data.real import LAYOUTS
    from llr.data.registry import DATASETS

    rows: list[Row] = []
    for ds in datasets:
        if ds in LAYOUTS:
            rows += dataset_rows(ds, data_root, sample=sample, full=full, checksum=checksum)
        elif ds in DATASETS and DATASETS[ds].synthetic:
            rows.append(Row(ds, "data", "ok", "synthetic: generated by the package, no files needed"))
        rows += model_rows(ds, config)
    return rows


def check_workflow_data(datasets: list[str], data_root: str | os.PathLike, config: dict) -> list[str]:
    """Problems (one line each) of every configured real dataset and
    pretrained model, fast: metadata readable with every group in every
    split, a sample of the image files present, text files/columns present,
    weights present. [] when all is well."""
    rows = doctor_rows(datasets, data_root, config, sample=WORKFLOW_SAMPLE_FILES, full=False, checksum=False)
    return [r.detail for r in rows if r.problem]


def apply_strict(rows: list[Row]) -> list[Row]:
    """``doctor --strict``: a metadata sha256 or group counts that differ
    from the official file / Table 2 become problems (in place)."""
    for r in rows:
        if r.check in ("sha256", "table 2") and r.status in ("DIFFERS", "info"):
            r.problem = True
            if not r.detail.startswith(f"{r.dataset}: "):
                r.detail = f"{r.dataset}: {r.detail}"
    return rows


def format_report(rows: list[Row], data_root: str | os.PathLike) -> str:
    """The doctor's table: one block per dataset, one line per check."""
    out = [f"data root: {Path(data_root).expanduser()}"]
    seen: list[str] = []
    for r in rows:
        if r.dataset not in seen:
            seen.append(r.dataset)
    for ds in seen:
        out.append("")
        out.append(ds)
        block = [r for r in rows if r.dataset == ds]
        w = max(len(r.check) for r in block)
        for r in block:
            out.append(f"  {r.check:<{w}}  {r.status:<9}  {r.detail}")
    return "\n".join(out)
