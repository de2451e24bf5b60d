"""Text: the synthetic MultiNLI and CivilComments stand-ins, tokenizers,
token caches and BERT.

The synthetic language (datasets ``synth_multinli`` and ``synth_civilcomments``)
-------------------------------------------------------------------------------
Stand-ins for the paper's two text benchmarks (Section 1 "Datasets and
models", Appendix B.1 Table 2), on one vocabulary so that one tokenizer and
one BERT configuration serve both. Every example is one lowercase sentence of
``MIN_WORDS`` to ``MAX_WORDS`` words separated by single spaces, with no
punctuation, so that the word-level tokenizer below maps each word to exactly
one token and decoding gives the sentence back verbatim. Each stand-in is a
``TextWorld`` (``WORLDS``):

* Filler: words drawn uniformly from ``FILLER_WORDS`` (everyday nouns,
  adjectives, verbs and function words, shared by both worlds). They carry no
  label.
* Core: exactly one key word, at a random position. With probability
  ``1 - core_noise`` it is a *strong* key, one of the words only its class
  uses (``strong_keys``; e.g. MultiNLI's contradiction "disagrees refutes
  opposes disputes", CivilComments' toxic "idiot stupid pathetic moron").
  Otherwise (probability ``core_noise``, independently per sentence and
  whatever the group) it is a *weak* key: a word of the class's
  ``weak_keys`` with probability ``WEAK_FIDELITY`` (0.8), else one of its
  confusable class's (``confusions``: MultiNLI contradiction <-> entailment,
  neutral -> contradiction; CivilComments the other class), a hint right
  four times in five. The core is what the key says; on a group-balanced
  set the linear rule "the key's class" reaches about ``1 - 0.2 core_noise``
  in every group, and that is what ERM learns from a group-balanced train
  set and what the balanced pretraining below puts in the features.
* Spurious token (s): when s = 1 the sentence holds exactly one word of the
  world's ``spurious_words`` at another random position (MultiNLI: the
  negation words "not no never nothing nobody" of its negation heuristic;
  CivilComments: identity terms for the eight identity categories of the
  paper's footnote 6); when s = 0 none (they are not filler words).
* Why ERM on the natural composition leans on the spurious token: the
  imbalance makes it a strong prior. In synthetic MultiNLI's train set a
  negation sentence is a contradiction 77% of the time, an entailment 10%
  (Table 2's p(y|s): .761, .104); against those odds an entailment hint
  (4:1) loses to the contradictions whose misleading hint it is, so a
  classifier fit to the natural composition calls a negated entailment with
  a weak key a contradiction and group 3 loses about the ``core_noise``
  share. Likewise a toxic hint (4:1) against CivilComments' non-toxic prior
  (16:1 without an identity term, 4:1 with; Table 2: .079, .164 toxic).
  Strong keys keep the majority groups, and the mean, high. A last layer
  refit on group-balanced data undoes the prior: the regime of the real
  benchmarks.
* Compositions (``default_sizes``, groups g = 2y + s), Table 2's shape scaled
  down for CPU training. MultiNLI: class-balanced a priori (800 a class),
  negation goes with contradiction with Table 2's p(y|s), but negation is in
  20% of the train sentences instead of 7%: at this scale ERM learns the
  negation prior only from negated sentences with a weak key, and with 7%
  (about 10 carrying an entailment hint) natural and balanced ERM came out
  the same in calibration. CivilComments: toxic 11.5% of train, identity
  terms in 70% of toxic and 38% of non-toxic comments (Table 2: 11.3%, 58%,
  38%; p(y|s) within 1.3x of Table 2's): the toxic class's identity group is
  at least twice its no-identity group in every pool, so that the
  group-ratio subsets keep 2m examples a class (m the smallest group; a
  smaller majority group would cap them at its size). Val
  and test keep the order of their group sizes with the smallest groups
  raised (group-ratio subsets of the held-out half of val need examples;
  test WGA to a few points).
* Randomness: every (seed, world, split, group) cell has its own generator,
  and each sentence takes a fixed number of uniform draws from it
  (generation is vectorized over a cell), so changing one group's count
  leaves every other group's sentences unchanged and extends or truncates
  its own; the rows of a split are then shuffled by a generator of (seed,
  world, split).
* ``pretrain_text`` (the auxiliary corpus of the pretrain step, standing in
  for BERT pretraining) is a group-balanced set of the same world from
  separate streams; predicting the group teaches the keys (strong and weak)
  and the spurious token, so the pretrained features carry the core linearly
  (checked by ``benchmarks/calibrate_synthetic.py``'s probe).

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
group task of the pretrain step, labels g).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from llr.errors import LLRError
from llr.io import atomic_path
from llr.models.resnet import Classifier

# ---------------------------------------------------------------------------
# The synthetic language
# ---------------------------------------------------------------------------

N_SPURIOUS = 2

FILLER_WORDS: tuple[str, ...] = tuple("""
the a an this these those some many every each two three four his her their our
its my your in at by from near under behind after before during and then while
since around across into onto inside outside beside between with upon over
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

