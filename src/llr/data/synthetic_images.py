"""Embedded synthetic image benchmarks (stand-ins for Waterbirds and CelebA,
paper Section 1 "Datasets and models", Appendix B.1 Table 2): generation,
the pretraining set and the prepare step. The image input pipeline shared
with the real image datasets is ``llr.data.inputs.ImageInputs``.

One image world serves both stand-ins, as ImageNet features serve both real
datasets: an image is a core shape (``y``: 0 = a disk, 1 = a plus sign)
drawn with low contrast on a spurious background (``s``: 0 = green-brown
blotches, 1 = blue horizontal waves), plus pixel noise. The background is
easy to see, the shape is not: ``core_contrast`` sets how far the shape's
colour departs from the background's. The stand-ins differ in what the
paper's Table 2 makes them differ in:

* ``synth_waterbirds`` (y landbird/waterbird, s land/water): train strongly
  imbalanced in both classes (minority groups g1, g2); val and test
  group-balanced within each class (the real set's distribution shift); the
  held-out set is 20% of train.
* ``synth_celeba`` (y non-blond/blond, s female/male): no distribution
  shift (val and test keep train's ordering of group sizes); blond is about
  15% of train, blond-male under 1% of train; the non-blond class is nearly
  balanced over s (``DatasetSpec.balanced_classes``); the held-out set is
  half of val.

Calibrated (config.yaml): 16-pixel images, core contrast 0.6 for both, so
that the two differ only in the above. Generation is a deterministic
function of the seed and the stand-in
(``STANDINS[name].stream``), vectorized over images. The backbone's
pretraining (``pretrain_images``, the workflow's pretrain step) draws a
group-balanced auxiliary set of the same world from its own stream.
Calibration: ``benchmarks/calibrate_synthetic.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from llr.data.registry import SPLITS
from llr.errors import LLRError

# Defaults of the generator settings; config.yaml's ``synthetic`` block sets
# the calibrated values per stand-in.
CORE_CONTRAST = 0.6
IMAGE_SIZE = 16
NOISE = 0.08


@dataclass(frozen=True)
class ImageStandIn:
    """Per-split group counts (g = 2y + s) and the random stream of one
    image stand-in."""

    name: str
    stream: int
    sizes: dict


STANDINS: dict[str, ImageStandIn] = {
    s.name: s
    for s in (
        # Waterbirds (Table 2: train .730/.038/.012/.220): both classes lean on
        # their background, minority groups about 5% of landbirds and 11% of
        # waterbirds; val/test balanced within class.
        ImageStandIn(
            "synth_waterbirds",
            7,
            {
                "train": [700, 40, 30, 230],
                "val": [60, 60, 40, 40],
                "test": [150, 150, 100, 100],
            },
        ),
        # CelebA (Table 2: train .440/.411/.141/.009): blond 15% of train,
        # blond-male 0.6% (5 images); val/test keep the order of group sizes with the
        # smallest group raised so that the held-out half of val and the test
        # WGA have examples to work with, and blond-female at least three times
        # blond-male in val, so that the held-out group-ratio subsets keep 2m
        # examples a class (m the smallest group).
        ImageStandIn(
            "synth_celeba",
            8,
            {
                "train": [395, 370, 130, 5],
                "val": [250, 230, 110, 36],
                "test": [600, 560, 200, 60],
            },
        ),
    )
}
DEFAULT_SIZES = STANDINS["synth_waterbirds"].sizes


def render(
    y: np.ndarray,
    s: np.ndarray,
    rng: np.random.Generator,
    size: int = IMAGE_SIZE,
    core_contrast: float = CORE_CONTRAST,
    noise: float = NOISE,
) -> np.ndarray:
    """Render images (N, 3, size, size) uint8 for labels y and backgrounds s."""
    y = np.asarray(y)
    s = np.asarray(s)
    n = len(y)
    coords = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")  # (S, S)
    # Background: per-image base colour and texture.
    land = np.array([0.45, 0.50, 0.25])
    water = np.array([0.20, 0.35, 0.70])
    base = np.where(s[:, None] == 1, water, land) + rng.normal(0, 0.05, (n, 3))
    f = rng.uniform(2.0, 4.0, (n, 2))
    ph = rng.uniform(0, 2 * np.pi, (n, 2))
    blotch = np.sin(2 * np.pi * f[:, :1, None] * xx + ph[:, :1, None]) * np.sin(
        2 * np.pi * f[:, 1:, None] * yy + ph[:, 1:, None]
    )
    waves = np.sin(2 * np.pi * (2 * f[:, :1, None]) * yy + ph[:, :1, None] + 0.6 * np.sin(6 * xx))
    tex = np.where(s[:, None, None] == 1, waves, blotch)  # (N, S, S)
    img = base[:, :, None, None] * (1.0 + 0.25 * tex[:, None])
    # Core shape at a random position and scale.
    cx = rng.uniform(0.3, 0.7, n)[:, None, None]
    cy = rng.uniform(0.3, 0.7, n)[:, None, None]
    r = rng.uniform(0.16, 0.26, n)[:, None, None]
    dx, dy = xx - cx, yy - cy
    disk = dx**2 + dy**2 <= r**2
    w = r / 3.0
    plus = ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    mask = np.where(y[:, None, None] == 1, plus, disk)
    shape_colour = np.clip(base + core_contrast * rng.choice([-1.0, 1.0], (n, 1)), 0, 1)
    img = np.where(mask[:, None], shape_colour[:, :, None, None], img)
    img = img + rng.normal(0, noise, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def resolve_sizes(name: str, sizes: dict | None) -> dict[str, list[int]]:
    """Per-split group counts of stand-in ``name``: its defaults updated by
    ``sizes`` (each given split: 4 non-negative integers, groups 0..3)."""
    if name not in STANDINS:
        raise LLRError(f"synthetic images: unknown stand-in {name!r}, expected one of {sorted(STANDINS)}")
    out = {k: list(v) for k, v in STANDINS[name].sizes.items()}
    for split, counts in (sizes or {}).items():
        if split not in SPLITS:
            raise LLRError(f"{name}: sizes key {split!r} not in {list(SPLITS)}")
        counts = list(counts)
        if len(counts) != 4 or any(int(c) != c or c < 0 for c in counts):
            raise LLRError(f"{name}: sizes[{split!r}]={counts} invalid, expected 4 non-negative integers (groups 0..3)")
        out[split] = [int(c) for c in counts]
    return out


def generate_images(
    name: str,
    seed: int,
    sizes: dict | None = None,
    size: int = IMAGE_SIZE,
    core_contrast: float = CORE_CONTRAST,
    noise: float = NOISE,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Image stand-in ``name``: metadata (split, y, s), splits in the order
    train, val, test, each shuffled, ``sizes[split][g]`` rows of group
    g = 2y + s; and its images (N, 3, size, size) uint8 in row order."""
    sizes = resolve_sizes(name, sizes)
    rng = np.random.default_rng([int(seed), STANDINS[name].stream])
    g = np.concatenate([np.repeat(np.arange(4), sizes[split]) for split in SPLITS])
    split = np.concatenate([np.repeat(np.array(split, dtype=object), sum(sizes[split])) for split in SPLITS])
    meta = pd.DataFrame({"split": split, "y": g // 2, "s": g % 2})
    # Shuffle within split so that row order carries no group information.
    meta = (
        meta.sample(frac=1.0, random_state=rng.integers(2**31))
        .sort_values("split", kind="stable", key=lambda c: c.map(SPLITS.index))
        .reset_index(drop=True)
    )
    images = render(meta["y"].to_numpy(), meta["s"].to_numpy(), rng, size, core_contrast, noise)
    return meta, images


def synth_waterbirds(
    seed: int,
    sizes: dict | None = None,
    size: int = IMAGE_SIZE,
    core_contrast: float = CORE_CONTRAST,
    noise: float = NOISE,
) -> tuple[pd.DataFrame, np.ndarray]:
    """The Waterbirds stand-in (``generate_images("synth_waterbirds", ...)``)."""
    return generate_images("synth_waterbirds", seed, sizes, size, core_contrast, noise)


def synth_celeba(
    seed: int,
    sizes: dict | None = None,
    size: int = IMAGE_SIZE,
    core_contrast: float = CORE_CONTRAST,
    noise: float = NOISE,
) -> tuple[pd.DataFrame, np.ndarray]:
    """The CelebA stand-in (``generate_images("synth_celeba", ...)``)."""
    return generate_images("synth_celeba", seed, sizes, size, core_contrast, noise)


def pretrain_images(
    seed: int, n_per_group: int, size: int = IMAGE_SIZE, core_contrast: float = CORE_CONTRAST, noise: float = NOISE
) -> tuple[np.ndarray, np.ndarray]:
    """Balanced auxiliary set for the ``pretrain`` node: images and group labels."""
    rng = np.random.default_rng([int(seed), 11])
    g = np.repeat(np.arange(4), n_per_group)
    rng.shuffle(g)
    return render(g // 2, g % 2, rng, size, core_contrast, noise), g


def prepare_synthetic_images(
    spec, params: dict, out_metadata: str | os.PathLike, out_inputs: str | os.PathLike | None
) -> None:
    """``prepare`` for an image stand-in: generate it from ``params``
    (``seed``, ``sizes``, ``image_size``, ``core_contrast``, ``noise``), write
    the standardized metadata and the images ``out_inputs`` (``.npy``)."""
    from llr.data.registry import standardize
    from llr.io import atomic_path, write_csv

    if not out_inputs:
        raise LLRError(f"{spec.name}: --out-inputs is required for a synthetic dataset")
    meta, images = generate_images(
        spec.name,
        int(params.get("seed", 0)),
        params.get("sizes"),
        int(params.get("image_size", IMAGE_SIZE)),
        float(params.get("core_contrast", CORE_CONTRAST)),
        float(params.get("noise", NOISE)),
    )
    meta = standardize(meta, spec, "generator")
    with atomic_path(out_inputs) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, images)
    write_csv(out_metadata, meta)
