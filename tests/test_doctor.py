"""``python -m llr doctor`` and the workflow's pre-flight
(llr.data.preflight.check_workflow_data) on the fixture datasets (llr.data.fixtures):
each broken input gives one-line errors naming the file, a non-zero exit,
within 10 seconds, and nothing written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from llr.data import fixtures as F
from llr.data import preflight as P

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("fx")
    F.write_fixtures(root, seed=0)
    model = root / "bert_vocab"  # a complete-looking local model folder (presence is what is checked)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")
    return root


@pytest.fixture
def data(base, tmp_path):
    """A private copy of the fixtures (tests may break it)."""
    d = tmp_path / "data"
    shutil.copytree(base, d)
    return d


def _config(data: Path, datasets=F.FIXTURE_DATASETS, **erm_extra) -> dict:
    erm = {
        "waterbirds": {"arch": "resnet50", "epochs": 1, "lr": 1.0e-5},
        "celeba": {"arch": "resnet50", "epochs": 1, "lr": 1.0e-5},
        "civilcomments": {
            "arch": "bert-base-uncased",
            "model_path": str(data / "bert_vocab"),
            "epochs": 1,
            "lr": 1.0e-5,
        },
        "multinli": {"arch": "bert-base-uncased", "model_path": str(data / "bert_vocab"), "epochs": 1, "lr": 1.0e-5},
    }
    for ds, extra in erm_extra.items():
        erm[ds].update(extra)
    return {
        "datasets": list(datasets),
        "data_root": str(data),
        "figures": ["fig4"],
        "tables": ["table2"],
        "erm": {k: erm[k] for k in datasets},
    }


def doctor(tmp_path: Path, config: dict, *args: str, env: dict | None = None):
    """Run the doctor in an empty working folder; check the time limit and
    that nothing was written; return (rc, stdout, error lines)."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    cfg = tmp_path / "doctor.yaml"
    cfg.write_text(yaml.safe_dump(config))
    before = sorted(os.listdir(work))
    t = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "llr", "doctor", "--configfile", str(cfg), *args],
        capture_output=True,
        text=True,
        cwd=work,
        timeout=30,
        env={**os.environ, **(env or {})},
    )
    assert time.monotonic() - t < 10
    assert sorted(os.listdir(work)) == before  # no results/ (nor anything else) written
    errors = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert all(ln.startswith("llr: error: ") for ln in errors), out.stderr  # one line each, no traceback
    return out.returncode, out.stdout, errors


def test_doctor_fixtures_pass(tmp_path, data):
    rc, stdout, errors = doctor(tmp_path, _config(data))
    assert rc == 0 and errors == [], errors
    assert "doctor: no problems found" in stdout
    # counts found and, in parentheses, Table 2's
    counts = F.fixture_counts("waterbirds")["train"]
    assert (
        f"landbird/land {counts[0]} (3498)  landbird/water {counts[1]} (184)  waterbird/land {counts[2]} (56)  "
        f"waterbird/water {counts[3]} (1057)"
    ) in stdout
    for line in (
        "all 492 image files present",
        "all 506 image files present",
        "every group non-empty in every split",
        "tsv rows aligned with metadata_random.csv",
    ):
        assert line in stdout, line
    assert stdout.count("DIFFERS") == 3  # fixtures are not the official files: information unless --strict
    rc, _, errors = doctor(tmp_path, _config(data, ("waterbirds",)), "--strict")
    assert rc != 0 and len(errors) == 3, errors
    assert errors[0].startswith("llr: error: waterbirds: group counts") and "Table 2" in errors[0]
    assert errors[1].startswith("llr: error: waterbirds: metadata.csv sha256")


