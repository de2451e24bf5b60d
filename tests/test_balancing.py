"""Held-out carving, group-ratio subsets and balancing (docs/design.md, "Definitions")."""

import numpy as np
import pandas as pd
import pytest

from llr.data.registry import get_spec, standardize
from llr.errors import LLRError
from llr.train.balancing import (
    balance,
    effective_group_ratio,
    group_ratio_sampling_weights,
    group_ratio_subset,
    group_ratio_targets,
    heldout_split,
    inverse_frequency,
    rng_for,
    upweights,
)

WB = get_spec("waterbirds")
CELEBA = get_spec("celeba")
MNLI = get_spec("multinli")


def brute_targets(counts, r, minority, balanced=()):
    """Direct transcription of docs/design.md, "Group-ratio subsets", group by group."""
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
    # a majority group smaller than 2m bounds the class total instead of failing
    assert group_ratio_targets(np.array([6, 5, 5, 10]), 1.0, WB).tolist() == [3, 3, 3, 3]
    with pytest.raises(LLRError, match="group 2 .* is empty"):
        group_ratio_targets(np.array([6, 5, 0, 10]), 0.5, WB)


def _meta(n_train=1000, n_val=400, n_test=400):
    rng = np.random.default_rng(3)
    n = n_train + n_val + n_test
    df = pd.DataFrame(
        {
            "split": ["train"] * n_train + ["val"] * n_val + ["test"] * n_test,
            "y": rng.integers(0, 2, n),
            "s": rng.integers(0, 2, n),
        }
    )
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
    # n_max / n_c: the largest label keeps weight 1 (the authors' class weights)
    assert uw.loss_weights[[0, 60, 90]].tolist() == [1.0, 2.0, 6.0]
    assert np.array_equal(uw.loss_weights, np.repeat([1.0, 2.0, 6.0], [60, 30, 10]))
    assert np.allclose(np.bincount(labels, weights=uw.loss_weights), 60)
    assert np.allclose(inverse_frequency(labels)[[0, 60, 90]], [100 / 180, 100 / 90, 100 / 30])
    none = balance(labels, "none", None)
    assert none.sample_weights is None and none.loss_weights is None and len(none.positions) == 100
    with pytest.raises(LLRError, match="balancing mode"):
        balance(labels, "oversample", None)


def test_upweights_match_authors_class_weights():
    # Waterbirds train: landbird 3498 + 184, waterbird 56 + 1057 -> [1, 3.31];
    # CelebA: non-blond 71629 + 66874, blond 22880 + 1387 -> [1, 5.71]
    wb = upweights(np.repeat([0, 1], [3498 + 184, 56 + 1057]))
    assert wb[0] == 1.0 and round(wb[-1], 2) == 3.31
    ce = upweights(np.repeat([0, 1], [71629 + 66874, 22880 + 1387]))
    assert ce[0] == 1.0 and round(ce[-1], 2) == 5.71
    assert upweights(np.array([2, 2, 0])).tolist() == [1.0, 1.0, 2.0]


# groups [g0, g1 | g2, g3] = [10, 4 | 3, 9]: majority g0 and g3
G = np.repeat([0, 1, 2, 3], [10, 4, 3, 9])
Y = G // 2


def test_effective_group_ratio_unweighted_and_subset():
    assert effective_group_ratio(Y, G, None, WB) == pytest.approx((4 / 10 + 3 / 9) / 2)
    assert effective_group_ratio(Y, G, np.ones(len(G)), WB) == pytest.approx((4 / 10 + 3 / 9) / 2)
    # subset membership: keep 5 of g0, all 4 of g1, all 3 of g2, 6 of g3
    keep = np.concatenate([np.arange(5), np.arange(10, 14), np.arange(14, 17), np.arange(17, 23)])
    w = np.zeros(len(G))
    w[keep] = 1
    assert effective_group_ratio(Y, G, w, WB) == pytest.approx((4 / 5 + 3 / 6) / 2)


