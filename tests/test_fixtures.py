"""The fixture writer (llr.data.fixtures): miniature real-layout datasets that the
real readers (llr.data.real) accept, with the counts the writer reports, every
group in every split and Table 2's direction of imbalance."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llr.data import fixtures as F
from llr.data import real as D
from llr.data.registry import SPLITS, get_spec
from llr.reporting.table2 import PAPER_TABLE2

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
NAMES = F.FIXTURE_DATASETS


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixtures")
    counts = F.write_fixtures(root, seed=0)
    return root, counts


@pytest.fixture(scope="module")
def metas(fx):
    root, _ = fx
    return {n: D.prepare_real(n, root) for n in NAMES}


def _counts(meta, n_groups):
    g, sp = meta["g"].to_numpy(), meta["split"].to_numpy()
    return {s: np.bincount(g[sp == s], minlength=n_groups).tolist() for s in SPLITS}


def _signs(c):
    c = np.asarray(c)
    return np.sign(c[:, None] - c[None, :])


@pytest.mark.parametrize("name", NAMES)
def test_prepare_real_counts_equal_written(fx, metas, name):
    root, counts = fx
    spec = get_spec(name)
    got = _counts(metas[name], spec.n_groups)
    assert got == counts[name]
    assert json.loads((root / F.MANIFEST).read_text())["counts"][name] == counts[name]
    for sp in SPLITS:
        c = np.asarray(got[sp])
        assert (c >= F.MIN_PER_GROUP).all(), (name, sp, c)
        # direction of the imbalance: every pairwise order (and tie) of Table 2
        assert (_signs(c) == _signs(PAPER_TABLE2[name][sp])).all(), (name, sp, c)
    assert 300 <= len(metas[name]) <= 600


def test_fixture_counts_scaling():
    c = F.fixture_counts("celeba", total=2000, min_count=5)
    paper = np.asarray(PAPER_TABLE2["celeba"]["train"], dtype=float)
    scale = 2000 / sum(sum(v) for v in PAPER_TABLE2["celeba"].values())
    expected = np.maximum(5, np.round(paper * scale))
    assert np.abs(np.asarray(c["train"]) - expected).max() <= 1
    assert min(min(v) for v in c.values()) >= 5
    with pytest.raises(Exception, match="no Table 2 counts"):
        F.fixture_counts("synth_waterbirds")


@pytest.mark.parametrize("name", ["waterbirds", "celeba"])
def test_images_exist_decode_and_carry_signal(fx, metas, name):
    root, _ = fx
    meta = metas[name]
    paths = D.image_paths(name, root, meta, check=len(meta))
    assert all(p.is_file() for p in paths)
    from PIL import Image

    if name == "celeba":
        with Image.open(paths[0]) as im:
            assert im.size == F.CELEBA_SIZE and im.format == "JPEG"
    y, s = meta["y"].to_numpy(), meta["s"].to_numpy()
    pick = np.concatenate([np.flatnonzero((y == a) & (s == b))[:4] for a in (0, 1) for b in (0, 1)])
    arr = np.stack([D.load_image(paths[i], 64) for i in pick]).astype(float)  # (n, 3, 64, 64)
    assert arr.shape == (len(pick), 3, 64, 64)
    yp, sp = y[pick], s[pick]
    corner = arr[:, :, :6, :6].mean(axis=(2, 3))  # background
    if name == "waterbirds":
        centre = arr[:, :, 28:36, 28:36].mean(axis=(2, 3))  # the bird
        # waterbirds are white (bright blue channel), landbirds brown
        assert centre[yp == 1, 2].min() > centre[yp == 0, 2].max()
        # water is blue, land is green
        assert (corner[sp == 1, 2] - corner[sp == 1, 1]).min() > 0 > (corner[sp == 0, 2] - corner[sp == 0, 1]).max()
    else:
        hair = arr[:, :, 4:8, 28:36].mean(axis=(2, 3))  # top of the head
        assert hair[yp == 1].sum(1).min() > hair[yp == 0].sum(1).max()  # blond is bright
        # male backgrounds are cool (blue > red), female warm
        assert (corner[sp == 1, 2] - corner[sp == 1, 0]).min() > 0 > (corner[sp == 0, 2] - corner[sp == 0, 0]).max()


def test_waterbirds_layout(fx):
    root, _ = fx
    d = root / "waterbirds" / "waterbird_complete95_forest2water2"
    lines = (d / "metadata.csv").read_text().splitlines()
    assert lines[0] == "img_id,img_filename,y,split,place,place_filename"
    assert re.fullmatch(
        r"\d+,\d{3}\.[A-Za-z_]+/[A-Za-z_]+_\d{4}_\d+\.jpg,[01],[012],[01],/[a-z]/[a-z_/]+/\d{8}\.jpg", lines[1]
    )
    if SHARED.is_dir():  # the same shape as a real line
        real = (SHARED / "waterbirds" / "metadata.csv").read_text().splitlines()
        assert real[0] == lines[0]
        assert re.fullmatch(
            r"\d+,\d{3}\.[A-Za-z_]+/[A-Za-z_]+_\d{4}_\d+\.jpg,[01],[012],[01],/[a-z]/[a-z_/]+/\d{8}\.jpg", real[1]
        )


def test_celeba_layout_crlf(fx):
    root, counts = fx
    d = root / "celeba"
    raw = (d / "list_attr_celeba.txt").read_bytes()
    lines = raw.split(b"\r\n")
    assert lines[-1] == b"" and b"\n" not in b"".join(lines)  # every line ends with CRLF
    n = sum(sum(v) for v in counts["celeba"].values())
    assert int(lines[0]) == n and len(lines) == n + 3
    assert lines[1].decode().split() == list(F.CELEBA_ATTRIBUTES) and len(F.CELEBA_ATTRIBUTES) == 40
    row = re.compile(rb"\d{6}\.jpg( -1|  1){40}")
    assert all(row.fullmatch(x) for x in lines[2:-1])
    part = (d / "list_eval_partition.txt").read_bytes().split(b"\r\n")
    assert part[0] == b"000001.jpg 0" and len(part) == n + 1
    if SHARED.is_dir():  # header, CRLF and row format as the official files
        real = (SHARED / "celeba" / "list_attr_celeba.txt").open("rb")
        first, header, data = real.readline(), real.readline(), real.readline()
        real.close()
        assert header == lines[1] + b"\r\n" and first.endswith(b"\r\n")
        assert row.fullmatch(data.rstrip(b"\r\n"))


def test_texts_load_signal_and_tokenize(fx, metas):
    root, _ = fx
    cc = metas["civilcomments"]
    texts = D.load_texts("civilcomments", root, cc)
    assert len(texts) == len(cc)
    words = [set(re.findall(r"\w+", t.lower())) for t in texts]
    ident = set(F.CIVIL_IDENTITY_WORDS.values())
    s = cc["s"].to_numpy()
    has_ident = np.array([bool(w & ident) for w in words])
    assert (has_ident == (s == 1)).all()  # the spurious word marks s exactly
    y = cc["y"].to_numpy()
    has_toxic = np.array([bool(w & set(F.CIVIL_CORE[1])) for w in words])
    assert 0.7 < has_toxic[y == 1].mean() and has_toxic[y == 0].sum() == 0  # a learnable core word
    assert any("\n" in t and '"' in t for t in texts)  # quoted line breaks survive the CSV round trip

    mn = metas["multinli"]
    pairs = D.load_texts("multinli", root, mn)
    assert len(pairs) == len(mn) and all(isinstance(p, tuple) and len(p) == 2 for p in pairs)
    assert (F.has_negation([h for _, h in pairs]) == mn["s"].to_numpy()).all()
    core = [set(F.MNLI_CORE[c]) for c in range(3)]
    hit = np.array([bool(set(re.findall(r"\w+", h.lower())) & core[c]) for (_, h), c in zip(pairs, mn["y"])])
    assert hit.mean() > 0.7

    from llr.data.tokens import load_tokenizer

    tok = load_tokenizer(str(root / "bert_vocab"))
    enc = tok(texts)["input_ids"] + tok([p for p, _ in pairs], [h for _, h in pairs])["input_ids"]
    assert tok.unk_token_id not in {i for ids in enc for i in ids}
    assert tok.convert_ids_to_tokens([0, 1, 2, 3, 4]) == list(F.SPECIAL_TOKENS)


def test_deterministic_from_seed(tmp_path, fx):
    root, counts = fx
    again = F.write_fixtures(tmp_path / "a", seed=0, datasets=("civilcomments", "multinli"))
    assert again == {k: counts[k] for k in again}
    for rel in (
        "civilcomments/civilcomments_v1.0/all_data_with_identities.csv",
        "multinli/metadata_random.csv",
        "multinli/train.tsv",
        "bert_vocab/vocab.txt",
    ):
        assert (tmp_path / "a" / rel).read_bytes() == (root / rel).read_bytes(), rel
    F.write_fixtures(tmp_path / "b", seed=1, datasets=("civilcomments",))
    rel = "civilcomments/civilcomments_v1.0/all_data_with_identities.csv"
    assert (tmp_path / "b" / rel).read_bytes() != (root / rel).read_bytes()


def test_cli_fixtures(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "llr", "fixtures", str(tmp_path / "fx"), "--seed", "3", "--datasets", "multinli"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "multinli: groups (contradiction/no-negation" in out.stdout
    meta = D.prepare_real("multinli", tmp_path / "fx")
    manifest = json.loads((tmp_path / "fx" / F.MANIFEST).read_text())
    assert manifest["seed"] == 3 and _counts(meta, 6) == manifest["counts"]["multinli"]
    assert not (tmp_path / "results").exists()
