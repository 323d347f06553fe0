"""Training objectives as pure functions of logits and arrays, in float32.

Adversarial losses come in discriminator/generator pairs (StudioGAN style), penalties beside
them; the VAE terms are per example so callers choose how to reduce. Logits enter through
`log_sigmoid` / `softplus`, never `log(sigmoid(.))`, so they stay finite at any magnitude.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2 * math.pi)


def _f32(*arrays):
    return tuple(jnp.asarray(a, jnp.float32) for a in arrays)


def _sum_per_example(x):
    """Sums every axis but the first (the batch)."""
    return jnp.sum(x, axis=tuple(range(1, x.ndim)))


def as_rows(*arrays):
    """Each (B, ...) array as (B, D), one row per example: the per-pixel terms of an image
    likelihood are computed on rows. XLA:CPU's loop fusions vectorise along the last axis, and
    a (B, H, W, 1) image's channel axis of 1 left them scalar, several times slower per pixel
    (jax 0.10.2; `python benchmarks/layers.py`, its likelihood rows); the values are the same."""
    return tuple(a.reshape(a.shape[0], -1) for a in arrays)


# --- Adversarial losses --------------------------------------------------------------------


def discriminator_loss(real_logits, fake_logits):
    """-E[log D(x)] - E[log(1 - D(G(z)))], D = sigmoid(logits) (Goodfellow et al. 2014, eq. 1).

    -log sigmoid(l) = softplus(-l) and -log(1 - sigmoid(l)) = softplus(l).
    """
    real_logits, fake_logits = _f32(real_logits, fake_logits)
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def generator_loss_nonsaturating(fake_logits):
    """-E[log D(G(z))]: the non-saturating generator loss (Goodfellow et al. 2014, sec. 3)."""
    (fake_logits,) = _f32(fake_logits)
    return jnp.mean(-jax.nn.log_sigmoid(fake_logits))


def generator_loss_minimax(fake_logits):
    """E[log(1 - D(G(z)))]: the generator's side of the minimax game (Goodfellow 2014, eq. 1)."""
    (fake_logits,) = _f32(fake_logits)
    return jnp.mean(jax.nn.log_sigmoid(-fake_logits))


def hinge_discriminator_loss(real_logits, fake_logits):
    """E[relu(1 - D(x))] + E[relu(1 + D(G(z)))] (Lim & Ye 2017; Miyato et al. 2018)."""
    real_logits, fake_logits = _f32(real_logits, fake_logits)
    return jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits))


def hinge_generator_loss(fake_logits):
    """-E[D(G(z))]: the hinge GAN's generator loss (Lim & Ye 2017; Miyato et al. 2018)."""
    (fake_logits,) = _f32(fake_logits)
    return -jnp.mean(fake_logits)


def wasserstein_critic_loss(real_logits, fake_logits):
    """E[f(G(z))] - E[f(x)]: the negated Wasserstein-1 estimate (Arjovsky et al. 2017, sec. 3)."""
    real_logits, fake_logits = _f32(real_logits, fake_logits)
    return jnp.mean(fake_logits) - jnp.mean(real_logits)


def wasserstein_generator_loss(fake_logits):
    """-E[f(G(z))]: the WGAN generator loss (Arjovsky et al. 2017, algorithm 1)."""
    (fake_logits,) = _f32(fake_logits)
    return -jnp.mean(fake_logits)


def lsgan_discriminator_loss(real_logits, fake_logits):
    """1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2]: the least-squares GAN's discriminator loss with
    the 0-1 coding a = 0 (fake), b = 1 (real) (Mao et al. 2017, eq. 9). D is the raw score."""
    real_logits, fake_logits = _f32(real_logits, fake_logits)
    return 0.5 * jnp.mean(jnp.square(real_logits - 1.0)) + 0.5 * jnp.mean(jnp.square(fake_logits))


def lsgan_generator_loss(fake_logits):
    """1/2 E[(D(G(z)) - 1)^2]: the least-squares GAN's generator loss with c = 1, the label G
    wants D to give its samples (Mao et al. 2017, eq. 9)."""
    (fake_logits,) = _f32(fake_logits)
    return 0.5 * jnp.mean(jnp.square(fake_logits - 1.0))


