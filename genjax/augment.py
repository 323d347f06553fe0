"""Differentiable augmentation for GAN training (Zhao et al. 2020, "Differentiable Augmentation
for Data-Efficient GAN Training"): the same random transforms applied to the real and the fake
images the discriminator sees, differentiable so the generator's gradient passes through them.

Images are NHWC floats in [-1, 1]. Each transform takes its random values per example as
arrays (B,), so a data-parallel step draws them for the global batch (`draw`) and slices rows
per device; `augment` draws and applies in one call. The transforms, their ranges and their
order (color, translation, cutout) are those of the authors' DiffAugment. Arithmetic is in
float32; results have the input's dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from genjax.config import ConfigError

POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125  # the largest shift, as a fraction of the image side
CUTOUT_RATIO = 0.5  # the side of the cut-out square, as a fraction of the image side


def _float32(x):
    """x as a float32 array, and the dtype to return: x's own (float32 for a NumPy float64)."""
    x = jnp.asarray(x)
    return jnp.asarray(x, jnp.float32), x.dtype


def _per_example(values, ndim):
    """(B,) values as (B, 1, ..., 1), to broadcast against a (B, ...) batch of rank ndim."""
    values = jnp.asarray(values, jnp.float32)
    return values.reshape((values.shape[0],) + (1,) * (ndim - 1))


def _round_half_up(size: int, ratio: float) -> int:
    """int(size * ratio + 0.5): the authors' rounding of a side length."""
    return int(size * ratio + 0.5)


# --- The transforms --------------------------------------------------------------------------


def color(x, brightness, saturation, contrast):
    """Brightness, then saturation, then contrast, each with one value per example.

    brightness: added to every pixel (drawn from U[-0.5, 0.5)); saturation: scales each
    pixel's deviation from its own mean over the channels (U[0, 2)), which leaves a
    one-channel image as it is; contrast: scales each pixel's deviation from the image's mean
    over height, width and channels (U[0.5, 1.5)).
    """
    x, dtype = _float32(x)
    x = x + _per_example(brightness, x.ndim)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    x = (x - mean) * _per_example(saturation, x.ndim) + mean
    mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * _per_example(contrast, x.ndim) + mean
    return x.astype(dtype)


def _shift_axis(x, shift, axis):
    """out[b, ..., i, ...] = x[b, ..., i + shift[b], ...] along `axis`, zero past the edge."""
    size = x.shape[axis]
    positions = jnp.arange(size).reshape([size if a == axis else 1 for a in range(x.ndim)])
    source = positions + jnp.asarray(shift, jnp.int32).reshape((-1,) + (1,) * (x.ndim - 1))
    inside = (source >= 0) & (source < size)
    index = jnp.broadcast_to(jnp.clip(source, 0, size - 1), x.shape)
    gathered = jnp.take_along_axis(x, index, axis=axis)
    return jnp.where(inside, gathered, 0.0)


def translation(x, shift_y, shift_x):
    """out[b, i, j] = x[b, i + shift_y[b], j + shift_x[b]], zero where that falls outside.

    Integer shifts (B,), drawn in [-s, s] with s = int(side * 0.125 + 0.5) per axis: a
    positive shift moves the content up (left), as in the authors' rand_translation. A
    per-example gather along each axis, so the shifts may be traced values under jit.
    """
    x, dtype = _float32(x)
    x = _shift_axis(_shift_axis(x, shift_y, axis=1), shift_x, axis=2)
    return x.astype(dtype)


def cutout_mask(shape, centre_y, centre_x):
    """(B, H, W, 1) float mask: 0 on each example's square, 1 elsewhere.

    The square has side k = int(side * 0.5 + 0.5) per axis and covers rows
    centre_y - k // 2 .. centre_y - k // 2 + k - 1 (columns likewise), clipped at the border.
    """
    height, width = shape[:2]
    k_y, k_x = _round_half_up(height, CUTOUT_RATIO), _round_half_up(width, CUTOUT_RATIO)
    start_y = jnp.asarray(centre_y, jnp.int32)[:, None] - k_y // 2
    start_x = jnp.asarray(centre_x, jnp.int32)[:, None] - k_x // 2
    rows, cols = jnp.arange(height)[None], jnp.arange(width)[None]
    in_rows = (rows >= start_y) & (rows < start_y + k_y)  # (B, H)
    in_cols = (cols >= start_x) & (cols < start_x + k_x)  # (B, W)
    cut = in_rows[:, :, None] & in_cols[:, None, :]
    return jnp.where(cut, 0.0, 1.0)[..., None]


