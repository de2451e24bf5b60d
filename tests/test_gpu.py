"""GPU slots (several training jobs per device, llr.runtime.gpu) on simulated
devices, the local-gpu profile's slot count, and benchmarks/gpu_check.sh in
its CPU dry mode (its comparison and claim checkers where they pass and where
they fail)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, snakemake_env

PY = sys.executable
sys.path.insert(0, str(REPO / "benchmarks"))


def llr_env(**extra) -> dict:
    env = snakemake_env()
    for k in ("LLR_GPUS", "CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "LLR_GPU_LOCK_DIR", "LLR_JOBS_PER_GPU"):
        env.pop(k, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


# ------------------------------------------------------------ the setting
def test_jobs_per_gpu_setting():
    from llr.errors import LLRError
    from llr.runtime.gpu import gpu_slots, jobs_per_gpu

    assert jobs_per_gpu({}) == 1 and jobs_per_gpu({"LLR_JOBS_PER_GPU": ""}) == 1
    assert jobs_per_gpu({"LLR_JOBS_PER_GPU": " 3 "}) == 3
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(LLRError, match=f"LLR_JOBS_PER_GPU='{re.escape(bad)}'"):
            jobs_per_gpu({"LLR_JOBS_PER_GPU": bad})
    assert gpu_slots({"LLR_GPUS": "2", "LLR_JOBS_PER_GPU": "2"}) == 4
    assert gpu_slots({"LLR_GPUS": "0,2,3", "LLR_JOBS_PER_GPU": "4"}) == 12
    assert gpu_slots({"LLR_GPUS": "3"}) == 3


def _profile(env: dict) -> dict:
    from snakemake.profiles import ProfileConfigFileParser

    saved = dict(os.environ)
    try:
        for k in [k for k in os.environ if k.startswith("LLR_")]:
            del os.environ[k]
        os.environ.update(env)
        with open(REPO / "profiles/local-gpu/config.yaml") as f:
            return dict(ProfileConfigFileParser().parse(f))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_local_gpu_profile_counts_slots():
    assert _profile({"LLR_GPUS": "3"})["resources"] == ["gpu=3"]
    assert _profile({"LLR_GPUS": "3", "LLR_JOBS_PER_GPU": "2"})["resources"] == ["gpu=6"]
    assert _profile({"LLR_GPUS": "1,4", "LLR_JOBS_PER_GPU": "4"})["resources"] == ["gpu=8"]


# ------------------------------------------------------------ choosing a slot
def _hold(lock_dir: Path, name: str) -> int:
    """Hold a slot as another job would (flock is per open file: this fd
    conflicts with the claim's own opens, in this process too)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / name, os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


@pytest.fixture
def claimer(monkeypatch):
    """llr.runtime.gpu.claim in this process, its claim and CUDA_VISIBLE_DEVICES undone after."""
    from llr.runtime import gpu

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "unset-by-test")
    held: list[int] = []
    yield gpu, held
    gpu.release()
    for fd in held:
        os.close(fd)


def test_claim_prefers_the_least_held_device(tmp_path, claimer):
    gpu, held = claimer
    locks = tmp_path / "locks"
    for busy, expect in (("0", "1"), ("1", "0")):  # one of the two goes against the pid rotation
        held.append(_hold(locks, f"gpu-{busy}.lock"))
        assert gpu.claim(["0", "1"], str(locks), timeout=1, poll=0.01, jobs_per_device=2) == expect
        assert gpu.current_claim() == (expect, 0)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == expect
        gpu.release()
        os.close(held.pop())
    # device 0 full, device 1 half held on slot 0: the claim gets device 1's slot 1
    held += [_hold(locks, "gpu-0.lock"), _hold(locks, "gpu-0.slot1.lock"), _hold(locks, "gpu-1.lock")]
    assert gpu.claim(["0", "1"], str(locks), timeout=1, poll=0.01, jobs_per_device=2) == "1"
    assert gpu.current_claim() == ("1", 1)
    assert (locks / "gpu-1.slot1.lock").read_text().strip() == str(os.getpid())
    gpu.release()
    held.append(_hold(locks, "gpu-1.slot1.lock"))  # now every slot is taken
    with pytest.raises(TimeoutError, match=r"no free GPU slot among \['0', '1'\] x 2"):
        gpu.claim(["0", "1"], str(locks), timeout=0.2, poll=0.05, jobs_per_device=2)
    assert gpu.current_claim() is None


