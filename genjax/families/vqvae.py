"""The VQ-VAE (van den Oord et al. 2017) in two families: `vqvae`, the first stage (encoder,
codebook, decoder), and `prior`, an autoregressive prior over the frozen first stage's codes.

First stage (`vqvae.*`): each encoder vector z_e is replaced by its nearest codebook vector e,
passed on with the straight-through estimator; the loss per example is
-log p(x | z_q) + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2 (the paper's eq. 3, the norms
over the whole code grid). `vqvae.ema_decay` > 0 replaces the codebook term by exponential
moving averages of the vectors assigned to each code (the paper's appendix A.1);
`vqvae.restart_dead` = N > 0 moves a code no vector chose for N steps onto a random encoder
vector of the current global batch (the random restarts of Dhariwal et al. 2020, Jukebox).
The codebook's perplexity (exp of the entropy of the batch's code histogram) and usage
(fraction of codes chosen) are logged every step.

Second stage (`prior.*`): `prior.vqvae_workdir` names the first stage's workdir. Its newest
checkpoint is restored once, frozen and copied into the prior's state, so that the prior's
workdir samples and evaluates with the first stage it was trained on; the first stage's
workdir is read again only for its config (the modules' shapes). Each step encodes a batch
of the data with the frozen encoder and trains the prior (genjax.models.vqvae.CodePrior) on
the codes by maximum likelihood. Samples are codes drawn in raster order, decoded.

Test metrics, nats per example: the first stage's `test_recon` (-log p(x | z_q(x))) and
`test_neg_elbo` with the uniform prior of training (recon + P ln K for P codes of K); the
prior's `test_code_nll` (-log p(codes)), `test_recon` and `test_neg_elbo` = their sum, the
negative ELBO of a VAE whose posterior is one code grid (its entropy is 0), an upper bound on
-log p(x), with `test_bits_per_dim` = test_neg_elbo / (H W C ln 2).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax

from genjax import objectives
from genjax.config import ConfigError
from genjax.families.base import Family
from genjax.families.vae import LIKELIHOOD_CHANNELS
from genjax.metrics import nll
from genjax.parallel import AXIS, device_mean, per_example_noise
from genjax.steps import SKIPPED, apply_if_finite, init_variables, optimizer

EMA_EPSILON = 1e-5  # Laplace smoothing of the EMA counts (as in Sonnet's VectorQuantizerEMA)
EVAL_BATCH = 250  # test examples per compiled call of the test metrics


# --------------------------------------------------------------- the codebook's updates


def device_sum(x):
    """The sum of x over the data-parallel axis: a global batch's total."""
    return x if lax.axis_size(AXIS) == 1 else lax.psum(x, AXIS)


def code_counts(codes, num_codes: int) -> jax.Array:
    """How often each of `num_codes` codes occurs in `codes` (any shape), float32 (K,)."""
    return jnp.zeros((num_codes,), jnp.float32).at[codes.reshape(-1)].add(1.0)


def perplexity_and_usage(counts) -> tuple[jax.Array, jax.Array]:
    """(exp of the entropy of the code histogram, fraction of codes used at least once):
    perplexity K means every code equally used, 1 a single code."""
    p = counts / jnp.maximum(counts.sum(), 1.0)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return jnp.exp(entropy), jnp.mean((counts > 0).astype(jnp.float32))


def ema_update(count, total, counts, sums, decay: float):
    """One EMA step of the codebook (van den Oord et al. 2017, appendix A.1, eqs. 6-8):
    N_i <- decay N_i + (1 - decay) n_i, m_i <- decay m_i + (1 - decay) sum of the vectors
    assigned to code i, e_i = m_i / N_i, with N_i Laplace-smoothed so that an unused code
    never divides by 0. `counts` (K,) and `sums` (K, D) are the global batch's n_i and sums.
    Returns (count, total, codebook)."""
    count = decay * count + (1.0 - decay) * counts
    total = decay * total + (1.0 - decay) * sums
    n = count.sum()
    smoothed = (count + EMA_EPSILON) / (n + count.shape[0] * EMA_EPSILON) * n
    return count, total, total / smoothed[:, None]


