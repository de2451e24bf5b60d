"""Open a dataset's model inputs (images or tokens) in metadata order."""

from __future__ import annotations

import numpy as np

from llr.data.registry import DatasetSpec
from llr.errors import LLRError


def open_inputs(spec: DatasetSpec, path: str, crop: int | None = None):
    """Image datasets: a uint8 ``.npy`` (N, 3, H, W), memory-mapped;
    text datasets: a token ``.npz`` (see ``llr.data.synthetic_text``)."""
    try:
        if spec.modality == "image":
            from llr.data.synthetic_images import ImageInputs

            return ImageInputs(np.load(path, mmap_mode="r"), crop)
        from llr.data.synthetic_text import TextInputs

        return TextInputs(path)
    except FileNotFoundError:
        raise LLRError(f"{spec.name}: inputs file {path} missing; run the prepare/inputs rule first") from None
