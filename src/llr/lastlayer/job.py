"""The ``lastlayer`` job: read an ERM cell's embeddings, head, metadata, split and held-out cell,
run one last-layer method and write its metrics.json (docs/design.md, "The DAG")."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llr.data.registry import get_spec, read_metadata
from llr.errors import LLRError
from llr.io import load_embeddings, write_json
from llr.lastlayer.fit import evaluate_head
from llr.lastlayer.params import is_number
from llr.lastlayer.registry import check_method_params, run_method
from llr.train.balancing import ROLES, effective_group_ratio, group_ratio_sampling_weights
from llr.train.metrics import train_group_weights


def parse_params(params: str | dict | None) -> dict:
    """A method's overrides given as JSON text (or a dict); empty -> {}."""
    if params is None or params == "":
        return {}
    if isinstance(params, dict):
        return dict(params)
    try:
        out = json.loads(params)
    except json.JSONDecodeError as e:
        raise LLRError(f"params {params!r} is not valid JSON ({e.msg})") from None
    if not isinstance(out, dict):
        raise LLRError(f"params {params!r} must be a JSON object")
    return out


def _read_csv(path: str, columns: Sequence[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise LLRError(f"{path}: file not found") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LLRError(f"{path}: column {missing[0]!r} missing, expected {list(columns)}")
    return df


def _require(path: str) -> None:
    if not Path(path).is_file():
        raise LLRError(f"{path}: file not found")


def _load_head(path: str) -> tuple[np.ndarray, np.ndarray]:
    _require(path)
    try:
        with np.load(path) as z:
            missing = [k for k in ("W", "b") if k not in z.files]
            if missing:
                raise LLRError(f"{path}: array {missing[0]!r} missing, expected arrays W and b")
            return np.asarray(z["W"], dtype=np.float32), np.asarray(z["b"], dtype=np.float32)
    except (ValueError, OSError) as e:
        raise LLRError(f"{path}: not a readable .npz ({type(e).__name__})") from None


def jsonable(x: Any) -> Any:
    """``x`` with NumPy values as Python ones and non-finite floats as None (for JSON)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def heldout_cell(heldout: str, roles: np.ndarray, split: str | None = None) -> np.ndarray:
    """Sorted positions of a last-layer job's training cell: the whole
    held-out role (``heldout='full'``) or a subset csv (column idx), which
    may hold only heldout (or train) rows of ``split``."""
    n = len(roles)
    if heldout == "full":
        pos = np.flatnonzero(roles == "heldout")
    else:
        pos = np.sort(_read_csv(heldout, ("idx",))["idx"].to_numpy(dtype=np.int64))
        if len(pos) and (pos.min() < 0 or pos.max() >= n):
            raise LLRError(f"{heldout}: idx {int(pos.max())} out of range 0..{n - 1}")
    if len(pos) == 0:
        raise LLRError(f"{heldout}: the held-out cell is empty")
    leak = np.isin(roles[pos], ["val", "test"])
    if leak.any():
        where = f" in {split}" if split else ""
        raise LLRError(
            f"{heldout}: idx {int(pos[leak][0])} has role {roles[pos][leak][0]!r}{where}; "
            f"a held-out cell may hold only heldout (or train) rows"
        )
    return pos


def run_lastlayer_job(
    embeddings: str,
    head: str,
    metadata: str,
    split: str,
    heldout: str,
    method: str,
    params: str | dict | None,
    seed: int,
    epochs: int,
    out_json: str,
    device: str = "cpu",
    dataset: str | None = None,
    heldout_sampling_ratio: float | None = None,
) -> dict:
    """One ``lastlayer`` DAG node (docs/design.md, "The DAG"): retrain the last layer
    of an ERM cell with ``method`` on a held-out cell and write metrics.

    ``embeddings``: float16 (N, d) ``.npy``, row i = metadata idx i;
    ``head``: ``.npz`` with the ERM head W (K,d), b (K,); ``split``: csv
    idx,role; ``heldout``: a subset csv (column idx) or ``'full'`` for the
    whole heldout role; ``epochs``: ERM's epoch count (LLR trains as long);
    ``dataset``: the DatasetSpec name, by default the metadata's folder name
    (``results/{dataset}/metadata.csv``).

    Held-out group ratio r (paper section 3.1, Figure 4): the paper reaches
    r by removing data (``heldout`` a group-ratio subset csv;
    ``heldout_construction: "subset"``); ``heldout_sampling_ratio=r`` with
    ``heldout="full"`` and method ``llr`` keeps every held-out example and
    samples (with replacement, epoch length unchanged) so that each class's
    expected minority/majority mass is r, as the authors' code does
    (:func:`llr.train.balancing.group_ratio_sampling_weights`;
    ``heldout_construction: "sampled"``). Every run records
    ``effective_group_ratio`` (the cell as the method weights it),
    ``heldout_group_ratio`` (the cell unweighted) and ``train_group_ratio``
    (the rows of role 'train', unweighted); AFR's ``afr.grid`` rows also
    record each grid point's ``effective_group_ratio`` and its ``test_wga`` /
    ``test_mean_acc`` (reported, never used to choose). Writes ``out_json`` atomically with
    metrics on the training cell, the val and the test roles; Waterbirds-like
    datasets weight mean accuracy by the train split's group proportions.
    """
    name = dataset or Path(metadata).parent.name
    try:
        spec = get_spec(name)
    except LLRError as e:
        raise LLRError(f"{metadata}: dataset {name!r} (the metadata's folder) unknown; pass dataset= ({e})") from None
    hp_in = parse_params(params)
    check_method_params(method, hp_in)  # fail early on a bad name or value
    if heldout_sampling_ratio is not None:
        r = heldout_sampling_ratio
        if isinstance(r, bool) or not is_number(r) or not 0.0 < float(r) <= 1.0:
            raise LLRError(f"heldout_sampling_ratio {r!r} out of range, expected a number in (0, 1]")
        if heldout != "full":
            raise LLRError(f"heldout_sampling_ratio needs heldout='full' (the whole held-out role), got {heldout!r}")
        if method != "llr":
            raise LLRError(f"heldout_sampling_ratio is for plain LLR (method llr), got method {method!r}")
    for path in (embeddings, head, metadata, split) + (() if heldout == "full" else (heldout,)):
        _require(path)
    meta = read_metadata(metadata)
    X_all = load_embeddings(embeddings)
    N = len(meta)
    if X_all.ndim != 2 or X_all.shape[0] != N:
        raise LLRError(f"{embeddings}: shape {X_all.shape}, expected ({N}, d) for the {N} rows of {metadata}")
    idx = meta["idx"].to_numpy(dtype=np.int64)
    if not np.array_equal(np.sort(idx), np.arange(N)):
        raise LLRError(f"{metadata}: column 'idx' must hold 0..{N - 1} (row i of the embeddings is idx i)")
    meta = meta.set_index("idx", drop=False).loc[np.arange(N)].reset_index(drop=True)

    sp = _read_csv(split, ("idx", "role"))
    bad = ~sp["role"].isin(ROLES)
    if bad.any():
        raise LLRError(f"{split}: role {sp['role'][bad].iloc[0]!r} not in {list(ROLES)}")
    sidx = sp["idx"].to_numpy(dtype=np.int64)
    if len(sp) != N or not np.array_equal(np.sort(sidx), np.arange(N)):
        raise LLRError(f"{split}: column 'idx' must list each of the {N} rows of {metadata} once")
    roles = np.empty(N, dtype=object)
    roles[sidx] = sp["role"].to_numpy()

    train_pos = heldout_cell(heldout, roles, split)
    val_pos = np.flatnonzero(roles == "val")

    W0, b0 = _load_head(head)
    if W0.shape != (spec.n_classes, X_all.shape[1]) or b0.shape != (spec.n_classes,):
        raise LLRError(
            f"{head}: W {W0.shape}, b {b0.shape}, expected ({spec.n_classes}, {X_all.shape[1]}) and ({spec.n_classes},)"
        )
    y = meta["y"].to_numpy(dtype=np.int64)
    g = meta["g"].to_numpy(dtype=np.int64)
    sw = None
    if heldout_sampling_ratio is not None:
        sw = group_ratio_sampling_weights(y[train_pos], g[train_pos], float(heldout_sampling_ratio), spec)
    gw = None
    if spec.weighted_mean:
        gw = train_group_weights(g[meta["split"].to_numpy() == "train"], spec.n_groups)
    test_pos = np.flatnonzero(roles == "test")
    report = {"test": (X_all[test_pos], y[test_pos], g[test_pos], gw)} if len(test_pos) else None
    W, b, info = run_method(
        method,
        X_all,
        meta,
        roles,
        train_pos,
        val_pos,
        (W0, b0),
        hp_in,
        seed,
        epochs,
        spec,
        device=device,
        sample_weights=sw,
        report_sets=report,
    )
    tr = roles == "train"
    info["train_group_ratio"] = effective_group_ratio(y[tr], g[tr], None, spec)
    metrics = {}  # roles without rows are left out
    for role, pos in (("train_cell", train_pos), ("val", val_pos), ("test", np.flatnonzero(roles == "test"))):
        if len(pos):
            metrics[role] = evaluate_head(W, b, X_all[pos], y[pos], g[pos], spec.n_groups, gw)
    hp = info.pop("hp")
    out = {
        "method": method,
        "dataset": spec.name,
        "hp": hp,
        "seed": int(seed),
        "erm_epochs": int(epochs),
        "heldout": "full" if heldout == "full" else Path(heldout).name,
        "heldout_construction": "sampled" if heldout_sampling_ratio is not None else "subset",
        "heldout_sampling_ratio": None if heldout_sampling_ratio is None else float(heldout_sampling_ratio),
        "train_cell_n": int(len(train_pos)),
        "train_cell_group_counts": np.bincount(g[train_pos], minlength=spec.n_groups).tolist(),
        **info,
        "metrics": metrics,
        "mean_acc_weighted_by_train_groups": bool(spec.weighted_mean),
        "head": {"W": W.tolist(), "b": b.tolist()},
        "device": str(device),
    }
    out = jsonable(out)
    write_json(out_json, out)
    return out
