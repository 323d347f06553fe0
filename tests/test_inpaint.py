"""Inpainting (masks, the VAE and GAN fills, the baselines, evaluate's inpaint_mse), sample.py's
inpaint and dataset modes, the mix: source they feed, and their errors."""

import functools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import experiment, inpaint, sampling
from genjax.config import ConfigError, base_config
from genjax.data import load_source
from genjax.metrics.evaluate import inpaint_metrics

SHAPE = (8, 8, 1)


# ------------------------------------------------------------------------------ masks


def test_masks_hide_the_named_half_or_centre_or_random_pixels():
    """On a 4 x 6 image (0 = missing): bottom/top rows 2-3/0-1, left/right columns 0-2/3-5,
    centre the 2 x 3 block at rows 1-2, columns 1-3; random:P hides about P of the pixels."""
    missing = {
        "bottom": np.s_[2:, :],
        "top": np.s_[:2, :],
        "left": np.s_[:, :3],
        "right": np.s_[:, 3:],
        "centre": np.s_[1:3, 1:4],
    }
    for name, region in missing.items():
        expected = np.ones((4, 6), np.float32)
        expected[region] = 0
        masks = inpaint.make_masks(name, 2, (4, 6, 3))
        assert masks.shape == (2, 4, 6, 1)
        np.testing.assert_array_equal(masks[1, ..., 0], expected, err_msg=name)
    masks = inpaint.make_masks("random:0.25", 400, (8, 8, 1), seed=0)
    assert abs(1 - masks.mean() - 0.25) < 0.01  # 25,600 pixels: 9 standard errors
    assert not np.array_equal(masks[0], masks[1])  # each image its own pixels
    np.testing.assert_array_equal(masks, inpaint.make_masks("random:0.25", 400, (8, 8, 1), 0))


@pytest.mark.parametrize("spec", ["diagonal", "random", "random:1.5", "random:x", "bottom:2"])
def test_a_mask_that_does_not_parse_names_the_valid_ones(spec):
    with pytest.raises(ConfigError, match="valid: bottom, top, left, right, centre, all, random:P"):
        inpaint.parse_mask(spec)


def test_context_weights_count_the_missing_pixels_around_each_known_one():
    rng = np.random.default_rng(0)
    mask = (rng.random((2, 6, 5, 1)) < 0.6).astype(np.float32)
    got = np.asarray(inpaint.context_weights(jnp.asarray(mask), window=3))
    padded = np.pad(1 - mask, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.zeros_like(mask)
    for b, i, j in np.ndindex(2, 6, 5):
        if mask[b, i, j, 0]:
            expected[b, i, j, 0] = padded[b, i : i + 3, j : j + 3, 0].sum() / 9
    np.testing.assert_allclose(got, expected, rtol=1e-6)


# ------------------------------------------------------------------------- algorithms


def test_pseudo_gibbs_feeds_each_clamped_draw_back_and_returns_the_last_mean():
    """A column image [a, b, ?, ?] with an 'encoder' z = x and a 'decoder' that moves every
    pixel one row down: each iteration carries the known rows one row further into the hole,
    which only happens if each draw, with the known rows clamped, is the next input."""
    x = jnp.array([0.2, 0.9, 0.0, 0.0]).reshape(1, 4, 1, 1)
    mask = jnp.array([1.0, 1.0, 0.0, 0.0]).reshape(1, 4, 1, 1)

    def down(z, key):
        moved = jnp.roll(z, 1, axis=1)
        return moved, moved

    key = jax.random.PRNGKey(0)
    one = inpaint.pseudo_gibbs(lambda x, k: x, down, x, mask, key, iterations=1)
    np.testing.assert_allclose(one[0, :, 0, 0], [0.2, 0.9, 0.9, 0.5])
    two = inpaint.pseudo_gibbs(lambda x, k: x, down, x, mask, key, iterations=2)
    np.testing.assert_allclose(two[0, :, 0, 0], [0.2, 0.9, 0.9, 0.9])


def test_a_weighted_log_likelihood_sums_the_known_pixels_bernoulli_terms():
    from genjax import objectives

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, *SHAPE)).astype(np.float32)
    x = rng.uniform(size=(2, *SHAPE)).astype(np.float32)
    mask = inpaint.make_masks("random:0.5", 2, SHAPE, seed=3)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    per_pixel = x * np.log(p) + (1 - x) * np.log1p(-p)
    expected = np.sum(per_pixel * mask, axis=(1, 2, 3))
    got = objectives.log_likelihood(logits, x, "bernoulli", weights=mask)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_importance_resampling_draws_from_the_weighted_target():
    """Proposals N(0, 1), weights N(z; 1, 0.5^2) / N(z; 0, 1): the resampled z of 4,000
    independent examples follow N(1, 0.5^2) (sampling importance resampling is exact as the
    number of proposals grows; 200 here)."""

    def log_normal(z, mean, std):
        return -0.5 * jnp.square((z - mean) / std) - jnp.log(std) - 0.5 * np.log(2 * np.pi)

    def propose(key):
        z = jax.random.normal(key, (4000, 1))
        return z, log_normal(z, 0.0, 1.0)[:, 0]

    z = jax.jit(
        lambda key: inpaint.importance_resample(
            propose, lambda z: log_normal(z, 1.0, 0.5)[:, 0], key, 200
        )
    )(jax.random.PRNGKey(0))
    assert abs(float(z.mean()) - 1.0) < 0.03
    assert abs(float(z.std()) - 0.5) < 0.03


