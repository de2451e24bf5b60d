"""ERM engine: schedules, determinism, resume, NaN handling (issue 4)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from llr.balancing import balance
from llr.images import ImageInputs, synth_waterbirds
from llr.models import build_model
from llr.train import TrainConfig, lr_factor, make_optimizer, train

SIZES = {"train": [60, 12, 12, 36], "val": [8, 8, 8, 8], "test": [8, 8, 8, 8]}
PARAMS = {"arch": "resnet18-small", "epochs": 3, "lr": 1e-3, "image_size": 16, "sizes": SIZES, "threads": 1}


@pytest.mark.parametrize("schedule, step, total, expected", [
    ("cosine", 0, 100, 1.0), ("cosine", 50, 100, 0.5), ("cosine", 25, 100, 0.5 * (1 + math.cos(math.pi / 4))),
    ("cosine", 100, 100, 0.0), ("linear", 0, 100, 1.0), ("linear", 30, 100, 0.7), ("linear", 100, 100, 0.0),
    ("constant", 70, 100, 1.0),
])
def test_lr_factor(schedule, step, total, expected):
    assert math.isclose(lr_factor(schedule, step, total), expected, abs_tol=1e-12)


def test_scheduler_learning_rates_at_steps():
    """The learning rate the optimizer actually uses, step by step."""
    model = torch.nn.Linear(3, 2)
    for schedule in ("cosine", "linear"):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(schedule, s, 10))
        seen = []
        for _ in range(10):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        want = [1e-2 * (0.5 * (1 + math.cos(math.pi * s / 10)) if schedule == "cosine" else 1 - s / 10)
                for s in range(10)]
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

    res = train(model, inputs, y, g, pool, balance(g[pool], mode, np.random.default_rng(0)), cfg, seed=3,
                n_groups=4, eval_sets=ev, resume=resume, on_epoch=on_epoch, progress=False)
    return model, res


def test_same_seed_identical():
    m1, r1 = _run(2)
    m2, r2 = _run(2)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in r1.log] == \
           [{k: v for k, v in r.items() if k != "seconds"} for r in r2.log]
    for (n, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), n


def test_resume_after_kill_equals_uninterrupted(tmp_path):
    ckpt = tmp_path / "resume.pt"
    with pytest.raises(KeyboardInterrupt):
        _run(3, resume=ckpt, stop_after=2)
    assert ckpt.exists()
    m_res, r_res = _run(3, resume=ckpt)
    m_ref, r_ref = _run(3)
    strip = lambda log: [{k: v for k, v in r.items() if k != "seconds"} for r in log]
    assert strip(r_res.log) == strip(r_ref.log)
    for a, b in zip(m_res.state_dict().values(), m_ref.state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoint_min_seconds_skips_early_checkpoints(tmp_path):
    """Checkpoints follow ``checkpoint_every`` unless ``checkpoint_min_seconds``
    has not passed since the start (or the last checkpoint)."""
    ckpt = tmp_path / "resume.pt"
    seen = []
    with pytest.raises(KeyboardInterrupt):
        _run(3, resume=ckpt, stop_after=2, on_epoch_check=lambda e: seen.append(ckpt.exists()),
             checkpoint_min_seconds=3600)
    assert seen == [False, False] and not ckpt.exists()
    seen.clear()
    with pytest.raises(KeyboardInterrupt):
        _run(3, resume=ckpt, stop_after=2, on_epoch_check=lambda e: seen.append(ckpt.exists()),
             checkpoint_min_seconds=0)
    assert seen == [False, True] and ckpt.exists()  # written after epoch 1 (on_epoch runs before)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "llr", *args], cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    d = tmp_path_factory.mktemp("erm")
    p = json.dumps(PARAMS)
    assert _cli("prepare", "--dataset", "synth_waterbirds", "--params", p, "--out-metadata", "meta.csv",
                "--out-inputs", "inputs.npy", cwd=d).returncode == 0
    assert _cli("split", "--dataset", "synth_waterbirds", "--metadata", "meta.csv", "--seed", "1",
                "--out", "split.csv", cwd=d).returncode == 0
    return d


def _erm(d, outdir, **over):
    p = json.dumps({**PARAMS, **over})
    return _cli("erm", "--dataset", "synth_waterbirds", "--metadata", "meta.csv", "--split", "split.csv",
                "--inputs", "inputs.npy", "--cell", "train_group_upweighting", "--seed", "1", "--params", p,
                "--outdir", outdir, cwd=d)


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
