"""Dataset registry and the standardized metadata table (docs/design.md, "Groups" and "Adding a dataset").

Every dataset, real or synthetic, is reduced by the ``prepare`` stage to one
table ``results/{dataset}/metadata.csv`` with columns ``idx,split,y,s,g`` plus
its source columns, so that everything downstream is dataset-agnostic.
``split`` is one of ``train``, ``val``, ``test``; groups are
``g = y * n_spurious + s``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from llr.errors import LLRError

SPLITS = ("train", "val", "test")
META_COLUMNS = ("idx", "split", "y", "s", "g")


@dataclass(frozen=True)
class DatasetSpec:
    """What the science needs to know about a dataset."""

    name: str
    modality: str  # "image" or "text"
    class_names: tuple[str, ...]
    spurious_names: tuple[str, ...]
    minority_groups: tuple[int, ...]  # docs/design.md, "Group-ratio subsets"
    balanced_classes: tuple[int, ...] = ()  # classes kept at m and m
    heldout_from: str = "val"  # "train": seeded 20% of train; "val": half of val
    weighted_mean: bool = False  # mean accuracy weighted by train group shares
    synthetic: bool = False
    defaults: dict = field(default_factory=dict)  # model/training defaults

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_spurious(self) -> int:
        return len(self.spurious_names)

    @property
    def n_groups(self) -> int:
        return self.n_classes * self.n_spurious

    def group_name(self, g: int) -> str:
        y, s = divmod(int(g), self.n_spurious)
        return f"{self.class_names[y]}/{self.spurious_names[s]}"


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    DATASETS[spec.name] = spec
    return spec


register(
    DatasetSpec(
        name="waterbirds",
        modality="image",
        class_names=("landbird", "waterbird"),
        spurious_names=("land", "water"),
        minority_groups=(1, 2),
        heldout_from="train",
        weighted_mean=True,
        defaults={"arch": "resnet50", "epochs": 100, "schedule": "cosine"},
    )
)
register(
    DatasetSpec(
        name="celeba",
        modality="image",
        class_names=("non-blond", "blond"),
        spurious_names=("female", "male"),
        minority_groups=(3,),
        balanced_classes=(0,),
        heldout_from="val",
        defaults={"arch": "resnet50", "epochs": 20, "schedule": "cosine"},
    )
)
register(
    DatasetSpec(
        name="civilcomments",
        modality="text",
        class_names=("non-toxic", "toxic"),
        spurious_names=("no-identity", "identity"),
        minority_groups=(1, 2),
        heldout_from="val",
        defaults={"arch": "bert-base-uncased", "epochs": 20, "schedule": "linear", "max_length": 220},
    )
)
register(
    DatasetSpec(
        name="multinli",
        modality="text",
        class_names=("contradiction", "entailment", "neutral"),
        spurious_names=("no-negation", "negation"),
        minority_groups=(1, 3, 5),
        heldout_from="val",
        defaults={"arch": "bert-base-uncased", "epochs": 20, "schedule": "linear", "max_length": 128},
    )
)
# Embedded synthetic stand-ins, one per real dataset and mirroring its spec
# (llr.data.synthetic_images, llr.data.synthetic_text).
register(
    DatasetSpec(
        name="synth_waterbirds",
        modality="image",
        class_names=("landbird", "waterbird"),
        spurious_names=("land", "water"),
        minority_groups=(1, 2),
        heldout_from="train",
        weighted_mean=True,
        synthetic=True,
        defaults={"arch": "resnet18-small", "schedule": "cosine"},
    )
)
register(
    DatasetSpec(
        name="synth_celeba",
        modality="image",
        class_names=("non-blond", "blond"),
        spurious_names=("female", "male"),
        minority_groups=(3,),
        balanced_classes=(0,),
        heldout_from="val",
        synthetic=True,
        defaults={"arch": "resnet18-small", "schedule": "cosine"},
    )
)
register(
    DatasetSpec(
        name="synth_civilcomments",
        modality="text",
        class_names=("non-toxic", "toxic"),
        spurious_names=("no-identity", "identity"),
        minority_groups=(1, 2),
        heldout_from="val",
        synthetic=True,
        defaults={"arch": "bert-tiny-synth", "schedule": "linear"},
    )
)
register(
    DatasetSpec(
        name="synth_multinli",
        modality="text",
        class_names=("contradiction", "entailment", "neutral"),
        spurious_names=("no-negation", "negation"),
        minority_groups=(1, 3, 5),
        heldout_from="val",
        synthetic=True,
        defaults={"arch": "bert-tiny-synth", "schedule": "linear"},
    )
)


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise LLRError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}") from None


def standardize(df: pd.DataFrame, spec: DatasetSpec, source: str) -> pd.DataFrame:
    """Check and complete a metadata table: add ``g``, order the columns,
    reject labels out of range and empty groups (naming ``source``)."""
    for col in ("split", "y", "s"):
        if col not in df.columns:
            raise LLRError(f"{spec.name}: {source}: column {col!r} missing")
    df = df.copy()
    bad = ~df["split"].isin(SPLITS)
    if bad.any():
        raise LLRError(f"{spec.name}: {source}: split value {df['split'][bad].iloc[0]!r} not in {list(SPLITS)}")
    for col, n in (("y", spec.n_classes), ("s", spec.n_spurious)):
        vals = pd.to_numeric(df[col], errors="coerce")
        bad = vals.isna() | (vals < 0) | (vals >= n) | (vals != vals.round())
        if bad.any():
            raise LLRError(
                f"{spec.name}: {source}: label {col}={df[col][bad].iloc[0]} out of range, expected an integer in 0..{n - 1}"
            )
        df[col] = vals.astype(np.int64)
    df["g"] = df["y"] * spec.n_spurious + df["s"]
    if "idx" not in df.columns:
        df.insert(0, "idx", np.arange(len(df), dtype=np.int64))
    for split in SPLITS:
        counts = np.bincount(df.loc[df["split"] == split, "g"], minlength=spec.n_groups)
        if (counts == 0).any():
            g = int(np.flatnonzero(counts == 0)[0])
            raise LLRError(f"{spec.name}: {source}: group {g} ({spec.group_name(g)}) is empty in split {split!r}")
    rest = [c for c in df.columns if c not in META_COLUMNS]
    return df[list(META_COLUMNS) + rest].reset_index(drop=True)


def read_metadata(path: str | os.PathLike, spec: DatasetSpec | str | None = None) -> pd.DataFrame:
    """Read a standardized metadata table written by ``prepare`` and check
    its invariants (groups G = Y x S, paper Section 1 "Setting", numbered
    ``g = y * |S| + s``): columns idx, split, y, s, g present; idx unique in
    0..N-1 (any row order); split in train/val/test; y, s integers in the
    dataset's ranges; g consistent on every row. ``spec`` (a DatasetSpec or name) defaults to the dataset
    named by the file's folder (``results/{dataset}/metadata.csv``) when it
    is registered; otherwise |S| is taken as max(s) + 1 and the ranges are
    not checked. A violation is an ``LLRError`` naming the file, the first
    bad line and the rule."""
    from llr.io import read_csv

    if isinstance(spec, str):
        spec = get_spec(spec)
    elif spec is None:
        spec = DATASETS.get(Path(path).parent.name)
    df = read_csv(path)
    missing = [c for c in META_COLUMNS if c not in df.columns]
    if missing:
        raise LLRError(f"{path}: columns {missing} missing, expected {list(META_COLUMNS)}")
    n = len(df)
    if n == 0:
        raise LLRError(f"{path}: no rows")
    num = {c: pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64) for c in ("idx", "y", "s", "g")}
    rules: list[tuple[str, np.ndarray]] = []
    for c in ("idx", "y", "s", "g"):
        v = num[c]
        rules.append((f"{c} must be a non-negative integer", ~np.isfinite(v) | (v < 0) | (v != np.round(v))))
    idx = num["idx"]
    rules.append((f"idx must lie in 0..{n - 1} (one row per example)", idx >= n))
    rules.append(("idx must be unique", df["idx"].duplicated().to_numpy()))
    rules.append((f"split must be one of {list(SPLITS)}", ~df["split"].isin(SPLITS).to_numpy()))
    if spec is not None:
        n_s = spec.n_spurious
        rules.append(
            (f"y must be < {spec.n_classes} ({spec.name} has {spec.n_classes} classes)", num["y"] >= spec.n_classes)
        )
        rules.append((f"s must be < {n_s} ({spec.name} has {n_s} spurious values)", num["s"] >= n_s))
    else:
        n_s = int(np.nanmax(num["s"])) + 1 if np.isfinite(num["s"]).any() else 1
    rules.append((f"g must equal y * {n_s} + s", num["g"] != num["y"] * n_s + num["s"]))
    bad = np.zeros(n, dtype=bool)
    for _, mask in rules:
        bad |= mask
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        rule = next(r for r, mask in rules if mask[i])
        row = ", ".join(f"{c}={df[c].iloc[i]}" for c in META_COLUMNS)
        raise LLRError(f"{path}: line {i + 2} ({row}): {rule}")
    for c in ("idx", "y", "s", "g"):
        df[c] = num[c].astype(np.int64)
    return df
