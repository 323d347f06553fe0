"""The VAE family (Kingma & Welling 2013): an encoder q(z|x) and a decoder p(x|z), trained on
the negative ELBO with the analytic KL; images are scaled to [0, 1] and, for a Bernoulli
likelihood, dynamically binarised. Its test metrics are the importance-sampled NLL and the
negative ELBO (genjax.metrics.nll).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from genjax import objectives
from genjax.config import ConfigError
from genjax.families.base import Family
from genjax.metrics import nll
from genjax.parallel import device_mean, per_example_noise
from genjax.steps import SKIPPED, apply_if_finite, apply_train, init_variables, optimizer

LIKELIHOOD_CHANNELS = {"bernoulli": 1, "gaussian": 2}  # decoder channels per data channel


@struct.dataclass
class VAEState:
    step: jax.Array
    params: Any  # {'encoder': ..., 'decoder': ...}
    batch_stats: Any
    opt_state: Any


def vae_optimizer(config) -> optax.GradientTransformation:
    return optimizer(config, config.optim.lr)


def _variables(state: VAEState, part: str) -> dict:
    return {"params": state.params[part], "batch_stats": state.batch_stats[part]}


def binarizes(config) -> bool:
    """Whether inputs are binarised (a Bernoulli likelihood with vae.binarize)."""
    return config.vae.binarize and config.vae.likelihood == "bernoulli"


def vae_input(x, config, key) -> jax.Array:
    """[0, 1] images, dynamically binarised (a fresh Bernoulli draw per step) when asked."""
    if binarizes(config):
        (rows,) = objectives.as_rows(x)  # faster on XLA:CPU; the same bits as in x's shape
        u = per_example_noise(jax.random.uniform, key, rows.shape)
        x = (u < rows).astype(jnp.float32).reshape(x.shape)
    return x


def encode_mean(models, state: VAEState, x) -> jax.Array:
    """The mean of q(z|x) for model inputs x."""
    mean, _ = models[0].apply(_variables(state, "encoder"), x, train=False)
    return mean


@functools.cache
def importance_functions(models, likelihood: str) -> tuple[Callable, Callable]:
    """(encode, log_weight) of a VAE for genjax.metrics.nll, in eval mode (cached, so the
    compiled estimator is reused across calls, e.g. every eval_every steps)."""
    encoder, decoder = models

    def encode(state, x):
        return encoder.apply(_variables(state, "encoder"), x, train=False)

    def log_weight(state, x, z, mean, logvar):
        b, samples, _ = z.shape
        out = decoder.importance_params(_variables(state, "decoder"), z, x)

        def rows(a):  # (B, S or 1, ...) -> (B * S, ...)
            return jnp.broadcast_to(a, (b, samples, *a.shape[2:])).reshape(-1, *a.shape[2:])

        lw = objectives.log_importance_weights(
            rows(out), rows(x), rows(z), rows(mean), rows(logvar), likelihood=likelihood
        )
        return lw.reshape(b, samples)

    return encode, log_weight


class VAEFamily(Family):
    name = "vae"
    defaults = {
        "likelihood": "bernoulli",  # bernoulli | gaussian (per-pixel mean and learned log-std)
        "beta": 1.0,  # the KL's weight (beta-VAE, Higgins et al. 2017)
        "binarize": True,  # dynamic binarisation of grey images (Bernoulli likelihood)
    }
    metrics = ("kl", "loss", "recon")
    value_range = (0.0, 1.0)
    modes = frozenset({"interpolate", "reconstruct"})

    def check(self, config) -> None:
        v = config.vae
        if v.likelihood not in LIKELIHOOD_CHANNELS:
            valid = ", ".join(LIKELIHOOD_CHANNELS)
            raise ConfigError(f"config.vae.likelihood={v.likelihood!r}; valid: {valid}")
        if v.beta < 0:
            raise ConfigError(f"config.vae.beta must be >= 0, got {v.beta}")

    def latent_dim(self, config) -> int:
        return config.model.z_dim

    def init_state(self, config, models, kind, data_shape, key) -> VAEState:
        encoder, decoder = models
        e_key, d_key = jax.random.split(key)
        e_params, e_stats = init_variables(encoder, e_key, jnp.zeros((1, *data_shape)))
        z, x = jnp.zeros((1, config.model.z_dim)), jnp.zeros((1, *data_shape))
        d_params, d_stats = init_variables(decoder, d_key, *decoder.inputs(z, x))
        params = {"encoder": e_params, "decoder": d_params}
        return VAEState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats={"encoder": e_stats, "decoder": d_stats},
            opt_state=vae_optimizer(config).init(params),
        )

    def network_params(self, state: VAEState) -> tuple:
        return state.params["encoder"], state.params["decoder"]

    def make_step(self, config, models, kind) -> Callable:
        """One update of the negative ELBO (Kingma & Welling 2013, eq. 10), analytic KL."""
        encoder, decoder = models
        tx = vae_optimizer(config)

        def step(state: VAEState, batch: dict, key) -> tuple[VAEState, dict]:
            bin_key, z_key = jax.random.split(key)
            x = kind.model_input({k: v[0] for k, v in batch.items()}, self.value_range)
            x = vae_input(x, config, bin_key)

            def loss_fn(params):
                (mean, logvar), e_stats = apply_train(
                    encoder, params["encoder"], state.batch_stats["encoder"], x
                )
                eps = per_example_noise(jax.random.normal, z_key, mean.shape)
                z = mean + jnp.exp(0.5 * logvar) * eps
                d_vars = (params["decoder"], state.batch_stats["decoder"])
                out, d_stats = apply_train(decoder, *d_vars, *decoder.inputs(z, x))
                neg_elbo, recon, kl = objectives.negative_elbo(
                    out, x, mean, logvar, likelihood=config.vae.likelihood, beta=config.vae.beta
                )
                stats = {"encoder": e_stats, "decoder": d_stats}
                metrics = {"loss": neg_elbo.mean(), "recon": recon.mean(), "kl": kl.mean()}
                return neg_elbo.mean(), (stats, metrics)

            grads, (stats, metrics) = jax.grad(loss_fn, has_aux=True)(state.params)
            metrics = device_mean(metrics)
            params, opt_state, stats, ok = apply_if_finite(
                tx,
                device_mean(grads),
                metrics["loss"],
                state.params,
                state.opt_state,
                stats,
                state.batch_stats,
            )
            state = state.replace(
                step=state.step + 1, params=params, batch_stats=stats, opt_state=opt_state
            )
            return state, metrics | {SKIPPED: (~ok).astype(jnp.int32)}

        return step

    def decode(self, config, models, state, z, key):
        """The likelihood's mean given z; an autoregressive decoder samples its pixels one by
        one from `key` and shows each pixel's mean given z and the pixels before it."""
        key = jax.random.PRNGKey(0) if key is None else key
        return models[1].mean(_variables(state, "decoder"), z, config.vae.likelihood, key)

    def reconstruct(self, config, models, state, x, key):
        """Decoded means of q(z|x)'s mean, for model inputs x in [0, 1]."""
        return self.decode(config, models, state, encode_mean(models, state, x), key)

    def test_metrics(self, config, models, state, test, kind, *, k, seed):
        """`test_nll` (-log p(x), k importance samples) and `test_neg_elbo`, nats per example.

        Inputs are scaled as in training; a Bernoulli VAE trained with dynamic binarisation is
        scored on one binarisation of the test set drawn with `seed`. The ELBO is the beta = 1
        bound, whatever `vae.beta` the model was trained with. With a Gaussian likelihood both
        are densities of [0, 1]-scaled pixels (no dequantisation), so they can be negative and
        are not comparable with discrete likelihoods or bits per dimension.
        """
        x = np.asarray(kind.model_input(test, self.value_range), np.float32)
        if binarizes(config):
            x = nll.binarize(x, seed)
        encode, log_weight = importance_functions(models, config.vae.likelihood)
        log_px, elbo = nll.estimate_log_likelihood(encode, log_weight, state, x, k=k, seed=seed + 1)
        return {"test_nll": float(-np.mean(log_px)), "test_neg_elbo": float(-np.mean(elbo))}


VAE = VAEFamily()
