"""The dense SwAV network: output contract, prototypes, torchvision export and checkpoint reload."""
from __future__ import annotations

import torch
import torchvision

from shared.nets.semantic_fpn import (MEAN, STD, DenseSwAVNet, backbone_state_dict_torchvision,
                                      load_backbone_weights, load_pretrained, normalize_images)


def test_forward_shape_and_unit_norm():
    torch.manual_seed(0)
    net = DenseSwAVNet("resnet18", num_prototypes=10).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        z = net(x)
    assert z.shape == (2, 128, 16, 24)
    assert torch.allclose(z.norm(dim=1), torch.ones(2, 16, 24), atol=1e-5)
    assert net.prototypes.weight.shape == (10, 128)
    assert torch.allclose(net.prototypes.weight.norm(dim=1), torch.ones(10), atol=1e-6)


def test_prototypes_renormalised():
    net = DenseSwAVNet("resnet18", num_prototypes=7)
    with torch.no_grad():
        net.prototypes.weight.mul_(torch.arange(1, 8).float()[:, None])
    net.normalize_prototypes()
    assert torch.allclose(net.prototypes.weight.norm(dim=1), torch.ones(7), atol=1e-6)


def test_normalize_images_layouts():
    img = torch.randint(0, 256, (2, 5, 6, 3), dtype=torch.uint8)
    a = normalize_images(img)
    b = normalize_images(img.permute(0, 3, 1, 2))
    assert a.shape == (2, 3, 5, 6) and a.dtype == torch.float32
    assert torch.equal(a, b)
    # pixel (0,0,0) red channel by hand
    expect = (img[0, 0, 0, 0].item() / 255.0 - MEAN[0]) / STD[0]
    assert abs(a[0, 0, 0, 0].item() - expect) < 1e-6


def test_backbone_export_loads_into_torchvision_resnet50(tmp_path):
    net = DenseSwAVNet("resnet50", num_prototypes=10)
    sd = backbone_state_dict_torchvision(net)
    ref = torchvision.models.resnet50(weights=None)
    result = ref.load_state_dict(sd, strict=False)
    assert result.unexpected_keys == []
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
    assert torch.equal(ref.layer4[2].conv3.weight, net.backbone.layer4[2].conv3.weight)
    # and back: --init-weights takes a torchvision file
    path = tmp_path / "r50.pth"
    torch.save(ref.state_dict(), path)
    net2 = DenseSwAVNet("resnet50", num_prototypes=10)
    load_backbone_weights(net2, path)
    assert torch.equal(net2.backbone.conv1.weight, ref.conv1.weight)


def test_load_pretrained_roundtrip(tmp_path):
    torch.manual_seed(1)
    net = DenseSwAVNet("resnet18", num_prototypes=12)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": net.state_dict(), "net_args": net.net_args, "config": {"backbone": "resnet18"}}, path)
    net2, cfg = load_pretrained(path)
    assert cfg == {"backbone": "resnet18"}
    x = torch.randn(1, 3, 32, 32)
    net.eval()
    with torch.no_grad():
        assert torch.allclose(net(x), net2(x))


def test_output_is_fp32_unit_norm_under_bf16_autocast():
    torch.manual_seed(0)
    net = DenseSwAVNet("resnet18", num_prototypes=5).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        z = net(torch.randn(1, 3, 64, 64))
    assert z.dtype == torch.float32
    assert torch.allclose(z.norm(dim=1), torch.ones(1, 16, 16), atol=1e-5)