def restart_dead_codes(codebook, count, total, unused, counts, candidates, key, after: int):
    """Random restarts (Dhariwal et al. 2020, Jukebox, against codebook collapse): `unused` counts
    the steps since each code was last chosen (`counts` > 0 resets it); a code unused for
    `after` steps (0 = never) moves onto a random row of `candidates` (the global batch's
    encoder vectors), its EMA count set to 1 and its sum to that vector.
    Returns (codebook, count, total, unused, codes restarted)."""
    unused = jnp.where(counts > 0, 0, unused + 1)
    dead = (unused >= after) if after > 0 else jnp.zeros_like(unused, bool)
    picks = candidates[jax.random.randint(key, (codebook.shape[0],), 0, candidates.shape[0])]
    codebook = jnp.where(dead[:, None], picks, codebook)
    count = jnp.where(dead, 1.0, count)
    total = jnp.where(dead[:, None], picks, total)
    unused = jnp.where(dead, 0, unused)
    return codebook, count, total, unused, dead.sum().astype(jnp.float32)


# ------------------------------------------------------------------- shared helpers


def binarizes(v) -> bool:
    """Whether a first stage's inputs are binarised (Bernoulli likelihood with binarize)."""
    return bool(v.binarize) and v.likelihood == "bernoulli"


def stage_input(x, v, key) -> jax.Array:
    """[0, 1] images, dynamically binarised (a fresh draw per step) when the first stage's
    settings `v` (its vqvae.*) ask for it."""
    if binarizes(v):
        u = per_example_noise(jax.random.uniform, key, x.shape)
        x = (u < x).astype(jnp.float32)
    return x


def encode_codes(encoder, params: dict, x) -> tuple[jax.Array, jax.Array]:
    """(z_e (B, h, w, D), codes (B, h, w)) of model inputs x, in eval mode."""
    from genjax.models.vqvae import nearest_codes

    z_e = encoder.apply({"params": params["encoder"]}, x, train=False)
    return z_e, nearest_codes(z_e, params["codebook"])


def decode_codes(decoder, params: dict, codes, grid: tuple[int, int]) -> jax.Array:
    """The decoder's output (likelihood parameters) for codes (B, h * w) or (B, h, w)."""
    e = params["codebook"][codes.reshape(codes.shape[0], *grid)]
    return decoder.apply({"params": params["decoder"]}, e, train=False)


def grid_of(decoder) -> tuple[int, int]:
    from genjax.models.vqvae import code_grid

    return code_grid(decoder.data_shape)


def test_inputs(test: dict, kind, v, seed: int) -> np.ndarray:
    """The test split as model inputs, binarised once with `seed` when training binarised."""
    x = np.asarray(kind.model_input(test, (0.0, 1.0)), np.float32)
    return nll.binarize(x, seed) if binarizes(v) else x


def in_batches(fn: Callable, x: np.ndarray) -> list[np.ndarray]:
    """fn over x in batches of EVAL_BATCH (the last padded, so that one compile serves),
    each output concatenated over the examples."""
    outs = []
    for start in range(0, len(x), EVAL_BATCH):
        xb = x[start : start + EVAL_BATCH]
        real = len(xb)
        if real < EVAL_BATCH:
            xb = np.concatenate([xb, np.zeros((EVAL_BATCH - real, *x.shape[1:]), x.dtype)])
        outs.append([np.asarray(o)[:real] for o in fn(xb)])
    return [np.concatenate(parts) for parts in zip(*outs, strict=True)]


@functools.cache
def _recon_function(models, likelihood: str) -> Callable:
    """jit (params, x) -> (-log p(x | z_q(x)) per example, codes): the first stage's."""
    encoder, decoder = models[:2]

    def run(params, x):
        _, codes = encode_codes(encoder, params, x)
        out = decode_codes(decoder, params, codes, codes.shape[1:])
        return -objectives.log_likelihood(out, x, likelihood), codes.reshape(len(x), -1)

    return jax.jit(run)


