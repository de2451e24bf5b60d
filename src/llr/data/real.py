"""Real datasets: find their files, prepare the metadata table, load inputs
(paper Appendix B.1; docs/design.md, "Path contract" and "Adding a dataset").

``prepare_real`` reads metadata only (no images, no text), so Table 2 and
every split/subset node need nothing but the small label files. The loaders
(``image_paths``, ``build_image_cache``, ``load_texts``,
``load_cached_mnli_tokens``) serve training and are aligned with the
standardized table through its ``idx`` column (or ``source_row`` where rows
of the source file were dropped).

Every user-facing failure is an ``LLRError`` whose message is one line naming
the dataset, the file and the expected layout.
"""

from __future__ import annotations

import csv
import os
import pickle
import types
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from llr.data.registry import SPLITS, get_spec, standardize
from llr.errors import LLRError
from llr.io import atomic_path, write_csv
from llr.runtime.progress import progress

SPLIT_CODES = {0: "train", 1: "val", 2: "test"}
CIVILCOMMENTS_IDENTITIES = ("male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black", "white")
CIVILCOMMENTS_TEXT_COLUMN = "comment_text"
MNLI_LABELS = {"contradiction": 0, "entailment": 1, "neutral": 2}
MNLI_TSV_FILES = ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv")
MNLI_CACHED_FILES = (
    "cached_train_bert-base-uncased_128_mnli",
    "cached_dev_bert-base-uncased_128_mnli",
    "cached_dev_bert-base-uncased_128_mnli-mm",
)
# Folders where group_DRO / GLUE keep the MNLI text and its cached tokens,
# relative to the folder holding metadata_random.csv.
_MNLI_TEXT_DIRS = (".", "glue_data/MNLI", "MNLI", "../glue_data/MNLI", "../MNLI")


@dataclass(frozen=True)
class Layout:
    """Where a dataset's files live under ``data_root`` (docs/design.md, "Adding a dataset")."""

    markers: tuple[str, ...]  # any one of these files identifies the folder
    subdirs: tuple[str, ...]  # usual sub-folders of data_root/<name>/
    expected: str  # one-line description for error messages


LAYOUTS: dict[str, Layout] = {
    "waterbirds": Layout(
        ("metadata.csv",),
        ("waterbird_complete95_forest2water2", "waterbirds_v1.0"),
        "waterbirds/[waterbird_complete95_forest2water2/]metadata.csv with columns "
        "img_id,img_filename,y,split,place,place_filename (split 0/1/2) beside the image folders",
    ),
    "celeba": Layout(
        ("list_attr_celeba.txt", "list_attr_celeba.csv"),
        ("celeba", "celebA_v1.0"),
        "celeba/list_attr_celeba.txt (or .csv) and list_eval_partition.txt (or .csv), "
        "images in celeba/img_align_celeba/",
    ),
    "civilcomments": Layout(
        ("all_data_with_identities.csv",),
        ("civilcomments_v1.0",),
        "civilcomments/[civilcomments_v1.0/]all_data_with_identities.csv (WILDS) with columns "
        "comment_text,split,toxicity," + ",".join(CIVILCOMMENTS_IDENTITIES),
    ),
    "multinli": Layout(
        ("metadata_random.csv",),
        ("data",),
        "multinli/metadata_random.csv (gold_label,sentence2_has_negation,split 0/1/2) with the "
        "GLUE MNLI train.tsv, dev_matched.tsv, dev_mismatched.tsv (or group_DRO's cached_*_mnli* files)",
    ),
}


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _layout(name: str) -> Layout:
    if name not in LAYOUTS:
        get_spec(name)  # unknown names get the registry's message
        raise LLRError(f"{name}: not a real dataset; real datasets are {sorted(LAYOUTS)}")
    return LAYOUTS[name]


def find_dataset_dir(name: str, data_root: str | os.PathLike) -> Path:
    """The folder holding ``name``'s metadata: ``data_root/<name>/``, one of its
    usual sub-folders, or ``data_root`` itself when it points at the folder."""
    layout = _layout(name)
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise LLRError(f"{name}: data root {root} does not exist; expected {root}/{layout.expected}")
    candidates = [root / name / sub for sub in layout.subdirs] + [root / name]
    candidates += [root / sub for sub in layout.subdirs] + [root]
    for cand in candidates:
        if any((cand / m).is_file() for m in layout.markers):
            return cand
    where = root / name if (root / name).is_dir() else root
    raise LLRError(f"{name}: no {' or '.join(layout.markers)} found under {where}; expected {root}/{layout.expected}")


