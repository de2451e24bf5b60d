"""The authors' LLR mode through the frozen network, and the caching ablation
(llr.lastlayer.through_backbone, llr.reporting.ablation; issue "Beyond the paper")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from llr.analysis.effective_ratio import plan_ratios
from llr.data.registry import get_spec, read_metadata
from llr.errors import LLRError
from llr.io import read_json, write_json
from llr.lastlayer import fit, registry
from llr.lastlayer.through_backbone import load_erm_model, run_through_backbone_job, train_head_through_backbone
from llr.reporting.ablation import ablation_summary, ablation_table

SIZES = {"train": [60, 12, 12, 36], "val": [8, 8, 8, 8], "test": [8, 8, 8, 8]}
ERM = {
    "arch": "resnet18-small",
    "epochs": 1,
    "lr": 1e-3,
    "batch_size": 16,
    "threads": 1,
    "checkpoint_min_seconds": 3600,
}
SPEC = get_spec("synth_waterbirds")


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "llr", *args], cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def erm_cell(tmp_path_factory):
    """A tiny synthetic Waterbirds with one trained ERM cell (train_none)."""
    from llr.data.registry import standardize
    from llr.data.synthetic_images import synth_waterbirds
    from llr.io import write_csv
    from llr.train.balancing import heldout_split
    from llr.train.erm import run_erm_job

    d = tmp_path_factory.mktemp("tb")
    meta, images = synth_waterbirds(0, SIZES, 16)
    meta = standardize(meta, SPEC, "generator")
    write_csv(d / "metadata.csv", meta)
    np.save(d / "inputs.npy", images)
    write_csv(d / "split.csv", heldout_split(meta, SPEC, 1))
    run_erm_job(
        dataset="synth_waterbirds",
        metadata=str(d / "metadata.csv"),
        split=str(d / "split.csv"),
        inputs=str(d / "inputs.npy"),
        subset=None,
        pretrained=None,
        cell="train_none",
        seed=1,
        params=ERM,
        outdir=str(d / "erm"),
    )
    return d


def _job(d: Path, out: str, method: str, params: dict, heldout: str = "full", **kw) -> dict:
    return run_through_backbone_job(
        dataset="synth_waterbirds",
        metadata=str(d / "metadata.csv"),
        split=str(d / "split.csv"),
        inputs=str(d / "inputs.npy"),
        model=str(d / "erm" / "model.pt"),
        heldout=heldout,
        method=method,
        seed=1,
        epochs=1,
        out_json=str(d / out),
        params=params,
        erm_params=ERM,
        **kw,
    )


def _cached(d: Path, method: str, epochs: int, sampling: float | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """The cached mode's head on float32 eval-mode embeddings of the same model."""
    from llr.data.inputs import open_inputs
    from llr.train.erm import TrainConfig, embed

    meta = read_metadata(str(d / "metadata.csv"))
    roles = pd.read_csv(d / "split.csv")["role"].to_numpy()
    model = load_erm_model(str(d / "erm" / "model.pt"), "resnet18-small", 2)
    X, _ = embed(
        model,
        open_inputs(SPEC, str(d / "inputs.npy")),
        np.arange(len(meta)),
        TrainConfig(epochs=1),
        torch.device("cpu"),
    )
    cell = np.flatnonzero(roles == "heldout")
    sw = None
    if sampling is not None:
        from llr.train.balancing import group_ratio_sampling_weights

        sw = group_ratio_sampling_weights(meta["y"].to_numpy()[cell], meta["g"].to_numpy()[cell], sampling, SPEC)
    with np.load(d / "erm" / "head.npz") as h:
        head = (h["W"], h["b"])
    return registry.run_method(
        method,
        X,
        meta,
        roles,
        cell,
        np.flatnonzero(roles == "val"),
        head,
        {"epochs": epochs},
        1,
        1,
        SPEC,
        sample_weights=sw,
    )


@pytest.mark.parametrize(
    "method, sampling",
    [("llr", None), ("cbllr_upweighting", None), ("cbllr_upsampling", None), ("dfr_subsetting", None), ("llr", 0.5)],
)
def test_eval_mode_without_augmentation_reproduces_the_cached_head(erm_cell, method, sampling):
    """Same features (eval mode, no augmentation): the head trained through
    the network equals the cached mode's (same init, order, plan, SGD)."""
    out = _job(
        erm_cell,
        f"eval_{method}_{sampling}.json",
        method,
        {"epochs": 3, "backbone_mode": "eval", "augment": False},
        heldout_sampling_ratio=sampling,
    )
    W, b, info = _cached(erm_cell, method, 3, sampling)
    np.testing.assert_allclose(np.asarray(out["head"]["W"]), W, atol=2e-4)
    np.testing.assert_allclose(np.asarray(out["head"]["b"]), b, atol=2e-4)
    assert out["effective_group_ratio"] == pytest.approx(info["effective_group_ratio"], abs=1e-12)
    assert out["heldout_construction"] == ("sampled" if sampling else "subset")


