"""ResNet classifiers (paper Appendix B.2): torchvision ResNets (``resnet18``,
``resnet50``, and ``resnet18-small``/``resnet50-small`` for the synthetic
benchmark and CPU rehearsals: one block per stage, convolutions with a 1x1
output as matrix products) under the ``Classifier`` interface.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from llr.errors import LLRError
from llr.models.classifier import Classifier

# torchvision weights of the ImageNet-pretrained ResNets: IMAGENET1K_V1 for
# both, as the authors' milkshake (models/resnet.py) asks for; V2 (resnet50's
# newer recipe, 80.9% vs 76.1% top-1) would change the starting features.
IMAGENET_WEIGHTS = {"resnet18": "IMAGENET1K_V1", "resnet50": "IMAGENET1K_V1"}
_WEIGHTS_ENUMS = {"resnet18": "ResNet18_Weights", "resnet50": "ResNet50_Weights"}


def imagenet_weights(arch: str):
    """The torchvision weights enum member for ``arch``: ResNets pretrained on
    ImageNet-1K (paper appendix B.2), ``IMAGENET1K_V1`` as milkshake."""
    import torchvision

    if arch not in IMAGENET_WEIGHTS:
        raise LLRError(f"{arch}: no ImageNet weights; expected one of {sorted(IMAGENET_WEIGHTS)}")
    return getattr(getattr(torchvision.models, _WEIGHTS_ENUMS[arch]), IMAGENET_WEIGHTS[arch])


class SmallInputConv2d(nn.Conv2d):
    """``nn.Conv2d`` that computes a convolution with a 1x1 output as the
    equivalent matrix product.

    With small inputs (the synthetic 24-px images) ResNet's last stage sees
    1x1 and 2x2 feature maps; each output then depends on one window, so the
    convolution is ``x[:, :, :a, :b].flatten(1) @ W[:, :, p:p+a, p:p+b].flatten(1).T``
    (the kernel taps that meet the input; the others only meet zero padding).
    Same parameters, same outputs and gradients up to float rounding
    (tests/test_models.py); oneDNN's CPU kernels are slow for such shapes
    (the 512x512 3x3 convolution on a 1x1 map is half of a training step).
    Any other shape takes the ordinary convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if (
            self.groups == 1
            and self.dilation == (1, 1)
            and self.padding_mode == "zeros"
            and ph < kh
            and pw < kw
            and (h + 2 * ph - kh) // sh == 0
            and (w + 2 * pw - kw) // sw == 0
        ):
            i1, j1 = min(kh, ph + h), min(kw, pw + w)
            weight = self.weight[:, :, ph:i1, pw:j1].reshape(self.out_channels, -1)
            flat = x[:, :, : i1 - ph, : j1 - pw].reshape(x.shape[0], -1)
            return F.linear(flat, weight, self.bias).view(x.shape[0], self.out_channels, 1, 1)
        return super().forward(x)


def use_small_input_convs(net: nn.Module) -> nn.Module:
    """Switch every plain ``nn.Conv2d`` of ``net`` to ``SmallInputConv2d`` in
    place (no new parameters; state dicts are unchanged)."""
    for m in net.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = SmallInputConv2d
    return net


def build_resnet(arch: str, n_classes: int, pretrained: bool = False) -> Classifier:
    """torchvision ResNet; ``resnet18-small`` is torchvision's ResNet class with
    one BasicBlock per stage, the synthetic benchmark's small configuration;
    ``resnet50-small`` the same class with one Bottleneck block per stage at a
    quarter of the inner width (2048-d features like ResNet-50, 3.5M
    parameters instead of 23.5M), for CPU rehearsals of the paper grid. The
    small configurations never load ImageNet weights."""
    import torchvision
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

    if arch in ("resnet18-small", "resnet50-small") and pretrained:
        raise LLRError(f"{arch}: a small configuration has no ImageNet weights; set imagenet: false")
    if arch == "resnet18-small":
        net = use_small_input_convs(ResNet(BasicBlock, [1, 1, 1, 1]))
    elif arch == "resnet50-small":
        net = use_small_input_convs(ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=16))
    elif arch in ("resnet18", "resnet50"):
        if pretrained:
            weights = imagenet_weights(arch)
            try:
                net = getattr(torchvision.models, arch)(weights=weights)
            except Exception as e:  # offline without cached weights
                hub = Path(torch.hub.get_dir()) / "checkpoints"
                raise LLRError(
                    f"{arch}: ImageNet weights {_WEIGHTS_ENUMS[arch]}.{weights.name} unavailable "
                    f"({type(e).__name__}); put the torchvision checkpoint in {hub} (or set TORCH_HOME), "
                    f"or set imagenet: false in the ERM settings"
                ) from None
        else:
            net = getattr(torchvision.models, arch)(weights=None)
    else:
        raise LLRError(
            f"unknown image architecture {arch!r}; expected resnet18, resnet50, resnet18-small or resnet50-small"
        )
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return Classifier(net, dim, n_classes)
