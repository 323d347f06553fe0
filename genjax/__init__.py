"""genjax: GANs and VAEs as pure functions and compiled, data-parallel train steps."""

from genjax.backend import unroll_large_threefry_on_cpu

unroll_large_threefry_on_cpu()  # the same random bits as jax's own lowering, faster on CPU