def test_one_job_per_gpu_locks_as_before(tmp_path, claimer):
    """N = 1: one lock file per device, named as before, the free device at
    the pid's offset taken first; a held device is skipped."""
    gpu, held = claimer
    locks = tmp_path / "locks"
    devs = ["0", "1", "2"]
    first = devs[os.getpid() % 3]
    assert gpu.claim(devs, str(locks), timeout=1, poll=0.01, jobs_per_device=1) == first
    assert gpu.current_claim() == (first, 0)
    gpu.release()
    held.append(_hold(locks, f"gpu-{first}.lock"))
    nxt = devs[(os.getpid() + 1) % 3]
    assert gpu.claim(devs, str(locks), timeout=1, poll=0.01, jobs_per_device=1) == nxt
    assert sorted(p.name for p in locks.iterdir()) == ["claim.lock", "gpu-0.lock", "gpu-1.lock", "gpu-2.lock"]


_WORKER = r"""
import json, os, sys, time
from llr.runtime.gpu import claim, current_claim
dev = claim(poll=0.02)
t0 = time.time()
time.sleep(float(sys.argv[2]))
t1 = time.time()
with open(sys.argv[1], "w") as f:
    json.dump({"device": dev, "slot": current_claim()[1], "cvd": os.environ["CUDA_VISIBLE_DEVICES"],
               "t0": t0, "t1": t1}, f)
"""


