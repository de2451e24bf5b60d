"""Scale-out, tested for real: one GPU per job on a local multi-GPU machine
(simulated device list), preemption with exact resume, Snakemake's
between-workflow cache, the profiles, and (LLR_TEST_SLURM=1) a real one-node
SLURM cluster running the tiny workflow through profiles/slurm."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, snakemake_env

TINY = REPO / "tests" / "configs" / "tiny.yaml"
PY = sys.executable


def llr_env(**extra) -> dict:
    env = snakemake_env()
    for k in ("LLR_GPUS", "CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "LLR_GPU_LOCK_DIR"):
        env.pop(k, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


# ------------------------------------------------------------ local GPUs
def test_visible_devices_and_when_to_claim(monkeypatch):
    from llr.runtime.gpu import gpu_count, visible_devices, wants_gpu

    assert visible_devices({"LLR_GPUS": "3"}) == ["0", "1", "2"]
    assert visible_devices({"LLR_GPUS": "0,2"}) == ["0", "2"]
    assert visible_devices({"LLR_GPUS": "0"}) == []
    assert visible_devices({"LLR_GPUS": "2", "CUDA_VISIBLE_DEVICES": "5"}) == ["0", "1"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "1,3"}) == ["1", "3"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert gpu_count({"CUDA_VISIBLE_DEVICES": ""}) == 1
    assert gpu_count({"LLR_GPUS": "4"}) == 4
    assert wants_gpu("cuda", {}) and wants_gpu("auto", {}) and wants_gpu("cuda:0", {})
    assert not wants_gpu("cpu", {})
    assert wants_gpu("cpu", {"LLR_GPUS": "2"})
    # SLURM already gave the job its devices
    assert not wants_gpu("cuda", {"SLURM_JOB_ID": "7"})
    assert wants_gpu("cuda", {"SLURM_JOB_ID": "7", "LLR_GPUS": "2"})


_WORKER = r"""
import json, os, sys, time
from llr.runtime.gpu import claim
dev = claim(poll=0.05)
t0 = time.time()
time.sleep(float(sys.argv[2]))
t1 = time.time()
with open(sys.argv[1], "w") as f:
    json.dump({"device": dev, "cvd": os.environ["CUDA_VISIBLE_DEVICES"], "t0": t0, "t1": t1}, f)
