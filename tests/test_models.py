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


def model_config(name, likelihood="bernoulli", **overrides):
    """A resolved config of model `name`, small: z_dim 6, 16 hidden units, 4 base features."""
    c = config.base_config()
    c.model.name, c.model.z_dim = name, Z_DIM
    reads = MODELS[name].defaults if name in MODELS else {}
    c.model.update({k: v for k, v in {"hidden": 16, "features": 4}.items() if k in reads})
    c.model.update(overrides)
    if name in MODELS and family_of(name).name == "vae":
        c.vae.likelihood = likelihood
    return config.resolve(c)


def inputs(name, shape):
    """(first module's input, second module's input): (z, x) for GANs, (x, z) for VAEs."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(BATCH, Z_DIM)).astype(np.float32)
    x = rng.uniform(size=(BATCH, *shape)).astype(np.float32)
    return (z, 2 * x - 1) if family_of(name).name == "gan" else (x, z)


def abstract_outputs(module, x):
    """Traces init and eval-mode apply without compiling: (variables, output) shapes/dtypes."""
    variables = jax.eval_shape(functools.partial(module.init, train=False), KEY, x)
    return variables, jax.eval_shape(functools.partial(module.apply, train=False), variables, x)


@functools.cache
def built(name, shape):
    """(modules, variables, inputs) for a float32 model at a data shape, initialised once."""
    modules = build(model_config(name, likelihood="gaussian"), shape)
    xs = inputs(name, shape)
    init = jax.jit(
        lambda k: tuple(m.init(k, x, train=False) for m, x in zip(modules, xs, strict=True))
    )
    return modules, init(KEY), xs


def apply(module, variables, x, train=False):
    """Jitted apply; in train mode also returns the updated batch statistics."""
    mutable = ["batch_stats"] if train else False
    return jax.jit(lambda v, x: module.apply(v, x, train=train, mutable=mutable))(variables, x)


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
    encoder, decoder = build(model_config(name, likelihood=likelihood), shape, dtype=dtype)
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
    "d_norm,norm_params",
    [("batch", ["BatchNorm_0"]), ("layer", ["LayerNorm_0"]), ("spectral", []), ("none", [])],
)
def test_discriminator_norm_choice(d_norm, norm_params):
    _, discriminator = build(model_config("dcgan", d_norm=d_norm), (28, 28, 1))
    variables, _ = abstract_outputs(discriminator, jnp.zeros((BATCH, 28, 28, 1)))
    assert [k for k in variables["params"] if "Norm" in k] == norm_params  # none on conv 1
    # BatchNorm's running averages; spectral normalisation's u and sigma
    assert ("batch_stats" in variables) == (d_norm in ("batch", "spectral"))


@pytest.mark.parametrize("name,shape", [("dcgan", (28, 28, 1)), ("vae_mlp", (28, 28, 1))])
def test_bfloat16_outputs_are_float32_at_bfloat16_precision(name, shape):
    modules32, variables, xs = built(name, shape)
    modules16 = build(model_config(name, likelihood="gaussian"), shape, dtype="bfloat16")
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
    with pytest.raises(
        ConfigError,
        match="valid: cdcgan, cvae_mlp, dcgan, gan_mlp, masked_vae_mlp, sngan_resnet, text_lm, "
        "text_vae, toy_mlp, vae_conv, vae_mlp, vq_prior, vqvae_conv$",
    ):
        family_of("stylegan")
    with pytest.raises(ConfigError, match="stylegan"):
        build(model_config("stylegan"), (28, 28, 1))
    with pytest.raises(ConfigError, match="bernoulli, gaussian"):
        build(model_config("vae_mlp", likelihood="poisson"), (28, 28, 1))
    with pytest.raises(ConfigError, match="d_norm='group'; valid: batch, layer, spectral, none"):
        build(model_config("dcgan", d_norm="group"), (28, 28, 1))


def test_wgan_gp_takes_every_discriminator_norm_but_batch():
    def discriminator(d_norm):
        c = config.base_config()
        c.model.name, c.model.d_norm, c.gan.loss = "dcgan", d_norm, "wgan_gp"
        return build(config.resolve(c), (28, 28, 1))[1]

    for d_norm in ("layer", "spectral", "none"):
        assert discriminator(d_norm).d_norm == d_norm
    with pytest.raises(ConfigError, match="d_norm=layer, spectral or none"):
        discriminator("batch")


def test_family_of_and_registry_names():
    families = {"gan_mlp": "gan", "dcgan": "gan", "toy_mlp": "gan", "sngan_resnet": "gan"}
    families |= {"cdcgan": "gan", "vae_mlp": "vae", "vae_conv": "vae", "cvae_mlp": "vae"}
    families |= {"masked_vae_mlp": "vae"}
    families |= {"text_vae": "text_vae", "text_lm": "lm", "vqvae_conv": "vqvae"}
    families |= {"vq_prior": "prior"}
    assert {name: family_of(name).name for name in MODELS} == families
    config.validate(config.base_config())  # config.py's view of the registry


# ------------------------------------------------------------- autoregressive decoder


def autoregressive(likelihood="bernoulli", shape=(6, 5, 2), kernel=3):
    """(decoder, variables, z, binary x) of a small autoregressive MLP decoder."""
    from genjax.models.vae import AutoregressiveDecoder

    _, decoder = build(model_config("vae_mlp", ar_kernel=kernel, likelihood=likelihood), shape)
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
    from genjax.models.vae import autoregressive_sample

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
    with pytest.raises(ConfigError, match="odd"):
        build(model_config("vae_mlp", ar_kernel=4), (28, 28, 1))


# ------------------------------------------------- forward passes against plain recomputations

DN = ("NHWC", "HWIO", "NHWC")


def randomized(variables, seed=1):
    """Every param and statistic ~ N(0, 1) (variances |N(0, 1)| + 0.5): no zero hides a bug."""
    rng = np.random.default_rng(seed)

    def draw(path, x):
        value = rng.normal(size=x.shape)
        if any(getattr(k, "key", None) == "var" for k in path):
            value = np.abs(value) + 0.5
        return jnp.asarray(value, jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, variables)


def leaky(h, slope):
    return np.where(h > 0, h, slope * h)


def dense(p, h):
    return h @ np.asarray(p["kernel"]) + (np.asarray(p["bias"]) if "bias" in p else 0.0)


@pytest.mark.parametrize(
    "name,shape,g_slope,d_slope,depth",
    [("toy_mlp", (2,), 0.0, 0.2, 2), ("gan_mlp", (3, 3, 1), 0.01, 0.01, 1)],
)
def test_mlp_gan_equals_a_numpy_forward(name, shape, g_slope, d_slope, depth):
    # toy_mlp: config.model.depth ReLU layers (G), LeakyReLU 0.2 (D), linear output; gan_mlp:
    # one LeakyReLU 0.01 layer each, tanh output (Goodfellow et al. 2014).
    generator, discriminator = build(model_config(name), shape)
    z, x = inputs(name, shape)
    g_vars = randomized(jax.jit(lambda k: generator.init(k, z, False))(KEY))
    d_vars = randomized(jax.jit(lambda k: discriminator.init(k, x, False))(KEY), seed=2)
    assert len(g_vars["params"]) == len(d_vars["params"]) == depth + 1
    h = z
    for i in range(depth):
        h = leaky(dense(g_vars["params"][f"Dense_{i}"], h), g_slope)
    out = dense(g_vars["params"][f"Dense_{depth}"], h)
    out = np.tanh(out) if name == "gan_mlp" else out
    got = apply(generator, g_vars, z)
    np.testing.assert_allclose(got, out.reshape(BATCH, *shape), rtol=1e-4, atol=1e-4)
    h = x.reshape(BATCH, -1)
    for i in range(depth):
        h = leaky(dense(d_vars["params"][f"Dense_{i}"], h), d_slope)
    logits = dense(d_vars["params"][f"Dense_{depth}"], h)[:, 0]
    np.testing.assert_allclose(apply(discriminator, d_vars, x), logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("d_norm", ["batch", "layer", "spectral", "none"])
def test_only_layers_followed_by_batch_norm_have_no_bias(d_norm):
    # DCGAN: G's dense and every upsampling but the last feed a BatchNorm; so does every D
    # conv but the first when d_norm='batch'. All other layers keep their bias.
    generator, discriminator = build(model_config("dcgan", d_norm=d_norm), (64, 64, 3))
    g_vars, _ = abstract_outputs(generator, jnp.zeros((BATCH, Z_DIM)))
    d_vars, _ = abstract_outputs(discriminator, jnp.zeros((BATCH, 64, 64, 3)))
    g, d = g_vars["params"], d_vars["params"]
    has_bias = {k: "bias" in v.get("ConvTranspose_0", v) for k, v in g.items() if "Norm" not in k}
    assert has_bias == {"Dense_0": False, **{f"UpConv2x_{i}": i == 3 for i in range(4)}}
    has_bias = {k: "bias" in v.get("Conv_0", v) for k, v in d.items() if "Norm" not in k}
    batch = d_norm == "batch"
    expected = {f"DownConv2x_{i}": i == 0 or not batch for i in range(4)} | {"Dense_0": True}
    assert has_bias == expected


def conv_down(h, p):
    """flax's nn.Conv((4, 4), strides 2, 'SAME') by lax."""
    y = jax.lax.conv_general_dilated(h, p["kernel"], (2, 2), "SAME", dimension_numbers=DN)
    return y + p["bias"] if "bias" in p else y


