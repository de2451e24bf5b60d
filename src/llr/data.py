"""Dataset registry and the standardized metadata table (DESIGN sections 4, 7).

Every dataset, real or synthetic, is reduced by the ``prepare`` stage to one
table ``results/{dataset}/metadata.csv`` with columns ``idx,split,y,s,g`` plus
its source columns, so that everything downstream is dataset-agnostic.
``split`` is one of ``train``, ``val``, ``test``; groups are
``g = y * n_spurious + s``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    minority_groups: tuple[int, ...]  # DESIGN section 4, group-ratio subsets
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


register(DatasetSpec(
    name="waterbirds", modality="image",
    class_names=("landbird", "waterbird"), spurious_names=("land", "water"),
    minority_groups=(1, 2), heldout_from="train", weighted_mean=True,
    defaults={"arch": "resnet50", "epochs": 100, "schedule": "cosine"},
))
register(DatasetSpec(
    name="celeba", modality="image",
    class_names=("non-blond", "blond"), spurious_names=("female", "male"),
    minority_groups=(3,), balanced_classes=(0,), heldout_from="val",
    defaults={"arch": "resnet50", "epochs": 20, "schedule": "cosine"},
))
register(DatasetSpec(
    name="civilcomments", modality="text",
    class_names=("non-toxic", "toxic"), spurious_names=("no-identity", "identity"),
    minority_groups=(1, 2), heldout_from="val",
    defaults={"arch": "bert-base-uncased", "epochs": 20, "schedule": "linear", "max_length": 220},
))
register(DatasetSpec(
    name="multinli", modality="text",
    class_names=("contradiction", "entailment", "neutral"),
    spurious_names=("no-negation", "negation"),
    minority_groups=(1, 3, 5), heldout_from="val",
    defaults={"arch": "bert-base-uncased", "epochs": 20, "schedule": "linear", "max_length": 128},
))
# Embedded synthetic stand-ins (DESIGN section 5).
register(DatasetSpec(
    name="synth_waterbirds", modality="image",
    class_names=("landbird", "waterbird"), spurious_names=("land", "water"),
    minority_groups=(1, 2), heldout_from="train", weighted_mean=True, synthetic=True,
    defaults={"arch": "resnet18-small", "schedule": "cosine"},
))
register(DatasetSpec(
    name="synth_multinli", modality="text",
    class_names=("contradiction", "entailment", "neutral"),
    spurious_names=("no-negation", "negation"),
    minority_groups=(1, 3, 5), heldout_from="val", synthetic=True,
    defaults={"arch": "bert-tiny-synth", "schedule": "linear"},
))


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
            raise LLRError(f"{spec.name}: {source}: label {col}={df[col][bad].iloc[0]} out of range, expected an integer in 0..{n - 1}")
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


def read_metadata(path: str) -> pd.DataFrame:
    """Read a standardized metadata table written by ``prepare``."""
    df = pd.read_csv(path)
    missing = [c for c in META_COLUMNS if c not in df.columns]
    if missing:
        raise LLRError(f"{path}: columns {missing} missing, expected {list(META_COLUMNS)}")
    return df
