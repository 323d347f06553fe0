"""Test log-likelihood of a VAE by importance sampling: -log p(x) ~ -log (1/k) sum_i w_i.

w_i = p(x | z_i) p(z_i) / q(z_i | x), z_i ~ q(z | x): the estimator of Burda et al. (2016,
sec. 5.1; k = 5,000 there), a lower bound on log p(x) that tightens as k grows (the IWAE
bound). The same weights give the ELBO, their mean (Kingma & Welling 2013, eq. 3), with
k-sample precision. Examples and samples are both batched, with fixed shapes so that one
compiled function serves every batch; each example draws its own noise from
`fold_in(key, index)`, so the estimates do not depend on the batch sizes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

MAX_ELEMENTS = 2**24  # data-sized floats per decoder call (rows x pixels)


def importance_sampled_estimates(encode, log_weight, params, x, keys, k: int, chunk: int):
    """(log p(x) estimate, ELBO estimate) per example, from k importance samples each.

    encode(params, x) -> (mean, logvar) of q(z|x), each (B, Z). log_weight(params, x, z, mean,
    logvar) -> log p(x|z) + log p(z) - log q(z|x), (B, S), for S samples z (B, S, Z) of each
    example; x, mean and logvar come with a sample axis of 1, (B, 1, ...), so that
    broadcasting pairs them with every sample, and work that depends on x alone (an
    autoregressive decoder's context) is done once per example. `keys` (B,) are the
    examples' keys. The k samples are taken `chunk` at a time in a `lax.scan` (k rounded up
    to whole chunks; the extra samples are masked out).
    """
    mean, logvar = encode(params, x)
    batch, z_dim = mean.shape
    num_chunks = -(-k // chunk)

    def body(carry, c):
        log_sum, weight_sum = carry
        eps = jax.vmap(lambda kk: jax.random.normal(jax.random.fold_in(kk, c), (chunk, z_dim)))(
            keys
        )  # (B, chunk, Z)
        z = mean[:, None] + jnp.exp(0.5 * logvar)[:, None] * eps
        lw = log_weight(params, x[:, None], z, mean[:, None], logvar[:, None])  # (B, chunk)
        valid = (c * chunk + jnp.arange(chunk)) < k
        log_sum = jnp.logaddexp(log_sum, jax.nn.logsumexp(jnp.where(valid, lw, -jnp.inf), axis=1))
        weight_sum = weight_sum + jnp.sum(jnp.where(valid, lw, 0.0), axis=1)
        return (log_sum, weight_sum), None

    start = (jnp.full((batch,), -jnp.inf), jnp.zeros((batch,)))
    (log_sum, weight_sum), _ = lax.scan(body, start, jnp.arange(num_chunks))
    return log_sum - math.log(k), weight_sum / k


def binarize(images01, seed: int) -> np.ndarray:
    """One fixed Bernoulli draw of [0, 1] images: the test set of a dynamically binarised VAE."""
    key = jax.random.PRNGKey(seed)
    x = jnp.asarray(images01, jnp.float32)
    return np.asarray((jax.random.uniform(key, x.shape) < x).astype(jnp.float32))


def batch_sizes(num_examples: int, example_size: int, k: int) -> tuple[int, int]:
    """(examples per batch, samples per chunk) so one decoder call has <= MAX_ELEMENTS floats."""
    rows = max(1, MAX_ELEMENTS // max(1, example_size))
    batch = max(1, min(num_examples, 64, rows))
    return batch, max(1, min(k, rows // batch))


@functools.cache
def _compiled(encode: Callable, log_weight: Callable, k: int, chunk: int) -> Callable:
    """The jitted estimator on one batch: (params, x, example indices, key) -> estimates."""

    def run(params, xb, indices, key):
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
        return importance_sampled_estimates(encode, log_weight, params, xb, keys, k, chunk)

    return jax.jit(run)


def estimate_log_likelihood(encode, log_weight, params, x, *, k: int, seed: int = 0):
    """Per-example (log p(x) estimates, ELBO estimates), numpy (N,), over the whole array x.

    Batches the examples (the last batch padded) through one compiled function.
    """
    x = np.asarray(x, np.float32)
    n = len(x)
    batch, chunk = batch_sizes(n, int(np.prod(x.shape[1:])), k)
    run = _compiled(encode, log_weight, k, chunk)
    key = jax.random.PRNGKey(seed)
    log_px, elbo = [], []
    for start in range(0, n, batch):
        xb = x[start : start + batch]
        real = len(xb)
        if real < batch:
            xb = np.concatenate([xb, np.zeros((batch - real, *x.shape[1:]), np.float32)])
        a, b = run(params, xb, jnp.arange(start, start + batch), key)
        log_px.append(np.asarray(a)[:real])
        elbo.append(np.asarray(b)[:real])
    return np.concatenate(log_px), np.concatenate(elbo)


def bits_per_dim(nats_per_example, data_shape) -> float:
    """Nats per example -> bits per dimension: nats / (H * W * C * ln 2), the unit of
    likelihoods of 8-bit images (e.g. PixelCNN++, Salimans et al. 2017). Meaningful only for
    a discrete likelihood (Bernoulli, discretised logistic), not for a density."""
    return float(nats_per_example) / (math.prod(data_shape) * math.log(2.0))
