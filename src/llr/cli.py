"""Command line: ``python -m llr <command>``; one command per workflow rule.

Every command reads explicit inputs and writes explicit outputs atomically;
bad input ends with one line ``llr: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from llr.errors import LLRError


def _json(text: str) -> dict:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as e:
        raise LLRError(f"--params is not valid JSON ({e.msg}): {text[:80]!r}") from None
    if not isinstance(value, dict):
        raise LLRError(f"--params must be a JSON object, got {type(value).__name__}")
    return value


def cmd_prepare(a) -> None:
    from llr.data.registry import get_spec

    spec = get_spec(a.dataset)
    p = _json(a.params)
    if spec.synthetic:
        if spec.modality == "image":
            from llr.data.synthetic_images import prepare_synthetic_images

            prepare_synthetic_images(spec, p, a.out_metadata, a.out_inputs)
        else:
            from llr.data.synthetic_text_tokens import prepare_synthetic_text

            prepare_synthetic_text(spec, p, a.out_metadata, a.out_inputs)
        return
    from llr.data.real import prepare

    prepare(spec.name, a.data_root, a.out_metadata)


def cmd_inputs(a) -> None:
    """Pre-decoded image cache or token cache of a real dataset."""
    from llr.data.registry import get_spec, read_metadata

    spec = get_spec(a.dataset)
    p = _json(a.params)
    meta = read_metadata(a.metadata)
    if spec.modality == "image":
        from llr.data.real import build_image_cache, image_paths

        build_image_cache(image_paths(spec.name, a.data_root, meta), a.out, p.get("cache_size", 256))
    else:
        from llr.data.real import load_texts
        from llr.data.tokens import load_tokenizer, tokenize_cache

        tok = load_tokenizer(p.get("model_path", p.get("arch", "bert-base-uncased")))
        tokenize_cache(load_texts(spec.name, a.data_root, meta), tok, p["max_length"], a.out)


def cmd_split(a) -> None:
    from llr.data.registry import get_spec, read_metadata
    from llr.io import write_csv
    from llr.train.balancing import heldout_split

    spec = get_spec(a.dataset)
    write_csv(a.out, heldout_split(read_metadata(a.metadata), spec, a.seed))


def cmd_subset(a) -> None:
    import pandas as pd

    from llr.data.registry import get_spec, read_metadata
    from llr.io import write_csv
    from llr.train.balancing import POOLS, group_ratio_subset, rng_for

    spec = get_spec(a.dataset)
    meta = read_metadata(a.metadata)
    roles = pd.read_csv(a.split)["role"].to_numpy()
    if a.role not in POOLS:
        raise LLRError(f"subset role {a.role!r} unknown, expected one of {sorted(POOLS)}")
    pos = [i for i, r in enumerate(roles) if r in POOLS[a.role]]
    import numpy as np

    pos = np.asarray(pos)
    try:
        keep = group_ratio_subset(meta["g"].to_numpy()[pos], a.ratio, spec, rng_for(a.seed, "subset", a.role, a.ratio))
    except LLRError as e:
        raise LLRError(f"{a.split}: role {a.role}: {e}") from None
    write_csv(a.out, pd.DataFrame({"idx": meta["idx"].to_numpy()[pos[keep]]}))


def _claim_gpu(params: dict) -> None:
    """On a local multi-GPU machine, pin this job to one free GPU before CUDA
    starts (llr.runtime.gpu; a no-op on CPU and under SLURM)."""
    from llr.runtime.gpu import claim_for

    claim_for(str(params.get("device", "cpu")))


def cmd_pretrain(a) -> None:
    _claim_gpu(_json(a.params))
    from llr.train.pretrain import run_pretrain_job

    run_pretrain_job(a.dataset, _json(a.params), a.inputs, a.out, a.log_csv)


def cmd_erm(a) -> None:
    _claim_gpu(_json(a.params))
    from llr.train.erm import run_erm_job

    run_erm_job(
        dataset=a.dataset,
        metadata=a.metadata,
        split=a.split,
        inputs=a.inputs,
        subset=a.subset,
        pretrained=a.pretrained,
        cell=a.cell,
        seed=a.seed,
        params=_json(a.params),
        outdir=a.outdir,
    )


def cmd_lastlayer(a) -> None:
    from llr.lastlayer.job import run_lastlayer_job

    run_lastlayer_job(
        embeddings=a.embeddings,
        head=a.head,
        metadata=a.metadata,
        split=a.split,
        heldout=a.heldout,
        method=a.method,
        params=_json(a.params),
        seed=a.seed,
        epochs=a.epochs,
        out_json=a.out,
        device=a.device,
        heldout_sampling_ratio=a.heldout_sampling_ratio,
    )


def cmd_lastlayer_backbone(a) -> None:
    """The authors' LLR mode: the head retrained through the frozen network in
    training mode, with augmentation (llr.lastlayer.through_backbone)."""
    erm_params = _json(a.erm_params)
    _claim_gpu(erm_params)
    from llr.lastlayer.through_backbone import run_through_backbone_job

    run_through_backbone_job(
        dataset=a.dataset,
        metadata=a.metadata,
        split=a.split,
        inputs=a.inputs,
        model=a.model,
        heldout=a.heldout,
        method=a.method,
        seed=a.seed,
        epochs=a.epochs,
        out_json=a.out,
        params=_json(a.params),
        erm_params=erm_params,
        pretrained=a.pretrained,
        heldout_sampling_ratio=a.heldout_sampling_ratio,
    )


def cmd_collect(a) -> None:
    from llr.reporting import tidy as tables

    {"runs": tables.collect_runs, "logs": tables.collect_logs, "analysis": tables.collect_analysis}[a.kind](
        a.files, a.out
    )


def _heldout_test(a):
    """Embeddings, labels and groups of the held-out and test roles."""
    import numpy as np
    import pandas as pd

    from llr.data.registry import get_spec, read_metadata

    meta = read_metadata(a.metadata)
    spec = get_spec(a.dataset)
    roles = pd.read_csv(a.split)["role"].to_numpy()
    from llr.io import load_embeddings

    emb = load_embeddings(a.embeddings)
    if emb.shape[0] != len(meta):
        raise LLRError(f"{a.embeddings}: {emb.shape[0]} rows, metadata {a.metadata} has {len(meta)}")
    out = {}
    for r in ("heldout", "test"):
        pos = np.flatnonzero(roles == r)
        out[r] = (np.asarray(emb[pos], dtype=np.float64), meta["y"].to_numpy()[pos], meta["g"].to_numpy()[pos])
    return spec, out


def cmd_svm(a) -> None:
    """Figure 3: directional error of the LLR head (SGD, lr 1e-3, 10x the
    standard epochs) to the linear SVM (LinearSVC, C = 1e5) on the held-out
    embeddings; whether that SVM separates them goes to the log and the CSV."""
    from llr.analysis.svm import svm_convergence
    from llr.io import write_csv

    spec, d = _heldout_test(a)
    X, y, _ = d["heldout"]
    df = svm_convergence(X, y, spec.n_classes, epochs=a.epochs, seed=a.seed)
    at = df.attrs
    print(
        f"svm: {len(y)} held-out points, separable={at['separable']} (min constraint "
        f"{at['svm_min_constraint']:.4g}; LinearSVC C={at['svm_C']:g}, {at['svm_n_iter']} iterations, "
        f"converged={at['svm_converged']})",
        flush=True,
    )
    write_csv(a.out, df)


def cmd_margins(a) -> None:
    """Table 1: per-group margins of LLR heads at checkpoints, with the
    same heads' per-group test accuracy."""
    import numpy as np

    from llr.analysis.margins import margin_records
    from llr.io import write_csv

    spec, d = _heldout_test(a)
    ck = sorted(set(np.linspace(1, a.epochs, min(a.checkpoints, a.epochs)).round().astype(int).tolist()))
    write_csv(
        a.out,
        margin_records(
            *d["heldout"], *d["test"], spec.n_groups, spec.n_classes, epochs=a.epochs, checkpoint_epochs=ck, seed=a.seed
        ),
    )


