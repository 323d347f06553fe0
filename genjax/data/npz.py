"""npz:FILE — images (N, H, W[, C]) uint8, optional labels, optional test_images/test_labels."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from genjax.data.arrays import ArraySplits, count_classes, image_split
from genjax.data.errors import data_error

NPZ_KEYS = "images (N, H, W) or (N, H, W, C) uint8, optional labels, test_images, test_labels"


def load_npz(spec: str, path: str, image_size: int = 0, center_crop: int = 0) -> ArraySplits:
    """npz:FILE: `images` [+ `labels`]; `test_images` [+ `test_labels`] is the native test split.

    A file of only `test_images` [+ `test_labels`] is a data set of only a test split: it serves
    as a test source, and asking it for training data is a ConfigError.
    """
    if not os.path.isfile(path):
        raise data_error(spec, f"no such file {path!r}; npz:FILE names an .npz with {NPZ_KEYS}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            contents = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise data_error(spec, f"cannot read {path!r} as .npz ({e}); expected {NPZ_KEYS}") from e
    found = ", ".join(contents) or "none"
    if "images" not in contents and "test_images" not in contents:
        raise data_error(spec, f"no 'images' array (found: {found}); expected {NPZ_KEYS}")
    has_both = "images" in contents and "test_images" in contents
    if has_both and ("labels" in contents) != ("test_labels" in contents):
        raise data_error(spec, "give both 'labels' and 'test_labels' or neither")
    train = _split(spec, contents, "images", "labels") if "images" in contents else None
    test = (
        _split(spec, contents, "test_images", "test_labels") if "test_images" in contents else None
    )
    labels = (split.get("label") for split in (train, test) if split is not None)
    num_classes = count_classes(spec, *labels)
    missing_train = (
        f"no 'images' array (found: {found}); its 'test_images' serve only as a test source "
        "(--config.data.test)"
    )
    return ArraySplits(
        spec, "image", train, test, num_classes, image_size, missing_train, center_crop
    )


def _split(spec: str, contents: dict, image_key: str, label_key: str) -> dict[str, np.ndarray]:
    """One split's arrays from the file, checked: uint8 NHWC images, integer labels (N,)."""
    labels = contents[label_key] if label_key in contents else None
    return image_split(spec, contents[image_key], labels, repr(image_key), repr(label_key))
