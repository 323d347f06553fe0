"""Image helpers shared by the sources: channel layout and square resizing with Pillow."""

from __future__ import annotations

import numpy as np
from PIL import Image


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
