"""``build_model``: any supported classifier by architecture name (ResNets
from ``llr.models.resnet``, BERT from ``llr.models.bert``).
"""

from __future__ import annotations

from llr.errors import LLRError
from llr.models.bert import build_bert
from llr.models.classifier import Classifier
from llr.models.resnet import build_resnet


def build_model(arch: str, n_classes: int, *, pretrained: bool = False, **kw) -> Classifier:
    """Build any supported classifier by architecture name."""
    if arch.startswith("resnet"):
        return build_resnet(arch, n_classes, pretrained=pretrained)
    if arch.startswith("bert"):
        return build_bert(arch, n_classes, pretrained=pretrained, **kw)
    raise LLRError(f"unknown architecture {arch!r}; expected a resnet or bert name")