def test_effective_group_ratio_upsampled_and_upweighted():
    rng = np.random.default_rng(0)
    # group-balanced upsampling or upweighting: every group the same mass
    assert effective_group_ratio(Y, G, balance(G, "upsampling", rng).sample_weights, WB) == pytest.approx(1.0)
    assert effective_group_ratio(Y, G, balance(G, "upweighting", rng).loss_weights, WB) == pytest.approx(1.0)
    # class balancing scales whole classes: the ratio is unchanged
    for mode in ("upsampling", "upweighting"):
        b = balance(Y, mode, rng)
        w = b.sample_weights if b.sample_weights is not None else b.loss_weights
        assert effective_group_ratio(Y, G, w, WB) == pytest.approx((4 / 10 + 3 / 9) / 2)
    # hand weights: g1 examples weigh 2, g2 examples 0.5
    w = np.where(G == 1, 2.0, np.where(G == 2, 0.5, 1.0))
    assert effective_group_ratio(Y, G, w, WB) == pytest.approx((8 / 10 + 1.5 / 9) / 2)


def test_effective_group_ratio_afr_weights():
    """AFR's weights exp(-gamma p): class 0 = two g0 points with ERM
    probability 0.9 of the true class and one g1 point with 0.2; class 1 =
    one g2 point with 0.3 and two g3 points with 0.8; gamma = 2."""
    from llr.lastlayer.afr import afr_weights

    g = np.array([0, 0, 1, 2, 3, 3])
    y = g // 2
    p_true = np.array([0.9, 0.9, 0.2, 0.3, 0.8, 0.8])
    p1 = np.where(y == 1, p_true, 1 - p_true)
    logits = np.stack([np.zeros(6), np.log(p1 / (1 - p1))], axis=1)
    hand = (np.exp(-2 * 0.2) / (2 * np.exp(-2 * 0.9)) + np.exp(-2 * 0.3) / (2 * np.exp(-2 * 0.8))) / 2
    assert hand == pytest.approx((np.exp(1.4) + np.exp(1.0)) / 4)
    for bal in (True, False):
        assert effective_group_ratio(y, g, afr_weights(logits, y, 2.0, bal), WB) == pytest.approx(hand)
    assert effective_group_ratio(y, g, afr_weights(logits, y, 0.0), WB) == pytest.approx(0.5)


