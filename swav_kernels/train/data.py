"""Data: multi-crop augmentation (SwAV paper) and the two image sources.

Multi-crop follows facebookresearch/swav ``src/multicropdataset.py``: for each resolution
``i``, ``nmb_crops[i]`` crops by ``RandomResizedCrop(size_crops[i], scale=(min_scale[i],
max_scale[i]))``, horizontal flip, colour jitter (0.8, 0.8, 0.8, 0.2)·s with p = 0.8, grayscale
with p = 0.2, Gaussian blur (σ ∈ [0.1, 2]) with p = 0.5, then ImageNet normalisation (the
paper: jitter strength s = 1, blur probability 0.5; both are options). All from torchvision
transforms v2 (random draws from torch's generator, so seeding torch makes a run reproducible).

Sources: any ``ImageFolder`` directory, or the built-in default, scikit-learn's 8×8 digits
(1,797 images shipped inside scikit-learn, no download) upsampled to a few dozen pixels,
split into a training part (pre-training and the evaluation's labelled side) and a held-out
test part.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

# facebookresearch/swav's normalisation (its std is 0.228 for red, not torchvision's 0.229)
MEAN = (0.485, 0.456, 0.406)
STD = (0.228, 0.224, 0.225)
BLUR_KERNEL = 23  # facebookresearch/swav blurs with a 23×23 kernel at every crop size


def blur_kernel_size(size: int) -> int:
    """The paper's 23×23 blur kernel, shrunk to the largest odd size the crop can reflect-pad."""
    return max(1, min(BLUR_KERNEL, 2 * (size // 2) - 1))


def crop_transform(size: int, min_scale: float, max_scale: float, jitter_strength: float = 1.0, blur_prob: float = 0.5):
    """One SwAV crop: image (PIL, or ``(3, H, W)`` uint8/float tensor) → ``(3, size, size)`` float32.

    ``jitter_strength`` s scales the colour jitter to ``(0.8s, 0.8s, 0.8s, 0.2s)`` (the paper: s = 1);
    ``blur_prob`` is the chance of the Gaussian blur (the paper: 0.5).
    """
    from torchvision.transforms import v2

    s = jitter_strength
    colour = v2.Compose(
        [
            v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
            v2.RandomGrayscale(p=0.2),
        ]
    )
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(size, scale=(min_scale, max_scale), antialias=True),
            v2.RandomHorizontalFlip(p=0.5),
            colour,
            v2.RandomApply([v2.GaussianBlur(blur_kernel_size(size), sigma=(0.1, 2.0))], p=blur_prob),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )


def eval_transform(size: int, resize_ratio: float = 1.0):
    """Deterministic view for feature extraction: resize the short side to
    ``round(size * resize_ratio)``, centre-crop ``size`` (ImageNet's 256/224 is ratio 8/7)."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(round(size * resize_ratio), antialias=True),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )


class MultiCrop:
    """Image → list of ``sum(nmb_crops)`` augmented crops, large resolutions first."""

    def __init__(
        self,
        size_crops: Sequence[int],
        nmb_crops: Sequence[int],
        min_scale_crops: Sequence[float],
        max_scale_crops: Sequence[float],
        jitter_strength: float = 1.0,
        blur_prob: float = 0.5,
    ) -> None:
        lengths = {len(size_crops), len(nmb_crops), len(min_scale_crops), len(max_scale_crops)}
        if len(lengths) != 1:
            raise ValueError(
                "size_crops, nmb_crops, min_scale_crops and max_scale_crops need one entry per resolution, got "
                f"{list(size_crops)}, {list(nmb_crops)}, {list(min_scale_crops)}, {list(max_scale_crops)}"
            )
        self.transforms = []
        for size, count, low, high in zip(size_crops, nmb_crops, min_scale_crops, max_scale_crops):
            self.transforms.extend([crop_transform(size, low, high, jitter_strength, blur_prob)] * count)

    def __call__(self, image) -> list[torch.Tensor]:
        return [transform(image) for transform in self.transforms]


class TensorImages(Dataset):
    """Images held as one ``(N, 3, H, W)`` float tensor in [0, 1] with integer labels;
    item ``i`` is ``(transform(image_i), label_i)``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int):
        image = self.images[index]
        return (image if self.transform is None else self.transform(image)), int(self.labels[index])


def digits(size: int, split: str, test_fraction: float = 0.25, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8×8 digits, bilinearly upsampled to ``size``×``size``, grey in 3 channels.

    Args:
        split: ``"train"`` or ``"test"``: a stratified split (``test_fraction`` held out,
            fixed by ``seed``), the same for every run.

    Returns:
        ``images (N, 3, size, size)`` float32 in [0, 1] and ``labels (N,)`` int64.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    data = load_digits()
    train_index, test_index = train_test_split(
        range(len(data.target)), test_size=test_fraction, stratify=data.target, random_state=seed
    )
    index = train_index if split == "train" else test_index
    images = torch.tensor(data.images[index], dtype=torch.float32).unsqueeze(1) / 16.0  # pixel values 0..16
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    return images.expand(-1, 3, -1, -1).contiguous(), torch.tensor(data.target[index], dtype=torch.long)


def pretrain_dataset(data: str | None, multi_crop: MultiCrop, digits_size: int, size_dataset: int = -1) -> Dataset:
    """Items ``(list of crops, label)``: ImageFolder at ``data``, or the digits' training part."""
    if data is None:
        images, labels = digits(digits_size, "train")
        dataset = TensorImages(images, labels, multi_crop)
    else:
        from torchvision.datasets import ImageFolder

        dataset = ImageFolder(data, transform=multi_crop)
    if size_dataset >= 0:
        dataset = Subset(dataset, range(min(size_dataset, len(dataset))))
    return dataset


def eval_datasets(
    data: str | None, size: int, digits_size: int, max_images: int, seed: int
) -> tuple[Dataset, Dataset]:
    """Labelled ``(train, test)`` sets for the frozen-feature evaluation, items ``(image, label)``.

    Digits: the fixed training part against the held-out test part, each image resized to
    ``size``. ImageFolder: at most ``max_images`` images (drawn with ``seed``), split 75/25
    stratified, resized and centre-cropped as in ImageNet evaluation.
    """
    if data is None:
        transform = eval_transform(size)
        train = TensorImages(*digits(digits_size, "train"), transform=transform)
        test = TensorImages(*digits(digits_size, "test"), transform=transform)
        return train, test
    from sklearn.model_selection import train_test_split
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(data, transform=eval_transform(size, 8 / 7))
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(folder), generator=generator)[:max_images].tolist()
    labels = [folder.targets[i] for i in chosen]
    counts = torch.bincount(torch.tensor(labels))
    stratify = labels if counts[counts > 0].min() >= 2 else None
    train_index, test_index = train_test_split(chosen, test_size=0.25, stratify=stratify, random_state=seed)
    return Subset(folder, train_index), Subset(folder, test_index)