def conv_up(h, p):
    """flax's nn.ConvTranspose((4, 4), strides 2, 'SAME') by lax."""
    y = jax.lax.conv_transpose(h, p["kernel"], (2, 2), "SAME", dimension_numbers=DN)
    return y + p["bias"] if "bias" in p else y


def batch_norm_eval(h, p, s):
    return (h - s["mean"]) / np.sqrt(s["var"] + 1e-5) * p["scale"] + p["bias"]


def test_dcgan_generator_equals_a_lax_forward():
    # Dense (no bias) -> BatchNorm -> ReLU -> [up (no bias) -> BatchNorm -> ReLU] -> up -> tanh,
    # in eval mode with random running statistics.
    generator, _ = build(model_config("dcgan"), (16, 16, 2))
    z = inputs("dcgan", (16, 16, 2))[0]
    v = randomized(jax.jit(lambda k: generator.init(k, z, False))(KEY))
    p, s = v["params"], v["batch_stats"]
    h = (z @ p["Dense_0"]["kernel"]).reshape(BATCH, 4, 4, 8)
    h = jax.nn.relu(batch_norm_eval(h, p["BatchNorm_0"], s["BatchNorm_0"]))
    h = conv_up(h, p["UpConv2x_0"]["ConvTranspose_0"])
    h = jax.nn.relu(batch_norm_eval(h, p["BatchNorm_1"], s["BatchNorm_1"]))
    expected = jnp.tanh(conv_up(h, p["UpConv2x_1"]["ConvTranspose_0"]))
    np.testing.assert_allclose(apply(generator, v, z), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("d_norm", ["batch", "layer", "none"])
def test_dcgan_discriminator_equals_a_lax_forward(d_norm):
    # conv -> LeakyReLU 0.2 -> conv -> norm (BatchNorm eval | LayerNorm over H, W, C) -> LeakyReLU
    # 0.2 -> dense, with random parameters and running statistics.
    _, discriminator = build(model_config("dcgan", d_norm=d_norm), (16, 16, 2))
    x = inputs("dcgan", (16, 16, 2))[1]
    v = randomized(jax.jit(lambda k: discriminator.init(k, x, False))(KEY))
    p = v["params"]
    h = leaky(conv_down(x, p["DownConv2x_0"]["Conv_0"]), 0.2)
    h = conv_down(h, p["DownConv2x_1"]["Conv_0"])
    if d_norm == "batch":
        h = batch_norm_eval(h, p["BatchNorm_0"], v["batch_stats"]["BatchNorm_0"])
    elif d_norm == "layer":
        mean = h.mean(axis=(1, 2, 3), keepdims=True)
        var = ((h - mean) ** 2).mean(axis=(1, 2, 3), keepdims=True)
        h = (h - mean) / np.sqrt(var + 1e-6) * p["LayerNorm_0"]["scale"] + p["LayerNorm_0"]["bias"]
    h = leaky(h, 0.2).reshape(BATCH, -1)
    expected = dense(p["Dense_0"], h)[:, 0]
    np.testing.assert_allclose(apply(discriminator, v, x), expected, rtol=1e-4, atol=1e-4)


# ------------------------------------------- spectral normalisation (Miyato et al. 2018)

SPECTRAL_SHAPE = (16, 16, 2)  # two convs (2 -> 4 -> 8 channels), then a dense layer


def spectral_discriminator(random=True):
    """(discriminator, variables, x): d_norm='spectral'; with `random`, every param and u
    ~ N(0, 1), else as initialised."""
    _, discriminator = build(model_config("dcgan", d_norm="spectral"), SPECTRAL_SHAPE)
    x = inputs("dcgan", SPECTRAL_SHAPE)[1]
    variables = jax.jit(lambda k: discriminator.init(k, x, False))(KEY)
    return discriminator, randomized(variables) if random else variables, x


def spectral_layers(variables):
    """{kernel path: (kernel as a (kh kw in, out) matrix, u, sigma)} of the normalised layers,
    found by their 'batch_stats' names ('DownConv2x_0/Conv_0/kernel/u', flax's SpectralNorm)."""
    layers = {}
    for stats in variables["batch_stats"].values():
        (path,) = [name[: -len("/u")] for name in stats if name.endswith("/u")]
        kernel = functools.reduce(lambda d, k: d[k], path.split("/"), variables["params"])
        kernel = np.asarray(kernel, np.float64)
        matrix = kernel.reshape(-1, kernel.shape[-1])
        layers[path] = (matrix, np.asarray(stats[path + "/u"]), np.asarray(stats[path + "/sigma"]))
    return layers


def top_singular_value(matrix):
    return np.linalg.svd(matrix, compute_uv=False)[0]


def power_iteration(matrix, u):
    """One step of Miyato et al. 2018, Algorithm 1, for W = matrix.T: (new u, sigma)."""
    v = u @ matrix.T
    v = v / np.linalg.norm(v)
    u = v @ matrix
    u = u / np.linalg.norm(u)
    return u, (v @ matrix @ u.T)[0, 0]


def spectral_forward(params, x, sigmas):
    """conv -> LeakyReLU 0.2 -> conv -> LeakyReLU 0.2 -> dense by lax, every kernel divided by
    its layer's sigma; biases as they are."""

    def divided(p, path):
        return {"kernel": np.asarray(p["kernel"]) / sigmas[path], "bias": p["bias"]}

    h = x
    for i in range(2):
        conv = params[f"DownConv2x_{i}"]["Conv_0"]
        h = leaky(conv_down(h, divided(conv, f"DownConv2x_{i}/Conv_0/kernel")), 0.2)
    return dense(divided(params["Dense_0"], "Dense_0/kernel"), h.reshape(BATCH, -1))[:, 0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_spectral_discriminator_variables(dtype):
    # No BatchNorm or LayerNorm; every conv keeps its bias; one u (1, out) and sigma per
    # normalised kernel, in 'batch_stats'; all float32 whatever the compute dtype.
    _, discriminator = build(model_config("dcgan", d_norm="spectral"), SPECTRAL_SHAPE, dtype=dtype)
    variables, logits = abstract_outputs(discriminator, jnp.zeros((BATCH, *SPECTRAL_SHAPE)))
    assert (logits.shape, logits.dtype) == ((BATCH,), jnp.float32)
    assert {a.dtype for a in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    shapes = jax.tree.map(lambda a: a.shape, variables)
    conv = lambda c_in, c_out: {"Conv_0": {"kernel": (4, 4, c_in, c_out), "bias": (c_out,)}}  # noqa: E731
    assert shapes["params"] == {
        "DownConv2x_0": conv(2, 4),
        "DownConv2x_1": conv(4, 8),
        "Dense_0": {"kernel": (4 * 4 * 8, 1), "bias": (1,)},
    }
    stats = lambda path, c_out: {f"{path}/u": (1, c_out), f"{path}/sigma": ()}  # noqa: E731
    assert shapes["batch_stats"] == {
        "SpectralNorm_0": stats("DownConv2x_0/Conv_0/kernel", 4),
        "SpectralNorm_1": stats("DownConv2x_1/Conv_0/kernel", 8),
        "SpectralNorm_2": stats("Dense_0/kernel", 1),
    }


def test_spectral_norm_of_the_initialised_discriminator():
    # After init (eval mode: u drawn, sigma 1, nothing updated), an eval apply divides each
    # kernel by the sigma of one power iteration from u: top singular value near 1.
    discriminator, variables, x = spectral_discriminator(random=False)
    sigmas = {}
    for path, (matrix, u, sigma) in spectral_layers(variables).items():
        assert sigma == 1.0 and np.linalg.norm(u) > 0
        sigmas[path] = power_iteration(matrix, u)[1]
        assert 1 - 1e-5 <= top_singular_value(matrix / sigmas[path]) < 1.5, path
    expected = spectral_forward(variables["params"], x, sigmas)
    np.testing.assert_allclose(apply(discriminator, variables, x), expected, rtol=1e-4, atol=1e-5)


def test_spectral_norm_divides_each_kernel_by_its_top_singular_value():
    # Each apply with update_stats=True is one power iteration from the stored u (Algorithm
    # 1), whose sigma divides the kernel and is stored; sigma converges to the top singular
    # value, so the normalised kernels' top singular value goes to 1 (from above: the
    # estimate is a lower bound).
    discriminator, variables, x = spectral_discriminator()
    update = jax.jit(
        lambda v: discriminator.apply(v, x, True, update_stats=True, mutable=["batch_stats"])
    )
    true_sigmas = {
        path: top_singular_value(m) for path, (m, _, _) in spectral_layers(variables).items()
    }
    assert min(true_sigmas.values()) > 3  # N(0, 1) kernels: far from normalised
    for n in range(1, 31):
        before = spectral_layers(variables)
        logits, stats = update(variables)
        variables = {"params": variables["params"], **stats}
        sigmas = {}
        for path, (matrix, u, sigma) in spectral_layers(variables).items():
            expected_u, expected_sigma = power_iteration(matrix, before[path][1])
            np.testing.assert_allclose(u, expected_u, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(sigma, expected_sigma, rtol=1e-5)
            sigmas[path] = sigma
            normalised = top_singular_value(matrix / sigma)
            assert normalised >= 1 - 1e-5
            if n == 1:
                assert normalised < 1.5, path
            if n == 30:
                assert normalised < 1 + 1e-2, path
        np.testing.assert_allclose(
            logits, spectral_forward(variables["params"], x, sigmas), rtol=1e-4, atol=1e-4
        )
    expected = spectral_forward(variables["params"], x, true_sigmas)
    np.testing.assert_allclose(logits, expected, rtol=1e-2, atol=1e-2 * np.abs(expected).max())


def test_update_stats_false_leaves_u_and_sigma_as_they_were():
    # The generator's step runs the discriminator with train=True, update_stats=False: the
    # same forward as the discriminator's step (one power iteration from the stored u), but
    # u and sigma stay bitwise as they were; eval mode (update_stats defaults to train) too.
    discriminator, variables, x = spectral_discriminator()

    def run(train, **kwargs):
        apply_ = lambda v: discriminator.apply(v, x, train, mutable=["batch_stats"], **kwargs)  # noqa: E731
        return jax.jit(apply_)(variables)

    old = jax.tree.leaves(variables["batch_stats"])
    logits, kept = run(True, update_stats=False)
    for a, b in zip(old, jax.tree.leaves(kept["batch_stats"]), strict=True):
        np.testing.assert_array_equal(b, a)
    eval_logits, evaluated = run(False)
    for a, b in zip(old, jax.tree.leaves(evaluated["batch_stats"]), strict=True):
        np.testing.assert_array_equal(b, a)
    updated_logits, updated = run(True)  # update_stats=None: as train
    for a, b in zip(old, jax.tree.leaves(updated["batch_stats"]), strict=True):
        assert not np.array_equal(b, a)
    for other in (eval_logits, updated_logits, apply(discriminator, variables, x)):
        np.testing.assert_allclose(other, logits, rtol=1e-5, atol=1e-6)


def test_spectral_discriminator_gradients_equal_a_lax_forward():
    # Gradients flow through the normalisation (sigma depends on the kernel, u and v do not:
    # Miyato et al. 2018, sec. 2.2) and through DownConv2x's own gradients.
    discriminator, variables, x = spectral_discriminator()
    stats = variables["batch_stats"]

    def ours(params):
        v = {"params": params, "batch_stats": stats}
        return discriminator.apply(v, x, True, update_stats=False).sum()

    def normalised(kernel, u):
        matrix = kernel.reshape(-1, kernel.shape[-1])
        v = jax.lax.stop_gradient(u @ matrix.T)
        v = v / jnp.linalg.norm(v)
        u = jax.lax.stop_gradient(v @ matrix)
        u = u / jnp.linalg.norm(u)
        return kernel / (v @ matrix @ u.T)[0, 0]

    def reference(params):
        h = x
        for i in range(2):
            p = params[f"DownConv2x_{i}"]["Conv_0"]
            u = stats[f"SpectralNorm_{i}"][f"DownConv2x_{i}/Conv_0/kernel/u"]
            h = conv_down(h, {"kernel": normalised(p["kernel"], u), "bias": p["bias"]})
            h = jax.nn.leaky_relu(h, 0.2)
        p, u = params["Dense_0"], stats["SpectralNorm_2"]["Dense_0/kernel/u"]
        return (h.reshape(BATCH, -1) @ normalised(p["kernel"], u) + p["bias"]).sum()

    got = jax.jit(jax.grad(ours))(variables["params"])
    expected = jax.jit(jax.grad(reference))(variables["params"])
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


def randomized_vae(name, shape):
    """(encoder, decoder, x, z, encoder variables, decoder variables), variables randomized."""
    encoder, decoder = build(model_config(name, likelihood="gaussian"), shape)
    x, z = inputs(name, shape)
    e_vars = randomized(jax.jit(lambda k: encoder.init(k, x, False))(KEY))
    d_vars = randomized(jax.jit(lambda k: decoder.init(k, z, False))(KEY), seed=2)
    return encoder, decoder, x, z, e_vars, d_vars


def relu_layers(params, h, depth):
    """Dense_0 .. Dense_{depth-1}, each followed by ReLU (config.model.depth of them)."""
    for i in range(depth):
        h = np.maximum(dense(params[f"Dense_{i}"], h), 0)
    return h


def test_vae_mlp_equals_a_numpy_forward():
    # Encoder: depth x (Dense + ReLU) -> linear mean and logvar heads; decoder likewise to
    # the likelihood's C * k channels (Kingma & Welling 2013, appendix C).
    shape = (3, 3, 1)
    encoder, decoder, x, z, e_vars, d_vars = randomized_vae("vae_mlp", shape)
    p, h = e_vars["params"], relu_layers(e_vars["params"], x.reshape(BATCH, -1), 2)
    mean, logvar = apply(encoder, e_vars, x)
    np.testing.assert_allclose(mean, dense(p["mean"], h), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logvar, dense(p["logvar"], h), rtol=1e-4, atol=1e-4)
    p, h = d_vars["params"], relu_layers(d_vars["params"], z, 2)
    expected = dense(p["Dense_2"], h).reshape(BATCH, 3, 3, 2)
    np.testing.assert_allclose(apply(decoder, d_vars, z), expected, rtol=1e-4, atol=1e-4)


def test_vae_conv_equals_a_lax_forward():
    # Encoder: conv(features) + ReLU -> conv(2 features) + ReLU -> heads; decoder: dense +
    # ReLU to s0 x s0 x 2 features -> up(features) + ReLU -> up(C * k), no output nonlinearity.
    shape = (16, 16, 1)
    encoder, decoder, x, z, e_vars, d_vars = randomized_vae("vae_conv", shape)
    p = e_vars["params"]
    h = jax.nn.relu(conv_down(x, p["DownConv2x_0"]["Conv_0"]))
    h = jax.nn.relu(conv_down(h, p["DownConv2x_1"]["Conv_0"]))
    assert h.shape == (BATCH, 4, 4, 8)
    h = h.reshape(BATCH, -1)
    mean, logvar = apply(encoder, e_vars, x)
    np.testing.assert_allclose(mean, dense(p["mean"], h), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logvar, dense(p["logvar"], h), rtol=1e-4, atol=1e-4)
    p = d_vars["params"]
    h = jax.nn.relu(dense(p["Dense_0"], z)).reshape(BATCH, 4, 4, 8)
    h = jax.nn.relu(conv_up(h, p["UpConv2x_0"]["ConvTranspose_0"]))
    expected = conv_up(h, p["UpConv2x_1"]["ConvTranspose_0"])
    assert expected.shape == (BATCH, 16, 16, 2)
    np.testing.assert_allclose(apply(decoder, d_vars, z), expected, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------- config.validate

BAD_VALUES = [
    ("num_steps", 0),
    ("batch_size", 0),
    ("steps_per_call", 0),
    ("keep_checkpoints", 0),
    ("num_samples", 0),
    ("log_every", -1),
    ("gan.n_critic", 0),
    ("gan.pack", 0),
    ("vae.beta", -0.5),
    ("optim.lr", 0.0),
    ("optim.name", "rmsprop"),
    ("optim.decay_from", -0.1),
    ("gan.d_lr", -1e-4),
    ("model.ar_kernel", 1),
    ("model.ar_hidden", 0),
    ("model.z_dim", 0),
    ("eval.nll_k", 0),
    ("sample_every", -1),
    ("checkpoint_every", -1),
    ("eval_every", -1),
    ("seed", -1),
    ("eval.num_samples", 0),
    ("eval.max_test", -1),
    ("data.num_workers", -1),
    ("optim.decay_from", 1.5),
]
GOOD_VALUES = [
    ("vae.beta", 0.0),
    ("gan.d_lr", 0.0),
    ("optim.decay_from", 0.0),
    ("optim.decay_from", 1.0),
    ("model.ar_kernel", 3),
    ("eval.max_test", 0),
    ("log_every", 0),
    ("optim.name", "sgd"),
]


def _set(c, key, value):
    *parents, leaf = key.split(".")
    for p in parents:
        c = c[p]
    c[leaf] = value


def _checked(key, value):
    """Every check a config goes through before training: resolve, then the model's builder
    (a VAE model for the fields only VAEs read, else toy_mlp on points)."""
    c = config.base_config()
    vae = key.startswith(("vae.", "model.ar_"))
    c.model.name = "vae_mlp" if vae else "toy_mlp"
    _set(c, key, value)
    build(config.resolve(c), (28, 28, 1) if vae else (2,))


@pytest.mark.parametrize("key,value", BAD_VALUES)
def test_validate_refuses_each_bad_value_naming_it(key, value):
    with pytest.raises(ConfigError, match=key.split(".")[-1]):
        _checked(key, value)


@pytest.mark.parametrize("key,value", GOOD_VALUES)
def test_validate_accepts_the_edge_values(key, value):
    _checked(key, value)
