"""Speed of last-layer retraining on cached embeddings versus through the
frozen backbone (docs/design.md, "Deviations": LLR input). A script, not a test: prints numbers.

(a) the LLR fit on cached embeddings with ``llr.lastlayer.fit.fit_softmax``
    (NumPy; ``--device cuda`` for torch on a GPU);
(b) the same fit (same data, epochs, batch 32, SGD lr 1e-2) as the authors ran
    it: every step forwards the image batch through the frozen eval-mode
    backbone (``llr.models.factory.build_model``), then trains only the head with
    ``torch.optim.SGD`` (``--augment`` adds their RandomResizedCrop + flip);
(c) AFR's grid: fits per second with ``fit_softmax_batched`` (one tensor
    program for the whole gamma x lambda grid) versus one fit at a time.

Usage: python benchmarks/lastlayer_speed.py [--n 600] [--epochs 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=600, help="held-out images (default 600)")
    ap.add_argument("--size", type=int, default=32, help="image side (default 32)")
    ap.add_argument("--epochs", type=int, default=10, help="LLR epochs for (a) and (b)")
    ap.add_argument("--arch", default="resnet18-small")
    ap.add_argument("--grid", type=int, default=132, help="AFR grid size (Waterbirds: 33 x 4)")
    ap.add_argument("--afr-epochs", type=int, default=100, help="AFR epochs for (c) (AFR uses 500)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for numpy and torch")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda for (a), (b) and (c) on a GPU")
    ap.add_argument("--augment", action="store_true", help="(b) with train-time augmentation")
    args = ap.parse_args()

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy/torch are imported
    import numpy as np
    import torch

    from llr.lastlayer.fit import fit_softmax, fit_softmax_batched
    from llr.models.factory import build_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    n, epochs, bs = args.n, args.epochs, 32

    # ---- images: the synthetic Waterbirds-like generator when available
    rng = np.random.default_rng(0)
    g = rng.integers(0, 4, size=n)
    y = g // 2
    try:
        from llr.data.inputs import ImageInputs
        from llr.data.synthetic_images import render

        inputs = ImageInputs(render(y, g % 2, rng, size=args.size))
        source = f"llr.data.synthetic_images synthetic Waterbirds-like images, {args.size}x{args.size}"
        batch = lambda idx, train: inputs.batch(idx, train=train)  # noqa: E731
    except ImportError:
        imgs = torch.randn(n, 3, args.size, args.size)
        source = f"random tensors (llr.data.synthetic_images unavailable), {args.size}x{args.size}"
        batch = lambda idx, train: imgs[torch.as_tensor(idx)]  # noqa: E731

    model = build_model(args.arch, 2).to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)

    # ---- one-time feature pass (what the features node does once per ERM cell)
    t0 = time.perf_counter()
    with torch.no_grad():
        emb = torch.cat(
            [model.embed(batch(np.arange(s, min(s + 256, n)), False).to(dev)).float().cpu() for s in range(0, n, 256)]
        )
    t_embed = time.perf_counter() - t0
    E = emb.numpy().astype(np.float16)  # as cached on disk
    d = E.shape[1]

    # ---- (a) cached embeddings
    fit_softmax(E[:64], y[:64], n_classes=2, epochs=1, device=args.device)  # warm-up
    t0 = time.perf_counter()
    res = fit_softmax(E, y, n_classes=2, epochs=epochs, batch_size=bs, lr=1e-2, seed=0, device=args.device)
    t_a = time.perf_counter() - t0

    # ---- (b) through the frozen backbone, as the authors ran LLR
    head = torch.nn.Linear(d, 2).to(dev)
    opt = torch.optim.SGD(head.parameters(), lr=1e-2, momentum=0.0, weight_decay=0.0)
    order_rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = order_rng.permutation(n)
        for s in range(0, n, bs):
            idx = np.sort(order[s : s + bs])
            x = batch(idx, args.augment).to(dev, non_blocking=True)
            with torch.no_grad():
                z = model.embed(x)
            loss = torch.nn.functional.cross_entropy(head(z), torch.as_tensor(y[idx], device=dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t_b = time.perf_counter() - t0

    # ---- (c) AFR grid, batched versus one at a time
    F = args.grid
    lw = rng.uniform(0.1, 2.0, size=(F, n))
    lw /= lw.mean(axis=1, keepdims=True)
    lam = np.resize([0.0, 0.1, 0.2, 0.3], F)
    kw = dict(
        n_classes=2,
        epochs=args.afr_epochs,
        lr=1e-2,
        max_grad_norm=1.0,
        init=(res.W, res.b),
        anchor=(res.W, res.b),
        seed=0,
        device=args.device,
    )
    t0 = time.perf_counter()
    fit_softmax_batched(E, y, loss_weights=lw, anchor_lambda=lam, **kw)
    t_grid = time.perf_counter() - t0
    k = min(F, 8)
    t0 = time.perf_counter()
    for f in range(k):
        fit_softmax(E, y, batch_size=None, loss_weights=lw[f], anchor_lambda=lam[f], **kw)
    t_single = (time.perf_counter() - t0) / k

    steps = epochs * -(-n // bs)
    print(f"device: {args.device}; threads: {args.threads}; images: {source}")
    print(f"backbone: {args.arch} (d={d}), frozen, eval mode; augmentation in (b): {args.augment}")
    print(f"LLR fit: n={n}, epochs={epochs}, batch {bs} ({steps} SGD steps), lr 1e-2")
    print(f"  one-time feature pass over the {n} images: {t_embed:8.3f} s")
    print(f"  (a) cached embeddings, fit_softmax:          {t_a:8.3f} s  ({1e6 * t_a / steps:.0f} us/step)")
    print(f"  (b) through the frozen backbone:             {t_b:8.3f} s  ({1e3 * t_b / steps:.2f} ms/step)")
    print(f"  speed-up (b)/(a): {t_b / t_a:8.1f}x   (b)/((a)+feature pass): {t_b / (t_a + t_embed):.1f}x")
    print(f"AFR grid: {F} fits, full batch, {args.afr_epochs} epochs, n={n}, d={d}")
    print(f"  batched (fit_softmax_batched): {t_grid:8.3f} s = {F / t_grid:8.1f} fits/s")
    print(f"  one fit at a time:             {t_single * F:8.3f} s = {1 / t_single:8.1f} fits/s (from {k} fits)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
