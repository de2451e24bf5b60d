"""Tokenizers and token caches of the text datasets (paper Appendix B.2: BERT
inputs), for the synthetic language and real BERT alike.

Tokenizer: ``synthetic_vocab()`` is the five BERT special tokens plus every
word of the language; ``build_synthetic_tokenizer(folder)`` writes
``vocab.txt`` and ``tokenizer_config.json`` there and loads a transformers
BERT (WordPiece) tokenizer from them, so the synthetic runs use the same code
path as real BERT.

Token caches: ``tokenize_cache`` writes an ``.npz`` per dataset x tokenizer,
rows in metadata ``idx`` order, right-padded to the longest sequence (capped
at ``max_length``). Padding further is pointless: BERT masks padded positions,
and ``llr.data.inputs.TextInputs.batch`` trims each batch to its own longest
row anyway.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llr.data.synthetic_text import language_words
from llr.errors import LLRError
from llr.io import atomic_path
from llr.runtime.progress import progress

# ---------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------

SYNTHETIC_TOKENIZER = "synthetic"
_SYNTHETIC_NAMES = {SYNTHETIC_TOKENIZER, "synth", "bert-tiny-synth"}
SYNTH_MAX_POSITIONS = 64
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def synthetic_vocab() -> list[str]:
    """The tokenizer vocabulary: special tokens, then every word (sorted)."""
    return list(SPECIAL_TOKENS) + sorted(language_words())


def is_synthetic_tokenizer(name_or_path) -> bool:
    return str(name_or_path) in _SYNTHETIC_NAMES


def write_synthetic_vocab(folder: str | os.PathLike) -> Path:
    """Write ``vocab.txt`` and ``tokenizer_config.json`` of the synthetic
    language into ``folder`` (atomically, skipped if already identical)."""
    folder = Path(folder)
    files = {
        "vocab.txt": "\n".join(synthetic_vocab()) + "\n",
        "tokenizer_config.json": json.dumps(
            {
                "tokenizer_class": "BertTokenizer",
                "do_lower_case": True,
                "model_max_length": SYNTH_MAX_POSITIONS,
            },
            indent=2,
        )
        + "\n",
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
            f"(config.json, vocab.txt, weights) on disk and set the config's model path to it"
        ) from None


def _tokenizer_id(tokenizer) -> str:
    name = getattr(tokenizer, "name_or_path_llr", None) or getattr(tokenizer, "name_or_path", "") or ""
    return f"{type(tokenizer).__name__}:{Path(str(name)).name}:{len(tokenizer)}"


# ---------------------------------------------------------------------------
# Token caches
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


def encode(
    texts: Sequence, tokenizer, max_length: int | None, *, pad_to_max: bool = False, desc: str = "tokenize"
) -> dict[str, np.ndarray]:
    """Token arrays of ``texts`` (strings, or (a, b) pairs for sentence-pair
    tasks): ``input_ids`` (int32), ``attention_mask`` and ``token_type_ids``
    (int8), shape (N, L), truncated to ``max_length`` tokens and right-padded
    to the longest row (``pad_to_max``: to ``max_length``). ``desc`` labels
    the progress bar over chunks (stderr)."""
    texts = list(texts)
    if not texts:
        raise LLRError("nothing to tokenize")
    if pad_to_max and not max_length:
        raise LLRError("pad_to_max needs max_length")
    pairs = _is_pairs(texts)
    seqs: list[list[int]] = []
    types: list[list[int]] = []
    kw = dict(
        truncation=max_length is not None,
        max_length=max_length,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=True,
    )
    for i in progress(range(0, len(texts), _CHUNK), desc=desc, unit="chunk"):
        chunk = texts[i : i + _CHUNK]
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
        ids[r, : len(s)] = s
        tt[r, : len(t)] = t
    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int8)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}


def tokenize_cache(
    texts: Sequence, tokenizer, max_length: int | None, out_npz: str | os.PathLike, *, pad_to_max: bool = False
) -> Path:
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
        arrays = encode(
            texts, tokenizer, max_length, pad_to_max=pad_to_max, desc=f"tokenize {out_npz.parent.name}/{out_npz.name}"
        )
    except LLRError as e:
        raise LLRError(f"{out_npz}: {e}") from None
    with atomic_path(out_npz) as tmp:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                **arrays,
                fingerprint=np.array(fp),
                tokenizer=np.array(_tokenizer_id(tokenizer)),
                max_length=np.array(-1 if max_length is None else int(max_length)),
            )
    return out_npz
