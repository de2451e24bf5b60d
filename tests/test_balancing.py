"""Held-out carving, group-ratio subsets and balancing (DESIGN section 4)."""

import numpy as np
import pandas as pd
import pytest

from llr.balancing import (ErmCell, balance, group_ratio_subset, group_ratio_targets, heldout_split,
                           inverse_frequency, rng_for)
from llr.data import get_spec, standardize
from llr.errors import LLRError

WB = get_spec("waterbirds")
CELEBA = get_spec("celeba")
MNLI = get_spec("multinli")


def brute_targets(counts, r, minority, balanced=()):
    """Direct transcription of DESIGN section 4, group by group."""
    m = min(counts)
    p = r / (1 + r)
    out = []
    for g in range(len(counts)):
        y = g // 2
        if y in balanced:
            out.append(m)
        elif g in minority:
            out.append(int(np.floor(2 * m * p + 0.5)))
        else:
            out.append(2 * m - int(np.floor(2 * m * p + 0.5)))
    return out


@pytest.mark.parametrize("r", [0.05, 0.1, 0.2, 0.5, 1.0, 0.37])
def test_group_ratio_targets_match_definition(r):
    counts = [3498, 184, 56, 1057]
    t = group_ratio_targets(np.array(counts), r, WB)
    assert t.tolist() == brute_targets(counts, r, WB.minority_groups)
    assert t[0] + t[1] == 2 * 56 and t[2] + t[3] == 2 * 56


def test_waterbirds_exact_counts():
    assert group_ratio_targets(np.array([3498, 184, 56, 1057]), 0.05, WB).tolist() == [107, 5, 5, 107]
    assert group_ratio_targets(np.array([3498, 184, 56, 1057]), 1.0, WB).tolist() == [56, 56, 56, 56]


def test_celeba_balanced_class_keeps_m_and_m():
    counts = np.array([71629, 66874, 22880, 1387])
    t = group_ratio_targets(counts, 0.05, CELEBA)
    assert t.tolist() == [1387, 1387, 2642, 132]
    assert t.sum() == 4 * 1387


def test_multinli_six_groups_total_constant():
    counts = np.array([57498, 11158, 67376, 1521, 66630, 1992])
    totals = {int(group_ratio_targets(counts, r, MNLI).sum()) for r in (0.05, 0.1, 0.2, 0.5, 1.0)}
    assert totals == {6 * 1521}
    t = group_ratio_targets(counts, 0.5, MNLI)
    assert t.tolist() == brute_targets(counts.tolist(), 0.5, MNLI.minority_groups)


def test_group_ratio_subset_counts_and_seeds():
    rng = np.random.default_rng(0)
    groups = rng.choice(4, size=2000, p=[0.7, 0.05, 0.05, 0.2])
    a = group_ratio_subset(groups, 0.2, WB, rng_for(1, "subset", "train", 0.2))
    b = group_ratio_subset(groups, 0.2, WB, rng_for(2, "subset", "train", 0.2))
    a2 = group_ratio_subset(groups, 0.2, WB, rng_for(1, "subset", "train", 0.2))
    assert np.bincount(groups[a], minlength=4).tolist() == group_ratio_targets(np.bincount(groups), 0.2, WB).tolist()
    assert np.array_equal(a, a2) and not np.array_equal(a, b)
    assert len(np.unique(a)) == len(a)


def test_ratio_out_of_range_and_unsatisfiable():
    with pytest.raises(LLRError, match="out of range"):
        group_ratio_targets(np.array([10, 5, 5, 10]), 1.5, WB)
    # m = 5 but a majority group has only 6 < 2 * 5 * (1 - p) for small r.
    with pytest.raises(LLRError, match="cannot be satisfied: group 0"):
        group_ratio_targets(np.array([6, 5, 5, 10]), 0.05, WB)


def _meta(n_train=1000, n_val=400, n_test=400):
    rng = np.random.default_rng(3)
    n = n_train + n_val + n_test
    df = pd.DataFrame({"split": ["train"] * n_train + ["val"] * n_val + ["test"] * n_test,
                       "y": rng.integers(0, 2, n), "s": rng.integers(0, 2, n)})
    return standardize(df, WB, "test")


def test_heldout_split_waterbirds_takes_20_percent_of_train():
    meta = _meta()
    roles = heldout_split(meta, WB, seed=1)
    assert (roles["role"] == "heldout").sum() == 200
    assert set(meta.loc[roles["role"] == "heldout", "split"]) == {"train"}
    assert (roles["role"] == "train").sum() == 800 and (roles["role"] == "val").sum() == 400
    other = heldout_split(meta, WB, seed=2)
    assert not np.array_equal(roles["role"], other["role"])
    assert np.array_equal(roles["role"], heldout_split(meta, WB, seed=1)["role"])


def test_heldout_split_others_take_half_of_val():
    meta = _meta(n_val=401)
    meta_c = meta.copy()
    roles = heldout_split(meta_c, CELEBA, seed=1)
    assert (roles["role"] == "heldout").sum() == 200
    assert (roles["role"] == "val").sum() == 201
    assert set(meta.loc[roles["role"] == "heldout", "split"]) == {"val"}
    assert (roles["role"] == "train").sum() == 1000


def test_balance_modes():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    sub = balance(labels, "subsetting", np.random.default_rng(0))
    assert np.bincount(labels[sub.positions]).tolist() == [10, 10, 10]
    up = balance(labels, "upsampling", np.random.default_rng(0))
    mass = np.bincount(labels, weights=up.sample_weights)
    assert np.allclose(mass, 1 / 3) and np.isclose(up.sample_weights.sum(), 1)
    uw = balance(labels, "upweighting", np.random.default_rng(0))
    assert np.isclose(uw.loss_weights.mean(), 1.0)
    assert np.allclose(np.bincount(labels, weights=uw.loss_weights), 100 / 3)
    assert np.allclose(inverse_frequency(labels)[[0, 60, 90]], [100 / 180, 100 / 90, 100 / 30])
    none = balance(labels, "none", None)
    assert none.sample_weights is None and none.loss_weights is None and len(none.positions) == 100
    with pytest.raises(LLRError, match="balancing mode"):
        balance(labels, "oversample", None)


def test_upsampling_sampler_frequencies():
    import torch

    from llr.balancing import epoch_order

    labels = np.array([0] * 900 + [1] * 100)
    w = balance(labels, "upsampling", None).sample_weights
    gen = torch.Generator().manual_seed(0)
    draws = np.concatenate([epoch_order(1000, w, gen).numpy() for _ in range(20)])
    frac = np.mean(labels[draws] == 1)
    assert len(draws) == 20000 and abs(frac - 0.5) < 0.02  # 4+ sigma at n=20000


def test_erm_cell_names():
    assert ErmCell.parse("train_ratio0.05_none") == ErmCell("train", 0.05, None, "none")
    assert ErmCell.parse("combined_class_upsampling") == ErmCell("combined", None, "class", "upsampling")
    assert ErmCell.parse("train_none_long").long
    for bad in ("train_class_none", "full_none", "train_group", "train_ratiox_none"):
        with pytest.raises(LLRError):
            ErmCell.parse(bad)
