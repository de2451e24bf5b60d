"""WGA and mean accuracy (docs/design.md, "Worst-group accuracy"), against brute-force loops."""

import numpy as np

from llr.train.metrics import evaluate, group_accuracy, mean_accuracy, train_group_weights


def test_group_accuracy_and_wga_brute_force():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = rng.integers(0, 2, 500)
    g = 2 * y + s
    pred = np.where(rng.random(500) < 0.8, y, 1 - y)
    acc = group_accuracy(pred, y, g, 4)
    for k in range(4):
        idx = [i for i in range(500) if g[i] == k]
        assert np.isclose(acc[k], sum(pred[i] == y[i] for i in idx) / len(idx))
    m = evaluate(pred, y, g, 4)
    assert m["wga"] == min(acc) and np.isclose(m["mean_acc"], np.mean(pred == y))


def test_weighted_mean_accuracy_waterbirds_style():
    # Test set balanced within class; train proportions 0.7/0.05/0.05/0.2.
    g = np.repeat(np.arange(4), 100)
    y = g // 2
    pred = y.copy()
    pred[100:150] = 1 - pred[100:150]  # group 1 at 50%
    w = train_group_weights(np.repeat(np.arange(4), [700, 50, 50, 200]), 4)
    assert np.allclose(w, [0.7, 0.05, 0.05, 0.2])
    assert np.isclose(mean_accuracy(pred, y, g, 4, w), 0.7 + 0.05 * 0.5 + 0.05 + 0.2)
    assert np.isclose(mean_accuracy(pred, y, g, 4), 350 / 400)


def test_missing_group_is_nan_and_ignored_by_wga():
    y = np.array([0, 0, 1])
    g = np.array([0, 0, 2])
    pred = np.array([0, 1, 1])
    m = evaluate(pred, y, g, 4)
    assert m["acc_by_group"][1] is None and m["wga"] == 0.5
