"""ERM engine: schedules, determinism, resume, NaN handling (issue 4)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from llr.data.inputs import ImageInputs
from llr.data.synthetic_images import synth_waterbirds
from llr.errors import LLRError
from llr.models.factory import build_model
from llr.train.balancing import balance
from llr.train.erm import TrainConfig, eval_steps, lr_factor, make_optimizer, train

SIZES = {"train": [60, 12, 12, 36], "val": [8, 8, 8, 8], "test": [8, 8, 8, 8]}
PARAMS = {"arch": "resnet18-small", "epochs": 3, "lr": 1e-3, "image_size": 16, "sizes": SIZES, "threads": 1}


@pytest.mark.parametrize(
    "schedule, step, total, expected",
    [
        ("cosine", 0, 100, 1.0),
        ("cosine", 50, 100, 0.5),
        ("cosine", 25, 100, 0.5 * (1 + math.cos(math.pi / 4))),
        ("cosine", 100, 100, 0.0),
        ("linear", 0, 100, 1.0),
        ("linear", 30, 100, 0.7),
        ("linear", 100, 100, 0.0),
        ("constant", 70, 100, 1.0),
    ],
)
def test_lr_factor(schedule, step, total, expected):
    assert math.isclose(lr_factor(schedule, step, total), expected, abs_tol=1e-12)


def test_scheduler_learning_rates_at_steps():
    """The learning rate the optimizer actually uses, step by step."""
    model = torch.nn.Linear(3, 2)
    for schedule in ("cosine", "linear"):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s, schedule=schedule: lr_factor(schedule, s, 10))
        seen = []
        for _ in range(10):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        want = [
            1e-2 * (0.5 * (1 + math.cos(math.pi * s / 10)) if schedule == "cosine" else 1 - s / 10) for s in range(10)
        ]
        assert np.allclose(seen, want, rtol=0, atol=1e-15)


def test_no_weight_decay_on_bert_bias_and_layernorm():
    model = build_model("bert-tiny-synth", 3, vocab_size=50)
    opt = make_optimizer(model, 1e-3, 0.01)
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in no_decay) == (name.endswith("bias") or "LayerNorm" in name), name


def _tiny(seed=0):
    meta, images = synth_waterbirds(seed, SIZES, size=16)
    y = meta["y"].to_numpy()
    g = (2 * meta["y"] + meta["s"]).to_numpy()
    pool = np.flatnonzero(meta["split"].to_numpy() == "train")
    ev = {"test": np.flatnonzero(meta["split"].to_numpy() == "test")}
    return ImageInputs(images), y, g, pool, ev


def _run(epochs, resume=None, stop_after=None, mode="upsampling", on_epoch_check=None, **cfg_kw):
    inputs, y, g, pool, ev = _tiny()
    torch.manual_seed(0)
    model = build_model("resnet18-small", 2)
    cfg = TrainConfig(epochs=epochs, lr=1e-3, **cfg_kw)

    def on_epoch(e, row):
        if on_epoch_check is not None:
            on_epoch_check(e)
        if stop_after is not None and e == stop_after:
            raise KeyboardInterrupt  # killed after epoch k

    res = train(
        model,
        inputs,
        y,
        g,
        pool,
        balance(g[pool], mode, np.random.default_rng(0)),
        cfg,
        seed=3,
        n_groups=4,
        eval_sets=ev,
        resume=resume,
        on_epoch=on_epoch,
        progress=False,
    )
    return model, res


def test_same_seed_identical():
    m1, r1 = _run(2)
    m2, r2 = _run(2)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in r1.log] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in r2.log
    ]
    for (n, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), n


@pytest.mark.parametrize("evals_per_epoch", [1, 3])
def test_resume_after_kill_equals_uninterrupted(tmp_path, evals_per_epoch):
    ckpt = tmp_path / "resume.pt"
    with pytest.raises(KeyboardInterrupt):
        _run(3, resume=ckpt, stop_after=2, evals_per_epoch=evals_per_epoch)
    assert ckpt.exists()
    m_res, r_res = _run(3, resume=ckpt, evals_per_epoch=evals_per_epoch)
    m_ref, r_ref = _run(3, evals_per_epoch=evals_per_epoch)
    strip = lambda log: [{k: v for k, v in r.items() if k != "seconds"} for r in log]
    assert len(r_ref.log) == 3 * len(eval_steps(4, evals_per_epoch))
    assert strip(r_res.log) == strip(r_ref.log)
    for a, b in zip(m_res.state_dict().values(), m_ref.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "S, E, points",
    [
        (4, 1, [4]),
        (4, 2, [2, 4]),
        (4, 3, [2, 3, 4]),
        (4, 4, [1, 2, 3, 4]),
        (2, 5, [1, 2]),
        (10, 4, [3, 5, 8, 10]),
        (100, 4, [25, 50, 75, 100]),
        (1, 3, [1]),
        (0, 2, []),
    ],
)
def test_eval_steps(S, E, points):
    assert eval_steps(S, E) == points


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_evals_per_epoch_must_be_positive_int(bad):
    with pytest.raises(LLRError, match=f"evals_per_epoch = {bad!r}, expected an integer >= 1"):
        TrainConfig(epochs=1, evals_per_epoch=bad)
    with pytest.raises(LLRError, match="nc1_global_mean = 'median'"):
        TrainConfig(epochs=1, nc1_global_mean="median")


def test_evals_per_epoch_rows_and_training_unchanged():
    """3 evaluations per epoch of 4 steps: rows after steps 2, 3, 4 of each
    epoch (epoch 0.5, 0.75, 1.0, ...); each train_loss is the mean over the
    steps since the previous row, so their step-weighted mean is the epoch's
    loss of the once-per-epoch run; evaluating more often changes neither
    training (same weights) nor the end-of-epoch evaluations."""
    m1, r1 = _run(2, nc1=True)
    m3, r3 = _run(2, nc1=True, evals_per_epoch=3)
    assert [r["epoch"] for r in r1.log] == [1.0, 2.0] and [r["step"] for r in r1.log] == [4, 8]
    assert [r["epoch"] for r in r3.log] == [0.5, 0.75, 1.0, 1.5, 1.75, 2.0]
    assert [r["step"] for r in r3.log] == [2, 3, 4, 6, 7, 8]
    assert all(isinstance(r["epoch"], float) and isinstance(r["step"], int) for r in r3.log)
    for e in range(2):
        seg = r3.log[3 * e : 3 * e + 3]
        mean = (2 * seg[0]["train_loss"] + seg[1]["train_loss"] + seg[2]["train_loss"]) / 4
        assert mean == pytest.approx(r1.log[e]["train_loss"], rel=1e-6)
        assert len({r["train_loss"] for r in seg}) == 3
    for a, b in zip(m1.state_dict().values(), m3.state_dict().values()):
        assert torch.equal(a, b)
    skip = {"seconds", "train_loss"}
    for a, b in zip(r1.log, r3.log[2::3]):
        assert {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}
    assert all("train_nc1" in r and r["train_nc1"] > 0 for r in r3.log)
    assert all(set(r) == set(r3.log[0]) for r in r3.log)


def test_checkpoint_min_seconds_skips_early_checkpoints(tmp_path):
    """Checkpoints follow ``checkpoint_every`` unless ``checkpoint_min_seconds``
    has not passed since the start (or the last checkpoint)."""
    ckpt = tmp_path / "resume.pt"
    seen = []
    with pytest.raises(KeyboardInterrupt):
        _run(
            3,
            resume=ckpt,
            stop_after=2,
            on_epoch_check=lambda e: seen.append(ckpt.exists()),
            checkpoint_min_seconds=3600,
        )
    assert seen == [False, False] and not ckpt.exists()
    seen.clear()
    with pytest.raises(KeyboardInterrupt):
        _run(
            3, resume=ckpt, stop_after=2, on_epoch_check=lambda e: seen.append(ckpt.exists()), checkpoint_min_seconds=0
        )
    assert seen == [False, True] and ckpt.exists()  # written after epoch 1 (on_epoch runs before)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "llr", *args], cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    d = tmp_path_factory.mktemp("erm")
    p = json.dumps(PARAMS)
    assert (
        _cli(
            "prepare",
            "--dataset",
            "synth_waterbirds",
            "--params",
            p,
            "--out-metadata",
            "meta.csv",
            "--out-inputs",
            "inputs.npy",
            cwd=d,
        ).returncode
        == 0
    )
    assert (
        _cli(
            "split",
            "--dataset",
            "synth_waterbirds",
            "--metadata",
            "meta.csv",
            "--seed",
            "1",
            "--out",
            "split.csv",
            cwd=d,
        ).returncode
        == 0
    )
    return d


def _erm(d, outdir, **over):
    p = json.dumps({**PARAMS, **over})
    return _cli(
        "erm",
        "--dataset",
        "synth_waterbirds",
        "--metadata",
        "meta.csv",
        "--split",
        "split.csv",
        "--inputs",
        "inputs.npy",
        "--cell",
        "train_group_upweighting",
        "--seed",
        "1",
        "--params",
        p,
        "--outdir",
        outdir,
        cwd=d,
    )


def test_erm_job_outputs(prepared):
    res = _erm(prepared, "ok", epochs=2)
    assert res.returncode == 0, res.stderr
    out = prepared / "ok"
    m = json.loads((out / "metrics.json").read_text())
    n = sum(sum(v) for v in SIZES.values())
    emb = np.load(out / "embeddings.npy")
    assert emb.shape == (n, 512) and emb.dtype == np.float16
    assert set(m["roles"]) == {"train", "heldout", "val", "test"}
    log = (out / "log.csv").read_text().splitlines()
    assert len(log) == 3 and "test_wga" in log[0] and "train_loss" in log[0]
    assert not (out / "resume.pt").exists()
    with np.load(out / "head.npz") as h:
        assert h["W"].shape == (2, 512)


def test_nan_loss_stops_with_message_and_no_outputs(prepared):
    res = _erm(prepared, "nan", lr=1e30)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("llr: error: training loss became nan in epoch 1"), res.stderr
    left = sorted(p.name for p in (prepared / "nan").iterdir()) if (prepared / "nan").exists() else []
    assert left == []


@pytest.mark.parametrize("global_mean", ["class_means", "all"])
def test_erm_job_nc1_equals_recomputed_from_embeddings(prepared, global_mean):
    """With nc1 on, metrics.json's NC1 (training pool and held-out set, final
    model) equals NC1 recomputed from the written float16 embeddings.npy for
    the same examples within 1%, with the configured global mean; the log has
    evals_per_epoch rows per epoch, each with the training pool's NC1, the
    last one from the same final pass as metrics.json."""
    import pandas as pd

    from llr.analysis.nc1 import nc1

    out = prepared / f"nc1_{global_mean}"
    res = _erm(prepared, out.name, epochs=2, nc1=True, evals_per_epoch=2, nc1_global_mean=global_mean)
    assert res.returncode == 0, res.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["nc1"]["global_mean"] == global_mean
    emb = np.load(out / "embeddings.npy")
    assert emb.dtype == np.float16
    meta = pd.read_csv(prepared / "meta.csv")
    roles = pd.read_csv(prepared / "split.csv")["role"].to_numpy()
    y = meta["y"].to_numpy()
    for role, key in (("train", "train"), ("heldout", "heldout")):
        pos = np.flatnonzero(roles == role)
        ref = nc1(emb[pos], y[pos], 2, global_mean=global_mean)
        assert m["nc1"][key] == pytest.approx(ref, rel=0.01)
        if role == "train":  # 60 vs 36 examples per class: the option matters (held-out: 12 and 12)
            other = nc1(emb[pos], y[pos], 2, global_mean="all" if global_mean == "class_means" else "class_means")
            assert abs(other - ref) > 0.03 * ref
    log = pd.read_csv(out / "log.csv")
    # 96 training examples, batch 32: 3 steps per epoch, evaluated after steps 2 and 3
    assert log["step"].tolist() == [2, 3, 5, 6] and log["step"].dtype.kind == "i"
    np.testing.assert_allclose(log["epoch"], [2 / 3, 1, 5 / 3, 2], rtol=1e-12)
    assert log["train_nc1"].notna().all()
    assert log["train_nc1"].iloc[-1] == pytest.approx(m["nc1"]["train"], rel=1e-9)


def test_erm_job_rejects_bad_evals_per_epoch(prepared):
    res = _erm(prepared, "bad_evals", evals_per_epoch=0)
    assert res.returncode == 2
    assert (
        res.stderr.strip().splitlines()[-1]
        == "llr: error: training params: evals_per_epoch = 0, expected an integer >= 1"
    )


def test_batch_loss_matches_cross_entropy_with_class_weights():
    """The default reduction is what torch's cross_entropy(weight=n_max/n_c)
    computes in the authors' code: sum(w l) / sum(w), so the weights' scale
    cancels; "mean" keeps it (mean(w l))."""
    from llr.train.erm import batch_loss

    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(16, 3, generator=g), torch.randint(0, 3, (16,), generator=g)
    class_w = torch.tensor([1.0, 3.31, 5.71])
    losses = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    ref = torch.nn.functional.cross_entropy(logits, y, weight=class_w)
    assert torch.allclose(batch_loss(losses, class_w[y]), ref)
    assert torch.allclose(batch_loss(losses, 10 * class_w[y]), ref)
    assert torch.allclose(batch_loss(losses, class_w[y], "mean"), (losses * class_w[y]).mean())
    assert not torch.allclose(batch_loss(losses, 10 * class_w[y], "mean"), batch_loss(losses, class_w[y], "mean"))
    assert torch.equal(batch_loss(losses, None), losses.mean())
    with pytest.raises(LLRError, match="loss_reduction"):
        TrainConfig(epochs=1, loss_reduction="sum")
