"""Real-dataset preparation and loaders (llr.data.real): tiny fixtures in each
dataset's on-disk format, every error case, and the real Waterbirds/CelebA
metadata from ../shared/datasets when present (docs/design.md, "Groups", "Adding a dataset")."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llr.data import real as ds
from llr.data.registry import get_spec
from llr.errors import LLRError
from llr.train.balancing import group_ratio_subset, group_ratio_targets, rng_for

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"

CELEBA_ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
    "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
    "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


def _grid(n_classes: int = 2, n_spurious: int = 2, reps: int = 1):
    """(split code, y, s) covering every group in every split."""
    return [(sp, y, s) for sp in (0, 1, 2) for y in range(n_classes) for s in range(n_spurious) for _ in range(reps)]


def _one_line_error(excinfo, *needles: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def _counts(df: pd.DataFrame, split: str, n_groups: int) -> list[int]:
    return np.bincount(df.loc[df["split"] == split, "g"], minlength=n_groups).tolist()


# ---------------------------------------------------------------- fixtures


def make_waterbirds(root: Path, images: bool = False, rows=None) -> Path:
    d = root / "waterbirds" / "waterbird_complete95_forest2water2"
    d.mkdir(parents=True)
    rows = rows if rows is not None else _grid()
    recs = []
    for i, (sp, y, s) in enumerate(rows):
        fn = f"{1 + y:03d}.Bird_{y}/Bird_{i:04d}.jpg"
        recs.append(
            {
                "img_id": i + 1,
                "img_filename": fn,
                "y": y,
                "split": sp,
                "place": s,
                "place_filename": f"/p/place/{i:08d}.jpg",
            }
        )
        if images:
            from PIL import Image

            (d / fn).parent.mkdir(parents=True, exist_ok=True)
            w, h = (40 + 3 * i, 30) if i % 2 else (30, 44)
            Image.new("RGB", (w, h), (10 * i % 256, 100, 200)).save(d / fn)
    pd.DataFrame(recs).to_csv(d / "metadata.csv", index=False)
    return d


def make_celeba(root: Path, fmt: str = "txt", rows=None, shuffle_partition: bool = False) -> Path:
    d = root / "celeba"
    d.mkdir(parents=True)
    rows = rows if rows is not None else _grid(reps=2)
    ids = [f"{i + 1:06d}.jpg" for i in range(len(rows))]
    vals = np.where(np.arange(40)[None, :] % 3 == 0, 1, -1).repeat(len(rows), 0)
    bi, mi = CELEBA_ATTRS.index("Blond_Hair"), CELEBA_ATTRS.index("Male")
    vals[:, bi] = [1 if y else -1 for _, y, _ in rows]
    vals[:, mi] = [1 if s else -1 for _, _, s in rows]
    part = [(i, sp) for i, (sp, _, _) in zip(ids, rows)]
    if shuffle_partition:
        part = part[::-1]
    if fmt == "txt":
        lines = [str(len(rows)), " ".join(CELEBA_ATTRS) + " "]
        lines += [f"{i} " + " ".join(f"{v:2d}" for v in r) for i, r in zip(ids, vals)]
        (d / "list_attr_celeba.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode())
        (d / "list_eval_partition.txt").write_bytes(("\r\n".join(f"{i} {sp}" for i, sp in part) + "\r\n").encode())
    else:
        attrs = pd.DataFrame(vals, columns=CELEBA_ATTRS)
        attrs.insert(0, "image_id", ids)
        attrs.to_csv(d / "list_attr_celeba.csv", index=False)
        pd.DataFrame(part, columns=["image_id", "partition"]).to_csv(d / "list_eval_partition.csv", index=False)
    return d


def make_civilcomments(root: Path, drop_cols=()) -> Path:
    d = root / "civilcomments" / "civilcomments_v1.0"
    d.mkdir(parents=True)
    recs = []
    rows = _grid()
    for i, (sp, y, s) in enumerate(rows):
        ident = dict.fromkeys(ds.CIVILCOMMENTS_IDENTITIES, 0.0)
        if s:
            ident[ds.CIVILCOMMENTS_IDENTITIES[i % 8]] = 0.5 + 0.1 * (i % 3)
        else:
            ident["white"] = 0.4  # below threshold: no identity
        recs.append(
            {
                "id": 1000 + i,
                "comment_text": f'comment {i}, with "quotes"\nand a newline',
                "split": ["train", "val", "test"][sp],
                "toxicity": 0.5 if y else 0.49,
                **ident,
            }
        )
        if i == 3:  # a row outside train/val/test is dropped
            recs.append(
                {
                    "id": 5000,
                    "comment_text": "extra row",
                    "split": "extra",
                    "toxicity": 0.9,
                    **dict.fromkeys(ds.CIVILCOMMENTS_IDENTITIES, 1.0),
                }
            )
    df = pd.DataFrame(recs).drop(columns=list(drop_cols))
    df.to_csv(d / "all_data_with_identities.csv")  # WILDS keeps an unnamed index column
    return d


def make_multinli(root: Path, tsv: bool = True, rows=None) -> Path:
    d = root / "multinli"
    d.mkdir(parents=True)
    rows = rows if rows is not None else _grid(3, 2)
    rng = np.random.default_rng(0)
    rows = [rows[i] for i in rng.permutation(len(rows))]  # random split assignment, as group_DRO
    meta = pd.DataFrame(
        {
            "gold_label": [y for _, y, _ in rows],
            "sentence2_has_negation": [s for _, _, s in rows],
            "split": [sp for sp, _, _ in rows],
        }
    )
    meta.index = np.arange(len(meta)) * 2  # original index with gaps ('-' rows removed)
    meta.to_csv(d / "metadata_random.csv")
    if tsv:
        names = {v: k for k, v in ds.MNLI_LABELS.items()}
        g = d / "glue_data" / "MNLI"
        g.mkdir(parents=True)
        bounds = [(0, 10), (10, 14), (14, len(rows))]
        for fn, (a, b) in zip(ds.MNLI_TSV_FILES, bounds):
            labels = ["label1"] if fn == "train.tsv" else [f"label{k}" for k in range(1, 6)]
            head = [
                "index",
                "promptID",
                "pairID",
                "genre",
                "sentence1_binary_parse",
                "sentence2_binary_parse",
                "sentence1_parse",
                "sentence2_parse",
                "sentence1",
                "sentence2",
                *labels,
                "gold_label",
            ]
            lines = ["\t".join(head)]
            for i in range(a, b):
                lab = names[rows[i][1]]
                lines.append(
                    "\t".join(
                        [
                            str(i),
                            "1",
                            "1a",
                            "fiction",
                            "( x )",
                            "( y )",
                            "(S x)",
                            "(S y)",
                            f'premise "{i}',
                            f"hypothesis {i} NA",
                            *[lab] * len(labels),
                            lab,
                        ]
                    )
                )
            (g / fn).write_text("\n".join(lines) + "\n")
    return d


# ---------------------------------------------------------------- prepare


def test_prepare_waterbirds_fixture(tmp_path):
    make_waterbirds(tmp_path)
    df = ds.prepare_real("waterbirds", tmp_path)
    assert list(df.columns[:5]) == ["idx", "split", "y", "s", "g"]
    assert {"img_id", "img_filename", "place_filename"} <= set(df.columns)
    assert df["idx"].tolist() == list(range(12))
    assert df["split"].tolist() == ["train"] * 4 + ["val"] * 4 + ["test"] * 4
    assert df["g"].tolist() == [0, 1, 2, 3] * 3
    # the folder itself, and data_root/waterbirds/, are accepted too
    d = tmp_path / "waterbirds" / "waterbird_complete95_forest2water2"
    assert ds.find_dataset_dir("waterbirds", d) == d
    pd.testing.assert_frame_equal(ds.prepare_real("waterbirds", d), df)


@pytest.mark.parametrize("fmt", ["txt", "csv"])
def test_prepare_celeba_fixture(tmp_path, fmt):
    make_celeba(tmp_path, fmt=fmt, shuffle_partition=(fmt == "csv"))
    df = ds.prepare_real("celeba", tmp_path)
    assert list(df.columns) == ["idx", "split", "y", "s", "g", "image_id"]
    assert df["image_id"].iloc[0] == "000001.jpg"
    for split in ("train", "val", "test"):
        assert _counts(df, split, 4) == [2, 2, 2, 2]
    assert df["split"].iloc[:8].eq("train").all() and df["split"].iloc[-8:].eq("test").all()


def test_prepare_civilcomments_fixture(tmp_path):
    make_civilcomments(tmp_path)
    df = ds.prepare_real("civilcomments", tmp_path)
    assert len(df) == 12  # the 'extra' row is dropped
    assert df["g"].tolist() == [0, 1, 2, 3] * 3
    assert "id" in df.columns and 5000 not in df["id"].tolist()
    assert df["source_row"].tolist() == [0, 1, 2, 3] + list(range(5, 13))
    texts = ds.load_texts("civilcomments", tmp_path, df)
    assert texts[4] == 'comment 4, with "quotes"\nand a newline'
    assert all("extra" not in t for t in texts)
    sub = df[df["split"] == "test"]
    assert ds.load_texts("civilcomments", tmp_path, sub)[0].startswith("comment 8,")


def test_prepare_multinli_and_texts(tmp_path):
    make_multinli(tmp_path)
    df = ds.prepare_real("multinli", tmp_path)
    assert len(df) == 18 and df["g"].max() == 5
    for split in ("train", "val", "test"):
        assert _counts(df, split, 6) == [1] * 6
    pairs = ds.load_texts("multinli", tmp_path, df)
    assert pairs[0] == ('premise "0', "hypothesis 0 NA")  # no quoting, no NA parsing
    assert pairs[17] == ('premise "17', "hypothesis 17 NA")
    sub = df.iloc[[3, 11]]
    assert ds.load_texts("multinli", tmp_path, sub) == [pairs[3], pairs[11]]


def test_load_cached_mnli_tokens(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    d = make_multinli(tmp_path, tsv=False)
    labels = pd.read_csv(d / "metadata_random.csv")["gold_label"].tolist()

    # group_DRO pickles utils_glue.InputFeatures; build an equivalent module
    mod = types.ModuleType("utils_glue")

    class InputFeatures:
        def __init__(self, input_ids, input_mask, segment_ids, label_id):
            self.input_ids, self.input_mask = input_ids, input_mask
            self.segment_ids, self.label_id = segment_ids, label_id

    InputFeatures.__module__ = "utils_glue"
    InputFeatures.__qualname__ = "InputFeatures"
    mod.InputFeatures = InputFeatures
    monkeypatch.setitem(sys.modules, "utils_glue", mod)
    feats = [InputFeatures([101, i, 102, 0], [1, 1, 1, 0], [0, 0, 1, 0], lab) for i, lab in enumerate(labels)]
    for fn, (a, b) in zip(ds.MNLI_CACHED_FILES, [(0, 10), (10, 14), (14, 18)]):
        torch.save(feats[a:b], d / fn)
    monkeypatch.delitem(sys.modules, "utils_glue")  # loading must not need it

    assert ds.find_cached_mnli(d) is not None
    tok = ds.load_cached_mnli_tokens(d)
    assert set(tok) == {"input_ids", "attention_mask", "token_type_ids"}
    assert tok["input_ids"].dtype == np.int64 and tok["input_ids"].shape == (18, 4)
    assert tok["input_ids"][:, 1].tolist() == list(range(18))
    assert tok["attention_mask"][0].tolist() == [1, 1, 1, 0]

    # labels that disagree with metadata_random.csv are rejected
    monkeypatch.setitem(sys.modules, "utils_glue", mod)
    bad = [InputFeatures(f.input_ids, f.input_mask, f.segment_ids, (f.label_id + 1) % 3) for f in feats[14:]]
    torch.save(bad, d / ds.MNLI_CACHED_FILES[2])
    with pytest.raises(LLRError) as e:
        ds.load_cached_mnli_tokens(d)
    _one_line_error(e, "multinli", "metadata_random.csv")
    (d / ds.MNLI_CACHED_FILES[0]).unlink()
    with pytest.raises(LLRError) as e:
        ds.load_cached_mnli_tokens(d)
    _one_line_error(e, "multinli", "cached_train_bert-base-uncased_128_mnli")


# ---------------------------------------------------------------- images


def test_image_paths_and_cache(tmp_path):
    from PIL import Image

    d = make_waterbirds(tmp_path, images=True)
    meta = ds.prepare_real("waterbirds", tmp_path)
    paths = ds.image_paths("waterbirds", tmp_path, meta)
    assert paths[0] == d / meta["img_filename"].iloc[0] and len(paths) == 12
    # a two-colour image checks orientation of resize + center crop
    two = tmp_path / "two.png"
    arr = np.zeros((20, 60, 3), np.uint8)
    arr[:, :30] = (255, 0, 0)
    arr[:, 30:] = (0, 0, 255)
    Image.fromarray(arr).save(two)
    Image.fromarray(arr[:, :, 0]).convert("L").save(tmp_path / "gray.png")
    out = tmp_path / "cache" / "images.npy"
    ds.build_image_cache(paths + [two, tmp_path / "gray.png"], out, size=16, workers=2)
    cache = np.load(out, mmap_mode="r")
    assert cache.shape == (14, 3, 16, 16) and cache.dtype == np.uint8
    assert np.abs(cache[0, :, 8, 8].astype(int) - (0, 100, 200)).max() <= 4  # solid colour (JPEG)
    assert tuple(cache[12, :, 8, 0]) == (255, 0, 0) and tuple(cache[12, :, 8, 15]) == (0, 0, 255)
    assert (cache[13, 0] == cache[13, 1]).all()
    assert sorted(p.name for p in out.parent.iterdir()) == ["images.npy"]
    # a corrupt image: LLRError naming it, nothing left behind
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    out2 = tmp_path / "cache2" / "images.npy"
    with pytest.raises(LLRError) as e:
        ds.build_image_cache([paths[0], bad], out2, size=8)
    _one_line_error(e, "bad.jpg")
    assert list(out2.parent.iterdir()) == []


def test_image_errors(tmp_path):
    make_waterbirds(tmp_path, images=False)
    meta = ds.prepare_real("waterbirds", tmp_path)
    with pytest.raises(LLRError) as e:
        ds.image_paths("waterbirds", tmp_path, meta)
    _one_line_error(e, "waterbirds", "Bird_0000.jpg")
    make_celeba(tmp_path)
    cmeta = ds.prepare_real("celeba", tmp_path)
    with pytest.raises(LLRError) as e:
        ds.image_paths("celeba", tmp_path, cmeta)
    _one_line_error(e, "celeba", "img_align_celeba")
    nested = tmp_path / "celeba" / "img_align_celeba" / "img_align_celeba"  # kaggle layout
    nested.mkdir(parents=True)
    for f in cmeta["image_id"].iloc[:5]:
        (nested / f).write_bytes(b"")
    assert ds.image_paths("celeba", tmp_path, cmeta)[0] == nested / "000001.jpg"
    with pytest.raises(LLRError):
        ds.image_paths("multinli", tmp_path, cmeta)


# ---------------------------------------------------------------- errors


def test_error_data_root_and_folder_missing(tmp_path):
    with pytest.raises(LLRError) as e:
        ds.prepare_real("waterbirds", tmp_path / "nope")
    _one_line_error(e, "waterbirds", str(tmp_path / "nope"), "metadata.csv")
    with pytest.raises(LLRError) as e:
        ds.prepare_real("civilcomments", tmp_path)
    _one_line_error(e, "civilcomments", str(tmp_path), "all_data_with_identities.csv")
    with pytest.raises(LLRError) as e:
        ds.prepare_real("synth_waterbirds", tmp_path)
    _one_line_error(e, "synth_waterbirds")
    with pytest.raises(LLRError):
        ds.prepare_real("imagenet", tmp_path)


def test_error_file_missing(tmp_path):
    d = make_celeba(tmp_path)
    (d / "list_eval_partition.txt").unlink()
    with pytest.raises(LLRError) as e:
        ds.prepare_real("celeba", tmp_path)
    _one_line_error(e, "celeba", "list_eval_partition.txt")
    make_multinli(tmp_path / "m", tsv=False)
    meta = ds.prepare_real("multinli", tmp_path / "m")
    with pytest.raises(LLRError) as e:
        ds.load_texts("multinli", tmp_path / "m", meta)
    _one_line_error(e, "multinli", "train.tsv")


def test_error_column_missing(tmp_path):
    d = make_waterbirds(tmp_path)
    pd.read_csv(d / "metadata.csv").drop(columns=["place"]).to_csv(d / "metadata.csv", index=False)
    with pytest.raises(LLRError) as e:
        ds.prepare_real("waterbirds", tmp_path)
    _one_line_error(e, "waterbirds", "metadata.csv", "place", "img_filename,y,split,place")
    make_civilcomments(tmp_path / "c", drop_cols=["muslim"])
    with pytest.raises(LLRError) as e:
        ds.prepare_real("civilcomments", tmp_path / "c")
    _one_line_error(e, "civilcomments", "all_data_with_identities.csv", "muslim")
    d = make_multinli(tmp_path / "m", tsv=False)
    pd.read_csv(d / "metadata_random.csv", index_col=0).drop(columns=["sentence2_has_negation"]).to_csv(
        d / "metadata_random.csv"
    )
    with pytest.raises(LLRError) as e:
        ds.prepare_real("multinli", tmp_path / "m")
    _one_line_error(e, "multinli", "metadata_random.csv", "sentence2_has_negation")


def test_error_label_out_of_range(tmp_path):
    d = make_waterbirds(tmp_path)
    df = pd.read_csv(d / "metadata.csv")
    df.loc[5, "y"] = 2
    df.to_csv(d / "metadata.csv", index=False)
    with pytest.raises(LLRError) as e:
        ds.prepare_real("waterbirds", tmp_path)
    _one_line_error(e, "waterbirds", "metadata.csv", "label y=", "2", "0..1")
    df.loc[5, "y"] = 1
    df.loc[6, "split"] = 7
    df.to_csv(d / "metadata.csv", index=False)
    with pytest.raises(LLRError) as e:
        ds.prepare_real("waterbirds", tmp_path)
    _one_line_error(e, "waterbirds", "metadata.csv", "split", "7")

    c = make_celeba(tmp_path / "c")
    lines = (c / "list_attr_celeba.txt").read_text().splitlines()
    vals = lines[4].split()
    vals[1 + CELEBA_ATTRS.index("Blond_Hair")] = "5"
    lines[4] = " ".join(vals)
    (c / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(LLRError) as e:
        ds.prepare_real("celeba", tmp_path / "c")
    _one_line_error(e, "celeba", "list_attr_celeba.txt", "Blond_Hair")

    m = make_multinli(tmp_path / "m", tsv=False)
    df = pd.read_csv(m / "metadata_random.csv", index_col=0)
    df.iloc[0, 0] = 3
    df.to_csv(m / "metadata_random.csv")
    with pytest.raises(LLRError) as e:
        ds.prepare_real("multinli", tmp_path / "m")
    _one_line_error(e, "multinli", "metadata_random.csv", "0..2")


def test_error_empty_group(tmp_path):
    rows = [r for r in _grid() if not (r[0] == 2 and r[1] == 1 and r[2] == 0)]  # no waterbird/land in test
    make_waterbirds(tmp_path, rows=rows)
    with pytest.raises(LLRError) as e:
        ds.prepare_real("waterbirds", tmp_path)
    _one_line_error(e, "waterbirds", "metadata.csv", "group 2", "waterbird/land", "test")


def test_error_celeba_truncated_and_partition_mismatch(tmp_path):
    c = make_celeba(tmp_path)
    lines = (c / "list_attr_celeba.txt").read_bytes().decode().splitlines()
    (c / "list_attr_celeba.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(LLRError) as e:
        ds.prepare_real("celeba", tmp_path)
    _one_line_error(e, "celeba", "list_attr_celeba.txt", "rows")
    (c / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    part = (c / "list_eval_partition.txt").read_bytes().decode().splitlines()
    (c / "list_eval_partition.txt").write_text("\n".join(part[1:]) + "\n")
    with pytest.raises(LLRError) as e:
        ds.prepare_real("celeba", tmp_path)
    _one_line_error(e, "celeba", "list_eval_partition.txt", "000001.jpg")


def test_error_multinli_text_misaligned(tmp_path):
    d = make_multinli(tmp_path)
    meta = ds.prepare_real("multinli", tmp_path)
    tsv = d / "glue_data" / "MNLI" / "dev_mismatched.tsv"
    lines = tsv.read_text().splitlines()
    tsv.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(LLRError) as e:
        ds.load_texts("multinli", tmp_path, meta)
    _one_line_error(e, "multinli", "17 rows", "metadata_random.csv has 18")
    swapped = lines[:2] + [lines[3], lines[2]] + lines[4:]
    labels = [ln.split("\t")[-1] for ln in swapped[1:]]
    if labels[1] == labels[2]:  # make sure the swap changes a label
        swapped[2] = swapped[2].rsplit("\t", 1)[0] + "\t" + next(k for k in ds.MNLI_LABELS if k != labels[1])
    tsv.write_text("\n".join(swapped) + "\n")
    with pytest.raises(LLRError) as e:
        ds.load_texts("multinli", tmp_path, meta)
    _one_line_error(e, "multinli", "differs from metadata_random.csv")


def test_prepare_writes_atomically(tmp_path):
    make_waterbirds(tmp_path / "data")
    out = tmp_path / "results" / "waterbirds" / "metadata.csv"
    df = ds.prepare("waterbirds", tmp_path / "data", out)
    pd.testing.assert_frame_equal(pd.read_csv(out), df, check_dtype=False)
    assert [p.name for p in out.parent.iterdir()] == ["metadata.csv"]
    # on error nothing is written (the old file is untouched, no temporaries)
    d = tmp_path / "data" / "waterbirds" / "waterbird_complete95_forest2water2"
    bad = pd.read_csv(d / "metadata.csv")
    bad.loc[0, "y"] = 9
    bad.to_csv(d / "metadata.csv", index=False)
    out2 = tmp_path / "results2" / "waterbirds" / "metadata.csv"
    with pytest.raises(LLRError):
        ds.prepare("waterbirds", tmp_path / "data", out2)
    assert not out2.exists() and (not out2.parent.exists() or list(out2.parent.iterdir()) == [])
    before = out.read_bytes()
    with pytest.raises(LLRError):
        ds.prepare("waterbirds", tmp_path / "data", out)
    assert out.read_bytes() == before and [p.name for p in out.parent.iterdir()] == ["metadata.csv"]


# ---------------------------------------------------------------- real metadata

REAL_COUNTS = {
    "waterbirds": {"train": [3498, 184, 56, 1057], "val": [467, 466, 133, 133], "test": [2255, 2255, 642, 642]},
    "celeba": {"train": [71629, 66874, 22880, 1387], "val": [8535, 8276, 2874, 182], "test": [9767, 7535, 2480, 180]},
}

# Group-ratio subsets (docs/design.md, "Group-ratio subsets") of the train split, worked out by hand:
# m = smallest group; each class keeps 2m; minority = round(2m r/(1+r)).
# Waterbirds m = 56 (minority groups 1 and 2); CelebA m = 1387, class 0 balanced.
RATIO_TARGETS = {
    "waterbirds": {
        0.05: [107, 5, 5, 107],
        0.1: [102, 10, 10, 102],
        0.2: [93, 19, 19, 93],
        0.5: [75, 37, 37, 75],
        1.0: [56, 56, 56, 56],
    },
    "celeba": {
        0.05: [1387, 1387, 2642, 132],
        0.1: [1387, 1387, 2522, 252],
        0.2: [1387, 1387, 2312, 462],
        0.5: [1387, 1387, 1849, 925],
        1.0: [1387, 1387, 1387, 1387],
    },
}

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} absent")


@pytest.fixture(scope="module")
def real_metas():
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} absent")
    return {name: ds.prepare_real(name, SHARED) for name in REAL_COUNTS}


@needs_shared
@pytest.mark.parametrize("name", sorted(REAL_COUNTS))
def test_real_counts(real_metas, name):
    df = real_metas[name]
    assert df["idx"].tolist() == list(range(len(df)))
    for split, counts in REAL_COUNTS[name].items():
        assert _counts(df, split, 4) == counts
    first = {
        "waterbirds": ("img_filename", "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg"),
        "celeba": ("image_id", "000001.jpg"),
    }[name]
    assert df[first[0]].iloc[0] == first[1]


@needs_shared
@pytest.mark.parametrize("name", sorted(REAL_COUNTS))
def test_real_group_ratio_subsets(real_metas, name):
    spec = get_spec(name)
    df = real_metas[name]
    train = np.flatnonzero(df["split"].to_numpy() == "train")
    groups = df["g"].to_numpy()[train]
    total = {"waterbirds": 224, "celeba": 4 * 1387}[name]
    for ratio, expected in RATIO_TARGETS[name].items():
        assert group_ratio_targets(np.bincount(groups, minlength=4), ratio, spec).tolist() == expected
        picks = []
        for seed in (1, 2, 3):
            pos = group_ratio_subset(groups, ratio, spec, rng_for(seed, "subset", name, "train", ratio))
            assert len(pos) == total == sum(expected)
            assert np.bincount(groups[pos], minlength=4).tolist() == expected
            assert len(np.unique(pos)) == len(pos) and (np.diff(pos) > 0).all()
            idx = df["idx"].to_numpy()[train[pos]]
            assert (df["split"].to_numpy()[idx] == "train").all()
            picks.append(set(idx.tolist()))
            again = group_ratio_subset(groups, ratio, spec, rng_for(seed, "subset", name, "train", ratio))
            assert np.array_equal(pos, again)  # reproducible
        assert picks[0] != picks[1] and picks[1] != picks[2] and picks[0] != picks[2]
