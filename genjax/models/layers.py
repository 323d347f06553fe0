"""Building blocks shared by the conv models, each swappable on its own.

`UpConv2x` / `DownConv2x` are the one place that doubles / halves a feature map's height and
width: flax's strided ConvTranspose / Conv, computed faster (sub-pixel upsampling, Shi et al.
2016; on XLA:CPU gradients that stay fast inside lax.scan) with the same params and values.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

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


_NHWC = ("NHWC", "HWIO", "NHWC")
# Whether the strided convs use the gradients written out below; None: on XLA:CPU only.
EXPLICIT_GRADIENTS: bool | None = None


def _conv(x, kernel, padding, stride=1):
    """lax.conv_general_dilated on NHWC inputs and HWIO kernels."""
    return lax.conv_general_dilated(x, kernel, (stride, stride), padding, dimension_numbers=_NHWC)


def _flip_io(kernel):
    """The kernel of the adjoint conv: spatially flipped, in and out swapped (an involution)."""
    return jnp.flip(kernel, (0, 1)).swapaxes(2, 3)


def _conv_down(x, kernel):
    """A 4x4 stride-2 'SAME' conv: 'SAME' pads 1 before and 1 + (size odd) after."""
    h, w = x.shape[1:3]
    return _conv(x, kernel, ((1, 1 + h % 2), (1, 1 + w % 2)), stride=2)


def _conv_up(x, kernel):
    """lax.conv_transpose(x, kernel, (2, 2), 'SAME') (flax's ConvTranspose), sub-pixel style.

    Per axis, 'SAME' pads the 2x-dilated input by 2, so out[2m] = x[m-1] k[0] + x[m] k[2]
    and out[2m+1] = x[m] k[1] + x[m+1] k[3]: with x padded by one (xp[i] = x[i-1]), phase p
    at m is the 2-tap window xp[m+p : m+p+2] with taps k[2a+p]. So one stride-1 2x2 conv of
    xp to 4 O channels (p_y, p_x, o) at (H+1) x (W+1) places holds all four phases, and phase
    (p_y, p_x) is read at offset (p_y, p_x) (depth-to-space; Shi et al. 2016).
    """
    b, h, w, c = x.shape
    o = kernel.shape[-1]
    kernel = _taps_by_phase(kernel).transpose(0, 2, 4, 1, 3, 5).reshape(2, 2, c, 4 * o)
    return _phases_to_space(_conv(x, kernel, ((1, 1), (1, 1))).reshape(b, h + 1, w + 1, 2, 2, o))


def _taps_by_phase(kernel):
    """(4, 4, C, O) -> (2, 2, 2, 2, C, O) indexed (a, p, t, q, c, o): kernel row 2a + p, column
    2t + q, i.e. tap (a, t) of the 2x2 window of output phase (p, q)."""
    return kernel.reshape(2, 2, 2, 2, *kernel.shape[2:])


def _phases_to_space(y):
    """(B, H+1, W+1, 2, 2, O) phases at (H+1) x (W+1) places -> (B, 2H, 2W, O): phase (p, q)
    read at offset (p, q) (depth-to-space)."""
    b, h, w, o = y.shape[0], y.shape[1] - 1, y.shape[2] - 1, y.shape[-1]
    rows = [jnp.stack([y[:, p : p + h, q : q + w, p, q] for q in (0, 1)], 3) for p in (0, 1)]
    return jnp.stack(rows, 2).reshape(b, 2 * h, 2 * w, o)


def _conv_up_by_dot(x, kernel):
    """`_conv_up` as one (B H W, C) @ (C, 16 O) dot and a shifted sum.

    The dot gives every input place's products with all 2x2 taps (a, b) of all 4 phases;
    the 2x2 conv's output at place m is the sum over taps of the products of input place
    m + a - 1, so the sum adds four shifted slices. The same products and sums as the conv.
    """
    b, h, w, c = x.shape
    o = kernel.shape[-1]
    # -> (c, tap row, tap col, phase row, phase col, o)
    matrix = _taps_by_phase(kernel).transpose(4, 0, 2, 1, 3, 5).reshape(c, 16 * o)
    z = (x.reshape(-1, c) @ matrix).reshape(b, h, w, 2, 2, 2, 2, o)
    z = jnp.pad(z, ((0, 0), (1, 1), (1, 1)) + ((0, 0),) * 5)
    taps = [z[:, a : a + h + 1, t : t + w + 1, a, t] for a in (0, 1) for t in (0, 1)]
    return _phases_to_space(sum(taps[1:], taps[0]))


# Up convs to fewer output channels run as `_conv_up_by_dot` on XLA:CPU: the sub-pixel conv's
# 4 O output channels are too few for a fast conv there (benchmarks/layers.py, O = 1).
DOT_UP_BELOW = 4


def _conv_up_cpu(x, kernel):
    return (_conv_up_by_dot if kernel.shape[-1] < DOT_UP_BELOW else _conv_up)(x, kernel)


# Kernel gradients of layers with fewer input channels are one im2col dot, others 16 per-tap dots.
IM2COL_BELOW = 8


def _conv_down_kernel_grad(x, dy, im2col: bool | None = None):
    """d kernel of `_conv_down(x, kernel)` for the output cotangent dy: per tap (i, j),
    view_ij(x)^T @ dy, where view_ij is the stride-2 view of the padded x that tap meets.

    Dots, unlike the automatic kernel-gradient conv, run at full speed inside a while loop on
    XLA:CPU. With C input channels, 16 per-tap (C, N) @ (N, O) dots run faster there than one
    (16 C, N) @ (N, O) dot of all views concatenated (im2col) for C = 64, slower for C = 1,
    where each per-tap dot is a thin matrix-vector product that reads dy again (side by side
    in benchmarks/layers.py); the two take about the same time near C = IM2COL_BELOW, where the
    choice switches. `im2col` forces one form (None: by C).
    """
    (_, h, w, c), (ho, wo, o) = x.shape, dy.shape[1:]
    xp = jnp.pad(x, ((0, 0), (1, 1 + h % 2), (1, 1 + w % 2), (0, 0)))
    views = [xp[:, i : i + 2 * ho : 2, j : j + 2 * wo : 2] for i in range(4) for j in range(4)]
    dy = dy.reshape(-1, o)
    if im2col is None:
        im2col = c < IM2COL_BELOW
    if im2col:
        return (jnp.concatenate(views, -1).reshape(-1, 16 * c).T @ dy).reshape(4, 4, c, o)
    return jnp.stack([view.reshape(-1, c).T @ dy for view in views]).reshape(4, 4, c, o)


@jax.custom_vjp
def _down_cpu(x, kernel):
    return _conv_down(x, kernel)


@jax.custom_vjp
def _up_cpu(x, kernel):
    return _conv_up_cpu(x, kernel)


def _down_bwd(residuals, dy):  # the stride-2 conv's adjoint is the transposed conv
    x, kernel = residuals
    dx = _up_cpu(dy, _flip_io(kernel))[:, : x.shape[1], : x.shape[2]]  # odd sizes: crop
    return dx, _conv_down_kernel_grad(x, dy)


def _up_bwd(residuals, dy):  # up(., k) is the adjoint of down(., flip_io(k))
    x, kernel = residuals
    return _down_cpu(dy, _flip_io(kernel)), _flip_io(_conv_down_kernel_grad(dy, x))


_down_cpu.defvjp(lambda x, kernel: (_conv_down(x, kernel), (x, kernel)), _down_bwd)
_up_cpu.defvjp(lambda x, kernel: (_conv_up_cpu(x, kernel), (x, kernel)), _up_bwd)


def _same_conv(x, kernel):
    """A stride-1 'SAME' conv with an odd square kernel: padding size // 2 on every side."""
    pad = kernel.shape[0] // 2
    return _conv(x, kernel, ((pad, pad), (pad, pad)))


def _same_conv_kernel_grad(x, dy, size: int):
    """d kernel (size, size, C, O) of `_same_conv(x, kernel)` for the output cotangent dy: per
    tap (i, j), view_ij(x)^T @ dy, view_ij the window of the padded x that tap meets. Dots,
    unlike the automatic kernel-gradient conv, run at full speed inside a while loop on
    XLA:CPU (as in `_conv_down_kernel_grad`)."""
    (_, h, w, c), o, pad = x.shape, dy.shape[-1], size // 2
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dy = dy.reshape(-1, o)
    taps = [
        xp[:, i : i + h, j : j + w].reshape(-1, c).T @ dy for i in range(size) for j in range(size)
    ]
    return jnp.stack(taps).reshape(size, size, c, o)


@jax.custom_vjp
def _same_cpu(x, kernel):
    return _same_conv(x, kernel)


def _same_bwd(residuals, dy):  # a 'SAME' stride-1 conv's adjoint: the flipped kernel's
    x, kernel = residuals
    return _same_cpu(dy, _flip_io(kernel)), _same_conv_kernel_grad(x, dy, kernel.shape[0])


_same_cpu.defvjp(lambda x, kernel: (_same_conv(x, kernel), (x, kernel)), _same_bwd)


def _explicit_gradients() -> bool:
    if EXPLICIT_GRADIENTS is None:
        return jax.default_backend() == "cpu"
    return EXPLICIT_GRADIENTS


def downsample2x(x, kernel):
    """x (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), O): a 4x4 stride-2 'SAME' conv.

    Exactly `lax.conv_general_dilated(x, kernel, (2, 2), 'SAME')`. On XLA:CPU its gradients
    are written out (`_down_bwd`): the automatic ones are convs in layouts that XLA:CPU makes
    canonical only outside while loops; inside lax.scan, i.e. in every train step, they run
    30-80x slower (jax 0.10.2).
    """
    return (_down_cpu if _explicit_gradients() else _conv_down)(x, kernel)


def upsample2x(x, kernel):
    """x (B, H, W, C) -> (B, 2H, 2W, O): a 4x4 stride-2 'SAME' transposed conv (`_conv_up`).

    Exactly `lax.conv_transpose(x, kernel, (2, 2), 'SAME')`, with no stride-2 transposed conv,
    whose kernel gradient XLA:CPU runs slowly; on XLA:CPU with gradients written out, as in
    `downsample2x`, and to fewer than `DOT_UP_BELOW` channels as one dot (`_conv_up_by_dot`).
    """
    return (_up_cpu if _explicit_gradients() else _conv_up)(x, kernel)


def conv_general_dilated(x, kernel, window_strides, padding, **options):
    """`lax.conv_general_dilated` for flax's `nn.Conv(..., conv_general_dilated=...)`: a
    stride-1 'SAME' NHWC conv with an odd square kernel (3x3, 1x1: the ResNet blocks' convs)
    gets its gradients written out on XLA:CPU (`_same_bwd`), where the automatic kernel
    gradient is a conv that runs 10x and more slower than the same products as dots inside a
    train step's loop; every other conv is lax's, unchanged."""
    size = kernel.shape[0]
    pad = size // 2
    plain = (
        _explicit_gradients()
        and x.ndim == 4
        and options.get("dimension_numbers")
        == lax.conv_dimension_numbers(x.shape, kernel.shape, _NHWC)
        and tuple(window_strides) == (1, 1)
        and size % 2 == 1
        and kernel.shape[1] == size
        and (padding == "SAME" or [tuple(p) for p in padding] == [(pad, pad), (pad, pad)])
        and all(options.get(k) in (None, (1, 1)) for k in ("lhs_dilation", "rhs_dilation"))
        and options.get("feature_group_count", 1) == 1
        and options.get("precision") is None
    )
    if plain:
        return _same_cpu(x, kernel)
    return lax.conv_general_dilated(x, kernel, window_strides, padding, **options)


class Conv4x4Params(nn.Module):
    """The (4, 4, in, out) kernel and (out,) bias of a 4x4 conv, as flax's Conv/ConvTranspose
    hold them (same names, shapes and init), so checkpoints do not depend on the formulation."""

    features: int
    use_bias: bool
    kernel_init: Any

    @nn.compact
    def __call__(self, in_features: int):
        shape = (4, 4, in_features, self.features)
        kernel = self.param("kernel", sampled_as_matrix(self.kernel_init), shape)
        bias = (
            self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
        )
        return kernel, bias


def _apply(op, x, kernel, bias, dtype):
    """op(x, kernel) + bias, all in `dtype` (flax's promote_dtype)."""
    y = op(x.astype(dtype), kernel.astype(dtype))
    return y if bias is None else y + bias.astype(dtype)


class UpConv2x(nn.Module):
    """A 4x4, stride-2 transposed conv: (B, H, W, *) -> (B, 2H, 2W, features) (DCGAN, sec. 3).

    Computes flax's `nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding='SAME')` with
    the same parameters ('ConvTranspose_0': kernel, bias), sub-pixel style (`upsample2x`).
    """

    features: int
    use_bias: bool = True
    dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        params = Conv4x4Params(
            self.features, self.use_bias, self.kernel_init, name="ConvTranspose_0"
        )
        return _apply(upsample2x, x, *params(x.shape[-1]), self.dtype)


class DownConv2x(nn.Module):
    """A 4x4, stride-2 conv: (B, H, W, *) -> (B, H/2, W/2, features) (DCGAN, sec. 3).

    Computes flax's `nn.Conv(features, (4, 4), strides=(2, 2), padding='SAME')` with the same
    parameters ('Conv_0': kernel, bias), as a matmul over patches (`downsample2x`).
    """

    features: int
    use_bias: bool = True
    dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        params = Conv4x4Params(self.features, self.use_bias, self.kernel_init, name="Conv_0")
        return _apply(downsample2x, x, *params(x.shape[-1]), self.dtype)


def batch_norm(train: bool, axis_name: str | None, dtype: Any, **options) -> nn.BatchNorm:
    """BatchNorm (Ioffe & Szegedy 2015) whose batch statistics are averaged over `axis_name`.

    The layer before it takes no bias: BatchNorm subtracts it again, so its gradient is
    rounding noise, which Adam would scale up into full-size, device-count-dependent steps.
    `options` go to nn.BatchNorm (e.g. use_scale=False, use_bias=False).
    """
    return nn.BatchNorm(
        use_running_average=not train, momentum=0.9, axis_name=axis_name, dtype=dtype, **options
    )


class ConditionalBatchNorm(nn.Module):
    """Class-conditional BatchNorm (de Vries et al. 2017; Miyato & Koyama 2018's generator):
    normalised as `batch_norm` (no scale or bias of its own), then scaled by gamma[y] and
    shifted by beta[y], one learned row per class, initialised to 1 and 0 (so that it starts
    as plain BatchNorm)."""

    num_classes: int
    train: bool
    axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h, labels):
        h = batch_norm(self.train, self.axis_name, self.dtype, use_scale=False, use_bias=False)(h)
        features = h.shape[-1]
        gamma = nn.Embed(self.num_classes, features, embedding_init=nn.initializers.ones)(labels)
        beta = nn.Embed(self.num_classes, features, embedding_init=nn.initializers.zeros)(labels)
        expand = (slice(None),) + (None,) * (h.ndim - 2) + (slice(None),)  # (B, 1.., F)
        return h * gamma[expand].astype(h.dtype) + beta[expand].astype(h.dtype)
