"""Families of sequence models on token data: the sequence VAE (Bowman et al. 2016) and its
language-model baseline, the same decoder without z.

The sequence VAE reads the `vae.*` namespace it shares with the image VAEs (`beta`,
`kl_warmup_steps`, `free_bits`, `kl_cycles`) and adds `vae.word_dropout`; config.resolve
refuses the fields of that namespace that the chosen family does not read (an image VAE's
`likelihood` and `binarize`, the text VAE's `word_dropout`). The language model has no
fields of its own. Both train on -log p(x) per sentence with `<eos>` counted, teacher
forced; the VAE adds the KL term against posterior collapse (genjax.families.vae.kl_term).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from genjax import objectives
from genjax.config import ConfigError
from genjax.data.text import BOS_ID, KIND, PAD_ID, UNK_ID
from genjax.families.base import Family
from genjax.families.vae import check_collapse_fields, kl_term
from genjax.metrics import text as text_metrics
from genjax.parallel import device_mean, per_example_noise
from genjax.steps import SKIPPED, apply_if_finite, optimizer


@struct.dataclass
class TextState:
    step: jax.Array
    params: Any  # {'encoder': ..., 'decoder': ...}; the language model: {'decoder': ...}
    opt_state: Any


def decoder_inputs(tokens):
    """<bos> followed by the rows without their last position (genjax.models.text, imported
    when first used: the model registry imports this module)."""
    from genjax.models.text import decoder_inputs as inputs

    return inputs(tokens)


def generate(*args):
    """genjax.models.text.generate (imported when first used)."""
    from genjax.models.text import generate as draw

    return draw(*args)


def word_dropout(prev, rate: float, key):
    """Decoder inputs with each word replaced by <unk> with probability `rate` (Bowman et al.
    2016, sec. 3.2); <bos> and <pad> are kept. The draw is made for the global batch."""
    if not rate:
        return prev
    u = per_example_noise(jax.random.uniform, key, prev.shape)
    drop = (u < rate) & (prev != BOS_ID) & (prev != PAD_ID)
    return jnp.where(drop, UNK_ID, prev)


def sequence_log_likelihood(logits, tokens):
    """log p(x) of token rows under teacher-forced logits, <eos> counted, <pad> not: (B,)."""
    return objectives.categorical_log_likelihood(logits, tokens, tokens != PAD_ID)


class SequenceFamily(Family):
    """What the sequence VAE and the language model share: state, step, sampling."""

    value_range = (0.0, 1.0)  # unused: tokens are not scaled
    data_kinds = frozenset({KIND})
    has_encoder = True

    def check_data(self, config, kind, data_shape) -> None:
        if kind.name != KIND:
            raise ConfigError(
                f"model {config.model.name!r} takes token sequences; data "
                f"{config.data.train!r} is {kind.name} {tuple(data_shape)}; valid data: "
                "pydocs, text:FILE|DIR, tfds:NAME:FIELD"
            )

    def _parts(self, models):
        return models if self.has_encoder else (None, *models)

    def init_state(self, config, models, kind, data_shape, key) -> TextState:
        encoder, decoder = self._parts(models)
        e_key, d_key = jax.random.split(key)
        tokens = jnp.zeros((1, *data_shape), jnp.int32)
        z = jnp.zeros((1, self.latent_dim(config)))
        params = {"decoder": decoder.init(d_key, z, decoder_inputs(tokens))["params"]}
        if encoder is not None:
            params["encoder"] = encoder.init(e_key, tokens)["params"]
        tx = optimizer(config, config.optim.lr)
        return TextState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    def network_params(self, state) -> tuple:
        if self.has_encoder:
            return state.params["encoder"], state.params["decoder"]
        return (state.params["decoder"],)

    def word_dropout_rate(self, config) -> float:
        return 0.0

    def make_step(self, config, models, kind) -> Callable:
        """One Adam step on the mean over sentences of -log p(x|z) (+ the weighted KL)."""
        encoder, decoder = self._parts(models)
        tx = optimizer(config, config.optim.lr)
        rate = self.word_dropout_rate(config)

        def step(state: TextState, batch: dict, key) -> tuple[TextState, dict]:
            drop_key, z_key = jax.random.split(key)
            tokens = kind.model_input({k: v[0] for k, v in batch.items()}, self.value_range)
            prev = word_dropout(decoder_inputs(tokens), rate, drop_key)

            def loss_fn(params):
                z, metrics = None, {}
                if encoder is not None:
                    mean, logvar = encoder.apply({"params": params["encoder"]}, tokens)
                    eps = per_example_noise(jax.random.normal, z_key, mean.shape)
                    z = mean + jnp.exp(0.5 * logvar) * eps
                logits = decoder.apply({"params": params["decoder"]}, z, prev)
                recon = -sequence_log_likelihood(logits, tokens)
                loss = recon.mean()
                if encoder is not None:
                    v = config.vae
                    loss = loss + kl_term(v, state.step, mean, logvar, config.num_steps)
                    weight = objectives.kl_weight(
                        state.step,
                        beta=v.beta,
                        warmup_steps=v.kl_warmup_steps,
                        cycles=v.kl_cycles,
                        num_steps=config.num_steps,
                    )
                    kl = objectives.gaussian_kl(mean, logvar).mean()
                    metrics = {"kl": kl, "kl_weight": weight}
                return loss, metrics | {"loss": loss, "recon": recon.mean()}

            grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params)
            metrics = device_mean(metrics)
            params, opt_state, _, ok = apply_if_finite(
                tx, device_mean(grads), metrics["loss"], state.params, state.opt_state, {}, {}
            )
            state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
            return state, metrics | {SKIPPED: (~ok).astype(jnp.int32)}

        return step

    # ------------------------------------------------------------ generation
    def decode(self, config, models, state, z, key, labels=None, temperature=None):
        """Token rows (N, data.max_len) drawn word by word from p(x|z) at eval.temperature
        (0 = greedy); the language model ignores z."""
        _, decoder = self._parts(models)
        key = jax.random.PRNGKey(0) if key is None else key
        t = config.eval.temperature if temperature is None else temperature
        variables = {"params": state.params["decoder"]}
        rows = z.shape[0]
        z = z if self.latent_dim(config) else None
        return generate(decoder, variables, z, key, config.data.max_len, t, rows)

    def encode_mean(self, models, state, tokens):
        mean, _ = models[0].apply({"params": state.params["encoder"]}, tokens)
        return mean

    # --------------------------------------------------------------- metrics
    def log_likelihoods(self, config, models, state, tokens, *, k: int, seed: int) -> dict:
        """{'log_px', 'elbo'} per sentence (N,)."""
        raise NotImplementedError

    def test_metrics(self, config, models, state, test, kind, *, k, seed):
        """`test_nll` (nats per sentence, <eos> counted) and `test_ppl` (per token, <eos>
        counted: exp of the summed NLL over the summed lengths), and what `_extra` adds."""
        tokens = np.asarray(test["tokens"], np.int32)
        values = self.log_likelihoods(config, models, state, tokens, k=k, seed=seed)
        lengths = text_metrics.sequence_lengths(tokens)
        out = {
            "test_nll": float(-np.mean(values["log_px"])),
            "test_ppl": float(np.exp(-np.sum(values["log_px"]) / np.sum(lengths))),
        }
        return out | self._extra(config, models, state, tokens, values, seed)

    def _extra(self, config, models, state, tokens, values, seed) -> dict:
        return {}


class SequenceVAEFamily(SequenceFamily):
    """The sequence VAE (Bowman et al. 2016): GRU encoder, GRU decoder fed z at its initial
    state and at every step, word dropout on the decoder's inputs."""

    name = "text_vae"
    namespace = "vae"  # shared with the image VAEs (genjax.families.vae)
    defaults = {
        "beta": 1.0,  # the KL's weight (reached after warm-up)
        "kl_warmup_steps": 0,  # KL weight rises linearly from 0 to beta over these steps
        "free_bits": 0.0,  # nats per latent dimension (Kingma et al. 2016)
        "kl_cycles": 0,  # cyclical annealing (Fu et al. 2019): cycles over num_steps; 0 = off
        "word_dropout": 0.0,  # the fraction of decoder input words replaced by <unk>
    }
    metrics = ("kl", "kl_weight", "loss", "recon")
    modes = frozenset({"interpolate", "reconstruct"})

    def check(self, config) -> None:
        v = config.vae
        if v.beta < 0:
            raise ConfigError(f"config.vae.beta must be >= 0, got {v.beta}")
        check_collapse_fields(v)
        if not 0.0 <= v.word_dropout < 1.0:
            raise ConfigError(f"config.vae.word_dropout must be in [0, 1), got {v.word_dropout}")

    def latent_dim(self, config) -> int:
        return config.model.z_dim

    def word_dropout_rate(self, config) -> float:
        return config.vae.word_dropout

    def reconstruct(self, config, models, state, x, key):
        """Greedy decodings of q(z|x)'s mean, for token rows x."""
        z = self.encode_mean(models, state, x)
        return self.decode(config, models, state, z, key, temperature=0.0)

    def homotopy(self, config, models, state, a, b, steps: int):
        """Greedy decodings of `steps` points on the line between the posterior means of token
        rows a and b (each (R, T)): (R * steps, T), row-major (Bowman et al. 2016, sec. 5.3)."""
        za, zb = self.encode_mean(models, state, a), self.encode_mean(models, state, b)
        t = jnp.linspace(0.0, 1.0, steps)[None, :, None]
        z = ((1 - t) * za[:, None] + t * zb[:, None]).reshape(-1, za.shape[-1])
        return self.decode(config, models, state, z, None, temperature=0.0)

    def log_likelihoods(self, config, models, state, tokens, *, k, seed):
        encode, log_weight = importance_functions(models)
        log_px, elbo = text_metrics.importance_log_likelihood(
            encode, log_weight, state, tokens, k=k, seed=seed, vocab_size=config.data.vocab_size
        )
        return {"log_px": log_px, "elbo": elbo}

    def _extra(self, config, models, state, tokens, values, seed):
        """`test_neg_elbo` (k-sample mean, beta = 1), `kl` (analytic, mean over sentences),
        `mutual_info` (nats) and `active_units`, on the test split."""
        mean, logvar = posterior(models, state, tokens)
        z = mean + np.exp(0.5 * logvar) * np.random.default_rng(seed).standard_normal(mean.shape)
        kl = 0.5 * np.sum(np.exp(logvar) + mean**2 - 1.0 - logvar, axis=1)
        return {
            "test_neg_elbo": float(-np.mean(values["elbo"])),
            "kl": float(np.mean(kl)),
            "mutual_info": text_metrics.mutual_information(mean, logvar, z),
            "active_units": float(text_metrics.active_units(mean)),
        }


