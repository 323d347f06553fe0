"""DiffAugment against NumPy re-implementations, hand-worked images and closed-form gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import augment
from genjax.config import ConfigError

# Compiled once per policy and shape: a handful of XLA programs rather than many eager ops.
draw = jax.jit(augment.draw, static_argnums=(1, 2, 3))
apply = jax.jit(augment.apply, static_argnums=2)
color, translation, cutout = (
    jax.jit(f) for f in (augment.color, augment.translation, augment.cutout)
)


def close(actual, expected, tol=1e-5):
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=tol, atol=tol)


def images(seed, shape):
    return np.random.default_rng(seed).uniform(-1, 1, size=shape).astype(np.float32)


# --- NumPy references, one example at a time --------------------------------------------------


def np_color(x, brightness, saturation, contrast):
    out = np.empty(x.shape, np.float64)
    for b, image in enumerate(x.astype(np.float64)):
        image = image + brightness[b]
        channel_mean = image.mean(axis=2, keepdims=True)
        image = (image - channel_mean) * saturation[b] + channel_mean
        image_mean = image.mean()
        out[b] = (image - image_mean) * contrast[b] + image_mean
    return out


def np_translation(x, shift_y, shift_x):
    """out[b, i, j] = x[b, i + shift_y[b], j + shift_x[b]] where that pixel exists, else 0."""
    out = np.zeros_like(x)
    _, height, width, _ = x.shape
    for b in range(len(x)):
        for i in range(height):
            for j in range(width):
                si, sj = i + shift_y[b], j + shift_x[b]
                if 0 <= si < height and 0 <= sj < width:
                    out[b, i, j] = x[b, si, sj]
    return out


def np_cutout(x, centre_y, centre_x):
    """Zeroes rows c - k//2 .. c - k//2 + k - 1 (columns likewise), k = int(side / 2 + 0.5)."""
    out = x.copy()
    _, height, width, _ = x.shape
    k_y, k_x = int(height * 0.5 + 0.5), int(width * 0.5 + 0.5)
    for b in range(len(x)):
        y0, x0 = centre_y[b] - k_y // 2, centre_x[b] - k_x // 2
        out[b, max(y0, 0) : min(y0 + k_y, height), max(x0, 0) : min(x0 + k_x, width)] = 0
    return out


# --- The transforms with fixed values ---------------------------------------------------------


def test_color_matches_numpy():
    x = images(0, (4, 6, 5, 3))
    brightness = np.array([-0.5, 0.1, 0.0, 0.45], np.float32)
    saturation = np.array([0.0, 1.7, 1.0, 0.3], np.float32)
    contrast = np.array([1.4, 0.5, 1.0, 0.9], np.float32)
    got = color(x, brightness, saturation, contrast)
    expected = np_color(x, brightness, saturation, contrast)
    assert np.abs(expected - x).max() > 0.5  # the values change the images
    close(got, expected)
    # Saturation scales deviations from the channel mean: a one-channel image has none.
    grey = x[..., :1]
    close(
        color(grey, brightness, saturation, contrast),
        color(grey, brightness, np.ones(4, np.float32), contrast),
    )