# ------------------------------------------------------------------------ first stage


@struct.dataclass
class VQVAEState:
    step: jax.Array
    params: Any  # {'encoder': ..., 'decoder': ..., 'codebook': (K, D)}
    opt_state: Any
    vq: Any  # {'count': (K,), 'total': (K, D), 'unused': (K,) int32}: EMA sums, idle steps


class VQVAEFamily(Family):
    name = "vqvae"
    defaults = {
        "codebook_size": 64,  # K codes
        "commitment": 0.25,  # beta, the commitment loss's weight (the paper's 0.25)
        "ema_decay": 0.0,  # EMA codebook updates with this decay; 0 = the codebook loss
        "restart_dead": 0,  # restart a code unused for this many steps; 0 = never
        "likelihood": "bernoulli",  # bernoulli | gaussian | discretized_logistic
        "binarize": True,  # dynamic binarisation of grey images (Bernoulli likelihood)
    }
    metrics = ("commitment", "loss", "perplexity", "recon", "restarted", "usage")
    value_range = (0.0, 1.0)
    modes = frozenset({"reconstruct"})

    def check(self, config) -> None:
        v = config.vqvae
        if v.likelihood not in LIKELIHOOD_CHANNELS:
            valid = ", ".join(LIKELIHOOD_CHANNELS)
            raise ConfigError(f"config.vqvae.likelihood={v.likelihood!r}; valid: {valid}")
        if v.codebook_size < 2:
            raise ConfigError(f"config.vqvae.codebook_size must be >= 2, got {v.codebook_size}")
        if v.commitment < 0:
            raise ConfigError(f"config.vqvae.commitment must be >= 0, got {v.commitment}")
        if not 0.0 <= v.ema_decay < 1.0:
            raise ConfigError(
                f"config.vqvae.ema_decay must be in [0, 1) (0 = codebook loss), got {v.ema_decay}"
            )
        if v.restart_dead < 0:
            raise ConfigError(
                f"config.vqvae.restart_dead must be >= 0 (0 = never), got {v.restart_dead}"
            )

    def latent_dim(self, config) -> int:
        """The dimension of one code vector; `decode` takes code indices (N, positions)."""
        return config.model.z_dim

    def init_state(self, config, models, kind, data_shape, key) -> VQVAEState:
        encoder, decoder = models
        e_key, d_key, c_key = jax.random.split(key, 3)
        x = jnp.zeros((1, *data_shape))
        e_params, _ = init_variables(encoder, e_key, x)
        z_e = jax.eval_shape(lambda: encoder.apply({"params": e_params}, x, train=False))
        d_params, _ = init_variables(decoder, d_key, jnp.zeros(z_e.shape))
        k, dim = config.vqvae.codebook_size, z_e.shape[-1]
        # uniform(-1/K, 1/K), as in the paper's reference code
        codebook = jax.random.uniform(c_key, (k, dim), jnp.float32, -1.0 / k, 1.0 / k)
        params = {"encoder": e_params, "decoder": d_params, "codebook": codebook}
        vq = {
            "count": jnp.ones((k,), jnp.float32),
            "total": codebook,
            "unused": jnp.zeros((k,), jnp.int32),
        }
        tx = optimizer(config, config.optim.lr)
        return VQVAEState(jnp.zeros((), jnp.int32), params, tx.init(params), vq)

    def network_params(self, state: VQVAEState) -> tuple:
        return state.params["encoder"], state.params["decoder"]

    def make_step(self, config, models, kind) -> Callable:
        """One update of the VQ-VAE loss (van den Oord et al. 2017, eq. 3), then the
        codebook's EMA update and restarts, each applied only when the update is."""
        from genjax.models.vqvae import quantize

        encoder, decoder = models
        v = config.vqvae
        tx = optimizer(config, config.optim.lr)
        ema = v.ema_decay > 0

        def step(state: VQVAEState, batch: dict, key) -> tuple[VQVAEState, dict]:
            bin_key, restart_key = jax.random.split(key)
            x = kind.model_input({k: b[0] for k, b in batch.items()}, self.value_range)
            x = stage_input(x, v, bin_key)

            def loss_fn(params):
                z_e = encoder.apply({"params": params["encoder"]}, x, train=True)
                codebook = lax.stop_gradient(params["codebook"]) if ema else params["codebook"]
                z_q, codes, e = quantize(z_e, codebook)
                out = decoder.apply({"params": params["decoder"]}, z_q, train=True)
                recon = -objectives.log_likelihood(out, x, v.likelihood)
                axes = tuple(range(1, z_e.ndim))
                commitment = jnp.sum(jnp.square(z_e - lax.stop_gradient(e)), axes)
                loss = recon + v.commitment * commitment
                if not ema:  # the codebook loss ||sg[z_e] - e||^2 moves the codes
                    loss = loss + jnp.sum(jnp.square(lax.stop_gradient(z_e) - e), axes)
                metrics = {
                    "loss": loss.mean(),
                    "recon": recon.mean(),
                    "commitment": commitment.mean(),
                }
                return loss.mean(), (z_e, codes, metrics)

            grads, (z_e, codes, metrics) = jax.grad(loss_fn, has_aux=True)(state.params)
            metrics = device_mean(metrics)
            params, opt_state, _, ok = apply_if_finite(
                tx, device_mean(grads), metrics["loss"], state.params, state.opt_state, {}, {}
            )
            k = v.codebook_size
            z_flat = z_e.reshape(-1, z_e.shape[-1])
            counts = device_sum(code_counts(codes, k))
            vq = state.vq
            codebook, count, total = params["codebook"], vq["count"], vq["total"]
            if ema:
                sums = device_sum(jnp.zeros_like(total).at[codes.reshape(-1)].add(z_flat))
                count, total, codebook = ema_update(count, total, counts, sums, v.ema_decay)
            candidates = (
                z_flat if lax.axis_size(AXIS) == 1 else lax.all_gather(z_flat, AXIS, tiled=True)
            )
            codebook, count, total, unused, restarted = restart_dead_codes(
                codebook,
                count,
                total,
                vq["unused"],
                counts,
                candidates,
                restart_key,
                v.restart_dead,
            )
            new = {"codebook": codebook, "count": count, "total": total, "unused": unused}
            old = {"codebook": state.params["codebook"], **vq}
            new = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
            params = {**params, "codebook": new.pop("codebook")}
            perplexity, usage = perplexity_and_usage(counts)
            metrics |= {"perplexity": perplexity, "usage": usage, "restarted": restarted}
            state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, vq=new)
            return state, metrics | {SKIPPED: (~ok).astype(jnp.int32)}

        return step

    def decode(self, config, models, state, z, key, labels=None):
        """The likelihood's mean for code grids z (N, positions) of code indices."""
        out = decode_codes(models[1], state.params, z.astype(jnp.int32), grid_of(models[1]))
        return objectives.likelihood_mean(out, config.vqvae.likelihood)

    def sample(self, config, models, state, key, num: int, labels=None):
        """Codes drawn uniformly, the prior the first stage trains with; a `prior` trained on
        its codes (configs/vqvae_prior_mnist.py) draws the samples worth looking at."""
        h, w = grid_of(models[1])
        codes = jax.random.randint(key, (num, h * w), 0, config.vqvae.codebook_size)
        return self.decode(config, models, state, codes, key)

    def reconstruct(self, config, models, state, x, key):
        """Decoded means of the nearest codes of x's encoding (model inputs in [0, 1])."""
        _, codes = encode_codes(models[0], state.params, x)
        return self.decode(config, models, state, codes.reshape(len(x), -1), key)

    def test_metrics(self, config, models, state, test, kind, *, k, seed):
        """`test_recon`, `test_neg_elbo` (with the uniform prior: + P ln K) in nats per example,
        and the codebook's `test_perplexity` and `test_usage` on the test split."""
        v = config.vqvae
        x = test_inputs(test, kind, v, seed)
        recon, codes = in_batches(
            functools.partial(_recon_function(models, v.likelihood), state.params), x
        )
        counts = np.bincount(codes.reshape(-1), minlength=v.codebook_size)
        perplexity, usage = perplexity_and_usage(jnp.asarray(counts, jnp.float32))
        uniform = codes.shape[1] * math.log(v.codebook_size)
        return {
            "test_recon": float(recon.mean()),
            "test_neg_elbo": float(recon.mean() + uniform),
            "test_perplexity": float(perplexity),
            "test_usage": float(usage),
        }