class LanguageModelFamily(SequenceFamily):
    """The language-model baseline: the sequence VAE's decoder without z."""

    name = "lm"
    defaults: dict[str, Any] = {}
    metrics = ("loss", "recon")
    modes = frozenset()
    has_encoder = False

    def latent_dim(self, config) -> int:
        return 0

    def log_likelihoods(self, config, models, state, tokens, *, k, seed):
        """Exact: log p(x) = sum_t log p(x_t | x_<t)."""
        score = lm_scorer(models)
        log_px = np.zeros(len(tokens))
        for idx, w in text_metrics.length_batches(tokens, 64):
            rows = np.zeros((64, w), np.int32)
            rows[: len(idx)] = tokens[idx, :w]
            log_px[idx] = np.asarray(score(state, jnp.asarray(rows)))[: len(idx)]
        return {"log_px": log_px}


@functools.cache
def lm_scorer(models):
    (decoder,) = models

    def score(state, tokens):
        logits = decoder.apply({"params": state.params["decoder"]}, None, decoder_inputs(tokens))
        return sequence_log_likelihood(logits, tokens)

    return jax.jit(score)


@functools.cache
def _posterior_fn(models):
    return jax.jit(
        lambda state, tokens: models[0].apply({"params": state.params["encoder"]}, tokens)
    )


