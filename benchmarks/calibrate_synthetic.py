"""Calibrate a synthetic benchmark to the real benchmarks' regime.

Prints ERM's test mean accuracy and WGA on the natural imbalanced
composition and on a group-balanced train set of the same size, after the
benchmark's own pretraining. Targets (issues 2 and 4): natural mean >= 90%
with WGA at least 15 points lower; balanced WGA >= 85%. Run once, before
looking at any last-layer result, e.g.

    python benchmarks/calibrate_synthetic.py synth_waterbirds --knob 0.3 --seed 1
    python benchmarks/calibrate_synthetic.py synth_multinli --knob 0.05 --seed 1

Defaults are the embedded default's settings (config.yaml). ERM trains on the
whole synthetic train split here (the workflow's ``train`` pool is 80% of it
for the image set, whose held-out set comes from train).

For the text set ``--scope-rate`` overrides ``llr.text.SCOPE_RATE`` (the share
of negation sentences whose "not" takes scope over the key), the second
difficulty knob besides ``core_noise``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from llr.balancing import balance
from llr.data import get_spec
from llr.metrics import train_group_weights
from llr.models import build_model
from llr.train import TrainConfig, train


def benchmark(name: str, knob: float, seed: int, balanced: bool, params: dict):
    """(metadata, inputs, model kwargs) of one composition."""
    if name == "synth_waterbirds":
        from llr.images import DEFAULT_SIZES, ImageInputs, synth_waterbirds

        sizes = dict(DEFAULT_SIZES)
        if balanced:
            sizes["train"] = [sum(sizes["train"]) // 4] * 4
        meta, images = synth_waterbirds(seed, sizes, params["image_size"], knob, params["noise"])
        return meta, ImageInputs(images), {}
    from llr.text import DEFAULT_SIZES, SYNTHETIC_TOKENIZER, TextInputs, encode, generate_synthetic_text, load_tokenizer

    sizes = {k: list(v) for k, v in DEFAULT_SIZES.items()}
    if balanced:
        sizes["train"] = [sum(sizes["train"]) // 6] * 6
    meta = generate_synthetic_text(seed, sizes, core_noise=knob)
    tok = load_tokenizer(SYNTHETIC_TOKENIZER)
    return meta, TextInputs(arrays=encode(meta["text"].tolist(), tok, 64)), {"vocab_size": len(tok)}


def pretrained(name: str, knob: float, seed: int, params: dict):
    spec = get_spec(name)
    if name == "synth_waterbirds":
        from llr.images import ImageInputs, pretrain_images

        imgs, lab = pretrain_images(seed + 1000, params["pretrain_n"], params["image_size"], knob, params["noise"])
        inputs, kw = ImageInputs(imgs), {}
    else:
        from llr.text import pretrain_inputs

        inputs, lab, kw = pretrain_inputs(spec, {"core_noise": knob}, seed + 1000, params["pretrain_n"])
    torch.manual_seed(seed)
    model = build_model(params["arch"], spec.n_groups, **kw)
    train(model, inputs, lab, lab, np.arange(len(lab)), balance(lab, "none", None),
          TrainConfig(epochs=params["pre_epochs"], lr=params["pre_lr"], schedule=params["schedule"]), seed=seed,
          n_groups=spec.n_groups, progress=False)
    return model


def run(name: str, knob: float, params: dict, seed: int) -> None:
    spec = get_spec(name)
    pre = pretrained(name, knob, seed, params)
    for comp in ("natural", "balanced"):
        meta, inputs, kw = benchmark(name, knob, seed, comp == "balanced", params)
        y = meta["y"].to_numpy()
        g = (spec.n_spurious * meta["y"] + meta["s"]).to_numpy()
        split = meta["split"].to_numpy()
        pool = np.flatnonzero(split == "train")
        test = np.flatnonzero(split == "test")
        gw = train_group_weights(g[pool], spec.n_groups) if spec.weighted_mean else None
        torch.manual_seed(seed)
        model = build_model(params["arch"], spec.n_classes, **kw)
        model.backbone.load_state_dict(pre.backbone.state_dict())
        res = train(model, inputs, y, g, pool, balance(y[pool], "none", None),
                    TrainConfig(epochs=params["epochs"], lr=params["lr"], schedule=params["schedule"]), seed=seed,
                    n_groups=spec.n_groups, eval_sets={"test": test}, group_weights=gw, progress=False)
        last = res.log[-1]
        accs = [round(last[f"test_acc_g{k}"], 3) for k in range(spec.n_groups)]
        print(f"{name} knob={knob} {comp:8s} n={len(pool)} test mean={last['test_mean_acc']:.3f} "
              f"wga={last['test_wga']:.3f} groups={accs} ({res.seconds:.0f}s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=["synth_waterbirds", "synth_multinli"])
    ap.add_argument("--knob", type=float, nargs="+", required=True,
                    help="core_contrast (images) or core_noise (text) values to try")
    ap.add_argument("--epochs", type=int, default=None, help="ERM epochs (default: config.yaml's, 3 images / 2 text)")
    ap.add_argument("--lr", type=float, default=None, help="ERM lr (default: 6e-4 images / 1e-3 text)")
    ap.add_argument("--pre-epochs", type=int, default=None, help="pretraining epochs (default: 4 images / 3 text)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--image-size", type=int, default=24, help="images only: side in pixels")
    ap.add_argument("--scope-rate", type=float, default=None,
                    help="text only: override llr.text.SCOPE_RATE (default: the module's value)")
    a = ap.parse_args()
    if a.scope_rate is not None:
        if a.dataset != "synth_multinli" or not 0.0 <= a.scope_rate <= 1.0:
            ap.error("--scope-rate takes a number in [0, 1] and applies to synth_multinli only")
        import llr.text

        llr.text.SCOPE_RATE = a.scope_rate
    torch.set_num_threads(1)
    image = a.dataset == "synth_waterbirds"
    params = {"arch": "resnet18-small" if image else "bert-tiny-synth", "epochs": a.epochs or (3 if image else 2),
              "lr": a.lr or (6e-4 if image else 1e-3), "schedule": "cosine" if image else "linear",
              "pre_epochs": a.pre_epochs or (4 if image else 3), "pre_lr": 1e-3, "pretrain_n": 400 if image else 500,
              "image_size": a.image_size, "noise": 0.08}
    for k in a.knob:
        run(a.dataset, k, params, a.seed)


if __name__ == "__main__":
    main()