# ---------------------------------------------------------------- reading


def _read_csv(name: str, path: Path, expected: str, **kw) -> pd.DataFrame:
    """pandas.read_csv with one-line errors naming dataset, file and layout."""
    if not path.is_file():
        raise LLRError(f"{name}: file {path} missing; expected {expected}")
    try:
        return pd.read_csv(path, **kw)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise LLRError(f"{name}: {path}: cannot parse ({_one_line(e)}); expected {expected}") from None


def _require(name: str, path: Path, columns, needed, expected: str) -> None:
    missing = [c for c in needed if c not in columns]
    if missing:
        raise LLRError(f"{name}: {path}: column(s) {missing} missing; expected {expected}")


def _map_codes(name: str, path: Path, column: str, values: pd.Series, mapping: dict) -> np.ndarray:
    """Map integer codes (e.g. split 0/1/2) to values, rejecting unknown codes."""
    num = pd.to_numeric(values, errors="coerce")
    out = num.map(mapping)
    bad = out.isna().to_numpy()
    if bad.any():
        raise LLRError(
            f"{name}: {path}: {column} value {values[bad].iloc[0]!r} not in {'/'.join(str(k) for k in mapping)}"
        )
    return out.to_numpy(dtype=object)


def _binary_attribute(name: str, path: Path, column: str, values: pd.Series) -> np.ndarray:
    """CelebA attribute -1/1 (0 accepted as negative) -> 0/1."""
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isin(v, (-1.0, 0.0, 1.0))
    if bad.any():
        raise LLRError(f"{name}: {path}: label {column}={values[bad].iloc[0]!r} out of range, expected -1 or 1")
    return (v == 1.0).astype(np.int64)


def _prepare_waterbirds(d: Path) -> tuple[pd.DataFrame, Path]:
    exp = LAYOUTS["waterbirds"].expected
    path = d / "metadata.csv"
    raw = _read_csv("waterbirds", path, exp)
    _require("waterbirds", path, raw.columns, ("img_filename", "y", "split", "place"), exp)
    df = pd.DataFrame(
        {
            "split": _map_codes("waterbirds", path, "split", raw["split"], SPLIT_CODES),
            "y": raw["y"].to_numpy(),
            "s": raw["place"].to_numpy(),
        }
    )
    for col in ("img_id", "img_filename", "place_filename"):
        if col in raw.columns:
            df[col] = raw[col].to_numpy()
    return df, path


def _read_celeba_attrs(d: Path) -> tuple[pd.DataFrame, Path]:
    """(image_id, Blond_Hair, Male) from list_attr_celeba.txt or .csv."""
    exp = LAYOUTS["celeba"].expected
    need = ("Blond_Hair", "Male")
    txt, csv_path = d / "list_attr_celeba.txt", d / "list_attr_celeba.csv"
    if txt.is_file():
        with open(txt, encoding="utf-8", errors="replace") as f:
            first, second = f.readline(), f.readline()
        try:
            n_rows = int(first.strip())
        except ValueError:
            raise LLRError(
                f"celeba: {txt}: first line {first.strip()[:40]!r} is not the row count; "
                f"expected a row count, a line of 40 attribute names, then 'filename v1 ... v40'"
            ) from None
        names = second.split()
        _require("celeba", txt, names, need, "second line of 40 attribute names")
        attrs = _read_csv(
            "celeba",
            txt,
            exp,
            sep=r"\s+",
            skiprows=2,
            header=None,
            names=["image_id", *names],
            usecols=["image_id", *need],
        )
        if len(attrs) != n_rows:
            raise LLRError(
                f"celeba: {txt}: {len(attrs)} rows but the first line says {n_rows}; "
                f"expected a complete list_attr_celeba.txt"
            )
        return attrs, txt
    attrs = _read_csv("celeba", csv_path, exp)
    _require("celeba", csv_path, attrs.columns, ("image_id", *need), "image_id plus the 40 attribute columns")
    return attrs[["image_id", *need]], csv_path


