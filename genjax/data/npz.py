"""npz:FILE — images (N, H, W[, C]) uint8, optional labels, optional test_images/test_labels."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from genjax.data.arrays import ArraySplits, count_classes, image_split
from genjax.data.errors import data_error

NPZ_KEYS = "images (N, H, W) or (N, H, W, C) uint8, optional labels, test_images, test_labels"


def load_npz(spec: str, path: str, image_size: int = 0) -> ArraySplits:
    """npz:FILE: `images` [+ `labels`]; `test_images` [+ `test_labels`] is the native test split."""
    if not os.path.isfile(path):
        raise data_error(spec, f"no such file {path!r}; npz:FILE names an .npz with {NPZ_KEYS}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            contents = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise data_error(spec, f"cannot read {path!r} as .npz ({e}); expected {NPZ_KEYS}") from e
    if "images" not in contents:
        raise data_error(
            spec, f"no 'images' array (found: {', '.join(contents) or 'none'}); expected {NPZ_KEYS}"
        )
    if ("labels" in contents) != ("test_labels" in contents) and "test_images" in contents:
        raise data_error(spec, "give both 'labels' and 'test_labels' or neither")
    train = _split(spec, contents, "images", "labels")
    test = (
        _split(spec, contents, "test_images", "test_labels") if "test_images" in contents else None
    )
    num_classes = count_classes(spec, train.get("label"), test.get("label") if test else None)
    return ArraySplits(spec, "image", train, test, num_classes, image_size)


def _split(spec: str, contents: dict, image_key: str, label_key: str) -> dict[str, np.ndarray]:
    """One split's arrays from the file, checked: uint8 NHWC images, integer labels (N,)."""
    labels = contents[label_key] if label_key in contents else None
    return image_split(spec, contents[image_key], labels, repr(image_key), repr(label_key))
