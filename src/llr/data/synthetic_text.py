"""The synthetic language of the text stand-ins ``synth_multinli`` and
``synth_civilcomments`` (paper Section 1 "Datasets and models", Appendix B.1
Table 2): its worlds, sentence generation and the pretraining corpus.

The synthetic language (datasets ``synth_multinli`` and ``synth_civilcomments``)
-------------------------------------------------------------------------------
Stand-ins for the paper's two text benchmarks (Section 1 "Datasets and
models", Appendix B.1 Table 2), on one vocabulary so that one tokenizer and
one BERT configuration serve both. Every example is one lowercase sentence of
``MIN_WORDS`` to ``MAX_WORDS`` words separated by single spaces, with no
punctuation, so that the word-level tokenizer (``llr.data.tokens``) maps each
word to exactly one token and decoding gives the sentence back verbatim. Each stand-in is a
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

Tokenizer and token caches: ``llr.data.tokens``; the prepare and pretrain
steps' tokenized files: ``llr.data.synthetic_text_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from llr.errors import LLRError

# ---------------------------------------------------------------------------
# The synthetic language
# ---------------------------------------------------------------------------

N_SPURIOUS = 2

FILLER_WORDS: tuple[str, ...] = tuple(
    """
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
""".split()
)

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
    name="synth_multinli",
    code=1,
    class_names=("contradiction", "entailment", "neutral"),
    spurious_names=("no-negation", "negation"),
    strong_keys=(
        ("disagrees", "refutes", "opposes", "disputes"),
        ("agrees", "confirms", "supports", "proves"),
        ("ponders", "recalls", "imagines", "notices"),
    ),
    weak_keys=(
        ("doubts", "questions", "resists"),
        ("accepts", "echoes", "follows"),
        ("wonders", "mentions", "guesses"),
    ),
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
    name="synth_civilcomments",
    code=2,
    class_names=("non-toxic", "toxic"),
    spurious_names=("no-identity", "identity"),
    strong_keys=(("thanks", "appreciate", "helpful", "insightful"), ("idiot", "stupid", "pathetic", "moron")),
    weak_keys=(("fair", "reasonable", "decent"), ("ridiculous", "awful", "annoying")),
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

_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
_PRETRAIN_CODE = 3

# key word -> (world, class, weak)
_KEYS: dict[str, tuple[str, int, bool]] = {
    k: (w.name, c, weak)
    for w in WORLDS.values()
    for weak, table in ((False, w.strong_keys), (True, w.weak_keys))
    for c, keys in enumerate(table)
    for k in keys
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


def language_words() -> set[str]:
    """Every word of the language: filler words, key words and spurious words."""
    return set(FILLER_WORDS) | set(_KEYS) | {s for w in WORLDS.values() for s in w.spurious_words}


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
            _pick(u[:, _U_SWORD], len(world.spurious_words))
        ]
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
            raise LLRError(
                f"{dataset}: sizes[{split!r}]={counts} invalid, expected {world.n_groups} "
                f"non-negative integers (groups 0..{world.n_groups - 1})"
            )
        out[split] = tuple(int(c) for c in counts)
    return out


def generate_synthetic_text(
    seed: int, sizes: dict | None = None, *, core_noise: float | None = None, dataset: str = "synth_multinli"
) -> pd.DataFrame:
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
        frames.append(
            pd.DataFrame(
                {
                    "split": split,
                    "y": g[order] // N_SPURIOUS,
                    "s": g[order] % N_SPURIOUS,
                    "text": np.asarray(texts, dtype=object)[order],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def pretrain_text(
    seed: int, n: int, *, core_noise: float | None = None, dataset: str = "synth_multinli"
) -> pd.DataFrame:
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
    return pd.DataFrame(
        {"y": g // N_SPURIOUS, "s": g % N_SPURIOUS, "g": g, "text": np.asarray(texts, dtype=object)[order]}
    )
