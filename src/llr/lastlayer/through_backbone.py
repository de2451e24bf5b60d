"""Last-layer retraining through the frozen network in training mode, with augmentation: the
authors' mode, run to measure this reproduction's caching deviation (paper section 3)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from llr.errors import LLRError

TB_DEFAULTS = {"backbone_mode": "train", "augment": True}
BACKBONE_MODES = ("train", "eval")


def _parse(text: str | dict | None, what: str) -> dict:
    """A JSON object given as text (or a dict), as the lastlayer job reads it."""
    from llr.lastlayer.job import parse_params

    try:
        return parse_params(text)
    except LLRError as e:
        raise LLRError(f"{what}: {e}") from None


def _roles(split: str, n: int) -> np.ndarray:
    from llr.io import read_csv
    from llr.train.balancing import ROLES

    sp = read_csv(split, ("idx", "role"))
    sidx = sp["idx"].to_numpy(dtype=np.int64)
    if len(sp) != n or not np.array_equal(np.sort(sidx), np.arange(n)):
        raise LLRError(f"{split}: column 'idx' must list each of the {n} metadata rows once")
    bad = ~sp["role"].isin(ROLES)
    if bad.any():
        raise LLRError(f"{split}: role {sp['role'][bad].iloc[0]!r} not in {list(ROLES)}")
    roles = np.empty(n, dtype=object)
    roles[sidx] = sp["role"].to_numpy()
    return roles


def _cell(heldout: str, roles: np.ndarray) -> np.ndarray:
    """Positions of the held-out cell, sorted (as the cached job)."""
    from llr.lastlayer.job import heldout_cell

    return heldout_cell(heldout, roles)


def load_erm_model(
    model_pt: str, arch: str, n_classes: int, pretrained: str | None = None, model_path: str | None = None
):
    """The ERM cell's classifier (:func:`llr.models.factory.build_model`) with
    ``model.pt``'s weights, built as ``llr.train.erm.run_erm_job`` builds it (the
    synthetic pretrain file gives the text model's options)."""
    import torch

    from llr.models.factory import build_model

    kw: dict = {}
    if pretrained:
        if not Path(pretrained).is_file():
            raise LLRError(f"{pretrained}: file not found")
        kw = dict(torch.load(pretrained, map_location="cpu", weights_only=False).get("model_kw", {}))
    if model_path:
        kw["pretrained_path"] = model_path
    model = build_model(arch, n_classes, **kw)
    if not Path(model_pt).is_file():
        raise LLRError(f"{model_pt}: file not found")
    try:
        state = torch.load(model_pt, map_location="cpu", weights_only=True)
    except Exception as e:
        raise LLRError(f"{model_pt}: not a readable state dict ({type(e).__name__})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise LLRError(f"{model_pt}: does not fit architecture {arch!r} ({str(e).splitlines()[0][:160]})") from None
    return model


def _epoch_orders(
    n: int, epochs: int, batch_size: int | None, sample_weights: np.ndarray | None, seed: int
) -> list[list[np.ndarray]]:
    """Per epoch, the batches (positions into the plan) of
    :func:`llr.lastlayer.fit.fit_softmax` with the same seed: a seeded
    permutation, or N draws with replacement from ``sample_weights``; one
    full batch in order when the batch holds everything and nothing is
    sampled."""
    B = n if batch_size is None else int(batch_size)
    rng = np.random.default_rng([int(seed), 1])
    sw = None if sample_weights is None else np.asarray(sample_weights, np.float64) / np.sum(sample_weights)
    out = []
    for _ in range(int(epochs)):
        if B >= n and sw is None:
            out.append([np.arange(n)])
            continue
        order = rng.permutation(n) if sw is None else rng.choice(n, size=n, replace=True, p=sw)
        out.append([order[s : s + B] for s in range(0, n, B)])
    return out


def train_head_through_backbone(
    model,
    inputs,
    cell_pos: np.ndarray,
    y_cell: np.ndarray,
    plan: tuple,
    hp: dict,
    *,
    epochs: int,
    seed: int,
    init: tuple[np.ndarray, np.ndarray],
    device: str = "cpu",
    backbone_mode: str = "train",
    augment: bool = True,
    amp: bool = True,
) -> dict:
    """Train ``model.head`` on the held-out cell through the frozen backbone.

    ``plan`` = (positions into the cell, sample_weights, loss_weights)
    (:func:`llr.analysis.effective_ratio.balanced_plan`); ``hp``: the cached method's
    resolved hyper-parameters (lr, momentum, weight_decay, batch_size,
    max_grad_norm, loss_reduction). Backbone parameters are frozen; with
    ``backbone_mode="train"`` the network runs in training mode (BatchNorm
    batch statistics and running-statistic updates, dropout), with
    ``augment`` the training augmentation. SGD as ``torch.optim.SGD``, the
    loss a per-batch mean, weighted by the loss weights (``weighted_mean``:
    divided by the batch's weight total). Returns {"loss": per-epoch mean}."""
    import torch
    import torch.nn.functional as F

    from llr.runtime.progress import progress
    from llr.train.erm import _to, resolve_device

    if backbone_mode not in BACKBONE_MODES:
        raise LLRError(f"backbone_mode {backbone_mode!r} unknown, expected one of {list(BACKBONE_MODES)}")
    dev = resolve_device(device)
    model.to(dev)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(np.asarray(init[0]), dtype=model.head.weight.dtype))
        model.head.bias.copy_(torch.as_tensor(np.asarray(init[1]), dtype=model.head.bias.dtype))
    for p in model.head.parameters():
        p.requires_grad_(True)
    pos, sw, lw = plan
    pos = np.asarray(pos, dtype=np.int64)
    idx_plan = np.asarray(cell_pos)[pos]  # metadata rows of the plan's examples
    y_plan = torch.as_tensor(np.asarray(y_cell)[pos], dtype=torch.long)
    w_plan = None if lw is None else torch.as_tensor(np.asarray(lw), dtype=torch.float32)
    opt = torch.optim.SGD(
        model.head.parameters(),
        lr=float(hp["lr"]),
        momentum=float(hp["momentum"]),
        weight_decay=float(hp["weight_decay"]),
    )
    drop = getattr(model, "dropout", None)  # BERT: dropout between the pooled output and the head
    # Dropout draws from torch's global generator: seed it, so that a job gives
    # the same head whatever process (fork-server child) runs it.
    torch.manual_seed(int(seed))
    use_amp = amp and dev.type == "cuda"
    losses = []
    orders = _epoch_orders(len(pos), epochs, hp["batch_size"], sw, seed)
    for epoch, batches in enumerate(progress(orders, desc="through-network LLR", total=len(orders), unit="epoch")):
        model.train(backbone_mode == "train")
        total = 0.0
        for b, sel in enumerate(batches):
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch * 10_007 + b)
            x = _to(inputs.batch(idx_plan[sel], augment, gen), dev)
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                h = model.embed(x)
            h = h.float()
            if drop is not None:
                h = drop(h)
            z = model.head(h)
            yb = y_plan[sel].to(dev)
            ce = F.cross_entropy(z, yb, reduction="none")
            if w_plan is None:
                loss = ce.mean()
            else:
                wb = w_plan[sel].to(dev)
                den = wb.sum() if hp["loss_reduction"] == "weighted_mean" else torch.tensor(float(len(sel)))
                loss = (ce * wb).sum() / (den if float(den) > 0 else 1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if hp.get("max_grad_norm") is not None:
                torch.nn.utils.clip_grad_norm_(model.head.parameters(), float(hp["max_grad_norm"]))
            opt.step()
            total += float(loss.detach()) * len(sel)
        losses.append(total / len(pos))
        if not math.isfinite(losses[-1]):
            raise LLRError(f"through-backbone LLR: training loss became {losses[-1]} in epoch {epoch + 1}")
    return {"loss": losses}


def run_through_backbone_job(
    *,
    dataset: str,
    metadata: str,
    split: str,
    inputs: str,
    model: str,
    heldout: str,
    method: str,
    seed: int,
    epochs: int,
    out_json: str,
    params: str | dict | None = None,
    erm_params: str | dict | None = None,
    pretrained: str | None = None,
    heldout_sampling_ratio: float | None = None,
) -> dict:
    """One ``lastlayer_backbone`` DAG node: retrain the last layer of an ERM
    cell (``model``: its model.pt) through the frozen network in training
    mode on a held-out cell (a subset csv, or ``'full'``, optionally sampled
    to ``heldout_sampling_ratio`` for ``llr``) and write ``out_json``.

    ``params``: the method's overrides as for the cached job (``epochs``,
    ``lr``, ...; ``llr.lastlayer.registry.resolve_hp``) plus ``backbone_mode``
    (train | eval) and ``augment`` (bool); ``erm_params``: the ERM cell's
    settings (``arch``, ``model_path``, ``crop``, ``eval_batch_size``,
    ``device``, ``threads``); ``epochs``: ERM's epoch count, used unless
    ``params`` sets ``epochs``. Methods: ``llr``, ``dfr_<mode>``,
    ``cbllr_<mode>``.

    The cached mode (:mod:`llr.lastlayer.fit`) trains a head on eval-mode
    embeddings; the authors instead run every held-out batch through the
    frozen ERM network, with training augmentation and the network in
    training mode (BatchNorm normalizes with the batch's statistics and
    updates its running statistics on the held-out set; BERT's dropout is
    active). This job does the same with the cached mode's settings (plain
    SGD, lr 1e-2, momentum 0, no weight decay, batch 32, the same epochs,
    held-out cell, balancing plan, initial head and example order), then
    evaluates in eval mode (with the running statistics the held-out set left
    behind) and writes a metrics.json in the format of
    :func:`llr.lastlayer.job.run_lastlayer_job` plus ``mode: "through_backbone"``.
    With ``backbone_mode="eval"`` and ``augment=False`` it trains on the very
    features the cached mode caches and so reproduces the cached head up to
    float rounding (tests/test_through_backbone.py)."""
    import torch

    from llr.analysis.effective_ratio import balanced_plan, plan_weights, pooled_group_ratio
    from llr.data.inputs import open_inputs
    from llr.data.registry import get_spec, read_metadata
    from llr.io import write_json
    from llr.lastlayer.fit import torch_linear_init
    from llr.lastlayer.job import jsonable
    from llr.lastlayer.registry import check_method_params, get_method, resolve_hp
    from llr.train.balancing import effective_group_ratio, group_ratio_sampling_weights
    from llr.train.erm import TrainConfig, _set_threads, embed, resolve_device
    from llr.train.metrics import evaluate, train_group_weights

    t0 = time.time()
    spec = get_spec(dataset)
    hp_in = _parse(params, "params")
    tb = {k: hp_in.pop(k, v) for k, v in TB_DEFAULTS.items()}
    if tb["backbone_mode"] not in BACKBONE_MODES:
        raise LLRError(f"params: backbone_mode={tb['backbone_mode']!r}, expected one of {list(BACKBONE_MODES)}")
    if not isinstance(tb["augment"], bool):
        raise LLRError(f"params: augment={tb['augment']!r}, expected true or false")
    get_method(method)
    if method.startswith("afr"):
        raise LLRError(f"method {method!r}: the through-backbone mode covers llr, dfr_<mode> and cbllr_<mode>")
    check_method_params(method, hp_in)
    hp = resolve_hp(method, spec, hp_in)
    ep = int(hp["epochs"] if hp["epochs"] is not None else epochs)
    ep_params = _parse(erm_params, "erm params")
    if "arch" not in ep_params:
        raise LLRError("erm params: key 'arch' missing; expected the ERM cell's settings (erm.<dataset>)")
    _set_threads(ep_params)
    meta = read_metadata(metadata)
    n = len(meta)
    if not np.array_equal(meta["idx"].to_numpy(), np.arange(n)):
        raise LLRError(f"{metadata}: column idx must be 0..N-1 in row order")
    roles = _roles(split, n)
    if heldout_sampling_ratio is not None and (heldout != "full" or method != "llr"):
        raise LLRError("heldout_sampling_ratio needs heldout='full' and method llr")
    cell = _cell(heldout, roles)
    y, g = meta["y"].to_numpy(dtype=np.int64), meta["g"].to_numpy(dtype=np.int64)
    yc, gc = y[cell], g[cell]
    sw_cell = None
    if heldout_sampling_ratio is not None:
        sw_cell = group_ratio_sampling_weights(yc, gc, float(heldout_sampling_ratio), spec)
    plan = balanced_plan(method, yc, gc, seed, sw_cell)
    net = load_erm_model(model, ep_params["arch"], spec.n_classes, pretrained, ep_params.get("model_path"))
    d = net.head.in_features
    if hp["init"] == "erm":
        init = (net.head.weight.detach().numpy().copy(), net.head.bias.detach().numpy().copy())
    else:
        init = torch_linear_init(d, spec.n_classes, seed)
    src = open_inputs(spec, inputs, ep_params.get("crop"))
    device = str(ep_params.get("device", "cpu"))
    train_info = train_head_through_backbone(
        net,
        src,
        cell,
        yc,
        plan,
        hp,
        epochs=ep,
        seed=seed,
        init=init,
        device=device,
        backbone_mode=tb["backbone_mode"],
        augment=tb["augment"],
    )
    # evaluation in eval mode, with the running statistics the held-out set left
    cfg = TrainConfig(epochs=1, eval_batch_size=int(ep_params.get("eval_batch_size", 256)), device=device)
    gw = train_group_weights(g[meta["split"].to_numpy() == "train"], spec.n_groups) if spec.weighted_mean else None
    metrics = {}
    for role, pos in (
        ("train_cell", cell),
        ("val", np.flatnonzero(roles == "val")),
        ("test", np.flatnonzero(roles == "test")),
    ):
        if len(pos):
            _, logits = embed(net, src, pos, cfg, resolve_device(device))
            metrics[role] = evaluate(logits.argmax(1), y[pos], g[pos], spec.n_groups, gw)
    w = plan_weights(len(cell), *plan)
    pos_used = np.asarray(plan[0], dtype=np.int64)
    tr = roles == "train"
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    n_drop = sum(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in net.modules())
    wg = np.bincount(gc, weights=w, minlength=spec.n_groups)
    wy = np.bincount(yc, weights=w, minlength=spec.n_classes)
    out = {
        "method": method,
        "dataset": spec.name,
        "mode": "through_backbone",
        "hp": hp,
        "seed": int(seed),
        "erm_epochs": int(epochs),
        "epochs": ep,
        "heldout": "full" if heldout == "full" else Path(heldout).name,
        "heldout_construction": "sampled" if heldout_sampling_ratio is not None else "subset",
        "heldout_sampling_ratio": None if heldout_sampling_ratio is None else float(heldout_sampling_ratio),
        "train_cell_n": int(len(cell)),
        "train_cell_group_counts": np.bincount(gc, minlength=spec.n_groups).tolist(),
        "n_train": int(len(pos_used)),
        "train_group_counts": np.bincount(gc[pos_used], minlength=spec.n_groups).tolist(),
        "group_mass": (wg / wg.sum()).tolist(),
        "class_mass": (wy / wy.sum()).tolist(),
        "effective_group_ratio": effective_group_ratio(yc, gc, w, spec),
        "pooled_group_ratio": pooled_group_ratio(yc, gc, w, spec),
        "heldout_group_ratio": effective_group_ratio(yc, gc, None, spec),
        "train_group_ratio": effective_group_ratio(y[tr], g[tr], None, spec),
        "final_loss": train_info["loss"][-1] if train_info["loss"] else None,
        "backbone_mode": tb["backbone_mode"],
        "augment": bool(tb["augment"]),
        "batchnorm_running_stats_updated": bool(has_bn and tb["backbone_mode"] == "train"),
        "dropout_layers_active": int(n_drop if tb["backbone_mode"] == "train" else 0),
        "metrics": metrics,
        "mean_acc_weighted_by_train_groups": bool(spec.weighted_mean),
        "head": {
            "W": net.head.weight.detach().cpu().numpy().tolist(),
            "b": net.head.bias.detach().cpu().numpy().tolist(),
        },
        "device": device,
        "seconds": time.time() - t0,
    }
    out = jsonable(out)
    write_json(out_json, out)
    return out
