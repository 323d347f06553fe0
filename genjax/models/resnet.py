"""The ResNet SNGAN for 32 x 32 images (Miyato et al. 2018, appendix B.4, table 4), as Mimicry
reimplements it (Lee & Town 2020, `torch_mimicry/nets/sngan/sngan_32.py`).

Generator: z -> Dense to 4 x 4 x features -> 3 `GBlock`s, each doubling the resolution at
`features` channels -> BatchNorm, ReLU, 3x3 conv to the image's channels, tanh.
Discriminator: `DBlock(optimized)` (32 -> 16), `DBlock` with downsampling (16 -> 8), two
`DBlock`s without (8 x 8) -> ReLU, sum over space, Dense to one logit; spectral norm on every
conv and dense layer. Mimicry's defaults: z_dim 128, features 256 (G), d_features 128 (D):
4,276,739 parameters in G and 1,053,825 in D, as in Mimicry's networks.

Where Mimicry's code and the paper's table differ, the model follows Mimicry's code, whose
scores it is meant to reproduce:

- G upsamples bilinearly (half-pixel centres, edges clamped: torch's
  `interpolate(scale_factor=2, mode='bilinear', align_corners=False)`), not by nearest
  neighbour as the Chainer original does.
- Mimicry's D blocks apply an in-place ReLU to their input, so their shortcut sees
  relu(x), not x (the Chainer original feeds x); `DBlock.rectified_shortcut` says which.
- Every conv and dense layer keeps its bias, as in Mimicry, including G's convs that feed a
  BatchNorm (the second one's input): this breaks the project's rule that a layer feeding a
  BatchNorm has no bias (see `layers.batch_norm`), so that the parameters are those of the
  published network.

Initialisation is Mimicry's: Xavier uniform (Glorot & Bengio 2010) with gain sqrt(2) for the
two 3x3 convs of every residual branch and gain 1 for the shortcut 1x1 convs, G's first
dense layer and last conv, and D's last dense layer. Biases start at zero (the Chainer
original's choice; Mimicry leaves PyTorch's default uniform(+-1/sqrt(fan_in)) there).
BatchNorm is `layers.batch_norm` (momentum 0.9, epsilon 1e-5: PyTorch's BatchNorm2d defaults).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.models import layers
from genjax.models.layers import batch_norm


def xavier_uniform(gain: float = 1.0):
    """PyTorch's `xavier_uniform_(w, gain)`: uniform on +-gain * sqrt(6 / (fan_in + fan_out)),
    fans counted over the receptive field, which is flax's variance scaling with scale gain^2
    averaged over the fans."""
    return nn.initializers.variance_scaling(gain**2, "fan_avg", "uniform")


RESIDUAL_INIT = xavier_uniform(math.sqrt(2.0))
SHORTCUT_INIT = xavier_uniform(1.0)


def upsample_bilinear2x(x):
    """(B, H, W, C) -> (B, 2H, 2W, C), bilinear with half-pixel centres and clamped edges.

    Per axis, output 2m is 0.75 x[m] + 0.25 x[m-1] and 2m+1 is 0.75 x[m] + 0.25 x[m+1], the
    index clamped to the image: torch's `interpolate(..., 'bilinear', align_corners=False)`.
    """
    for axis in (1, 2):
        n = x.shape[axis]
        pad = [(0, 0)] * x.ndim
        pad[axis] = (1, 1)
        xp = jnp.pad(x, pad, mode="edge")
        before = jax.lax.slice_in_dim(xp, 0, n, axis=axis)
        after = jax.lax.slice_in_dim(xp, 2, n + 2, axis=axis)
        even, odd = 0.75 * x + 0.25 * before, 0.75 * x + 0.25 * after
        shape = list(x.shape)
        shape[axis] = 2 * n
        x = jnp.stack([even, odd], axis + 1).reshape(shape)
    return x


def avg_pool2x(x):
    """(B, H, W, C) -> (B, H/2, W/2, C): the mean of each 2 x 2 window (H, W even)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean((2, 4))


def conv(features: int, size: int, init, dtype, name: str) -> nn.Conv:
    """A stride-1 'SAME' conv with a bias (size 3: padding 1; size 1: none)."""
    return nn.Conv(
        features,
        (size, size),
        padding="SAME",
        dtype=dtype,
        kernel_init=init,
        name=name,
        conv_general_dilated=layers.conv_general_dilated,  # fast gradients on XLA:CPU
    )


