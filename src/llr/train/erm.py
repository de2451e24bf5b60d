"""ERM finetuning (paper Table 3) and the embedding pass.

One engine (``train``) serves pretraining of the synthetic backbones
(llr.train.pretrain), ERM cells with class or group balancing, and the NC1
runs: AdamW, cosine (images) or linear (text, no warm-up) schedule, group
metrics (and NC1) at evaluation points within epochs, checkpoint/resume at
epoch ends, progress bars for job logs, and a final pass that writes the
penultimate embeddings of every example, so the backbone runs over the
dataset once per ERM cell.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from llr.errors import LLRError
from llr.runtime.progress import progress as progress_bar
from llr.train.balancing import Balanced, epoch_order
from llr.train.metrics import evaluate


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (paper Table 3 for the real data)."""

    epochs: int
    lr: float = 1e-5
    weight_decay: float = 1e-4
    batch_size: int = 32
    schedule: str = "cosine"  # "cosine" (images) or "linear" (text, no warm-up)
    eval_batch_size: int = 256
    device: str = "cpu"
    num_workers: int = 0
    amp: bool = True  # bf16 autocast on CUDA
    nc1: bool = False  # NC1 of the training pool every epoch (Figure 2)
    checkpoint_every: int = 1  # epochs between resume checkpoints (0: never)
    checkpoint_min_seconds: float = 0.0  # ... and at least this long after the start or the last one
    evals_per_epoch: int = 1  # evaluation points per epoch, evenly spaced, each epoch's end included
    nc1_global_mean: str = "class_means"  # mu_G of NC1: "class_means" (paper section 2.1) or "all"
    # Upweighting's per-batch loss: "weighted_mean" sum(w l) / sum(w), as the
    # authors' F.cross_entropy(weight=n_max / n_c) (the paper is silent); or
    # "mean": mean(w l), where the weights' scale acts as a step size.
    loss_reduction: str = "weighted_mean"

    def __post_init__(self) -> None:
        from llr.analysis.nc1 import NC1_GLOBAL_MEANS

        e = self.evals_per_epoch
        if isinstance(e, bool) or not isinstance(e, int) or e < 1:
            raise LLRError(f"training params: evals_per_epoch = {e!r}, expected an integer >= 1")
        if self.nc1_global_mean not in NC1_GLOBAL_MEANS:
            raise LLRError(
                f"training params: nc1_global_mean = {self.nc1_global_mean!r}, expected one of {list(NC1_GLOBAL_MEANS)}"
            )
        if self.loss_reduction not in ("weighted_mean", "mean"):
            raise LLRError(
                f"training params: loss_reduction = {self.loss_reduction!r}, expected 'weighted_mean' or 'mean'"
            )


def batch_loss(losses: torch.Tensor, weights: torch.Tensor | None, reduction: str = "weighted_mean") -> torch.Tensor:
    """A batch's loss from per-example losses: the mean, or with upweighting
    weights sum(w l) / sum(w) ("weighted_mean", what the authors'
    ``F.cross_entropy(weight=...)`` computes) or mean(w l) ("mean")."""
    if weights is None:
        return losses.mean()
    if reduction == "weighted_mean":
        return (losses * weights).sum() / weights.sum()
    return (losses * weights).mean()


