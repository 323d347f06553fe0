"""The Source interface, and the array-backed source that every in-memory data set shares.

A source's 'train'/'test'/'all' splits come from an `ArraySplits`: the native test split where
the data set has one, else a deterministic holdout of the last 10% of each class. A data set of
only a test split (e.g. a folder of t10k files) serves 'test' and 'all', and refuses 'train'.
"""

from __future__ import annotations

import abc
import dataclasses

import numpy as np

from genjax.data.errors import data_error
from genjax.data.images import prepare_images

SPLITS = ("train", "test", "all")


class Source(abc.ABC):
    """One split of a data set, random access by index: a grain RandomAccessDataSource.

    Examples are dicts: {'image': uint8 (H, W, C)} or {'point': float32 (2,)}, plus
    'label': int32 scalar when the data set is labelled.
    """

    kind: str  # 'image' or 'point'
    shape: tuple  # (H, W, C) for images, (2,) for points
    num_classes: int | None  # None when unlabelled

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of examples in the split."""

    @abc.abstractmethod
    def __getitem__(self, index: int) -> dict:
        """Example `index` as a dict of numpy values."""

    @abc.abstractmethod
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The whole split stacked along a leading axis (for on-device data and metrics)."""

    def take(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Examples at `indices`, stacked: one host batch (sources override this to vectorise)."""
        examples = [self[int(i)] for i in indices]
        return {key: np.stack([ex[key] for ex in examples]) for key in examples[0]}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(kind={self.kind!r}, shape={self.shape}, "
            f"num_classes={self.num_classes}, len={len(self)})"
        )


class ArraySource(Source):
    """A split held in numpy arrays (read-only): ring8, grid25, mnist5k, idx, npz, folder."""

    def __init__(self, arrays: dict[str, np.ndarray], kind: str, num_classes: int | None):
        """Wraps {'image' | 'point': (N, ...), optional 'label': (N,)}; N must be > 0."""
        lengths = {key: len(value) for key, value in arrays.items()}
        if kind not in arrays or len(set(lengths.values())) != 1 or lengths[kind] == 0:
            raise ValueError(f"ArraySource needs non-empty, equally long arrays, got {lengths}")
        self._arrays = {key: _read_only(value) for key, value in arrays.items()}
        self.kind = kind
        self.shape = tuple(arrays[kind].shape[1:])
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self._arrays[self.kind])

    def __getitem__(self, index: int) -> dict:
        return {key: value[index] for key, value in self._arrays.items()}

    def to_arrays(self) -> dict[str, np.ndarray]:
        return dict(self._arrays)

    def take(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return {key: value[indices] for key, value in self._arrays.items()}


def _read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view, so no consumer can change a data set that others share."""
    view = array.view()
    view.flags.writeable = False
    return view


def holdout_indices(labels: np.ndarray | None, num_examples: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: test = the last ceil(10%) of each class, in index order.

    Unlabelled data is one class. A class of a single example stays in train. Both index arrays
    are sorted, so the splits keep the source's order.
    """
    if labels is None:
        groups = [np.arange(num_examples)]
    else:
        groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    test = [group[len(group) - _holdout_size(len(group)) :] for group in groups]
    test_idx = np.sort(np.concatenate(test))
    train_mask = np.ones(num_examples, bool)
    train_mask[test_idx] = False
    return np.flatnonzero(train_mask), test_idx


def _holdout_size(count: int) -> int:
    """How many of a class's `count` examples go to the holdout test split: ceil(10%)."""
    return -(-count // 10) if count > 1 else 0


def count_classes(spec: str, *labels: np.ndarray | None) -> int | None:
    """1 + the largest label over all splits (None if unlabelled); negative labels are an error."""
    present = [np.asarray(lab) for lab in labels if lab is not None and len(lab)]
    if not present:
        return None
    low = min(int(lab.min()) for lab in present)
    if low < 0:
        raise data_error(spec, f"labels must be integers >= 0, found {low}")
    return 1 + max(int(lab.max()) for lab in present)


def image_split(
    spec: str,
    images: np.ndarray,
    labels: np.ndarray | None,
    images_name: str,
    labels_name: str | None,
) -> dict[str, np.ndarray]:
    """One split's arrays, checked: uint8 images (N, H, W) or (N, H, W, C) with C = 1 or 3,
    as NHWC, and optional integer labels (N,), as int32. The names say in an error which
    file or array was wrong."""
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise data_error(
            spec,
            f"{images_name} is {images.dtype} {images.shape}; "
            "expected uint8 (N, H, W) or (N, H, W, C)",
        )
    if images.ndim == 4 and images.shape[-1] not in (1, 3):
        raise data_error(spec, f"{images_name} has {images.shape[-1]} channels; valid: 1 or 3")
    arrays = {"image": images if images.ndim == 4 else images[..., None]}
    if labels is not None:
        if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
            raise data_error(
                spec,
                f"{labels_name} is {labels.dtype} {labels.shape}; "
                f"expected integers of shape ({len(images)},)",
            )
        arrays["label"] = labels.astype(np.int32)
    return arrays


@dataclasses.dataclass(frozen=True)
class ArraySplits:
    """An in-memory data set: its train arrays, native test arrays (or None), and metadata.

    `train` is None for a data set of only a test split; `missing_train` then says, for the
    ConfigError of a 'train' request, what is missing (e.g. which file; unused otherwise).
    Images are served centre-cropped to `center_crop` (if > 0), then resized to `image_size`
    (if > 0).
    """

    spec: str
    kind: str
    train: dict[str, np.ndarray] | None
    test: dict[str, np.ndarray] | None
    num_classes: int | None
    image_size: int = 0
    missing_train: str = ""
    center_crop: int = 0

    def __post_init__(self):
        """Refuses a data set with no split, an empty split, or a test split whose examples
        are shaped unlike the training examples (a model trained on one fits only that shape)."""
        if self.train is None and self.test is None:
            raise data_error(self.spec, self.missing_train or "it has no train or test split")
        for name, arrays in (("train", self.train), ("test", self.test)):
            if arrays is not None and not len(arrays[self.kind]):
                raise data_error(
                    self.spec, f"the {name} data has no examples; give a non-empty one"
                )
        if self.train is not None and self.test is not None:
            train_shape = self.train[self.kind].shape[1:]
            test_shape = self.test[self.kind].shape[1:]
            if test_shape != train_shape:
                raise data_error(
                    self.spec,
                    f"its test examples are {test_shape} but its training examples are "
                    f"{train_shape}; both splits need the same shape",
                )

    @property
    def has_test(self) -> bool:
        """Whether the data set has its own test split (else 'test' is a 10% holdout)."""
        return self.test is not None

    def select(self, split: str) -> ArraySource:
        """The 'train', 'test' or 'all' split as an ArraySource, its images cropped and resized
        (`prepare_images`)."""
        arrays = dict(self._split_arrays(split))
        if not len(arrays[self.kind]):
            raise data_error(
                self.spec,
                f"split {split!r} is empty ({len(self.train[self.kind])} examples are too few "
                "for a 10% holdout); give more data or an explicit --config.data.test source",
            )
        if self.kind == "image":
            arrays["image"] = prepare_images(
                self.spec, arrays["image"], self.center_crop, self.image_size
            )
        return ArraySource(arrays, self.kind, self.num_classes)

    def _split_arrays(self, split: str) -> dict[str, np.ndarray]:
        """The arrays of one split, before cropping and resizing."""
        if self.train is None:  # only a test split: it is 'test' and 'all'; 'train' is refused
            if split == "train":
                raise data_error(
                    self.spec, self.missing_train or "it has only a test split, no train split"
                )
            return self.test
        if split == "all":
            return self.train if self.test is None else _concat(self.train, self.test)
        if self.test is not None:
            return self.train if split == "train" else self.test
        train_idx, test_idx = holdout_indices(self.train.get("label"), len(self.train[self.kind]))
        index = train_idx if split == "train" else test_idx
        return {key: value[index] for key, value in self.train.items()}


def _concat(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> dict:
    """Two splits' arrays joined (keys both have), e.g. train + test for 'all'."""
    return {key: np.concatenate([first[key], second[key]]) for key in first if key in second}