MIN_WORDS, MAX_WORDS = 6, 10
WEAK_FIDELITY = 0.8  # a weak key hints at its sentence's class with this probability


@dataclass(frozen=True)
class TextWorld:
    """The words of one text stand-in: per class its strong and weak keys,
    the spurious words, its default group counts and ``core_noise``."""

    name: str
    code: int  # random stream of the world
    class_names: tuple[str, ...]
    spurious_names: tuple[str, ...]
    strong_keys: tuple[tuple[str, ...], ...]
    weak_keys: tuple[tuple[str, ...], ...]
    spurious_words: tuple[str, ...]
    confusions: tuple[int, ...]  # per class: the class its misleading weak keys hint at
    default_sizes: dict
    default_core_noise: float

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_groups(self) -> int:
        return self.n_classes * N_SPURIOUS


MULTINLI = TextWorld(
    name="synth_multinli", code=1,
    class_names=("contradiction", "entailment", "neutral"), spurious_names=("no-negation", "negation"),
    strong_keys=(("disagrees", "refutes", "opposes", "disputes"),
                 ("agrees", "confirms", "supports", "proves"),
                 ("ponders", "recalls", "imagines", "notices")),
    weak_keys=(("doubts", "questions", "resists"),
               ("accepts", "echoes", "follows"),
               ("wonders", "mentions", "guesses")),
    spurious_words=("not", "no", "never", "nothing", "nobody"),
    confusions=(1, 0, 0),
    default_sizes={
        "train": (430, 370, 752, 48, 738, 62),
        "val": (240, 200, 420, 40, 410, 45),
        "test": (400, 300, 700, 80, 690, 90),
    },
    default_core_noise=0.3,
)
CIVILCOMMENTS = TextWorld(
    name="synth_civilcomments", code=2,
    class_names=("non-toxic", "toxic"), spurious_names=("no-identity", "identity"),
    strong_keys=(("thanks", "appreciate", "helpful", "insightful"),
                 ("idiot", "stupid", "pathetic", "moron")),
    weak_keys=(("fair", "reasonable", "decent"),
               ("ridiculous", "awful", "annoying")),
    spurious_words=("male", "female", "gay", "black", "white", "christian", "muslim", "jewish"),
    confusions=(1, 0),
    default_sizes={
        "train": (1100, 670, 70, 160),
        "val": (500, 300, 40, 100),
        "test": (700, 420, 100, 160),
    },
    default_core_noise=0.25,
)
WORLDS: dict[str, TextWorld] = {w.name: w for w in (MULTINLI, CIVILCOMMENTS)}

# Back-compatible names of the MultiNLI world.
CLASS_NAMES = MULTINLI.class_names
N_CLASSES = MULTINLI.n_classes
N_GROUPS = MULTINLI.n_groups
CORE_KEYS = MULTINLI.strong_keys
NEGATIONS = MULTINLI.spurious_words
DEFAULT_SIZES = MULTINLI.default_sizes
DEFAULT_CORE_NOISE = MULTINLI.default_core_noise

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
_PRETRAIN_CODE = 3

# key word -> (world, class, weak)
_KEYS: dict[str, tuple[str, int, bool]] = {
    k: (w.name, c, weak) for w in WORLDS.values()
    for weak, table in ((False, w.strong_keys), (True, w.weak_keys))
    for c, keys in enumerate(table) for k in keys
}


def _check_words() -> None:
    groups = [FILLER_WORDS, tuple(_KEYS)] + [w.spurious_words for w in WORLDS.values()]
    allw = [w for g in groups for w in g]
    assert len(allw) == len(set(allw)), "synthetic language: word sets overlap"
    for w in WORLDS.values():
        assert len({len(k) for k in w.strong_keys}) == 1 and len({len(k) for k in w.weak_keys}) == 1
        assert len(w.strong_keys) == len(w.weak_keys) == len(w.confusions) == w.n_classes
        assert all(c != y for y, c in enumerate(w.confusions))
        assert all(len(c) == w.n_groups for c in w.default_sizes.values())


