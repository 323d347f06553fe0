"""What sample.py's modes show (samples, interpolations, reconstructions, scatter plots) and
how model outputs become pixels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from genjax import experiment, sampling
from genjax.config import ConfigError, base_config
from genjax.data import load_source
from genjax.experiment import restore

SHAPE, Z_DIM = (8, 8, 1), 6


def trained_like(name: str, likelihood: str = "bernoulli"):
    """(experiment, initial state) of a small image model."""
    c = base_config()
    c.model.name, c.model.z_dim, c.model.hidden = name, Z_DIM, 16
    if name.startswith("vae"):
        c.vae.likelihood = likelihood
    exp = experiment.build(c, "image", SHAPE)
    return exp, exp.init_state(jax.random.PRNGKey(0))


def _latents_as_output(monkeypatch):
    """The GAN family's decode replaced by the identity on z, and a config of Z_DIM latents."""
    from types import SimpleNamespace

    from genjax.families import GAN

    monkeypatch.setattr(GAN, "decode", lambda config, models, state, z, key, labels=None: z)
    return GAN, SimpleNamespace(model=SimpleNamespace(z_dim=Z_DIM))


def test_to_uint8_rounds_and_clips():
    values = np.array([-0.5, 0.0, 0.3 / 255, 0.7 / 255, 254.6 / 255, 1.0, 1.5], np.float32)
    np.testing.assert_array_equal(sampling.to_uint8(values), [0, 0, 0, 1, 255, 255, 255])


@pytest.mark.parametrize(
    ("name", "likelihood"), [("gan_mlp", None), ("vae_mlp", "bernoulli"), ("vae_mlp", "gaussian")]
)
def test_decode_shows_each_models_mean_in_the_unit_range(name, likelihood):
    """GAN: tanh outputs in [-1, 1] mapped to [0, 1]; VAE: the likelihood's mean (Bernoulli
    probabilities; Gaussian means, the first C of the decoder's 2C channels, clipped)."""
    exp, state = trained_like(name, likelihood or "bernoulli")
    key = jax.random.PRNGKey(1)
    z = jax.random.normal(jax.random.split(key)[0], (5, Z_DIM))  # as Family.sample draws it
    if name == "gan_mlp":
        variables = {"params": state.g_params, "batch_stats": state.g_stats}
    else:
        variables = {"params": state.params["decoder"], "batch_stats": {}}
    raw = exp.models[0 if name == "gan_mlp" else 1].apply(variables, z, train=False)
    shown = exp.sample(state, key, 5)
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
    family, config = _latents_as_output(monkeypatch)
    z = np.asarray(family.interpolate(config, None, None, jax.random.PRNGKey(2), 3, 8))
    rows = z.reshape(3, 8, Z_DIM)
    t = np.linspace(0, 1, 8)[:, None]
    for row in rows:
        assert not np.allclose(row[0], row[-1])
        np.testing.assert_allclose(row, (1 - t) * row[0] + t * row[-1], rtol=1e-5, atol=1e-6)
    assert len({tuple(np.round(row[0], 5)) for row in rows}) == 3  # each row its own line


def test_reconstructions_pair_each_image_with_its_decoded_encoding():
    from genjax.families.vae import encode_mean

    exp, state = trained_like("vae_mlp")
    images = np.random.default_rng(0).integers(0, 256, (3, *SHAPE), np.uint8)
    recon = np.asarray(exp.reconstruct(state, {"image": images}))
    x = jnp.asarray(images / np.float32(255))
    mean, _ = exp.models[0].apply({"params": state.params["encoder"]}, x, train=False)
    np.testing.assert_allclose(mean, encode_mean(exp.models, state, x), rtol=1e-6)
    logits = exp.models[1].apply({"params": state.params["decoder"]}, mean, train=False)
    np.testing.assert_allclose(recon, jax.nn.sigmoid(logits), rtol=1e-5, atol=1e-6)
    assert not np.allclose(recon, x)


@pytest.mark.parametrize(
    "points",
    [[[1.0, 1.0]], [[1.0, 1.0], [np.nan, 0.0]]],  # a diverged generator's point is left out
    ids=["finite", "one_nan_point"],
)
def test_scatter_plot_draws_y_up_and_skips_nonfinite_points(points):
    image = np.asarray(sampling.scatter_plot(np.array(points), np.array([[0.0, 0.0]]), 64))
    blue = np.argwhere(np.all(image == (31, 119, 180), axis=-1))
    grey = np.argwhere(np.all(image == (190, 190, 190), axis=-1))
    assert len(blue) and len(grey)
    assert (blue[:, 0] < 32).all() and (blue[:, 1] > 32).all()  # rows from the top: top right
    assert (grey[:, 0] > 32).all() and (grey[:, 1] < 32).all()  # bottom left


