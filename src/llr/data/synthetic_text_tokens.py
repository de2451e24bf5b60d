"""Tokenized files of the text stand-ins: ``prepare_synthetic_text`` (the
prepare step: metadata with a ``text`` column plus its token cache) and
``pretrain_inputs`` (the balanced group task of the pretrain step, labels g).
"""

from __future__ import annotations

import os

from llr.data.inputs import TextInputs
from llr.data.registry import standardize
from llr.data.synthetic_text import generate_synthetic_text, pretrain_text
from llr.data.tokens import SYNTHETIC_TOKENIZER, encode, load_tokenizer, tokenize_cache
from llr.errors import LLRError
from llr.io import write_csv

SYNTH_MAX_LENGTH = 64


def prepare_synthetic_text(
    spec, params: dict, out_metadata: str | os.PathLike, out_inputs: str | os.PathLike | None
) -> None:
    """``prepare`` for a text stand-in: generate it from ``params``
    (``seed``, ``sizes``, ``core_noise``; ``max_length``, ``tokenizer_dir``),
    write the standardized metadata (with the ``text`` column) and its token
    cache ``out_inputs``."""
    if not out_inputs:
        raise LLRError(f"{spec.name}: --out-inputs is required for a synthetic dataset")
    df = generate_synthetic_text(
        int(params.get("seed", 0)), params.get("sizes"), core_noise=params.get("core_noise"), dataset=spec.name
    )
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
    arrays = encode(
        df["text"].tolist(), tok, int(params.get("max_length", SYNTH_MAX_LENGTH)), desc=f"tokenize {spec.name} pretrain"
    )
    return TextInputs(arrays=arrays), df["g"].to_numpy(), {"vocab_size": len(tok)}