def eval_steps(steps_per_epoch: int, evals_per_epoch: int) -> list[int]:
    """Steps (1..S) of an epoch of S steps after which ``train`` evaluates:
    ceil(j S / E) for j = 1..E, so E evenly spaced points ending with the
    epoch (fewer, each step once, when S < E; none when S = 0)."""
    S, E = int(steps_per_epoch), int(evals_per_epoch)
    return sorted({-(-j * S // E) for j in range(1, E + 1)}) if S > 0 else []


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LLRError(f"device {name!r} requested but CUDA is not available; set device: cpu")
    return torch.device(name)


def make_optimizer(model, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; parameters named by ``model.no_decay_names()`` (BERT's biases
    and LayerNorm weights) get no weight decay."""
    no_decay = model.no_decay_names()
    decay = [p for n, p in model.named_parameters() if p.requires_grad and n not in no_decay]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and n in no_decay]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    # The fused kernel (CPU and CUDA) is 1.5x faster per step on the synthetic ResNet.
    return torch.optim.AdamW(groups, lr=lr, fused=True)


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of the base learning rate after ``step`` of ``total`` steps:
    cosine 0.5 (1 + cos(pi t / T)); linear 1 - t / T (no warm-up)."""
    t = min(step, total) / max(total, 1)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "linear":
        return 1.0 - t
    if schedule == "constant":
        return 1.0
    raise LLRError(f"schedule {schedule!r} unknown, expected cosine, linear or constant")


class _Batches(torch.utils.data.Dataset):
    """Index batches -> model inputs; augmentation seeded per batch so results
    do not depend on the number of loader workers."""

    def __init__(self, inputs, batches: list[np.ndarray], train: bool, seed: int):
        self.inputs, self.batches, self.train, self.seed = inputs, batches, train, seed

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        return self.inputs.batch(self.batches[i], self.train, gen)


def _loader(inputs, batches, train, seed, cfg: TrainConfig, device):
    ds = _Batches(inputs, batches, train, seed)
    return torch.utils.data.DataLoader(
        ds,
        batch_size=None,
        shuffle=False,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )


def _to(x, device):
    if isinstance(x, dict):
        return {k: v.to(device, non_blocking=True) for k, v in x.items()}
    if x.dim() == 4:  # image batches in the CNNs' channels_last layout
        return x.to(device, non_blocking=True, memory_format=torch.channels_last)
    return x.to(device, non_blocking=True)


@torch.no_grad()
def embed(
    model, inputs, positions: np.ndarray, cfg: TrainConfig, device, desc: str | None = "embed"
) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate embeddings (float32) and logits of ``positions``, eval mode;
    a progress bar named ``desc`` over the batches (None: no bar)."""
    model.eval()
    bs = cfg.eval_batch_size
    batches = [positions[i : i + bs] for i in range(0, len(positions), bs)]
    embs, logits = [], []
    loader = _loader(inputs, batches, False, 0, cfg, device)
    if desc is not None:  # iterates the loader as a plain for loop would: same order, same worker seeds
        loader = progress_bar(loader, desc=desc, total=len(batches), unit="batch")
    for x in loader:
        x = _to(x, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"):
            h = model.embed(x)
            z = model.head(h)
        embs.append(h.float())
        logits.append(z.float())
    if not embs:
        return np.zeros((0, model.dim), np.float32), np.zeros((0, model.head.out_features), np.float32)
    return torch.cat(embs).cpu().numpy(), torch.cat(logits).cpu().numpy()


@dataclass
class TrainResult:
    log: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    final: tuple[np.ndarray, np.ndarray] | None = None  # (embeddings, logits) of final_positions


def train(
    model,
    inputs,
    y_all: np.ndarray,
    g_all: np.ndarray,
    pool: np.ndarray,
    balanced: Balanced,
    cfg: TrainConfig,
    *,
    seed: int,
    n_groups: int,
    eval_sets: dict[str, np.ndarray] | None = None,
    group_weights: np.ndarray | None = None,
    resume: str | os.PathLike | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    progress: bool = True,
    final_positions: np.ndarray | None = None,
    input_files: list[str] | None = None,
    run_params: dict | None = None,
    desc: str = "train",
) -> TrainResult:
    """Train ``model`` on ``pool[balanced.positions]`` for ``cfg.epochs`` epochs.

    ``cfg.evals_per_epoch`` times per epoch (``eval_steps``: evenly spaced,
    each epoch's end included) the log gets a row: ``epoch`` (float, epochs
    done, e.g. 0.25), ``step`` (optimizer steps done), the mean training loss
    since the previous row, the learning rate, and for each eval set (e.g. val,
    test) per-group accuracy, WGA and mean accuracy; with ``cfg.nc1`` also NC1
    of the (unaugmented) training pool (``cfg.nc1_global_mean``). Evaluation
    does not change training. ``on_epoch(epoch, row)`` runs after each
    epoch's last row. With ``resume`` a checkpoint (at an epoch's end) is
    written every ``cfg.checkpoint_every`` epochs (skipped while less than
    ``cfg.checkpoint_min_seconds`` passed since the start or the last one:
    short runs need none and save the writes) and picked up on restart,
    so that a killed run ends with the same metrics as an uninterrupted one.
    With ``final_positions`` (a superset of the eval sets and, with NC1, of
    ``pool``) the last evaluation is one pass over those examples,
    returned as ``result.final`` = (embeddings, logits) in their order, so
    the caller's embedding pass and the last log row share the backbone pass.
    With ``progress`` a line per log row and a progress bar named ``desc``
    over the optimizer steps (and one over that final pass).
    """
    device = resolve_device(cfg.device)
    torch.manual_seed(seed)
    model.to(device)
    if hasattr(model.backbone, "conv1"):  # CNNs: channels_last (faster on GPUs and in oneDNN on CPUs)
        model.to(memory_format=torch.channels_last)
    train_pos = pool[balanced.positions]
    y_t = torch.as_tensor(np.array(y_all), dtype=torch.long)
    w_all = None
    if balanced.loss_weights is not None:
        w_all = torch.zeros(len(y_all), dtype=torch.float32)
        w_all[torch.as_tensor(train_pos)] = torch.as_tensor(balanced.loss_weights, dtype=torch.float32)
    steps_per_epoch = math.ceil(len(train_pos) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg.schedule, s, total))
    order_gen = torch.Generator().manual_seed(seed)
    result = TrainResult()
    start_epoch = 0
    fingerprint = _run_fingerprint(cfg, seed, train_pos, balanced, model, input_files, run_params)
    if resume is not None and Path(resume).exists():
        state = torch.load(resume, map_location="cpu", weights_only=False)
        if state.get("fingerprint") != fingerprint:
            print(f"ignoring {resume}: written by a run with other settings or data", flush=True)
            Path(resume).unlink()
            state = None
    else:
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        order_gen.set_state(state["order_gen"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        result.log = state["log"]
        start_epoch = state["epoch"]
        print(f"resumed from {resume} after epoch {start_epoch}", flush=True)
    from llr.analysis.nc1 import nc1

    def evaluate_point(
        epoch: int, step: int, n_steps: int, loss_sum: torch.Tensor, n_batches: int, seconds: float
    ) -> dict:
        """One log row after ``step`` of ``n_steps`` steps of ``epoch`` (0-based):
        training loss since the previous row, then an eval-mode pass over every
        example the row needs (at the very end over ``final_positions`` too).
        The pass leaves the RNGs as it found them, so evaluating more or less
        often does not change training (e.g. BERT's dropout)."""
        train_loss = float(loss_sum) / max(n_batches, 1)
        if not math.isfinite(train_loss):
            if resume is not None and Path(resume).exists():
                Path(resume).unlink()
            raise LLRError(
                f"training loss became {train_loss} in epoch {epoch + 1} (lr {cfg.lr}); "
                f"lower the learning rate or check the inputs"
            )
        frac = step / n_steps if n_steps else 1.0
        row = {
            "epoch": epoch + frac,
            "step": epoch * steps_per_epoch + step,
            "train_loss": train_loss,
            "lr": sched.get_last_lr()[0],
            "seconds": seconds,
        }
        sets = dict(eval_sets or {})
        if cfg.nc1:
            sets["__pool"] = pool
        final_pass = final_positions is not None and epoch + 1 == cfg.epochs and step == n_steps
        if final_pass:
            need = np.asarray(final_positions)
        elif sets:
            need = np.unique(np.concatenate(list(sets.values())))
        else:
            need = np.zeros(0, dtype=np.int64)
        if len(need):
            rng = torch.get_rng_state()
            cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
            h_all, z_all = embed(model, inputs, need, cfg, device, desc="embed" if progress and final_pass else None)
            torch.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, device)
            model.train()
            where = np.full(len(y_all), -1, dtype=np.int64)
            where[need] = np.arange(len(need))
            if final_pass:
                result.final = (h_all, z_all)
        for name, pos in sets.items():
            if name == "__pool":
                row["train_nc1"] = nc1(
                    h_all[where[pos]], y_all[pos], model.head.out_features, global_mean=cfg.nc1_global_mean
                )
                continue
            m = evaluate(z_all[where[pos]].argmax(1), y_all[pos], g_all[pos], n_groups, group_weights)
            row[f"{name}_wga"] = m["wga"]
            row[f"{name}_mean_acc"] = m["mean_acc"]
            for g, a in enumerate(m["acc_by_group"]):
                row[f"{name}_acc_g{g}"] = a
        result.log.append(row)
        if progress:  # the log row's numbers; rate and ETA are on the progress bar
            msg = " ".join(
                f"{k}={v:.4g}"
                for k, v in row.items()
                if k != "epoch" and isinstance(v, float) and not k.split("_")[-1].startswith("g")
            )
            print(f"epoch {row['epoch']:.4g}/{cfg.epochs} step {row['step']} {msg}", flush=True)
        return row

    t0 = last_checkpoint = time.time()
    bar = progress_bar(desc=desc, total=total, initial=start_epoch * steps_per_epoch, unit="step") if progress else None
    try:
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            order = epoch_order(len(train_pos), balanced.sample_weights, order_gen).numpy()
            batches = [train_pos[order[i : i + cfg.batch_size]] for i in range(0, len(order), cfg.batch_size)]
            # Evaluation points (Figures 2 and 6 are curves over training): evenly
            # spaced within the epoch, its end always included.
            points = set(eval_steps(len(batches), cfg.evals_per_epoch))
            loss_sum = torch.zeros((), device=device)
            n_since = 0
            te = time.time()
            row = None
            for step, x in enumerate(_loader(inputs, batches, True, seed * 10_007 + epoch, cfg, device)):
                idx = torch.as_tensor(batches[step])
                x = _to(x, device)
                yb = y_t[idx].to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"):
                    logits = model(x)
                losses = F.cross_entropy(logits.float(), yb, reduction="none")
                wb = None if w_all is None else w_all[idx].to(device, non_blocking=True)
                loss = batch_loss(losses, wb, cfg.loss_reduction)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += loss.detach()
                n_since += 1
                if bar is not None:
                    bar.update()
                if step + 1 in points:
                    row = evaluate_point(epoch, step + 1, len(batches), loss_sum, n_since, time.time() - te)
                    loss_sum = torch.zeros((), device=device)
                    n_since = 0
                    te = time.time()
            if row is None:  # an epoch without a training step still logs its end
                row = evaluate_point(epoch, 0, 0, loss_sum, 0, time.time() - te)
            if on_epoch is not None:
                on_epoch(epoch + 1, row)
            if (
                resume is not None
                and cfg.checkpoint_every
                and ((epoch + 1) % cfg.checkpoint_every == 0)
                and epoch + 1 < cfg.epochs
                and time.time() - last_checkpoint >= cfg.checkpoint_min_seconds
            ):
                from llr.io import save_torch  # atomic; a full disk is one line naming the file, no .part left

                save_torch(
                    {
                        "model": model.state_dict(),
                        "opt": opt.state_dict(),
                        "sched": sched.state_dict(),
                        "order_gen": order_gen.get_state(),
                        "torch_rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                        "fingerprint": fingerprint,
                        "log": result.log,
                        "epoch": epoch + 1,
                        "config": asdict(cfg),
                    },
                    resume,
                )
                last_checkpoint = time.time()
    finally:  # the bar's last line before any error message
        if bar is not None:
            bar.close()
    result.seconds = time.time() - t0
    return result


# Settings that do not change what a run computes: left out of the fingerprint.
_NOT_FINGERPRINTED = frozenset(
    {"device", "num_workers", "eval_batch_size", "threads", "checkpoint_every", "checkpoint_min_seconds"}
)


def _run_fingerprint(
    cfg: TrainConfig,
    seed: int,
    train_pos: np.ndarray,
    balanced: Balanced,
    model=None,
    input_files: list[str] | None = None,
    run_params: dict | None = None,
) -> str:
    """What a resume checkpoint must match to be picked up: the settings that
    shape training (not the device or loader workers), ``run_params`` (every
    job parameter, same exclusions), the seed, the training examples with
    their weights, the model's architecture (parameter names, shapes,
    dtypes) and the content of every input file (``llr.io.fingerprint_file``:
    whole-file SHA-256 under 64 MiB, else size, mtime and first/last MiB),
    e.g. the pretrained backbone, the inputs cache, metadata, split, subset."""
    import hashlib
    import json

    from llr.io import fingerprint_file

    h = hashlib.sha256()
    shape = {k: v for k, v in asdict(cfg).items() if k not in _NOT_FINGERPRINTED}
    extra = {str(k): v for k, v in (run_params or {}).items() if k not in _NOT_FINGERPRINTED}
    h.update(json.dumps([shape, int(seed), extra], sort_keys=True, default=repr).encode())
    for a in (train_pos, balanced.sample_weights, balanced.loss_weights):
        if a is not None:
            a = np.ascontiguousarray(a)
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes())
    if model is not None:
        h.update(repr([(k, tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items()]).encode())
    for f in input_files or ():
        if f:
            h.update(f"{Path(f).name}\0{fingerprint_file(f)}\n".encode())
    return h.hexdigest()


def _config(params: dict, epochs: int | None = None) -> TrainConfig:
    known = TrainConfig.__dataclass_fields__
    kw = {k: v for k, v in params.items() if k in known}
    if epochs is not None:
        kw["epochs"] = epochs
    if "epochs" not in kw:
        raise LLRError("training params: key 'epochs' missing")
    return TrainConfig(**kw)


def _set_threads(params: dict) -> None:
    threads = int(params.get("threads", 0))
    if threads > 0:
        torch.set_num_threads(threads)


def _save_torch(obj, path: str | os.PathLike) -> None:
    from llr.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def run_erm_job(
    *,
    dataset: str,
    metadata: str,
    split: str,
    inputs: str,
    subset: str | None,
    pretrained: str | None,
    cell: str,
    seed: int,
    params: dict,
    outdir: str,
) -> None:
    """Train one ERM cell and write ``model.pt``, ``log.csv`` (one row per
    evaluation point, ``evals_per_epoch`` per epoch), ``metrics.json`` (per
    role; with ``nc1`` also NC1 of the training pool and the held-out set on
    the final embeddings, mu_G per ``nc1_global_mean``), ``embeddings.npy``
    (float16, every example in metadata order) and ``head.npz`` into
    ``outdir``."""
    import pandas as pd

    from llr.data.inputs import open_inputs
    from llr.data.registry import get_spec, read_metadata
    from llr.experiments import ErmCell
    from llr.io import atomic_path, write_csv, write_json
    from llr.models.factory import build_model
    from llr.train.balancing import POOLS, balance, rng_for
    from llr.train.metrics import train_group_weights

    spec = get_spec(dataset)
    c = ErmCell.parse(cell)
    _set_threads(params)
    meta = read_metadata(metadata)
    if not (meta["idx"].to_numpy() == np.arange(len(meta))).all():
        raise LLRError(f"{metadata}: column idx must be 0..N-1 in row order")
    roles = pd.read_csv(split)["role"].to_numpy()
    if len(roles) != len(meta):
        raise LLRError(f"{split}: {len(roles)} rows, metadata {metadata} has {len(meta)}")
    y, g = meta["y"].to_numpy(), meta["g"].to_numpy()
    pool = np.flatnonzero(np.isin(roles, POOLS[c.pool]))
    if c.ratio is not None:
        if not subset:
            raise LLRError(f"ERM cell {cell}: a group-ratio cell needs --subset")
        chosen = pd.read_csv(subset)["idx"].to_numpy()
        if not np.isin(chosen, pool).all():
            raise LLRError(f"{subset}: lists examples outside the {c.pool!r} pool")
        pool = np.sort(chosen)
    labels = y[pool] if c.level == "class" else g[pool]
    balanced = balance(labels, c.mode, rng_for(seed, "erm", cell))
    eval_sets = {r: np.flatnonzero(roles == r) for r in ("val", "test")}
    gw = train_group_weights(g[meta["split"].to_numpy() == "train"], spec.n_groups) if spec.weighted_mean else None

    torch.manual_seed(seed)
    model_kw = {}
    state = None
    if pretrained:
        state = torch.load(pretrained, map_location="cpu", weights_only=False)
        model_kw = state.get("model_kw", {})
    if params.get("model_path"):  # a local transformers folder (real text datasets)
        model_kw["pretrained_path"] = params["model_path"]
    model = build_model(params["arch"], spec.n_classes, pretrained=bool(params.get("imagenet", False)), **model_kw)
    if state is not None:
        model.backbone.load_state_dict(state["backbone"])
    cfg = _config(params)
    src = open_inputs(spec, inputs, params.get("crop"))
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    res = train(
        model,
        src,
        y,
        g,
        pool,
        balanced,
        cfg,
        seed=seed,
        n_groups=spec.n_groups,
        eval_sets=eval_sets,
        group_weights=gw,
        resume=out / "resume.pt",
        final_positions=np.arange(len(meta)),
        input_files=[metadata, split, inputs, subset, pretrained, params.get("model_path")],
        run_params={"dataset": dataset, "cell": cell, **params},
        desc=f"ERM {cell}",
    )
    if res.final is None:  # guard: train() ran no epoch (checkpoints precede the last one, so not expected)
        emb, logits = embed(model, src, np.arange(len(meta)), cfg, resolve_device(cfg.device))
    else:
        emb, logits = res.final
    pred = logits.argmax(1)
    metrics = {
        "dataset": dataset,
        "seed": seed,
        "cell": cell,
        "epochs": cfg.epochs,
        "n_train": int(len(balanced.positions)),
        "train_seconds": res.seconds,
        "train_group_counts": np.bincount(g[pool[balanced.positions]], minlength=spec.n_groups).tolist(),
        "roles": {},
    }
    for r in ("train", "heldout", "val", "test"):
        pos = np.flatnonzero(roles == r)
        if len(pos):
            metrics["roles"][r] = evaluate(pred[pos], y[pos], g[pos], spec.n_groups, gw)
    if cfg.nc1:
        from llr.analysis.nc1 import nc1

        gm = cfg.nc1_global_mean
        metrics["nc1"] = {
            "train": nc1(emb[pool], y[pool], spec.n_classes, global_mean=gm),
            "heldout": nc1(emb[roles == "heldout"], y[roles == "heldout"], spec.n_classes, global_mean=gm),
            "global_mean": gm,
        }
    with atomic_path(out / "embeddings.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, emb.astype(np.float16))
    with atomic_path(out / "head.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(
                f, W=model.head.weight.detach().float().cpu().numpy(), b=model.head.bias.detach().float().cpu().numpy()
            )
    _save_torch({k: v.cpu() for k, v in model.state_dict().items()}, out / "model.pt")
    write_csv(out / "log.csv", pd.DataFrame(res.log))
    write_json(out / "metrics.json", metrics)
    if (out / "resume.pt").exists():
        (out / "resume.pt").unlink()
