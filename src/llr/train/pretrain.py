"""Pretraining of a synthetic benchmark's backbone on a balanced auxiliary
task, standing in for ImageNet / BERT pretraining (paper appendix B.2); the
training engine is llr.train.erm.train."""

from __future__ import annotations

import numpy as np
import torch

from llr.errors import LLRError
from llr.train.erm import _config, _save_torch, _set_threads, train


def run_pretrain_job(
    dataset: str, params: dict, tokenizer_dir: str | None, out: str, log_csv: str | None = None
) -> None:
    """Pretrain a synthetic benchmark's backbone on a balanced auxiliary task
    (predict the group, so features carry both core and spurious information),
    standing in for ImageNet / BERT pretraining (paper appendix B.2)."""
    import pandas as pd

    from llr.data.registry import get_spec
    from llr.io import write_csv
    from llr.models.factory import build_model
    from llr.train.balancing import balance

    spec = get_spec(dataset)
    if not spec.synthetic:
        raise LLRError(f"{dataset}: pretrain is for synthetic datasets; real ones use ImageNet/BERT weights")
    _set_threads(params)
    seed = int(params.get("seed", 0)) + 1000
    n = int(params.get("pretrain_n_per_group", 500))
    if spec.modality == "image":
        from llr.data.inputs import ImageInputs
        from llr.data.synthetic_images import CORE_CONTRAST, pretrain_images

        kw = dict(
            size=params.get("image_size", 24),
            core_contrast=params.get("core_contrast", CORE_CONTRAST),
            noise=params.get("noise", 0.08),
        )
        images, labels = pretrain_images(seed, n + 100, **kw)
        inputs, model_kw = ImageInputs(images), {}
    else:
        from llr.data.synthetic_text_tokens import pretrain_inputs

        inputs, labels, model_kw = pretrain_inputs(spec, params, seed, n + 100, tokenizer_dir)
    labels = np.asarray(labels)
    # The first n examples of each group train, the rest measure the task.
    per_group = [np.flatnonzero(labels == k) for k in range(spec.n_groups)]
    fit_pos = np.sort(np.concatenate([p[:n] for p in per_group]))
    eval_pos = np.sort(np.concatenate([p[n:] for p in per_group]))
    torch.manual_seed(seed)
    model = build_model(params["arch"], spec.n_groups, **model_kw)
    cfg = _config({**params, **params.get("pretrain", {})})
    res = train(
        model,
        inputs,
        labels,
        labels,
        fit_pos,
        balance(labels[fit_pos], "none", None),
        cfg,
        seed=seed,
        n_groups=spec.n_groups,
        eval_sets={"aux": eval_pos},
        desc=f"pretrain {dataset}",
    )
    if log_csv:
        write_csv(log_csv, pd.DataFrame(res.log))
    _save_torch(
        {
            "backbone": model.backbone.state_dict(),
            "arch": params["arch"],
            "model_kw": model_kw,
            "aux_accuracy": res.log[-1]["aux_mean_acc"],
        },
        out,
    )
