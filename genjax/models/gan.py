"""GAN generators and discriminators (flax.linen); they know nothing of training.

Generators map z (B, z_dim) to x (B, *data_shape), float32: images NHWC in [-1, 1] (tanh),
points unsquashed. Discriminators map x to float32 logits (B,). Every module computes in
`dtype` (params stay float32) and averages BatchNorm statistics over `axis_name`.

A module with `num_classes` > 0 is class-conditional: it takes int32 class labels (B,) as
the keyword `labels`, `G(z, train, labels=y)` and `D(x, train, labels=y)`;
genjax.families.gan passes labels to the modules whose `num_classes` is set, and only to those.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.models.layers import (
    ConditionalBatchNorm,
    DownConv2x,
    UpConv2x,
    batch_norm,
    dcgan_init,
    square_levels,
)


class MLPGenerator(nn.Module):
    """z -> `depth` x Dense(hidden) + LeakyReLU -> x (Goodfellow et al. 2014; toy MLPs).

    `negative_slope=0` is ReLU; `squash` applies tanh so images land in [-1, 1].
    """

    data_shape: tuple[int, ...]
    hidden: int = 128
    depth: int = 1
    negative_slope: float = 0.01
    squash: bool = True
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, z, train: bool):
        h = z
        for _ in range(self.depth):
            h = nn.leaky_relu(nn.Dense(self.hidden, dtype=self.dtype)(h), self.negative_slope)
        x = nn.Dense(math.prod(self.data_shape), dtype=self.dtype)(h).astype(jnp.float32)
        x = jnp.tanh(x) if self.squash else x
        return x.reshape((z.shape[0], *self.data_shape))


class MLPDiscriminator(nn.Module):
    """x -> flatten -> `depth` x Dense(hidden) + LeakyReLU -> one logit per example.

    It holds no statistics; `update_stats` is accepted, and ignored, so that a GAN step calls
    every discriminator alike (see DCGANDiscriminator).
    """

    hidden: int = 128
    depth: int = 1
    negative_slope: float = 0.01
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool, *, update_stats: bool | None = None):
        h = x.reshape((x.shape[0], -1))
        for _ in range(self.depth):
            h = nn.leaky_relu(nn.Dense(self.hidden, dtype=self.dtype)(h), self.negative_slope)
        return nn.Dense(1, dtype=self.dtype)(h)[:, 0].astype(jnp.float32)


class DCGANGenerator(nn.Module):
    """DCGAN generator (Radford et al. 2016, fig. 1): dense to s0 x s0, then n 2x upsamplings.

    Channels halve from features * 2**(n-1) at s0 x s0; BatchNorm + ReLU after every layer
    but the last, which goes to the image's channels with tanh. Layers before a BatchNorm
    have no bias (it would cancel). With `num_classes` > 0 the class enters twice: as a
    one-hot vector beside z (the conditional GAN of Mirza & Osindero 2014) and through every
    BatchNorm, made class-conditional (layers.ConditionalBatchNorm, as in Miyato & Koyama
    2018's generator).
    """

    data_shape: tuple[int, int, int]
    features: int = 64
    num_classes: int = 0
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, z, train: bool, labels=None):
        side, _, channels = self.data_shape
        s0, n = square_levels(side)
        width = self.features * 2 ** (n - 1)

        def normalised(h):
            if self.num_classes:
                cbn = ConditionalBatchNorm(self.num_classes, train, self.axis_name, self.dtype)
                return cbn(h, labels)
            return batch_norm(train, self.axis_name, self.dtype)(h)

        if self.num_classes:
            z = jnp.concatenate([z, jax.nn.one_hot(labels, self.num_classes, dtype=z.dtype)], -1)
        h = nn.Dense(s0 * s0 * width, use_bias=False, dtype=self.dtype, kernel_init=dcgan_init)(z)
        h = h.reshape((z.shape[0], s0, s0, width))
        h = nn.relu(normalised(h))
        for i in range(1, n):
            h = UpConv2x(width // 2**i, use_bias=False, dtype=self.dtype, kernel_init=dcgan_init)(h)
            h = nn.relu(normalised(h))
        h = UpConv2x(channels, dtype=self.dtype, kernel_init=dcgan_init)(h)
        return jnp.tanh(h.astype(jnp.float32))


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator (Radford et al. 2016): n stride-2 convs, LeakyReLU 0.2, one logit.

    Channels double from `features`; `d_norm` ('batch' | 'layer' | 'spectral' | 'none',
    checked by the registry's builder) says how it is normalised. 'batch' and 'layer' normalise
    the output of every conv but the first ('layer' is the BatchNorm-free critic of Gulrajani et
    al. 2017, sec. 4). 'spectral' (Miyato et al. 2018) instead divides the kernel of every conv
    and of the final dense layer, as a (kh * kw * in, out) matrix, by its largest singular value,
    estimated by one power iteration per call (their Algorithm 1) with flax's `nn.SpectralNorm`;
    no other normalisation layer, and every conv keeps its bias.

    The power iteration's vector `u` and estimate `sigma` are held in the 'batch_stats'
    collection (one `SpectralNorm_i` entry per layer). `__call__(x, train, update_stats=...)`
    says whether they are written (the collection must then be mutable): None, the default,
    means `train`. A GAN step runs the discriminator with update_stats=True in the
    discriminator's update and with train=True, update_stats=False in the generator's, so
    that the generator's step leaves u and sigma as they were. Every call, eval mode included,
    normalises by the estimate of one power iteration from the stored `u`, written or not
    (`sigma` is only a record). `init` stores each kernel already divided by its first
    estimate (what `nn.SpectralNorm` does). For 'batch', 'layer' and 'none', `update_stats`
    changes nothing (BatchNorm's running averages follow `train`).

    With `num_classes` > 0 it is a projection discriminator (Miyato & Koyama 2018, eq. 3):
    the logit of (x, y) is dense(phi(x)) + <embed(y), phi(x)>, phi(x) the flattened features
    of the last conv, one embedding row per class (spectrally normalised too under 'spectral').
    """

    features: int = 64
    d_norm: str = "batch"
    num_classes: int = 0
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool, labels=None, *, update_stats: bool | None = None):
        update_stats = train if update_stats is None else update_stats

        def layer(module, h):
            if self.d_norm == "spectral":
                return nn.SpectralNorm(module)(h, update_stats=update_stats)
            return module(h)

        _, n = square_levels(x.shape[1])
        h = x
        for i in range(n):
            batch_normed = i > 0 and self.d_norm == "batch"
            conv = DownConv2x(
                self.features * 2**i,
                use_bias=not batch_normed,
                dtype=self.dtype,
                kernel_init=dcgan_init,
            )
            h = layer(conv, h)
            if batch_normed:
                h = batch_norm(train, self.axis_name, self.dtype)(h)
            elif i > 0 and self.d_norm == "layer":
                h = nn.LayerNorm(reduction_axes=(-3, -2, -1), dtype=self.dtype)(h)
            h = nn.leaky_relu(h, 0.2)
        h = h.reshape((x.shape[0], -1))
        logits = layer(nn.Dense(1, dtype=self.dtype, kernel_init=dcgan_init), h)[:, 0]
        if self.num_classes:
            embed = nn.Embed(self.num_classes, h.shape[-1], embedding_init=dcgan_init)
            logits = logits + jnp.sum(layer(embed, labels).astype(h.dtype) * h, axis=-1)
        return logits.astype(jnp.float32)