def gradient_penalty(critic_fn: Callable, real, fake, eps, weight: float = 10.0):
    """weight * E[(||grad f(x_hat)||_2 - 1)^2] on random interpolates (Gulrajani 2017, eq. 3).

    x_hat = eps * real + (1 - eps) * fake, with `eps` (B,) ~ U[0, 1] one per example, given
    by the caller so a data-parallel step can draw them for the global batch. `critic_fn`
    maps x (B, ...) -> logits (B,) with examples independent (no batch statistics). The
    norm adds 1e-12 under the root so its gradient stays finite at zero.
    """
    real, fake = _f32(real, fake)
    eps = jnp.asarray(eps, jnp.float32).reshape((real.shape[0],) + (1,) * (real.ndim - 1))
    x_hat = eps * real + (1.0 - eps) * fake
    grads = jax.grad(lambda x: jnp.sum(jnp.asarray(critic_fn(x), jnp.float32)))(x_hat)
    norms = jnp.sqrt(_sum_per_example(jnp.square(grads)) + 1e-12)
    return weight * jnp.mean(jnp.square(norms - 1.0))


def r1_penalty(critic_fn: Callable, real, weight: float):
    """weight / 2 * E[||grad_x D(x)||^2] at real x: the R1 penalty (Mescheder et al. 2018, eq. 9).

    D(x) is the discriminator's logit. `critic_fn` maps x (B, ...) -> logits (B,). The
    per-example gradients are one `jax.grad` of sum_b D(x_b): d/dx_b sum_b' D(x_b') = grad D(x_b)
    only when each logit depends on its own example alone, so the discriminator must have no
    batch statistics (batch norm in training mode mixes the examples).
    """
    (real,) = _f32(real)
    grads = jax.grad(lambda x: jnp.sum(jnp.asarray(critic_fn(x), jnp.float32)))(real)
    return 0.5 * weight * jnp.mean(_sum_per_example(jnp.square(grads)))


ADVERSARIAL_LOSSES: dict[str, tuple[Callable, Callable]] = {
    "nonsaturating": (discriminator_loss, generator_loss_nonsaturating),
    "minimax": (discriminator_loss, generator_loss_minimax),
    "hinge": (hinge_discriminator_loss, hinge_generator_loss),
    "wgan_gp": (wasserstein_critic_loss, wasserstein_generator_loss),  # + gradient_penalty
    "lsgan": (lsgan_discriminator_loss, lsgan_generator_loss),
}


# --- VAE ------------------------------------------------------------------------------------


def gaussian_kl(mean, logvar):
    """KL(N(mean, exp(logvar)) || N(0, I)) per example (Kingma & Welling 2013, appendix B).

    = 1/2 sum_j (exp(logvar_j) + mean_j^2 - 1 - logvar_j), summed over the latent dims.
    """
    mean, logvar = _f32(mean, logvar)
    return 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar, axis=-1)


def bernoulli_log_likelihood(logits, x):
    """log Bernoulli(x; sigmoid(logits)) summed per example; x in [0, 1] (Kingma 2013, C.1).

    x log sigmoid(l) + (1 - x) log sigmoid(-l) = x l - softplus(l) (one transcendental, not
    two): exact for binary x, the usual cross-entropy for grey levels.
    """
    logits, x = as_rows(*_f32(logits, x))
    return jnp.sum(x * logits - jax.nn.softplus(logits), axis=1)


def gaussian_log_likelihood(out, x):
    """log N(x; mean, exp(log_std)^2) summed per example (Kingma & Welling 2013, C.2).

    `out` is the decoder output (B, H, W, 2C): channels [:C] the mean, [C:] the log-std.
    """
    out, x = _f32(out, x)
    channels = x.shape[-1]
    if out.shape[-1] != 2 * channels:
        raise ValueError(f"gaussian decoder output needs {2 * channels} channels, got {out.shape}")
    mean, log_std, x = as_rows(out[..., :channels], out[..., channels:], x)
    z = (x - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * jnp.square(z) - log_std - 0.5 * LOG_2PI, axis=1)


LOG_LIKELIHOODS = {"bernoulli": bernoulli_log_likelihood, "gaussian": gaussian_log_likelihood}


def log_likelihood(out, x, likelihood: str, weights=None):
    """log p(x|z) per example from the decoder output, by likelihood name; with `weights`
    (B, H, W, 1), for a likelihood that factorises over pixels, the sum of each pixel's term
    times its weight (0/1 weights: the log-likelihood of the pixels marked 1 alone). Each pixel
    is then scored as an example of its own."""
    if likelihood not in LOG_LIKELIHOODS:
        raise ValueError(f"likelihood={likelihood!r}; valid: {', '.join(LOG_LIKELIHOODS)}")
    if weights is None:
        return LOG_LIKELIHOODS[likelihood](out, x)
    b, h, w = x.shape[:3]
    pixels = LOG_LIKELIHOODS[likelihood](
        out.reshape(b * h * w, 1, 1, -1), x.reshape(b * h * w, 1, 1, -1)
    )
    return jnp.sum(pixels.reshape(b, h, w) * weights[..., 0], axis=(1, 2))


