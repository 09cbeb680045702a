"""Matplotlib figures for TensorBoard: pair galleries, ROC, distance distributions, confusion matrix.

Rendered headless (Agg). Every function returns a figure; the caller logs and closes it.
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures go to TensorBoard and files, never to a window

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def pair_gallery(
    images_a: torch.Tensor, images_b: torch.Tensor, captions: Sequence[str], columns: int = 4
) -> Figure:
    """Pairs side by side, each captioned; images are (N, 3, H, W) floats in [0, 1]."""
    count = len(captions)
    rows = max(1, math.ceil(count / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.3 * rows), squeeze=False)
    for k, axis in enumerate(axes.flat):
        axis.axis("off")
        if k < count:
            pair = torch.cat([images_a[k], images_b[k]], dim=2)  # side by side
            axis.imshow(pair.permute(1, 2, 0).clamp(0, 1).numpy())
            axis.set_title(captions[k], fontsize=8)
    figure.tight_layout()
    return figure


def roc_figure(fpr: torch.Tensor, tpr: torch.Tensor, marked: tuple[float, float] | None, title: str) -> Figure:
    """ROC curve; ``marked`` is the (FPR, TPR) of the threshold in use."""
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot(fpr.numpy(), tpr.numpy(), label="ROC")
    axis.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    if marked is not None:
        axis.scatter([marked[0]], [marked[1]], color="red", zorder=3, label="threshold")
    axis.set_xlabel("false accept rate (different pairs called same)")
    axis.set_ylabel("true accept rate")
    axis.set_title(title)
    axis.legend(loc="lower right")
    figure.tight_layout()
    return figure


def distance_figure(distance: torch.Tensor, same: torch.Tensor, threshold: float, title: str) -> Figure:
    """Histograms of the distances of same-class and different-class pairs, with the threshold."""
    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    bins = torch.linspace(0, float(distance.max()) * 1.02 + 1e-6, 40).numpy()
    axis.hist(distance[same == 1].numpy(), bins=bins, alpha=0.6, label="same class")
    axis.hist(distance[same == 0].numpy(), bins=bins, alpha=0.6, label="different classes")
    axis.axvline(threshold, color="red", linestyle="--", label=f"threshold {threshold:.3f}")
    axis.set_xlabel("distance")
    axis.set_ylabel("pairs")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    return figure


def confusion_figure(matrix: torch.Tensor, title: str) -> Figure:
    """2x2 confusion matrix: rows true (different, same), columns predicted."""
    figure, axis = plt.subplots(figsize=(4, 3.6))
    axis.imshow(matrix.numpy(), cmap="Blues")
    labels = ["different", "same"]
    axis.set_xticks([0, 1], labels)
    axis.set_yticks([0, 1], labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for i in range(2):
        for j in range(2):
            axis.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=12)
    axis.set_title(title)
    figure.tight_layout()
    return figure
