"""The VAE family (Kingma & Welling 2013): an encoder q(z|x) and a decoder p(x|z), trained on
the negative ELBO with the analytic KL; images are scaled to [0, 1] and, for a Bernoulli
likelihood, dynamically binarised. Its test metrics are the importance-sampled NLL and the
negative ELBO (genjax.metrics.nll).

`vae.objective=iwae` trains on the k-sample importance-weighted bound instead (Burda et al.
2016), k = `vae.num_samples`. A class-conditional model (modules with `num_classes` > 0, e.g.
`cvae_mlp`) reads the examples' classes from `batch['label']`; encoder and decoder both see
them, and its test metrics are of log p(x | y). Inpainting is iterated posterior sampling
(genjax.inpaint.pseudo_gibbs, then importance resampling of the latent by the known pixels).

A model conditioned on the known pixels (modules with `train_masks`, e.g. `masked_vae_mlp`)
is trained on a mask drawn per example from its train_masks: encoder and decoder see the
known pixels and the mask (genjax.inpaint.known_pixels), and the reconstruction term is of the
missing pixels alone, so the bound is of log p(x_missing | x_known) (Ivanov et al. 2019's
VAEAC objective, with the fixed N(0, I) prior). It inpaints by ancestral sampling, z ~ N(0, I)
then the decoder given the known pixels; with nothing known (mask 'all', one of its training
masks) it is an unconditional VAE, which its samples and test metrics are of.
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

from genjax import inpaint as inpainting
from genjax import objectives
from genjax.config import ConfigError
from genjax.data.kinds import LABEL
from genjax.families.base import Family
from genjax.metrics import nll
from genjax.parallel import device_mean, per_example_noise
from genjax.steps import SKIPPED, apply_if_finite, apply_train, init_variables, optimizer

# decoder channels per data channel
LIKELIHOOD_CHANNELS = {"bernoulli": 1, "gaussian": 2, "discretized_logistic": 2}
OBJECTIVES = ("elbo", "iwae")  # vae.objective


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


def _classes(labels) -> tuple:
    """The label argument of a class-conditional module: () for None."""
    return () if labels is None else (labels,)


def train_masks(models) -> tuple:
    """The mask specs a model conditioned on the known pixels is trained on; () for others."""
    return getattr(models[0], "train_masks", ())


def encode_mean(models, state: VAEState, x, labels=None) -> jax.Array:
    """The mean of q(z|x) (q(z|x, y) for a class-conditional model) for model inputs x."""
    mean, _ = models[0].apply(_variables(state, "encoder"), x, *_classes(labels), train=False)
    return mean


def with_label_column(x, labels) -> np.ndarray:
    """Examples (N, ...) flattened, their labels as one more column, (N, D + 1) float32: how a
    class-conditional VAE's examples travel through genjax.metrics.nll, which batches one
    array (labels up to 2**24 are exact in float32)."""
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    return np.concatenate([x, np.asarray(labels, np.float32)[:, None]], axis=1)


@functools.cache
def importance_functions(
    models, likelihood: str, shape: tuple | None = None
) -> tuple[Callable, Callable]:
    """(encode, log_weight) of a VAE for genjax.metrics.nll, in eval mode (cached, so the
    compiled estimator is reused across calls, e.g. every eval_every steps). With `shape`
    (a class-conditional model's example shape) the examples come as with_label_column's
    rows and are scored by log p(x | y)."""
    encoder, decoder = models

    def split(x):  # (B, [1,] D + 1) -> x (B, [1,] *shape), labels (B,) int32 or None
        if shape is None:
            return x, None
        labels = x[..., -1].reshape(x.shape[0], -1)[:, 0].astype(jnp.int32)
        return x[..., :-1].reshape(*x.shape[:-1], *shape), labels

    def encode(state, x):
        x, labels = split(x)
        return encoder.apply(_variables(state, "encoder"), x, *_classes(labels), train=False)

    def log_weight(state, x, z, mean, logvar):
        b, samples, _ = z.shape
        x, labels = split(x)
        out = decoder.importance_params(_variables(state, "decoder"), z, x, labels)

        def rows(a):  # (B, S or 1, ...) -> (B * S, ...)
            return jnp.broadcast_to(a, (b, samples, *a.shape[2:])).reshape(-1, *a.shape[2:])

        lw = objectives.log_importance_weights(
            rows(out), rows(x), rows(z), rows(mean), rows(logvar), likelihood=likelihood
        )
        return lw.reshape(b, samples)

    return encode, log_weight


def check_collapse_fields(v) -> None:
    """ConfigError for a negative vae.kl_warmup_steps, vae.free_bits or vae.kl_cycles."""
    if v.kl_cycles < 0:
        raise ConfigError(f"config.vae.kl_cycles must be >= 0 (0 = off), got {v.kl_cycles}")
    if v.kl_warmup_steps < 0:
        raise ConfigError(f"config.vae.kl_warmup_steps must be >= 0, got {v.kl_warmup_steps}")
    if v.free_bits < 0:
        raise ConfigError(f"config.vae.free_bits must be >= 0 (nats), got {v.free_bits}")


def kl_term(v, step, mean, logvar, num_steps: int = 1) -> jax.Array:
    """The batch's weighted KL term against posterior collapse: the KL weight at `step`
    (warm-up from 0 to vae.beta, or vae.kl_cycles cycles of it; objectives.kl_weight) times
    the KL with vae.free_bits nats per latent dimension (objectives.free_bits_kl, clamped by
    the global batch's mean KL per dimension)."""
    weight = objectives.kl_weight(
        step,
        beta=v.beta,
        warmup_steps=v.kl_warmup_steps,
        cycles=v.kl_cycles,
        num_steps=num_steps,
    )
    kl_dims = objectives.gaussian_kl_per_dim(mean, logvar)
    if v.free_bits:
        global_mean = device_mean(jax.lax.stop_gradient(kl_dims.mean(axis=0)))
        kl = objectives.free_bits_kl(kl_dims, v.free_bits, global_mean)
    else:
        kl = kl_dims.sum(axis=1).mean()
    return weight * kl


class VAEFamily(Family):
    name = "vae"
    defaults = {
        "likelihood": "bernoulli",  # bernoulli | gaussian (per-pixel mean and learned log-std)
        "beta": 1.0,  # the KL's weight (beta-VAE, Higgins et al. 2017)
        "binarize": True,  # dynamic binarisation of grey images (Bernoulli likelihood)
        "kl_warmup_steps": 0,  # KL weight rises linearly from 0 to beta over these steps
        "free_bits": 0.0,  # nats per latent dimension below which the KL is not pushed down
        "kl_cycles": 0,  # cyclical annealing (Fu et al. 2019): cycles over num_steps; 0 = off
        "objective": "elbo",  # elbo | iwae (Burda et al. 2016)
        "num_samples": 1,  # k, the importance samples per example of the iwae objective
    }
    metrics = ("kl", "loss", "recon")
    value_range = (0.0, 1.0)
    modes = frozenset({"interpolate", "reconstruct", "inpaint"})

    def check(self, config) -> None:
        v = config.vae
        if v.likelihood not in LIKELIHOOD_CHANNELS:
            valid = ", ".join(LIKELIHOOD_CHANNELS)
            raise ConfigError(f"config.vae.likelihood={v.likelihood!r}; valid: {valid}")
        if v.beta < 0:
            raise ConfigError(f"config.vae.beta must be >= 0, got {v.beta}")
        check_collapse_fields(v)
        if v.objective not in OBJECTIVES:
            raise ConfigError(f"config.vae.objective={v.objective!r}; valid: elbo, iwae")
        if v.num_samples < 1:
            raise ConfigError(
                f"config.vae.num_samples must be >= 1 (the IWAE's k), got {v.num_samples}"
            )
        if v.objective == "elbo" and v.num_samples != 1:
            raise ConfigError(
                f"config.vae.num_samples={v.num_samples} is the k of vae.objective=iwae; set "
                "vae.objective=iwae or num_samples=1"
            )
        reweighted = v.beta != 1 or v.kl_warmup_steps or v.free_bits or v.kl_cycles
        if v.objective == "iwae" and reweighted:
            raise ConfigError(
                "vae.objective=iwae is the k-sample bound itself: it takes vae.beta=1, "
                "kl_warmup_steps=0, free_bits=0, kl_cycles=0 (those shape the elbo objective)"
            )

    def latent_dim(self, config) -> int:
        return config.model.z_dim

    def init_state(self, config, models, kind, data_shape, key) -> VAEState:
        encoder, decoder = models
        e_key, d_key = jax.random.split(key)
        labels = (jnp.zeros((1,), jnp.int32),) if self.num_classes(models) else ()
        x = jnp.zeros((1, *data_shape))
        e_params, e_stats = init_variables(encoder, e_key, x, *labels)
        z = jnp.zeros((1, config.model.z_dim))
        d_params, d_stats = init_variables(decoder, d_key, *decoder.inputs(z, x), *labels)
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
        """One update of the negative ELBO (Kingma & Welling 2013, eq. 10), analytic KL, or
        with vae.objective=iwae of the negative k-sample bound (Burda et al. 2016, eq. 8),
        its `recon` and `kl` then the mean -log p(x|z_i) over the k samples and the analytic
        KL."""
        encoder, decoder = models
        tx = vae_optimizer(config)
        conditional = self.num_classes(models) > 0
        k = config.vae.num_samples
        likelihood = config.vae.likelihood
        masks = train_masks(models)

        def step(state: VAEState, batch: dict, key) -> tuple[VAEState, dict]:
            bin_key, z_key = jax.random.split(key)
            batch = {name: v[0] for name, v in batch.items()}
            grey = kind.model_input(batch, self.value_range)
            x = vae_input(grey, config, bin_key)
            y = (batch[LABEL].astype(jnp.int32),) if conditional else ()
            if masks:  # the condition: a mask per example, the known pixels as given

                def draw(key, shape):
                    return inpainting.sample_masks(masks, x.shape[1:], key, shape[0])

                mask = per_example_noise(draw, jax.random.fold_in(bin_key, 1), x.shape[:1])
                y = (inpainting.known_pixels(grey, mask),)

            def loss_fn(params):
                (mean, logvar), e_stats = apply_train(
                    encoder, params["encoder"], state.batch_stats["encoder"], x, *y
                )
                if config.vae.objective == "iwae":
                    return iwae_loss(params, mean, logvar, e_stats)
                eps = per_example_noise(jax.random.normal, z_key, mean.shape)
                z = mean + jnp.exp(0.5 * logvar) * eps
                d_vars = (params["decoder"], state.batch_stats["decoder"])
                out, d_stats = apply_train(decoder, *d_vars, *decoder.inputs(z, x), *y)
                neg_elbo, recon, kl = objectives.negative_elbo(
                    out,
                    x,
                    mean,
                    logvar,
                    likelihood=likelihood,
                    beta=config.vae.beta,
                    weights=1.0 - mask if masks else None,  # -log p(x_missing | z, x_known)
                )
                loss = neg_elbo.mean()
                v = config.vae
                if v.kl_warmup_steps or v.free_bits or v.kl_cycles:
                    loss = recon.mean() + kl_term(v, state.step, mean, logvar, config.num_steps)
                stats = {"encoder": e_stats, "decoder": d_stats}
                metrics = {"loss": loss, "recon": recon.mean(), "kl": kl.mean()}
                return loss, (stats, metrics)

            def iwae_loss(params, mean, logvar, e_stats):
                eps = per_example_noise(jax.random.normal, z_key, (mean.shape[0], k, mean.shape[1]))
                d_stats = []  # the decoder's batch statistics from its one call in decode

                def decode(z, x_k):
                    y_k = tuple(jnp.repeat(labels, k) for labels in y)
                    d_vars = (params["decoder"], state.batch_stats["decoder"])
                    out, stats = apply_train(decoder, *d_vars, *decoder.inputs(z, x_k), *y_k)
                    d_stats.append(stats)
                    return out

                bound, log_px_z = objectives.iwae_objective(
                    decode, x, mean, logvar, eps, likelihood=config.vae.likelihood
                )
                loss = bound.mean()
                stats = {"encoder": e_stats, "decoder": d_stats[0]}
                kl = objectives.gaussian_kl(mean, logvar).mean()
                metrics = {"loss": loss, "recon": -log_px_z.mean(), "kl": kl}
                return loss, (stats, metrics)

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

    def decode(self, config, models, state, z, key, labels=None):
        """The likelihood's mean given z (and the classes `labels` of a class-conditional
        model); an autoregressive decoder samples its pixels one by one from `key` and shows
        each pixel's mean given z and the pixels before it."""
        key = jax.random.PRNGKey(0) if key is None else key
        variables = _variables(state, "decoder")
        return models[1].mean(variables, z, config.vae.likelihood, key, labels)

    def reconstruct(self, config, models, state, x, key, labels=None):
        """Decoded means of q(z|x)'s mean, for model inputs x in [0, 1] (of classes `labels`
        for a class-conditional model)."""
        z = encode_mean(models, state, x, labels)
        return self.decode(config, models, state, z, key, labels)

    def inpaint(self, config, models, state, x, mask, key, num_fills=1, labels=None):
        """Fills by iterated posterior sampling (Rezende et al. 2014, appendix F;
        genjax.inpaint.pseudo_gibbs), one chain per fill, started from `key`, then one latent
        resampled from proposals q(z | the chain's fill) by p(x_known | z) p(z) / q(z)
        (genjax.inpaint.importance_resample); the fill is the decoder's mean there. A model
        conditioned on the known pixels fills by ancestral sampling instead: z ~ N(0, I), then
        the decoder's mean given z and the known pixels. A decoder with an autoregressive part
        (model.ar_kernel > 0) has no independent per-pixel draw and is refused."""
        if config.model.get("ar_kernel"):
            raise ConfigError(
                "--mode inpaint needs a VAE decoder with independent pixels; this model has "
                f"model.ar_kernel={config.model.ar_kernel} (use a model trained with 0)"
            )
        encoder, decoder = models
        b = x.shape[0]
        x_f, mask_f = (jnp.repeat(a, num_fills, axis=0) for a in (x, mask))
        classes = _classes(None if labels is None else jnp.repeat(labels, num_fills))
        likelihood = config.vae.likelihood
        if train_masks(models):  # z ~ N(0, I), then p(x | z, the known pixels)
            z = jax.random.normal(key, (len(x_f), config.model.z_dim))
            known = inpainting.known_pixels(x_f, mask_f)
            out = decoder.apply(_variables(state, "decoder"), z, known, train=False)
            fills = inpainting.keep_known(objectives.likelihood_mean(out, likelihood), x_f, mask_f)
            return fills.reshape(b, num_fills, *x.shape[1:])

        def encode(x):
            return encoder.apply(_variables(state, "encoder"), x, *classes, train=False)

        def decode(z):
            return decoder.apply(_variables(state, "decoder"), z, *classes, train=False)

        def posterior_sample(current, k):
            mean, logvar = encode(current)
            return mean + jnp.exp(0.5 * logvar) * jax.random.normal(k, mean.shape)

        def likelihood_draw(z, k):
            out = decode(z)
            mean = objectives.likelihood_mean(out, likelihood)
            if likelihood == "bernoulli":
                return (jax.random.uniform(k, mean.shape) < mean).astype(jnp.float32), mean
            # [location | log scale] channels: a Gaussian, or a logistic rounded to 8 bits
            channels = out.shape[-1] // 2
            location, log_scale = out[..., :channels], out[..., channels:]
            if likelihood == "gaussian":
                draw = location + jnp.exp(log_scale) * jax.random.normal(k, mean.shape)
            else:
                noise = jax.random.logistic(k, mean.shape)
                draw = jnp.round((location + jnp.exp(jnp.maximum(log_scale, -7.0)) * noise) * 255)
                draw = draw / 255
            return jnp.clip(draw, 0.0, 1.0), mean

        gibbs_key, resample_key = jax.random.split(key)
        chain = inpainting.pseudo_gibbs(posterior_sample, likelihood_draw, x_f, mask_f, gibbs_key)
        mean, logvar = encode(chain)
        std = jnp.exp(0.5 * logvar)

        def propose(k):  # z ~ q(z | the chain's fill), log q(z)
            z = mean + std * jax.random.normal(k, mean.shape)
            return z, objectives.diagonal_gaussian_log_density(z, mean, logvar)

        def log_weight(z):  # log p(x_known | z) + log p(z)
            observed = objectives.log_likelihood(decode(z), x_f, likelihood, mask_f)
            return observed + objectives.diagonal_gaussian_log_density(z, 0.0, 0.0)

        z = inpainting.importance_resample(
            propose, log_weight, resample_key, inpainting.IMPORTANCE_PROPOSALS
        )
        fills = objectives.likelihood_mean(decode(z), likelihood)
        fills = inpainting.keep_known(fills, x_f, mask_f)
        return fills.reshape(b, num_fills, *x.shape[1:])

    def test_metrics(self, config, models, state, test, kind, *, k, seed):
        """`test_nll` (-log p(x), k importance samples) and `test_neg_elbo`, nats per example
        (and `test_bits_per_dim` for the discretised logistic likelihood of 8-bit images).

        Inputs are scaled as in training; a Bernoulli VAE trained with dynamic binarisation is
        scored on one binarisation of the test set drawn with `seed`; a class-conditional one
        by -log p(x | y) of each example's own class. The ELBO is the beta = 1
        bound, whatever `vae.beta` the model was trained with. With a Gaussian likelihood both
        are densities of [0, 1]-scaled pixels (no dequantisation), so they can be negative and
        are not comparable with discrete likelihoods or bits per dimension.
        """
        x = np.asarray(kind.model_input(test, self.value_range), np.float32)
        if binarizes(config):
            x = nll.binarize(x, seed)
        shape = None
        if self.num_classes(models):  # log p(x | y): each example's label rides along
            shape, x = x.shape[1:], with_label_column(x, test[LABEL])
        encode, log_weight = importance_functions(models, config.vae.likelihood, shape)
        log_px, elbo = nll.estimate_log_likelihood(encode, log_weight, state, x, k=k, seed=seed + 1)
        out = {"test_nll": float(-np.mean(log_px)), "test_neg_elbo": float(-np.mean(elbo))}
        if config.vae.likelihood == "discretized_logistic":  # 8-bit colour: also bits per dim
            out["test_bits_per_dim"] = nll.bits_per_dim(out["test_nll"], test["image"].shape[1:])
        return out


VAE = VAEFamily()