def cmd_plot(a) -> None:
    from llr.reporting.modes import plot_mode

    plot_mode(a.figure)(a.inputs, a.out, _json(a.params))


def cmd_table2(a) -> None:
    from llr.reporting.table2 import write_table2

    write_table2(a.metadata, a.out_csv, a.out_md)


def cmd_fixtures(a) -> None:
    """Miniature copies of the four real datasets (a dress rehearsal)."""
    from llr.data.fixtures import write_fixtures
    from llr.data.registry import get_spec

    counts = write_fixtures(a.dir, a.seed, datasets=a.datasets, total=a.total, tiny_bert=a.tiny_bert)
    for name, per_split in counts.items():
        spec = get_spec(name)
        groups = ", ".join(spec.group_name(g) for g in range(spec.n_groups))
        print(f"{name}: groups ({groups}): " + "; ".join(f"{sp} {c}" for sp, c in per_split.items()))
    print(f"wrote {Path(a.dir) / '<dataset>'}, {Path(a.dir) / 'bert_vocab'} and {Path(a.dir) / 'fixtures.json'}")


def _load_configs(files: list[str]) -> dict:
    """YAML config files merged in order (later keys win, nested dicts merged)."""
    import yaml

    def merge(a: dict, b: dict) -> dict:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    config: dict = {}
    for f in files:
        try:
            with open(f) as fh:
                value = yaml.safe_load(fh) or {}
        except yaml.YAMLError as e:
            raise LLRError(f"{f}: not valid YAML ({' '.join(str(e).split())[:160]})") from None
        if not isinstance(value, dict):
            raise LLRError(f"{f}: expected a YAML mapping of config keys, got {type(value).__name__}")
        config = merge(config, value)
    return config


