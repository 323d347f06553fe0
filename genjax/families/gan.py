"""The GAN family (Goodfellow et al. 2014): a generator and a discriminator trained in turn.

One step is `gan.n_critic` discriminator updates, each on a fresh real batch (Gulrajani et
al. 2017, Algorithm 1), then one generator update. Images are scaled to [-1, 1]. Options:
an R1 penalty on real data, lazily every `gan.r1_every` steps (Mescheder et al. 2018; Karras
et al. 2020), DiffAugment of every discriminator input (Zhao et al. 2020), and an
exponential moving average of the generator's parameters for sampling and evaluation.
Discriminators take `update_stats` (see genjax.models.gan): statistics that only the
discriminator's own update may change (spectral norm's power iteration) are updated in its
real-data pass alone.

A class-conditional model (modules with `num_classes` > 0, e.g. `cdcgan`) reads the real
examples' classes from `batch['label']`; each generated example's class is drawn uniformly, and
G and D both see it (Miyato & Koyama 2018).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax import lax

from genjax import augment, objectives
from genjax import inpaint as inpainting
from genjax.config import ConfigError
from genjax.data.kinds import LABEL
from genjax.families.base import Family
from genjax.parallel import device_mean, per_example_noise
from genjax.steps import SKIPPED, apply_if_finite, apply_train, init_variables, optimizer


@struct.dataclass
class GANState:
    step: jax.Array
    g_params: Any
    d_params: Any
    g_stats: Any
    d_stats: Any
    g_opt_state: Any
    d_opt_state: Any
    g_ema: Any = None  # the generator's params averaged over steps ({} when gan.ema_decay = 0)


# fold_in tags of the random streams that the options add to a step's keys
_AUGMENT_REAL, _AUGMENT_FAKE, _FAKE_CLASSES = 101, 102, 103


def gan_optimizers(config) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """(generator, discriminator) optimisers: the discriminator's at `gan.d_lr` when set."""
    d_lr = config.gan.d_lr or config.optim.lr
    return optimizer(config, config.optim.lr), optimizer(config, d_lr, config.gan.n_critic)