def likelihood_mean(out, likelihood: str):
    """The mean of p(x|z) from the decoder output, clipped to [0, 1]: Bernoulli probabilities,
    or the location channels of the Gaussian and the discretised logistic."""
    if likelihood in ("gaussian", "discretized_logistic"):
        return jnp.clip(out[..., : out.shape[-1] // 2], 0.0, 1.0)
    return jax.nn.sigmoid(out)


def negative_elbo(
    decoder_out, x, mean, logvar, *, likelihood: str = "bernoulli", beta=1.0, weights=None
):
    """-ELBO = -log p(x|z) + beta * KL(q(z|x) || p(z)) per example (Kingma & Welling 2013, eq. 10).

    The KL is analytic; z is the one reparameterised sample that produced `decoder_out`;
    beta != 1 is the beta-VAE (Higgins et al. 2017); `weights` (B, H, W, 1) score only the
    pixels they mark (log_likelihood). Returns (negative ELBO, -log p(x|z), KL), each (B,).
    """
    reconstruction = -log_likelihood(decoder_out, x, likelihood, weights)
    kl = gaussian_kl(mean, logvar)
    return reconstruction + beta * kl, reconstruction, kl


def diagonal_gaussian_log_density(z, mean, logvar):
    """log N(z; mean, diag(exp(logvar))), summed over the last axis."""
    return -0.5 * jnp.sum(LOG_2PI + logvar + jnp.square(z - mean) * jnp.exp(-logvar), axis=-1)


def log_importance_weights(decoder_out, x, z, mean, logvar, *, likelihood: str):
    """log p(x|z) + log N(z; 0, I) - log q(z|x) per example: the log weight of one z ~ q(z|x).

    Its expectation under q is the ELBO; its log-mean-exp over k draws is the IWAE bound.
    """
    z, mean, logvar = _f32(z, mean, logvar)
    log_prior = diagonal_gaussian_log_density(z, jnp.zeros_like(z), jnp.zeros_like(z))
    log_posterior = diagonal_gaussian_log_density(z, mean, logvar)
    return log_likelihood(decoder_out, x, likelihood) + log_prior - log_posterior


def iwae_bound(log_weights):
    """log (1/k) sum_i w_i per example, from log weights (k, B) (Burda et al. 2016, sec. 3)."""
    (log_weights,) = _f32(log_weights)
    return jax.nn.logsumexp(log_weights, axis=0) - math.log(log_weights.shape[0])


def iwae_objective(decode: Callable, x, mean, logvar, eps, *, likelihood: str):
    """The IWAE's training loss, -log (1/k) sum_i w_i per example (Burda et al. 2016, eq. 8),
    with z_i = mean + exp(logvar / 2) * eps_i reparameterised; returns (the loss (B,),
    log p(x | z_i) (B, k)).

    eps (B, k, Z); decode(z, x) maps z (B * k, Z) and x repeated k times (B * k, ...) to the
    decoder's output. The gradient is autodiff's: sum_i w~_i grad log w_i with the normalised
    weights w~_i = w_i / sum_j w_j (eq. 14), which no stop_gradient may cut."""
    x, mean, logvar, eps = _f32(x, mean, logvar, eps)
    b, k, z_dim = eps.shape
    z = (mean[:, None] + jnp.exp(0.5 * logvar)[:, None] * eps).reshape(b * k, z_dim)
    x_k, mean_k, logvar_k = (jnp.repeat(a, k, axis=0) for a in (x, mean, logvar))
    out = decode(z, x_k)
    log_px_z = log_likelihood(out, x_k, likelihood)
    log_prior = diagonal_gaussian_log_density(z, jnp.zeros_like(z), jnp.zeros_like(z))
    log_w = log_px_z + log_prior - diagonal_gaussian_log_density(z, mean_k, logvar_k)
    return -iwae_bound(log_w.reshape(b, k).T), log_px_z.reshape(b, k)


# --- Against posterior collapse (shared by the image and text VAEs) --------------------------


def kl_weight(step, *, beta=1.0, warmup_steps: int = 0, cycles: int = 0, num_steps: int = 1):
    """The KL's weight at a (0-based) step: beta, reached by a linear warm-up or cycles.

    warmup_steps > 0: beta * min(1, step / warmup_steps), KL annealing (Bowman et al. 2016,
    sec. 3.1). cycles = M > 0: cyclical annealing (Fu et al. 2019, eq. 6, R = 1/2): the run's
    num_steps are cut into M cycles of T / M steps, and in each the weight rises linearly from
    0 to beta over the first half, then stays at beta; cycles override warmup_steps.
    """
    step = jnp.asarray(step, jnp.float32)
    if cycles > 0:
        period = max(num_steps / cycles, 1.0)
        tau = jnp.mod(step, period) / period
        return beta * jnp.minimum(1.0, tau / 0.5)
    if warmup_steps > 0:
        return beta * jnp.minimum(1.0, step / warmup_steps)
    return jnp.asarray(beta, jnp.float32)


def gaussian_kl_per_dim(mean, logvar):
    """KL(N(mean, exp(logvar)) || N(0, 1)) per example and latent dimension, (B, Z)."""
    mean, logvar = _f32(mean, logvar)
    return 0.5 * (jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar)


def free_bits_kl(kl_dims, free_bits: float, batch_mean=None):
    """sum_j max(free_bits, E_batch[KL_j]): the KL term with free bits per latent dimension
    (Kingma et al. 2016, sec. C.8 / eq. 15, one group per dimension), in nats.

    `kl_dims` (B, Z) are per-example, per-dimension KLs. A dimension whose batch-mean KL is
    below `free_bits` costs the constant free_bits and gets no gradient. `batch_mean` (Z,)
    decides which dimensions are clamped (default: kl_dims' own mean); a data-parallel step
    passes the global batch's mean, so that a step on N devices equals one on a single device.
    """
    (kl_dims,) = _f32(kl_dims)
    local = jnp.mean(kl_dims, axis=0)
    reference = local if batch_mean is None else jax.lax.stop_gradient(batch_mean)
    return jnp.sum(jnp.where(reference > free_bits, local, free_bits))


def categorical_log_likelihood(logits, targets, mask):
    """sum_t mask_t log softmax(logits_t)[targets_t] per sequence: log p(x|z) of a sequence
    decoder, (B,). logits (B, T, V), targets (B, T) int, mask (B, T) (1 = a real token)."""
    (logits,) = _f32(logits)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)
    return jnp.sum(picked[..., 0] * jnp.asarray(mask, jnp.float32), axis=-1)


# --- 8-bit images ---------------------------------------------------------------------------


def discretized_logistic_log_likelihood(out, x, levels: int = 256):
    """log P(x) summed per example for 8-bit pixels x in [0, 1] (on the grid k / 255) under a
    discretised logistic: the mass of the pixel's bin of width 1/255 (Salimans et al. 2017,
    PixelCNN++, eq. 2, one mixture component).

    P(x) = sigmoid((x + h - mu) / s) - sigmoid((x - h - mu) / s), h = 1 / (2 * 255), except
    that the bin of 0 reaches down to -inf and that of 1 up to +inf, so the 256 masses sum to
    1: a probability, not a density, whose -log is directly bits per dimension after / ln 2.
    `out` is the decoder output (B, H, W, 2C): channels [:C] mu, [C:] log s (floored at -7,
    as in PixelCNN++). Where the bin's mass underflows (< 1e-5) its log is the density at the
    bin's centre times the bin width, as in PixelCNN++'s code.
    """
    out, x = _f32(out, x)
    channels = x.shape[-1]
    if out.shape[-1] != 2 * channels:
        raise ValueError(
            f"discretized_logistic decoder output needs {2 * channels} channels, got {out.shape}"
        )
    mean, log_scale, x = as_rows(out[..., :channels], out[..., channels:], x)
    log_scale = jnp.maximum(log_scale, -7.0)
    half = 0.5 / (levels - 1)
    inv_scale = jnp.exp(-log_scale)
    plus = inv_scale * (x - mean + half)
    minus = inv_scale * (x - mean - half)
    log_cdf_plus = plus - jax.nn.softplus(plus)  # log sigmoid(plus): the bin of 0
    log_survival_minus = -jax.nn.softplus(minus)  # log (1 - sigmoid(minus)): the bin of 1
    mass = jax.nn.sigmoid(plus) - jax.nn.sigmoid(minus)
    centre = inv_scale * (x - mean)
    log_density = centre - log_scale - 2.0 * jax.nn.softplus(centre)
    log_mid = jnp.where(
        mass > 1e-5, jnp.log(jnp.maximum(mass, 1e-12)), log_density + math.log(2 * half)
    )
    log_p = jnp.where(
        x < half, log_cdf_plus, jnp.where(x > 1.0 - half, log_survival_minus, log_mid)
    )
    return jnp.sum(log_p, axis=1)


LOG_LIKELIHOODS["discretized_logistic"] = discretized_logistic_log_likelihood
