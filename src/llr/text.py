"""Text: the synthetic MultiNLI stand-in, tokenizers, token caches and BERT.

The synthetic language (dataset ``synth_multinli``, DESIGN section 5)
---------------------------------------------------------------------
Every example is one lowercase sentence of 12 to 20 words separated by single
spaces, with no punctuation, so that the word-level tokenizer below maps each
word to exactly one token and decoding gives the sentence back verbatim.

* Filler: words drawn uniformly from ``FILLER_WORDS`` (about 150 everyday
  nouns, adjectives, verbs and function words). They carry no label.
* Core phrase: two adjacent words ``KEY LINK`` at a random position. ``KEY``
  is one of four verbs owned by a class (``CORE_KEYS``: contradiction
  "disagrees refutes opposes disputes", entailment "agrees confirms supports
  proves", neutral "ponders recalls imagines notices"); ``LINK`` is one of
  ``LINKS`` ("with upon over"), shared by all classes.
* Spurious token (s): when s = 1 the sentence holds exactly one negation word
  (``NEGATIONS``: "not no never nothing nobody", as in MultiNLI's negation
  heuristic); when s = 0 none (they are not filler words).
* Negation scope, what makes the core harder to learn than the spurious
  token: with probability ``SCOPE_RATE`` (0.3) a negation sentence's
  negation is "not" right before the key, and a scoped "not" reverses it:
  ``not agrees`` states a contradiction, ``not disputes`` an entailment
  (``not ponders`` stays neutral). Otherwise the negation is one of "no
  never nothing nobody" at a random position other than right before the
  key, and leaves the key's class alone. So y = ``core_class(text)``: the
  key's class, swapped between contradiction and entailment under a scoped
  "not". As in MultiNLI (contradictions written by negating the premise,
  entailments that contain a negation), negation goes with contradiction,
  and most negated entailments (group 3) read like contradictions word by
  word ("not" + a contradiction key): telling them apart takes the
  interaction of "not" with the key, which an ERM model learns from a
  group-balanced train set (about 200 such sentences per group) but not
  from the natural one (about 6 in group 3, against about 70 "not"
  sentences of group 1 that are contradictions), where "not" comes to mean
  contradiction. The negation token itself is a single, easy word.
* Difficulty knob ``core_noise`` (default ``DEFAULT_CORE_NOISE`` = 0.05):
  with that probability, independently per example and whatever the group,
  the key is replaced by an *ambiguous* verb (``AMBIGUOUS_KEYS``: "considers
  discusses reviews describes") that every class uses alike; the label is
  kept. ERM falls back on its prior for those, which with a negation means
  contradiction. A group-robust classifier reaches about
  ``1 - core_noise * 2/3`` on every group.
* Calibration (``benchmarks/calibrate_synthetic.py``, the pretraining below,
  then ERM for 2 epochs, lr 1e-3, on the default sizes; numbers per seed in
  the README, "The embedded default"): natural composition mean accuracy
  about 0.95 with WGA near 0.6 (group 3); a group-balanced train set of the
  same size gives WGA above 0.9. (A first calibration, at twice these sizes
  and 4 epochs, gave natural 0.956-0.963 / WGA 0.63-0.72 and balanced WGA
  0.936-0.960 on seeds 1 to 6; the set was halved for time.)
* Groups g = 2y + s. The default composition ``DEFAULT_SIZES`` follows the
  shape of MultiNLI's Table 2 (negation goes with contradiction: group 1 is
  about a fifth of group 0, groups 3 and 5 are rare, 1.4% and 1.8% of their
  class in train) scaled down for CPU training (4255 train sentences, the
  smallest train group 20). Val and test keep MultiNLI's ordering of group
  sizes but not its exact shares: their majority groups are halved with
  train, while the smallest val group keeps 60 sentences (group-ratio
  subsets of the held-out half of val need them) and the test minority
  groups 100 or more (WGA measured to a few points).
* Randomness: every (seed, split, group) cell has its own generator, and each
  sentence takes a fixed number of uniform draws from it (generation is
  vectorized over a cell), so changing one group's count leaves every other
  group's sentences unchanged and extends or truncates its own; the rows of a
  split are then shuffled by a generator of (seed, split).
* ``pretrain_text`` (the auxiliary corpus of the pretrain step, standing in
  for BERT pretraining) draws from separate streams of the language without
  scoped negation (``PRETRAIN_SCOPE_RATE`` = 0; any negation word, "not"
  included, placed freely): the balanced 6-group task teaches the key classes
  (core) and the negation token (spurious), while how a scoped "not"
  composes with a key is left to finetuning, as NLI reasoning is for BERT.

Tokenizer: ``synthetic_vocab()`` is the five BERT special tokens plus every
word of the language; ``build_synthetic_tokenizer(folder)`` writes
``vocab.txt`` and ``tokenizer_config.json`` there and loads a transformers
BERT (WordPiece) tokenizer from them, so the synthetic runs use the same code
path as real BERT.

Token caches: ``tokenize_cache`` writes an ``.npz`` per dataset x tokenizer,
rows in metadata ``idx`` order, right-padded to the longest sequence (capped
at ``max_length``). Padding further is pointless: BERT masks padded positions,
and ``TextInputs.batch`` trims each batch to its own longest row anyway.

Model: ``build_bert`` wraps transformers' ``BertModel``; the embedding is the
pooled [CLS] output (``pooler_output``, what ``BertForSequenceClassification``
feeds its classifier), and as there, dropout sits between it and the head
(identity in eval mode, so cached features equal ``embed``).

Workflow glue: ``prepare_synthetic_text`` (the prepare step: metadata with a
``text`` column plus its token cache) and ``pretrain_inputs`` (the balanced
6-group auxiliary task of the pretrain step, labels g).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from llr.errors import LLRError
from llr.io import atomic_path
from llr.models import Classifier

# ---------------------------------------------------------------------------
# The synthetic language
# ---------------------------------------------------------------------------

CLASS_NAMES = ("contradiction", "entailment", "neutral")
N_CLASSES = 3
N_SPURIOUS = 2
N_GROUPS = N_CLASSES * N_SPURIOUS

FILLER_WORDS: tuple[str, ...] = tuple("""
the a an this these those some many every each two three four his her their our
its my your in at by from near under behind after before during and then while
since around across into onto inside outside beside between
man woman child boy girl dog cat bird horse fish house car tree river city road
garden window table chair book letter song movie game team school market office
kitchen doctor teacher farmer artist driver student friend neighbor family
village forest mountain beach island bridge station train boat plane lake field
hill street park shop church hotel museum library door wall floor roof lamp
clock picture bottle basket bag coat hat shoe ball cake bread apple coffee tea
old young big small red blue green quiet loud happy busy early late bright dark
warm cold tall short new long wide heavy light soft
walks runs sits reads writes sings plays cooks drives opens closes watches
carries builds paints finds keeps leaves meets moves pulls pushes sells
today yesterday morning evening again later soon often here there
""".split())

# class -> key verbs of its core phrase (contradiction, entailment, neutral)
CORE_KEYS: tuple[tuple[str, ...], ...] = (
    ("disagrees", "refutes", "opposes", "disputes"),
    ("agrees", "confirms", "supports", "proves"),
    ("ponders", "recalls", "imagines", "notices"),
)
AMBIGUOUS_KEYS: tuple[str, ...] = ("considers", "discusses", "reviews", "describes")
LINKS: tuple[str, ...] = ("with", "upon", "over")
NEGATIONS: tuple[str, ...] = ("not", "no", "never", "nothing", "nobody")
SCOPED_NEGATION = "not"  # the one negation word that takes scope over the key
FREE_NEGATIONS: tuple[str, ...] = tuple(w for w in NEGATIONS if w != SCOPED_NEGATION)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MIN_WORDS, MAX_WORDS = 12, 20
# Difficulty knobs, calibrated with benchmarks/calibrate_synthetic.py (see the
# module docstring).
DEFAULT_CORE_NOISE = 0.05  # share of ambiguous keys (label kept), any group
SCOPE_RATE = 0.3  # share of negation sentences whose negation is "not KEY"
PRETRAIN_SCOPE_RATE = 0.0  # the auxiliary corpus has no scoped negation
PRETRAIN_NEGATIONS = NEGATIONS  # ... where every negation word, "not" too, is free

# Per split, counts of groups 0..5 = (contradiction, entailment, neutral) x
# (no-negation, negation); MultiNLI's Table 2 shape, scaled down.
DEFAULT_SIZES: dict[str, tuple[int, ...]] = {
    "train": (1200, 230, 1400, 20, 1380, 25),
    "val": (400, 80, 470, 60, 465, 70),
    "test": (500, 120, 600, 100, 600, 110),
}
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
_PRETRAIN_CODE = 3

_KEY_CLASS = {k: c for c, keys in enumerate(CORE_KEYS) for k in keys}
_KEY_CLASS.update({k: -1 for k in AMBIGUOUS_KEYS})
_FLIP = (1, 0, 2)  # "not KEY": contradiction <-> entailment, neutral stays


def _check_words() -> None:
    groups = [FILLER_WORDS, tuple(_KEY_CLASS), LINKS, NEGATIONS]
    allw = [w for g in groups for w in g]
    assert len(allw) == len(set(allw)), "synthetic language: word sets overlap"
    assert len({len(k) for k in CORE_KEYS}) == 1


_check_words()


def synthetic_vocab() -> list[str]:
    """The tokenizer vocabulary: special tokens, then every word (sorted)."""
    words = sorted(set(FILLER_WORDS) | set(_KEY_CLASS) | set(LINKS) | set(NEGATIONS))
    return list(SPECIAL_TOKENS) + words


def core_class(text: str) -> int:
    """The class a sentence's core phrase states: the key's class, with
    contradiction and entailment swapped when the scoped negation "not"
    stands right before the key (``not agrees`` is a contradiction); -1 if the key is
    ambiguous (noise)."""
    ws = text.split()
    for i, w in enumerate(ws):
        if w in _KEY_CLASS:
            c = _KEY_CLASS[w]
            if c >= 0 and i > 0 and ws[i - 1] == SCOPED_NEGATION:
                c = _FLIP[c]
            return c
    raise LLRError(f"synthetic text without a core phrase: {text!r}")


def has_negation(text: str) -> bool:
    return any(w in NEGATIONS for w in text.split())


# Columns of the uniform draws of one sentence: a fixed number per row, so
# that the first k sentences of a cell do not depend on how many it has.
_U_LEN, _U_KEY, _U_LINK, _U_NOISE, _U_AMB, _U_NEG, _U_SCOPE, _U_POS, _U_NEGPOS = range(9)
_U_FILL = 9
_U_WIDTH = _U_FILL + MAX_WORDS


def _pick(u: np.ndarray, k) -> np.ndarray:
    """Uniform draws in [0, 1) -> integers in [0, k) (k may be an array)."""
    return np.minimum((u * k).astype(np.int64), np.asarray(k) - 1)


def _group_sentences(seed: int, code: int, g: int, n: int, core_noise: float, scope_rate: float,
                     free_negations: Sequence[str] = FREE_NEGATIONS) -> list[str]:
    """``n`` sentences of group g = 2y + s, from the generator of (seed,
    code, g), vectorized over the rows of one (n, _U_WIDTH) uniform draw."""
    if n == 0:
        return []
    u = np.random.default_rng([int(seed), code, g]).random((n, _U_WIDTH))
    y, s = divmod(g, N_SPURIOUS)
    length = MIN_WORDS + _pick(u[:, _U_LEN], MAX_WORDS - MIN_WORDS + 1)
    scoped = (u[:, _U_SCOPE] < scope_rate) & bool(s)
    # a scoped negation reverses the key, so "not" + a key of the swapped class
    keys = np.array(CORE_KEYS, dtype=object)
    key_class = np.where(scoped, _FLIP[y], y)
    key = keys[key_class, _pick(u[:, _U_KEY], keys.shape[1])]
    ambiguous = np.array(AMBIGUOUS_KEYS, dtype=object)[_pick(u[:, _U_AMB], len(AMBIGUOUS_KEYS))]
    key = np.where(u[:, _U_NOISE] < core_noise, ambiguous, key)
    words = np.array(FILLER_WORDS, dtype=object)[_pick(u[:, _U_FILL:], len(FILLER_WORDS))]
    rows = np.arange(n)
    # core phrase "key link" at kpos, kpos + 1; a scoped negation at kpos - 1,
    # a free one anywhere else except right before the key
    kpos = scoped + _pick(u[:, _U_POS], length - 1 - scoped)
    if s:
        lo = np.maximum(kpos - 1, 0)
        free = _pick(u[:, _U_NEGPOS], length - 2 - (kpos > 0))
        npos = np.where(scoped, kpos - 1, np.where(free < lo, free, free + kpos + 2 - lo))
        free_word = np.array(free_negations, dtype=object)[_pick(u[:, _U_NEG], len(free_negations))]
        words[rows, npos] = np.where(scoped, SCOPED_NEGATION, free_word)
    words[rows, kpos] = key
    words[rows, kpos + 1] = np.array(LINKS, dtype=object)[_pick(u[:, _U_LINK], len(LINKS))]
    return [" ".join(r[:k]) for r, k in zip(words.tolist(), length.tolist())]


def _check_noise(core_noise: float) -> float:
    core_noise = float(core_noise)
    if not 0.0 <= core_noise <= 1.0:
        raise LLRError(f"synthetic text: core_noise={core_noise} out of range, expected a number in [0, 1]")
    return core_noise


def resolve_sizes(sizes: dict | None) -> dict[str, tuple[int, ...]]:
    """Per-split group counts: ``DEFAULT_SIZES`` updated by ``sizes``. Each
    given split needs 6 non-negative integers (groups 0..5)."""
    out = dict(DEFAULT_SIZES)
    for split, counts in (sizes or {}).items():
        if split not in _SPLIT_CODE:
            raise LLRError(f"synthetic text: sizes key {split!r} not in {list(_SPLIT_CODE)}")
        counts = list(counts)
        if len(counts) != N_GROUPS or any(int(c) != c or c < 0 for c in counts):
            raise LLRError(f"synthetic text: sizes[{split!r}]={counts} invalid, expected {N_GROUPS} non-negative integers (groups 0..5)")
        out[split] = tuple(int(c) for c in counts)
    return out


def generate_synthetic_text(seed: int, sizes: dict | None = None, *,
                            core_noise: float = DEFAULT_CORE_NOISE) -> pd.DataFrame:
    """The synthetic MultiNLI stand-in: columns ``split,y,s,text``, splits in
    the order train, val, test, each shuffled; ``sizes[split][g]`` rows of
    group g = 2y + s (missing splits take ``DEFAULT_SIZES``)."""
    sizes = resolve_sizes(sizes)
    core_noise = _check_noise(core_noise)
    frames = []
    for split, code in _SPLIT_CODE.items():
        texts, ys, ss = [], [], []
        for g, n in enumerate(sizes[split]):
            texts += _group_sentences(seed, code, g, n, core_noise, SCOPE_RATE)
            y, s = divmod(g, N_SPURIOUS)
            ys += [y] * n
            ss += [s] * n
        order = np.random.default_rng([int(seed), code, 99]).permutation(len(texts))
        frames.append(pd.DataFrame({
            "split": split,
            "y": np.asarray(ys, dtype=np.int64)[order],
            "s": np.asarray(ss, dtype=np.int64)[order],
            "text": np.asarray(texts, dtype=object)[order],
        }))
    return pd.concat(frames, ignore_index=True)


def pretrain_text(seed: int, n: int, *, core_noise: float = DEFAULT_CORE_NOISE) -> pd.DataFrame:
    """A group-balanced auxiliary set of the language (columns
    ``y,s,g,text``, shuffled): ``n`` rows, ``n // 6`` per group and the
    remainder spread over the first groups. Drawn from streams disjoint from
    ``generate_synthetic_text``'s, standing in for BERT pretraining data: the
    words, keys and negations of the benchmark (any of ``NEGATIONS``, placed
    freely), but no negation in scope of a key (``PRETRAIN_SCOPE_RATE``), so
    pretraining teaches the key classes and the negation token, not how a
    scoped "not" composes with a key."""
    n = int(n)
    if n < N_GROUPS:
        raise LLRError(f"pretrain_text: n={n} too small, expected at least {N_GROUPS} (one per group)")
    core_noise = _check_noise(core_noise)
    counts = [n // N_GROUPS + (g < n % N_GROUPS) for g in range(N_GROUPS)]
    texts: list[str] = []
    gs: list[int] = []
    for g, c in enumerate(counts):
        texts += _group_sentences(seed, _PRETRAIN_CODE, g, c, core_noise, PRETRAIN_SCOPE_RATE, PRETRAIN_NEGATIONS)
        gs += [g] * c
    order = np.random.default_rng([int(seed), _PRETRAIN_CODE, 99]).permutation(n)
    g = np.asarray(gs, dtype=np.int64)[order]
    return pd.DataFrame({"y": g // N_SPURIOUS, "s": g % N_SPURIOUS, "g": g,
                         "text": np.asarray(texts, dtype=object)[order]})


# ---------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------

SYNTHETIC_TOKENIZER = "synthetic"
_SYNTHETIC_NAMES = {SYNTHETIC_TOKENIZER, "synth", "bert-tiny-synth"}
SYNTH_MAX_POSITIONS = 64


def is_synthetic_tokenizer(name_or_path) -> bool:
    return str(name_or_path) in _SYNTHETIC_NAMES


def write_synthetic_vocab(folder: str | os.PathLike) -> Path:
    """Write ``vocab.txt`` and ``tokenizer_config.json`` of the synthetic
    language into ``folder`` (atomically, skipped if already identical)."""
    folder = Path(folder)
    files = {
        "vocab.txt": "\n".join(synthetic_vocab()) + "\n",
        "tokenizer_config.json": json.dumps({
            "tokenizer_class": "BertTokenizer", "do_lower_case": True,
            "model_max_length": SYNTH_MAX_POSITIONS,
        }, indent=2) + "\n",
    }
    for name, content in files.items():
        path = folder / name
        if not (path.exists() and path.read_text() == content):
            with atomic_path(path) as tmp:
                tmp.write_text(content)
    return folder / "vocab.txt"


def build_synthetic_tokenizer(folder: str | os.PathLike):
    """A transformers BERT (WordPiece, fast) tokenizer over the synthetic
    vocabulary, written to and loaded from ``folder``."""
    from transformers import BertTokenizerFast

    write_synthetic_vocab(folder)
    tok = BertTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    tok.name_or_path_llr = SYNTHETIC_TOKENIZER
    return tok


def load_tokenizer(name_or_path: str, folder: str | os.PathLike | None = None):
    """The tokenizer for a model. ``synthetic`` (or ``bert-tiny-synth``) gives
    the synthetic language's tokenizer (its files written to ``folder``, or to
    a temporary folder); anything else is loaded with
    ``AutoTokenizer.from_pretrained(name_or_path)`` from local files only."""
    if is_synthetic_tokenizer(name_or_path):
        if folder is not None:
            return build_synthetic_tokenizer(folder)
        with tempfile.TemporaryDirectory(prefix="llr-synth-tok-") as tmp:
            return build_synthetic_tokenizer(tmp)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(name_or_path), local_files_only=True)
    except Exception as e:  # offline, missing or broken folder
        raise LLRError(
            f"tokenizer {name_or_path!r} unavailable offline ({type(e).__name__}); place the model folder "
            f"(config.json, vocab.txt, weights) on disk and set the config's model path to it") from None


def _tokenizer_id(tokenizer) -> str:
    name = getattr(tokenizer, "name_or_path_llr", None) or getattr(tokenizer, "name_or_path", "") or ""
    return f"{type(tokenizer).__name__}:{Path(str(name)).name}:{len(tokenizer)}"


# ---------------------------------------------------------------------------
# Token caches and the text inputs interface
# ---------------------------------------------------------------------------

_CHUNK = 8192


def _is_pairs(texts: Sequence) -> bool:
    return len(texts) > 0 and isinstance(texts[0], (tuple, list))


def _fingerprint(texts: Sequence, tok_id: str, max_length: int | None, pad_to_max: bool) -> str:
    h = hashlib.sha256(f"{tok_id}|{max_length}|{pad_to_max}|{len(texts)}".encode())
    for t in texts:
        h.update(("\x1f".join(map(str, t)) if isinstance(t, (tuple, list)) else str(t)).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def encode(texts: Sequence, tokenizer, max_length: int | None, *, pad_to_max: bool = False) -> dict[str, np.ndarray]:
    """Token arrays of ``texts`` (strings, or (a, b) pairs for sentence-pair
    tasks): ``input_ids`` (int32), ``attention_mask`` and ``token_type_ids``
    (int8), shape (N, L), truncated to ``max_length`` tokens and right-padded
    to the longest row (``pad_to_max``: to ``max_length``)."""
    texts = list(texts)
    if not texts:
        raise LLRError("nothing to tokenize")
    if pad_to_max and not max_length:
        raise LLRError("pad_to_max needs max_length")
    pairs = _is_pairs(texts)
    seqs: list[list[int]] = []
    types: list[list[int]] = []
    kw = dict(truncation=max_length is not None, max_length=max_length, padding=False,
              return_attention_mask=False, return_token_type_ids=True)
    for i in range(0, len(texts), _CHUNK):
        chunk = texts[i:i + _CHUNK]
        if pairs:
            enc = tokenizer([str(a) for a, _ in chunk], [str(b) for _, b in chunk], **kw)
        else:
            enc = tokenizer([str(t) for t in chunk], **kw)
        seqs += enc["input_ids"]
        types += enc["token_type_ids"]
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    width = int(max_length) if pad_to_max else int(lengths.max())
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = np.full((len(seqs), width), pad_id, dtype=np.int32)
    tt = np.zeros((len(seqs), width), dtype=np.int8)
    for r, (s, t) in enumerate(zip(seqs, types)):
        ids[r, :len(s)] = s
        tt[r, :len(t)] = t
    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int8)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}


def tokenize_cache(texts: Sequence, tokenizer, max_length: int | None, out_npz: str | os.PathLike, *,
                   pad_to_max: bool = False) -> Path:
    """Write ``encode(texts, tokenizer, max_length)`` to ``out_npz``
    atomically; give ``texts`` in metadata ``idx`` order. An existing file
    made from the same texts, tokenizer and length is kept as is."""
    out_npz = Path(out_npz)
    texts = list(texts)
    fp = _fingerprint(texts, _tokenizer_id(tokenizer), max_length, pad_to_max)
    if out_npz.exists():
        try:
            with np.load(out_npz) as z:
                if str(z["fingerprint"]) == fp:
                    return out_npz
        except Exception:
            pass  # unreadable or old format: rewrite
    try:
        arrays = encode(texts, tokenizer, max_length, pad_to_max=pad_to_max)
    except LLRError as e:
        raise LLRError(f"{out_npz}: {e}") from None
    with atomic_path(out_npz) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, fingerprint=np.array(fp), tokenizer=np.array(_tokenizer_id(tokenizer)),
                     max_length=np.array(-1 if max_length is None else int(max_length)))
    return out_npz


class TextInputs:
    """Model inputs of a text dataset from its token cache: row i is metadata
    ``idx`` i. ``batch`` gives the dict the BERT backbone takes (no
    augmentation for text), trimmed to the batch's longest row."""

    KEYS = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(self, npz_path: str | os.PathLike | None = None, trim: bool = True, *,
                 arrays: dict[str, np.ndarray] | None = None):
        if arrays is None:
            path = Path(npz_path)
            if not path.exists():
                raise LLRError(f"{path}: token cache missing (run the tokenize step)")
            with np.load(path) as z:
                missing = [k for k in ("input_ids", "attention_mask") if k not in z.files]
                if missing:
                    raise LLRError(f"{path}: arrays {missing} missing, expected {list(self.KEYS)}")
                arrays = {k: np.ascontiguousarray(z[k]) for k in self.KEYS if k in z.files}
        self.arrays = {k: v for k, v in arrays.items() if k in self.KEYS}
        self.path = None if npz_path is None else Path(npz_path)
        self.trim = trim
        self.n, self.max_len = self.arrays["input_ids"].shape
        self.lengths = self.arrays["attention_mask"].sum(axis=1).astype(np.int64)

    def __len__(self) -> int:
        return self.n

    def batch(self, idx: np.ndarray, train: bool = False, gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        idx = np.asarray(idx, dtype=np.int64)
        width = int(self.lengths[idx].max()) if (self.trim and len(idx)) else self.max_len
        return {k: torch.from_numpy(a[idx, :width].astype(np.int64)) for k, a in self.arrays.items()}


# ---------------------------------------------------------------------------
# Workflow glue for the synthetic dataset (prepare and pretrain steps)
# ---------------------------------------------------------------------------

SYNTH_MAX_LENGTH = 64


def prepare_synthetic_text(spec, params: dict, out_metadata: str | os.PathLike,
                           out_inputs: str | os.PathLike | None) -> None:
    """``prepare`` for ``synth_multinli``: generate the benchmark from
    ``params`` (``seed``, ``sizes``, ``core_noise``; ``max_length``,
    ``tokenizer_dir``), write the standardized metadata (with the ``text``
    column) and its token cache ``out_inputs``."""
    from llr.data import standardize
    from llr.io import write_csv

    if not out_inputs:
        raise LLRError(f"{spec.name}: --out-inputs is required for a synthetic dataset")
    df = generate_synthetic_text(int(params.get("seed", 0)), params.get("sizes"),
                                 core_noise=params.get("core_noise", DEFAULT_CORE_NOISE))
    meta = standardize(df, spec, "generator")
    tok = load_tokenizer(SYNTHETIC_TOKENIZER, params.get("tokenizer_dir"))
    tokenize_cache(meta["text"].tolist(), tok, int(params.get("max_length", SYNTH_MAX_LENGTH)), out_inputs)
    write_csv(out_metadata, meta)


def pretrain_inputs(spec, params: dict, seed: int, n_per_group: int, tokenizer_dir: str | None = None):
    """The balanced auxiliary task of the synthetic pretrain step: returns
    (``TextInputs`` in memory, group labels g, ``model_kw`` for
    ``build_model``). ``params``: ``pretrain_core_noise`` (else
    ``core_noise``), ``max_length``."""
    noise = params.get("pretrain_core_noise", params.get("core_noise", DEFAULT_CORE_NOISE))
    df = pretrain_text(seed, int(n_per_group) * spec.n_groups, core_noise=noise)
    tok = load_tokenizer(SYNTHETIC_TOKENIZER, tokenizer_dir)
    arrays = encode(df["text"].tolist(), tok, int(params.get("max_length", SYNTH_MAX_LENGTH)))
    return TextInputs(arrays=arrays), df["g"].to_numpy(), {"vocab_size": len(tok)}


# ---------------------------------------------------------------------------
# BERT
# ---------------------------------------------------------------------------

# arch -> (default hub name when pretrained, random-init config)
BERT_ARCHS: dict[str, tuple[str | None, dict]] = {
    "bert-base-uncased": ("bert-base-uncased", dict(
        vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, max_position_embeddings=512)),
    "bert-tiny": ("prajjwal1/bert-tiny", dict(
        vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=512, max_position_embeddings=512)),
    "bert-tiny-synth": (None, dict(
        vocab_size=None, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128, max_position_embeddings=SYNTH_MAX_POSITIONS)),
}


class BertBackbone(nn.Module):
    """``BertModel`` taking the dict batch; returns the pooled [CLS] output."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.bert(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                        token_type_ids=batch.get("token_type_ids"))
        return out.pooler_output


class BertClassifier(Classifier):
    """``Classifier`` over a BERT backbone: dropout between the pooled output
    and the head as in ``BertForSequenceClassification`` (``embed`` is taken
    before it); no weight decay on biases and LayerNorm parameters."""

    def __init__(self, backbone: BertBackbone, dim: int, n_classes: int, dropout: float):
        super().__init__(backbone, dim, n_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))

    def no_decay_names(self) -> set[str]:
        names = {n for n, _ in self.named_parameters() if n.endswith("bias")}
        for mname, module in self.named_modules():
            if isinstance(module, nn.LayerNorm):
                names |= {f"{mname}.{p}" for p, _ in module.named_parameters()}
        return names


_STATE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def _load_state_file(bert: nn.Module, path: Path) -> None:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise LLRError(f"{path}: cannot read BERT weights ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    for prefix in ("backbone.bert.", "bert.", "backbone."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    missing, _ = bert.load_state_dict(state, strict=False)
    if missing:
        raise LLRError(f"{path}: BERT weights incomplete, {len(missing)} tensors missing (first {missing[0]!r})")


def build_bert(arch: str, n_classes: int, *, vocab_size: int | None = None, pretrained_path: str | None = None,
               pretrained: bool | None = None, **kw) -> BertClassifier:
    """A ``Classifier`` over transformers' ``BertModel``.

    ``arch``: ``bert-base-uncased``, ``bert-tiny`` (hidden 128, 2 layers,
    2 heads, intermediate 512) or ``bert-tiny-synth`` (hidden 64, 2 layers,
    2 heads, intermediate 128, 64 positions, vocabulary of the synthetic
    language). Weights: ``pretrained_path`` (a model folder, loaded with
    ``from_pretrained(local_files_only=True)``, or a ``.pt``/``.safetensors``
    state dict of a ``BertModel`` or of a whole classifier); else, if
    ``pretrained``, the arch's usual hub name from the local cache; else
    random initialization, with ``kw`` overriding ``BertConfig`` fields."""
    from transformers import BertConfig, BertModel

    if arch not in BERT_ARCHS:
        raise LLRError(f"unknown BERT architecture {arch!r}; expected one of {sorted(BERT_ARCHS)}")
    hub_name, base = BERT_ARCHS[arch]
    cfg = dict(base)
    if cfg["vocab_size"] is None:
        cfg["vocab_size"] = len(synthetic_vocab())
    if vocab_size is not None:
        cfg["vocab_size"] = int(vocab_size)
    bad = [k for k in kw if not hasattr(BertConfig(), k)]
    if bad:
        raise LLRError(f"build_bert: unknown option {bad[0]!r}; expected BertConfig fields, vocab_size, pretrained_path or pretrained")
    cfg.update(kw)

    source = state_file = None
    if pretrained_path is not None:
        path = Path(pretrained_path)
        if path.is_dir():
            source = str(path)
        elif path.is_file():
            state_file = path
        elif path.suffix in _STATE_SUFFIXES or str(pretrained_path).startswith(("/", ".")):
            raise LLRError(f"{arch}: pretrained path {str(path)!r} not found; set the config's model path to a model folder or weights file")
        else:
            source = str(pretrained_path)  # a hub name, from the local cache
    elif pretrained:
        if hub_name is None:
            raise LLRError(f"{arch}: no published weights; pretrain it (the synthetic pretrain step) and pass its path")
        source = hub_name
    if source is not None:
        try:
            bert = BertModel.from_pretrained(source, local_files_only=True, add_pooling_layer=True)
        except Exception as e:
            raise LLRError(
                f"{arch}: weights {source!r} unavailable offline ({type(e).__name__}); place the model folder "
                f"(config.json and weights) on disk and set the config's model path to it") from None
    else:
        bert = BertModel(BertConfig(**cfg), add_pooling_layer=True)
        if state_file is not None:
            _load_state_file(bert, state_file)
    config = bert.config
    dropout = getattr(config, "classifier_dropout", None)
    if dropout is None:
        dropout = config.hidden_dropout_prob
    return BertClassifier(BertBackbone(bert), config.hidden_size, n_classes, dropout)


def save_backbone(model: Classifier, folder: str | os.PathLike) -> Path:
    """Save a BERT classifier's backbone as a transformers model folder
    (``build_bert(arch, ..., pretrained_path=folder)`` loads it), replacing
    the folder atomically."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.backbone.bert.save_pretrained(str(tmp))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder
