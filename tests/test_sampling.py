"""What sample.py's modes show (samples, interpolations, reconstructions, scatter plots) and
how model outputs become pixels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import experiment, sampling
from genjax.config import base_config

SHAPE, Z_DIM = (8, 8, 1), 6


def trained_like(name: str, likelihood: str = "bernoulli"):
    """(models, initial state) of a small image model."""
    c = base_config()
    c.model.name, c.model.z_dim, c.model.hidden = name, Z_DIM, 16
    c.vae.likelihood = likelihood
    exp = experiment.build(c, SHAPE)
    return exp.models, exp.init_state(jax.random.PRNGKey(0))


def test_to_uint8_rounds_and_clips():
    values = np.array([-0.5, 0.0, 0.3 / 255, 0.7 / 255, 254.6 / 255, 1.0, 1.5], np.float32)
    np.testing.assert_array_equal(sampling.to_uint8(values), [0, 0, 0, 1, 255, 255, 255])


@pytest.mark.parametrize(
    ("name", "likelihood"), [("gan_mlp", None), ("vae_mlp", "bernoulli"), ("vae_mlp", "gaussian")]
)
def test_decode_shows_each_models_mean_in_the_unit_range(name, likelihood):
    """GAN: tanh outputs in [-1, 1] mapped to [0, 1]; VAE: the likelihood's mean (Bernoulli
    probabilities; Gaussian means, the first C of the decoder's 2C channels, clipped)."""
    models, state = trained_like(name, likelihood or "bernoulli")
    z = jax.random.normal(jax.random.PRNGKey(1), (5, Z_DIM))
    network = models[0] if name == "gan_mlp" else models[1]
    raw = network.apply(sampling.generator_variables(state), z, train=False)
    shown = sampling.decode(models, state, z, likelihood or "bernoulli")
    assert shown.shape == (5, *SHAPE)
    if name == "gan_mlp":
        assert raw.min() < 0  # so that a missing map to [0, 1] shows
        expected = (raw + 1) / 2
    elif likelihood == "bernoulli":
        expected = jax.nn.sigmoid(raw)
    else:
        assert raw.shape[-1] == 2 * SHAPE[-1]  # means, then log-stds
        expected = jnp.clip(raw[..., : SHAPE[-1]], 0, 1)
    np.testing.assert_allclose(shown, expected, rtol=1e-6, atol=1e-7)


def test_interpolation_rows_are_straight_lines_between_two_latents(monkeypatch):
    monkeypatch.setattr(sampling, "decode", lambda models, state, z, likelihood, key: z)
    z = np.asarray(sampling.interpolations(None, None, jax.random.PRNGKey(2), 3, Z_DIM, 8))
    rows = z.reshape(3, 8, Z_DIM)
    t = np.linspace(0, 1, 8)[:, None]
    for row in rows:
        assert not np.allclose(row[0], row[-1])
        np.testing.assert_allclose(row, (1 - t) * row[0] + t * row[-1], rtol=1e-5, atol=1e-6)
    assert len({tuple(np.round(row[0], 5)) for row in rows}) == 3  # each row its own line


def test_reconstructions_pair_each_image_with_its_decoded_encoding():
    models, state = trained_like("vae_mlp")
    images = np.random.default_rng(0).integers(0, 256, (3, *SHAPE), np.uint8)
    pairs = np.asarray(sampling.reconstructions(models, state, images))
    x = images / np.float32(255)
    np.testing.assert_allclose(pairs[0::2], x, rtol=1e-6)
    mean = sampling.decode(models, state, sampling.encode_mean(models, state, jnp.asarray(x)))
    np.testing.assert_allclose(pairs[1::2], mean, rtol=1e-5, atol=1e-6)
    assert not np.allclose(pairs[0::2], pairs[1::2])


def test_scatter_plot_draws_y_up():
    image = np.asarray(sampling.scatter_plot(np.array([[1.0, 1.0]]), np.array([[0.0, 0.0]]), 64))
    blue = np.argwhere(np.all(image == (31, 119, 180), axis=-1))
    grey = np.argwhere(np.all(image == (190, 190, 190), axis=-1))
    assert len(blue) and len(grey)
    assert (blue[:, 0] < 32).all() and (blue[:, 1] > 32).all()  # rows from the top: top right
    assert (grey[:, 0] > 32).all() and (grey[:, 1] < 32).all()  # bottom left
