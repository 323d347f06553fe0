"""UpConv2x / DownConv2x compute flax's strided (transposed) convs exactly, on the same params.

The reference is flax's own nn.ConvTranspose / nn.Conv (4x4, stride 2, 'SAME') applied to the
same kernel and bias: forward values and gradients (input and params) must be allclose.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from genjax.models import layers
from genjax.models.layers import DownConv2x, UpConv2x, dcgan_init, sampled_as_matrix

KEY = jax.random.key(0, impl="rbg")  # compiles faster than threefry on XLA:CPU
FLAX = {
    UpConv2x: ("ConvTranspose_0", nn.ConvTranspose),
    DownConv2x: ("Conv_0", nn.Conv),
}


def assert_close(actual, desired):
    """allclose up to float32 summation order: atol 1e-5 of the largest |value| (>= 1e-5)."""
    atol = 1e-5 * max(1.0, float(np.max(np.abs(desired))))
    np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=atol)


def pair(layer, features, use_bias):
    """(ours, flax's) for the same job; flax's takes ours' params under its sub-module name."""
    name, flax_cls = FLAX[layer]
    ours = layer(features, use_bias=use_bias, kernel_init=dcgan_init)
    theirs = flax_cls(features, (4, 4), strides=(2, 2), padding="SAME", use_bias=use_bias)
    return name, ours, theirs


def random_params(variables, seed=1):
    """Replaces every param by N(0, 1) values, so a zero bias cannot hide a bug."""
    leaves, tree = jax.tree.flatten(variables)
    rng = np.random.default_rng(seed)
    return tree.unflatten([jnp.asarray(rng.normal(size=x.shape), x.dtype) for x in leaves])


def outputs_and_grads(module, variables, x):
    def loss(v, x):
        y = module.apply(v, x)
        return jnp.sum(jnp.sin(y)), y  # a non-linear loss: every output's gradient differs

    (_, y), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(variables, x)
    return y, grads


CASES = [  # (layer, input shape (B, H, W, C), features, use_bias)
    (UpConv2x, (2, 7, 7, 3), 5, True),  # 7 -> 14, odd size
    (UpConv2x, (3, 4, 6, 2), 3, False),
    (UpConv2x, (1, 5, 3, 4), 1, True),
    (UpConv2x, (2, 1, 1, 2), 2, True),
    (UpConv2x, (2, 3, 3, 4), 9, False),  # >= IM2COL_BELOW output channels: per-tap kernel grad
    (DownConv2x, (2, 28, 28, 1), 4, True),
    (DownConv2x, (2, 14, 14, 3), 6, False),
    (DownConv2x, (3, 7, 5, 2), 3, True),  # odd sizes: 'SAME' pads one more after
    (DownConv2x, (1, 1, 2, 2), 2, True),
    (DownConv2x, (2, 5, 6, 9), 3, True),  # >= IM2COL_BELOW input channels: per-tap kernel grad
]


@pytest.fixture(params=[True, False], ids=["explicit_grads", "autodiff"])
def gradients(request, monkeypatch):
    """Both formulations: the gradients written out (XLA:CPU's) and JAX's own (elsewhere)."""
    monkeypatch.setattr(layers, "EXPLICIT_GRADIENTS", request.param)
    return request.param


@pytest.mark.parametrize("layer,shape,features,use_bias", CASES)
def test_equals_flax_strided_conv_and_its_gradients(layer, shape, features, use_bias, gradients):
    name, ours, theirs = pair(layer, features, use_bias)
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    variables = random_params(ours.init(KEY, x))
    y, (g_params, g_x) = outputs_and_grads(ours, variables, x)
    flax_vars = {"params": variables["params"][name]}
    y_ref, (g_params_ref, g_x_ref) = outputs_and_grads(theirs, flax_vars, x)
    scale = 2 if layer is UpConv2x else 0.5
    assert y.shape == (shape[0], *(int(np.ceil(s * scale)) for s in shape[1:3]), features)
    assert_close(y, y_ref)
    assert_close(g_x, g_x_ref)
    for a, b in zip(
        jax.tree.leaves(g_params["params"][name]), jax.tree.leaves(g_params_ref), strict=True
    ):
        assert_close(a, b)


@pytest.mark.parametrize("shape", [(2, 6, 6, 1), (2, 7, 5, 3), (3, 4, 4, 8), (1, 3, 5, 10)])
def test_kernel_gradient_forms_equal_autodiff(shape):
    # Per-tap dots and one im2col dot, whichever IM2COL_BELOW would pick for these channels.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    kernel = jnp.zeros((4, 4, shape[-1], 5))
    dy = jnp.asarray(rng.normal(size=layers._conv_down(x, kernel).shape), jnp.float32)
    expected = jax.vjp(lambda k: layers._conv_down(x, k), kernel)[1](dy)[0]
    for im2col in (True, False):
        assert_close(layers._conv_down_kernel_grad(x, dy, im2col=im2col), expected)


@pytest.mark.parametrize(
    "shape,features", [((2, 7, 7, 3), 1), ((3, 4, 6, 2), 2), ((1, 1, 1, 4), 3)]
)
def test_up_conv_as_one_dot_equals_the_transposed_conv(shape, features):
    # XLA:CPU's form for few output channels (DOT_UP_BELOW); odd, non-square and 1x1 inputs.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(4, 4, shape[-1], features)), jnp.float32)
    expected = lax.conv_transpose(x, kernel, (2, 2), "SAME", dimension_numbers=layers._NHWC)
    assert features < layers.DOT_UP_BELOW
    assert_close(jax.jit(layers._conv_up_by_dot)(x, kernel), expected)
    assert_close(jax.jit(layers._conv_up_cpu)(x, kernel), expected)


class PlainUpConv2x(nn.Module):
    """The previous UpConv2x: flax's ConvTranspose itself (for the parameter layout)."""

    features: int

    @nn.compact
    def __call__(self, x):
        init = sampled_as_matrix(dcgan_init)
        return nn.ConvTranspose(self.features, (4, 4), strides=(2, 2), kernel_init=init)(x)


def test_parameters_are_those_of_flax_conv_transpose_same_init():
    # Same names, shapes and initial values: checkpoints of the flax layer restore as they were.
    x = jnp.zeros((1, 7, 7, 3))
    ours = UpConv2x(5, kernel_init=dcgan_init).init(KEY, x)
    plain = PlainUpConv2x(5).init(KEY, x)
    assert jax.tree.structure(ours) == jax.tree.structure(plain)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(plain), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("layer", [UpConv2x, DownConv2x])
def test_second_order_gradients_equal_autodiff(layer, monkeypatch):
    # WGAN-GP differentiates a gradient norm: the written-out gradients must be differentiable.
    module = layer(3, kernel_init=dcgan_init)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 7, 6, 2)), jnp.float32)
    variables = random_params(module.init(KEY, x))

    def penalty(v):
        g = jax.grad(lambda x: jnp.sum(jnp.sin(module.apply(v, x))))(x)
        return jnp.sum(g**2)

    results = []
    for explicit in (True, False):
        monkeypatch.setattr(layers, "EXPLICIT_GRADIENTS", explicit)
        results.append(jax.jit(jax.grad(penalty))(variables))
    for a, b in zip(*map(jax.tree.leaves, results), strict=True):
        assert_close(a, b)


