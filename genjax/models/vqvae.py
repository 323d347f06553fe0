"""VQ-VAE modules (van den Oord et al. 2017) and the autoregressive prior over their codes;
they know nothing of training.

The encoder maps x in [0, 1] (B, H, W, C) to a grid of vectors z_e (B, H/4, W/4, D); each is
replaced by its nearest codebook vector (`quantize`) and the decoder maps the grid back to
the likelihood's parameters (B, H, W, C * k), as the VAE decoders do
(genjax.models.vae). The prior is a small causal transformer over the grid's codes in raster
order (the VQ-VAE paper's prior is a PixelCNN; any exact autoregressive model serves):
log p(codes) in one pass, sampling one position at a time.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from genjax.config import ConfigError
from genjax.families.vae import LIKELIHOOD_CHANNELS
from genjax.models.layers import UpConv2x
from genjax.models.vae import conv_body

DOWNSAMPLING = 4  # the encoder's two stride-2 convs: one code per 4 x 4 pixels


def code_grid(data_shape: tuple) -> tuple[int, int]:
    """(h, w) of the code grid for images (H, W, C), or a ConfigError."""
    if len(data_shape) != 3 or data_shape[0] % DOWNSAMPLING or data_shape[1] % DOWNSAMPLING:
        raise ConfigError(
            f"a VQ-VAE takes images (H, W, C) with H and W multiples of {DOWNSAMPLING} "
            f"(e.g. 28, 32, 64); got {data_shape}"
        )
    return data_shape[0] // DOWNSAMPLING, data_shape[1] // DOWNSAMPLING


class VQEncoder(nn.Module):
    """x -> two 4x4 stride-2 convs (features, 2 * features) + ReLU -> a per-position ReLU
    layer -> z_e (B, H/4, W/4, code_dim), float32."""

    code_dim: int = 16
    features: int = 32
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        h = conv_body(x, self.features, self.dtype)
        h = nn.relu(nn.Dense(2 * self.features, dtype=self.dtype)(h))
        return nn.Dense(self.code_dim, dtype=self.dtype)(h).astype(jnp.float32)


class VQDecoder(nn.Module):
    """z_q (B, H/4, W/4, D) -> a per-position ReLU layer -> two 4x4 stride-2 transposed convs
    -> the likelihood's parameters (B, H, W, C * k), float32."""

    data_shape: tuple[int, int, int]
    k: int = 1
    features: int = 32
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, z_q, train: bool):
        h = nn.relu(nn.Dense(2 * self.features, dtype=self.dtype)(z_q))
        h = nn.relu(UpConv2x(self.features, dtype=self.dtype)(h))
        return UpConv2x(self.data_shape[-1] * self.k, dtype=self.dtype)(h).astype(jnp.float32)


def nearest_codes(z_e, codebook):
    """The index of the nearest codebook row (K, D) to each vector of z_e (..., D), int32:
    argmin_k |z - e_k|^2, as |z|^2 - 2 z.e_k + |e_k|^2."""
    z = z_e.astype(jnp.float32)
    distances = (
        jnp.sum(jnp.square(z), -1, keepdims=True)
        - 2.0 * z @ codebook.T
        + jnp.sum(jnp.square(codebook), -1)
    )
    return jnp.argmin(distances, axis=-1).astype(jnp.int32)


def quantize(z_e, codebook):
    """(z_q, codes, e): each vector of z_e replaced by its nearest code e = codebook[codes],
    passed on with the straight-through estimator, z_q = z_e + stop_gradient(e - z_e): the
    value of e, the gradient of z_e (van den Oord et al. 2017, sec. 3.2)."""
    codes = nearest_codes(z_e, codebook)
    e = codebook[codes]
    return z_e + lax.stop_gradient(e - z_e), codes, e


