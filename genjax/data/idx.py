"""idx:DIR — a folder of MNIST-format IDX files (gzip or raw), parsed with numpy.

IDX (LeCun's MNIST format): two zero bytes, a type code, the number of dimensions, then one
big-endian uint32 per dimension, then the values, big-endian, C order.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from genjax.data.arrays import ArraySplits, count_classes, image_split
from genjax.data.errors import data_error

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_STEMS = {  # role -> file name stem and the dimension digit of its idxN suffix
    "train_images": ("train-images", 3),
    "train_labels": ("train-labels", 1),
    "test_images": ("t10k-images", 3),
    "test_labels": ("t10k-labels", 1),
}


def parse_idx(data: bytes) -> np.ndarray:
    """The array stored in the bytes of one IDX file; ValueError says what is wrong."""
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in IDX_TYPES:
        raise ValueError(f"bad magic number {data[:4].hex() or 'none'} (not an IDX file)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"header truncated ({len(data)} bytes for {ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[data[2]])
    expected = header + dtype.itemsize * int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise ValueError(f"{len(data)} bytes but dimensions {dims} need {expected} (truncated?)")
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(spec: str, path: str) -> np.ndarray:
    """Reads one IDX file, gunzipping `*.gz`; any corruption is a ConfigError naming the file."""
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            return parse_idx(f.read())
    except (OSError, EOFError, ValueError, zlib.error) as e:
        raise data_error(spec, f"{path}: {e}; expected an MNIST-format IDX file") from e


def find_idx_file(root: str, role: str) -> str | None:
    """The path of e.g. train-images-idx3-ubyte[.gz] (or train-images.idx3-ubyte) in root."""
    stem, dims = IDX_STEMS[role]
    for sep in ("-", "."):
        for suffix in ("", ".gz"):
            path = os.path.join(root, f"{stem}{sep}idx{dims}-ubyte{suffix}")
            if os.path.isfile(path):
                return path
    return None


def load_idx_dir(spec: str, root: str, image_size: int = 0, center_crop: int = 0) -> ArraySplits:
    """idx:DIR: train-images (+ optional train-labels); t10k files, if any, are the test split.

    A folder of only t10k files is a data set of only a test split: it serves as a test source
    (--config.data.test), and asking it for training data is a ConfigError naming the missing
    train-images file.
    """
    if not os.path.isdir(root):
        raise data_error(spec, f"no such folder {root!r}; idx:DIR names a folder of IDX files")
    paths = {role: find_idx_file(root, role) for role in IDX_STEMS}
    missing_train = f"no train-images-idx3-ubyte[.gz] (or train-images.idx3-ubyte) in {root!r}"
    if paths["train_images"] is None and paths["test_images"] is None:
        raise data_error(
            spec, f"{missing_train}, and no t10k-images-idx3-ubyte[.gz] for a test split"
        )
    train = test = None
    if paths["train_images"] is not None:
        train = _read_split(spec, paths["train_images"], paths["train_labels"])
    if paths["test_images"] is not None:
        test = _read_split(spec, paths["test_images"], paths["test_labels"])
    if train is not None and test is not None and ("label" in train) != ("label" in test):
        raise data_error(
            spec, "train and t10k files disagree on labels: give both label files or neither"
        )
    labels = (split.get("label") for split in (train, test) if split is not None)
    num_classes = count_classes(spec, *labels)
    missing_train += "; its t10k files serve only as a test source (--config.data.test)"
    return ArraySplits(
        spec, "image", train, test, num_classes, image_size, missing_train, center_crop
    )


def _read_split(spec: str, images_path: str, labels_path: str | None) -> dict[str, np.ndarray]:
    """One split's images (uint8, NHWC) and optional labels, checked against each other."""
    images = read_idx(spec, images_path)
    labels = read_idx(spec, labels_path) if labels_path is not None else None
    return image_split(spec, images, labels, images_path, labels_path)