def test_train_mode_updates_batchnorm_and_freezes_the_backbone(erm_cell):
    from llr.data.inputs import open_inputs

    d = erm_cell
    meta = read_metadata(str(d / "metadata.csv"))
    roles = pd.read_csv(d / "split.csv")["role"].to_numpy()
    cell = np.flatnonzero(roles == "heldout")
    model = load_erm_model(str(d / "erm" / "model.pt"), "resnet18-small", 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    init = fit.torch_linear_init(model.dim, 2, 1)
    hp = registry.resolve_hp("llr", SPEC, {})
    train_head_through_backbone(
        model,
        open_inputs(SPEC, str(d / "inputs.npy")),
        cell,
        meta["y"].to_numpy()[cell],
        (np.arange(len(cell)), None, None),
        hp,
        epochs=2,
        seed=1,
        init=init,
    )
    after = model.state_dict()
    params = {n for n, _ in model.named_parameters()}
    for k in params:
        if k.startswith("backbone."):
            assert torch.equal(before[k], after[k]), k  # frozen
    bn = [k for k in after if k.endswith("running_mean")]
    assert bn and all(not torch.equal(before[k], after[k]) for k in bn)  # running stats moved on held-out
    tracked = [k for k in after if k.endswith("num_batches_tracked")]
    steps = int(np.ceil(len(cell) / 32)) * 2
    assert all(int(after[k] - before[k]) == steps for k in tracked)
    assert not torch.equal(torch.as_tensor(init[0], dtype=torch.float32), after["head.weight"])


def test_job_writes_lastlayer_format(erm_cell):
    out = _job(erm_cell, "tb.json", "cbllr_upweighting", {"epochs": 2})
    d = read_json(erm_cell / "tb.json", verify_signature=True)
    assert d["mode"] == "through_backbone" and d["backbone_mode"] == "train" and d["augment"] is True
    assert d["batchnorm_running_stats_updated"] is True and d["epochs"] == 2
    for role in ("train_cell", "val", "test"):
        assert {"acc_by_group", "wga", "mean_acc"} <= set(d["metrics"][role])
        assert len(d["metrics"][role]["acc_by_group"]) == 4
    meta = read_metadata(str(erm_cell / "metadata.csv"))
    roles = pd.read_csv(erm_cell / "split.csv")["role"].to_numpy()
    cell = np.flatnonzero(roles == "heldout")
    r = plan_ratios("cbllr_upweighting", meta["y"].to_numpy()[cell], meta["g"].to_numpy()[cell], 1, SPEC)
    assert out["effective_group_ratio"] == pytest.approx(r["effective_ratio"])
    assert out["train_cell_n"] == len(cell)
    # the eval-mode head differs: BN statistics and augmentation changed the features
    W, _, _ = _cached(erm_cell, "cbllr_upweighting", 2)
    assert np.abs(np.asarray(out["head"]["W"]) - W).max() > 1e-3


def test_cli_and_errors(erm_cell):
    d = erm_cell
    base = [
        "lastlayer_backbone",
        "--dataset",
        "synth_waterbirds",
        "--metadata",
        "metadata.csv",
        "--split",
        "split.csv",
        "--inputs",
        "inputs.npy",
        "--model",
        "erm/model.pt",
        "--heldout",
        "full",
        "--seed",
        "1",
        "--epochs",
        "1",
        "--erm-params",
        json.dumps(ERM),
        "--out",
        "cli.json",
    ]
    res = _cli(*base, "--method", "afr", cwd=d)
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1].startswith("llr: error: method 'afr'")
    res = _cli(*base, "--method", "llr", "--params", '{"backbone_mode": "test"}', cwd=d)
    assert res.returncode == 2 and "backbone_mode='test'" in res.stderr
    res = _cli(*base, "--method", "llr", "--params", '{"epochs": 1}', cwd=d)
    assert res.returncode == 0, res.stderr
    assert read_json(d / "cli.json", verify_signature=True)["mode"] == "through_backbone"
    with pytest.raises(LLRError, match="does not fit architecture"):
        load_erm_model(str(d / "erm" / "model.pt"), "resnet18", 2)