VQVAE = VQVAEFamily()


# ------------------------------------------------------------------------------ prior

_FIRST_STAGES: dict[tuple, Any] = {}


def first_stage_config(workdir: str):
    """The config (resolved, as config.json holds it) of the first stage in `workdir`; a
    ConfigError naming what is valid when `workdir` is empty, missing, not a workdir or holds
    another model."""
    from genjax.experiment import load_config
    from genjax.models.registry import MODELS, family_of

    valid = ", ".join(sorted(n for n, e in MODELS.items() if e.family is VQVAE))
    hint = f"valid: the workdir of a trained VQ-VAE (model {valid}, e.g. configs/vqvae_mnist.py)"
    if not workdir:
        raise ConfigError(f"config.prior.vqvae_workdir is empty; {hint}")
    path = Path(workdir)
    if not path.is_dir():
        raise ConfigError(f"config.prior.vqvae_workdir={workdir!r}: no such directory; {hint}")
    if not (path / "config.json").is_file():
        raise ConfigError(f"config.prior.vqvae_workdir={workdir!r} has no config.json; {hint}")
    config = load_config(path)
    family = family_of(config.model.name)
    if family is not VQVAE:
        raise ConfigError(
            f"config.prior.vqvae_workdir={workdir!r} holds a {config.model.name!r} model (a "
            f"{family.name}), not a VQ-VAE; {hint}"
        )
    return config


