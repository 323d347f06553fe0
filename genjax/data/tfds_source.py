"""tfds:NAME — a TensorFlow Datasets data set read through `tfds.data_source` (array_record).

No TensorFlow needed to read; a data set missing from data_dir is downloaded and prepared on
first use (which needs network access, and for some builders TensorFlow).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from genjax.data.arrays import Source
from genjax.data.errors import data_error
from genjax.data.images import as_hwc, check_crop, prepare_images

HOLDOUT_SPLITS = {"train": "train[:90%]", "test": "train[90%:]", "all": "train"}


class TfdsSource(Source):
    """One split of a TFDS data set, decoded (cropped and resized) example by example on access."""

    def __init__(
        self,
        records,
        shape: tuple,
        num_classes: int | None,
        image_size: int = 0,
        center_crop: int = 0,
        *,
        spec: str = "tfds",
    ):
        """Wraps a tfds data source whose examples hold 'image' (and 'label' if num_classes);
        images are served as `prepare_images` makes them (crop, then resize)."""
        self._records = records
        self._spec = spec
        self._image_size = image_size
        self._center_crop = center_crop
        self.kind = "image"
        self.shape = shape
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict:
        record = self._records[int(index)]
        image = as_hwc(np.asarray(record["image"], dtype=np.uint8))
        what = f"image (example {int(index)})"
        image = prepare_images(self._spec, image[None], self._center_crop, self._image_size, what)
        example = {"image": image[0]}
        if self.num_classes is not None:
            example["label"] = np.int32(record["label"])
        return example

    def to_arrays(self) -> dict[str, np.ndarray]:
        return self.take(np.arange(len(self)))


def tfds_data_source(spec: str, name: str, split: str | None, data_dir: str):
    """`tfds.data_source` (preparing the data set if needed); failures become ConfigErrors."""
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source(name, split=split, data_dir=data_dir or None)
    except tfds.core.DatasetNotFoundError as e:
        raise data_error(
            spec,
            f"TFDS has no data set named {name!r}; valid names are listed at "
            "https://www.tensorflow.org/datasets/catalog",
        ) from e
    except Exception as e:  # any download/prepare failure is for the user to fix
        raise data_error(
            spec,
            f"TFDS data set {name!r} could not be downloaded/prepared into "
            f"{data_dir or 'the default TFDS data_dir'} ({type(e).__name__}: {str(e)[:300]}); "
            "prepare it where there is network access and set --config.data.data_dir to it",
        ) from e


def image_features(
    spec: str, features, image_size: int, center_crop: int = 0
) -> tuple[tuple, int | None]:
    """(H, W, C) of the examples as served, and the class count (None if no 'label' classes).

    A centre crop larger than the feature's fixed height or width is a ConfigError."""
    import tensorflow_datasets as tfds

    image = features["image"] if "image" in features else None
    if not isinstance(image, tfds.features.Image) or image.np_dtype != np.uint8:
        from genjax.data.text import missing_field_error

        if (error := missing_field_error(spec, features)) is not None:  # a text data set
            raise error
        raise data_error(
            spec,
            f"no uint8 'image' feature (features: {', '.join(features)}); valid: TFDS image "
            "data sets such as tfds:mnist, tfds:cifar10, tfds:celeb_a",
        )
    height, width, channels = image.shape
    if center_crop and height is not None and width is not None:  # else checked per image
        check_crop(spec, center_crop, height, width)
    if image_size or center_crop:
        height = width = image_size or center_crop
    elif height is None or width is None:
        raise data_error(
            spec, "images vary in size; set --config.data.image_size=S to resize them to SxS"
        )
    label = features["label"] if "label" in features else None
    num_classes = label.num_classes if isinstance(label, tfds.features.ClassLabel) else None
    return (height, width, channels), num_classes


@dataclasses.dataclass(frozen=True)
class TfdsSplits:
    """A prepared TFDS data set: its split names, and how to open one split as a Source."""

    spec: str
    name: str
    data_dir: str
    split_names: tuple[str, ...]
    image_size: int = 0
    center_crop: int = 0

    @property
    def has_test(self) -> bool:
        """Whether the builder has a 'test' split (else test = the last 10% of 'train')."""
        return "test" in self.split_names

    def select(self, split: str) -> TfdsSource:
        """'train', 'test' or 'all' as a TfdsSource (all = every split TFDS has)."""
        tfds_split = split if self.has_test else HOLDOUT_SPLITS[split]
        records = tfds_data_source(self.spec, self.name, tfds_split, self.data_dir)
        if not len(records):
            raise data_error(self.spec, f"TFDS split {tfds_split!r} is empty; give another source")
        features = records.dataset_info.features
        shape, num_classes = image_features(self.spec, features, self.image_size, self.center_crop)
        return TfdsSource(
            records, shape, num_classes, self.image_size, self.center_crop, spec=self.spec
        )


def open_tfds(
    spec: str, name: str, data_dir: str = "", image_size: int = 0, center_crop: int = 0
) -> TfdsSplits:
    """Prepares tfds:NAME if needed and reads its split names (empty when TFDS is mocked)."""
    splits = tfds_data_source(spec, name, None, data_dir)
    split_names = tuple(splits) if isinstance(splits, dict) else ()
    if split_names and "train" not in split_names:
        raise data_error(
            spec, f"has no 'train' split (splits: {', '.join(split_names)}); genjax needs one"
        )
    return TfdsSplits(spec, name, data_dir, split_names, image_size, center_crop)
