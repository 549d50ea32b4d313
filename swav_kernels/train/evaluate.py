"""Frozen-feature evaluation: k-NN and linear-probe accuracy of the backbone's pooled features.

The backbone (projection head and prototypes left out, as in SwAV's linear evaluation) maps
the labelled training images and the held-out test images to features; scikit-learn then
fits a cosine k-NN classifier and a logistic-regression probe (on standardised features)
on the training side and scores the test side. The same is done for the network at its
random initialisation, the baseline the trained features must beat.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


@dataclass
class Accuracy:
    knn: float
    linear: float


@torch.no_grad()
def extract_features(
    backbone: torch.nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 256, workers: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(features (N, F) float32, labels (N,) int64)`` of every item ``(image, label)``, in eval mode."""
    was_training = backbone.training
    backbone.eval()
    features, labels = [], []
    for images, targets in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        features.append(backbone(images.to(device)).float().cpu())
        labels.append(targets)
    backbone.train(was_training)
    return torch.cat(features).numpy(), torch.cat(labels).numpy()


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, k: int) -> float:
    """Share of test points whose ``k`` nearest training points (cosine distance,
    distance-weighted vote) give the right label."""
    from sklearn.neighbors import KNeighborsClassifier

    classifier = KNeighborsClassifier(n_neighbors=min(k, len(train_y)), metric="cosine", weights="distance")
    return float(classifier.fit(train_x, train_y).score(test_x, test_y))


def linear_probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Test accuracy of an L2-regularised logistic regression on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(probe.fit(train_x, train_y).score(test_x, test_y))


def evaluate_backbone(
    backbone: torch.nn.Module, train: Dataset, test: Dataset, device: torch.device, k: int = 20, workers: int = 0
) -> Accuracy:
    """k-NN and linear-probe test accuracy (fractions in [0, 1]) of ``backbone``'s frozen features."""
    train_x, train_y = extract_features(backbone, train, device, workers=workers)
    test_x, test_y = extract_features(backbone, test, device, workers=workers)
    return Accuracy(
        knn=knn_accuracy(train_x, train_y, test_x, test_y, k),
        linear=linear_probe_accuracy(train_x, train_y, test_x, test_y),
    )


def comparison_table(random_init: Accuracy, trained: Accuracy, k: int) -> str:
    """The two evaluations side by side, as printed at the end of a run."""
    rows = [
        f"{'frozen features':<22}{'random init':>12}{'trained':>10}",
        f"{f'k-NN (k={k}, cosine)':<22}{100 * random_init.knn:>11.1f}%{100 * trained.knn:>9.1f}%",
        f"{'linear probe':<22}{100 * random_init.linear:>11.1f}%{100 * trained.linear:>9.1f}%",
    ]
    return "\n".join(rows)
