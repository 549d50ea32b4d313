"""The SwAV network: a ResNet backbone, a projection head and the prototypes.

As in facebookresearch/swav ``src/resnet50.py``: the backbone's pooled features go through
``Linear → BatchNorm1d → ReLU → Linear`` to ``feat_dim``, are L2-normalised, and the
prototypes are a ``Linear(feat_dim, K, bias=False)`` whose rows the trainer re-normalises
before every step. Crops of one resolution share one backbone pass (multi-crop forward).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# He et al.'s CIFAR ResNets (6n+2 layers, three stages of widths w, 2w, 4w) for tiny images.
SMALL_ARCHS = {"resnet8": 1, "resnet14": 2, "resnet20": 3}


def torchvision_archs() -> list[str]:
    """Names of torchvision's ResNet family (``resnet18``, ``resnet50``, ``wide_resnet50_2``, ...)."""
    import torchvision

    return sorted(name for name in torchvision.models.list_models(module=torchvision.models) if "resn" in name)


def arch_names() -> list[str]:
    """Every accepted ``--arch``."""
    return sorted(SMALL_ARCHS) + torchvision_archs()


class SmallResNet(nn.Module):
    """CIFAR-style ResNet-(6n+2) built from torchvision's ``BasicBlock``: a 3×3 stem at full
    resolution, three stages of ``n`` blocks (widths w, 2w, 4w; strides 1, 2, 2), global
    average pooling. Input ``(N, 3, H, W)`` float; output ``(N, 4w)``."""

    def __init__(self, blocks_per_stage: int, width: int) -> None:
        super().__init__()
        from torchvision.models.resnet import BasicBlock

        self.stem = nn.Sequential(
            nn.Conv2d(3, width, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        stages, in_planes = [], width
        for stage, planes in enumerate((width, 2 * width, 4 * width)):
            stride = 1 if stage == 0 else 2
            for block in range(blocks_per_stage):
                downsample = None
                if block == 0 and (stride != 1 or in_planes != planes):
                    downsample = nn.Sequential(
                        nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
                    )
                stages.append(BasicBlock(in_planes, planes, stride if block == 0 else 1, downsample))
                in_planes = planes
        self.stages = nn.Sequential(*stages)
        self.out_features = in_planes
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def build_backbone(arch: str, small_stem: bool = False, width: int = 32) -> tuple[nn.Module, int]:
    """The backbone for ``arch`` at random initialisation and its feature width.

    Args:
        arch: a name from :func:`arch_names`.
        small_stem: for torchvision ResNets, replace the 7×7/2 stem and max-pool by a 3×3/1
            convolution (CIFAR-style), for images of a few dozen pixels.
        width: first-stage width of the small ResNets (``resnet8`` ...).

    Returns:
        ``(module mapping (N, 3, H, W) → (N, F), F)``.
    """
    if arch in SMALL_ARCHS:
        backbone = SmallResNet(SMALL_ARCHS[arch], width)
        return backbone, backbone.out_features
    import torchvision

    if arch not in torchvision_archs():
        raise ValueError(f"arch must be one of {arch_names()}, got {arch!r}")
    backbone = torchvision.models.get_model(arch, weights=None)
    if small_stem:
        backbone.conv1 = nn.Conv2d(3, backbone.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(backbone.conv1.weight, mode="fan_out", nonlinearity="relu")
        backbone.maxpool = nn.Identity()
    features = backbone.fc.in_features
    backbone.fc = nn.Identity()
    return backbone, features


class SwAVModel(nn.Module):
    """Backbone + projection head + prototypes.

    ``forward(crops)`` takes a list of V image batches ``(B, 3, s_v, s_v)`` (crops of one
    size consecutive, as multi-crop delivers them) and returns the L2-normalised embeddings
    ``(V·B, feat_dim)``, crop-major. The scores are ``embeddings @ prototypes.weight.T``;
    the loss computes them (the fused kernels never materialise them).
    """

    def __init__(
        self,
        arch: str,
        feat_dim: int = 128,
        hidden_mlp: int = 2048,
        nmb_prototypes: int = 3000,
        small_stem: bool = False,
        width: int = 32,
    ) -> None:
        super().__init__()
        self.backbone, self.num_features = build_backbone(arch, small_stem, width)
        if hidden_mlp > 0:
            self.projection_head = nn.Sequential(
                nn.Linear(self.num_features, hidden_mlp),
                nn.BatchNorm1d(hidden_mlp),
                nn.ReLU(inplace=True),
                nn.Linear(hidden_mlp, feat_dim),
            )
        else:
            self.projection_head = nn.Linear(self.num_features, feat_dim)
        self.prototypes = nn.Linear(feat_dim, nmb_prototypes, bias=False)

    def features(self, crops: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``(V·B, F)``: one backbone pass per run of equal crop sizes."""
        if isinstance(crops, torch.Tensor):
            return self.backbone(crops)
        outputs, start = [], 0
        while start < len(crops):
            end = start
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            outputs.append(self.backbone(torch.cat(list(crops[start:end]))))
            start = end
        return torch.cat(outputs)

    def forward(self, crops: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        embeddings = self.projection_head(self.features(crops))
        return F.normalize(embeddings.float(), dim=1, p=2)

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Project every prototype back onto the unit sphere (done before each step)."""
        weight = self.prototypes.weight
        weight.copy_(F.normalize(weight, dim=1, p=2))
