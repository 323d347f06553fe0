"""Registry models: shapes, dtypes, ranges, BatchNorm statistics, and shape errors.

Shape and dtype checks trace init and apply abstractly (`jax.eval_shape`) for every model and
data shape; value checks run a few small models for real (XLA:CPU compiles slowly).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import config
from genjax.config import ConfigError
from genjax.models import MODELS, build, family_of

BATCH, Z_DIM = 4, 6
KEY = jax.random.key(0, impl="rbg")  # compiles faster than threefry on XLA:CPU


def model_config(name, **overrides):
    cfg = config.base_config().model
    cfg.name, cfg.z_dim, cfg.hidden, cfg.features = name, Z_DIM, 16, 4
    cfg.update(overrides)
    return cfg


def inputs(name, shape):
    """(first module's input, second module's input): (z, x) for GANs, (x, z) for VAEs."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(BATCH, Z_DIM)).astype(np.float32)
    x = rng.uniform(size=(BATCH, *shape)).astype(np.float32)
    return (z, 2 * x - 1) if family_of(name) == "gan" else (x, z)


def abstract_outputs(module, x):
    """Traces init and eval-mode apply without compiling: (variables, output) shapes/dtypes."""
    variables = jax.eval_shape(functools.partial(module.init, train=False), KEY, x)
    return variables, jax.eval_shape(functools.partial(module.apply, train=False), variables, x)


@functools.cache
def built(name, shape):
    """(modules, variables, inputs) for a float32 model at a data shape, initialised once."""
    modules = build(model_config(name), shape, likelihood="gaussian")
    xs = inputs(name, shape)
    init = jax.jit(lambda k: tuple(m.init(k, x, False) for m, x in zip(modules, xs, strict=True)))
    return modules, init(KEY), xs


def apply(module, variables, x, train=False):
    """Jitted apply; in train mode also returns the updated batch statistics."""
    mutable = ["batch_stats"] if train else False
    return jax.jit(lambda v, x: module.apply(v, x, train, mutable=mutable))(variables, x)


