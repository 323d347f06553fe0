"""Per-device train steps `(state, batch, key) -> (state, metrics)`, one per family.

Steps know nothing of files or flags. They are written pmap style: gradients,
losses and BatchNorm statistics are averaged over the 'data' axis, and per-example
noise is drawn for the global batch and sliced (genjax.parallel), so a step on N
devices equals a step on one device with the whole batch.

A batch holds `R` real batches of `b` local examples, shape (R, b, ...): R is
`gan.n_critic` for GANs (a fresh real batch per critic update, as in Gulrajani et
al. 2017, Algorithm 1) and 1 for VAEs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax import lax

from genjax import objectives
from genjax.models.vae import decoder_inputs
from genjax.parallel import device_mean, per_example_noise


@struct.dataclass
class GANState:
    step: jax.Array
    g_params: Any
    d_params: Any
    g_stats: Any
    d_stats: Any
    g_opt_state: Any
    d_opt_state: Any


@struct.dataclass
class VAEState:
    step: jax.Array
    params: Any  # {'encoder': ..., 'decoder': ...}
    batch_stats: Any
    opt_state: Any


def to_model_input(batch: dict, family: str) -> jax.Array:
    """uint8 images -> [-1, 1] (GANs) or [0, 1] (VAEs), float32; 2-D points as they are."""
    if "point" in batch:
        return batch["point"].astype(jnp.float32)
    x = batch["image"].astype(jnp.float32)
    return x / 127.5 - 1.0 if family == "gan" else x / 255.0


def _variables(params, stats) -> dict:
    return {"params": params, "batch_stats": stats}


def _apply_train(module: nn.Module, params, stats, *inputs):
    """Applies a module in train mode; returns (output, updated batch stats)."""
    out, updates = module.apply(
        _variables(params, stats), *inputs, train=True, mutable=["batch_stats"]
    )
    return out, updates.get("batch_stats", stats)


def _init(module: nn.Module, key, *inputs) -> tuple[Any, Any]:
    variables = module.init(key, *inputs, train=False)
    return variables["params"], variables.get("batch_stats", {})


def learning_rate(config, lr: float, updates_per_step: int = 1) -> optax.Schedule:
    """`lr`, constant until `optim.decay_from` of the run, then linearly down to 0.

    Always a schedule (constant when decay_from = 1), so the optimiser state has one shape.
    """
    total = config.num_steps * updates_per_step
    start = min(total, int(config.optim.decay_from * total))
    if start >= total:
        return optax.constant_schedule(lr)
    return optax.join_schedules(
        [optax.constant_schedule(lr), optax.linear_schedule(lr, 0.0, total - start)], [start]
    )


def _optimizer(config, lr: float, updates_per_step: int = 1) -> optax.GradientTransformation:
    """Adam (b1, b2) or plain SGD, by `optim.name`, at the scheduled learning rate."""
    schedule = learning_rate(config, lr, updates_per_step)
    if config.optim.name == "sgd":
        return optax.sgd(schedule)
    return optax.adam(schedule, b1=config.optim.b1, b2=config.optim.b2)


def all_finite(*trees) -> jax.Array:
    """Whether every float in the pytrees is finite (a bool scalar)."""
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(trees)
        if jnp.issubdtype(jnp.result_type(x), jnp.floating)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def apply_if_finite(tx, grads, loss: jax.Array, params, opt_state, new_stats, old_stats):
    """One optimiser update, applied only if the (all-reduced) loss and gradients are finite.

    Returns (params, opt_state, stats, ok): the updated params and optimiser state and
    `new_stats` (BatchNorm statistics of the forward pass) if ok, else the old ones unchanged
    (vdvae's and optax.apply_if_finite's remedy for a rare NaN/Inf). The decision depends on
    the gradients, not on the new parameters, and is taken by `lax.cond` around the update:
    an elementwise `where(ok, new, old)` over parameters and optimiser state made XLA:CPU
    copy the Adam moments of the large kernels every step (seen in the optimised HLO).
    `loss` must be the same on every device.
    """
    ok = all_finite(grads, loss)

    def update(operands):
        grads, opt_state, params, stats, _ = operands
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, stats

    def keep(operands):
        _, opt_state, params, _, stats = operands
        return params, opt_state, stats

    operands = (grads, opt_state, params, new_stats, old_stats)
    params, opt_state, stats = lax.cond(ok, update, keep, operands)
    return params, opt_state, stats, ok


# --------------------------------------------------------------------------- GAN


def gan_optimizers(config) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """(generator, discriminator) optimisers: Adam, D at `optim.d_lr` when set."""
    d_lr = config.optim.d_lr or config.optim.lr
    return _optimizer(config, config.optim.lr), _optimizer(config, d_lr, config.gan.n_critic)


def pack(x: jax.Array, m: int) -> jax.Array:
    """PacGAN's packing (Lin et al. 2018): m consecutive examples concatenated along the last
    (feature or channel) axis, (B, ..., C) -> (B / m, ..., m * C); the identity for m = 1."""
    if m == 1:
        return x
    b, *rest, c = x.shape
    if b % m:
        raise ValueError(f"a per-device batch of {b} cannot be packed by gan.pack={m}")
    x = x.reshape(b // m, m, *rest, c)
    return jnp.moveaxis(x, 1, -2).reshape(b // m, *rest, m * c)


def init_gan_state(config, models, data_shape, key) -> GANState:
    generator, discriminator = models
    g_tx, d_tx = gan_optimizers(config)
    g_key, d_key = jax.random.split(key)
    g_params, g_stats = _init(generator, g_key, jnp.zeros((1, config.model.z_dim)))
    packed_shape = (*data_shape[:-1], config.gan.pack * data_shape[-1])
    d_params, d_stats = _init(discriminator, d_key, jnp.zeros((1, *packed_shape)))
    return GANState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_params,
        d_params=d_params,
        g_stats=g_stats,
        d_stats=d_stats,
        g_opt_state=g_tx.init(g_params),
        d_opt_state=d_tx.init(d_params),
    )


def make_gan_step(config, models) -> Callable:
    """One GAN step: `n_critic` discriminator updates, then one generator update.

    With gan.pack = m the discriminator judges packs of m real or m generated examples
    (PacGAN); the losses average over packs.
    """
    generator, discriminator = models
    m = config.gan.pack
    g_tx, d_tx = gan_optimizers(config)
    d_loss_fn, g_loss_fn = objectives.ADVERSARIAL_LOSSES[config.gan.loss]
    use_penalty = config.gan.loss == "wgan_gp"
    z_dim = config.model.z_dim

    def latents(key, b):
        return per_example_noise(jax.random.normal, key, (b, z_dim))

    def discriminator_update(state: GANState, real, key):
        z_key, gp_key = jax.random.split(key)
        b = real.shape[0]
        fake, g_stats = _apply_train(generator, state.g_params, state.g_stats, latents(z_key, b))
        fake = pack(lax.stop_gradient(fake), m)
        real = pack(real, m)

        def loss_fn(d_params):
            real_logits, stats = _apply_train(discriminator, d_params, state.d_stats, real)
            fake_logits, stats = _apply_train(discriminator, d_params, stats, fake)
            loss = d_loss_fn(real_logits, fake_logits)
            penalty = jnp.zeros(())
            if use_penalty:
                eps = per_example_noise(jax.random.uniform, gp_key, (b // m,))
                critic = lambda x: _apply_train(discriminator, d_params, stats, x)[0]  # noqa: E731
                penalty = objectives.gradient_penalty(
                    critic, real, fake, eps, weight=config.gan.gp_weight
                )
            return loss + penalty, (stats, loss, penalty, real_logits, fake_logits)

        grads, (d_stats, loss, penalty, real_logits, fake_logits) = jax.grad(loss_fn, has_aux=True)(
            state.d_params
        )
        d_params, d_opt_state, (d_stats, g_stats), ok = apply_if_finite(
            d_tx,
            device_mean(grads),
            device_mean(loss + penalty),
            state.d_params,
            state.d_opt_state,
            (d_stats, g_stats),
            (state.d_stats, state.g_stats),
        )
        state = state.replace(
            d_params=d_params, d_opt_state=d_opt_state, d_stats=d_stats, g_stats=g_stats
        )
        metrics = {
            "d_loss": loss,
            "gradient_penalty": penalty,
            "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),
            "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),
        }
        return state, (metrics, (~ok).astype(jnp.int32))

    def generator_update(state: GANState, key, b):
        z = latents(key, b)

        def loss_fn(g_params):
            fake, g_stats = _apply_train(generator, g_params, state.g_stats, z)
            fake_logits, d_stats = _apply_train(
                discriminator, state.d_params, state.d_stats, pack(fake, m)
            )
            return g_loss_fn(fake_logits), (g_stats, d_stats)

        (loss, (g_stats, d_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.g_params
        )
        g_params, g_opt_state, (g_stats, d_stats), ok = apply_if_finite(
            g_tx,
            device_mean(grads),
            device_mean(loss),
            state.g_params,
            state.g_opt_state,
            (g_stats, d_stats),
            (state.g_stats, state.d_stats),
        )
        state = state.replace(
            g_params=g_params, g_opt_state=g_opt_state, g_stats=g_stats, d_stats=d_stats
        )
        return state, ({"g_loss": loss}, (~ok).astype(jnp.int32))

    def step(state: GANState, batch: dict, key) -> tuple[GANState, dict]:
        reals = to_model_input(batch, "gan")  # (n_critic, b, ...)
        d_keys = jax.random.split(jax.random.fold_in(key, 0), config.gan.n_critic)

        def critic_body(state, inputs):
            real, k = inputs
            return discriminator_update(state, real, k)

        state, (d_metrics, d_skipped) = lax.scan(critic_body, state, (reals, d_keys))
        key = jax.random.fold_in(key, 1)
        state, (g_metrics, g_skipped) = generator_update(state, key, reals.shape[1])
        metrics = device_mean({k: v[-1] for k, v in d_metrics.items()} | g_metrics)
        skipped = jnp.sum(d_skipped) + g_skipped
        return state.replace(step=state.step + 1), metrics | {SKIPPED: skipped}

    return step


# --------------------------------------------------------------------------- VAE


def vae_optimizer(config) -> optax.GradientTransformation:
    return _optimizer(config, config.optim.lr)


def init_vae_state(config, models, data_shape, key) -> VAEState:
    encoder, decoder = models
    e_key, d_key = jax.random.split(key)
    e_params, e_stats = _init(encoder, e_key, jnp.zeros((1, *data_shape)))
    z, x = jnp.zeros((1, config.model.z_dim)), jnp.zeros((1, *data_shape))
    d_params, d_stats = _init(decoder, d_key, *decoder_inputs(decoder, z, x))
    params = {"encoder": e_params, "decoder": d_params}
    return VAEState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats={"encoder": e_stats, "decoder": d_stats},
        opt_state=vae_optimizer(config).init(params),
    )


def vae_input(batch: dict, config, key) -> jax.Array:
    """[0, 1] images, dynamically binarised (a fresh Bernoulli draw per step) when asked."""
    x = to_model_input(batch, "vae")
    if config.vae.binarize and config.vae.likelihood == "bernoulli":
        (rows,) = objectives.as_rows(x)  # faster on XLA:CPU; the same bits as in x's shape
        u = per_example_noise(jax.random.uniform, key, rows.shape)
        x = (u < rows).astype(jnp.float32).reshape(x.shape)
    return x


def make_vae_step(config, models) -> Callable:
    """One update of the negative ELBO (Kingma & Welling 2013, eq. 10), analytic KL."""
    encoder, decoder = models
    tx = vae_optimizer(config)

    def step(state: VAEState, batch: dict, key) -> tuple[VAEState, dict]:
        bin_key, z_key = jax.random.split(key)
        x = vae_input({k: v[0] for k, v in batch.items()}, config, bin_key)

        def loss_fn(params):
            (mean, logvar), e_stats = _apply_train(
                encoder, params["encoder"], state.batch_stats["encoder"], x
            )
            eps = per_example_noise(jax.random.normal, z_key, mean.shape)
            z = mean + jnp.exp(0.5 * logvar) * eps
            inputs = decoder_inputs(decoder, z, x)
            d_vars = (params["decoder"], state.batch_stats["decoder"])
            out, d_stats = _apply_train(decoder, *d_vars, *inputs)
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


INIT_STATE = {"gan": init_gan_state, "vae": init_vae_state}
# Besides METRICS, every step returns SKIPPED: the updates it did not apply (int32).
SKIPPED = "skipped"
# The metrics each family's step returns (checked when a step is traced).
METRICS = {
    "gan": ("d_fake", "d_loss", "d_real", "g_loss", "gradient_penalty"),
    "vae": ("kl", "loss", "recon"),
}
MAKE_STEP = {"gan": make_gan_step, "vae": make_vae_step}


def data_per_step(config, family: str) -> int:
    """Real batches one train step consumes: n_critic for GANs, 1 for VAEs."""
    return config.gan.n_critic if family == "gan" else 1


# ------------------------------------------------------------ non-finite guard


@struct.dataclass
class TrainState:
    """The model's state plus the loop's guard against non-finite updates."""

    model: Any  # GANState | VAEState
    skipped: jax.Array  # updates skipped because a loss or gradient was not finite
    nonfinite_step: jax.Array  # the first such step, -1 if none
    nonfinite_values: jax.Array  # the metrics (METRICS order) at that step


def new_train_state(model_state, family: str) -> TrainState:
    return TrainState(
        model=model_state,
        skipped=jnp.zeros((), jnp.int32),
        nonfinite_step=jnp.full((), -1, jnp.int32),
        nonfinite_values=jnp.zeros((len(METRICS[family]),), jnp.float32),
    )


def guard_nonfinite(step: Callable, family: str) -> Callable:
    """Wraps a model step with the loop's record of non-finite updates.

    The step itself never applies an update whose loss or gradients are not finite
    (`apply_if_finite`); this wrapper counts the skipped updates and records the first step
    that had one, with its metrics, for the loop: under nonfinite='stop' train.py raises
    Diverged at the next log or checkpoint step, before saving, so the newest checkpoint is
    the last good one; under 'skip' it goes on (vdvae's remedy). A finite gradient that the
    optimiser turns into a non-finite parameter (an absurd learning rate) shows one step
    later, as a non-finite loss.
    """
    names = METRICS[family]

    def guarded(ts: TrainState, batch, key):
        model, metrics = step(ts.model, batch, key)
        metrics = dict(metrics)
        skipped = metrics.pop(SKIPPED)
        assert tuple(sorted(metrics)) == names, (sorted(metrics), names)
        first = (skipped > 0) & (ts.nonfinite_step < 0)
        values = jnp.stack([jnp.asarray(metrics[k], jnp.float32) for k in names])
        ts = TrainState(
            model=model,
            skipped=ts.skipped + skipped,
            nonfinite_step=jnp.where(first, ts.model.step, ts.nonfinite_step),
            nonfinite_values=jnp.where(first, values, ts.nonfinite_values),
        )
        return ts, metrics | {"skipped_updates": ts.skipped}

    return guarded
