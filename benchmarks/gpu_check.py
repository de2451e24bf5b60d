"""GPU check: ERM throughput of the paper's backbones through the project's
input pipeline, its ceiling, GPU sharing, memory, and a tiny workflow run.

Run through ``benchmarks/gpu_check.sh`` (docs/gpu.md). On a GPU, nothing is
downloaded: a random-init torchvision ResNet-50 (``weights=None``) at 224 px
(paper Table 3: Waterbirds/CelebA) and a random-init BERT-base (a
``BertConfig`` of bert-base size) at 128 tokens (MultiNLI), batch 32, on
random uint8 images and token ids. One table, a row per model x number of
jobs sharing the GPU:

* ``pipeline/s``: examples/s of ``llr.train.erm.train`` (one epoch, the ERM
  jobs' code: loader, batched augmentation of a pre-decoded uint8 cache at
  256 px or a token cache, AdamW, bf16 autocast), summed over the jobs;
* ``ceiling/s``: the same model, loss and optimizer step on batches already
  on the device; ``ratio`` = pipeline / ceiling;
* ``vs 1 job``: total pipeline throughput over that of one job;
* ``peak MiB/job``: ``torch.cuda.max_memory_allocated`` (largest job).

Jobs are separate processes started together; each claims a slot on one
device through ``llr.runtime.gpu.claim`` (``LLR_JOBS_PER_GPU`` = the largest job
count), and the timed phases start at a common barrier. Then the workflow
step: ``results/tiny/figures/fig4.png`` of ``tests/configs/tiny.yaml`` with
one dataset, through ``profiles/local-gpu`` on ``cuda`` and with the CPU
defaults, whose output files, embedding shapes and metrics keys must agree.

``--cpu``: tiny sizes (ResNet-18 at 32 px, a 2-layer BERT at 32 tokens, a few
steps, 1 and 2 jobs, no workflow step) to check the script itself.
Exit status 0 only when every step passed; a failure names what to look at.

    python benchmarks/gpu_check.py [--cpu] [--jobs 1 2 4] [--seconds 6] [--no-workflow] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIG = REPO / "workflow" / "configs" / "paper.yaml"
TINY_CONFIG = REPO / "tests" / "configs" / "tiny.yaml"
WORKFLOW_TARGET = "results/tiny/figures/fig4.png"
WORKFLOW_DATASET = "synth_waterbirds"
COLUMNS = ("model", "input", "jobs", "unit", "pipeline/s", "ceiling/s", "ratio", "vs 1 job", "peak MiB/job")


def model_specs(cpu: bool) -> list[dict]:
    """The two benchmark models: the paper's (GPU) or tiny stand-ins (``--cpu``).
    Data-loader workers and threads follow workflow/configs/paper.yaml on a GPU."""
    paper = _paper_settings()
    if cpu:
        return [
            dict(
                name="resnet18",
                kind="image",
                arch="resnet18",
                cache=40,
                crop=32,
                n=128,
                unit="img/s",
                lr=1e-5,
                schedule="cosine",
                num_workers=0,
                threads=1,
            ),
            dict(
                name="bert-2layer",
                kind="text",
                arch="bert-tiny",
                seq=32,
                n=128,
                unit="seq/s",
                lr=1e-5,
                schedule="linear",
                num_workers=0,
                threads=1,
            ),
        ]
    return [
        dict(
            name="resnet50",
            kind="image",
            arch="resnet50",
            cache=256,
            crop=224,
            n=1024,
            unit="img/s",
            lr=1e-5,
            schedule="cosine",
            num_workers=paper["image_workers"],
            threads=paper["threads"],
        ),
        dict(
            name="bert-base",
            kind="text",
            arch="bert-base-uncased",
            seq=128,
            n=2048,
            unit="seq/s",
            lr=1e-5,
            schedule="linear",
            num_workers=paper["text_workers"],
            threads=paper["threads"],
        ),
    ]


def _paper_settings() -> dict:
    """threads and loader workers of the paper's ERM jobs (defaults if unreadable)."""
    out = {"threads": 4, "image_workers": 4, "text_workers": 2}
    try:
        import yaml

        cfg = yaml.safe_load(PAPER_CONFIG.read_text())
        out["threads"] = int(cfg.get("threads", 4))
        out["image_workers"] = int(cfg["erm"]["waterbirds"].get("num_workers", 4))
        out["text_workers"] = int(cfg["erm"]["multinli"].get("num_workers", 2))
    except Exception:  # a moved config changes nothing measured here
        pass
    return out