GAN_CASES = [
    ("gan_mlp", (28, 28, 1)),
    ("dcgan", (28, 28, 1)),
    ("dcgan", (32, 32, 3)),
    ("dcgan", (64, 64, 3)),
    ("toy_mlp", (2,)),
]
VAE_CASES = [("vae_mlp", (28, 28, 1)), ("vae_conv", (28, 28, 1)), ("vae_conv", (32, 32, 3))]
DTYPES = [jnp.float32, jnp.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,shape", GAN_CASES)
def test_gan_output_shapes_and_dtypes(name, shape, dtype):
    generator, discriminator = build(model_config(name), shape, dtype=dtype)
    z, x = inputs(name, shape)
    g_vars, fake = abstract_outputs(generator, z)
    d_vars, logits = abstract_outputs(discriminator, x)
    assert (fake.shape, fake.dtype) == ((BATCH, *shape), jnp.float32)
    assert (logits.shape, logits.dtype) == ((BATCH,), jnp.float32)
    params = jax.tree.leaves(g_vars["params"]) + jax.tree.leaves(d_vars["params"])
    assert {p.dtype for p in params} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("likelihood,k", [("bernoulli", 1), ("gaussian", 2)])
@pytest.mark.parametrize("name,shape", VAE_CASES)
def test_vae_output_shapes_and_dtypes(name, shape, likelihood, k, dtype):
    encoder, decoder = build(model_config(name), shape, likelihood=likelihood, dtype=dtype)
    x, z = inputs(name, shape)
    _, (mean, logvar) = abstract_outputs(encoder, x)
    _, out = abstract_outputs(decoder, z)
    assert mean.shape == logvar.shape == (BATCH, Z_DIM)
    assert mean.dtype == logvar.dtype == out.dtype == jnp.float32
    assert out.shape == (BATCH, *shape[:2], shape[2] * k)


@pytest.mark.parametrize("name,shape", [("gan_mlp", (28, 28, 1)), ("dcgan", (28, 28, 1))])
def test_image_generators_run_and_stay_in_tanh_range(name, shape):
    (generator, discriminator), (g_vars, d_vars), (z, _) = built(name, shape)
    fake = apply(generator, g_vars, z)
    assert fake.shape == (BATCH, *shape)
    assert np.all(np.abs(fake) <= 1.0) and np.std(fake) > 0
    assert np.all(np.isfinite(apply(discriminator, d_vars, fake)))


def test_toy_generator_output_is_linear():
    # No squashing: scaling the output layer by 100 scales the points by 100, past [-1, 1].
    (generator, discriminator), (g_vars, d_vars), (z, x) = built("toy_mlp", (2,))
    last = max(g_vars["params"], key=lambda n: int(n.split("_")[-1]))
    scaled = {"params": dict(g_vars["params"])}
    scaled["params"][last] = jax.tree.map(lambda p: 100.0 * p, g_vars["params"][last])
    points = apply(generator, g_vars, z)
    np.testing.assert_allclose(apply(generator, scaled, z), 100.0 * points, rtol=1e-4, atol=1e-4)
    assert np.max(np.abs(100.0 * points)) > 1.0
    assert apply(discriminator, d_vars, x).shape == (BATCH,)


def test_vae_runs():
    (encoder, decoder), (e_vars, d_vars), (x, z) = built("vae_mlp", (28, 28, 1))
    mean, logvar = apply(encoder, e_vars, x)
    out = apply(decoder, d_vars, mean)
    assert out.shape == (BATCH, 28, 28, 2)
    assert all(np.all(np.isfinite(a)) and np.std(a) > 0 for a in (mean, logvar, out))


@pytest.mark.parametrize(
    "shape,dense_width,g_channels,d_channels",
    [
        ((28, 28, 1), 7 * 7 * 8, [4, 1], [4, 8]),
        ((64, 64, 3), 4 * 4 * 32, [16, 8, 4, 3], [4, 8, 16, 32]),
    ],
)
def test_dcgan_channel_plan(shape, dense_width, g_channels, d_channels):
    # Radford et al. 2016: s0 x s0 x features * 2^(n-1), halving per upsampling; D doubles.
    generator, discriminator = build(model_config("dcgan"), shape)
    g_vars, _ = abstract_outputs(generator, jnp.zeros((BATCH, Z_DIM)))
    d_vars, _ = abstract_outputs(discriminator, jnp.zeros((BATCH, *shape)))
    assert g_vars["params"]["Dense_0"]["kernel"].shape == (Z_DIM, dense_width)
    ups = [v["ConvTranspose_0"]["kernel"] for k, v in sorted(g_vars["params"].items()) if "Up" in k]
    assert [k.shape[-1] for k in ups] == g_channels
    downs = [v["Conv_0"]["kernel"] for k, v in sorted(d_vars["params"].items()) if "Down" in k]
    assert [k.shape[-1] for k in downs] == d_channels
    assert all(k.shape[:2] == (4, 4) for k in ups + downs)


def test_batch_norm_train_mode_updates_running_mean():
    # First generator BatchNorm: new mean = 0.9 * 0 + 0.1 * batch mean of the dense output.
    (generator, _), (g_vars, _), (z, _) = built("dcgan", (28, 28, 1))
    _, updates = apply(generator, g_vars, z, train=True)
    dense = g_vars["params"]["Dense_0"]
    assert "bias" not in dense  # BatchNorm would cancel it
    pre_norm = (z @ dense["kernel"]).reshape(BATCH, 7, 7, 8)
    np.testing.assert_allclose(
        updates["batch_stats"]["BatchNorm_0"]["mean"],
        0.1 * pre_norm.mean(axis=(0, 1, 2)),
        rtol=1e-4,
        atol=1e-6,
    )


def test_batch_norm_averages_statistics_over_axis_name():
    # Two vmapped shards of 2 with axis_name='data' give the statistics of the whole batch of 4.
    (generator, _), (g_vars, _), (z, _) = built("dcgan", (28, 28, 1))
    _, whole = apply(generator, g_vars, z, train=True)
    sharded_generator, _ = build(model_config("dcgan"), (28, 28, 1), axis_name="data")
    per_shard = jax.jit(
        jax.vmap(
            lambda zs: sharded_generator.apply(g_vars, zs, True, mutable=["batch_stats"])[1],
            axis_name="data",
        )
    )(z.reshape(2, 2, Z_DIM))
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(per_shard), strict=True):
        np.testing.assert_allclose(b, jnp.broadcast_to(a, b.shape), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "d_norm,norm_params", [("batch", ["BatchNorm_0"]), ("layer", ["LayerNorm_0"]), ("none", [])]
)
def test_discriminator_norm_choice(d_norm, norm_params):
    _, discriminator = build(model_config("dcgan", d_norm=d_norm), (28, 28, 1))
    variables, _ = abstract_outputs(discriminator, jnp.zeros((BATCH, 28, 28, 1)))
    assert [k for k in variables["params"] if "Norm" in k] == norm_params  # none on conv 1
    assert ("batch_stats" in variables) == (d_norm == "batch")


