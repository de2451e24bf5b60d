"""The synthetic ResNet's matrix-product path for convolutions with a 1x1
output equals torch's convolution (outputs and gradients)."""

import pytest
import torch
from torch import nn

from llr.models.factory import build_model
from llr.models.resnet import SmallInputConv2d, use_small_input_convs


@pytest.mark.parametrize(
    "cin,cout,k,stride,pad,size,bias",
    [
        (64, 48, 3, 1, 1, 1, False),  # ResNet's last stage on a 1x1 map
        (32, 48, 3, 2, 1, 2, False),  # its strided first convolution on a 2x2 map
        (32, 48, 1, 2, 0, 2, True),  # the 1x1 downsample, with a bias
        (8, 4, 3, 3, 1, 3, True),  # a 3x3 map, stride 3: one window, clipped
        (8, 4, 3, 1, 0, 3, False),  # no padding: the whole kernel meets the input
        (8, 4, 3, 1, 1, 2, False),  # 2x2 output: the ordinary convolution
        (8, 4, 7, 2, 3, 5, False),  # ResNet's stem on a small input, 3x3 output
    ],
)
def test_small_input_conv_equals_conv2d(cin, cout, k, stride, pad, size, bias):
    torch.manual_seed(0)
    ref = nn.Conv2d(cin, cout, k, stride, pad, bias=bias).double()
    new = SmallInputConv2d(cin, cout, k, stride, pad, bias=bias).double()
    new.load_state_dict(ref.state_dict())
    for channels_last in (False, True):
        x1 = torch.randn(5, cin, size, size, dtype=torch.float64)
        if channels_last:
            x1 = x1.contiguous(memory_format=torch.channels_last)
        x1.requires_grad_()
        x2 = x1.detach().clone().requires_grad_()
        a, b = ref(x1), new(x2)
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)
        g = torch.randn_like(a)
        ref.zero_grad(), new.zero_grad()
        (a * g).sum().backward()
        (b * g).sum().backward()
        torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(new.weight.grad, ref.weight.grad, rtol=1e-10, atol=1e-10)
        if bias:
            torch.testing.assert_close(new.bias.grad, ref.bias.grad, rtol=1e-10, atol=1e-10)


def test_small_resnet_matches_plain_convolutions():
    """The whole resnet18-small on 24-px inputs: same embeddings and gradients
    as the same network with torch's convolutions."""
    torch.manual_seed(0)
    model = build_model("resnet18-small", 2).double()
    n_small = sum(type(m) is SmallInputConv2d for m in model.modules())
    assert n_small == 12 and not any(type(m) is nn.Conv2d for m in model.modules())
    plain = build_model("resnet18-small", 2).double()
    plain.load_state_dict(model.state_dict())
    for m in plain.modules():
        if type(m) is SmallInputConv2d:
            m.__class__ = nn.Conv2d
    x = torch.randn(6, 3, 24, 24, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    for net in (model, plain):
        net.train()
        torch.nn.functional.cross_entropy(net(x), y).backward()
    torch.testing.assert_close(model(x), plain(x), rtol=1e-9, atol=1e-9)
    for (n, p), (_, q) in zip(model.named_parameters(), plain.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-8, atol=1e-10, msg=n)
    assert use_small_input_convs(nn.Sequential(nn.Conv2d(1, 1, 1)))[0].__class__ is SmallInputConv2d


@pytest.mark.parametrize("arch,enum", [("resnet18", "ResNet18_Weights"), ("resnet50", "ResNet50_Weights")])
def test_imagenet_weights_are_v1(monkeypatch, arch, enum):
    """With ImageNet weights requested the builder asks torchvision for
    exactly ``IMAGENET1K_V1`` (the authors' milkshake), without one otherwise;
    no download: the torchvision builder is replaced by a recording stub."""
    import torchvision

    from llr.errors import LLRError
    from llr.models.resnet import imagenet_weights

    want = getattr(torchvision.models, enum).IMAGENET1K_V1
    real = getattr(torchvision.models, arch)
    asked = []

    def stub(*, weights=None):
        asked.append(weights)
        return real(weights=None)

    monkeypatch.setattr(torchvision.models, arch, stub)
    model = build_model(arch, 3, pretrained=True)
    assert len(asked) == 1 and asked[0] is want and asked[0].name == "IMAGENET1K_V1"
    assert imagenet_weights(arch) is want
    assert model.head.out_features == 3 and model.head.in_features == {"resnet18": 512, "resnet50": 2048}[arch]
    build_model(arch, 2, pretrained=False)
    assert asked[1] is None

    def offline(*, weights=None):
        raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.models, arch, offline)
    with pytest.raises(LLRError, match=f"{arch}: ImageNet weights {enum}.IMAGENET1K_V1 unavailable"):
        build_model(arch, 2, pretrained=True)


def test_resnet50_small_is_torchvision_bottleneck_resnet():
    """The rehearsal's ResNet-50 stand-in: torchvision's ResNet class with
    Bottleneck blocks, 2048-d features like ResNet-50, never ImageNet weights."""
    from torchvision.models.resnet import Bottleneck, ResNet

    from llr.errors import LLRError

    m = build_model("resnet50-small", 3)
    assert isinstance(m.backbone, ResNet) and isinstance(m.backbone.layer4[0], Bottleneck)
    assert [len(getattr(m.backbone, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    assert m.head.in_features == 2048 and m.head.out_features == 3
    assert m.embed(torch.zeros(2, 3, 32, 32)).shape == (2, 2048)
    with pytest.raises(LLRError, match="no ImageNet weights"):
        build_model("resnet50-small", 2, pretrained=True)