def pack(x: jax.Array, m: int) -> jax.Array:
    """PacGAN's packing (Lin et al. 2018): m consecutive examples concatenated along the last
    (feature or channel) axis, (B, ..., C) -> (B / m, ..., m * C); the identity for m = 1.
    B must be a multiple of m (GANFamily.check_batch refuses other batches up front)."""
    if m == 1:
        return x
    b, *rest, c = x.shape
    x = x.reshape(b // m, m, *rest, c)
    return jnp.moveaxis(x, 1, -2).reshape(b // m, *rest, m * c)


class GANFamily(Family):
    name = "gan"
    defaults = {
        "loss": "nonsaturating",  # nonsaturating | minimax | hinge | wgan_gp | lsgan
        "n_critic": 1,  # discriminator updates per generator update
        "gp_weight": 10.0,  # WGAN-GP lambda
        "pack": 1,  # PacGAN (Lin et al. 2018): D judges `pack` samples at once; 1 = plain GAN
        "d_lr": 0.0,  # discriminator learning rate; 0 = optim.lr
        "r1_weight": 0.0,  # gamma of the R1 penalty on real data (Mescheder et al. 2018); 0 = off
        "r1_every": 1,  # lazy R1: on the steps that are multiples of this, weight x r1_every
        "ema_decay": 0.0,  # EMA of G's params, used to sample and evaluate; 0 = off
        "augment": "",  # DiffAugment policy of D's inputs, e.g. 'color,translation,cutout'
    }
    metrics = ("d_fake", "d_loss", "d_real", "g_loss", "gradient_penalty")
    value_range = (-1.0, 1.0)
    modes = frozenset({"interpolate", "inpaint"})

    def check(self, config) -> None:
        g = config.gan
        if g.loss not in objectives.ADVERSARIAL_LOSSES:
            valid = ", ".join(objectives.ADVERSARIAL_LOSSES)
            raise ConfigError(f"config.gan.loss={g.loss!r}; valid: {valid}")
        for key in ("n_critic", "pack"):
            if g[key] < 1:
                raise ConfigError(f"config.gan.{key} must be >= 1, got {g[key]}")
        for key in ("gp_weight", "d_lr", "r1_weight"):
            if g[key] < 0:
                raise ConfigError(f"config.gan.{key} must be >= 0, got {g[key]}")
        if g.r1_every < 1:
            raise ConfigError(f"config.gan.r1_every must be >= 1, got {g.r1_every}")
        if not 0.0 <= g.ema_decay < 1.0:
            raise ConfigError(
                f"config.gan.ema_decay must be in [0, 1) (0 = off), got {g.ema_decay}"
            )
        augment.parse_policy(g.augment)

    def check_data(self, config, kind, data_shape) -> None:
        if config.gan.augment and len(data_shape) != 3:
            raise ConfigError(
                f"config.gan.augment={config.gan.augment!r} is for images (H, W, C); this data "
                f"is {kind.name} {data_shape}: set it to ''"
            )

    def check_batch(self, config, local_batch: int) -> None:
        if local_batch % config.gan.pack:
            raise ConfigError(
                f"config.gan.pack={config.gan.pack} does not divide the per-device batch of "
                f"{local_batch} (config.batch_size={config.batch_size} over the devices); use "
                f"a batch_size that is a multiple of pack x devices"
            )

    def data_per_step(self, config) -> int:
        return config.gan.n_critic

    def latent_dim(self, config) -> int:
        return config.model.z_dim

    def init_state(self, config, models, kind, data_shape, key) -> GANState:
        generator, discriminator = models
        g_tx, d_tx = gan_optimizers(config)
        g_key, d_key = jax.random.split(key)
        labels = {"labels": jnp.zeros((1,), jnp.int32)} if self.num_classes(models) else {}
        z = jnp.zeros((1, config.model.z_dim))
        g_params, g_stats = init_variables(generator, g_key, z, **labels)
        packed_shape = (*data_shape[:-1], config.gan.pack * data_shape[-1])
        x = jnp.zeros((1, *packed_shape))
        d_params, d_stats = init_variables(discriminator, d_key, x, **labels)
        return GANState(
            step=jnp.zeros((), jnp.int32),
            g_params=g_params,
            d_params=d_params,
            g_stats=g_stats,
            d_stats=d_stats,
            g_opt_state=g_tx.init(g_params),
            d_opt_state=d_tx.init(d_params),
            g_ema=g_params if config.gan.ema_decay > 0 else {},
        )

    def network_params(self, state: GANState) -> tuple:
        return state.g_params, state.d_params

    def make_step(self, config, models, kind) -> Callable:
        """One GAN step: `n_critic` discriminator updates, then one generator update.

        With gan.pack = m the discriminator judges packs of m real or m generated examples
        (PacGAN); the losses average over packs.
        """
        generator, discriminator = models
        g = config.gan
        m = g.pack
        g_tx, d_tx = gan_optimizers(config)
        d_loss_fn, g_loss_fn = objectives.ADVERSARIAL_LOSSES[g.loss]
        use_penalty = g.loss == "wgan_gp"
        z_dim = config.model.z_dim
        policy = augment.parse_policy(g.augment)
        n_critic = g.n_critic
        num_classes = self.num_classes(models)

        def latents(key, b):
            return per_example_noise(jax.random.normal, key, (b, z_dim))

        def fake_classes(key, b) -> dict:
            """{} for an unconditional model, else {'labels': classes drawn uniformly per
            example}: the keyword arguments of its modules."""
            if not num_classes:
                return {}
            draw = functools.partial(jax.random.randint, minval=0, maxval=num_classes)
            return {"labels": per_example_noise(draw, jax.random.fold_in(key, _FAKE_CLASSES), (b,))}

        def augmented(x, key):
            """DiffAugment of a batch, with values drawn for the global batch (per example)."""
            if not policy:
                return x
            draw = lambda k, shape: augment.draw(k, shape[0], x.shape[1:], policy)  # noqa: E731
            return augment.apply(x, per_example_noise(draw, key, (x.shape[0],)), policy)

        def discriminator_update(state: GANState, real, real_y: dict, key):
            z_key, gp_key = jax.random.split(key)
            b = real.shape[0]
            g_vars = (state.g_params, state.g_stats)
            fake_y = fake_classes(z_key, b)
            fake, g_stats = apply_train(generator, *g_vars, latents(z_key, b), **fake_y)
            fake = pack(
                augmented(lax.stop_gradient(fake), jax.random.fold_in(key, _AUGMENT_FAKE)), m
            )
            real = pack(augmented(real, jax.random.fold_in(key, _AUGMENT_REAL)), m)

            def loss_fn(d_params, r1_weight=0.0):
                real_logits, stats = apply_train(
                    discriminator, d_params, state.d_stats, real, **real_y
                )
                fake_logits, stats = apply_train(
                    discriminator, d_params, stats, fake, **fake_y, update_stats=False
                )
                loss = d_loss_fn(real_logits, fake_logits)

                def critic(x):  # the penalties' critic: of the real classes
                    return apply_train(
                        discriminator, d_params, stats, x, **real_y, update_stats=False
                    )[0]

                penalty = jnp.zeros(())
                if use_penalty:
                    eps = per_example_noise(jax.random.uniform, gp_key, (b // m,))
                    penalty = objectives.gradient_penalty(
                        critic, real, fake, eps, weight=g.gp_weight
                    )
                if r1_weight:
                    penalty = penalty + objectives.r1_penalty(critic, real, r1_weight)
                return loss + penalty, (stats, loss, penalty, real_logits, fake_logits)

            def gradients(r1_weight):
                return jax.grad(functools.partial(loss_fn, r1_weight=r1_weight), has_aux=True)

            if not g.r1_weight:
                grads, aux = gradients(0.0)(state.d_params)
            elif g.r1_every == 1:
                grads, aux = gradients(g.r1_weight)(state.d_params)
            else:  # lazy regularisation: the penalty every r1_every steps, r1_every times as heavy
                lazy = gradients(g.r1_weight * g.r1_every)
                due = state.step % g.r1_every == 0
                grads, aux = lax.cond(due, lazy, gradients(0.0), state.d_params)
            d_stats, loss, penalty, real_logits, fake_logits = aux
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
            fake_y = fake_classes(key, b)
            augment_key = jax.random.fold_in(key, _AUGMENT_FAKE)

            def loss_fn(g_params):
                fake, g_stats = apply_train(generator, g_params, state.g_stats, z, **fake_y)
                fake = pack(augmented(fake, augment_key), m)
                fake_logits, d_stats = apply_train(
                    discriminator, state.d_params, state.d_stats, fake, **fake_y, update_stats=False
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
            if g.ema_decay:
                decay = g.ema_decay
                g_ema = jax.tree.map(
                    lambda e, p: decay * e + (1 - decay) * p, state.g_ema, g_params
                )
                state = state.replace(g_ema=g_ema)
            return state, ({"g_loss": loss}, (~ok).astype(jnp.int32))

        def step(state: GANState, batch: dict, key) -> tuple[GANState, dict]:
            reals = kind.model_input(batch, self.value_range)  # (n_critic, b, ...)
            real_ys = {"labels": batch[LABEL].astype(jnp.int32)} if num_classes else {}
            d_keys = jax.random.split(jax.random.fold_in(key, 0), n_critic)

            def critic_body(state, inputs):
                real, real_y, k = inputs
                return discriminator_update(state, real, real_y, k)

            state, (d_metrics, d_skipped) = lax.scan(critic_body, state, (reals, real_ys, d_keys))
            key = jax.random.fold_in(key, 1)
            state, (g_metrics, g_skipped) = generator_update(state, key, reals.shape[1])
            metrics = device_mean({k: v[-1] for k, v in d_metrics.items()} | g_metrics)
            skipped = jnp.sum(d_skipped) + g_skipped
            return state.replace(step=state.step + 1), metrics | {SKIPPED: skipped}

        return step

    def decode(self, config, models, state, z, key, labels=None):
        """The generator's output (of classes `labels` for a class-conditional model); with
        gan.ema_decay > 0, that of its averaged params."""
        params = state.g_ema if config.gan.ema_decay else state.g_params
        variables = {"params": params, "batch_stats": state.g_stats}
        classes = {"labels": labels} if self.num_classes(models) else {}
        return models[0].apply(variables, z, **classes, train=False)

    def inpaint(self, config, models, state, x, mask, key, num_fills=1, labels=None):
        """Fills by latent optimisation (Yeh et al. 2017; genjax.inpaint.latent_optimisation):
        each fill's z, drawn from `key`, minimises the contextual loss plus lambda times the
        GAN's own generator loss of D(G(z)) as the prior loss (the discriminator in eval mode,
        a packing discriminator shown `pack` copies of each image)."""
        b = x.shape[0]
        x_f, mask_f = (jnp.repeat(a, num_fills, axis=0) for a in (x, mask))
        n = b * num_fills
        conditional = self.num_classes(models) > 0
        classes = {"labels": jnp.repeat(labels, num_fills)} if conditional else {}
        _, g_loss_fn = objectives.ADVERSARIAL_LOSSES[config.gan.loss]
        d_vars = {"params": state.d_params, "batch_stats": state.d_stats}
        m = config.gan.pack

        def generate(z):
            return self.decode(config, models, state, z, None, classes.get("labels"))

        def prior_loss(fake):
            packed = pack(jnp.repeat(fake, m, axis=0), m)
            logits = models[1].apply(d_vars, packed, **classes, train=False)
            # per example: the batch-mean generator loss of each one's logit on its own
            return jax.vmap(lambda logit: g_loss_fn(logit[None]))(logits.reshape(n))

        z0 = jax.random.normal(key, (n, self.latent_dim(config)))
        z = inpainting.latent_optimisation(generate, prior_loss, x_f, mask_f, z0)
        fills = inpainting.keep_known(generate(z), x_f, mask_f)
        return fills.reshape(b, num_fills, *x.shape[1:])


GAN = GANFamily()