@pytest.mark.parametrize("name,shape", [("dcgan", (28, 28, 1)), ("vae_mlp", (28, 28, 1))])
def test_bfloat16_outputs_are_float32_at_bfloat16_precision(name, shape):
    modules32, variables, xs = built(name, shape)
    modules16 = build(model_config(name), shape, likelihood="gaussian", dtype="bfloat16")
    for m32, m16, v, x in zip(modules32, modules16, variables, xs, strict=True):
        out32, out16 = jax.tree.leaves(apply(m32, v, x)), jax.tree.leaves(apply(m16, v, x))
        for a, b in zip(out32, out16, strict=True):
            assert b.dtype == jnp.float32
            assert not np.array_equal(a, b)  # computed in bfloat16 ...
            np.testing.assert_allclose(b, a, rtol=0.1, atol=0.05)  # ... to its precision


@pytest.mark.parametrize(
    "name,shape",
    [
        ("dcgan", (2,)),
        ("dcgan", (30, 30, 3)),
        ("dcgan", (28, 32, 1)),
        ("dcgan", (4, 4, 1)),
        ("vae_conv", (100, 100, 1)),
        ("toy_mlp", (28, 28, 1)),
        ("gan_mlp", (2,)),
        ("vae_mlp", (2,)),
    ],
)
def test_bad_shapes_raise_one_line_config_error(name, shape):
    with pytest.raises(ConfigError) as error:
        build(model_config(name), shape)
    message = str(error.value)
    assert "\n" not in message and str(shape) in message and name in message


def test_unknown_names_raise_config_error():
    with pytest.raises(ConfigError, match="valid: dcgan, gan_mlp, toy_mlp, vae_conv, vae_mlp"):
        family_of("stylegan")
    with pytest.raises(ConfigError, match="stylegan"):
        build(model_config("stylegan"), (28, 28, 1))
    with pytest.raises(ConfigError, match="bernoulli, gaussian"):
        build(model_config("vae_mlp"), (28, 28, 1), likelihood="poisson")
    with pytest.raises(ConfigError, match="batch, layer, none"):
        build(model_config("dcgan", d_norm="spectral"), (28, 28, 1))


def test_family_of_and_registry_names():
    families = {"gan_mlp": "gan", "dcgan": "gan", "toy_mlp": "gan"}
    families |= {"vae_mlp": "vae", "vae_conv": "vae"}
    assert {name: family_of(name) for name in MODELS} == families
    config.validate(config.base_config())  # config.py's view of the registry


# ------------------------------------------------------------- autoregressive decoder


