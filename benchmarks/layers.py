"""Formulations of the DCGAN's stride-2 layers, timed side by side inside a compiled loop.

python benchmarks/layers.py [--batch 64] [--calls 20]

For the 4x4 stride-2 conv between 14x14x64 and 7x7x128 (the dcgan_mnist discriminator's second
layer; its transpose is the generator's first upsampling), and for the kernel gradient and the
generator's upsampling of the one between 28x28x1 and 14x14x64 (the discriminator's first layer;
its transpose is the generator's last), each formulation runs twice inside a lax.scan that
consumes its result (as in a train step, where XLA:CPU compiles convs differently than at top
level). The calls alternate, so load changes hit all of them alike, and each timed call follows
an untimed one of its own (throughput.settled); the table gives the median ms per application
and GFLOP/s (the layer's own FLOPs, 2 * B * Ho * Wo * O * 16 * C, whatever the formulation
computes). Last, the VAE's per-pixel Bernoulli log-likelihood and its gradient for a batch of
28x28x1 images, on the images' shape and on one row per example (genjax.objectives.as_rows; no
FLOP count).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

from benchmarks.throughput import machine, settled  # noqa: E402
from genjax import objectives  # noqa: E402
from genjax.backend import keep_freed_host_memory, unroll_large_threefry_on_cpu  # noqa: E402
from genjax.models import layers  # noqa: E402


def kernel_grad_per_tap(x, dy):
    """16 (C, N) @ (N, O) dots, one per tap."""
    return layers._conv_down_kernel_grad(x, dy, im2col=False)


def kernel_grad_im2col(x, dy):
    """One (16 C, N) @ (N, O) dot of all 16 views concatenated (im2col)."""
    return layers._conv_down_kernel_grad(x, dy, im2col=True)


def kernel_grad_autodiff(x, dy):
    """jax's own kernel gradient of the strided conv (a conv with the batch as features)."""
    kernel = jnp.zeros((4, 4, x.shape[-1], dy.shape[-1]), x.dtype)
    return jax.vjp(lambda k: layers._conv_down(x, k), kernel)[1](dy)[0]


def conv_transpose(x, kernel):
    """flax's ConvTranspose: lax.conv_transpose, stride 2, 'SAME'."""
    return lax.conv_transpose(x, kernel, (2, 2), "SAME", dimension_numbers=layers._NHWC)


def likelihood_on_images(logits, x):
    """d/d logits of sum(x l - softplus(l)), computed on the (B, H, W, 1) arrays."""
    return jax.grad(lambda y: jnp.sum(x * y - jax.nn.softplus(y)))(logits)


def likelihood_on_rows(logits, x):
    """The same through genjax.objectives.bernoulli_log_likelihood, on (B, H W) rows."""
    return jax.grad(lambda y: jnp.sum(objectives.bernoulli_log_likelihood(y, x)))(logits)


def in_loop(fn, *args):
    """fn(*args) applied twice in a lax.scan whose carry depends on each result."""

    def body(carry, _):
        out = fn(*(a + carry for a in args))
        return carry + 1e-6 * jnp.mean(out), None

    return jax.jit(lambda *a: lax.scan(body, jnp.zeros((), args[0].dtype), None, length=2)[0])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--calls", type=int, default=20)
    args = p.parse_args(argv)
    keep_freed_host_memory()  # as train.py does
    unroll_large_threefry_on_cpu()
    b = args.batch
    keys = jax.random.split(jax.random.key(0), 4)
    x14 = jax.random.normal(keys[0], (b, 14, 14, 64))
    x7 = jax.random.normal(keys[1], (b, 7, 7, 128))
    x28 = jax.random.normal(keys[0], (b, 28, 28, 1))
    kernel_up = 0.02 * jax.random.normal(keys[2], (4, 4, 128, 64))
    kernel_down = 0.02 * jax.random.normal(keys[3], (4, 4, 64, 128))
    kernel_last = 0.02 * jax.random.normal(keys[3], (4, 4, 64, 1))
    first = "first down (C=1): kernel grad"
    last = "last up (O=1): forward"
    pixels = "Bernoulli likelihood: gradient"
    binary = (jax.random.uniform(keys[1], x28.shape) < 0.5).astype(x28.dtype)
    f2 = 2 * b * 7 * 7 * 128 * 16 * 64  # FLOPs of the layer 14x14x64 <-> 7x7x128
    f1 = 2 * b * 14 * 14 * 64 * 16 * 1  # FLOPs of the layer 28x28x1 <-> 14x14x64
    cases = [  # (layer, formulation, fn, args, the layer's FLOPs)
        ("down: kernel grad", "16 per-tap dots (genjax)", kernel_grad_per_tap, (x14, x7), f2),
        ("down: kernel grad", "im2col, one dot", kernel_grad_im2col, (x14, x7), f2),
        ("down: kernel grad", "autodiff conv", kernel_grad_autodiff, (x14, x7), f2),
        (first, "16 per-tap dots", kernel_grad_per_tap, (x28, x14), f1),
        (first, "im2col, one dot (genjax)", kernel_grad_im2col, (x28, x14), f1),
        ("down: forward", "strided conv (genjax)", layers._conv_down, (x14, kernel_down), f2),
        ("up: forward", "sub-pixel conv (genjax)", layers._conv_up, (x7, kernel_up), f2),
        ("up: forward", "lax.conv_transpose", conv_transpose, (x7, kernel_up), f2),
        (last, "sub-pixel conv", layers._conv_up, (x14, kernel_last), f1),
        (last, "one dot, shifted sum (genjax)", layers._conv_up_by_dot, (x14, kernel_last), f1),
        (pixels, "on (B, 28, 28, 1)", likelihood_on_images, (x28, binary), None),
        (pixels, "on rows (B, 784) (genjax)", likelihood_on_rows, (x28, binary), None),
    ]
    calls = [in_loop(fn, *a) for _, _, fn, a, _ in cases]
    for call, (_, _, _, a, _) in zip(calls, cases, strict=True):
        call(*a).block_until_ready()
    seconds = [[] for _ in cases]
    for _ in range(args.calls):
        for call, (_, _, _, a, _), times in zip(calls, cases, seconds, strict=True):
            _, second = settled(lambda call=call, a=a: call(*a).block_until_ready())
            times.append(second / 2)
    print(f"| layer (batch {b}) | formulation | ms | GFLOP/s |\n|---|---|---|---|")
    for (layer, name, _, _, flops), times in zip(cases, seconds, strict=True):
        ms = 1e3 * statistics.median(times)
        rate = "n/a" if flops is None else f"{flops / ms / 1e6:.0f}"
        print(f"| {layer} | {name} | {ms:.2f} | {rate} |")
    print(f"\n{machine()}; jax {jax.__version__}")


if __name__ == "__main__":
    main()
