"""folder:DIR — PNG/JPEG files found recursively; class subfolders give labels.

DIR/CLASS/.../x.png is labelled with the index of CLASS among the sorted class folder names
(labels only when every image lies in a class folder, and there are at least two). If DIR
has both train/ and test/ folders, they are the splits (test/ uses train/'s class names). If
all its images lie in test/ and there is no train/, it is a data set of only a test split (a
test source; asking it for training data is a ConfigError).
"""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image, UnidentifiedImageError

from genjax.data.arrays import ArraySplits
from genjax.data.errors import data_error
from genjax.data.images import as_hwc, prepare_images

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def list_images(root: pathlib.Path) -> list[pathlib.Path]:
    """Image files under root (recursive), as paths relative to root, in sorted order."""
    files = (p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return sorted(p.relative_to(root) for p in files)


def class_names(files: list[pathlib.Path]) -> list[str] | None:
    """Sorted top-level folder names if every file lies in one and there are two or more;
    else None (unlabelled: one folder, as in an unzipped DIR/img_align_celeba/, is no class
    label, and a one-class classifier would make the class metrics meaningless)."""
    if not files or any(len(f.parts) < 2 for f in files):
        return None
    names = sorted({f.parts[0] for f in files})
    return names if len(names) >= 2 else None


def read_image(spec: str, path: pathlib.Path) -> np.ndarray:
    """One image as uint8 (H, W) greyscale or (H, W, 3) RGB (RGBA, palette, CMYK -> RGB)."""
    try:
        with Image.open(path) as image:
            if image.mode.startswith("I;16"):  # 16-bit grey: keep the high byte, not a clip
                return (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
            image = image.convert("L" if image.mode in GREY_MODES else "RGB")
            return np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise data_error(spec, f"cannot read image {str(path)!r} ({e}); valid: PNG or JPEG") from e


def _read_sized(spec: str, path: pathlib.Path, image_size: int, center_crop: int) -> np.ndarray:
    """One image, cropped and resized at once (`prepare_images`), so only the small copies are
    kept."""
    image = as_hwc(read_image(spec, path))
    what = f"image {str(path)!r}"
    return prepare_images(spec, image[None], center_crop, image_size, what)[0]


def read_images(
    spec: str, root: pathlib.Path, files: list, image_size: int, center_crop: int = 0
) -> np.ndarray:
    """Reads and stacks images (N, H, W, C): cropped and resized if center_crop / image_size,
    else all the same size."""
    images = [_read_sized(spec, root / f, image_size, center_crop) for f in files]
    channels = 3 if any(image.ndim == 3 and image.shape[-1] == 3 for image in images) else 1
    images = [_with_channels(image, channels) for image in images]
    _check_same_size(spec, root, files, images)
    return np.stack(images)


def _with_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Image(s) with `channels` channels: greyscale repeated to RGB when grey and colour mix."""
    image = as_hwc(image)
    return np.repeat(image, channels, axis=-1) if image.shape[-1] != channels else image


def _check_same_size(spec: str, root: pathlib.Path, files: list, images: list) -> None:
    """ConfigError naming two images of different sizes (they cannot be stacked)."""
    first = images[0].shape[:2]
    for file, image in zip(files, images, strict=True):
        if image.shape[:2] != first:
            raise data_error(
                spec,
                f"images differ in size: {str(root / files[0])!r} is {first[1]}x{first[0]} but "
                f"{str(root / file)!r} is {image.shape[1]}x{image.shape[0]} (WxH); "
                "set --config.data.image_size=S to resize and centre-crop all to SxS",
            )


def _labels(spec: str, root: pathlib.Path, files: list, classes: list[str]) -> np.ndarray:
    """Each file's class index; every file must lie in one of the `classes` folders."""
    index = {name: i for i, name in enumerate(classes)}
    stray = [f for f in files if len(f.parts) < 2 or f.parts[0] not in index]
    if stray:
        raise data_error(
            spec,
            f"{str(root / stray[0])!r} is not in a class folder; valid class folders "
            f"(from train/): {', '.join(classes)}",
        )
    return np.array([index[f.parts[0]] for f in files], np.int32)


def read_split(
    spec: str,
    root: pathlib.Path,
    classes: list | None,
    image_size: int,
    center_crop: int = 0,
    files: list | None = None,
) -> dict:
    """One folder's arrays: images, and labels from `classes` (the train class names).
    `files` are its images (list_images(root)) when the caller has listed them already."""
    files = list_images(root) if files is None else files
    if not files:
        raise data_error(
            spec, f"no images in {str(root)!r}; folder:DIR needs .png/.jpg/.jpeg files"
        )
    arrays = {"image": read_images(spec, root, files, image_size, center_crop)}
    if classes is not None:
        arrays["label"] = _labels(spec, root, files, classes)
    return arrays


def _match_channels(train: dict, test: dict) -> None:
    """Repeats greyscale to RGB in place when one split is greyscale and the other colour."""
    channels = max(train["image"].shape[-1], test["image"].shape[-1])
    for arrays in (train, test):
        arrays["image"] = _with_channels(arrays["image"], channels)


def load_folder(spec: str, path: str, image_size: int = 0, center_crop: int = 0) -> ArraySplits:
    """folder:DIR, with train/ and test/ subfolders as native splits when both exist (test/
    alone, holding every image, is a data set of only a test split). Each image is cropped and
    resized as it is read, so the ArraySplits holds them prepared."""
    root = pathlib.Path(path)
    if not root.is_dir():
        raise data_error(spec, f"no such folder {path!r}; folder:DIR names a folder of images")
    has_splits = (root / "train").is_dir() and (root / "test").is_dir()
    if not has_splits and (root / "test").is_dir() and _only_test_folder(root):
        files = list_images(root / "test")
        classes = class_names(files)
        test = read_split(spec, root / "test", classes, image_size, center_crop, files)
        missing_train = (
            f"no train/ folder in {path!r}, only test/; its images serve only as a test source "
            "(--config.data.test)"
        )
        num_classes = len(classes) if classes is not None else None
        return ArraySplits(spec, "image", None, test, num_classes, image_size, missing_train)
    train_root = root / "train" if has_splits else root
    files = list_images(train_root)
    classes = class_names(files)
    train = read_split(spec, train_root, classes, image_size, center_crop, files)
    test = None
    if has_splits:
        test = read_split(spec, root / "test", classes, image_size, center_crop)
        _match_channels(train, test)
        if test["image"].shape[1:3] != train["image"].shape[1:3]:
            raise data_error(
                spec,
                f"test/ images are {test['image'].shape[1:3]} but train/ images are "
                f"{train['image'].shape[1:3]} (H, W); set --config.data.image_size to match them",
            )
    num_classes = len(classes) if classes is not None else None
    return ArraySplits(spec, "image", train, test, num_classes, image_size)


def _only_test_folder(root: pathlib.Path) -> bool:
    """Whether root has images, all of them in its test/ folder."""
    files = list_images(root)
    return bool(files) and all(len(f.parts) > 1 and f.parts[0] == "test" for f in files)
