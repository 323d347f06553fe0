"""Data sources named by one string, and the train/test pair a config asks for.

Specs: ring8 | grid25 | mnist5k | tfds:NAME | idx:DIR | npz:FILE | folder:DIR. Each opens to
a set of splits; a split ('train', 'test' or 'all') is a `Source`. A data set with its own test
split uses it; otherwise 'test' is the last 10% of each class (see `holdout_indices`; TFDS
sources: the last 10% of 'train').
"""

from __future__ import annotations

import os
from typing import Protocol

from genjax.data.arrays import SPLITS, ArraySource, Source
from genjax.data.embedded import MIXTURES, mixture_splits, mnist5k_splits
from genjax.data.errors import VALID_SPECS, data_error
from genjax.data.folder import load_folder
from genjax.data.idx import load_idx_dir
from genjax.data.npz import load_npz
from genjax.data.tfds_source import TfdsSource, open_tfds

__all__ = ["ArraySource", "Source", "TfdsSource", "load_source", "open_source", "resolve_sources"]

PATH_SCHEMES = {"idx": load_idx_dir, "npz": load_npz, "folder": load_folder}


class Splits(Protocol):
    """An opened data set: whether it has a native test split, and each split as a Source."""

    has_test: bool

    def select(self, split: str) -> Source: ...


def open_source(spec: str, *, image_size: int = 0, data_dir: str = "") -> Splits:
    """Opens the data set named by `spec` (reads in-memory data sets, prepares TFDS ones)."""
    if image_size < 0:
        raise data_error(spec, f"image_size must be >= 0 (0 = native size), got {image_size}")
    scheme, colon, arg = spec.partition(":")
    if not colon and spec in MIXTURES:
        return mixture_splits(spec)
    if not colon and spec == "mnist5k":
        return mnist5k_splits(image_size)
    if colon and scheme == "tfds" and arg:
        return open_tfds(spec, arg, data_dir, image_size)
    if colon and scheme in PATH_SCHEMES and arg:
        return PATH_SCHEMES[scheme](spec, os.path.expanduser(arg), image_size)
    if colon and (scheme == "tfds" or scheme in PATH_SCHEMES):
        raise data_error(spec, f"{scheme}: needs an argument; valid: {VALID_SPECS}")
    raise data_error(spec, f"unknown data source; valid: {VALID_SPECS}")


def load_source(spec: str, split: str, *, image_size: int = 0, data_dir: str = "") -> Source:
    """Split 'train', 'test' or 'all' of the data set `spec`, resized if image_size > 0."""
    if split not in SPLITS:
        raise data_error(spec, f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return open_source(spec, image_size=image_size, data_dir=data_dir).select(split)


def resolve_sources(data_config) -> tuple[Source, Source]:
    """(train, test) sources for `config.data`.

    With data.test == '' (or the training spec again) the test source is the training data
    set's test split. Another named test data set gives its own test split if it has one, else
    all of it (it is not trained on).
    """
    options = {"image_size": data_config.image_size, "data_dir": data_config.data_dir}
    train_data = open_source(data_config.train, **options)
    train = train_data.select("train")
    if data_config.test in ("", data_config.train):
        return train, train_data.select("test")
    test_data = open_source(data_config.test, **options)
    test = test_data.select("test" if test_data.has_test else "all")
    _check_same_examples(data_config.test, test, data_config.train, train)
    return train, test


def _check_same_examples(test_spec: str, test: Source, train_spec: str, train: Source) -> None:
    """A named test source must serve examples of the training data's kind and shape."""
    if (test.kind, test.shape) != (train.kind, train.shape):
        raise data_error(
            test_spec,
            f"its examples are {test.kind} {test.shape} but the training data {train_spec!r} "
            f"has {train.kind} {train.shape}; name a matching --config.data.test "
            "(image sizes can be matched with --config.data.image_size)",
        )
