"""The paper's DAG end to end on miniature real-format datasets (the dress
rehearsal): fixtures written by `llr fixtures`, read by the real loaders,
through the pre-decoded image cache, a WordPiece tokenizer, torchvision
ResNets and transformers BERT (random initialization, as the rehearsal
config says), every last-layer method, analysis, figure and table."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import REPO, snakemake_env

REHEARSAL = REPO / "workflow" / "configs" / "rehearsal.yaml"


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    work = tmp_path_factory.mktemp("rehearsal")
    fx = work / "fixtures"
    subprocess.run(
        [sys.executable, "-m", "llr", "fixtures", str(fx), "--tiny-bert"],
        check=True,
        env=snakemake_env(),
        capture_output=True,
    )
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(work),
        "--cores",
        "2",
        "all",
        "--configfile",
        str(REHEARSAL),
        "--config",
        f"data_root={fx}",
    ]
    res = subprocess.run(cmd, cwd=work, env=snakemake_env(), capture_output=True, text=True)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-4000:])
    return work, fx


def test_rehearsal_builds_every_output(rehearsal):
    work, _ = rehearsal
    cfg = yaml.safe_load(REHEARSAL.read_text())
    out = work / cfg["results_dir"]
    for fig in cfg["figures"]:
        for ext, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
            assert (out / "figures" / f"{fig}.{ext}").read_bytes()[:4] == magic
    t1 = pd.read_csv(out / "tables" / "table1.csv")
    assert set(t1["dataset"]) == set(cfg["datasets"]) and set(t1["margin"]) == {"minimum", "average"}
    claims = pd.read_csv(out / "tables" / "paper_comparison.csv")
    assert {"Table 2", "Fig. 2", "Fig. 3", "Table 1", "Fig. 4", "Fig. 5", "Fig. 6", "Fig. 7"} <= set(claims["section"])
    assert set(claims["holds"]) <= {"yes", "no", "inconclusive"}
    # the paper's architectures per analysis: section 2 cells in the small models
    for ds, arch in (("waterbirds", "resnet18-small"), ("multinli", "bert-tiny")):
        assert (out / ds / "seed1" / "erm" / f"train_none_long_arch-{arch}" / "metrics.json").is_file()


def test_rehearsal_table2_equals_the_fixture_counts(rehearsal):
    work, fx = rehearsal
    written = json.loads((fx / "fixtures.json").read_text())["counts"]
    t2 = pd.read_csv(work / "results" / "rehearsal" / "tables" / "table2.csv")
    for ds, per_split in written.items():
        d = t2[t2["dataset"] == ds].sort_values("g")
        for split, counts in per_split.items():
            assert d[split].tolist() == counts, (ds, split)
