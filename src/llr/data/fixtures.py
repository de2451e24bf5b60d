"""Miniature copies of the four real datasets for a dress rehearsal of the
real-data pipeline (paper Appendix B.1, Table 2).

``write_fixtures(out_dir, seed)`` writes ``out_dir/<dataset>/`` in the exact
layouts the real readers accept (``llr.data.real.LAYOUTS``): the group_DRO
Waterbirds tarball layout, the official CelebA files (CRLF line ends, the
row-count line and the 40-attribute header of ``list_attr_celeba.txt``), the
WILDS CivilComments CSV and group_DRO's MultiNLI ``metadata_random.csv`` with
the GLUE MNLI tsv files. Group counts follow the paper's Table 2 scaled down
to a few hundred examples, with every group present in every split and the
order of the group sizes (the direction of the imbalance) kept per split.

Each example carries a learnable core feature (images: the bird's / hair's
colour and shape; text: a class word) and a spurious one (images: the
background; text: an identity word, or a negation word of group_DRO's list),
so that a model trained on a fixture learns something. Everything is
deterministic given the seed. ``out_dir/bert_vocab/`` holds a WordPiece
vocabulary covering every word of the text fixtures (and, optionally, a
randomly initialized tiny BERT so that the folder is a complete local model).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from llr.data.registry import SPLITS, get_spec
from llr.errors import LLRError

FIXTURE_DATASETS = ("waterbirds", "celeba", "civilcomments", "multinli")
DEFAULT_TOTAL = 480  # examples per dataset before the per-group minimum
MIN_PER_GROUP = 8
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MANIFEST = "fixtures.json"

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
CELEBA_SIZE = (178, 218)  # (width, height) of img_align_celeba

# CUB class folders (Waterbirds keeps CUB's folder names): y = 0 landbirds, y = 1 waterbirds.
CUB_CLASSES = (
    (
        "004.Groove_billed_Ani",
        "009.Brewer_Blackbird",
        "013.Bobolink",
        "029.American_Crow",
        "094.White_breasted_Nuthatch",
    ),
    (
        "001.Black_footed_Albatross",
        "002.Laysan_Albatross",
        "045.Northern_Fulmar",
        "059.California_Gull",
        "086.Pacific_Loon",
    ),
)
# Places categories used by Waterbirds: s = 0 land, s = 1 water.
PLACES = (("/b/bamboo_forest/", "/f/forest/broadleaf/"), ("/o/ocean/", "/l/lake/natural/"))
WATERBIRDS_SIZES = ((128, 96), (96, 128), (112, 112))  # (width, height) of the miniature images

# Text fixtures: every word below is in the fixture vocabulary.
CIVIL_CORE = (
    ("thanks", "agree", "interesting", "helpful", "wonderful"),  # y = 0 non-toxic
    ("idiot", "stupid", "pathetic", "disgusting", "moron"),
)  # y = 1 toxic
CIVIL_IDENTITY_WORDS = {
    "male": "men",
    "female": "women",
    "LGBTQ": "gay",
    "christian": "christian",
    "muslim": "muslim",
    "other_religions": "jewish",
    "black": "black",
    "white": "white",
}
CIVIL_FILLER = (
    "the",
    "article",
    "about",
    "people",
    "today",
    "city",
    "council",
    "says",
    "this",
    "is",
    "really",
    "and",
    "they",
    "were",
    "in",
    "town",
    "policy",
    "vote",
    "new",
    "plan",
)
MNLI_CORE = (
    ("wrong", "opposite", "false"),  # contradiction
    ("indeed", "certainly", "truly"),  # entailment
    ("perhaps", "maybe", "possibly"),
)  # neutral
# group_DRO marks sentence2_has_negation by these words (Gururangan et al., 2018).
MNLI_NEGATION = ("nobody", "no", "never", "nothing")
MNLI_SUBJECTS = ("the man", "a woman", "the children", "the dog", "a teacher", "the group", "my friend")
MNLI_VERBS = ("walked", "talked", "played", "worked", "waited", "sang", "cooked")
MNLI_PLACES = ("in the park", "at home", "near the river", "in the city", "at school", "by the lake")
MNLI_GENRES = (
    ("fiction", "government", "slate", "telephone", "travel"),
    ("letters", "oup", "nineeleven", "facetoface", "verbatim"),
)
EXTRA_WORDS = (
    "he",
    "said",
    "quoted",
    "she",
    "agreed",
    "someone",
    "did",
    "it",
    "was",
    "there",
    "went",
    "then",
    "there's",
    "that's",
)


# ---------------------------------------------------------------- counts


def fixture_counts(name: str, total: int = DEFAULT_TOTAL, min_count: int = MIN_PER_GROUP) -> dict[str, list[int]]:
    """Group counts per split (groups g = y * |S| + s) of a miniature dataset:
    the paper's Table 2 counts scaled by ``total / sum(Table 2)``, at least
    ``min_count`` per group, then raised where needed so that within each
    split a group larger than another in Table 2 stays strictly larger (ties
    stay ties): the direction of the imbalance is that of the real dataset."""
    from llr.reporting.table2 import PAPER_TABLE2

    if name not in PAPER_TABLE2:
        raise LLRError(f"fixtures: no Table 2 counts for {name!r}; expected one of {sorted(PAPER_TABLE2)}")
    paper = {sp: np.asarray(PAPER_TABLE2[name][sp], dtype=np.float64) for sp in SPLITS}
    scale = total / sum(v.sum() for v in paper.values())
    out = {}
    for sp in SPLITS:
        p = paper[sp]
        c = np.maximum(min_count, np.round(p * scale)).astype(np.int64)
        order = np.argsort(p, kind="stable")
        for a, b in zip(order[:-1], order[1:]):  # ascending in Table 2
            if p[b] > p[a] and c[b] <= c[a]:
                c[b] = c[a] + 1
            elif p[b] == p[a]:
                c[b] = c[a]
        out[sp] = c.tolist()
    return out


def _groups(
    counts: dict[str, list[int]], n_spurious: int, rng: np.random.Generator, shuffle: str = "all"
) -> pd.DataFrame:
    """One row per example: split, g, y, s; shuffled over all rows
    (``shuffle='all'``) or within each split, splits contiguous."""
    parts = [pd.DataFrame({"split": sp, "g": np.repeat(np.arange(len(c)), c)}) for sp, c in counts.items()]
    if shuffle == "split":
        parts = [p.iloc[rng.permutation(len(p))] for p in parts]
    df = pd.concat(parts, ignore_index=True)
    if shuffle == "all":
        df = df.iloc[rng.permutation(len(df))].reset_index(drop=True)
    else:
        df = df.reset_index(drop=True)
    df["y"], df["s"] = df["g"] // n_spurious, df["g"] % n_spurious
    return df


def _count_table(df: pd.DataFrame, n_groups: int) -> dict[str, list[int]]:
    return {sp: np.bincount(df.loc[df["split"] == sp, "g"], minlength=n_groups).tolist() for sp in SPLITS}


# ---------------------------------------------------------------- images


def _save_jpegs(arrays: np.ndarray, paths: list[Path]) -> None:
    from PIL import Image

    for arr, p in zip(arrays, paths):
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(p, format="JPEG", quality=90)


def _ellipse(h: int, w: int, cy: np.ndarray, cx: np.ndarray, ry: np.ndarray, rx: np.ndarray) -> np.ndarray:
    """Boolean masks (B, h, w) of axis-aligned ellipses, one per image."""
    yy = np.arange(h, dtype=np.float32)[None, :, None]
    xx = np.arange(w, dtype=np.float32)[None, None, :]
    return (
        ((yy - cy[:, None, None]) / ry[:, None, None]) ** 2 + ((xx - cx[:, None, None]) / rx[:, None, None]) ** 2
    ) <= 1.0


def _finish(img: np.ndarray, rng: np.random.Generator, noise: int = 16) -> np.ndarray:
    """Add uniform pixel noise in [-noise, noise] and clip to uint8."""
    img = img.astype(np.int16) + rng.integers(-noise, noise + 1, size=img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def bird_images(y: np.ndarray, s: np.ndarray, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """Waterbirds-like images (B, h, w, 3): a bird-shaped ellipse whose colour
    and aspect give the class (landbird: brown, upright; waterbird: white,
    wide) on a background that gives the place (land: green with vertical
    tree stripes; water: blue with horizontal waves)."""
    B = len(y)
    yy = np.arange(h, dtype=np.float32)[None, :, None]
    xx = np.arange(w, dtype=np.float32)[None, None, :]
    phase = rng.uniform(0, 2 * np.pi, size=(B, 1, 1)).astype(np.float32)
    trees = 0.5 + 0.5 * np.sin(xx * 0.45 + phase)  # (B, 1, w)
    waves = 0.5 + 0.5 * np.sin(yy * 0.6 + phase)  # (B, h, 1)
    land = np.array([55, 105, 45], np.float32) + trees[..., None] * np.array([25, 50, 15], np.float32)
    water = np.array([40, 85, 160], np.float32) + waves[..., None] * np.array([20, 30, 60], np.float32)
    land = np.broadcast_to(land, (B, h, w, 3))
    water = np.broadcast_to(water, (B, h, w, 3))
    img = np.where(s.astype(bool)[:, None, None, None], water, land).astype(np.int16)
    cy = h * rng.uniform(0.4, 0.6, B)
    cx = w * rng.uniform(0.4, 0.6, B)
    ry = np.where(y == 1, 0.16, 0.26) * h
    rx = np.where(y == 1, 0.30, 0.16) * w
    mask = _ellipse(h, w, cy, cx, ry, rx)[..., None]
    colour = np.where((y == 1)[:, None], [[232, 232, 236]], [[150, 88, 38]]).astype(np.float32)
    colour = (colour + rng.normal(0, 8, size=(B, 3))).astype(np.int16)
    img = np.where(mask, colour[:, None, None, :], img)
    return _finish(img, rng)


def face_images(
    y: np.ndarray, s: np.ndarray, rng: np.random.Generator, size: tuple[int, int] = CELEBA_SIZE
) -> np.ndarray:
    """CelebA-like aligned faces (B, 218, 178, 3): the hair colour gives the
    class (blond: yellow; other: dark brown), the background tint the
    spurious attribute (female: warm; male: cool) and male faces a darker
    jaw band."""
    w, h = size
    B = len(y)
    bg = np.where((s == 1)[:, None], [[115, 135, 165]], [[205, 165, 170]]).astype(np.float32)
    bg = (bg + rng.normal(0, 10, size=(B, 3))).astype(np.int16)
    img = np.broadcast_to(bg[:, None, None, :], (B, h, w, 3))
    cx = w / 2 + rng.normal(0, 3, B)
    hair = _ellipse(h, w, 0.42 * h + rng.normal(0, 3, B), cx, np.full(B, 0.36 * h), np.full(B, 0.36 * w))
    hair_col = np.where((y == 1)[:, None], [[235, 205, 110]], [[62, 42, 30]]).astype(np.float32)
    hair_col = (hair_col + rng.normal(0, 8, size=(B, 3))).astype(np.int16)
    img = np.where(hair[..., None], hair_col[:, None, None, :], img)
    face = _ellipse(h, w, np.full(B, 0.52 * h), cx, np.full(B, 0.27 * h), np.full(B, 0.25 * w))
    img = np.where(face[..., None], np.array([222, 182, 150], np.int16), img)
    jaw = face & (np.arange(h)[None, :, None] > 0.66 * h) & (s == 1)[:, None, None]
    img = np.where(jaw[..., None], np.array([150, 120, 100], np.int16), img)
    return _finish(img, rng)


# ---------------------------------------------------------------- writers


def _species_file(folder: str, k: np.ndarray, ids: np.ndarray) -> list[str]:
    """CUB file names: ``001.Black_footed_Albatross`` ->
    ``Black_Footed_Albatross_0001_796111.jpg``."""
    species = "_".join(p[:1].upper() + p[1:] for p in folder.split(".", 1)[1].split("_"))
    return [f"{folder}/{species}_{a:04d}_{b}.jpg" for a, b in zip(k, ids)]


def write_waterbirds(d: Path, counts: dict[str, list[int]], rng: np.random.Generator) -> pd.DataFrame:
    """``d/waterbird_complete95_forest2water2/metadata.csv`` (img_id,
    img_filename, y, split 0/1/2, place, place_filename; rows in CUB class
    order) and the JPEGs in CUB class folders."""
    root = d / "waterbird_complete95_forest2water2"
    df = _groups(counts, 2, rng)
    n = len(df)
    df["folder"] = [CUB_CLASSES[yy][k] for yy, k in zip(df["y"], rng.integers(0, 5, n))]
    df = df.sort_values("folder", kind="stable").reset_index(drop=True)
    df["k"] = df.groupby("folder").cumcount() + 1
    ids = rng.choice(np.arange(10_000, 800_000), size=n, replace=False)
    fnames = np.empty(n, dtype=object)
    for folder, rows in df.groupby("folder").groups.items():
        fnames[rows] = _species_file(folder, df.loc[rows, "k"].to_numpy(), ids[rows])
    place_cat = [PLACES[ss][k] for ss, k in zip(df["s"], rng.integers(0, 2, n))]
    meta = pd.DataFrame(
        {
            "img_id": np.arange(1, n + 1),
            "img_filename": fnames,
            "y": df["y"],
            "split": df["split"].map({sp: i for i, sp in enumerate(SPLITS)}),
            "place": df["s"],
            "place_filename": [f"{c}{i:08d}.jpg" for c, i in zip(place_cat, rng.integers(1, 5000, n))],
        }
    )
    size_of = rng.integers(0, len(WATERBIRDS_SIZES), n)
    for j, (w, h) in enumerate(WATERBIRDS_SIZES):
        rows = np.flatnonzero(size_of == j)
        imgs = bird_images(df["y"].to_numpy()[rows], df["s"].to_numpy()[rows], w, h, rng)
        _save_jpegs(imgs, [root / f for f in fnames[rows]])
    root.mkdir(parents=True, exist_ok=True)
    meta.to_csv(root / "metadata.csv", index=False)
    return df


def write_celeba(d: Path, counts: dict[str, list[int]], rng: np.random.Generator) -> pd.DataFrame:
    """The official CelebA files: ``img_align_celeba/000001.jpg`` ... (178 x
    218), ``list_attr_celeba.txt`` (row count, the 40 attribute names, then
    'file -1/1 x 40') and ``list_eval_partition.txt``, CRLF line ends, the
    splits contiguous (train, val, test) as in the real partition."""
    d.mkdir(parents=True, exist_ok=True)
    df = _groups(counts, 2, rng, shuffle="split")
    n = len(df)
    ids = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    prevalence = rng.uniform(0.05, 0.5, len(CELEBA_ATTRIBUTES))
    attrs = np.where(rng.random((n, len(CELEBA_ATTRIBUTES))) < prevalence, 1, -1)
    attrs[:, CELEBA_ATTRIBUTES.index("Blond_Hair")] = 2 * df["y"].to_numpy() - 1
    attrs[:, CELEBA_ATTRIBUTES.index("Male")] = 2 * df["s"].to_numpy() - 1
    lines = [str(n), " ".join(CELEBA_ATTRIBUTES) + " "]
    lines += [f + "".join(f"{v:3d}" for v in row) for f, row in zip(ids, attrs.tolist())]
    (d / "list_attr_celeba.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    codes = df["split"].map({sp: i for i, sp in enumerate(SPLITS)}).to_numpy()
    (d / "list_eval_partition.txt").write_bytes("".join(f"{f} {c}\r\n" for f, c in zip(ids, codes)).encode())
    img_dir = d / "img_align_celeba"
    y, s = df["y"].to_numpy(), df["s"].to_numpy()
    for start in range(0, n, 128):  # batches bound the memory
        sl = slice(start, start + 128)
        _save_jpegs(face_images(y[sl], s[sl], rng), [img_dir / f for f in ids[sl]])
    return df


def _pick(words, rng: np.random.Generator, n: int) -> np.ndarray:
    return np.asarray(words, dtype=object)[rng.integers(0, len(words), n)]


def write_civilcomments(d: Path, counts: dict[str, list[int]], rng: np.random.Generator) -> pd.DataFrame:
    """``d/civilcomments_v1.0/all_data_with_identities.csv`` as WILDS ships it
    (an unnamed index column, id, comment_text, split train/val/test,
    fractional toxicity and identity scores, NaN where not annotated). The
    class word is in the comment 85% of the time; an identity word names the
    identity column scored >= 0.5 (s = 1)."""
    root = d / "civilcomments_v1.0"
    root.mkdir(parents=True, exist_ok=True)
    df = _groups(counts, 2, rng)
    n = len(df)
    y, s = df["y"].to_numpy(), df["s"].to_numpy()
    core = np.where(
        rng.random(n) < 0.85,
        np.where(y == 1, _pick(CIVIL_CORE[1], rng, n), _pick(CIVIL_CORE[0], rng, n)),
        _pick(CIVIL_FILLER, rng, n),
    )
    ident_cols = list(CIVIL_IDENTITY_WORDS)
    which = rng.integers(0, len(ident_cols), n)
    f = [_pick(CIVIL_FILLER, rng, n) for _ in range(4)]
    texts = []
    for i in range(n):
        words = [f[0][i], f[1][i], core[i], f[2][i], f[3][i]]
        if s[i]:
            words.insert(int(rng.integers(0, 5)), CIVIL_IDENTITY_WORDS[ident_cols[which[i]]])
        text = " ".join(words).capitalize() + rng.choice([".", "!", "?"])
        if rng.random() < 0.1:  # quotes, commas and line breaks, as in real comments
            text += '\n"Quoted," he said.'
        texts.append(text)
    tox = np.where(y == 1, _pick((0.5, 0.6, 0.7, 0.8, 1.0), rng, n), _pick((0.0, 0.1, 0.2, 0.4), rng, n))
    # Identity scores: the named identity >= 0.5 when s = 1; other columns below
    # 0.5 or NaN (comments without identity annotation).
    ident = np.where(
        rng.random((n, len(ident_cols))) < 0.5,
        0.0,
        _pick((0.0, 0.1, 0.2, 0.3), rng, n * len(ident_cols)).reshape(n, -1).astype(float),
    )
    ident[np.flatnonzero(s == 1), which[s == 1]] = _pick((0.5, 0.6, 0.8, 1.0), rng, int(s.sum())).astype(float)
    unannotated = (s == 0) & (rng.random(n) < 0.3)
    ident[unannotated] = np.nan
    out = pd.DataFrame(
        {
            "id": rng.choice(np.arange(239_000, 7_000_000), size=n, replace=False),
            "comment_text": texts,
            "split": df["split"].to_numpy(),
            "created_date": "2016-05-05 01:20:51.216237+00",
            "toxicity": tox.astype(float),
            "severe_toxicity": 0.0,
            "obscene": 0.0,
            "identity_attack": 0.0,
            "insult": np.round(tox.astype(float) * 0.8, 6),
            "threat": 0.0,
        }
    )
    for j, c in enumerate(ident_cols):
        out[c] = ident[:, j]
    out["identity_any"] = (np.nan_to_num(ident) >= 0.5).any(axis=1).astype(int)
    out.to_csv(root / "all_data_with_identities.csv", index=True)
    return df


def _binary_parse(sentence: str) -> str:
    return "( " + " ".join(re.findall(r"\w+|[^\w\s]", sentence)) + " )"


def write_multinli(d: Path, counts: dict[str, list[int]], rng: np.random.Generator) -> pd.DataFrame:
    """group_DRO's ``d/metadata_random.csv`` (unnamed index, gold_label
    0/1/2 = contradiction/entailment/neutral, sentence2_has_negation 0/1,
    split 0/1/2 drawn independently of the source file) and the GLUE MNLI
    ``train.tsv``, ``dev_matched.tsv``, ``dev_mismatched.tsv`` whose rows, in
    that order, are the rows of the metadata. The hypothesis carries a class
    word 85% of the time and a negation word of group_DRO's list exactly when
    s = 1."""
    d.mkdir(parents=True, exist_ok=True)
    df = _groups(counts, 2, rng)
    n = len(df)
    y, s = df["y"].to_numpy(), df["s"].to_numpy()
    subj, verb, place = _pick(MNLI_SUBJECTS, rng, n), _pick(MNLI_VERBS, rng, n), _pick(MNLI_PLACES, rng, n)
    core = np.empty(n, dtype=object)
    for c in range(3):
        core[y == c] = _pick(MNLI_CORE[c], rng, int((y == c).sum()))
    core = np.where(rng.random(n) < 0.85, core, "then")
    neg = _pick(MNLI_NEGATION, rng, n)
    premise, hyp = [], []
    for i in range(n):
        quote = rng.random() < 0.1
        p = f"{subj[i].capitalize()} {verb[i]} {place[i]}."
        premise.append(f'"{p}" he said.' if quote else p)
        if s[i]:
            h = {
                "no": f"There was no one {place[i]}, {core[i]}.",
                "never": f"{subj[i].capitalize()} never {verb[i]} {core[i]}.",
                "nothing": f"{subj[i].capitalize()} did nothing {place[i]}, {core[i]}.",
                "nobody": f"Nobody {verb[i]} {place[i]}, {core[i]}.",
            }[neg[i]]
        else:
            h = f"{subj[i].capitalize()} {core[i]} {verb[i]} {place[i]}."
        hyp.append(h)
    labels = np.array(["contradiction", "entailment", "neutral"], dtype=object)[y]
    n_train, n_m = int(round(0.8 * n)), int(round(0.1 * n))
    bounds = {
        "train.tsv": (0, n_train),
        "dev_matched.tsv": (n_train, n_train + n_m),
        "dev_mismatched.tsv": (n_train + n_m, n),
    }
    for fname, (a, b) in bounds.items():
        genres = MNLI_GENRES[fname == "dev_mismatched.tsv"]
        prompt = rng.integers(1000, 150_000, b - a)
        cols = {
            "index": np.arange(b - a),
            "promptID": prompt,
            "pairID": [f"{p}{lab[0]}" for p, lab in zip(prompt, labels[a:b])],
            "genre": _pick(genres, rng, b - a),
            "sentence1_binary_parse": [_binary_parse(t) for t in premise[a:b]],
            "sentence2_binary_parse": [_binary_parse(t) for t in hyp[a:b]],
            "sentence1_parse": ["(ROOT " + _binary_parse(t) + ")" for t in premise[a:b]],
            "sentence2_parse": ["(ROOT " + _binary_parse(t) + ")" for t in hyp[a:b]],
            "sentence1": premise[a:b],
            "sentence2": hyp[a:b],
        }
        n_labels = 1 if fname == "train.tsv" else 5
        for k in range(1, n_labels + 1):
            cols[f"label{k}"] = labels[a:b]
        cols["gold_label"] = labels[a:b]
        table = pd.DataFrame(cols)
        lines = ["\t".join(table.columns)] + ["\t".join(map(str, r)) for r in table.itertuples(index=False)]
        (d / fname).write_text("\n".join(lines) + "\n", encoding="utf-8")
    # group_DRO drops the dev pairs without a gold label ('-') and keeps the
    # pandas index, so the unnamed first column has gaps in the dev rows;
    # rows, not that index, align with the tsv files.
    gaps = np.concatenate([np.zeros(n_train, np.int64), rng.random(n - n_train) < 0.05])
    meta = pd.DataFrame(
        {
            "gold_label": y,
            "sentence2_has_negation": has_negation(hyp),
            "split": df["split"].map({sp: i for i, sp in enumerate(SPLITS)}).to_numpy(),
        },
        index=np.arange(n) + np.cumsum(gaps),
    )
    meta.to_csv(d / "metadata_random.csv", index=True)
    return df


def has_negation(sentences) -> np.ndarray:
    """group_DRO's rule for MultiNLI's spurious attribute: the hypothesis,
    lower-cased and stripped of punctuation, contains nobody/no/never/nothing."""
    neg = set(MNLI_NEGATION)
    strip = str.maketrans("", "", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    return np.array([int(bool(neg & set(t.translate(strip).lower().split()))) for t in sentences], dtype=np.int64)


# ---------------------------------------------------------------- vocabulary


def fixture_words() -> list[str]:
    """Every word (lower-cased) and punctuation mark the text fixtures use."""
    words: set[str] = set()
    pools = (
        *CIVIL_CORE,
        CIVIL_IDENTITY_WORDS.values(),
        CIVIL_FILLER,
        *MNLI_CORE,
        MNLI_NEGATION,
        MNLI_SUBJECTS,
        MNLI_VERBS,
        MNLI_PLACES,
        EXTRA_WORDS,
        ("there", "was", "one", "did", "then"),
    )
    for pool in pools:
        for phrase in pool:
            words.update(re.findall(r"\w+", phrase.lower()))
    return sorted(words) + list("!\"',.?-")


def write_vocab(out_dir: str | os.PathLike, tiny_bert: bool = False) -> Path:
    """``out_dir/vocab.txt`` (WordPiece: the special tokens, then every
    fixture word), with ``tokenizer_config.json`` and
    ``special_tokens_map.json`` so that ``AutoTokenizer.from_pretrained``
    loads the folder offline. ``tiny_bert`` adds ``config.json`` and
    randomly initialized weights of a 2-layer BERT (hidden 32): a complete
    local model folder for a rehearsal, not a pretrained model."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    vocab = list(SPECIAL_TOKENS) + fixture_words()
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (d / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "BertTokenizer",
                "do_lower_case": True,
                "model_max_length": 512,
                "unk_token": "[UNK]",
                "sep_token": "[SEP]",
                "pad_token": "[PAD]",
                "cls_token": "[CLS]",
                "mask_token": "[MASK]",
            },
            indent=1,
        )
    )
    (d / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "unk_token": "[UNK]",
                "sep_token": "[SEP]",
                "pad_token": "[PAD]",
                "cls_token": "[CLS]",
                "mask_token": "[MASK]",
            },
            indent=1,
        )
    )
    if tiny_bert:
        import torch
        from transformers import BertConfig, BertModel

        torch.manual_seed(0)
        cfg = BertConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=256,
        )
        BertModel(cfg).save_pretrained(d)
    return d