def _read_celeba_partition(d: Path) -> tuple[pd.DataFrame, Path]:
    exp = LAYOUTS["celeba"].expected
    txt, csv_path = d / "list_eval_partition.txt", d / "list_eval_partition.csv"
    if txt.is_file():
        part = _read_csv("celeba", txt, exp, sep=r"\s+", header=None, names=["image_id", "partition"])
        return part, txt
    if not csv_path.is_file():
        raise LLRError(f"celeba: file {txt} missing (nor {csv_path.name}); expected {exp}")
    part = _read_csv("celeba", csv_path, exp)
    _require("celeba", csv_path, part.columns, ("image_id", "partition"), "columns image_id,partition")
    return part, csv_path


def _prepare_celeba(d: Path) -> tuple[pd.DataFrame, str]:
    attrs, apath = _read_celeba_attrs(d)
    part, ppath = _read_celeba_partition(d)
    ids = attrs["image_id"].astype(str).to_numpy()
    pids = part["image_id"].astype(str).to_numpy()
    if len(ids) == len(pids) and np.array_equal(ids, pids):
        codes = part["partition"]
    else:  # align by file name
        if pd.Index(pids).has_duplicates:
            raise LLRError(f"celeba: {ppath}: duplicate image ids; expected one line per image")
        codes = pd.Series(part["partition"].to_numpy(), index=pids).reindex(ids)
        if codes.isna().any():
            missing = ids[codes.isna().to_numpy()][0]
            raise LLRError(
                f"celeba: {ppath}: no partition for image {missing!r} listed in {apath.name}; "
                f"expected one line 'filename 0/1/2' per image"
            )
        codes = codes.reset_index(drop=True)
    df = pd.DataFrame(
        {
            "split": _map_codes("celeba", ppath, "partition", codes, SPLIT_CODES),
            "y": _binary_attribute("celeba", apath, "Blond_Hair", attrs["Blond_Hair"]),
            "s": _binary_attribute("celeba", apath, "Male", attrs["Male"]),
            "image_id": ids,
        }
    )
    return df, f"{apath} (splits from {ppath.name})"


def _prepare_civilcomments(d: Path) -> tuple[pd.DataFrame, Path]:
    exp = LAYOUTS["civilcomments"].expected
    path = d / "all_data_with_identities.csv"
    header = _read_csv("civilcomments", path, exp, nrows=0).columns
    need = ("split", "toxicity", *CIVILCOMMENTS_IDENTITIES)
    _require("civilcomments", path, header, need, exp)
    cols = [*need, *(["id"] if "id" in header else [])]
    raw = _read_csv("civilcomments", path, exp, usecols=cols, dtype={"split": str})
    keep = raw["split"].isin(SPLITS).to_numpy()  # drop rows outside train/val/test
    raw = raw[keep]
    tox = pd.to_numeric(raw["toxicity"], errors="coerce")
    if tox.isna().any():
        bad = raw["toxicity"][tox.isna()].iloc[0]
        raise LLRError(f"civilcomments: {path}: toxicity value {bad!r} is not a number; expected scores in [0, 1]")
    ident = raw[list(CIVILCOMMENTS_IDENTITIES)].apply(pd.to_numeric, errors="coerce")
    df = pd.DataFrame(
        {
            "split": raw["split"].to_numpy(dtype=object),
            "y": (tox.to_numpy() >= 0.5).astype(np.int64),
            "s": (ident.to_numpy() >= 0.5).any(axis=1).astype(np.int64),  # NaN counts as absent
        }
    )
    if "id" in raw.columns:
        df["id"] = raw["id"].to_numpy()
    df["source_row"] = np.flatnonzero(keep)  # row of the source file, for load_texts
    return df, path


def _prepare_multinli(d: Path) -> tuple[pd.DataFrame, Path]:
    exp = LAYOUTS["multinli"].expected
    path = d / "metadata_random.csv"
    raw = _read_csv("multinli", path, exp)
    _require("multinli", path, raw.columns, ("gold_label", "sentence2_has_negation", "split"), exp)
    neg = raw["sentence2_has_negation"]
    if neg.dtype == bool:
        neg = neg.astype(np.int64)
    df = pd.DataFrame(
        {
            "split": _map_codes("multinli", path, "split", raw["split"], SPLIT_CODES),
            "y": raw["gold_label"].to_numpy(),
            "s": neg.to_numpy(),
        }
    )
    return df, path