def make_caches(folder: Path, specs: list[dict], seed: int = 0) -> None:
    """Random inputs in the workflow's cache formats: a uint8 ``.npy``
    (N, 3, cache, cache) for images, a token ``.npz`` (input_ids,
    attention_mask, token_type_ids; every row full length) for text, and
    random binary labels."""
    rng = np.random.default_rng(seed)
    for s in specs:
        if s["kind"] == "image":
            path = folder / f"{s['name']}_images.npy"
            np.save(path, rng.integers(0, 256, (s["n"], 3, s["cache"], s["cache"]), dtype=np.uint8))
        else:
            path = folder / f"{s['name']}_tokens.npz"
            ids = rng.integers(1000, 30522, (s["n"], s["seq"]), dtype=np.int64)
            ids[:, 0] = 101  # [CLS]
            np.savez(path, input_ids=ids, attention_mask=np.ones_like(ids), token_type_ids=np.zeros_like(ids))
        s["cache_path"] = str(path)
        labels = folder / f"{s['name']}_labels.npy"
        np.save(labels, rng.integers(0, 2, s["n"]))
        s["labels_path"] = str(labels)


# ---------------------------------------------------------------- worker side
def _barrier(folder: Path, name: str, rank: int, k: int, timeout: float) -> None:
    """Wait until all ``k`` jobs reached ``name`` (a file per job)."""
    (folder / f"{name}.{rank}").touch()
    t0 = time.monotonic()
    while sum(1 for r in range(k) if (folder / f"{name}.{r}").exists()) < k:
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"barrier {name}: waited {timeout:.0f}s for the other jobs")
        time.sleep(0.01)