# ---------------------------------------------------------------- all

WRITERS = {
    "waterbirds": write_waterbirds,
    "celeba": write_celeba,
    "civilcomments": write_civilcomments,
    "multinli": write_multinli,
}


def write_fixtures(
    out_dir: str | os.PathLike,
    seed: int = 0,
    datasets=FIXTURE_DATASETS,
    total: int = DEFAULT_TOTAL,
    tiny_bert: bool = False,
) -> dict[str, dict[str, list[int]]]:
    """Write the miniature datasets to ``out_dir/<dataset>/`` and the
    vocabulary to ``out_dir/bert_vocab/``; return the group counts written,
    ``{dataset: {split: [count of g = 0, 1, ...]}}``, also saved in
    ``out_dir/fixtures.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, dict[str, list[int]]] = {}
    for name in datasets:
        if name not in WRITERS:
            raise LLRError(f"fixtures: no fixture for {name!r}; expected names from {list(WRITERS)}")
        rng = np.random.default_rng([int(seed), FIXTURE_DATASETS.index(name)])
        df = WRITERS[name](out / name, fixture_counts(name, total), rng)
        written[name] = _count_table(df, get_spec(name).n_groups)
    write_vocab(out / "bert_vocab", tiny_bert=tiny_bert)
    (out / MANIFEST).write_text(
        json.dumps({"seed": int(seed), "total": int(total), "counts": written}, indent=1) + "\n"
    )
    return written