def test_latent_optimisation_recovers_the_latent_of_a_linear_generator():
    """G(z) = z M with 4 latents, 12 known and 4 missing pixels: the known pixels determine
    z, so minimising the contextual loss (no prior) fills the missing ones as G(z*)."""
    rng = np.random.default_rng(1)
    m = jnp.asarray(rng.normal(size=(4, 16)), jnp.float32)
    z_true = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    x = (z_true @ m).reshape(3, 4, 4, 1)
    mask = jnp.ones((3, 4, 4, 1)).at[:, 1:3, 1:3].set(0.0)  # the centre is missing
    z = inpaint.latent_optimisation(
        lambda z: (z @ m).reshape(-1, 4, 4, 1),
        lambda images: jnp.zeros(len(images)),
        x,
        mask,
        jnp.zeros((3, 4)),
        steps=600,
        lr=0.05,
    )
    np.testing.assert_allclose(z, z_true, atol=0.05)


def test_baselines_are_the_mean_and_the_nearest_image_on_the_known_pixels():
    rng = np.random.default_rng(2)
    train = rng.random((30, 4, 4, 2)).astype(np.float32)
    x = rng.random((5, 4, 4, 2)).astype(np.float32)
    mask = inpaint.make_masks("random:0.5", 5, (4, 4, 2), seed=3)
    fills = inpaint.baseline_fills(train, x, mask)
    for n in range(5):
        known = np.broadcast_to(mask[n], x[n].shape) > 0
        distances = [np.sum((t[known] - x[n][known]) ** 2) for t in train]
        nearest = train[int(np.argmin(distances))]
        np.testing.assert_allclose(fills["nearest"][n], np.where(known, x[n], nearest))
        mean = train.mean(axis=0)
        np.testing.assert_allclose(fills["mean_image"][n], np.where(known, x[n], mean), rtol=1e-6)
    missing = np.broadcast_to(mask, x.shape) == 0
    expected = np.mean((fills["nearest"][missing] - x[missing]) ** 2)
    np.testing.assert_allclose(inpaint.masked_mse(fills["nearest"], x, mask), expected, rtol=1e-6)


# --------------------------------------------------------------------------- families


