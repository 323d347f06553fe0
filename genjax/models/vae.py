"""VAE encoders and decoders (flax.linen); they know nothing of training.

Encoders map x in [0, 1] (B, H, W, C) to the posterior's (mean, logvar), each (B, z_dim);
decoders map z to the likelihood's parameters (B, H, W, C * k), float32: k = 1 Bernoulli
logits, k = 2 Gaussian [mean | log_std] channels (Kingma & Welling 2013, appendix C).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from genjax.models.layers import DownConv2x, UpConv2x, square_levels


def _posterior(h, z_dim: int, dtype: Any):
    """Two linear heads: the diagonal Gaussian q(z|x)'s mean and log-variance, float32."""
    mean = nn.Dense(z_dim, dtype=dtype, name="mean")(h)
    logvar = nn.Dense(z_dim, dtype=dtype, name="logvar")(h)
    return mean.astype(jnp.float32), logvar.astype(jnp.float32)


class MLPEncoder(nn.Module):
    """x -> flatten -> `depth` x Dense(hidden) + ReLU -> (mean, logvar) (Kingma & Welling 2013)."""

    z_dim: int = 20
    hidden: int = 512
    depth: int = 1
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        h = x.reshape((x.shape[0], -1))
        for _ in range(self.depth):
            h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(h))
        return _posterior(h, self.z_dim, self.dtype)


class MLPDecoder(nn.Module):
    """z -> `depth` x Dense(hidden) + ReLU -> likelihood parameters (B, H, W, C * k)."""

    data_shape: tuple[int, int, int]
    k: int = 1
    hidden: int = 512
    depth: int = 1
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, z, train: bool):
        h = z
        for _ in range(self.depth):
            h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(h))
        height, width, channels = self.data_shape
        out = nn.Dense(math.prod(self.data_shape) * self.k, dtype=self.dtype)(h)
        return out.reshape((z.shape[0], height, width, channels * self.k)).astype(jnp.float32)


class ConvEncoder(nn.Module):
    """x -> stride-2 convs (features, 2 * features) + ReLU -> flatten -> (mean, logvar)."""

    z_dim: int = 20
    features: int = 32
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        h = x
        for width in (self.features, 2 * self.features):
            h = nn.relu(DownConv2x(width, dtype=self.dtype)(h))
        return _posterior(h.reshape((x.shape[0], -1)), self.z_dim, self.dtype)


class ConvDecoder(nn.Module):
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
