"""VAE encoders and decoders (flax.linen); they know nothing of training.

Encoders map x in [0, 1] (B, H, W, C) to the posterior's (mean, logvar), each (B, z_dim);
decoders map z to the likelihood's parameters (B, H, W, C * k), float32: k = 1 Bernoulli
logits, k = 2 Gaussian [mean | log_std] channels (Kingma & Welling 2013, appendix C).
The Conditional MLPs are class-conditional (Sohn et al. 2015, the CVAE): both take int32
labels (B,) after their input, concatenated one-hot to it. The Masked MLPs are conditioned
on an image's known pixels instead (for inpainting): both take `known` (B, H, W, C + 1), the
image with its missing pixels zeroed and the mask as one more channel (genjax.inpaint.
known_pixels); without it nothing is known and they are an unconditional VAE's modules.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from genjax.models.layers import DownConv2x, UpConv2x, square_levels
from genjax.objectives import likelihood_mean


def conv_body(x, features: int, dtype: Any):
    """The conv encoders' body: two 4x4 stride-2 convs (features, 2 * features), each + ReLU,
    (B, H, W, C) -> (B, H/4, W/4, 2 * features)."""
    h = x
    for width in (features, 2 * features):
        h = nn.relu(DownConv2x(width, dtype=dtype)(h))
    return h


def _posterior(h, z_dim: int, dtype: Any):
    """Two linear heads: the diagonal Gaussian q(z|x)'s mean and log-variance, float32."""
    mean = nn.Dense(z_dim, dtype=dtype, name="mean")(h)
    logvar = nn.Dense(z_dim, dtype=dtype, name="logvar")(h)
    return mean.astype(jnp.float32), logvar.astype(jnp.float32)


def _with_labels(h, labels, num_classes: int):
    """h (B, D) with the one-hot labels (B, num_classes) concatenated."""
    return jnp.concatenate([h, jax.nn.one_hot(labels, num_classes, dtype=h.dtype)], axis=-1)


def _with_known(h, known, shape: tuple):
    """h (B, D) with the flattened condition `known` concatenated; zeros (nothing known) when
    known is None. `shape` is the images' (H, W, C)."""
    size = math.prod(shape[:2]) * (shape[2] + 1)
    flat = jnp.zeros((h.shape[0], size), h.dtype) if known is None else known.reshape(-1, size)
    return jnp.concatenate([h, flat.astype(h.dtype)], axis=-1)


def _mlp(h, hidden: int, depth: int, dtype):
    """`depth` x Dense(hidden) + ReLU, inside the calling module."""
    for _ in range(depth):
        h = nn.relu(nn.Dense(hidden, dtype=dtype)(h))
    return h


class MLPEncoder(nn.Module):
    """x -> flatten -> `depth` x Dense(hidden) + ReLU -> (mean, logvar) (Kingma & Welling 2013)."""

    z_dim: int = 20
    hidden: int = 512
    depth: int = 1
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        h = _mlp(x.reshape((x.shape[0], -1)), self.hidden, self.depth, self.dtype)
        return _posterior(h, self.z_dim, self.dtype)


class ConditionalMLPEncoder(MLPEncoder):
    """(x, labels) -> [flatten(x) | one_hot(labels)] -> the MLPEncoder's layers (Sohn 2015)."""

    num_classes: int = 2

    @nn.compact
    def __call__(self, x, labels, *, train: bool):
        h = _with_labels(x.reshape((x.shape[0], -1)), labels, self.num_classes)
        return _posterior(_mlp(h, self.hidden, self.depth, self.dtype), self.z_dim, self.dtype)


class DecoderCalls:
    """How the VAE family calls a decoder, the same for every decoder (plain decoders here;
    AutoregressiveDecoder overrides each): the arguments after the variables, the likelihood's
    parameters for S latents per example, and the picture of a decoded z."""

    def inputs(self, z, x) -> tuple:
        """The arguments of apply after the variables, in training (teacher forcing)."""
        return (z,)

    def importance_params(self, variables, z, x, labels=None):
        """Likelihood parameters (B, S, ...) for latents z (B, S, Z) of examples x (B, 1, ...)
        (of classes `labels` (B,) for a class-conditional decoder)."""
        b, samples, z_dim = z.shape
        classes = () if labels is None else (jnp.repeat(labels, samples),)
        out = self.apply(variables, z.reshape(b * samples, z_dim), *classes, train=False)
        return out.reshape(b, samples, *out.shape[1:])

    def mean(self, variables, z, likelihood: str, key, labels=None):
        """The likelihood's mean given z, in [0, 1] (`key` is unused: nothing is sampled)."""
        classes = () if labels is None else (labels,)
        return likelihood_mean(self.apply(variables, z, *classes, train=False), likelihood)