def _build(name, num_classes=0, **model):
    c = base_config()
    c.model.name, c.model.z_dim, c.model.hidden = name, 4, 16
    for key, value in model.items():
        c.model[key] = value
    exp = experiment.build(c, "image", SHAPE, num_classes)
    return exp, exp.init_state(jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def cvae():
    return _build("cvae_mlp", 3, depth=1)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(4)
    return {
        "image": rng.integers(0, 256, (6, *SHAPE), np.uint8),
        "label": np.array([0, 1, 2, 0, 1, 2], np.int32),
    }


def test_a_conditional_vae_is_scored_by_log_p_x_given_its_label(cvae, images):
    """For examples all of class y, the cVAE's test metrics equal those of the unconditional
    MLP VAE whose first layers' biases absorb the one-hot rows of class y (the same noise)."""
    exp, state = cvae
    y = 1
    plain = _build("vae_mlp", depth=1)[0]

    def folded(part, inputs):
        layer = state.params[part]["Dense_0"]
        kernel, bias = layer["kernel"][:inputs], layer["bias"] + layer["kernel"][inputs + y]
        return state.params[part] | {"Dense_0": {"kernel": kernel, "bias": bias}}

    params = {"encoder": folded("encoder", 64), "decoder": folded("decoder", 4)}
    same = {"image": images["image"], "label": np.full(6, y, np.int32)}
    got = exp.test_metrics(state, same, k=8, seed=0)
    expected = plain.test_metrics(
        state.replace(params=params), {"image": images["image"]}, k=8, seed=0
    )
    for name in ("test_nll", "test_neg_elbo"):
        assert got[name] == pytest.approx(expected[name], rel=1e-5)
    other = exp.test_metrics(state, {**same, "label": np.full(6, 2, np.int32)}, k=8, seed=0)
    assert abs(other["test_nll"] - got["test_nll"]) > 1e-3


def test_a_vae_fills_only_the_missing_pixels_with_independent_chains(cvae, images):
    exp, state = cvae
    masks = inpaint.make_masks("bottom", 6, SHAPE)
    key = jax.random.PRNGKey(5)
    inputs, fills = sampling.inpaint_arrays(exp, state, images, masks, key, num_fills=2)
    assert fills.shape == (6, 2, *SHAPE) and fills.dtype == np.uint8
    np.testing.assert_array_equal(inputs, images["image"])
    np.testing.assert_array_equal(fills[:, :, :4], np.repeat(inputs[:, None, :4], 2, 1))
    assert not np.array_equal(fills[:, 0, 4:], fills[:, 1, 4:])  # one chain per fill
    again = sampling.inpaint_arrays(exp, state, images, masks, key, num_fills=2)[1]
    np.testing.assert_array_equal(fills, again)
    other = {**images, "label": (images["label"] + 1) % 3}  # the classes reach the model
    assert not np.array_equal(
        fills, sampling.inpaint_arrays(exp, state, other, masks, key, num_fills=2)[1]
    )


def test_a_gan_fill_fits_the_known_pixels_better_than_its_starting_latent(monkeypatch, images):
    """The fill is G(z) after latent optimisation from z0 = N(0, I) of the key: G(z) fits the
    known pixels better than G(z0), its missing pixels are the fill's, its known pixels the
    input's."""
    monkeypatch.setattr(inpaint, "LATENT_STEPS", 50)
    found = []
    optimise = inpaint.latent_optimisation
    monkeypatch.setattr(
        inpaint, "latent_optimisation", lambda *a, **k: found.append(optimise(*a, **k)) or found[0]
    )
    exp, state = _build("gan_mlp")
    masks = jnp.asarray(inpaint.make_masks("centre", 6, SHAPE))
    x = exp.kind.model_input(images, exp.family.value_range)
    key = jax.random.PRNGKey(6)
    fills = exp.family.inpaint(exp.config, exp.models, state, x, masks, key, 1)[:, 0]

    def generate(z):
        return exp.family.decode(exp.config, exp.models, state, z, None)

    weights = inpaint.context_weights(masks)
    fit = lambda g: float(jnp.sum(jnp.abs(weights * (g - x))))  # noqa: E731
    assert fit(generate(found[0])) < 0.9 * fit(generate(jax.random.normal(key, (6, 4))))
    np.testing.assert_allclose(fills, np.where(masks > 0, x, generate(found[0])), atol=1e-6)


def test_an_autoregressive_vae_decoder_is_refused(images):
    c = base_config()
    c.model.name, c.model.z_dim, c.model.hidden, c.model.ar_kernel = "vae_mlp", 4, 16, 3
    exp = experiment.build(c, "image", SHAPE)
    state = jax.eval_shape(exp.init_state, jax.random.PRNGKey(0))
    masks = inpaint.make_masks("top", 6, SHAPE)
    with pytest.raises(ConfigError, match="independent pixels.*ar_kernel=3"):
        jax.eval_shape(lambda s: exp.inpaint(s, images, masks, jax.random.PRNGKey(0)), state)


def test_training_masks_are_drawn_per_example_from_the_listed_specs():
    """Each of 3,000 masks is one of the specs, chosen uniformly: 'all' and 'bottom' exactly as
    make_masks makes them, random:0.25 with a quarter of its pixels missing."""
    specs = inpaint.parse_masks("all, bottom,random:0.25", "masks")
    assert [s.name for s in specs] == ["all", "bottom", "random"]
    masks = np.asarray(inpaint.sample_masks(specs, SHAPE, jax.random.PRNGKey(1), 3000))
    assert masks.shape == (3000, *SHAPE[:2], 1) and set(np.unique(masks)) == {0.0, 1.0}
    fixed = {name: inpaint.make_masks(name, 1, SHAPE)[0] for name in ("all", "bottom")}
    which = {name: np.all(masks == m, axis=(1, 2, 3)) for name, m in fixed.items()}
    random = ~(which["all"] | which["bottom"])
    for chosen in (which["all"], which["bottom"], random):
        assert abs(chosen.mean() - 1 / 3) < 0.03  # 3.5 standard errors
    assert abs(1 - masks[random].mean() - 0.25) < 0.01
    with pytest.raises(ConfigError, match="no masks in"):
        inpaint.parse_masks(" , ", "masks")


@pytest.fixture(scope="module")
def masked():
    return _build("masked_vae_mlp", depth=1, train_masks="all,bottom")


def test_a_masked_vae_step_learns_the_missing_pixels_alone(masked, images):
    """Trained on bottom masks only, one step leaves the output biases of the known (top)
    pixels as they were (the reconstruction is of the missing ones) and moves the others;
    with 'all' they all move."""
    exp, state = masked
    encoder, decoder = exp.models
    x = {"image": np.asarray(images["image"])[None, None]}  # (devices, steps, B, ...)
    bias = {}
    for specs in ("bottom", "all"):
        models = (encoder.clone(train_masks=inpaint.parse_masks(specs, "masks")), decoder)
        step = exp.family.make_step(exp.config, models, exp.kind)
        vmapped = jax.jit(jax.vmap(step, in_axes=(None, 0, None), axis_name="data"))
        new, metrics = vmapped(state, x, jax.random.PRNGKey(2))
        assert np.isfinite(float(metrics["loss"][0]))
        before = state.params["decoder"]["Dense_1"]["bias"].reshape(SHAPE)
        after = new.params["decoder"]["Dense_1"]["bias"][0].reshape(SHAPE)
        bias[specs] = np.asarray(after != before)
    assert not bias["bottom"][:4].any() and bias["bottom"][4:].all()
    assert bias["all"].all()


def test_a_masked_vae_fills_from_its_decoder_given_the_known_pixels(masked, images):
    """The fill keeps the known pixels; it changes with them; with nothing known it is the
    model's unconditional sample (the decoder's mean at z ~ N(0, I) of the same key)."""
    exp, state = masked
    key = jax.random.PRNGKey(3)
    x = jnp.asarray(exp.kind.model_input(images, exp.family.value_range))
    bottom = jnp.asarray(inpaint.make_masks("bottom", 6, SHAPE))
    fills = np.asarray(exp.family.inpaint(exp.config, exp.models, state, x, bottom, key, 2))
    assert fills.shape == (6, 2, *SHAPE)
    np.testing.assert_array_equal(fills[:, :, :4], np.repeat(np.asarray(x)[:, None, :4], 2, 1))
    assert not np.allclose(fills[:, 0], fills[:, 1])
    other = x.at[:, 1].set(1.0 - x[:, 1])  # another known row
    refill = exp.family.inpaint(exp.config, exp.models, state, other, bottom, key, 2)
    assert not np.allclose(np.asarray(refill)[:, :, 4:], fills[:, :, 4:])
    nothing = jnp.asarray(inpaint.make_masks("all", 6, SHAPE))
    fills = exp.family.inpaint(exp.config, exp.models, state, x, nothing, key, 1)[:, 0]
    z = jax.random.normal(key, (6, exp.config.model.z_dim))
    samples = exp.family.decode(exp.config, exp.models, state, z, None)
    np.testing.assert_allclose(fills, samples, atol=1e-6)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"train_masks": "bottom,centre"}, "must include 'all'"),
        ({"train_masks": "all,diagonal"}, "'diagonal' is not a mask"),
        ({"train_masks": "all", "objective": "iwae"}, "trains on the ELBO"),
    ],
)
def test_a_masked_vae_refuses_masks_it_cannot_use(fields, words):
    c = base_config()
    c.model.name, c.model.z_dim, c.model.hidden = "masked_vae_mlp", 4, 16
    c.model.train_masks = fields["train_masks"]
    c.vae.objective = fields.get("objective", "elbo")
    c.vae.num_samples = 2 if "objective" in fields else 1
    with pytest.raises(ConfigError, match=words):
        experiment.build(c, "image", SHAPE)


