"""Checks before any job runs: every configured real dataset is where its
layout says, so that a missing file is reported for all datasets at once, in
seconds, instead of by a job in the middle of the run."""

from __future__ import annotations

import os
from pathlib import Path

from llr.errors import LLRError

# Files besides the marker that each layout needs, relative to the folder
# holding the marker (alternatives separated by '|').
_COMPANIONS = {
    "celeba": ("list_eval_partition.txt|list_eval_partition.csv",),
    "multinli": ("train.tsv|glue_data/MNLI/train.tsv|MNLI/train.tsv|../glue_data/MNLI/train.tsv|../MNLI/train.tsv"
                 "|cached_train_bert-base-uncased_128_mnli",),
}


def check_dataset_files(name: str, data_root: str | os.PathLike) -> list[str]:
    """Problems (one line each) with a real dataset's files; [] when fine."""
    from llr.datasets import LAYOUTS, find_dataset_dir

    if name not in LAYOUTS:
        return []
    try:
        d = find_dataset_dir(name, data_root)
    except LLRError as e:
        return [str(e)]
    out = []
    for need in _COMPANIONS.get(name, ()):
        alts = need.split("|")
        if not any((d / a).is_file() for a in alts):
            out.append(f"{name}: {d / alts[0]} missing; expected {LAYOUTS[name].expected}")
    return out


def check_workflow_data(datasets: list[str], data_root: str | os.PathLike, config: dict) -> list[str]:
    """Problems of every configured real dataset and local model folder."""
    out: list[str] = []
    for ds in datasets:
        out += check_dataset_files(ds, data_root)
        erm = config.get("erm", {}).get(ds, {})
        for over in (erm, erm.get("section2") or {}):
            mp = over.get("model_path")
            if mp and mp.startswith((".", "/", "~")) and not Path(mp).expanduser().is_dir():
                out.append(f"{ds}: erm.model_path {mp} is not a folder; expected a local transformers folder "
                           f"(config.json, vocab.txt, weights) or a hub name such as bert-base-uncased")
    return out
