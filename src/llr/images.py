"""Embedded synthetic image benchmark (a Waterbirds stand-in, DESIGN section 5)
and the image input pipeline shared with the real image datasets.

An image is a core shape (class y: 0 "landbird" = a disk, 1 "waterbird" =
a plus sign) drawn with low contrast on a spurious background (s: 0 "land" =
green-brown blotches, 1 "water" = blue horizontal waves), plus pixel noise.
The background is easy to see, the shape is not: ``core_contrast`` sets how
far the shape's colour departs from the background's. Everything is a
deterministic function of the seed; generation is vectorized over images.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from llr.data import SPLITS

# Calibrated with benchmarks/calibrate_synthetic.py (README, "The embedded
# default"); kept at 0.3 when the ERM schedule was shortened for time.
CORE_CONTRAST = 0.3

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Waterbirds-like composition: strongly imbalanced train (minority groups
# about 6% of landbirds and 17% of waterbirds), val/test balanced within class.
DEFAULT_SIZES = {
    "train": [1020, 60, 60, 300],
    "val": [60, 60, 60, 60],
    "test": [100, 100, 100, 100],
}


def render(y: np.ndarray, s: np.ndarray, rng: np.random.Generator, size: int = 24,
           core_contrast: float = CORE_CONTRAST, noise: float = 0.08) -> np.ndarray:
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
        2 * np.pi * f[:, 1:, None] * yy + ph[:, 1:, None])
    waves = np.sin(2 * np.pi * (2 * f[:, :1, None]) * yy + ph[:, :1, None] + 0.6 * np.sin(6 * xx))
    tex = np.where(s[:, None, None] == 1, waves, blotch)  # (N, S, S)
    img = base[:, :, None, None] * (1.0 + 0.25 * tex[:, None])
    # Core shape at a random position and scale.
    cx = rng.uniform(0.3, 0.7, n)[:, None, None]
    cy = rng.uniform(0.3, 0.7, n)[:, None, None]
    r = rng.uniform(0.16, 0.26, n)[:, None, None]
    dx, dy = xx - cx, yy - cy
    disk = dx ** 2 + dy ** 2 <= r ** 2
    w = r / 3.0
    plus = ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    mask = np.where(y[:, None, None] == 1, plus, disk)
    shape_colour = np.clip(base + core_contrast * rng.choice([-1.0, 1.0], (n, 1)), 0, 1)
    img = np.where(mask[:, None], shape_colour[:, :, None, None], img)
    img = img + rng.normal(0, noise, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def synth_waterbirds(seed: int, sizes: dict | None = None, size: int = 24,
                     core_contrast: float = CORE_CONTRAST, noise: float = 0.08) -> tuple[pd.DataFrame, np.ndarray]:
    """The benchmark: metadata (split, y, s) and images, group counts per split
    from ``sizes`` (lists of 4 counts in group order g = 2y + s)."""
    sizes = sizes or DEFAULT_SIZES
    rng = np.random.default_rng([int(seed), 7])
    rows = []
    for split in SPLITS:
        for g, count in enumerate(sizes[split]):
            rows.append(pd.DataFrame({"split": split, "y": g // 2, "s": g % 2}, index=range(int(count))))
    meta = pd.concat(rows, ignore_index=True)
    # Shuffle within split so that idx order carries no group information.
    meta = meta.sample(frac=1.0, random_state=rng.integers(2**31)).sort_values("split", kind="stable",
                                                                                   key=lambda c: c.map(SPLITS.index))
    meta = meta.reset_index(drop=True)
    images = render(meta["y"].to_numpy(), meta["s"].to_numpy(), rng, size, core_contrast, noise)
    return meta, images


def pretrain_images(seed: int, n_per_group: int, size: int = 24, core_contrast: float = CORE_CONTRAST,
                    noise: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    """Balanced auxiliary set for the ``pretrain`` node: images and group labels."""
    rng = np.random.default_rng([int(seed), 11])
    g = np.repeat(np.arange(4), n_per_group)
    rng.shuffle(g)
    return render(g // 2, g % 2, rng, size, core_contrast, noise), g


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
        import torch
        import torch.nn.functional as F

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
            x = x[..., top:top + self.crop, left:left + self.crop]
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x - mean) / std
