"""Held-out carving, group-ratio subsets and class/group balancing
(paper sections 1, 3.1 and 3.2; docs/design.md, "Definitions"). One
implementation serves ERM and last-layer retraining.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from llr.data.registry import DatasetSpec
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
    """Per-group target counts of the group-ratio subset (paper section 3.1:
    data removed until each class has group ratio r, the total the same for
    every r).

    Every class keeps T = min(2m, smallest majority-group count) examples, m
    the smallest group count; with p = r / (1 + r) a class's minority group
    keeps round(T p) and its majority group the rest. T is feasible for every
    r in (0, 1]: T p <= m for p <= 1/2, and T (1 - p) <= the majority count.
    T = 2m unless a majority group is smaller than 2m (real CivilComments:
    toxic-identity 17,784 < 2 x 12,731), where 2m would fail at small r.
    Classes declared balanced keep T / 2 per group.
    """
    if not (0.0 < ratio <= 1.0):
        raise LLRError(f"group ratio {ratio!r} out of range, expected a number in (0, 1]")
    counts = np.asarray(counts, dtype=np.int64)
    if counts.shape != (spec.n_groups,):
        raise LLRError(f"{spec.name}: expected {spec.n_groups} group counts, got {counts.shape}")
    if spec.n_spurious != 2:
        raise LLRError(f"{spec.name}: group-ratio subsets need 2 spurious values, got {spec.n_spurious}")
    m = int(counts.min())
    if m == 0:
        g = int(np.argmin(counts))
        raise LLRError(
            f"{spec.name}: group {g} ({spec.group_name(g)}) is empty; a group-ratio subset needs every group"
        )
    p = ratio / (1.0 + ratio)
    pairs = {}
    for y in range(spec.n_classes):
        gs = [y * 2, y * 2 + 1]
        if y in spec.balanced_classes:
            continue
        minority = [g for g in gs if g in spec.minority_groups]
        if len(minority) != 1:
            raise LLRError(f"{spec.name}: class {y} needs exactly one minority group, has {minority}")
        pairs[y] = (minority[0], gs[0] if gs[1] == minority[0] else gs[1])
    total = min([2 * m] + [int(counts[majo]) for _, majo in pairs.values()])
    targets = np.zeros_like(counts)
    for y in range(spec.n_classes):
        if y not in pairs:
            targets[[y * 2, y * 2 + 1]] = total // 2
            continue
        mino, majo = pairs[y]
        k = int(np.floor(total * p + 0.5))
        targets[mino] = k
        targets[majo] = total - k
    short = np.flatnonzero(targets > counts)
    if len(short):
        g = int(short[0])
        raise LLRError(
            f"{spec.name}: group ratio {ratio} cannot be satisfied: group {g} ({spec.group_name(g)}) "
            f"needs {targets[g]} examples, the split has {counts[g]}"
        )
    return targets


def group_ratio_subset(groups: np.ndarray, ratio: float, spec: DatasetSpec, rng: np.random.Generator) -> np.ndarray:
    """Positions (into ``groups``) of a seeded group-ratio subset, sorted."""
    groups = np.asarray(groups)
    counts = np.bincount(groups, minlength=spec.n_groups)
    targets = group_ratio_targets(counts, ratio, spec)
    keep = [rng.choice(np.flatnonzero(groups == g), size=int(t), replace=False) for g, t in enumerate(targets)]
    return np.sort(np.concatenate(keep))


@dataclass
class Balanced:
    """How a training pool is balanced.

    ``positions``: which pool examples are used (all but for subsetting).
    ``sample_weights``: sampling probabilities for upsampling (else None).
    ``loss_weights``: per-example loss weights for upweighting, ``n_max / n_c``
    (the largest label keeps weight 1), else None.
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


def upweights(labels: np.ndarray) -> np.ndarray:
    """Upweighting loss weights w_i = n_max / n_{label(i)} (paper section 3.2,
    "minority class samples are assigned larger weights in the loss"): the
    largest label keeps weight 1, as the authors' class weights (e.g.
    Waterbirds [1, 3.31] = [1, 3682 / 1113]); every label carries the same
    total weight n_max."""
    labels = np.asarray(labels)
    counts = np.bincount(labels).astype(np.float64)
    return counts.max() / counts[labels]