def test_doctor_empty_data_root(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, errors = doctor(tmp_path, _config(empty))
    assert rc != 0
    problems = errors[:-1]
    assert errors[-1].startswith("llr: error: doctor: ")
    expect = {
        "waterbirds": ("metadata.csv", "nlp.stanford.edu/data/dro/waterbird_complete95_forest2water2"),
        "celeba": ("list_attr_celeba.txt", "official CelebA site"),
        "civilcomments": ("all_data_with_identities.csv", "WILDS"),
        "multinli": ("metadata_random.csv", "GLUE MNLI"),
    }
    for ds, (fname, source) in expect.items():
        mine = [e for e in problems if e.startswith(f"llr: error: {ds}: no ")]
        assert len(mine) == 1 and fname in mine[0] and source in mine[0], (ds, problems)
    # the BERT folder named by the config does not exist either
    assert sum("model_path" in e for e in problems) == 2


def test_doctor_deleted_image(tmp_path, data):
    meta = pd.read_csv(data / "waterbirds" / "waterbird_complete95_forest2water2" / "metadata.csv")
    gone = data / "waterbirds" / "waterbird_complete95_forest2water2" / meta["img_filename"].iloc[123]
    gone.unlink()
    rc, _, errors = doctor(tmp_path, _config(data, ("waterbirds",)))
    assert rc != 0 and len(errors) == 2
    assert f"image {gone} missing (1 missing among all 492 image files)" in errors[0]
    assert "group_DRO Waterbirds tarball" in errors[0]


def test_doctor_truncated_celeba_attributes(tmp_path, data):
    attr = data / "celeba" / "list_attr_celeba.txt"
    raw = attr.read_bytes()
    attr.write_bytes(raw[: len(raw) // 2])  # cut mid-line, as an interrupted download
    rc, _, errors = doctor(tmp_path, _config(data, ("celeba",)))
    assert rc != 0 and len(errors) == 2
    assert str(attr) in errors[0] and "rows but the first line says 506" in errors[0]
    assert "official CelebA site" in errors[0]


def test_doctor_civilcomments_without_identity_column(tmp_path, data):
    csv = data / "civilcomments" / "civilcomments_v1.0" / "all_data_with_identities.csv"
    df = pd.read_csv(csv, index_col=0)
    df.drop(columns=["muslim"]).to_csv(csv)
    rc, _, errors = doctor(tmp_path, _config(data, ("civilcomments",)))
    assert rc != 0 and len(errors) == 2
    assert str(csv) in errors[0] and "['muslim'] missing" in errors[0] and "WILDS" in errors[0]


def test_doctor_missing_imagenet_weights(tmp_path, data):
    torch_home = tmp_path / "torch_home"
    torch_home.mkdir()
    cfg = _config(data, ("waterbirds",), waterbirds={"imagenet": True, "section2": {"arch": "resnet18"}})
    cfg["figures"] = ["fig2", "fig4"]  # section 2 (ResNet-18) is used too
    env = {"TORCH_HOME": str(torch_home)}
    rc, _, errors = doctor(tmp_path, cfg, env=env)
    assert rc != 0 and len(errors) == 3
    ckpt = torch_home / "hub" / "checkpoints"
    assert str(ckpt / "resnet50-0676ba61.pth") in errors[0] and "download.pytorch.org/models" in errors[0]
    assert str(ckpt / "resnet18-f37072fd.pth") in errors[1] and "section2" in errors[1]
    ckpt.mkdir(parents=True)  # weights present: no problem left
    for fn in ("resnet50-0676ba61.pth", "resnet18-f37072fd.pth"):
        (ckpt / fn).write_bytes(b"")
    rc, stdout, errors = doctor(tmp_path, cfg, env=env)
    assert rc == 0 and errors == [] and "ImageNet weights IMAGENET1K_V1 at" in stdout


def test_doctor_hub_model_cache(tmp_path, data):
    cache = tmp_path / "hf"
    cfg = _config(
        data, ("multinli",), multinli={"section2": {"arch": "bert-tiny", "model_path": "prajjwal1/bert-tiny"}}
    )
    cfg["figures"] = ["fig2"]
    rc, _, errors = doctor(tmp_path, cfg, env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    assert rc != 0 and "'prajjwal1/bert-tiny' not in the Hugging Face cache" in errors[0]
    snap = cache / "models--prajjwal1--bert-tiny" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for fn in ("config.json", "vocab.txt", "pytorch_model.bin"):
        (snap / fn).write_text("{}")
    (cache / "models--prajjwal1--bert-tiny" / "refs").mkdir()
    (cache / "models--prajjwal1--bert-tiny" / "refs" / "main").write_text("abc123")
    rc, stdout, errors = doctor(tmp_path, cfg, env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    assert rc == 0, errors
    assert "'prajjwal1/bert-tiny' in the Hugging Face cache" in stdout


def test_workflow_preflight(data):
    cfg = _config(data)
    assert (
        P.check_workflow_data(
            list(F.FIXTURE_DATASETS) + ["synth_waterbirds"],
            data,
            {**cfg, "erm": {**cfg["erm"], "synth_waterbirds": {"arch": "resnet18-small"}}},
        )
        == []
    )
    (data / "multinli" / "dev_mismatched.tsv").unlink()
    (data / "bert_vocab" / "model.safetensors").unlink()
    meta = pd.read_csv(data / "celeba" / "list_eval_partition.txt", sep=" ", header=None)
    img = data / "celeba" / "img_align_celeba" / meta[0].iloc[-1]
    img.unlink()  # the last row is always among the sampled files
    problems = P.check_workflow_data(list(F.FIXTURE_DATASETS), data, cfg)
    assert all("\n" not in p for p in problems)
    assert len(problems) == 4, problems
    assert problems[0].startswith("celeba: image ") and str(img) in problems[0]
    assert "civilcomments: erm.civilcomments.model_path folder" in problems[1] and "lacks weights" in problems[1]
    assert problems[2].startswith("multinli: GLUE MNLI file") and "dev_mismatched.tsv" in problems[2]
    assert "GLUE MNLI (https://gluebenchmark.com/tasks)" in problems[2]
    assert "lacks weights" in problems[3]


def test_sample_positions():
    pos, sampled = P._sample(10, 2000)
    assert not sampled and pos.tolist() == list(range(10))
    pos, sampled = P._sample(11788, 2000)
    assert sampled and len(pos) == 2000 == len(np.unique(pos))
    assert pos[0] == 0 and pos[-1] == 11787 and (np.diff(pos) > 0).all()
    assert np.array_equal(pos, P._sample(11788, 2000)[0])  # seeded


def test_weights_tables_match_torch(monkeypatch, tmp_path):
    from torchvision.models import get_weight

    from llr.models.resnet import IMAGENET_WEIGHTS

    assert P.IMAGENET_VARIANT == IMAGENET_WEIGHTS
    for (arch, variant), fn in P.TORCHVISION_FILES.items():
        enum = {"resnet18": "ResNet18_Weights", "resnet50": "ResNet50_Weights"}[arch]
        assert get_weight(f"{enum}.{variant}").url.rsplit("/", 1)[1] == fn
    import torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert P.torch_hub_dir() == Path(torch.hub.get_dir())


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets absent")
def test_known_checksums_and_real_metadata():
    for ds, d in (("waterbirds", SHARED / "waterbirds"), ("celeba", SHARED / "celeba")):
        rows = P._checksum_rows(ds, d)
        assert len(rows) == len(P.KNOWN_SHA256[ds]) and all(r.status == "ok" for r in rows)
    rows = P.dataset_rows("celeba", SHARED, checksum=False)
    got = {r.check: r for r in rows}
    assert got["metadata"].status == "ok" and got["table 2"].status == "ok"  # CelebA equals Table 2
    assert got["images"].problem and "img_align_celeba" in got["images"].detail  # metadata only: no images
    rows = P.dataset_rows("waterbirds", SHARED, checksum=False)
    got = {r.check: r for r in rows}
    # the paper prints 2225 for the landbird test groups, the file has 2255
    assert got["counts test"].status == "info" and "landbird/land 2255 (2225)" in got["counts test"].detail
    assert got["counts train"].status == "ok"
    assert got["images"].problem and "sample of 2000 of 11788" in got["images"].detail
