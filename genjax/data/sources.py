"""Data sources named by one string, and the train/test pair a config asks for.

Specs: ring8 | grid25 | mnist5k | pydocs | tfds:NAME[:FIELD] | idx:DIR | npz:FILE | folder:DIR |
text:FILE|DIR (token sequences: genjax.data.text) | mix:SPEC+SPEC[+...] (the first source's
splits with every example of the others added to its training split). Each opens to
a set of splits; a split ('train', 'test' or 'all') is a `Source`. A data set with its own test
split uses it; otherwise 'test' is the last 10% of each class (see `holdout_indices`; TFDS
sources: the last 10% of 'train'). Images are centre-cropped (data.center_crop), then resized
(data.image_size) by `genjax.data.images.prepare_images`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Protocol

import numpy as np

from genjax.data.arrays import SPLITS, ArraySource, ArraySplits, Source
from genjax.data.embedded import MIXTURES, mixture_splits, mnist5k_splits
from genjax.data.errors import data_error
from genjax.data.folder import load_folder
from genjax.data.idx import load_idx_dir
from genjax.data.npz import load_npz
from genjax.data.text import (
    TextOptions,
    load_text,
    options_for_test,
    pydocs_splits,
    tfds_text_field,
    with_text,
)
from genjax.data.tfds_source import TfdsSource, open_tfds

__all__ = ["ArraySource", "Source", "TfdsSource", "load_source", "open_source", "resolve_sources"]

# scheme -> opener(spec, path, image_size, center_crop) -> Splits
PATH_SCHEMES = {"idx": load_idx_dir, "npz": load_npz, "folder": load_folder, "text": load_text}
PATH_ARGUMENTS = {"idx": "DIR", "npz": "FILE", "folder": "DIR", "text": "FILE|DIR"}
# Data sets named by a bare word: name -> opener(image_size) -> Splits; open_source gives an
# ArraySplits its center_crop.
NAMED_SOURCES: dict[str, Callable[[int], Splits]] = {}


def register_source(name: str, opener: Callable[[int], Splits]) -> None:
    """Adds a data set named by a bare word (`data.train=NAME`): `opener(image_size)` returns
    its Splits (e.g. an `ArraySplits` of arrays it makes or reads)."""
    NAMED_SOURCES[name] = opener


def _valid_specs() -> str:
    return ", ".join(
        [
            *NAMED_SOURCES,
            "tfds:NAME[:FIELD]",
            *(f"{s}:{a}" for s, a in PATH_ARGUMENTS.items()),
            "mix:SPEC+SPEC",
        ]
    )


class Splits(Protocol):
    """An opened data set: whether it has a native test split, and each split as a Source."""

    has_test: bool

    def select(self, split: str) -> Source: ...


for _name in MIXTURES:
    register_source(_name, lambda image_size, name=_name: mixture_splits(name))
register_source("mnist5k", mnist5k_splits)
register_source("pydocs", pydocs_splits)  # token sequences (genjax.data.text)


def open_source(
    spec: str,
    *,
    image_size: int = 0,
    center_crop: int = 0,
    data_dir: str = "",
    text: TextOptions | None = None,
) -> Splits:
    """Opens the data set named by `spec` (reads in-memory data sets, prepares TFDS ones).

    Its images are centre-cropped to center_crop x center_crop (if > 0), then resized to
    image_size x image_size (if > 0); its sentences are tokenised with `text`."""
    if image_size < 0:
        raise data_error(spec, f"image_size must be >= 0 (0 = native size), got {image_size}")
    if center_crop < 0:
        raise data_error(spec, f"center_crop must be >= 0 (0 = no crop), got {center_crop}")
    scheme, colon, arg = spec.partition(":")
    if colon and scheme == "mix":
        options = {"image_size": image_size, "center_crop": center_crop, "data_dir": data_dir}
        return _open_mix(spec, arg, options | {"text": text})
    if not colon and spec in NAMED_SOURCES:
        splits = NAMED_SOURCES[spec](image_size)
        return with_text(spec, _with_crop(spec, splits, center_crop), text, image_size, 0)
    if colon and scheme == "tfds" and arg:
        name, field = tfds_text_field(arg)
        if field is not None:
            from genjax.data.text import open_tfds_text

            return open_tfds_text(spec, name, field, data_dir, text, image_size, center_crop)
        return open_tfds(spec, arg, data_dir, image_size, center_crop)
    if colon and scheme in PATH_SCHEMES and arg:
        splits = PATH_SCHEMES[scheme](spec, os.path.expanduser(arg), image_size, center_crop)
        return with_text(spec, splits, text, image_size, center_crop)
    if colon and (scheme == "tfds" or scheme in PATH_SCHEMES):
        raise data_error(spec, f"{scheme}: needs an argument; valid: {_valid_specs()}")
    raise data_error(spec, f"unknown data source; valid: {_valid_specs()}")


@dataclasses.dataclass(frozen=True)
class MixSplits:
    """mix:A+B[+...]: data set A, its training split extended by every example of B, ...
    (their 'all' splits), e.g. real data and an augmentation set sample.py --mode dataset
    wrote. 'test' is A's test split; 'all' is everything. Labels are kept when every part
    has them (classes: the most any part has), else dropped."""

    spec: str
    parts: tuple[str, ...]
    opened: tuple

    @property
    def has_test(self) -> bool:
        return self.opened[0].has_test

    def select(self, split: str) -> Source:
        first = self.opened[0].select(split)
        if split == "test":
            return first
        sources = [first, *(splits.select("all") for splits in self.opened[1:])]
        for part, source in zip(self.parts[1:], sources[1:], strict=True):
            if (source.kind, source.shape) != (first.kind, first.shape):
                raise data_error(
                    self.spec,
                    f"{part!r} has {source.kind} {source.shape} but {self.parts[0]!r} has "
                    f"{first.kind} {first.shape}; mix sources of one kind and shape",
                )
        arrays = [source.to_arrays() for source in sources]
        keys = [key for key in arrays[0] if all(key in a for a in arrays)]
        joined = {key: np.concatenate([a[key] for a in arrays]) for key in keys}
        labelled = all(source.num_classes for source in sources)
        num_classes = max(source.num_classes for source in sources) if labelled else None
        if not labelled:
            joined.pop("label", None)
        return ArraySource(joined, first.kind, num_classes)


def _open_mix(spec: str, arg: str, options: dict) -> MixSplits:
    """The MixSplits of mix:SPEC+SPEC[+...]; each part opened with the same options."""
    parts = tuple(arg.split("+"))
    if len(parts) < 2 or not all(parts) or any(p.startswith("mix:") for p in parts):
        raise data_error(
            spec,
            "mix: joins two or more sources with '+', e.g. mix:mnist5k+npz:extra.npz (the "
            "first gives the test split)",
        )
    return MixSplits(spec, parts, tuple(open_source(p, **options) for p in parts))


def _with_crop(spec: str, splits: Splits, center_crop: int) -> Splits:
    """A named data set's splits with their images centre-cropped to center_crop (if > 0)."""
    if not center_crop:
        return splits
    if not isinstance(splits, ArraySplits):
        raise data_error(
            spec,
            "center_crop applies to in-memory image data sets; set --config.data.center_crop=0",
        )
    return dataclasses.replace(splits, center_crop=center_crop)