_check_words()


def get_world(dataset: str) -> TextWorld:
    try:
        return WORLDS[dataset]
    except KeyError:
        raise LLRError(f"synthetic text: unknown stand-in {dataset!r}, expected one of {sorted(WORLDS)}") from None


def synthetic_vocab() -> list[str]:
    """The tokenizer vocabulary: special tokens, then every word (sorted)."""
    words = set(FILLER_WORDS) | set(_KEYS) | {s for w in WORLDS.values() for s in w.spurious_words}
    return list(SPECIAL_TOKENS) + sorted(words)


def key_of(text: str) -> tuple[str, int, bool]:
    """(world, class, weak) of a sentence's key word."""
    for w in text.split():
        if w in _KEYS:
            return _KEYS[w]
    raise LLRError(f"synthetic text without a key word: {text!r}")


def core_class(text: str) -> int:
    """The class a sentence's key states (strong key) or hints at (weak)."""
    return key_of(text)[1]


def is_weak(text: str) -> bool:
    """Whether a sentence's key is a weak one (a hint, ``WEAK_FIDELITY``)."""
    return key_of(text)[2]


def has_spurious(text: str, dataset: str = "synth_multinli") -> bool:
    """Whether a sentence holds the stand-in's spurious token (s = 1)."""
    words = set(get_world(dataset).spurious_words)
    return any(w in words for w in text.split())


def has_negation(text: str) -> bool:
    return has_spurious(text, "synth_multinli")


# Columns of the uniform draws of one sentence: a fixed number per row, so
# that the first k sentences of a cell do not depend on how many it has.
_U_LEN, _U_WEAK, _U_TRUE, _U_KEY, _U_KPOS, _U_SPOS, _U_SWORD = range(7)
_U_FILL = 7
_U_WIDTH = _U_FILL + MAX_WORDS


def _pick(u: np.ndarray, k) -> np.ndarray:
    """Uniform draws in [0, 1) -> integers in [0, k) (k may be an array)."""
    return np.minimum((u * k).astype(np.int64), np.asarray(k) - 1)


def _group_sentences(world: TextWorld, seed: int, code: int, g: int, n: int, core_noise: float) -> list[str]:
    """``n`` sentences of group g = 2y + s of ``world``, from the generator
    of (seed, world, code, g), vectorized over the rows of one (n, _U_WIDTH)
    uniform draw."""
    if n == 0:
        return []
    u = np.random.default_rng([int(seed), world.code, code, g]).random((n, _U_WIDTH))
    y, s = divmod(g, N_SPURIOUS)
    length = MIN_WORDS + _pick(u[:, _U_LEN], MAX_WORDS - MIN_WORDS + 1)
    weak = u[:, _U_WEAK] < core_noise
    hint = np.where(u[:, _U_TRUE] < WEAK_FIDELITY, y, world.confusions[y])
    strong = np.array(world.strong_keys[y], dtype=object)[_pick(u[:, _U_KEY], len(world.strong_keys[y]))]
    weak_table = np.array(world.weak_keys, dtype=object)
    weak_word = weak_table[hint, _pick(u[:, _U_KEY], weak_table.shape[1])]
    words = np.array(FILLER_WORDS, dtype=object)[_pick(u[:, _U_FILL:], len(FILLER_WORDS))]
    rows = np.arange(n)
    kpos = _pick(u[:, _U_KPOS], length)
    if s:
        spos = _pick(u[:, _U_SPOS], length - 1)
        spos = spos + (spos >= kpos)
        words[rows, spos] = np.array(world.spurious_words, dtype=object)[
            _pick(u[:, _U_SWORD], len(world.spurious_words))]
    words[rows, kpos] = np.where(weak, weak_word, strong)
    return [" ".join(r[:k]) for r, k in zip(words.tolist(), length.tolist())]


def _check_noise(core_noise: float) -> float:
    core_noise = float(core_noise)
    if not 0.0 <= core_noise <= 1.0:
        raise LLRError(f"synthetic text: core_noise={core_noise} out of range, expected a number in [0, 1]")
    return core_noise