def autoregressive(likelihood="bernoulli", shape=(6, 5, 2), kernel=3):
    """(decoder, variables, z, binary x) of a small autoregressive MLP decoder."""
    from genjax.models.vae import AutoregressiveDecoder

    _, decoder = build(model_config("vae_mlp", ar_kernel=kernel), shape, likelihood=likelihood)
    assert isinstance(decoder, AutoregressiveDecoder)
    rng = np.random.default_rng(1)
    z = rng.normal(size=(BATCH, Z_DIM)).astype(np.float32)
    x = jnp.asarray(rng.uniform(size=(BATCH, *shape)) < 0.5, jnp.float32)
    variables = jax.jit(lambda k: decoder.init(k, z, x, False))(KEY)
    # Non-zero context weights everywhere, so that any leak of a pixel into itself shows.
    variables = jax.tree.map(lambda v: v + 0.3, variables)
    return decoder, variables, z, x


def test_autoregressive_context_matches_the_single_pixel_context():
    from genjax.models.vae import causal_context, causal_context_at

    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 6, 3)), jnp.float32)
    full = causal_context(x, 5)
    assert full.shape == (2, 5, 6, 12 * 3)  # 12 earlier neighbours in a 5 x 5 window
    for i, j in [(0, 0), (2, 3), (4, 5), (1, 0)]:
        np.testing.assert_array_equal(causal_context_at(x, 5, i, j), full[:, i, j])
    assert not np.any(full[:, 0, 0])  # the first pixel sees nothing


def test_an_autoregressive_pixel_depends_only_on_earlier_pixels():
    decoder, variables, z, x = autoregressive()
    run = jax.jit(lambda x: decoder.apply(variables, z, x, False))
    base = np.asarray(run(x))
    h, w = x.shape[1:3]
    for n in range(h * w):  # every pixel, in raster order
        i, j = divmod(n, w)
        flipped = np.asarray(run(x.at[:, i, j].set(1.0 - x[:, i, j])))
        changed = np.any(flipped != base, axis=(0, 3)).reshape(-1)  # per raster pixel
        assert not changed[: n + 1].any(), f"pixel {n} leaked into itself or earlier pixels"
        if n < h * w - 1:
            assert changed[n + 1 :].any(), "the context has no effect"


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_autoregressive_sampling_agrees_with_the_teacher_forced_likelihood(likelihood):
    from genjax.sampling import autoregressive_sample

    decoder, variables, z, _ = autoregressive(likelihood)
    key = jax.random.key(3)
    x, means = jax.jit(lambda z: autoregressive_sample(decoder, variables, z, likelihood, key))(z)
    # The parameters of each pixel given the sample's earlier pixels, in one parallel pass.
    params = decoder.apply(variables, z, x, False)
    (b, h, w, channels), bernoulli = x.shape, likelihood == "bernoulli"
    if bernoulli:
        assert set(np.unique(x)) <= {0.0, 1.0}
        expected = jax.nn.sigmoid(params)
    else:
        expected = jnp.clip(params[..., :channels], 0.0, 1.0)
    np.testing.assert_allclose(means, expected, rtol=1e-5, atol=1e-6)
    # And the pixels are draws from those parameters: raster pixel n with fold_in(key, n).
    draw = jax.random.uniform if bernoulli else jax.random.normal
    noise = jnp.stack([draw(jax.random.fold_in(key, n), (b, channels)) for n in range(h * w)], 1)
    noise = np.asarray(noise.reshape(x.shape))
    if bernoulli:
        p = np.asarray(jax.nn.sigmoid(params))
        agree = (x == (noise < p)) | (np.abs(noise - p) < 1e-5)  # ties within rounding
        assert agree.all()
    else:
        drawn = params[..., :channels] + jnp.exp(params[..., channels:]) * noise
        np.testing.assert_allclose(x, drawn, rtol=1e-4, atol=1e-5)


def test_ar_kernel_is_refused_for_gans_and_even_sizes():
    with pytest.raises(ConfigError, match="ar_kernel"):
        build(model_config("dcgan", ar_kernel=3), (28, 28, 1))
    c = config.base_config()
    c.model.ar_kernel = 4
    with pytest.raises(ConfigError, match="odd"):
        config.validate(c)