def first_stage(workdir: str):
    """The trained first stage in `workdir` (genjax.experiment.TrainedRun), restored once per
    process and set of checkpoints; ConfigErrors as `first_stage_config`."""
    from genjax.experiment import restore

    config = first_stage_config(workdir)
    path = Path(workdir)
    checkpoints = path / "checkpoints"
    listing = tuple(sorted(p.name for p in checkpoints.iterdir())) if checkpoints.is_dir() else ()
    key = (str(path.resolve()), listing)
    if key not in _FIRST_STAGES:
        _FIRST_STAGES[key] = restore(path, config)
    return _FIRST_STAGES[key]


def frozen_params(run) -> dict:
    """The first stage's parameters the prior keeps: encoder, decoder and codebook."""
    return {k: run.state.params[k] for k in ("encoder", "decoder", "codebook")}


@functools.cache
def _prior_functions(models, likelihood: str) -> Callable:
    """jit (frozen, prior params, x) -> (-log p(x | z_q), -log p(codes)) per example."""
    from genjax.models.vqvae import code_log_likelihood

    prior = models[2]
    recon_fn = _recon_function(models, likelihood)

    def run(frozen, params, x):
        recon, codes = recon_fn(frozen, x)
        logits = prior.apply({"params": params}, codes)
        return recon, -code_log_likelihood(logits, codes)

    return jax.jit(run)


@struct.dataclass
class PriorState:
    step: jax.Array
    params: Any  # the prior's
    opt_state: Any
    frozen: Any  # the first stage's {'encoder', 'decoder', 'codebook'}, never updated