_PREPARERS = {
    "waterbirds": _prepare_waterbirds,
    "celeba": _prepare_celeba,
    "civilcomments": _prepare_civilcomments,
    "multinli": _prepare_multinli,
}


def prepare_real(name: str, data_root: str | os.PathLike) -> pd.DataFrame:
    """The standardized metadata table of a real dataset (docs/design.md, "Path contract"):
    columns ``idx,split,y,s,g`` plus source columns, ``idx`` = row order of the
    source file (CivilComments: rows outside train/val/test are dropped and
    ``source_row`` keeps their position in the file)."""
    d = find_dataset_dir(name, data_root)
    df, source = _PREPARERS[name](d)
    return standardize(df, get_spec(name), str(source))


def prepare(name: str, data_root: str | os.PathLike, out_csv: str | os.PathLike) -> pd.DataFrame:
    """``prepare_real`` and an atomic write of ``results/{dataset}/metadata.csv``;
    nothing is written on error."""
    df = prepare_real(name, data_root)
    write_csv(out_csv, df)
    return df


# ---------------------------------------------------------------- images


def _celeba_image_dir(d: Path) -> Path:
    for cand in (d / "img_align_celeba" / "img_align_celeba", d / "img_align_celeba"):
        if cand.is_dir() and not (cand / "img_align_celeba").is_dir():
            return cand
    raise LLRError(
        f"celeba: image folder {d / 'img_align_celeba'} missing; "
        f"expected the aligned JPEGs in {d}/img_align_celeba/000001.jpg ..."
    )


def image_paths(name: str, data_root: str | os.PathLike, meta: pd.DataFrame, check: int = 5) -> list[Path]:
    """Image file of every row of ``meta`` (in row order); the first ``check``
    are checked to exist."""
    d = find_dataset_dir(name, data_root)
    if name == "waterbirds":
        _require(name, Path("metadata table"), meta.columns, ("img_filename",), "source column img_filename")
        base, files = d, meta["img_filename"].astype(str).tolist()
        hint = f"images at {d}/<img_filename> (e.g. 001.Black_footed_Albatross/...jpg)"
    elif name == "celeba":
        _require(name, Path("metadata table"), meta.columns, ("image_id",), "source column image_id")
        base, files = _celeba_image_dir(d), meta["image_id"].astype(str).tolist()
        hint = f"images at {base}/<image_id>"
    else:
        raise LLRError(f"{name}: not an image dataset; image datasets are ['celeba', 'waterbirds']")
    paths = [base / f for f in files]
    for p in paths[:check]:
        if not p.is_file():
            raise LLRError(f"{name}: image {p} missing; expected {hint}")
    return paths


