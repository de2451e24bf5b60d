"""Held-out carving, group-ratio subsets and class/group balancing
(DESIGN section 4). One implementation serves ERM and last-layer retraining.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from llr.data import DatasetSpec
from llr.errors import LLRError

ROLES = ("train", "heldout", "val", "test")
POOLS = {  # roles making up a training pool
    "train": ("train",),
    "heldout": ("heldout",),
    "combined": ("train", "heldout"),
}
BALANCE_MODES = ("none", "subsetting", "upsampling", "upweighting")
HELDOUT_TRAIN_FRACTION = 0.2


def rng_for(seed: int, *keys: object) -> np.random.Generator:
    """A generator determined by the seed and a tuple of keys (role, ratio...),
    so that every subset is reproducible and independent of run order."""
    key = zlib.crc32(repr(tuple(str(k) for k in keys)).encode())
    return np.random.default_rng([int(seed), key])


def heldout_split(meta: pd.DataFrame, spec: DatasetSpec, seed: int) -> pd.DataFrame:
    """Assign each example a role: train, heldout, val or test.

    Waterbirds-like datasets: a seeded 20% of train is held out (ERM keeps 80%).
    Others: a seeded half of val is held out; the other half stays as val.
    """
    role = meta["split"].to_numpy(dtype=object).copy()
    rng = rng_for(seed, "heldout", spec.name)
    if spec.heldout_from == "train":
        pos = np.flatnonzero(meta["split"].to_numpy() == "train")
        n_held = int(np.floor(HELDOUT_TRAIN_FRACTION * len(pos) + 0.5))
    elif spec.heldout_from == "val":
        pos = np.flatnonzero(meta["split"].to_numpy() == "val")
        n_held = len(pos) // 2
    else:
        raise LLRError(f"{spec.name}: heldout_from={spec.heldout_from!r}, expected 'train' or 'val'")
    chosen = rng.choice(pos, size=n_held, replace=False)
    role[chosen] = "heldout"
    return pd.DataFrame({"idx": meta["idx"].to_numpy(), "role": role})


def group_ratio_targets(counts: np.ndarray, ratio: float, spec: DatasetSpec) -> np.ndarray:
    """Per-group target counts of the group-ratio subset (DESIGN section 4).

    m is the smallest group count; every class keeps 2m examples; with
    p = r / (1 + r) a class's minority group keeps round(2mp) and its majority
    group the rest, so the class total is exactly 2m. Classes declared
    balanced keep m per group.
    """
    if not (0.0 < ratio <= 1.0):
        raise LLRError(f"group ratio {ratio!r} out of range, expected a number in (0, 1]")
    counts = np.asarray(counts, dtype=np.int64)
    if counts.shape != (spec.n_groups,):
        raise LLRError(f"{spec.name}: expected {spec.n_groups} group counts, got {counts.shape}")
    if spec.n_spurious != 2:
        raise LLRError(f"{spec.name}: group-ratio subsets need 2 spurious values, got {spec.n_spurious}")
    m = int(counts.min())
    p = ratio / (1.0 + ratio)
    targets = np.zeros_like(counts)
    for y in range(spec.n_classes):
        gs = [y * 2, y * 2 + 1]
        if y in spec.balanced_classes:
            targets[gs] = m
            continue
        minority = [g for g in gs if g in spec.minority_groups]
        if len(minority) != 1:
            raise LLRError(f"{spec.name}: class {y} needs exactly one minority group, has {minority}")
        mino = minority[0]
        majo = gs[0] if gs[1] == mino else gs[1]
        k = int(np.floor(2 * m * p + 0.5))
        targets[mino] = k
        targets[majo] = 2 * m - k
    short = np.flatnonzero(targets > counts)
    if len(short):
        g = int(short[0])
        raise LLRError(
            f"{spec.name}: group ratio {ratio} cannot be satisfied: group {g} ({spec.group_name(g)}) "
            f"needs {targets[g]} examples, the split has {counts[g]}")
    return targets


def group_ratio_subset(groups: np.ndarray, ratio: float, spec: DatasetSpec,
                       rng: np.random.Generator) -> np.ndarray:
    """Positions (into ``groups``) of a seeded group-ratio subset, sorted."""
    groups = np.asarray(groups)
    counts = np.bincount(groups, minlength=spec.n_groups)
    targets = group_ratio_targets(counts, ratio, spec)
    keep = [rng.choice(np.flatnonzero(groups == g), size=int(t), replace=False)
            for g, t in enumerate(targets)]
    return np.sort(np.concatenate(keep))


@dataclass
class Balanced:
    """How a training pool is balanced.

    ``positions``: which pool examples are used (all but for subsetting).
    ``sample_weights``: sampling probabilities for upsampling (else None).
    ``loss_weights``: per-example loss weights, mean 1, for upweighting (else None).
    """

    positions: np.ndarray
    sample_weights: np.ndarray | None = None
    loss_weights: np.ndarray | None = None


def inverse_frequency(labels: np.ndarray, n_labels: int | None = None) -> np.ndarray:
    """w_i = N / (K * n_{label(i)}) over the K labels present: mean 1, and every
    label carries the same total weight."""
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=n_labels or 0).astype(np.float64)
    present = int((counts > 0).sum())
    return len(labels) / (present * counts[labels])


def balance(labels: np.ndarray, mode: str, rng: np.random.Generator) -> Balanced:
    """Balance a pool by ``labels`` (classes or groups).

    subsetting: cut every label to the smallest label's size (seeded);
    upsampling: sample with replacement with weights inverse to label size,
    epoch length unchanged; upweighting: loss weight inverse to label frequency.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if mode == "none":
        return Balanced(np.arange(n))
    if mode == "subsetting":
        present = np.unique(labels)
        k = min(int((labels == v).sum()) for v in present)
        keep = [rng.choice(np.flatnonzero(labels == v), size=k, replace=False) for v in present]
        return Balanced(np.sort(np.concatenate(keep)))
    if mode == "upsampling":
        w = inverse_frequency(labels)
        return Balanced(np.arange(n), sample_weights=w / w.sum())
    if mode == "upweighting":
        return Balanced(np.arange(n), loss_weights=inverse_frequency(labels))
    raise LLRError(f"balancing mode {mode!r} unknown, expected one of {list(BALANCE_MODES)}")