"""


def test_gpu_claims_exclusive_and_capped(tmp_path):
    """Six concurrent jobs on a simulated 2-GPU machine: each sees exactly one
    device, never two jobs on one device, never more than two at once."""
    env = llr_env(LLR_GPUS=2, LLR_GPU_LOCK_DIR=tmp_path / "locks")
    procs = [
        subprocess.Popen(
            [PY, "-c", _WORKER, str(tmp_path / f"job{i}.json"), "0.6"], env=env, stderr=subprocess.PIPE, text=True
        )
        for i in range(6)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert "llr: claimed GPU" in err
    jobs = [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(6)]
    assert all(j["device"] in ("0", "1") and j["cvd"] == j["device"] for j in jobs)
    assert {j["device"] for j in jobs} == {"0", "1"}
    for a in range(6):
        for b in range(a + 1, 6):
            ja, jb = jobs[a], jobs[b]
            if ja["device"] == jb["device"]:
                assert ja["t1"] <= jb["t0"] or jb["t1"] <= ja["t0"], (ja, jb)
    events = sorted([(j["t0"], 1) for j in jobs] + [(j["t1"], -1) for j in jobs], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, d in events:
        running += d
        peak = max(peak, running)
    assert peak <= 2


def test_training_commands_claim_before_cuda(tmp_path):
    """`python -m llr pretrain|erm` claim a device when asked to (cuda/auto or
    LLR_GPUS), before anything else; on CPU without LLR_GPUS they do not."""
    base = [PY, "-m", "llr", "pretrain", "--dataset", "no_such_dataset", "--out", str(tmp_path / "x.pt")]
    env = llr_env(LLR_GPUS=2, LLR_GPU_LOCK_DIR=tmp_path / "locks")
    r = subprocess.run(base + ["--params", '{"device": "auto"}'], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "llr: claimed GPU" in r.stderr, r.stderr
    r = subprocess.run(base + ["--params", '{"device": "cpu"}'], env=llr_env(), capture_output=True, text=True)
    assert r.returncode == 2 and "claimed GPU" not in r.stderr, r.stderr


def _profile(path: Path, env: dict) -> dict:
    from snakemake.profiles import ProfileConfigFileParser

    saved = dict(os.environ)
    try:
        for k in [k for k in os.environ if k.startswith("LLR_")]:
            del os.environ[k]
        os.environ.update(env)
        with open(path) as f:
            return dict(ProfileConfigFileParser().parse(f))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_local_gpu_profile_caps_training_jobs():
    p = _profile(REPO / "profiles/local-gpu/config.yaml", {"LLR_GPUS": "3"})
    assert p["resources"] == ["gpu=3"]
    assert p["config"] == ["device=cuda"]
    assert int(p["retries"]) >= 1


def test_slurm_profile_reads_environment():
    p = _profile(REPO / "profiles/slurm/config.yaml", {})
    assert p["executor"] == "slurm" and p["slurm-logdir"] == "logs/slurm"
    assert int(p["retries"]) >= 1 and p["rerun-incomplete"] == "True"
    assert "slurm-status-command" not in p
    assert p["config"] == ["forkserver=False"]
    assert not any("slurm_partition" in r or "slurm_account" in r for r in p["default-resources"] + p["set-resources"])
    p = _profile(
        REPO / "profiles/slurm/config.yaml",
        {
            "LLR_SLURM_ACCOUNT": "lab",
            "LLR_SLURM_PARTITION": "all",
            "LLR_SLURM_GPU_PARTITION": "gpu",
            "LLR_SLURM_STATUS_COMMAND": "squeue",
            "LLR_SLURM_CPUS_PER_GPU": "6",
        },
    )
    assert "slurm_account='lab'" in p["default-resources"]
    assert "slurm_partition='all'" in p["default-resources"]  # quoted: `all` is a Python builtin
    assert "erm:slurm_partition='gpu'" in p["set-resources"]
    assert "pretrain:slurm_partition='gpu'" in p["set-resources"]
    assert "erm:cpus_per_gpu=6" in p["set-resources"]
    assert p["slurm-status-command"] == "squeue"


# ------------------------------------------------------------ preemption
ERM_PARAMS = {
    "arch": "resnet18-small",
    "epochs": 4,
    "lr": 1e-3,
    "batch_size": 16,
    "schedule": "cosine",
    "threads": 1,
    "device": "cpu",
}


def _erm_cmd(d: Path, outdir: Path, params: dict) -> list[str]:
    return [
        PY,
        "-m",
        "llr",
        "erm",
        "--dataset",
        "synth_waterbirds",
        "--metadata",
        str(d / "meta.csv"),
        "--split",
        str(d / "split.csv"),
        "--inputs",
        str(d / "inputs.npy"),
        "--cell",
        "train_none",
        "--seed",
        "1",
        "--params",
        json.dumps(params),
        "--outdir",
        str(outdir),
    ]


def _same_run(a: Path, b: Path) -> None:
    ma, mb = json.loads((a / "metrics.json").read_text()), json.loads((b / "metrics.json").read_text())
    for m in (ma, mb):
        m.pop("train_seconds"), m.pop("_llr")  # the signature covers the timing too
    assert ma == mb
    la, lb = pd.read_csv(a / "log.csv"), pd.read_csv(b / "log.csv")
    pd.testing.assert_frame_equal(la.drop(columns="seconds"), lb.drop(columns="seconds"), check_exact=True)
    assert np.array_equal(np.load(a / "embeddings.npy"), np.load(b / "embeddings.npy"))
    ha, hb = np.load(a / "head.npz"), np.load(b / "head.npz")
    assert all(np.array_equal(ha[k], hb[k]) for k in ("W", "b"))


def test_erm_sigterm_then_rerun_resumes_exactly(tmp_path):
    env = llr_env()
    gen = {
        "seed": 0,
        "image_size": 16,
        "core_contrast": 0.3,
        "noise": 0.08,
        "sizes": {"train": [60, 8, 8, 20], "val": [10, 10, 10, 10], "test": [10, 10, 10, 10]},
    }
    subprocess.run(
        [
            PY,
            "-m",
            "llr",
            "prepare",
            "--dataset",
            "synth_waterbirds",
            "--params",
            json.dumps(gen),
            "--out-metadata",
            str(tmp_path / "meta.csv"),
            "--out-inputs",
            str(tmp_path / "inputs.npy"),
        ],
        env=env,
        check=True,
    )
    subprocess.run(
        [
            PY,
            "-m",
            "llr",
            "split",
            "--dataset",
            "synth_waterbirds",
            "--metadata",
            str(tmp_path / "meta.csv"),
            "--seed",
            "1",
            "--out",
            str(tmp_path / "split.csv"),
        ],
        env=env,
        check=True,
    )
    ref, cut = tmp_path / "uninterrupted", tmp_path / "interrupted"
    subprocess.run(_erm_cmd(tmp_path, ref, ERM_PARAMS), env=env, check=True, capture_output=True)

    # SIGTERM once the first epoch's checkpoint is on disk (as SLURM does on
    # preemption or timeout), then run the same command again.
    p = subprocess.Popen(_erm_cmd(tmp_path, cut, ERM_PARAMS), env=env, stdout=subprocess.PIPE, text=True)
    killed_after = None
    for line in p.stdout:
        if line.startswith("epoch "):
            t0 = time.time()
            while not (cut / "resume.pt").exists() and time.time() - t0 < 60:
                time.sleep(0.01)
            p.send_signal(signal.SIGTERM)
            killed_after = int(line.split()[1].split("/")[0])
            break
    p.stdout.close()
    assert p.wait(timeout=60) == -signal.SIGTERM
    assert killed_after is not None and killed_after < ERM_PARAMS["epochs"]
    assert (cut / "resume.pt").exists() and not (cut / "metrics.json").exists()
    saved = (cut / "resume.pt").read_bytes()

    r = subprocess.run(_erm_cmd(tmp_path, cut, ERM_PARAMS), env=env, check=True, capture_output=True, text=True)
    assert "resumed from" in r.stdout, r.stdout
    resumed_at = int(r.stdout.split("after epoch")[1].split()[0])
    assert 1 <= resumed_at < ERM_PARAMS["epochs"]
    assert f"epoch {resumed_at}/" not in r.stdout and f"epoch {ERM_PARAMS['epochs']}/" in r.stdout
    assert not (cut / "resume.pt").exists()
    _same_run(ref, cut)

    # A checkpoint left by a run with other settings is not picked up.
    other = tmp_path / "other"
    other.mkdir()
    (other / "resume.pt").write_bytes(saved)
    r = subprocess.run(
        _erm_cmd(tmp_path, other, {**ERM_PARAMS, "epochs": 1}), env=env, check=True, capture_output=True, text=True
    )
    assert "ignoring" in r.stdout and "resumed from" not in r.stdout, r.stdout
    assert len(pd.read_csv(other / "log.csv")) == 1


# ------------------------------------------------------------ between-workflow cache
@pytest.mark.slow
def test_cache_second_workflow_trains_nothing(tmp_path):
    """Two workflows in two folders share one SNAKEMAKE_OUTPUT_CACHE: the
    second restores pretrain and ERM outputs from the cache, training nothing."""
    cache = tmp_path / "cache"
    cache.mkdir()
    env = llr_env(SNAKEMAKE_OUTPUT_CACHE=cache)
    cell = "results/tiny/synth_waterbirds/seed1/erm/train_none"
    outs = ["embeddings.npy", "head.npz", "metrics.json", "log.csv", "model.pt"]
    runs = {}
    for name in ("first", "second"):
        d = tmp_path / name
        d.mkdir()
        cmd = [
            PY,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(d),
            "--configfile",
            str(TINY),
            "--cores",
            "2",
            f"{cell}/metrics.json",
            "--cache",
            "pretrain",
            "erm",
        ]
        r = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        runs[name] = r.stdout + r.stderr
    first, second = tmp_path / "first", tmp_path / "second"
    # the first run trained and stored its outputs in the cache
    assert "epoch 1/" in (first / "logs/tiny/erm/synth_waterbirds/seed1/train_none.log").read_text()
    assert "epoch 1/" in (first / "logs/tiny/pretrain/synth_waterbirds.log").read_text()
    assert "to cache" in runs["first"]
    # the second trained nothing: no training output, every output a link into the cache
    for log in ("logs/tiny/erm/synth_waterbirds/seed1/train_none.log", "logs/tiny/pretrain/synth_waterbirds.log"):
        assert not (second / log).exists() or "epoch" not in (second / log).read_text()
    for f in [f"{cell}/{o}" for o in outs] + ["results/tiny/synth_waterbirds/pretrain/backbone.pt"]:
        p = second / f
        assert p.is_symlink() and Path(os.readlink(p)).parent == cache, f
        assert f"Symlinking output file {f} from cache" in runs["second"]
    # the cache's files follow the umask (Snakemake makes them world-writable)
    mask = os.umask(0)
    os.umask(mask)
    for f in cache.rglob("*"):
        assert f.stat().st_mode & 0o777 & mask == 0, (f, oct(f.stat().st_mode))
    assert not list((second / "results").rglob("resume.pt"))
    assert json.loads((second / cell / "metrics.json").read_text()) == json.loads(
        (first / cell / "metrics.json").read_text()
    )


# ------------------------------------------------------------ a real SLURM cluster
@pytest.mark.slurm
@pytest.mark.skipif(
    os.environ.get("LLR_TEST_SLURM") != "1", reason="set LLR_TEST_SLURM=1 (root; about 13 min on 2 cores)"
)
def test_tiny_workflow_on_local_slurm(tmp_path):
    script = REPO / "tests" / "slurm" / "run_local_slurm.sh"
    r = subprocess.run(
        ["bash", str(script), str(tmp_path / "slurm")],
        cwd=tmp_path,
        env=snakemake_env(),
        capture_output=True,
        text=True,
        timeout=2400,
    )
    assert r.returncode == 0 and "PASS" in r.stdout, r.stdout[-5000:] + r.stderr[-5000:]
