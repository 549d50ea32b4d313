"""swav-train's network: backbones, head, normalised embeddings, prototypes, multi-crop forward."""
import pytest
import torch
from torch import nn

pytest.importorskip("torchvision", reason="swav-train needs torchvision (pip install '.[train]')")

from swav_kernels.train.model import SwAVModel, arch_names, build_backbone  # noqa: E402


def test_arch_names_cover_small_and_torchvision_resnets():
    names = arch_names()
    assert {"resnet8", "resnet20", "resnet18", "resnet50", "wide_resnet50_2"} <= set(names)


@pytest.mark.parametrize("arch, width, expected", [("resnet8", 8, 32), ("resnet14", 4, 16)])
def test_small_resnet_shapes(arch, width, expected):
    backbone, features = build_backbone(arch, width=width)
    assert features == expected
    assert backbone(torch.randn(3, 3, 9, 9)).shape == (3, expected)  # odd sizes pool fine
    blocks = sum(1 for m in backbone.modules() if type(m).__name__ == "BasicBlock")
    assert blocks == {"resnet8": 3, "resnet14": 6}[arch]


def test_torchvision_backbone_with_small_stem_keeps_resolution():
    plain, features = build_backbone("resnet18")
    small, _ = build_backbone("resnet18", small_stem=True)
    assert features == 512 and isinstance(plain.fc, nn.Identity)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1) and isinstance(small.maxpool, nn.Identity)
    x = torch.randn(2, 3, 16, 16)
    # stem output: 16x16 with the small stem, 4x4 with the ImageNet stem (stride 2 + max-pool)
    assert small.maxpool(small.relu(small.bn1(small.conv1(x)))).shape[-1] == 16
    assert plain.maxpool(plain.relu(plain.bn1(plain.conv1(x)))).shape[-1] == 4
    assert small(x).shape == (2, 512)


def test_unknown_arch_raises():
    with pytest.raises(ValueError, match="arch must be one of"):
        build_backbone("vgg16")


def test_head_is_linear_bn_relu_linear_and_embeddings_are_unit_norm():
    model = SwAVModel("resnet8", feat_dim=12, hidden_mlp=20, nmb_prototypes=7, width=4)
    head = model.projection_head
    assert [type(m) for m in head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (head[0].in_features, head[0].out_features, head[3].out_features) == (16, 20, 12)
    assert model.prototypes.weight.shape == (7, 12) and model.prototypes.bias is None
    crops = [torch.randn(5, 3, 12, 12), torch.randn(5, 3, 12, 12), torch.randn(5, 3, 6, 6)]
    z = model(crops)
    assert z.shape == (15, 12) and z.dtype == torch.float32
    torch.testing.assert_close(z.norm(dim=1), torch.ones(15))


def test_hidden_mlp_zero_is_one_linear():
    model = SwAVModel("resnet8", feat_dim=6, hidden_mlp=0, nmb_prototypes=3, width=4)
    assert isinstance(model.projection_head, nn.Linear) and model.projection_head.out_features == 6


def test_multi_crop_forward_groups_resolutions_and_stays_crop_major():
    """Equal-size crops share one backbone pass; in eval mode that equals one pass per crop."""
    torch.manual_seed(0)
    model = SwAVModel("resnet8", feat_dim=8, hidden_mlp=16, nmb_prototypes=5, width=4).eval()
    crops = [torch.randn(3, 3, 10, 10) for _ in range(2)] + [torch.randn(3, 3, 6, 6) for _ in range(3)]
    calls = []
    model.backbone.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape))
    together = model(crops)
    assert calls == [(6, 3, 10, 10), (9, 3, 6, 6)]
    one_by_one = torch.cat([model(crop) for crop in crops])
    torch.testing.assert_close(together, one_by_one, rtol=1e-5, atol=1e-6)


def test_normalize_prototypes_projects_rows_to_the_unit_sphere():
    model = SwAVModel("resnet8", feat_dim=8, hidden_mlp=0, nmb_prototypes=5, width=4)
    with torch.no_grad():
        model.prototypes.weight.mul_(torch.arange(1.0, 6.0).unsqueeze(1))
    direction = nn.functional.normalize(model.prototypes.weight.detach().clone(), dim=1)
    model.normalize_prototypes()
    torch.testing.assert_close(model.prototypes.weight.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(model.prototypes.weight.detach(), direction)
