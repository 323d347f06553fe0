"""Image helpers shared by the sources: channel layout, centre cropping, square resizing with
Pillow, and `prepare_images`, the one place a source's images are cropped and resized."""

from __future__ import annotations

import numpy as np
from PIL import Image

from genjax.data.errors import data_error


def as_hwc(image: np.ndarray) -> np.ndarray:
    """An (H, W) greyscale image as (H, W, 1), so every image is NHWC-ready; others unchanged."""
    image = np.asarray(image)
    return image[..., None] if image.ndim == 2 else image


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Scales the short side to `size` and centre-crops to size x size, keeping aspect ratio.

    The crop is given to Pillow as a (fractional) source box, so scaling and cropping are one
    bicubic, antialiased resampling. An image already size x size is returned unchanged.
    """
    image = as_hwc(image)
    height, width, channels = image.shape
    if (height, width) == (size, size):
        return image
    side = min(height, width)
    left, top = (width - side) / 2, (height - side) / 2
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    resized = pil.resize(
        (size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side)
    )
    return as_hwc(np.asarray(resized, dtype=np.uint8))


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Applies `resize_square` to a stack (N, H, W, C) of uint8 images."""
    if images.shape[1:3] == (size, size):
        return images
    return np.stack([resize_square(image, size) for image in images])


def center_crop(images: np.ndarray, size: int) -> np.ndarray:
    """The centred size x size window of an image (H, W, C) or a stack (N, H, W, C): rows from
    (H - size) // 2 and columns from (W - size) // 2 (a view). ValueError if it does not fit."""
    height, width = images.shape[-3:-1]
    if size > height or size > width:
        raise ValueError(f"a {size}x{size} crop does not fit a {height}x{width} (HxW) image")
    top, left = (height - size) // 2, (width - size) // 2
    return images[..., top : top + size, left : left + size, :]


def check_crop(spec: str, crop: int, height: int, width: int, what: str = "images") -> None:
    """ConfigError if a crop x crop centre crop does not fit height x width `what`."""
    if crop > min(height, width):
        raise data_error(
            spec,
            f"center_crop={crop} is larger than its {height}x{width} (HxW) {what}; "
            f"set --config.data.center_crop to at most {min(height, width)} (0 = no crop)",
        )


def prepare_images(
    spec: str, images: np.ndarray, crop: int = 0, size: int = 0, what: str = "images"
) -> np.ndarray:
    """A stack (N, H, W, C) of uint8 images as a source serves them: centre-cropped to
    crop x crop when crop > 0 (`data.center_crop`), then resized to size x size when size > 0
    (`data.image_size`, see `resize_square`). A crop larger than the images is a ConfigError
    naming `what` (e.g. one file)."""
    if crop:
        check_crop(spec, crop, *images.shape[1:3], what)
        images = center_crop(images, crop)
    return resize_images(images, size) if size else images