def test_inpaint_mse_scores_the_mean_of_the_fills_and_one_fill_beside_the_baselines(cvae, images):
    exp, state = cvae
    rng = np.random.default_rng(7)
    train = load_source_like(rng.integers(0, 256, (20, *SHAPE), np.uint8))
    got = inpaint_metrics(exp, state, train, images, "left", seed=0, num_fills=3)
    masks = inpaint.make_masks("left", 6, SHAPE)
    x = images["image"] / np.float32(255)
    key = jax.random.fold_in(jax.random.PRNGKey(0), 0)
    fills = np.asarray(exp.inpaint(state, images, masks, key, num_fills=3))
    assert fills.shape == (6, 3, *SHAPE)
    assert not np.allclose(fills[:, 0], fills[:, 1])  # independent chains
    mean_fill = fills.mean(axis=1)
    assert got["inpaint_mse"] == pytest.approx(inpaint.masked_mse(mean_fill, x, masks), 1e-5)
    assert got["inpaint_mse_one_fill"] == pytest.approx(
        inpaint.masked_mse(fills[:, 0], x, masks), 1e-5
    )
    # squared error is convex: the averaged fill scores at most the fills' mean score
    per_fill = [inpaint.masked_mse(fills[:, j], x, masks) for j in range(3)]
    assert got["inpaint_mse"] <= np.mean(per_fill) + 1e-9
    base = inpaint.baseline_fills(train.to_arrays()["image"] / np.float32(255), x, masks)
    assert got["inpaint_mse_nearest"] == pytest.approx(
        inpaint.masked_mse(base["nearest"], x, masks)
    )
    assert got["inpaint_mse_mean_image"] == pytest.approx(
        inpaint.masked_mse(base["mean_image"], x, masks)
    )