class CodePrior(nn.Module):
    """p(c) = prod_i p(c_i | c_<i) over a code grid flattened in raster order: a causal
    transformer (pre-LayerNorm blocks of masked self-attention and a 4x MLP; Vaswani et al.
    2017, Radford et al. 2019) on the codes shifted right behind a start token.

    `__call__(codes (B, P) int32) -> logits (B, P, K)`: logits[:, i] depend on codes[:, :i]
    only.
    """

    num_codes: int
    positions: int
    width: int = 128
    depth: int = 2
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, codes, train: bool = False):
        b, p = codes.shape
        start = jnp.full((b, 1), self.num_codes, jnp.int32)  # a token of its own
        inputs = jnp.concatenate([start, codes[:, :-1].astype(jnp.int32)], axis=1)
        h = nn.Embed(self.num_codes + 1, self.width, name="embed")(inputs)
        position = self.param(
            "position", nn.initializers.normal(0.02), (self.positions, self.width)
        )
        h = (h + position[:p]).astype(self.dtype)
        mask = nn.make_causal_mask(inputs)
        heads = 4 if self.width % 4 == 0 else 1
        for _ in range(self.depth):
            a = nn.LayerNorm(dtype=self.dtype)(h)
            h = h + nn.MultiHeadDotProductAttention(heads, dtype=self.dtype)(a, a, mask=mask)
            a = nn.LayerNorm(dtype=self.dtype)(h)
            a = nn.Dense(self.width, dtype=self.dtype)(
                nn.gelu(nn.Dense(4 * self.width, dtype=self.dtype)(a))
            )
            h = h + a
        h = nn.LayerNorm(dtype=self.dtype)(h)
        return nn.Dense(self.num_codes, dtype=self.dtype)(h).astype(jnp.float32)


def code_log_likelihood(logits, codes):
    """log p(codes) per example, (B,), from the prior's logits (B, P, K) of codes (B, P)."""
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(log_probs, codes[..., None].astype(jnp.int32), axis=-1)
    return jnp.sum(picked[..., 0], axis=-1)


def sample_codes(prior: CodePrior, variables, key, num: int):
    """`num` code sequences (num, P) drawn in raster order: position i from the prior's
    logits given the codes drawn before it (each step reruns the network on the whole
    sequence; the causal mask makes the later positions irrelevant)."""

    def body(i, codes):
        logits = prior.apply(variables, codes)[:, i]
        drawn = jax.random.categorical(jax.random.fold_in(key, i), logits)
        return codes.at[:, i].set(drawn.astype(jnp.int32))

    codes = jnp.zeros((num, prior.positions), jnp.int32)
    return lax.fori_loop(0, prior.positions, body, codes)


# ------------------------------------------------------------------ registry builders


def _positive(model_config, *keys: str) -> None:
    for key in keys:
        if model_config[key] < 1:
            raise ConfigError(f"config.model.{key} must be >= 1, got {model_config[key]}")


def build_vqvae(config, shape, **common) -> tuple[VQEncoder, VQDecoder]:
    """(encoder, decoder) of the first stage: model.z_dim is the code vectors' dimension,
    model.features the convs' base width; the decoder emits vqvae.likelihood's parameters."""
    code_grid(shape)
    _positive(config.model, "z_dim", "features")
    k = LIKELIHOOD_CHANNELS[config.vqvae.likelihood]
    return (
        VQEncoder(config.model.z_dim, config.model.features, **common),
        VQDecoder(shape, k, config.model.features, **common),
    )


def build_prior(config, shape, **common) -> tuple[nn.Module, nn.Module, CodePrior]:
    """(the first stage's encoder and decoder, the prior): the first stage as
    prior.vqvae_workdir's config builds it, a CodePrior of model.depth blocks of width
    model.hidden over its code grid. ConfigError if that workdir holds no VQ-VAE or one
    trained on data of another shape."""
    from genjax.families.vqvae import first_stage

    run = first_stage(config.prior.vqvae_workdir)
    if tuple(run.experiment.data_shape) != tuple(shape):
        raise ConfigError(
            f"config.prior.vqvae_workdir={config.prior.vqvae_workdir!r} holds a VQ-VAE of data "
            f"{run.experiment.data_shape}, and data {config.data.train!r} is {tuple(shape)}; "
            "valid: data of the first stage's shape"
        )
    _positive(config.model, "hidden", "depth")
    h, w = code_grid(shape)
    encoder, decoder = run.experiment.models
    size = run.experiment.config.vqvae.codebook_size
    return (
        encoder,
        decoder,
        CodePrior(size, h * w, config.model.hidden, config.model.depth, **common),
    )
