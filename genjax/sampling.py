"""Samples, interpolations and reconstructions from a trained state; image grids and plots."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from PIL import Image, ImageDraw

from genjax.models.vae import AutoregressiveDecoder, causal_window_context
from genjax.steps import GANState, VAEState


def generator_variables(state) -> dict:
    """Variables of the network that maps latents to data: the generator or the decoder."""
    if isinstance(state, GANState):
        return {"params": state.g_params, "batch_stats": state.g_stats}
    return {"params": state.params["decoder"], "batch_stats": state.batch_stats["decoder"]}


def decode(models, state, z, likelihood: str = "bernoulli", key=None) -> jax.Array:
    """Latents -> data space: images in [0, 1] (NHWC) or 2-D points, in eval mode.

    VAE images are the likelihood's mean (Bernoulli probabilities, Gaussian means). An
    autoregressive decoder samples its pixels one by one from `key` and shows each pixel's
    mean given z and the pixels sampled before it.
    """
    if isinstance(state, GANState):
        out = models[0].apply(generator_variables(state), z, train=False)
        return out if out.ndim == 2 else (out + 1.0) / 2.0
    decoder = models[1]
    if isinstance(decoder, AutoregressiveDecoder):
        key = jax.random.PRNGKey(0) if key is None else key
        variables = generator_variables(state)
        return autoregressive_sample(decoder, variables, z, likelihood, key)[1]
    out = decoder.apply(generator_variables(state), z, train=False)
    if likelihood == "gaussian":
        return jnp.clip(out[..., : out.shape[-1] // 2], 0.0, 1.0)
    return jax.nn.sigmoid(out)


def autoregressive_sample(decoder, variables, z, likelihood: str, key):
    """Ancestral sampling in raster order: pixel n gets the base parameters of z plus those
    of its causal context in the pixels drawn so far. Returns (the sample, each pixel's mean
    given z and the pixels before it), both (B, H, W, C); the means are in [0, 1]."""
    base = decoder.apply(variables, z, False, method="base_out")  # (B, H, W, C * k)
    b, h, w, ck = base.shape
    c = ck // 2 if likelihood == "gaussian" else ck

    r = decoder.kernel // 2

    def pixel(n, carry):
        padded, means = carry  # the sample so far, padded by r for the context windows
        i, j = n // w, n % w
        context = causal_window_context(padded, decoder.kernel, i, j)
        params = base[:, i, j] + decoder.apply(variables, context, method="context_logits")
        k = jax.random.fold_in(key, n)
        if likelihood == "gaussian":
            mean = params[:, :c]
            value = mean + jnp.exp(params[:, c:]) * jax.random.normal(k, mean.shape)
        else:
            mean = jax.nn.sigmoid(params)
            value = (jax.random.uniform(k, mean.shape) < mean).astype(jnp.float32)
        return padded.at[:, r + i, r + j].set(value), means.at[:, i, j].set(mean)

    padded = jnp.zeros((b, h + 2 * r, w + 2 * r, c), jnp.float32)
    padded, means = lax.fori_loop(0, h * w, pixel, (padded, jnp.zeros((b, h, w, c), jnp.float32)))
    return padded[:, r : r + h, r : r + w], jnp.clip(means, 0.0, 1.0)


def encode_mean(models, state: VAEState, x) -> jax.Array:
    """The mean of q(z|x) for images x in [0, 1]."""
    variables = {"params": state.params["encoder"], "batch_stats": state.batch_stats["encoder"]}
    mean, _ = models[0].apply(variables, x, train=False)
    return mean


def samples(models, state, key, num: int, z_dim: int, likelihood: str = "bernoulli"):
    """`num` draws from the model: z ~ N(0, I) pushed through the generator/decoder."""
    z_key, pixel_key = jax.random.split(key)
    z = jax.random.normal(z_key, (num, z_dim))
    return decode(models, state, z, likelihood, pixel_key)


def interpolations(
    models, state, key, rows: int, z_dim: int, steps: int = 8, likelihood="bernoulli"
):
    """`rows` straight lines in latent space, `steps` points each, row-major."""
    a_key, b_key = jax.random.split(key)
    a = jax.random.normal(a_key, (rows, 1, z_dim))
    b = jax.random.normal(b_key, (rows, 1, z_dim))
    t = jnp.linspace(0.0, 1.0, steps)[None, :, None]
    z = ((1 - t) * a + t * b).reshape(rows * steps, z_dim)
    return decode(models, state, z, likelihood, jax.random.fold_in(key, 1))


def reconstructions(models, state: VAEState, images_uint8, likelihood="bernoulli", key=None):
    """Pairs (image, reconstruction from the mean of q(z|x)), interleaved."""
    x = jnp.asarray(images_uint8, jnp.float32) / 255.0
    recon = decode(models, state, encode_mean(models, state, x), likelihood, key)
    return jnp.stack([x, recon], axis=1).reshape(-1, *x.shape[1:])


def to_uint8(images) -> np.ndarray:
    """Images in [0, 1] -> uint8."""
    return np.asarray(jnp.round(jnp.clip(images, 0.0, 1.0) * 255.0), dtype=np.uint8)


def image_grid(images: np.ndarray, columns: int | None = None, pad: int = 2) -> Image.Image:
    """A grid picture of uint8 NHWC images (grey or RGB)."""
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
    for i, image in enumerate(images):
        r, q = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[top : top + h, left : left + w] = image
    return Image.fromarray(grid[..., 0] if c == 1 else grid)


def scatter_plot(
    points: np.ndarray, real: np.ndarray | None = None, size: int = 512
) -> Image.Image:
    """Generated 2-D points (blue) over real data (grey), on a square canvas."""
    points = np.asarray(points, np.float64)
    both = points if real is None else np.concatenate([points, real])
    both = both[np.isfinite(both).all(axis=1)]
    lo, hi = (both.min(), both.max()) if len(both) else (-1.0, 1.0)
    margin = 0.05 * (hi - lo) + 1e-6
    lo, hi = lo - margin, hi + margin

    def pixels(p):
        p = p[np.isfinite(p).all(axis=1)]
        return (p - lo) / (hi - lo) * (size - 1)

    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    for layer, colour in ((real, (190, 190, 190)), (points, (31, 119, 180))):
        if layer is None:
            continue
        for x, y in pixels(np.asarray(layer, np.float64)):
            draw.ellipse((x - 1.5, size - 1 - y - 1.5, x + 1.5, size - 1 - y + 1.5), fill=colour)
    return image


def write_samples(workdir, out, num: int = 64, seed: int = 0, mode: str = "samples"):
    """sample.py: draws from a workdir's newest checkpoint into a .png picture or an .npz."""
    from pathlib import Path

    from genjax.config import ConfigError
    from genjax.experiment import restore

    out = Path(out)
    if out.suffix not in (".png", ".npz"):
        raise ConfigError(f"--out {out}: unknown file type {out.suffix!r}; valid: .png, .npz")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: no such directory {out.parent}")
    run = restore(workdir)
    exp, state = run.experiment, run.state
    points = run.train_source.kind == "point"
    likelihood, z_dim = exp.config.vae.likelihood, exp.config.model.z_dim
    key = jax.random.PRNGKey(seed)
    if mode == "scatter" and not points:
        raise ConfigError("--mode scatter is for 2-D data; this model makes images")
    if mode == "reconstruct" and exp.family != "vae":
        raise ConfigError("--mode reconstruct needs a VAE (a GAN has no encoder)")
    if mode in ("interpolate", "reconstruct") and points:
        raise ConfigError(f"--mode {mode} is for images; use samples or scatter on 2-D data")

    columns = None
    if mode in ("samples", "scatter"):
        x = jax.jit(partial(samples, exp.models, num=num, z_dim=z_dim, likelihood=likelihood))(
            state, key
        )
    elif mode == "interpolate":
        rows, columns = -(-num // 8), 8  # whole rows of 8: at least num images
        x = interpolations(exp.models, state, key, rows, z_dim, columns, likelihood)
    else:
        images = run.test_source.to_arrays()["image"][:num]
        x, columns = reconstructions(exp.models, state, images, likelihood), 2 * min(8, len(images))
    x = np.asarray(x)
    if out.suffix == ".npz":
        np.savez(out, samples=x if points else to_uint8(x))
    elif points:
        scatter_plot(x, run.test_source.to_arrays()["point"][:2000]).save(out)
    else:
        image_grid(to_uint8(x), columns).save(out)
    return out