def test_effective_group_ratio_which_classes_count():
    # CelebA declares its non-blond class balanced: only the blond class counts
    g = np.repeat([0, 1, 2, 3], [5, 4, 6, 2])
    assert effective_group_ratio(g // 2, g, None, CELEBA) == pytest.approx(2 / 6)
    # a class without minority examples is left out
    g = np.repeat([0, 2, 3], [5, 3, 6])
    assert effective_group_ratio(g // 2, g, None, WB) == pytest.approx(3 / 6)
    # majority by unweighted count even when the weights reverse the masses
    g = np.repeat([0, 1, 2, 3], [4, 2, 2, 4])
    w = np.where(g == 1, 4.0, 1.0)
    assert effective_group_ratio(g // 2, g, w, WB) == pytest.approx((8 / 4 + 2 / 4) / 2)
    # MultiNLI: three classes
    g = np.repeat(np.arange(6), [10, 2, 8, 4, 5, 5])
    assert effective_group_ratio(g // 2, g, None, MNLI) == pytest.approx((2 / 10 + 4 / 8 + 5 / 5) / 3)
    assert np.isnan(effective_group_ratio(np.array([0, 0]), np.array([0, 0]), None, WB))
    with pytest.raises(LLRError, match="weights have shape"):
        effective_group_ratio(Y, G, np.ones(3), WB)
    with pytest.raises(LLRError, match="group // 2 = class"):
        effective_group_ratio(np.zeros(len(G), int), G, None, WB)


def test_group_ratio_sampling_weights_hand_values():
    # authors' sampler (class-balanced), r = 0.5: class masses 1/2; in each class
    # majority 2/3 and minority 1/3 of it -> per example g0 1/30, g1 1/24, g2 1/18, g3 1/27
    w = group_ratio_sampling_weights(Y, G, 0.5, WB)
    np.testing.assert_allclose(w, np.array([1 / 30, 1 / 24, 1 / 18, 1 / 27])[G], rtol=1e-12)
    assert w.sum() == pytest.approx(1.0)
    # majority keeps its count share: majority examples weigh 1, minority r * n_maj / n_min
    w = group_ratio_sampling_weights(Y, G, 0.5, WB, balance_classes=False)
    raw = np.array([1.0, 0.5 * 10 / 4, 0.5 * 9 / 3, 1.0])[G]
    np.testing.assert_allclose(w, raw / raw.sum(), rtol=1e-12)


@pytest.mark.parametrize("r", [0.05, 0.2, 0.37, 1.0])
@pytest.mark.parametrize("balance_classes", [True, False])
def test_group_ratio_sampling_reaches_ratio(r, balance_classes):
    rng = np.random.default_rng(4)
    for spec, p in (
        (WB, [0.6, 0.05, 0.05, 0.3]),
        (CELEBA, [0.4, 0.4, 0.15, 0.05]),
        (MNLI, [0.3, 0.03, 0.3, 0.04, 0.28, 0.05]),
    ):
        g = rng.choice(spec.n_groups, size=3000, p=p)
        y = g // 2
        w = group_ratio_sampling_weights(y, g, r, spec, balance_classes)
        assert effective_group_ratio(y, g, w, spec) == pytest.approx(r, rel=1e-12)
        assert w.sum() == pytest.approx(1.0) and (w > 0).all()
        counts = np.bincount(g, minlength=spec.n_groups)
        mass = np.bincount(g, weights=w, minlength=spec.n_groups)
        per_ex = mass / counts
        np.testing.assert_allclose(w, per_ex[g], rtol=1e-12)  # uniform within a group
        cls = mass.reshape(-1, 2).sum(axis=1)
        major = 2 * np.arange(spec.n_classes) + counts.reshape(-1, 2).argmax(axis=1)
        if balance_classes:
            np.testing.assert_allclose(cls, 1 / spec.n_classes)
            if spec is CELEBA:  # declared-balanced class: its groups get equal mass
                assert mass[0] == pytest.approx(mass[1])
        elif spec is CELEBA:  # majority examples keep equal weight; the balanced class its counts
            np.testing.assert_allclose(per_ex[[0, 1, 2]], per_ex[0], rtol=1e-12)
        else:
            np.testing.assert_allclose(per_ex[major], per_ex[major][0], rtol=1e-12)
    # sampling with these probabilities realises the ratio
    g = rng.choice(4, size=2000, p=[0.6, 0.05, 0.05, 0.3])
    w = group_ratio_sampling_weights(g // 2, g, 0.25, WB)
    draws = rng.choice(len(g), size=400000, p=w)
    assert effective_group_ratio(g // 2, g, np.bincount(draws, minlength=len(g)), WB) == pytest.approx(0.25, rel=0.03)


def test_group_ratio_sampling_errors():
    with pytest.raises(LLRError, match="out of range"):
        group_ratio_sampling_weights(Y, G, 0.0, WB)
    with pytest.raises(LLRError, match="out of range"):
        group_ratio_sampling_weights(Y, G, "0.5", WB)


def test_upsampling_sampler_frequencies():
    import torch

    from llr.train.balancing import epoch_order

    labels = np.array([0] * 900 + [1] * 100)
    w = balance(labels, "upsampling", None).sample_weights
    gen = torch.Generator().manual_seed(0)
    draws = np.concatenate([epoch_order(1000, w, gen).numpy() for _ in range(20)])
    frac = np.mean(labels[draws] == 1)
    assert len(draws) == 20000 and abs(frac - 0.5) < 0.02  # 4+ sigma at n=20000


def test_group_ratio_targets_when_a_majority_group_is_small():
    """Real CivilComments train counts: toxic-identity (17,784) is smaller than
    2m (2 x 12,731), so every class keeps 17,784, feasible at every ratio,
    and the total is the same for every ratio (paper section 3.1)."""
    from llr.data.registry import get_spec

    spec = get_spec("civilcomments")
    counts = np.array([148186, 90337, 12731, 17784])
    totals = set()
    for r in (0.05, 0.1, 0.2, 0.5, 1.0):
        t = group_ratio_targets(counts, r, spec)
        assert (t <= counts).all()
        assert t[0] + t[1] == t[2] + t[3] == 17784
        assert t[1] == int(np.floor(17784 * r / (1 + r) + 0.5)) and t[2] == t[1]
        totals.add(int(t.sum()))
    assert totals == {2 * 17784}
    # the usual case is unchanged: Waterbirds keeps 2m per class
    wb = group_ratio_targets(np.array([3498, 184, 56, 1057]), 0.2, get_spec("waterbirds"))
    assert wb.tolist() == [112 - 19, 19, 19, 112 - 19]