def test_translation_by_hand():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    shifts = lambda *s: np.array(s, np.int32)  # noqa: E731 - one compiled program for all three
    # +1 along y: row i shows row i + 1; the last row has no source and is zero.
    down = [[4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [0, 0, 0, 0]]
    close(translation(x, shifts(1), shifts(0))[0, ..., 0], down)
    # -1 along x: column j shows column j - 1; the first column is zero.
    right = [[0, 0, 1, 2], [0, 4, 5, 6], [0, 8, 9, 10], [0, 12, 13, 14]]
    close(translation(x, shifts(0), shifts(-1))[0, ..., 0], right)
    both = [[0, 0, 0, 0], [0, 0, 1, 2], [0, 4, 5, 6], [0, 8, 9, 10]]
    close(translation(x, shifts(-1), shifts(-1))[0, ..., 0], both)


def test_translation_matches_numpy_with_traced_shifts():
    x = images(1, (6, 8, 7, 2))
    shift_y = np.array([0, 1, -1, 3, -7, 9], np.int32)  # 9: every source row is outside
    shift_x = np.array([0, -1, 2, -3, 1, 0], np.int32)
    got = translation(x, shift_y, shift_x)
    close(got, np_translation(x, shift_y, shift_x), 0)
    assert np.all(np.asarray(got[5]) == 0)


def test_cutout_matches_numpy_and_clips_at_the_border():
    x = images(2, (5, 8, 8, 2))
    centre_y = np.array([4, 0, 8, 2, 7], np.int32)
    centre_x = np.array([4, 0, 8, 6, 1], np.int32)
    got = np.asarray(cutout(x, centre_y, centre_x))
    close(got, np_cutout(x, centre_y, centre_x), 0)
    # k = 4: the square covers rows c - 2 .. c + 1 (columns likewise). Zeroed values per
    # example (pixels x 2 channels): (4, 4) rows 2-5, cols 2-5: 16 pixels; (0, 0) rows 0-1,
    # cols 0-1: 4; (8, 8) rows 6-7, cols 6-7: 4; (2, 6) rows 0-3, cols 4-7: 16; (7, 1)
    # rows 5-7, cols 0-2: 9.
    assert [int(np.sum(g == 0)) for g in got] == [32, 8, 8, 32, 18]
    assert np.all(got[1, :2, :2] == 0) and np.all(got[1, 2:, :] != 0)
    # Odd side and non-square image: k_y = int(5 / 2 + 0.5) = 3, k_x = int(6 / 2 + 0.5) = 3.
    x = images(3, (2, 5, 6, 1))
    centre_y, centre_x = np.array([0, 4], np.int32), np.array([5, 2], np.int32)
    close(cutout(x, centre_y, centre_x), np_cutout(x, centre_y, centre_x), 0)


def test_bfloat16_images_keep_their_dtype():
    x = jnp.asarray(images(4, (2, 4, 4, 3)), jnp.bfloat16)
    values = draw(jax.random.key(0), 2, x.shape[1:], augment.POLICIES)
    assert apply(x, values, augment.POLICIES).dtype == jnp.bfloat16


# --- Gradients --------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=2)
def input_gradients(x, key, policies):
    """d sum(augment(x, key, policy)) / dx for each policy, in one compiled program."""
    return [jax.grad(lambda v, p=p: jnp.sum(augment.augment(v, key, p)))(x) for p in policies]


def test_gradient_of_cutout_and_translation_is_their_mask():
    x = images(5, (8, 8, 8, 1))
    key = jax.random.key(5)
    values = {k: np.asarray(v) for k, v in draw(key, 8, x.shape[1:], augment.POLICIES).items()}
    ones = np.ones_like(x)
    # d sum(cutout(x)) / dx = the mask; d sum(translation(x)) / dx counts the outputs that show
    # each input pixel (0 or 1); translation then cutout: the cutout mask carried back.
    mask = np_cutout(ones, values["centre_y"], values["centre_x"])
    assert 0 < mask.sum() < mask.size
    shown = np.zeros_like(x)
    back = np.zeros_like(x)
    for b in range(len(x)):
        for i in range(8):
            for j in range(8):
                si, sj = i + values["shift_y"][b], j + values["shift_x"][b]
                if 0 <= si < 8 and 0 <= sj < 8:
                    shown[b, si, sj] += 1
                    back[b, si, sj] += mask[b, i, j]
    assert shown.sum() < shown.size  # some example is shifted
    grads = input_gradients(x, key, ("cutout", "translation", "translation,cutout"))
    for got, expected in zip(grads, (mask, shown, back), strict=True):
        close(got, expected, 0)


def test_gradient_of_color():
    x = images(6, (3, 5, 5, 3))
    key = jax.random.key(6)
    values = {k: np.asarray(v) for k, v in draw(key, 3, x.shape[1:], "color").items()}
    w = images(7, x.shape)
    plain, weighted = jax.jit(
        lambda v: (
            jax.grad(lambda t: jnp.sum(augment.augment(t, key, "color")))(v),
            jax.grad(lambda t: jnp.sum(w * augment.apply(t, values, "color")))(v),
        )
    )(x)
    # Saturation and contrast keep each image's sum; brightness adds a constant: grad = 1.
    close(plain, np.ones_like(x))
    # With weights, against a float64 central difference of the NumPy reference along a
    # random direction (color is affine in x for fixed values).
    assert np.all(np.isfinite(weighted))
    direction = images(8, x.shape).astype(np.float64)
    ref = lambda v: np.sum(w * np_color(v, **values))  # noqa: E731
    h = 1e-3
    fd = (ref(x + h * direction) - ref(x - h * direction)) / (2 * h)
    close(np.sum(np.asarray(weighted, np.float64) * direction), fd, 1e-4)


# --- draw, apply, augment ---------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=2)
def augment_and_apply_of_draw(x, key, policy):
    values = augment.draw(key, len(x), x.shape[1:], policy)
    return augment.augment(x, key, policy), augment.apply(x, values, policy)


def test_augment_is_apply_of_draw():
    x = images(9, (4, 8, 8, 3))
    key = jax.random.key(9)
    got, expected = augment_and_apply_of_draw(x, key, "color,translation,cutout")
    close(got, expected, 0)
    assert np.abs(np.asarray(got) - x).max() > 0.1
    # A transform's values do not depend on the others the policy names.
    alone = draw(key, 4, (8, 8, 3), "cutout")
    together = draw(key, 4, (8, 8, 3), augment.POLICIES)
    assert set(alone) == {"centre_y", "centre_x"} and set(together) == set(augment.VALUES)
    for name in alone:
        np.testing.assert_array_equal(alone[name], together[name])


def test_draw_ranges_are_the_authors():
    values = draw(jax.random.key(10), 2000, (32, 28, 3), augment.POLICIES)
    values = {k: np.asarray(v) for k, v in values.items()}
    assert all(v.shape == (2000,) for v in values.values())
    for name, low, high in (
        ("brightness", -0.5, 0.5),
        ("saturation", 0.0, 2.0),
        ("contrast", 0.5, 1.5),
    ):
        v = values[name]
        assert low <= v.min() < low + 0.01 and high - 0.01 < v.max() < high, name
    # Shifts: int(32 / 8 + 0.5) = 4 and int(28 / 8 + 0.5) = 4, every integer in [-4, 4].
    assert set(values["shift_y"]) == set(range(-4, 5))
    assert set(values["shift_x"]) == set(range(-4, 5))
    # Centres: squares of even side (16 and 14) take centres 0 .. H and 0 .. W inclusive.
    assert set(values["centre_y"]) == set(range(33))
    assert set(values["centre_x"]) == set(range(29))
    # An odd square (side 5 -> k = 3) takes centres 0 .. 4 only.
    odd = draw(jax.random.key(11), 500, (5, 5, 1), "cutout")
    assert set(np.asarray(odd["centre_y"])) == set(range(5))


def test_empty_policy_is_the_identity():
    x = images(12, (2, 4, 4, 1))
    assert augment.augment(x, jax.random.key(0), "") is x
    assert augment.augment(x, jax.random.key(0), ()) is x
    assert augment.draw(jax.random.key(0), 2, x.shape[1:], "") == {}


def test_parse_policy():
    assert augment.parse_policy("") == ()
    assert augment.parse_policy("color,translation,cutout") == augment.POLICIES
    assert augment.parse_policy(" cutout , color") == ("color", "cutout")
    with pytest.raises(ConfigError, match="valid: color, translation, cutout") as error:
        augment.parse_policy("color,flip")
    assert "'flip'" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="twice"):
        augment.parse_policy("color,color")
    with pytest.raises(ConfigError, match="'rotate'"):
        augment.apply(np.zeros((1, 4, 4, 1), np.float32), {}, ("rotate",))