def test_gradients_inside_scan_equal_those_outside():
    # train.py runs steps in lax.scan; the formulation must not depend on being in a loop.
    layer = UpConv2x(4, kernel_init=dcgan_init)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 7, 7, 3)), jnp.float32)
    variables = layer.init(KEY, x)
    grad = jax.grad(lambda v: jnp.sum(jnp.sin(layer.apply(v, x))))
    scanned = jax.lax.scan(lambda c, _: (c, grad(variables)), 0, None, length=2)[1]
    for a, b in zip(jax.tree.leaves(grad(variables)), jax.tree.leaves(scanned), strict=True):
        assert_close(b, np.broadcast_to(a, b.shape))


@pytest.mark.parametrize("layer", [UpConv2x, DownConv2x])
def test_computes_in_dtype_with_float32_params(layer):
    module = layer(3, dtype=jnp.bfloat16)
    variables = module.init(KEY, jnp.zeros((1, 8, 8, 2)))
    assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    assert module.apply(variables, jnp.ones((1, 8, 8, 2))).dtype == jnp.bfloat16


@pytest.mark.parametrize("size,shape,features", [(3, (2, 6, 5, 3), 4), (1, (2, 4, 4, 5), 2)])
def test_same_conv_with_written_out_gradients_equals_flax_conv(size, shape, features):
    """nn.Conv(..., conv_general_dilated=layers.conv_general_dilated), as the ResNet blocks
    build their 3x3 and 1x1 convs, against plain nn.Conv: values, first-order gradients and
    a gradient penalty's second-order ones, with the gradients written out (XLA:CPU's form)."""
    import flax.linen as nn

    def conv(**fast):
        return nn.Conv(features, (size, size), padding="SAME", kernel_init=dcgan_init, **fast)

    ours, theirs = conv(conv_general_dilated=layers.conv_general_dilated), conv()
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    variables = random_params(theirs.init(KEY, x))
    assert "custom_vjp" in str(jax.make_jaxpr(ours.apply)(variables, x))  # the written-out form
    y, grads = outputs_and_grads(ours, variables, x)
    y_ref, grads_ref = outputs_and_grads(theirs, variables, x)
    assert_close(y, y_ref)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref), strict=True):
        assert_close(a, b)

    def penalty(module, v):
        g = jax.grad(lambda x: jnp.sum(jnp.sin(module.apply(v, x))))(x)
        return jnp.sum(g**2)

    for a, b in zip(
        *(jax.tree.leaves(jax.grad(penalty, 1)(m, variables)) for m in (ours, theirs)),
        strict=True,
    ):
        assert_close(a, b)
