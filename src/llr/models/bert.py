"""BERT classifiers (paper Appendix B.2): transformers' ``BertModel`` under
the ``Classifier`` interface, loading its weights and saving its backbone.

``build_bert`` wraps transformers' ``BertModel``; the embedding is the
pooled [CLS] output (``pooler_output``, what ``BertForSequenceClassification``
feeds its classifier), and as there, dropout sits between it and the head
(identity in eval mode, so cached features equal ``embed``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from llr.data.tokens import SYNTH_MAX_POSITIONS, synthetic_vocab
from llr.errors import LLRError
from llr.models.classifier import Classifier

# arch -> (default hub name when pretrained, random-init config)
BERT_ARCHS: dict[str, tuple[str | None, dict]] = {
    "bert-base-uncased": (
        "bert-base-uncased",
        dict(
            vocab_size=30522,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            max_position_embeddings=512,
        ),
    ),
    "bert-tiny": (
        "prajjwal1/bert-tiny",
        dict(
            vocab_size=30522,
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=512,
            max_position_embeddings=512,
        ),
    ),
    "bert-tiny-synth": (
        None,
        dict(
            vocab_size=None,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=128,
            max_position_embeddings=SYNTH_MAX_POSITIONS,
        ),
    ),
}


class BertBackbone(nn.Module):
    """``BertModel`` taking the dict batch; returns the pooled [CLS] output."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.bert(
            input_ids=batch["input_ids"],
            attention_mask=batch.get("attention_mask"),
            token_type_ids=batch.get("token_type_ids"),
        )
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
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            break
    missing, _ = bert.load_state_dict(state, strict=False)
    if missing:
        raise LLRError(f"{path}: BERT weights incomplete, {len(missing)} tensors missing (first {missing[0]!r})")


def build_bert(
    arch: str,
    n_classes: int,
    *,
    vocab_size: int | None = None,
    pretrained_path: str | None = None,
    pretrained: bool | None = None,
    **kw,
) -> BertClassifier:
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
        raise LLRError(
            f"build_bert: unknown option {bad[0]!r}; expected BertConfig fields, vocab_size, pretrained_path or pretrained"
        )
    cfg.update(kw)

    source = state_file = None
    if pretrained_path is not None:
        path = Path(pretrained_path)
        if path.is_dir():
            source = str(path)
        elif path.is_file():
            state_file = path
        elif path.suffix in _STATE_SUFFIXES or str(pretrained_path).startswith(("/", ".")):
            raise LLRError(
                f"{arch}: pretrained path {str(path)!r} not found; set the config's model path to a model folder or weights file"
            )
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
                f"(config.json and weights) on disk and set the config's model path to it"
            ) from None
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
