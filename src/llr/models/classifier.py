"""The one interface of every model: a backbone giving the penultimate
embedding ``embed(x)``, then a linear ``head``; ``forward`` is ``head(embed(x))``.
"""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """A backbone producing the penultimate embedding, then a linear head."""

    def __init__(self, backbone: nn.Module, dim: int, n_classes: int):
        super().__init__()
        self.backbone = backbone
        self.dim = dim
        self.head = nn.Linear(dim, n_classes)

    def embed(self, x) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x) -> torch.Tensor:
        return self.head(self.embed(x))

    def reset_head(self, n_classes: int | None = None) -> None:
        """Reinitialize the head (new class count if given)."""
        self.head = nn.Linear(self.dim, n_classes or self.head.out_features).to(self.head.weight.device)

    def no_decay_names(self) -> set[str]:
        """Parameter names exempt from weight decay (none for CNNs)."""
        return set()