def balance(labels: np.ndarray, mode: str, rng: np.random.Generator) -> Balanced:
    """Balance a pool by ``labels`` (classes or groups), paper section 3.2.

    subsetting: cut every label to the smallest label's size (seeded);
    upsampling: sample with replacement with weights inverse to label size,
    epoch length unchanged; upweighting: loss weight n_max / n_label
    (:func:`upweights`).
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
        return Balanced(np.arange(n), loss_weights=upweights(labels))
    raise LLRError(f"balancing mode {mode!r} unknown, expected one of {list(BALANCE_MODES)}")


def _class_groups(y: np.ndarray, g: np.ndarray, spec: DatasetSpec):
    """Per class: unweighted group counts (n_classes, n_spurious), the majority
    group's column (most examples) and a mask of the classes that have a
    minority group, i.e. are not declared balanced and hold an example outside
    their majority group."""
    y, g = np.asarray(y, dtype=np.int64), np.asarray(g, dtype=np.int64)
    if y.shape != g.shape or y.ndim != 1:
        raise LLRError(f"labels and groups must be 1-d arrays of one length, got {y.shape} and {g.shape}")
    if len(g) and (g.min() < 0 or g.max() >= spec.n_groups or not np.array_equal(g // spec.n_spurious, y)):
        raise LLRError(
            f"{spec.name}: groups must lie in 0..{spec.n_groups - 1} with group // {spec.n_spurious} = class"
        )
    counts = np.bincount(g, minlength=spec.n_groups).reshape(spec.n_classes, spec.n_spurious)
    major = counts.argmax(axis=1)
    minority_n = counts.sum(axis=1) - counts.max(axis=1)
    declared = np.isin(np.arange(spec.n_classes), np.asarray(spec.balanced_classes, dtype=np.int64))
    return counts, major, (minority_n > 0) & ~declared


def class_group_masses(
    y: np.ndarray, g: np.ndarray, weights: np.ndarray | None, spec: DatasetSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class: the weighted mass of its majority group (the group with the
    most examples, unweighted), of its minority group(s), and whether the
    class counts for group ratios (see :func:`effective_group_ratio`)."""
    y = np.asarray(y, dtype=np.int64)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != y.shape:
        raise LLRError(f"weights have shape {w.shape}, expected ({len(y)},)")
    _, major, keep = _class_groups(y, g, spec)
    mass = np.bincount(np.asarray(g, dtype=np.int64), weights=w, minlength=spec.n_groups).reshape(
        spec.n_classes, spec.n_spurious
    )
    maj = mass[np.arange(spec.n_classes), major]
    return maj, mass.sum(axis=1) - maj, keep


def effective_group_ratio(y: np.ndarray, g: np.ndarray, weights: np.ndarray | None, spec: DatasetSpec) -> float:
    """The group ratio a method effectively trains with (paper section 3.1:
    "the ratio between the number of minority group points and the number of
    majority group points", here with points counted by their training
    weight; section 3.2 for implicit group balancing).

    Per class: (total weight of its minority group(s)) / (total weight of its
    majority group), the majority group being the class's group with the most
    examples (unweighted); averaged over the classes that have at least one
    minority example. Classes the dataset declares balanced
    (``spec.balanced_classes``, e.g. CelebA's non-blond class, kept at m and m
    by the group-ratio subsets) have no minority group and are left out, as in
    the paper's ratios. ``weights=None`` counts examples. NaN when no class
    qualifies (or a majority group carries no weight)."""
    maj, mino, keep = class_group_masses(y, g, weights, spec)
    if not keep.any():
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(maj[keep] > 0, mino[keep] / np.where(maj[keep] > 0, maj[keep], 1.0), np.nan)
    return float(np.mean(ratios))


def group_ratio_sampling_weights(
    y: np.ndarray, g: np.ndarray, ratio: float, spec: DatasetSpec, balance_classes: bool = True
) -> np.ndarray:
    """Sampling probabilities that give a pool group ratio ``ratio`` in
    expectation while keeping every example (the authors' sampler for their
    group-ratio LLR runs, understanding-llr ``make_group_ratio_sampler``; the
    paper's section 3.1 reaches the ratio by removing data instead).

    Within a class with a minority group the majority group (most examples)
    gets mass 1 and the minority groups together mass ``ratio``, split in
    proportion to their counts; every example of a group has the same weight.
    ``balance_classes=True`` (the authors' sampler): every class present has
    the same total mass, and a class without a minority group (declared
    balanced, e.g. CelebA's non-blond class) gives its groups equal mass.
    ``balance_classes=False``: the majority group keeps its count share (one
    unit per majority example) and a class without a minority group keeps its
    counts. Returns probabilities summing to 1 (:func:`effective_group_ratio`
    of them is ``ratio``)."""
    if not (isinstance(ratio, (int, float)) and 0.0 < float(ratio) <= 1.0):
        raise LLRError(f"group ratio {ratio!r} out of range, expected a number in (0, 1]")
    g = np.asarray(g, dtype=np.int64)
    counts, major, keep = _class_groups(y, g, spec)
    counts = counts.astype(np.float64)
    rows = np.arange(spec.n_classes)
    is_major = np.zeros_like(counts, dtype=bool)
    is_major[rows, major] = True
    n_maj = counts[rows, major]
    n_min = counts.sum(axis=1) - n_maj
    # group masses with a class's majority group at 1 (minority: ratio in all)
    safe_min = np.where(n_min > 0, n_min, 1.0)[:, None]
    mass = np.where(is_major, 1.0, float(ratio) * counts / safe_min)
    if balance_classes:
        present = counts > 0
        equal = present / np.maximum(present.sum(axis=1, keepdims=True), 1)
        mass = np.where(keep[:, None], mass / (1.0 + float(ratio)), equal)
    else:
        mass = np.where(keep[:, None], mass * n_maj[:, None], counts)
    mass = mass.reshape(-1)
    per_example = np.where(counts.reshape(-1) > 0, mass / np.maximum(counts.reshape(-1), 1.0), 0.0)
    w = per_example[g]
    return w / w.sum()


def epoch_order(n: int, sample_weights: np.ndarray | None, gen) -> object:
    """Example order for one epoch: a permutation, or (upsampling) n draws with
    replacement from ``sample_weights``. ``gen`` is a torch.Generator."""
    import torch

    if sample_weights is None:
        return torch.randperm(n, generator=gen)
    w = torch.as_tensor(sample_weights, dtype=torch.float64)
    return torch.multinomial(w, n, replacement=True, generator=gen)