class VQPriorFamily(Family):
    name = "prior"
    defaults = {"vqvae_workdir": ""}  # the first stage's workdir (train.py's --workdir)
    metrics = ("loss",)  # -log p(codes), nats per example
    value_range = (0.0, 1.0)
    modes = frozenset({"reconstruct"})

    def check(self, config) -> None:
        if not config.prior.vqvae_workdir:
            first_stage_config("")  # the ConfigError that says what is valid

    @staticmethod
    def stage(config):
        """The first stage's settings (its resolved vqvae.*)."""
        return first_stage_config(config.prior.vqvae_workdir).vqvae

    def latent_dim(self, config) -> int:
        """The dimension of one code vector; `decode` takes code indices (N, positions)."""
        return first_stage_config(config.prior.vqvae_workdir).model.z_dim

    def init_state(self, config, models, kind, data_shape, key) -> PriorState:
        prior = models[2]
        params, _ = init_variables(prior, key, jnp.zeros((1, prior.positions), jnp.int32))
        frozen = frozen_params(first_stage(config.prior.vqvae_workdir))
        tx = optimizer(config, config.optim.lr)
        return PriorState(jnp.zeros((), jnp.int32), params, tx.init(params), frozen)

    def network_params(self, state: PriorState) -> tuple:
        return state.frozen["encoder"], state.frozen["decoder"], state.params

    def make_step(self, config, models, kind) -> Callable:
        """One maximum-likelihood update of the prior on the frozen first stage's codes of a
        batch (binarised afresh when the first stage was)."""
        from genjax.models.vqvae import code_log_likelihood

        encoder, _, prior = models
        v = self.stage(config)
        tx = optimizer(config, config.optim.lr)

        def step(state: PriorState, batch: dict, key) -> tuple[PriorState, dict]:
            x = kind.model_input({k: b[0] for k, b in batch.items()}, self.value_range)
            _, codes = encode_codes(encoder, state.frozen, stage_input(x, v, key))
            codes = codes.reshape(len(codes), -1)

            def loss_fn(params):
                logits = prior.apply({"params": params}, codes, train=True)
                return -code_log_likelihood(logits, codes).mean()

            loss, grads = jax.value_and_grad(loss_fn)(state.params)
            loss = device_mean(loss)
            params, opt_state, _, ok = apply_if_finite(
                tx, device_mean(grads), loss, state.params, state.opt_state, {}, {}
            )
            state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
            return state, {"loss": loss, SKIPPED: (~ok).astype(jnp.int32)}

        return step

    def decode(self, config, models, state, z, key, labels=None):
        """The likelihood's mean for code grids z (N, positions), by the frozen decoder."""
        out = decode_codes(models[1], state.frozen, z.astype(jnp.int32), grid_of(models[1]))
        return objectives.likelihood_mean(out, self.stage(config).likelihood)

    def sample(self, config, models, state, key, num: int, labels=None):
        """Codes drawn from the prior in raster order, decoded to the likelihood's mean."""
        from genjax.models.vqvae import sample_codes

        codes = sample_codes(models[2], {"params": state.params}, key, num)
        return self.decode(config, models, state, codes, key)

    def reconstruct(self, config, models, state, x, key):
        """The frozen first stage's reconstructions of model inputs x."""
        _, codes = encode_codes(models[0], state.frozen, x)
        return self.decode(config, models, state, codes.reshape(len(x), -1), key)

    def test_metrics(self, config, models, state, test, kind, *, k, seed):
        """`test_code_nll` (-log p(codes) under the prior), `test_recon` (-log p(x | z_q)),
        `test_neg_elbo` (their sum: the bound on -log p(x)), nats per example, and
        `test_bits_per_dim` (test_neg_elbo per dimension, in bits)."""
        v = self.stage(config)
        x = test_inputs(test, kind, v, seed)
        run = functools.partial(_prior_functions(models, v.likelihood), state.frozen, state.params)
        recon, code_nll = in_batches(run, x)
        neg_elbo = float(recon.mean() + code_nll.mean())
        return {
            "test_code_nll": float(code_nll.mean()),
            "test_recon": float(recon.mean()),
            "test_neg_elbo": neg_elbo,
            "test_bits_per_dim": nll.bits_per_dim(neg_elbo, x.shape[1:]),
        }


VQ_PRIOR = VQPriorFamily()