class MLPDecoder(DecoderCalls, nn.Module):
    """z -> `depth` x Dense(hidden) + ReLU -> likelihood parameters (B, H, W, C * k)."""

    data_shape: tuple[int, int, int]
    k: int = 1
    hidden: int = 512
    depth: int = 1
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, z, train: bool):
        return self._out(_mlp(z, self.hidden, self.depth, self.dtype))

    def _out(self, h):
        height, width, channels = self.data_shape
        out = nn.Dense(math.prod(self.data_shape) * self.k, dtype=self.dtype)(h)
        return out.reshape((h.shape[0], height, width, channels * self.k)).astype(jnp.float32)


class ConditionalMLPDecoder(MLPDecoder):
    """(z, labels) -> [z | one_hot(labels)] -> the MLPDecoder's layers (Sohn et al. 2015)."""

    num_classes: int = 2

    @nn.compact
    def __call__(self, z, labels, *, train: bool):
        h = _with_labels(z, labels, self.num_classes)
        return self._out(_mlp(h, self.hidden, self.depth, self.dtype))


class MaskedMLPEncoder(MLPEncoder):
    """(x, known) -> [flatten(x) | flatten(known)] -> the MLPEncoder's layers: q(z | x, the
    known pixels). `train_masks` are the mask specs the model is trained to complete
    (genjax.inpaint.parse_masks), which the VAE family draws from in each step."""

    data_shape: tuple[int, int, int] = (28, 28, 1)
    train_masks: tuple = ()

    @nn.compact
    def __call__(self, x, known=None, *, train: bool):
        h = _with_known(x.reshape((x.shape[0], -1)), known, self.data_shape)
        return _posterior(_mlp(h, self.hidden, self.depth, self.dtype), self.z_dim, self.dtype)


class MaskedMLPDecoder(MLPDecoder):
    """(z, known) -> [z | flatten(known)] -> the MLPDecoder's layers: p(x | z, the known
    pixels)."""

    @nn.compact
    def __call__(self, z, known=None, *, train: bool):
        h = _with_known(z, known, self.data_shape)
        return self._out(_mlp(h, self.hidden, self.depth, self.dtype))


class ConvEncoder(nn.Module):
    """x -> stride-2 convs (features, 2 * features) + ReLU -> flatten -> (mean, logvar)."""

    z_dim: int = 20
    features: int = 32
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        h = conv_body(x, self.features, self.dtype)
        return _posterior(h.reshape((x.shape[0], -1)), self.z_dim, self.dtype)


class ConvDecoder(DecoderCalls, nn.Module):
    """z -> dense to s0 x s0 x features * 2**(n-1) + ReLU -> n 2x upsamplings -> C * k channels.

    The DCGAN generator's shape (Radford et al. 2016) without BatchNorm or tanh: the last
    layer emits the likelihood's parameters.
    """

    data_shape: tuple[int, int, int]
    k: int = 1
    features: int = 32
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, z, train: bool):
        side, _, channels = self.data_shape
        s0, n = square_levels(side)
        width = self.features * 2 ** (n - 1)
        h = nn.Dense(s0 * s0 * width, dtype=self.dtype)(z)
        h = nn.relu(h.reshape((z.shape[0], s0, s0, width)))
        for i in range(1, n):
            h = nn.relu(UpConv2x(width // 2**i, dtype=self.dtype)(h))
        return UpConv2x(channels * self.k, dtype=self.dtype)(h).astype(jnp.float32)


# ------------------------------------------------------------- autoregressive decoder


def causal_offsets(kernel: int) -> list[tuple[int, int]]:
    """(dy, dx) of the pixels before (0, 0) in raster order within a kernel x kernel window:
    PixelCNN's type-A mask (van den Oord et al. 2016), which excludes the pixel itself."""
    r = kernel // 2
    return [(dy, dx) for dy in range(-r, 1) for dx in range(-r, r + 1) if dy < 0 or dx < 0]


def causal_context(x, kernel: int):
    """(B, H, W, C) -> (B, H, W, P * C): every pixel's P = len(causal_offsets) earlier
    neighbours (zeros outside the image), all channels."""
    r = kernel // 2
    b, h, w, c = x.shape
    padded = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)))
    shifted = [
        padded[:, r + dy : r + dy + h, r + dx : r + dx + w] for dy, dx in causal_offsets(kernel)
    ]
    return jnp.stack(shifted, axis=-2).reshape(b, h, w, -1)