def load_image(path: str | os.PathLike, size: int = 256) -> np.ndarray:
    """Decode an image, resize its shorter side to ``size`` (bilinear, as
    torchvision's Resize(size) on PIL images) and center-crop ``size`` x ``size``;
    returns uint8 (3, size, size)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(size * long / short)
            nw, nh = (size, new_long) if w <= h else (new_long, size)
            if (nw, nh) != (w, h):
                im = im.resize((nw, nh), Image.BILINEAR)
            top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
            im = im.crop((left, top, left + size, top + size))
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise LLRError(f"image {path}: cannot decode ({_one_line(e)}); expected an RGB/grayscale image file") from None
    return arr.transpose(2, 0, 1)


def build_image_cache(paths: list, out_npy: str | os.PathLike, size: int = 256, workers: int = 1) -> Path:
    """Decode every image once into a uint8 array (N, 3, size, size) written
    with ``np.lib.format.open_memmap`` to a temporary file, renamed onto
    ``out_npy`` only when complete. The train transform (RandomResizedCrop(224,
    scale 0.7-1) + flip) and the eval CenterCrop(224) are applied to this cache
    later (docs/design.md, "ERM"). Note the size: CelebA at 256 px is ~40 GB."""
    paths = list(paths)
    if not paths:
        raise LLRError(f"image cache {out_npy}: no images given")
    out = Path(out_npy)
    with atomic_path(out) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), 3, size, size))

        def fill(i: int) -> None:
            arr[i] = load_image(paths[i], size)

        desc = f"image cache {out.parent.name}/{out.name}"
        if workers > 1:
            with ThreadPoolExecutor(workers) as ex:
                for _ in progress(
                    ex.map(fill, range(len(paths)), chunksize=64), desc=desc, total=len(paths), unit="img"
                ):
                    pass
        else:
            for i in progress(range(len(paths)), desc=desc, unit="img"):
                fill(i)
        arr.flush()
        arr = None  # closes the memmap before the rename
    return out


# ---------------------------------------------------------------- text


def _find_in(d: Path, rel_dirs, filename: str) -> Path | None:
    for rel in rel_dirs:
        p = d / rel / filename
        if p.is_file():
            return p
    return None


def _rows(meta: pd.DataFrame, n_source: int, name: str, source: Path) -> np.ndarray:
    col = "source_row" if "source_row" in meta.columns else "idx"
    rows = meta[col].to_numpy(dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= n_source):
        raise LLRError(
            f"{name}: {source}: has {n_source} rows but the metadata table refers to row "
            f"{int(rows.max())}; expected the file the metadata was prepared from"
        )
    return rows


def _mnli_metadata_labels(d: Path) -> np.ndarray:
    path = d / "metadata_random.csv"
    raw = _read_csv("multinli", path, LAYOUTS["multinli"].expected)
    _require("multinli", path, raw.columns, ("gold_label",), LAYOUTS["multinli"].expected)
    return pd.to_numeric(raw["gold_label"], errors="coerce").to_numpy()


def _check_mnli_alignment(labels: np.ndarray, meta_labels: np.ndarray, what: str) -> None:
    if len(labels) != len(meta_labels):
        raise LLRError(
            f"multinli: {what}: {len(labels)} rows but metadata_random.csv has {len(meta_labels)}; "
            f"expected {' + '.join(MNLI_TSV_FILES)} matching its rows one to one"
        )
    bad = np.flatnonzero(labels != meta_labels)
    if len(bad):
        raise LLRError(
            f"multinli: {what}: label of row {int(bad[0])} differs from metadata_random.csv "
            f"({len(bad)} rows differ); expected rows aligned with metadata_random.csv"
        )


def _read_mnli_tsv(path: Path) -> pd.DataFrame:
    exp = "GLUE MNLI tsv with columns sentence1,sentence2,gold_label"
    df = _read_csv(
        "multinli",
        path,
        exp,
        sep="\t",
        quoting=csv.QUOTE_NONE,
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        encoding="utf-8",
    )
    _require("multinli", path, df.columns, ("sentence1", "sentence2", "gold_label"), exp)
    return df[["sentence1", "sentence2", "gold_label"]]


def load_texts(name: str, data_root: str | os.PathLike, meta: pd.DataFrame) -> list:
    """Text input of every row of ``meta``: CivilComments ``comment_text``
    strings; MultiNLI (premise, hypothesis) pairs from the GLUE MNLI files
    train.tsv, dev_matched.tsv, dev_mismatched.tsv concatenated in that order,
    which align one to one with metadata_random.csv (checked by length and
    gold labels)."""
    d = find_dataset_dir(name, data_root)
    if name == "civilcomments":
        path = d / "all_data_with_identities.csv"
        exp = LAYOUTS[name].expected
        header = _read_csv(name, path, exp, nrows=0).columns
        _require(name, path, header, (CIVILCOMMENTS_TEXT_COLUMN,), exp)
        text = _read_csv(name, path, exp, usecols=[CIVILCOMMENTS_TEXT_COLUMN], dtype=str, keep_default_na=False)[
            CIVILCOMMENTS_TEXT_COLUMN
        ].to_numpy(dtype=object)
        return text[_rows(meta, len(text), name, path)].tolist()
    if name == "multinli":
        parts = []
        for fn in MNLI_TSV_FILES:
            p = _find_in(d, _MNLI_TEXT_DIRS, fn)
            if p is None:
                raise LLRError(
                    f"multinli: file {d / 'glue_data' / 'MNLI' / fn} missing (also looked in {d}); "
                    f"expected the GLUE MNLI {', '.join(MNLI_TSV_FILES)}"
                )
            parts.append(_read_mnli_tsv(p))
        tsv = pd.concat(parts, ignore_index=True)
        labels = tsv["gold_label"].map(MNLI_LABELS).to_numpy(dtype=np.float64)
        _check_mnli_alignment(labels, _mnli_metadata_labels(d), f"{p.parent}/{{{','.join(MNLI_TSV_FILES)}}}")
        rows = _rows(meta, len(tsv), name, p.parent)
        return list(
            zip(
                tsv["sentence1"].to_numpy(dtype=object)[rows].tolist(),
                tsv["sentence2"].to_numpy(dtype=object)[rows].tolist(),
            )
        )
    raise LLRError(f"{name}: not a text dataset; text datasets are ['civilcomments', 'multinli']")


class _Record:
    """Stand-in for group_DRO's ``utils_glue.InputFeatures`` when unpickling."""