def posterior(models, state, tokens, batch: int = 256):
    """(mean, logvar) of q(z|x) for every row, numpy float64."""
    fn = _posterior_fn(models)
    parts = [fn(state, jnp.asarray(tokens[i : i + batch])) for i in range(0, len(tokens), batch)]
    mean = np.concatenate([np.asarray(m, np.float64) for m, _ in parts])
    logvar = np.concatenate([np.asarray(v, np.float64) for _, v in parts])
    return mean, logvar


@functools.cache
def importance_functions(models) -> tuple[Callable, Callable]:
    """(encode, log_weight) of a sequence VAE for genjax.metrics.nll's estimator."""
    encoder, decoder = models

    def encode(state, x):
        return encoder.apply({"params": state.params["encoder"]}, x)

    def log_weight(state, x, z, mean, logvar):
        b, samples, dim = z.shape
        rows = jnp.broadcast_to(x, (b, samples, x.shape[-1])).reshape(b * samples, -1)
        logits = decoder.apply(
            {"params": state.params["decoder"]}, z.reshape(-1, dim), decoder_inputs(rows)
        )
        log_px_z = sequence_log_likelihood(logits, rows).reshape(b, samples)
        log_prior = -0.5 * jnp.sum(objectives.LOG_2PI + jnp.square(z), axis=-1)
        log_q = -0.5 * jnp.sum(
            objectives.LOG_2PI + logvar + jnp.square(z - mean) * jnp.exp(-logvar), axis=-1
        )
        return log_px_z + log_prior - log_q

    return encode, log_weight


TEXT_VAE = SequenceVAEFamily()
LM = LanguageModelFamily()