def causal_context_at(x, kernel: int, i, j):
    """The context of pixel (i, j) alone, (B, P * C): causal_context(x)[:, i, j] in O(kernel^2)."""
    r = kernel // 2
    return causal_window_context(jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0))), kernel, i, j)


def causal_window_context(padded, kernel: int, i, j):
    """causal_context_at on an image already padded by kernel // 2 on each side, so that a
    pixel-by-pixel sampler pads once rather than at every pixel."""
    r = kernel // 2
    b, _, _, c = padded.shape
    window = lax.dynamic_slice(padded, (0, i, j, 0), (b, 2 * r + 1, 2 * r + 1, c))
    context = [window[:, r + dy, r + dx] for dy, dx in causal_offsets(kernel)]
    return jnp.stack(context, 1).reshape(b, -1)


class AutoregressiveDecoder(nn.Module):
    """p(x|z) = prod_i p(x_i | z, x_<i): a decoder's per-pixel parameters plus a small network
    of each pixel's causal kernel x kernel neighbourhood (a one-hidden-layer PixelCNN with a
    type-A mask, as in PixelVAE, Gulrajani et al. 2017, and the VLAE, Chen et al. 2017).

    log p(x|z) stays exact and costs one pass (teacher forcing: `__call__(z, x, train)`);
    sampling is sequential over pixels (genjax.sampling). The channels of one pixel are
    independent given z and the earlier pixels.
    """

    base: nn.Module  # MLPDecoder | ConvDecoder: z -> (B, H, W, C * k)
    kernel: int = 7
    hidden: int = 32
    dtype: Any = jnp.float32
    axis_name: str | None = None

    def setup(self):
        channels = self.base.data_shape[-1] * self.base.k
        self.context_hidden = nn.Dense(self.hidden, dtype=self.dtype)
        self.context_out = nn.Dense(channels, dtype=self.dtype)

    def base_out(self, z, train: bool):
        """The z-dependent part of the likelihood's parameters, (B, H, W, C * k)."""
        return self.base(z, train)

    def context_logits(self, context):
        """(..., P * C) causal contexts -> (..., C * k), added to base_out."""
        h = nn.relu(self.context_hidden(context.astype(self.dtype)))
        return self.context_out(h).astype(jnp.float32)

    def context_params(self, x):
        """The x-dependent part of every pixel's parameters, (B, H, W, C * k)."""
        return self.context_logits(causal_context(x, self.kernel))

    def __call__(self, z, x, train: bool):
        return self.base_out(z, train) + self.context_params(x)

    # How the VAE family calls it (genjax.models.vae.DecoderCalls):

    def inputs(self, z, x) -> tuple:
        return (z, x)  # each pixel conditions on the earlier pixels of x

    def importance_params(self, variables, z, x, labels=None):
        """base_out per latent plus the context of x, computed once per example."""
        b, samples, z_dim = z.shape
        base = self.apply(variables, z.reshape(b * samples, z_dim), False, method="base_out")
        context = self.apply(variables, x[:, 0], method="context_params")
        return base.reshape(b, samples, *base.shape[1:]) + context[:, None]

    def mean(self, variables, z, likelihood: str, key, labels=None):
        """Each pixel's mean given z and the pixels sampled before it (autoregressive_sample)."""
        return autoregressive_sample(self, variables, z, likelihood, key)[1]


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