class _GlueUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if name == "InputFeatures":
            return _Record
        return super().find_class(module, name)


_glue_pickle = types.ModuleType("llr_glue_pickle")
_glue_pickle.Unpickler = _GlueUnpickler
_glue_pickle.load = pickle.load


def find_cached_mnli(dataset_dir: str | os.PathLike) -> list[Path] | None:
    """The three group_DRO cached-feature files, or None if any is absent."""
    d = Path(dataset_dir)
    found = [_find_in(d, _MNLI_TEXT_DIRS, fn) for fn in MNLI_CACHED_FILES]
    return None if any(p is None for p in found) else found


def load_cached_mnli_tokens(dataset_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Token arrays (int64, (N, 128)) ``input_ids``, ``attention_mask``,
    ``token_type_ids`` from group_DRO's cached BERT features
    (``cached_train_bert-base-uncased_128_mnli``, ``cached_dev_..._mnli``,
    ``cached_dev_..._mnli-mm``, concatenated in that order = the rows of
    metadata_random.csv; checked against its gold labels when present).

    These files are torch-pickled lists of ``utils_glue.InputFeatures``, so
    they need ``torch.load(..., weights_only=False)``: only load files you
    trust. ``InputFeatures`` is mapped to a plain record class, so the
    ``utils_glue`` module is not needed.
    """
    import torch

    d = Path(dataset_dir)
    files = find_cached_mnli(d)
    if files is None:
        raise LLRError(
            f"multinli: cached features missing under {d}; expected {', '.join(MNLI_CACHED_FILES)} "
            f"in {d} or {d / 'glue_data' / 'MNLI'}"
        )
    feats: list = []
    for p in files:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=False, pickle_module=_glue_pickle)
        except Exception as e:  # noqa: BLE001 - any unpickling failure is bad input
            raise LLRError(
                f"multinli: {p}: cannot load ({_one_line(e)[:200]}); expected a torch-saved list of InputFeatures"
            ) from None
        if not isinstance(obj, list) or not all(hasattr(f, "input_ids") for f in obj[:1]):
            raise LLRError(f"multinli: {p}: not a list of InputFeatures (input_ids, input_mask, segment_ids, label_id)")
        feats += obj
    try:
        out = {
            "input_ids": np.asarray([f.input_ids for f in feats], dtype=np.int64),
            "attention_mask": np.asarray([f.input_mask for f in feats], dtype=np.int64),
            "token_type_ids": np.asarray([f.segment_ids for f in feats], dtype=np.int64),
        }
        labels = np.asarray([f.label_id for f in feats], dtype=np.float64)
    except (AttributeError, ValueError) as e:
        raise LLRError(
            f"multinli: {files[0].parent}: malformed InputFeatures ({_one_line(e)[:200]}); "
            f"expected input_ids, input_mask, segment_ids of equal length and label_id"
        ) from None
    meta_path = _find_in(d, (".", "..", "../data"), "metadata_random.csv")
    if meta_path is not None:
        _check_mnli_alignment(labels, _mnli_metadata_labels(meta_path.parent), f"{files[0].parent}/cached_*_mnli*")
    return out