def test_bert_dropout_active_in_train_mode_only():
    """BERT: eval mode without augmentation equals the cached fit; train mode
    (dropout) gives another head."""
    from llr.data.inputs import TextInputs
    from llr.models.factory import build_model

    torch.manual_seed(0)
    model = build_model("bert-tiny-synth", 3)
    rng = np.random.default_rng(0)
    n = 40
    ids = rng.integers(5, 60, size=(n, 12))
    inputs = TextInputs(arrays={"input_ids": ids, "attention_mask": np.ones_like(ids)})
    y = rng.integers(0, 3, n)
    hp = registry.resolve_hp("llr", get_spec("synth_multinli"), {})
    init = fit.torch_linear_init(model.dim, 3, 2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    with torch.no_grad():
        X = model.embed(inputs.batch(np.arange(n))).numpy()
    ref = fit.fit_softmax(X, y, n_classes=3, epochs=2, batch_size=32, seed=2, init=init)
    train_head_through_backbone(
        model,
        inputs,
        np.arange(n),
        y,
        (np.arange(n), None, None),
        hp,
        epochs=2,
        seed=2,
        init=init,
        backbone_mode="eval",
        augment=False,
    )
    np.testing.assert_allclose(model.head.weight.detach().numpy(), ref.W, atol=1e-4)
    model.load_state_dict(state)
    train_head_through_backbone(
        model,
        inputs,
        np.arange(n),
        y,
        (np.arange(n), None, None),
        hp,
        epochs=2,
        seed=2,
        init=init,
        backbone_mode="train",
        augment=False,
    )
    assert np.abs(model.head.weight.detach().numpy() - ref.W).max() > 1e-4
    # ... and the same seed gives the same head, whatever the global generator's state
    first = model.head.weight.detach().clone()
    for burn in (1, 7):
        model.load_state_dict(state)
        torch.manual_seed(burn)
        torch.rand(burn)
        train_head_through_backbone(
            model,
            inputs,
            np.arange(n),
            y,
            (np.arange(n), None, None),
            hp,
            epochs=2,
            seed=2,
            init=init,
            backbone_mode="train",
            augment=False,
        )
        assert torch.equal(model.head.weight.detach(), first)


def _run(path: Path, wga: float, mean_acc: float = 0.8, epochs: int = 10) -> str:
    write_json(
        path,
        {
            "metrics": {"test": {"acc_by_group": [wga, 1.0], "wga": wga, "mean_acc": mean_acc}},
            "epochs": epochs,
            "effective_group_ratio": 0.3,
        },
    )
    return str(path)


def test_ablation_table_and_summary(tmp_path):
    files = []
    diffs = {1: [0.10, -0.02], 2: [0.04, 0.00]}
    for seed, ds in diffs.items():
        for i, (h, dv) in enumerate(zip(("heldout_ratio0.1", "heldout"), ds)):
            erm, method = ("train_ratio0.2_none", "llr") if i == 0 else ("train_class_upweighting", "cbllr_upweighting")
            base = tmp_path / f"results/synth_waterbirds/seed{seed}"
            kind = "lastlayer" if seed == 1 else "lastlayer_matched"
            files.append(_run(base / kind / erm / method / h / "metrics.json", 0.5))
            files.append(_run(base / "lastlayer_backbone" / erm / method / h / "metrics.json", 0.5 + dv, 0.9))
    t = ablation_table(files)
    assert len(t) == 8 and set(t["mode"]) == {"cached", "through_backbone"}
    s = ablation_summary(t).iloc[0]
    assert s["n_pairs"] == 4 and s["n_seeds"] == 2 and s["epochs"] == "10"
    assert s["mean_abs_wga_diff"] == pytest.approx((0.10 + 0.02 + 0.04 + 0.0) / 4)
    assert s["mean_wga_diff"] == pytest.approx((0.10 - 0.02 + 0.04) / 4)
    assert s["seed_std_mean_abs_wga_diff"] == pytest.approx(np.std([0.06, 0.02], ddof=1))
    assert s["max_abs_wga_diff"] == pytest.approx(0.10)
    assert s["mean_abs_mean_acc_diff"] == pytest.approx(0.1)
    dup = files + [
        _run(
            tmp_path / "results/synth_waterbirds/seed1/lastlayer_matched/train_ratio0.2_none/llr/"
            "heldout_ratio0.1/metrics.json",
            0.4,
        )
    ]
    with pytest.raises(LLRError, match="given twice in mode cached"):
        ablation_table(dup)


def test_claims_caching_holds_and_fails(tmp_path):
    from llr.reporting.claims import claims_caching

    rows = []
    for seed in (1, 2, 3):
        for h, d in (("heldout_ratio0.1", 0.01), ("heldout", -0.02)):
            for mode, w in (("cached", 0.6), ("through_backbone", 0.6 + d)):
                rows.append(
                    {
                        "dataset": "synth_waterbirds",
                        "seed": seed,
                        "erm": "e",
                        "method": "llr",
                        "heldout": h,
                        "mode": mode,
                        "test_wga": w,
                    }
                )
    t = pd.DataFrame(rows)
    assert claims_caching(t)[0]["holds"] == "yes"
    far = t.assign(test_wga=np.where(t["mode"] == "through_backbone", t["test_wga"] + 0.2, t["test_wga"]))
    assert claims_caching(far)[0]["holds"] == "no"