def cmd_doctor(a) -> None:
    """Check the configured real datasets and pretrained weights; print a
    table; exit non-zero on any problem."""
    from llr.data.preflight import apply_strict, doctor_rows, format_report

    config = _load_configs(a.configfile)
    data_root = a.data_root or os.environ.get("LLR_DATA_ROOT") or config.get("data_root", "data")
    datasets = config.get("datasets") or []
    if not datasets:
        raise LLRError(f"{a.configfile[-1]}: key 'datasets' missing or empty; expected a list of dataset names")
    rows = doctor_rows(datasets, data_root, config, sample=a.sample)
    if a.strict:
        apply_strict(rows)
    print(format_report(rows, data_root))
    problems = [r.detail for r in rows if r.problem]
    for p in problems:
        print(f"llr: error: {p}", file=sys.stderr)
    if problems:
        raise LLRError(f"doctor: {len(problems)} problem(s) found (listed above)")
    print("\ndoctor: no problems found")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="llr", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="standardized metadata (and synthetic inputs)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--data-root", default="data")
    p.add_argument("--params", default="{}")
    p.add_argument("--out-metadata", required=True)
    p.add_argument("--out-inputs")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("inputs", help="image or token cache of a real dataset")
    for k in ("--dataset", "--metadata", "--out"):
        p.add_argument(k, required=True)
    p.add_argument("--data-root", default="data")
    p.add_argument("--params", default="{}")
    p.set_defaults(func=cmd_inputs)

    p = sub.add_parser("split", help="held-out carving: roles train/heldout/val/test")
    for k in ("--dataset", "--metadata", "--out"):
        p.add_argument(k, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("subset", help="group-ratio subset of a role")
    for k in ("--dataset", "--metadata", "--split", "--role", "--out"):
        p.add_argument(k, required=True)
    p.add_argument("--ratio", type=float, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.set_defaults(func=cmd_subset)

    p = sub.add_parser("pretrain", help="pretrain a synthetic backbone on a balanced auxiliary task")
    for k in ("--dataset", "--out"):
        p.add_argument(k, required=True)
    p.add_argument("--inputs", help="tokenizer folder for text (unused for images)")
    p.add_argument("--log-csv")
    p.add_argument("--params", default="{}")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("erm", help="ERM finetuning of one cell, then embeddings of every example")
    for k in ("--dataset", "--metadata", "--split", "--inputs", "--cell", "--outdir"):
        p.add_argument(k, required=True)
    p.add_argument("--subset")
    p.add_argument("--pretrained")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--params", default="{}")
    p.set_defaults(func=cmd_erm)

    p = sub.add_parser("lastlayer", help="one last-layer method on one held-out cell")
    for k in ("--embeddings", "--head", "--metadata", "--split", "--heldout", "--method", "--out"):
        p.add_argument(k, required=True)
    p.add_argument("--params", default="{}")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--heldout-sampling-ratio",
        type=float,
        default=None,
        metavar="R",
        help="with --heldout full and --method llr: keep every held-out example and sample "
        "so that each class's minority/majority mass is R (the authors' construction)",
    )
    p.set_defaults(func=cmd_lastlayer)

    p = sub.add_parser(
        "lastlayer_backbone",
        help="last layer retrained through the frozen network in training mode (the authors' mode)",
    )
    for k in ("--dataset", "--metadata", "--split", "--inputs", "--model", "--heldout", "--method", "--out"):
        p.add_argument(k, required=True)
    p.add_argument("--pretrained", help="the synthetic pretrain file (gives the text model's options)")
    p.add_argument("--params", default="{}", help="method overrides as for lastlayer, plus backbone_mode and augment")
    p.add_argument(
        "--erm-params", default="{}", help="the ERM cell's settings (arch, model_path, device, threads, ...)"
    )
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--heldout-sampling-ratio", type=float, default=None, metavar="R")
    p.set_defaults(func=cmd_lastlayer_backbone)

    p = sub.add_parser("collect", help="tidy CSVs: runs (one row per run, role, group), logs, analysis")
    p.add_argument("--kind", choices=["runs", "logs", "analysis"], default="runs")
    p.add_argument("--out", required=True)
    p.add_argument("files", nargs="+")
    p.set_defaults(func=cmd_collect)

    for name, func, extra in (("svm", cmd_svm, ()), ("margins", cmd_margins, ("--checkpoints",))):
        p = sub.add_parser(name, help=func.__doc__.splitlines()[0])
        for k in ("--dataset", "--embeddings", "--metadata", "--split", "--out"):
            p.add_argument(k, required=True)
        p.add_argument("--epochs", type=int, required=True)
        p.add_argument("--seed", type=int, required=True)
        for k in extra:
            p.add_argument(k, type=int, default=10)
        p.set_defaults(func=func)

    p = sub.add_parser("plot", help="draw one figure")
    p.add_argument("figure")
    p.add_argument("--inputs", nargs="+", required=True)
    p.add_argument("--out", nargs="+", required=True)
    p.add_argument("--params", default="{}")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("table2", help="dataset statistics (paper Table 2)")
    p.add_argument("--metadata", nargs="+", required=True)
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.set_defaults(func=cmd_table2)

    p = sub.add_parser("fixtures", help="miniature copies of the real datasets in their real layouts")
    p.add_argument("dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--datasets", nargs="+", default=["waterbirds", "celeba", "civilcomments", "multinli"])
    p.add_argument("--total", type=int, default=480, help="examples per dataset (before the per-group minimum)")
    p.add_argument(
        "--tiny-bert",
        action="store_true",
        help="also write a randomly initialized tiny BERT into DIR/bert_vocab (a complete model folder)",
    )
    p.set_defaults(func=cmd_fixtures)

    p = sub.add_parser("doctor", help="check the configured datasets and pretrained weights before a run")
    p.add_argument("--configfile", nargs="+", required=True)
    p.add_argument("--data-root", help="overrides LLR_DATA_ROOT and the config's data_root")
    p.add_argument("--sample", type=int, default=2000, help="image files checked per dataset (a seeded sample)")
    p.add_argument(
        "--strict",
        action="store_true",
        help="also fail when a metadata sha256 or the group counts differ from the official ones",
    )
    p.set_defaults(func=cmd_doctor)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from llr.plugins import load_from_env

        load_from_env()  # methods registered at run time (config `plugins`, exported by the workflow)
        args.func(args)
    except LLRError as e:
        print(f"llr: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # full disk, missing or unreadable file, permissions: one line, no traceback
        where = f"{e.filename}: " if e.filename is not None else ""
        cause = os.strerror(e.errno).lower() if e.errno else str(e)
        print(f"llr: error: {where}{cause}", file=sys.stderr)
        return 2
    return 0