def load_source_like(images_u8, labels=None):
    from genjax.data.arrays import ArraySource

    arrays = {"image": images_u8} | ({} if labels is None else {"label": labels})
    return ArraySource(arrays, "image", None if labels is None else int(labels.max()) + 1)


# --------------------------------------------------------------------------- sample.py


@pytest.fixture
def fake_workdir(monkeypatch, cvae, tmp_path):
    """write_samples restoring a trained-like run: the small cVAE on labelled 8x8 npz data."""
    from genjax.experiment import TrainedRun

    exp, state = cvae
    rng = np.random.default_rng(8)
    np.savez(
        tmp_path / "data.npz",
        images=rng.integers(0, 256, (30, *SHAPE), np.uint8),
        labels=np.arange(30) % 3,
    )
    test = load_source(f"npz:{tmp_path / 'data.npz'}", "test")
    runs = {"cvae": TrainedRun(exp, state, 1, None, test)}
    toy = experiment.build(base_config(), "point", (2,))
    shapes = jax.eval_shape(toy.init_state, jax.random.PRNGKey(0))  # refused before any use
    runs["toy"] = TrainedRun(toy, shapes, 1, None, None)
    monkeypatch.setattr(experiment, "restore", lambda workdir: runs[str(workdir)])
    return tmp_path