def load_source(
    spec: str,
    split: str,
    *,
    image_size: int = 0,
    center_crop: int = 0,
    data_dir: str = "",
    text: TextOptions | None = None,
) -> Source:
    """Split 'train', 'test' or 'all' of the data set `spec`, its images centre-cropped if
    center_crop > 0, then resized if image_size > 0; sentences tokenised with `text`."""
    if split not in SPLITS:
        raise data_error(spec, f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    options = {"image_size": image_size, "center_crop": center_crop, "data_dir": data_dir}
    options["text"] = text
    return open_source(spec, **options).select(split)


def resolve_sources(data_config) -> tuple[Source, Source]:
    """(train, test) sources for `config.data`.

    With data.test == '' (or the training spec again) the test source is the training data
    set's test split. Another named test data set gives its own test split if it has one (a
    data set of only a test split, e.g. a folder of t10k files, gives that), else all of it (it
    is not trained on).
    """
    options = {
        "image_size": data_config.image_size,
        "center_crop": data_config.center_crop,
        "data_dir": data_config.data_dir,
        "text": TextOptions.from_config(data_config),
    }
    train_data = open_source(data_config.train, **options)
    train = train_data.select("train")
    if data_config.test in ("", data_config.train):
        return train, train_data.select("test")
    options["text"] = options_for_test(options["text"], train)  # the training vocabulary
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
            "(image sizes can be matched with --config.data.image_size and center_crop)",
        )
