"""Building blocks shared by the conv models, each swappable on its own.

`UpConv2x` is the one place that doubles a feature map's height and width, so a faster
formulation (e.g. sub-pixel: conv to 4x channels, then depth-to-space; Shi et al. 2016)
replaces it everywhere at once.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# Radford et al. 2016, sec. 4: "all weights were initialized from a zero-centered Normal
# distribution with standard deviation 0.02".
dcgan_init = nn.initializers.normal(stddev=0.02)


def sampled_as_matrix(init: Any) -> Any:
    """`init` for a (kh, kw, in, out) kernel, drawn as a (kh * kw * in, out) matrix and reshaped.

    Same fan-in, so the same distribution; with jax's default partitionable threefry even the
    same values. Why: XLA:CPU compiles a 4-D threefry draw in ~1.5 s, the 2-D one in ~0.3 s
    (measured, jax 0.10.2), which dominates the init of a small conv model.
    """

    def matrix_init(key, shape, dtype=jnp.float32):
        return init(key, (math.prod(shape[:-1]), shape[-1]), dtype).reshape(shape)

    return matrix_init


def square_levels(side: int) -> tuple[int, int] | None:
    """(s0, n) with side = s0 * 2**n, s0 in 4..7, n >= 1 (the conv models' grid), else None."""
    n = 0
    while side >= 8 and side % 2 == 0:
        side, n = side // 2, n + 1
    return (side, n) if n >= 1 and 4 <= side <= 7 else None


class UpConv2x(nn.Module):
    """A 4x4, stride-2 transposed conv: (B, H, W, *) -> (B, 2H, 2W, features) (DCGAN, sec. 3)."""

    features: int
    use_bias: bool = True
    dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        return nn.ConvTranspose(
            self.features,
            (4, 4),
            strides=(2, 2),
            padding="SAME",
            use_bias=self.use_bias,
            dtype=self.dtype,
            kernel_init=sampled_as_matrix(self.kernel_init),
        )(x)


class DownConv2x(nn.Module):
    """A 4x4, stride-2 conv: (B, H, W, *) -> (B, H/2, W/2, features) (DCGAN, sec. 3)."""

    features: int
    use_bias: bool = True
    dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        return nn.Conv(
            self.features,
            (4, 4),
            strides=(2, 2),
            padding="SAME",
            use_bias=self.use_bias,
            dtype=self.dtype,
            kernel_init=sampled_as_matrix(self.kernel_init),
        )(x)


def batch_norm(train: bool, axis_name: str | None, dtype: Any) -> nn.BatchNorm:
    """BatchNorm (Ioffe & Szegedy 2015) whose batch statistics are averaged over `axis_name`.

    The layer before it takes no bias: BatchNorm subtracts it again, so its gradient is
    rounding noise, which Adam would scale up into full-size, device-count-dependent steps.
    """
    return nn.BatchNorm(
        use_running_average=not train, momentum=0.9, axis_name=axis_name, dtype=dtype
    )