def test_inpaint_writes_inputs_masks_and_fills_of_a_source(fake_workdir, images):
    """--inputs npz:FILE (its 3 examples, of --num 4) -> .npz and .png of the same fills; no
    --inputs -> the test split (3 examples of the fake run's data)."""
    run = experiment.restore("cvae")
    exp, state = run.experiment, run.state
    out = fake_workdir / "fill.npz"
    three = {k: v[:3] for k, v in images.items()}
    np.savez(fake_workdir / "in.npz", images=three["image"], labels=three["label"])
    spec = f"npz:{fake_workdir / 'in.npz'}"
    sampling.write_samples("cvae", out, 4, 2, "inpaint", inputs=spec, mask="right", num_fills=3)
    saved = np.load(out)
    masks = inpaint.make_masks("right", 3, SHAPE)
    np.testing.assert_array_equal(saved["inputs"], three["image"])
    np.testing.assert_array_equal(saved["masks"], masks.astype(np.uint8))
    np.testing.assert_array_equal(saved["labels"], three["label"])
    expected = sampling.inpaint_arrays(exp, state, three, masks, jax.random.PRNGKey(2), 3)[1]
    np.testing.assert_array_equal(saved["samples"], expected)
    png = fake_workdir / "fill.png"  # the same fills as a picture
    sampling.write_samples("cvae", png, 4, 2, "inpaint", inputs=spec, mask="right", num_fills=3)
    from PIL import Image

    with Image.open(png) as picture:  # a row per input: masked input, 3 fills, original
        assert picture.size == (5 * 10 + 2, 3 * 10 + 2)
        shown = np.asarray(picture)
    np.testing.assert_array_equal(shown[2:10, 2 + 2 * 10 : 10 + 2 * 10], expected[0, 1, ..., 0])
    test = run.test_source.to_arrays()
    sampling.write_samples("cvae", out, 4, 2, "inpaint", mask="right", num_fills=3)
    np.testing.assert_array_equal(np.load(out)["inputs"], test["image"])
    np.testing.assert_array_equal(np.load(out)["labels"], test["label"])


def test_dataset_mode_writes_an_npz_source_of_uniform_or_chosen_classes(fake_workdir):
    run = experiment.restore("cvae")
    exp, state = run.experiment, run.state
    out = sampling.write_samples("cvae", fake_workdir / "aug.npz", 30, 4, "dataset")
    saved = np.load(out)
    labels = np.random.default_rng(4).integers(0, 3, 30)
    np.testing.assert_array_equal(saved["labels"], labels)
    draw = jax.jit(functools.partial(exp.sample, num=30))
    expected = draw(state, jax.random.fold_in(jax.random.PRNGKey(4), 0), labels=labels)
    np.testing.assert_array_equal(saved["images"], sampling.to_uint8(expected))
    source = load_source(f"npz:{out}", "all")
    assert source.num_classes == 3 and len(source) == 30
    out = sampling.write_samples("cvae", fake_workdir / "two.npz", 5, mode="dataset", label=2)
    np.testing.assert_array_equal(np.load(out)["labels"], [2] * 5)