def worker(spec_path: str) -> None:
    """One job: claim a GPU slot, then per model warm up, calibrate (one job)
    or take the given step counts, and time a pipeline and a ceiling phase."""
    job = json.loads(Path(spec_path).read_text())
    from llr.runtime.gpu import claim, current_claim

    claim(timeout=job["timeout"], poll=0.05)
    import torch
    import torch.nn.functional as F

    from llr.data.inputs import ImageInputs, TextInputs
    from llr.models.factory import build_model
    from llr.train.balancing import balance
    from llr.train.erm import TrainConfig, _to, make_optimizer, train

    device = torch.device(job["device"])
    cuda = device.type == "cuda"
    barrier = Path(job["barrier"])
    out = {"claim": current_claim(), "models": {}}
    for s in job["models"]:
        torch.set_num_threads(s["threads"])
        y = np.load(s["labels_path"])
        if s["kind"] == "image":
            inputs = ImageInputs(np.load(s["cache_path"], mmap_mode="r"), s["crop"])
        else:
            inputs = TextInputs(s["cache_path"])
        torch.manual_seed(job["rank"])
        model = build_model(s["arch"], 2)
        bs = job["batch_size"]
        cfg = TrainConfig(
            epochs=1,
            lr=s["lr"],
            batch_size=bs,
            schedule=s["schedule"],
            device=job["device"],
            num_workers=s["num_workers"],
            checkpoint_every=0,
        )

        def run_pipeline(steps: int) -> tuple[float, float]:
            pool = np.arange(steps * bs) % len(y)
            t0 = time.time()
            train(
                model,
                inputs,
                y,
                y,
                pool,
                balance(y[pool], "none", None),
                cfg,
                seed=job["rank"],
                n_groups=2,
                progress=False,
            )  # returns after reading the epoch's loss: the device is done
            return t0, time.time()

        def make_batches() -> list:
            """The ceiling's inputs: batches made in advance, already on the device."""
            made = []
            for i in range(4):
                pos = np.arange(i * bs, (i + 1) * bs) % len(y)
                x = inputs.batch(pos, True, torch.Generator().manual_seed(i))
                made.append((_to(x, device), torch.as_tensor(y[pos]).to(device)))
            return made

        def run_ceiling(steps: int, batches: list) -> tuple[float, float]:
            opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
            model.train()
            if cuda:
                torch.cuda.synchronize()
            t0 = time.time()
            for i in range(steps):
                x, yb = batches[i % len(batches)]
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and cuda):
                    loss = F.cross_entropy(model(x).float(), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if cuda:
                torch.cuda.synchronize()
            return t0, time.time()

        def calibrate(run, *extra) -> int:
            """Steps for a phase of about job["seconds"] (alone on the device):
            the time per step from runs of n and 2n steps, so that a fixed cost
            (the loader's worker start) does not count as per-step time."""
            n = 2 * job["warmup_steps"]
            a1, b1 = run(n, *extra)
            a2, b2 = run(2 * n, *extra)
            per_step = max(((b2 - a2) - (b1 - a1)) / n, (b2 - a2) / (2 * n) / 4, 1e-6)
            return int(np.clip(job["seconds"] / per_step, job["min_steps"], job["max_steps"]))

        steps = dict(s["steps"]) if s.get("steps") else {}
        run_pipeline(job["warmup_steps"])  # moves the model, channels_last, first kernels
        if "pipeline" not in steps:
            steps["pipeline"] = calibrate(run_pipeline)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        _barrier(barrier, f"{s['name']}.pipeline", job["rank"], job["k"], job["timeout"])
        p0, p1 = run_pipeline(steps["pipeline"])
        # The job's peak: the ERM step through the real pipeline (before the ceiling's batches exist).
        peak = int(torch.cuda.max_memory_allocated(device)) if cuda else None
        batches = make_batches()
        run_ceiling(job["warmup_steps"], batches)
        if "ceiling" not in steps:
            steps["ceiling"] = calibrate(run_ceiling, batches)
        _barrier(barrier, f"{s['name']}.ceiling", job["rank"], job["k"], job["timeout"])
        c0, c1 = run_ceiling(steps["ceiling"], batches)
        out["models"][s["name"]] = {
            "steps": steps,
            "pipeline": [p0, p1, steps["pipeline"] * bs],
            "ceiling": [c0, c1, steps["ceiling"] * bs],
            "peak_bytes": peak,
        }
        model = batches = None  # free the device memory before the next model
        if cuda:
            torch.cuda.empty_cache()
    Path(job["out"]).write_text(json.dumps(out))


# ---------------------------------------------------------------- parent side
def run_round(k: int, specs: list[dict], args, work: Path, env: dict, steps: dict | None) -> dict:
    """Start ``k`` jobs together; return per model the total throughputs and
    the largest peak memory, and each job's claim."""
    rd = work / f"jobs{k}"
    (rd / "barrier").mkdir(parents=True)
    # Later rounds split the one-job step counts among the k jobs (same total work).
    models = [
        dict(
            s,
            steps=None
            if steps is None
            else {ph: max(args.min_steps, -(-n // k)) for ph, n in steps[s["name"]].items()},
        )
        for s in specs
    ]
    procs = []
    for rank in range(k):
        job = {
            "rank": rank,
            "k": k,
            "device": args.device,
            "barrier": str(rd / "barrier"),
            "models": models,
            "batch_size": args.batch_size,
            "seconds": args.seconds,
            "warmup_steps": args.warmup_steps,
            "min_steps": args.min_steps,
            "max_steps": args.max_steps,
            "timeout": args.job_timeout,
            "out": str(rd / f"job{rank}.json"),
        }
        (rd / f"job{rank}.spec.json").write_text(json.dumps(job))
        log = open(rd / f"job{rank}.log", "w")
        procs.append(
            (
                subprocess.Popen(
                    [sys.executable, __file__, "--worker", str(rd / f"job{rank}.spec.json")],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        )
    failed = None
    deadline = time.monotonic() + args.job_timeout
    while any(p.poll() is None for p, _ in procs):
        bad = [i for i, (p, _) in enumerate(procs) if p.returncode not in (None, 0)]
        if bad or time.monotonic() > deadline:
            failed = bad[0] if bad else next(i for i, (p, _) in enumerate(procs) if p.poll() is None)
            for p, _ in procs:  # the others would wait at a barrier for nothing
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(0.1)
    for p, log in procs:
        p.wait()
        log.close()
    if failed is None:
        failed = next((i for i, (p, _) in enumerate(procs) if p.returncode != 0), None)
    if failed is not None:
        logf = rd / f"job{failed}.log"
        tail = "\n".join(logf.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(
            f"{k} job(s) sharing the device: job {failed} failed "
            f"(exit {procs[failed][0].returncode}); look at {logf}:\n{tail}"
        )
    jobs = [json.loads((rd / f"job{r}.json").read_text()) for r in range(k)]
    claims = [tuple(j["claim"]) if j["claim"] else None for j in jobs]
    res = {"claims": claims, "models": {}}
    for s in specs:
        per = [j["models"][s["name"]] for j in jobs]
        row = {}
        for phase in ("pipeline", "ceiling"):
            t0 = min(m[phase][0] for m in per)
            t1 = max(m[phase][1] for m in per)
            row[phase] = sum(m[phase][2] for m in per) / max(t1 - t0, 1e-9)
        peaks = [m["peak_bytes"] for m in per if m["peak_bytes"] is not None]
        row["peak_mib"] = max(peaks) / 2**20 if peaks else None
        row["steps"] = per[0]["steps"]
        res["models"][s["name"]] = row
    return res


def format_table(specs: list[dict], rounds: dict[int, dict]) -> str:
    """The one results table: a row per model x job count."""
    rows = [COLUMNS]
    for s in specs:
        one = rounds.get(min(rounds), {}).get("models", {}).get(s["name"]) if rounds else None
        for k in sorted(rounds):
            m = rounds[k]["models"][s["name"]]
            size = f"{s['crop']}px" if s["kind"] == "image" else f"{s['seq']}tok"
            peak = "n/a" if m["peak_mib"] is None else f"{m['peak_mib']:.0f}"
            rows.append(
                (
                    s["name"],
                    size,
                    str(k),
                    s["unit"],
                    f"{m['pipeline']:.1f}",
                    f"{m['ceiling']:.1f}",
                    f"{m['pipeline'] / m['ceiling']:.2f}",
                    f"{m['pipeline'] / one['pipeline']:.2f}",
                    peak,
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def check_claims(rounds: dict[int, dict], n_slots: int) -> list[str]:
    """Every job of a round held its own slot on one device."""
    problems = []
    for k, r in rounds.items():
        claims = r["claims"]
        if any(c is None for c in claims):
            problems.append(f"{k} jobs: a job claimed no GPU slot (llr.runtime.gpu.claim returned None)")
            continue
        devices = {c[0] for c in claims}
        slots = [c[1] for c in claims]
        if len(devices) != 1 or len(set(slots)) != k or max(slots) >= n_slots:
            problems.append(f"{k} jobs: claims {claims}, expected {k} distinct slots < {n_slots} on one device")
    return problems


# ---------------------------------------------------------------- workflow step
def _tree_keys(obj, prefix: str = "") -> set[str]:
    """Dotted key paths of a JSON object (list items by their keys, not positions)."""
    if isinstance(obj, dict):
        out = set()
        for k, v in obj.items():
            out.add(prefix + str(k))
            out |= _tree_keys(v, prefix + str(k) + ".")
        return out
    if isinstance(obj, list):
        return set().union(*[_tree_keys(v, prefix + "[].") for v in obj]) if obj else set()
    return set()


def compare_runs(cpu_dir: Path, gpu_dir: Path) -> list[str]:
    """Differences in shape between two workflow runs' results: the files
    written, each ``.npy``'s shape and dtype, each ``metrics.json``'s keys and
    each ``.csv``'s columns and row count. Empty when they agree."""
    import pandas as pd

    problems = []
    cpu_files = {p.relative_to(cpu_dir) for p in cpu_dir.rglob("*") if p.is_file()}
    gpu_files = {p.relative_to(gpu_dir) for p in gpu_dir.rglob("*") if p.is_file()}
    for f in sorted(cpu_files ^ gpu_files):
        problems.append(f"{f}: written by the {'CPU' if f in cpu_files else 'GPU'} run only")
    for f in sorted(cpu_files & gpu_files):
        a, b = cpu_dir / f, gpu_dir / f
        if f.suffix == ".npy":
            x, y = np.load(a, mmap_mode="r"), np.load(b, mmap_mode="r")
            if x.shape != y.shape or x.dtype != y.dtype:
                problems.append(f"{f}: CPU {x.shape} {x.dtype}, GPU {y.shape} {y.dtype}")
        elif f.suffix == ".json":
            ka, kb = _tree_keys(json.loads(a.read_text())), _tree_keys(json.loads(b.read_text()))
            if ka != kb:
                problems.append(f"{f}: keys only on CPU {sorted(ka - kb)[:5]}, only on GPU {sorted(kb - ka)[:5]}")
        elif f.suffix == ".csv":
            x, y = pd.read_csv(a), pd.read_csv(b)
            if list(x.columns) != list(y.columns) or len(x) != len(y):
                problems.append(
                    f"{f}: CPU {len(x)} rows {list(x.columns)[:8]}, GPU {len(y)} rows {list(y.columns)[:8]}"
                )
    return problems


def workflow_check(work: Path, env: dict, cores: int, timeout: float, simulate: bool = False) -> tuple[str, list[str]]:
    """The tiny fig4 chain for one dataset on the CPU and on ``cuda`` (the
    local-gpu profile, two jobs per GPU), at the same time; compare shapes.
    ``simulate``: the second run on the CPU too, its training jobs claiming
    slots of a simulated GPU (LLR_GPUS=1), to check this step without one."""
    # The target first: --configfile and --config take every word after them.
    base = [
        sys.executable,
        "-m",
        "snakemake",
        WORKFLOW_TARGET,
        "-s",
        str(REPO / "Snakefile"),
        "--configfile",
        str(TINY_CONFIG),
    ]
    half = str(max(cores // 2, 1))
    shared = {"LLR_JOBS_PER_GPU": "2", "LLR_GPU_LOCK_DIR": str(work / "workflow-locks")}
    runs = {
        "cpu": (["--cores", half, "--config", f"datasets=[{WORKFLOW_DATASET}]", "device=cpu"], {}),
        "gpu": (
            [
                "--profile",
                str(REPO / "profiles" / "local-gpu"),
                "--retries",
                "0",
                "--cores",
                half,
                "--config",
                f"datasets=[{WORKFLOW_DATASET}]",
                "device=cuda",
            ],
            shared,
        ),
    }
    if simulate:
        runs["gpu"] = (
            ["--cores", half, "--resources", "gpu=2", "--config", f"datasets=[{WORKFLOW_DATASET}]", "device=cpu"],
            {**shared, "LLR_GPUS": "1"},
        )
    procs = {}
    for name, (extra, more_env) in runs.items():
        d = work / f"workflow-{name}"
        d.mkdir()
        log = open(work / f"workflow-{name}.log", "w")
        procs[name] = (
            subprocess.Popen(
                base + ["--directory", str(d)] + extra,
                cwd=d,
                env={**env, **more_env},
                stdout=log,
                stderr=subprocess.STDOUT,
            ),
            log,
        )
    problems = []
    t0 = time.monotonic()
    for name, (p, log) in procs.items():
        try:
            p.wait(timeout=max(timeout - (time.monotonic() - t0), 1))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            problems.append(f"workflow on {name} took over {timeout:.0f}s; look at {work / f'workflow-{name}.log'}")
        log.close()
        if p.returncode not in (0, None) and not problems:
            problems.append(
                f"workflow on {name} failed (exit {p.returncode}); look at "
                f"{work / f'workflow-{name}.log'} and workflow-{name}/logs/tiny/"
            )
    if problems:
        return "failed", problems
    res = {n: work / f"workflow-{n}" / "results" for n in runs}
    problems += compare_runs(res["cpu"], res["gpu"])
    erm_logs = sorted((work / "workflow-gpu" / "logs" / "tiny" / "erm").rglob("*.log"))
    if not erm_logs:
        problems.append(f"no ERM logs under {work / 'workflow-gpu/logs/tiny/erm'}")
    for f in erm_logs:
        if "llr: claimed GPU" not in f.read_text(errors="replace"):
            problems.append(f"{f}: the ERM job claimed no GPU")
    n_emb = len(list(res["gpu"].rglob("embeddings.npy")))
    n_metrics = len(list(res["gpu"].rglob("metrics.json")))
    return (
        f"{n_emb} ERM embeddings and {n_metrics} metrics.json files, same shapes and keys as on the CPU"
        if not problems
        else "failed"
    ), problems


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--cpu", action="store_true", help="dry mode: tiny models on the CPU, no workflow step")
    ap.add_argument("--jobs", type=int, nargs="+", help="job counts sharing the device (GPU: 1 2 4; --cpu: 1 2)")
    ap.add_argument("--seconds", type=float, default=6.0, help="target length of each timed phase, one job")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--no-workflow", action="store_true", help="skip the workflow step")
    ap.add_argument(
        "--workflow",
        action="store_true",
        help="with --cpu: run the workflow step too, against a simulated GPU (a few minutes)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (printed)")
    a = ap.parse_args(argv)
    if a.worker:
        worker(a.worker)
        return 0
    t_start = time.monotonic()
    a.device = "cpu" if a.cpu else "cuda"
    a.limit = float(os.environ.get("LLR_GPU_CHECK_LIMIT", "480"))  # gpu_check.sh stops the run there
    a.jobs = sorted(set(a.jobs or ([1, 2] if a.cpu else [1, 2, 4])))
    if a.jobs[0] != 1:
        a.jobs = [1] + a.jobs  # the one-job row calibrates and anchors "vs 1 job"
    a.warmup_steps = 1 if a.cpu else 3
    a.min_steps, a.max_steps = (2, 2) if a.cpu else (10, 2000)
    a.job_timeout = 120.0 if a.cpu else 240.0
    specs = model_specs(a.cpu)
    work = Path(tempfile.mkdtemp(prefix="llr-gpu-check-"))
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("SLURM_JOB_ID", None)
    env.update(LLR_GPU_LOCK_DIR=str(work / "locks"), LLR_JOBS_PER_GPU=str(max(a.jobs)))
    if a.cpu:
        env["LLR_GPUS"] = "1"  # a simulated device: the jobs claim slots as on a GPU
    else:
        env.pop("LLR_GPUS", None)
        from llr.runtime.gpu import visible_devices

        devices = visible_devices()
        if not devices:
            print(
                "gpu_check: no GPU found (nvidia-smi -L, CUDA_VISIBLE_DEVICES); run with --cpu for the dry mode",
                file=sys.stderr,
            )
            return 2
        env["CUDA_VISIBLE_DEVICES"] = devices[0]  # every job on the same device
    problems: list[str] = []
    rounds: dict[int, dict] = {}
    print(f"gpu_check: {'CPU dry mode' if a.cpu else 'GPU'}; jobs {a.jobs}; work folder {work}", flush=True)
    try:
        make_caches(work, specs)
        # --cpu: fixed step counts; on a GPU the one-job round calibrates them.
        steps = {s["name"]: {"pipeline": 2, "ceiling": 2} for s in specs} if a.cpu else None
        for k in a.jobs:
            try:
                rounds[k] = run_round(k, specs, a, work, env, steps)
            except RuntimeError as e:
                problems.append(str(e))
                break
            if steps is None:
                steps = {n: m["steps"] for n, m in rounds[k]["models"].items()}
            print(f"gpu_check: {k} job(s) done ({time.monotonic() - t_start:.0f}s)", flush=True)
        problems += check_claims(rounds, max(a.jobs))
        wf_status = "skipped (--no-workflow)" if a.no_workflow else "skipped (--cpu)"
        if (a.workflow or not a.cpu) and not a.no_workflow and not problems:
            left = (a.limit - 10) - (time.monotonic() - t_start)
            wf_status, wf_problems = workflow_check(work, env, os.cpu_count() or 2, max(left, 60), simulate=a.cpu)
            problems += wf_problems
        print()
        if rounds:
            print(format_table(specs, rounds))
        print(
            f"\nworkflow ({WORKFLOW_TARGET}, {WORKFLOW_DATASET}, {'simulated GPU' if a.cpu else 'cuda'} vs cpu): "
            f"{wf_status}"
        )
        print(f"elapsed {time.monotonic() - t_start:.0f}s")
        for p in problems:
            print(f"gpu_check: FAILED: {p}", file=sys.stderr)
        if not problems:
            print("gpu_check: OK")
        return 1 if problems else 0
    finally:
        if a.keep or problems:
            print(f"gpu_check: work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
