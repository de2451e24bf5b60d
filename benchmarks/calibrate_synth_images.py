"""Calibrate the synthetic image benchmark (issue: Waterbirds-like regime).

Prints, for generator settings, ERM's test mean accuracy and WGA on the
natural imbalanced composition and on a group-balanced train set of the same
size. Run once, before looking at any last-layer result:

    python benchmarks/calibrate_synth_images.py --contrast 0.35 0.25 --noise 0.08
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from llr.balancing import balance
from llr.images import DEFAULT_SIZES, ImageInputs, pretrain_images, synth_waterbirds
from llr.metrics import evaluate, train_group_weights
from llr.models import build_model
from llr.train import TrainConfig, train


def run(contrast: float, noise: float, size: int, epochs: int, pre_epochs: int, lr: float, seed: int) -> None:
    n_train = sum(DEFAULT_SIZES["train"])
    bal = {**DEFAULT_SIZES, "train": [n_train // 4] * 4}
    imgs, lab = pretrain_images(seed + 1000, 400, size, contrast, noise)
    torch.manual_seed(seed)
    pre = build_model("resnet18-small", 4)
    train(pre, ImageInputs(imgs), lab, lab, np.arange(len(lab)), balance(lab, "none", None),
          TrainConfig(epochs=pre_epochs, lr=1e-3), seed=seed, n_groups=4, progress=False)
    for name, sizes in (("natural", DEFAULT_SIZES), ("balanced", bal)):
        meta, images = synth_waterbirds(seed, sizes, size, contrast, noise)
        y = meta["y"].to_numpy()
        g = (2 * meta["y"] + meta["s"]).to_numpy()
        split = meta["split"].to_numpy()
        pool = np.flatnonzero(split == "train")
        test = np.flatnonzero(split == "test")
        gw = train_group_weights(g[pool], 4)
        model = build_model("resnet18-small", 2)
        model.backbone.load_state_dict(pre.backbone.state_dict())
        res = train(model, ImageInputs(images), y, g, pool, balance(y[pool], "none", None),
                    TrainConfig(epochs=epochs, lr=lr), seed=seed, n_groups=4, eval_sets={"test": test},
                    group_weights=gw, progress=False)
        last = res.log[-1]
        print(f"contrast={contrast} noise={noise} {name:8s} n={len(pool)} test mean={last['test_mean_acc']:.3f} "
              f"wga={last['test_wga']:.3f} groups={[round(last[f'test_acc_g{k}'], 3) for k in range(4)]} "
              f"({res.seconds:.0f}s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contrast", type=float, nargs="+", default=[0.35])
    ap.add_argument("--noise", type=float, default=0.08)
    ap.add_argument("--size", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--pre-epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(1)
    for c in a.contrast:
        run(c, a.noise, a.size, a.epochs, a.pre_epochs, a.lr, a.seed)


if __name__ == "__main__":
    main()
