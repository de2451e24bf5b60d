"""ERM throughput: samples per second of an ERM epoch through the real input
pipeline (indexing, batched augmentation, loader) versus the ceiling of the
same model and optimizer fed from tensors already in memory, for both
synthetic benchmarks; on CPU, and on a GPU when one is available.

    python benchmarks/erm_throughput.py [--n 1024] [--threads 1] [--device cpu cuda]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from llr.models.factory import build_model
from llr.train.balancing import balance
from llr.train.erm import TrainConfig, _to, make_optimizer, train


def make(name: str, n: int):
    """(inputs, labels, model kwargs, n_classes) of a synthetic benchmark."""
    if name == "synth_waterbirds":
        from llr.data.inputs import ImageInputs
        from llr.data.synthetic_images import pretrain_images

        images, g = pretrain_images(0, n // 4, size=24)
        return ImageInputs(images), g // 2, {}, 2, "resnet18-small"
    from llr.data.registry import get_spec
    from llr.data.synthetic_text_tokens import pretrain_inputs

    inputs, g, kw = pretrain_inputs(get_spec("synth_multinli"), {}, 0, n // 6)
    return inputs, g // 2, kw, 3, "bert-tiny-synth"


def ceiling(model, inputs, y, cfg: TrainConfig, device, steps: int) -> float:
    """Samples/s of forward+backward+step on batches prepared in advance."""
    bs = cfg.batch_size
    batches = [
        (
            _to(inputs.batch(np.arange(i * bs, (i + 1) * bs) % inputs.n, False), device),
            torch.as_tensor(y[np.arange(i * bs, (i + 1) * bs) % len(y)]).to(device),
        )
        for i in range(steps)
    ]
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    model.train()

    def run(k):
        for x, yb in batches[:k]:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = F.cross_entropy(model(x).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    run(3)
    t = time.perf_counter()
    run(steps)
    return steps * bs / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024, help="examples per epoch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    ap.add_argument("--workers", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"{'benchmark':18s} {'device':6s} {'pipeline/s':>11s} {'ceiling/s':>10s} {'ratio':>6s}")
    for name in ("synth_waterbirds", "synth_multinli"):
        inputs, y, kw, k, arch = make(name, a.n)
        for dev in a.device:
            device = torch.device(dev)
            cfg = TrainConfig(epochs=1, lr=1e-4, device=dev, num_workers=a.workers)
            torch.manual_seed(0)
            model = build_model(arch, k, **kw).to(device)
            pool = np.arange(len(y))
            train(
                model, inputs, y, y, pool[:128], balance(y[:128], "none", None), cfg, seed=0, n_groups=k, progress=False
            )  # warm-up
            t = time.perf_counter()
            train(model, inputs, y, y, pool, balance(y, "none", None), cfg, seed=0, n_groups=k, progress=False)
            pipe = len(pool) / (time.perf_counter() - t)
            ceil = ceiling(model, inputs, y, cfg, device, steps=max(8, len(pool) // cfg.batch_size // 2))
            print(f"{name:18s} {dev:6s} {pipe:11.0f} {ceil:10.0f} {pipe / ceil:6.2f}", flush=True)


if __name__ == "__main__":
    main()