def cutout(x, centre_y, centre_x):
    """Zeroes a square of half the image side per example at the given integer centres (B,),
    drawn as the authors' rand_cutout does: in [0, side - k % 2] for a square of side k."""
    x, dtype = _float32(x)
    return (x * cutout_mask(x.shape[1:], centre_y, centre_x)).astype(dtype)


# --- Policies ------------------------------------------------------------------------------


def parse_policy(text: str) -> tuple[str, ...]:
    """'color,translation,cutout' -> the names in POLICIES order; '' -> (). Spaces are ignored."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in POLICIES:
            raise ConfigError(f"augment policy {name!r} unknown; valid: {', '.join(POLICIES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"augment policy {text!r} names a transform twice")
    return tuple(name for name in POLICIES if name in names)


def _policy(policy: str | Sequence[str]) -> tuple[str, ...]:
    return parse_policy(policy if isinstance(policy, str) else ",".join(policy))


# The random values, one row each of one uniform draw (len(VALUES), B).
VALUES = ("brightness", "saturation", "contrast", "shift_y", "shift_x", "centre_y", "centre_x")


def _integers(u, low: int, high: int):
    """Integers uniform in [low, high) from u ~ U[0, 1): floor(u * n), n = high - low.

    The clip catches u * n rounding up to n in float32; jax's uniform floats take 2^23
    values, so the integers' probabilities differ from 1/n by under n / 2^23 relative.
    """
    n = high - low
    return low + jnp.minimum(jnp.floor(u * n), n - 1).astype(jnp.int32)


def draw(key, batch: int, shape: Sequence[int], policy: str | Sequence[str]) -> dict:
    """The policy's random values for `batch` images of shape (H, W, C), arrays (B,) by name.

    All come from one uniform draw of len(VALUES) rows, so a transform's values do not depend
    on which other transforms the policy names. Ranges, as the authors' DiffAugment: the
    color values as in `color`; shifts in [-s, s], s = int(side * 0.125 + 0.5); cut-out
    centres in [0, side - k % 2] for a square of side k = int(side * 0.5 + 0.5).
    """
    names = _policy(policy)
    if not names:
        return {}
    height, width = shape[:2]
    u = dict(zip(VALUES, jax.random.uniform(key, (len(VALUES), batch)), strict=True))
    values = {}
    if "color" in names:
        values["brightness"] = u["brightness"] - 0.5
        values["saturation"] = u["saturation"] * 2.0
        values["contrast"] = u["contrast"] + 0.5
    if "translation" in names:
        s_y = _round_half_up(height, TRANSLATION_RATIO)
        s_x = _round_half_up(width, TRANSLATION_RATIO)
        values["shift_y"] = _integers(u["shift_y"], -s_y, s_y + 1)
        values["shift_x"] = _integers(u["shift_x"], -s_x, s_x + 1)
    if "cutout" in names:
        k_y, k_x = _round_half_up(height, CUTOUT_RATIO), _round_half_up(width, CUTOUT_RATIO)
        values["centre_y"] = _integers(u["centre_y"], 0, height + 1 - k_y % 2)
        values["centre_x"] = _integers(u["centre_x"], 0, width + 1 - k_x % 2)
    return values


def apply(x, values: dict, policy: str | Sequence[str]):
    """The policy's transforms on x (B, H, W, C) with the given values, in POLICIES order."""
    names = _policy(policy)
    if "color" in names:
        x = color(x, values["brightness"], values["saturation"], values["contrast"])
    if "translation" in names:
        x = translation(x, values["shift_y"], values["shift_x"])
    if "cutout" in names:
        x = cutout(x, values["centre_y"], values["centre_x"])
    return x


def augment(x, key, policy: str | Sequence[str]):
    """DiffAugment of x (B, H, W, C) with values drawn from `key`; x itself for an empty policy.

    Equal to apply(x, draw(key, len(x), x.shape[1:], policy), policy).
    """
    return apply(x, draw(key, x.shape[0], x.shape[1:], policy), policy)