class GBlock(nn.Module):
    """Generator residual block, upsampling 2x: x -> BN, ReLU, up, conv3x3, BN, ReLU, conv3x3,
    plus the shortcut up, conv1x1 (Miyato et al. 2018, fig. 8a; Mimicry's `GBlock`)."""

    features: int
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        h = nn.relu(batch_norm(train, self.axis_name, self.dtype)(x))
        h = conv(self.features, 3, RESIDUAL_INIT, self.dtype, "c1")(upsample_bilinear2x(h))
        h = nn.relu(batch_norm(train, self.axis_name, self.dtype)(h))
        h = conv(self.features, 3, RESIDUAL_INIT, self.dtype, "c2")(h)
        shortcut = conv(self.features, 1, SHORTCUT_INIT, self.dtype, "shortcut")
        return h + shortcut(upsample_bilinear2x(x))


class SNGANGenerator32(nn.Module):
    """z (B, z_dim) -> images (B, 32, 32, C) in [-1, 1]; see the module docstring."""

    data_shape: tuple[int, int, int]
    features: int = 256
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, z, train: bool):
        channels = self.data_shape[-1]
        h = nn.Dense(16 * self.features, dtype=self.dtype, kernel_init=SHORTCUT_INIT)(z)
        h = h.reshape((z.shape[0], 4, 4, self.features))
        for _ in range(3):
            h = GBlock(self.features, self.dtype, self.axis_name)(h, train)
        h = nn.relu(batch_norm(train, self.axis_name, self.dtype)(h))
        h = conv(channels, 3, SHORTCUT_INIT, self.dtype, "out")(h)
        return jnp.tanh(h.astype(jnp.float32))


class DBlock(nn.Module):
    """Discriminator residual block (Miyato et al. 2018, fig. 8b; Mimicry's `DBlock` and, with
    `optimized`, `DBlockOptimized`), every conv spectrally normalised.

    Plain: ReLU, conv3x3, ReLU, conv3x3, [avgpool2]; shortcut conv1x1 then [avgpool2] when the
    channels change or it downsamples, else the identity. With `rectified_shortcut` the
    shortcut takes relu(x), as Mimicry's in-place ReLU makes it. Optimized (the first block,
    on the image): conv3x3, ReLU, conv3x3, avgpool2; shortcut avgpool2 then conv1x1.
    """

    features: int
    downsample: bool = False
    optimized: bool = False
    rectified_shortcut: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, update_stats: bool):
        def sn_conv(size, init, name, h):
            layer = conv(self.features, size, init, self.dtype, name)
            return nn.SpectralNorm(layer, name=f"sn_{name}")(h, update_stats=update_stats)

        if self.optimized:
            h = nn.relu(sn_conv(3, RESIDUAL_INIT, "c1", x))
            h = avg_pool2x(sn_conv(3, RESIDUAL_INIT, "c2", h))
            return h + sn_conv(1, SHORTCUT_INIT, "shortcut", avg_pool2x(x))
        x = nn.relu(x) if self.rectified_shortcut else x
        h = sn_conv(3, RESIDUAL_INIT, "c1", nn.relu(x))
        h = sn_conv(3, RESIDUAL_INIT, "c2", nn.relu(h))
        shortcut = x
        if self.downsample or x.shape[-1] != self.features:
            shortcut = sn_conv(1, SHORTCUT_INIT, "shortcut", x)
        if self.downsample:
            h, shortcut = avg_pool2x(h), avg_pool2x(shortcut)
        return h + shortcut


class SNGANDiscriminator32(nn.Module):
    """x (B, 32, 32, C) -> logits (B,); see the module docstring.

    `__call__(x, train, update_stats=...)` as `gan.DCGANDiscriminator`'s: the power iteration's
    `u` and `sigma` of every layer are in 'batch_stats' and written only when `update_stats`
    (None: `train`). It holds no other statistics, so `train` changes nothing else.
    """

    features: int = 128
    rectified_shortcut: bool = True
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool, *, update_stats: bool | None = None):
        update_stats = train if update_stats is None else update_stats
        f, r, dt = self.features, self.rectified_shortcut, self.dtype
        h = DBlock(f, downsample=True, optimized=True, dtype=dt)(x, update_stats)
        h = DBlock(f, downsample=True, rectified_shortcut=r, dtype=dt)(h, update_stats)
        h = DBlock(f, rectified_shortcut=r, dtype=dt)(h, update_stats)
        h = DBlock(f, rectified_shortcut=r, dtype=dt)(h, update_stats)
        h = nn.relu(h).sum((1, 2))
        dense = nn.Dense(1, dtype=self.dtype, kernel_init=SHORTCUT_INIT)
        logits = nn.SpectralNorm(dense, name="sn_out")(h, update_stats=update_stats)
        return logits[:, 0].astype(jnp.float32)