def test_interpolation_rows_run_from_one_standard_normal_latent_to_another(monkeypatch):
    # Each row's end points are independent N(0, I) draws: squared norms average z_dim and
    # the two ends are uncorrelated; a line stopped short of its end (t < 1) fails both.
    family, config = _latents_as_output(monkeypatch)
    z = family.interpolate(config, None, None, jax.random.PRNGKey(2), 4000, 8)
    rows = np.asarray(z).reshape(4000, 8, Z_DIM)
    start, end = rows[:, 0], rows[:, -1]
    for x in (start, end):
        assert abs(np.mean(np.sum(x**2, -1)) / Z_DIM - 1) < 0.05  # 5 standard errors
    assert abs(np.mean(start * end)) < 0.03  # 4.6 standard errors


def test_image_grid_puts_each_image_in_its_own_cell_row_major_on_white():
    # 5 RGB images of 3x2 pixels, values 10..50, 3 columns, pad 1: cells by hand.
    images = np.stack([np.full((3, 2, 3), 10 * (i + 1), np.uint8) for i in range(5)])
    grid = np.asarray(sampling.image_grid(images, columns=3, pad=1))
    expected = np.full((9, 10, 3), 255, np.uint8)
    cells = [(1, 1), (1, 4), (1, 7), (5, 1), (5, 4)]  # (top, left)
    for value, (top, left) in zip([10, 20, 30, 40, 50], cells, strict=True):
        expected[top : top + 3, left : left + 2] = value
    np.testing.assert_array_equal(grid, expected)
    grey = np.asarray(sampling.image_grid(images[..., :1]))  # ceil(sqrt(5)) = 3 columns, pad 2
    assert grey.shape == (2 * (3 + 2) + 2, 3 * (2 + 2) + 2)


@pytest.fixture(scope="module")
def vae_workdir(tmp_path_factory):
    """The MLP VAE of configs/vae_mlp_mnist.py, small and trained for 2 steps."""
    from configs.vae_mlp_mnist import get_config
    from genjax.train import train_and_evaluate

    c = get_config()
    c.model.hidden, c.batch_size, c.num_steps, c.steps_per_call = 32, 16, 2, 2
    c.log_every, c.sample_every, c.checkpoint_every = 2, 0, 2
    workdir = tmp_path_factory.mktemp("vae") / "run"
    train_and_evaluate(c, workdir)
    return workdir


def test_scatter_is_refused_for_an_image_model(vae_workdir, tmp_path):
    with pytest.raises(ConfigError, match="scatter"):
        sampling.write_samples(vae_workdir, tmp_path / "s.png", 4, mode="scatter")
    assert not (tmp_path / "s.png").exists()


def test_reconstruct_pairs_the_first_test_images_with_reconstructions(vae_workdir, tmp_path):
    num = 20
    out = sampling.write_samples(vae_workdir, tmp_path / "r.npz", num, mode="reconstruct")
    pairs = np.load(out)["samples"]
    assert pairs.shape == (2 * num, 28, 28, 1)
    expected = load_source("mnist5k", "test").to_arrays()["image"][:num]
    np.testing.assert_array_equal(pairs[0::2], expected)  # originals in the even places
    # the picture: each (image, reconstruction) pair side by side, 8 pairs a row -> 16 columns
    # and 3 rows of 28-pixel cells with 2-pixel padding
    out = sampling.write_samples(vae_workdir, tmp_path / "r.png", num, mode="reconstruct")
    with Image.open(out) as image:
        assert image.size == (16 * 30 + 2, 3 * 30 + 2)


def test_interpolate_is_rows_of_8_steps_from_the_seed(vae_workdir, tmp_path):
    """--num 12 -> 2 rows of 8 steps: the same as interpolations(rows=2, steps=8) (tested in
    test_sampling.py) from PRNGKey(seed)."""
    out = sampling.write_samples(vae_workdir, tmp_path / "i.npz", 12, seed=3, mode="interpolate")
    run = restore(vae_workdir)
    expected = run.experiment.interpolate(run.state, jax.random.PRNGKey(3), rows=2, steps=8)
    np.testing.assert_array_equal(np.load(out)["samples"], sampling.to_uint8(expected))
    out = sampling.write_samples(vae_workdir, tmp_path / "i.png", 12, seed=3, mode="interpolate")
    with Image.open(out) as image:
        assert image.size == (8 * 30 + 2, 2 * 30 + 2)
