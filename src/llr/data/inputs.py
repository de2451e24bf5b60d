"""Model inputs in metadata order (row i is metadata ``idx`` i): token caches
(``TextInputs``), image arrays (``ImageInputs``) and ``open_inputs``, which
opens a dataset's cache as the one or the other.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from llr.data.registry import DatasetSpec
from llr.errors import LLRError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TextInputs:
    """Model inputs of a text dataset from its token cache: row i is metadata
    ``idx`` i. ``batch`` gives the dict the BERT backbone takes (no
    augmentation for text), trimmed to the batch's longest row."""

    KEYS = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(
        self,
        npz_path: str | os.PathLike | None = None,
        trim: bool = True,
        *,
        arrays: dict[str, np.ndarray] | None = None,
    ):
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

    def batch(
        self, idx: np.ndarray, train: bool = False, gen: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        idx = np.asarray(idx, dtype=np.int64)
        width = int(self.lengths[idx].max()) if (self.trim and len(idx)) else self.max_len
        return {k: torch.from_numpy(a[idx, :width].astype(np.int64)) for k, a in self.arrays.items()}


class ImageInputs:
    """Batches from a uint8 array (N, 3, H, W) in metadata order (synthetic
    images, or the pre-decoded cache of a real dataset).

    Train: RandomResizedCrop(crop, scale 0.7-1, ratio 3/4-4/3) and horizontal
    flip, done for a whole batch at once with affine grids (no per-image loop).
    Eval: center crop. Both normalized with ImageNet statistics.
    """

    def __init__(self, array: np.ndarray, crop: int | None = None):
        self.array = array
        self.n = array.shape[0]
        self.crop = crop or array.shape[-1]

    def batch(self, idx: np.ndarray, train: bool, gen=None):
        x = torch.from_numpy(np.ascontiguousarray(self.array[idx]))
        x = x.float().div_(255.0)
        h, w = x.shape[-2:]
        if train:
            b = x.shape[0]
            scale = torch.empty(b).uniform_(0.7, 1.0, generator=gen)
            logr = torch.empty(b).uniform_(np.log(3 / 4), np.log(4 / 3), generator=gen)
            ratio = torch.exp(logr)
            sw = torch.sqrt(scale * ratio).clamp(max=1.0)  # crop width / image width
            sh = torch.sqrt(scale / ratio).clamp(max=1.0)
            tx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - sw)
            ty = (torch.rand(b, generator=gen) * 2 - 1) * (1 - sh)
            flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
            theta = torch.zeros(b, 2, 3)
            theta[:, 0, 0] = sw * flip
            theta[:, 0, 2] = tx
            theta[:, 1, 1] = sh
            theta[:, 1, 2] = ty
            grid = F.affine_grid(theta, (b, 3, self.crop, self.crop), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        elif (h, w) != (self.crop, self.crop):
            top, left = (h - self.crop) // 2, (w - self.crop) // 2
            x = x[..., top : top + self.crop, left : left + self.crop]
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x - mean) / std


def open_inputs(spec: DatasetSpec, path: str, crop: int | None = None):
    """Image datasets: a uint8 ``.npy`` (N, 3, H, W), memory-mapped;
    text datasets: a token ``.npz`` (see ``llr.data.tokens``)."""
    try:
        if spec.modality == "image":
            return ImageInputs(np.load(path, mmap_mode="r"), crop)
        return TextInputs(path)
    except FileNotFoundError:
        raise LLRError(f"{spec.name}: inputs file {path} missing; run the prepare/inputs rule first") from None