def test_mix_adds_every_example_of_the_others_to_the_first_sources_training_split(tmp_path):
    rng = np.random.default_rng(9)
    real = rng.integers(0, 256, (20, *SHAPE), np.uint8)
    extra = rng.integers(0, 256, (7, *SHAPE), np.uint8)
    np.savez(tmp_path / "real.npz", images=real, labels=np.arange(20) % 2)
    np.savez(tmp_path / "extra.npz", images=extra, labels=np.full(7, 2))
    np.savez(tmp_path / "plain.npz", images=extra)
    np.savez(tmp_path / "big.npz", images=rng.integers(0, 256, (3, 4, 4, 1), np.uint8))
    spec = f"mix:npz:{tmp_path / 'real.npz'}+npz:{tmp_path / 'extra.npz'}"
    real_train = load_source(f"npz:{tmp_path / 'real.npz'}", "train").to_arrays()
    train = load_source(spec, "train")
    np.testing.assert_array_equal(
        train.to_arrays()["image"], np.concatenate([real_train["image"], extra])
    )
    np.testing.assert_array_equal(train.to_arrays()["label"], [*real_train["label"], *[2] * 7])
    assert train.num_classes == 3
    test = load_source(spec, "test").to_arrays()
    np.testing.assert_array_equal(
        test["image"], load_source(f"npz:{tmp_path / 'real.npz'}", "test").to_arrays()["image"]
    )
    unlabelled = load_source(
        f"mix:npz:{tmp_path / 'real.npz'}+npz:{tmp_path / 'plain.npz'}", "train"
    )
    assert unlabelled.num_classes is None and "label" not in unlabelled.to_arrays()
    with pytest.raises(ConfigError, match="mix sources of one kind and shape"):
        load_source(f"mix:npz:{tmp_path / 'real.npz'}+npz:{tmp_path / 'big.npz'}", "train")
    with pytest.raises(ConfigError, match=r"joins two or more sources with '\+'"):
        load_source("mix:mnist5k", "train")


@pytest.mark.parametrize(
    "workdir, options, words",
    [
        ("toy", {"mode": "inpaint", "mask": "top"}, "inpaint images: cdcgan, cvae_mlp, dcgan"),
        ("toy", {"mode": "dataset"}, "--mode dataset writes images for the npz: source"),
        ("cvae", {"mode": "dataset", "out": "a.png"}, "give --out FILE.npz"),
        ("cvae", {"mode": "inpaint"}, "needs --mask; valid: bottom"),
        ("cvae", {"mode": "samples", "mask": "top"}, "--mask applies to --mode inpaint"),
        (
            "cvae",
            {"mode": "inpaint", "mask": "top", "inputs": "npz:BIG"},
            r"\(4, 4, 1\) but the model was trained on image \(8, 8, 1\)",
        ),
    ],
)
def test_sample_refuses_what_it_cannot_do_and_writes_nothing(fake_workdir, workdir, options, words):
    np.savez(fake_workdir / "big.npz", images=np.zeros((3, 4, 4, 1), np.uint8))
    options = dict(options)
    out = fake_workdir / options.pop("out", "a.npz")
    if "inputs" in options:
        options["inputs"] = f"npz:{fake_workdir / 'big.npz'}"
    with pytest.raises(ConfigError, match=words):
        sampling.write_samples(workdir, out, 4, **options)
    assert not out.exists()


def test_the_cli_exits_2_on_a_bad_mask_with_one_line(tmp_path):
    from tests.conftest import ROOT

    args = ["--workdir", tmp_path, "--out", tmp_path / "a.npz", "--mode", "inpaint"]
    result = subprocess.run(
        [sys.executable, "sample.py", *map(str, args), "--mask", "diagonal"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --mask 'diagonal' is not a mask; valid: bottom, top, left, right, centre, all, "
        "random:P (0 < P < 1)"
    ]
    assert not (tmp_path / "a.npz").exists()