def epoch_order(n: int, sample_weights: np.ndarray | None, gen) -> "object":
    """Example order for one epoch: a permutation, or (upsampling) n draws with
    replacement from ``sample_weights``. ``gen`` is a torch.Generator."""
    import torch

    if sample_weights is None:
        return torch.randperm(n, generator=gen)
    w = torch.as_tensor(sample_weights, dtype=torch.float64)
    return torch.multinomial(w, n, replacement=True, generator=gen)


@dataclass(frozen=True)
class ErmCell:
    """An ERM cell name: ``{pool}[_ratio{r}]_{balance}`` where pool is train
    (ERM's share) or combined (train + held-out, "100% of the data"), r a
    group ratio of that pool's subset, and balance ``none`` or
    ``{class|group}_{subsetting|upsampling|upweighting}``. A ``_long`` suffix
    marks the longer NC1 runs (Figure 2)."""

    pool: str
    ratio: float | None
    level: str | None
    mode: str
    long: bool = False

    @classmethod
    def parse(cls, name: str) -> "ErmCell":
        parts = name.split("_")
        long = parts[-1] == "long"
        if long:
            parts = parts[:-1]
        try:
            pool = parts.pop(0)
            ratio = None
            if parts and parts[0].startswith("ratio"):
                ratio = float(parts.pop(0)[5:])
            if parts == ["none"]:
                level, mode = None, "none"
            else:
                level, mode = parts
        except (ValueError, IndexError):
            raise LLRError(f"ERM cell {name!r} malformed, expected {{train|combined}}[_ratio<r>]_"
                           f"{{none|class_<mode>|group_<mode>}}[_long]") from None
        if pool not in ("train", "combined") or (level not in (None, "class", "group")) \
                or mode not in BALANCE_MODES or (level is None) != (mode == "none"):
            raise LLRError(f"ERM cell {name!r} malformed: pool {pool!r}, balance {level}_{mode}")
        return cls(pool, ratio, level, mode, long)