def test_gpu_slots_shared_and_capped(tmp_path):
    """Eight concurrent jobs on a simulated 2-GPU machine with 2 jobs per GPU:
    each sees one device, both devices are used and shared, never more than
    2 holders per device nor two on one slot at once."""
    env = llr_env(LLR_GPUS=2, LLR_JOBS_PER_GPU=2, LLR_GPU_LOCK_DIR=tmp_path / "locks")
    n = 8
    procs = [
        subprocess.Popen(
            [PY, "-c", _WORKER, str(tmp_path / f"job{i}.json"), "1.5"], env=env, stderr=subprocess.PIPE, text=True
        )
        for i in range(n)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert re.search(r"llr: claimed GPU [01] \(CUDA_VISIBLE_DEVICES=[01], slot [12] of 2", err), err
    jobs = [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(n)]
    assert all(j["device"] in ("0", "1") and j["cvd"] == j["device"] and j["slot"] in (0, 1) for j in jobs)
    assert {j["device"] for j in jobs} == {"0", "1"}
    peaks = {}
    for dev in ("0", "1"):
        mine = [j for j in jobs if j["device"] == dev]
        events = sorted([(j["t0"], 1) for j in mine] + [(j["t1"], -1) for j in mine])
        running = peak = 0
        for _, d in events:
            running += d
            peak = max(peak, running)
        peaks[dev] = peak
        for a in range(len(mine)):  # one holder per slot at a time
            for b in range(a + 1, len(mine)):
                ja, jb = mine[a], mine[b]
                if ja["slot"] == jb["slot"]:
                    assert ja["t1"] <= jb["t0"] or jb["t1"] <= ja["t0"], (ja, jb)
    assert max(peaks.values()) == 2, peaks  # capped at 2, and the slots were shared


# ------------------------------------------------------------ the GPU check
def test_gpu_check_cpu_dry_mode():
    """`gpu_check.sh --cpu`: one table with every column, a row per model x
    job count, positive throughputs, rc 0."""
    env = llr_env()
    r = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = r.stdout.splitlines()
    head = [i for i, l in enumerate(lines) if l.startswith("model ")]
    assert len(head) == 1, r.stdout
    cols = ("model", "input", "jobs", "unit", "pipeline/s", "ceiling/s", "ratio", "vs 1 job", "peak MiB/job")
    assert re.match(r"\s+".join(re.escape(c) for c in cols), lines[head[0]]), lines[head[0]]
    rows = [l.split() for l in lines[head[0] + 2 : head[0] + 6]]
    assert [(r_[0], r_[2]) for r_ in rows] == [
        ("resnet18", "1"),
        ("resnet18", "2"),
        ("bert-2layer", "1"),
        ("bert-2layer", "2"),
    ], rows
    for r_ in rows:
        assert r_[3] in ("img/s", "seq/s") and float(r_[4]) > 0 and float(r_[5]) > 0
        assert float(r_[6]) == pytest.approx(float(r_[4]) / float(r_[5]), abs=0.01)
        assert r_[8] == "n/a"  # no GPU memory on the CPU
    assert rows[0][7] == "1.00" and rows[2][7] == "1.00"
    assert "skipped (--cpu)" in r.stdout and "gpu_check: OK" in r.stdout


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a GPU")
def test_gpu_check_without_gpu_points_at_cpu_mode():
    r = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh")],
        env=llr_env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert r.returncode == 2 and "no GPU found" in r.stderr and "--cpu" in r.stderr, r.stderr


def _tree(root: Path) -> Path:
    (root / "a").mkdir(parents=True)
    np.save(root / "a" / "embeddings.npy", np.zeros((10, 4), np.float16))
    (root / "a" / "metrics.json").write_text(
        json.dumps({"roles": {"test": {"wga": 0.5, "acc": [1, 2]}}, "device": "cpu"})
    )
    pd.DataFrame({"x": [1, 2], "y": [3, 4]}).to_csv(root / "runs.csv", index=False)
    (root / "fig.png").write_bytes(b"png")
    return root


def test_compare_runs_same_shapes_and_each_difference(tmp_path):
    from gpu_check import compare_runs

    cpu = _tree(tmp_path / "cpu")
    gpu = _tree(tmp_path / "gpu")
    (gpu / "a" / "metrics.json").write_text(
        json.dumps({"roles": {"test": {"wga": 0.9, "acc": [3, 4]}}, "device": "cuda"})
    )  # other values, same keys
    (gpu / "fig.png").write_bytes(b"another picture")
    assert compare_runs(cpu, gpu) == []
    np.save(gpu / "a" / "embeddings.npy", np.zeros((10, 8), np.float16))
    (gpu / "a" / "metrics.json").write_text(json.dumps({"roles": {"test": {"acc": [1]}}, "device": "cuda"}))
    pd.DataFrame({"x": [1, 2, 3], "y": [3, 4, 5]}).to_csv(gpu / "runs.csv", index=False)
    (gpu / "extra.csv").write_text("x\n1\n")
    problems = compare_runs(cpu, gpu)
    assert len(problems) == 4, problems
    assert problems[0].startswith("extra.csv: written by the GPU run only")
    assert any("embeddings.npy" in p and "(10, 4)" in p and "(10, 8)" in p for p in problems)
    assert any("metrics.json" in p and "roles.test.wga" in p for p in problems)
    assert any(p.startswith("runs.csv: CPU 2 rows") for p in problems)


def test_check_claims():
    from gpu_check import check_claims

    ok = {1: {"claims": [("0", 0)]}, 2: {"claims": [("0", 1), ("0", 0)]}}
    assert check_claims(ok, 2) == []
    assert len(check_claims({2: {"claims": [("0", 0), ("0", 0)]}}, 2)) == 1  # one slot, two jobs
    assert len(check_claims({2: {"claims": [("0", 0), ("1", 0)]}}, 2)) == 1  # two devices
    assert len(check_claims({2: {"claims": [("0", 0), None]}}, 2)) == 1