def resolve_sizes(sizes: dict | None, dataset: str = "synth_multinli") -> dict[str, tuple[int, ...]]:
    """Per-split group counts: the stand-in's ``default_sizes`` updated by
    ``sizes``. Each given split needs one non-negative integer per group."""
    world = get_world(dataset)
    out = dict(world.default_sizes)
    for split, counts in (sizes or {}).items():
        if split not in _SPLIT_CODE:
            raise LLRError(f"{dataset}: sizes key {split!r} not in {list(_SPLIT_CODE)}")
        counts = list(counts)
        if len(counts) != world.n_groups or any(int(c) != c or c < 0 for c in counts):
            raise LLRError(f"{dataset}: sizes[{split!r}]={counts} invalid, expected {world.n_groups} "
                           f"non-negative integers (groups 0..{world.n_groups - 1})")
        out[split] = tuple(int(c) for c in counts)
    return out


def generate_synthetic_text(seed: int, sizes: dict | None = None, *, core_noise: float | None = None,
                            dataset: str = "synth_multinli") -> pd.DataFrame:
    """A text stand-in (``dataset``, default the MultiNLI one): columns
    ``split,y,s,text``, splits in the order train, val, test, each shuffled;
    ``sizes[split][g]`` rows of group g = 2y + s (missing splits take the
    stand-in's ``default_sizes``; ``core_noise`` its default)."""
    world = get_world(dataset)
    sizes = resolve_sizes(sizes, dataset)
    core_noise = _check_noise(world.default_core_noise if core_noise is None else core_noise)
    frames = []
    for split, code in _SPLIT_CODE.items():
        counts = np.asarray(sizes[split], dtype=np.int64)
        texts = [t for g, n in enumerate(counts) for t in _group_sentences(world, seed, code, g, int(n), core_noise)]
        g = np.repeat(np.arange(world.n_groups), counts)
        order = np.random.default_rng([int(seed), world.code, code, 99]).permutation(len(texts))
        frames.append(pd.DataFrame({
            "split": split,
            "y": g[order] // N_SPURIOUS,
            "s": g[order] % N_SPURIOUS,
            "text": np.asarray(texts, dtype=object)[order],
        }))
    return pd.concat(frames, ignore_index=True)


def pretrain_text(seed: int, n: int, *, core_noise: float | None = None,
                  dataset: str = "synth_multinli") -> pd.DataFrame:
    """A group-balanced auxiliary set of a stand-in's world (columns
    ``y,s,g,text``, shuffled): ``n`` rows, ``n // G`` per group and the
    remainder spread over the first groups. Drawn from streams disjoint from
    ``generate_synthetic_text``'s, standing in for BERT pretraining data."""
    world = get_world(dataset)
    n, k = int(n), world.n_groups
    if n < k:
        raise LLRError(f"pretrain_text: n={n} too small, expected at least {k} (one per group)")
    core_noise = _check_noise(world.default_core_noise if core_noise is None else core_noise)
    counts = [n // k + (g < n % k) for g in range(k)]
    texts = [t for g, c in enumerate(counts) for t in _group_sentences(world, seed, _PRETRAIN_CODE, g, c, core_noise)]
    order = np.random.default_rng([int(seed), world.code, _PRETRAIN_CODE, 99]).permutation(n)
    g = np.repeat(np.arange(k), counts)[order]
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
    """``prepare`` for a text stand-in: generate it from ``params``
    (``seed``, ``sizes``, ``core_noise``; ``max_length``, ``tokenizer_dir``),
    write the standardized metadata (with the ``text`` column) and its token
    cache ``out_inputs``."""
    from llr.data.registry import standardize
    from llr.io import write_csv

    if not out_inputs:
        raise LLRError(f"{spec.name}: --out-inputs is required for a synthetic dataset")
    df = generate_synthetic_text(int(params.get("seed", 0)), params.get("sizes"),
                                 core_noise=params.get("core_noise"), dataset=spec.name)
    meta = standardize(df, spec, "generator")
    tok = load_tokenizer(SYNTHETIC_TOKENIZER, params.get("tokenizer_dir"))
    tokenize_cache(meta["text"].tolist(), tok, int(params.get("max_length", SYNTH_MAX_LENGTH)), out_inputs)
    write_csv(out_metadata, meta)


def pretrain_inputs(spec, params: dict, seed: int, n_per_group: int, tokenizer_dir: str | None = None):
    """The balanced auxiliary task of the synthetic pretrain step: returns
    (``TextInputs`` in memory, group labels g, ``model_kw`` for
    ``build_model``). ``params``: ``pretrain_core_noise`` (else
    ``core_noise``, else the stand-in's default), ``max_length``."""
    noise = params.get("pretrain_core_noise", params.get("core_noise"))
    df = pretrain_text(seed, int(n_per_group) * spec.n_groups, core_noise=noise, dataset=spec.name)
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
