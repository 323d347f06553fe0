"""genjax: GANs and VAEs as pure functions and compiled, data-parallel train steps.

Importing genjax changes no global setting of jax or of the process. The programs genjax runs
(train.py, sample.py, `python -m genjax.evaluate`, the benchmarks) call
`genjax.backend.unroll_large_threefry_on_cpu()` when they start: the same random bits as jax's
own lowering, faster on CPU for large draws. A program that trains in-process calls it too, to
train at the speed of train.py.
"""

from genjax import backend

__all__ = ["backend"]
