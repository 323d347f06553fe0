"""Objectives against hand values, closed forms, scipy and Monte Carlo estimates."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from genjax import objectives


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def close(actual, expected, tol=1e-5):
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=tol, atol=tol)


# --- Adversarial losses --------------------------------------------------------------------


def test_discriminator_loss_hand_value():
    expected = 0.5 * (-math.log(sigmoid(2.0)) - math.log(sigmoid(0.5))) + 0.5 * (
        -math.log(1 - sigmoid(-1.0)) - math.log(1 - sigmoid(3.0))
    )
    close(objectives.discriminator_loss(jnp.array([2.0, 0.5]), jnp.array([-1.0, 3.0])), expected)


def test_generator_losses_hand_values():
    fake = jnp.array([-1.0, 3.0])
    expected_ns = 0.5 * (-math.log(sigmoid(-1.0)) - math.log(sigmoid(3.0)))
    expected_mm = 0.5 * (math.log(1 - sigmoid(-1.0)) + math.log(1 - sigmoid(3.0)))
    close(objectives.generator_loss_nonsaturating(fake), expected_ns)
    close(objectives.generator_loss_minimax(fake), expected_mm)


def test_losses_finite_and_correct_at_extreme_logits():
    big = jnp.array([100.0, -100.0])
    # -log sigmoid(100) ~ 4e-44, -log sigmoid(-100) ~ 100; log(1 - sigmoid(l)) = -softplus(l).
    close(objectives.discriminator_loss(big, -big), 0.5 * 100 + 0.5 * 100, 1e-6)
    close(objectives.generator_loss_nonsaturating(big), 0.5 * 100, 1e-6)
    close(objectives.generator_loss_minimax(big), -0.5 * 100, 1e-6)
    for loss in (objectives.generator_loss_nonsaturating, objectives.generator_loss_minimax):
        assert np.all(np.isfinite(jax.grad(loss)(big)))
    assert np.all(np.isfinite(jax.grad(objectives.discriminator_loss)(big, -big)))


def test_minimax_saturates_where_nonsaturating_does_not():
    # Goodfellow 2014, sec. 3: when D confidently rejects fakes (logit -10), d/dl log(1 - D)
    # = -sigmoid(l) ~ -4.5e-5 vanishes while d/dl -log D = -sigmoid(-l) ~ -1 does not.
    fake = jnp.array([-10.0])
    grad_mm = float(jax.grad(objectives.generator_loss_minimax)(fake)[0])
    grad_ns = float(jax.grad(objectives.generator_loss_nonsaturating)(fake)[0])
    close(grad_mm, -sigmoid(-10.0), 1e-6)
    close(grad_ns, -sigmoid(10.0), 1e-6)
    # Both push the fake logit up; the minimax push is ~e^10 times weaker.
    assert grad_ns < -0.99 and -1e-4 < grad_mm < 0
    # At D(G(z)) = 1/2 the two losses differ by exactly log 2 each, in opposite directions.
    zero = jnp.zeros(3)
    close(objectives.generator_loss_nonsaturating(zero), math.log(2))
    close(objectives.generator_loss_minimax(zero), -math.log(2))


def test_hinge_and_wasserstein_hand_values():
    real, fake = jnp.array([0.5, 2.0]), jnp.array([-2.0, 0.3])
    # relu(1 - 0.5) = 0.5, relu(1 - 2) = 0; relu(1 - 2) = 0, relu(1 + 0.3) = 1.3
    close(objectives.hinge_discriminator_loss(real, fake), 0.25 + 0.65)
    close(objectives.hinge_generator_loss(fake), 0.85)
    close(objectives.wasserstein_critic_loss(real, fake), -0.85 - 1.25)
    close(objectives.wasserstein_generator_loss(fake), 0.85)


def test_adversarial_losses_table():
    """Each config.gan.loss name gives its paper's (D, G) pair, checked by value in float64."""
    names = {"nonsaturating", "minimax", "hinge", "wgan_gp", "lsgan"}
    assert set(objectives.ADVERSARIAL_LOSSES) == names
    r, f = np.array([1.5, -0.5, 3.0]), np.array([-2.0, 0.25, 1.0])
    log_d = lambda v: -np.log1p(np.exp(-v))  # noqa: E731 - log sigmoid(v) = log D
    log_1md = lambda v: -np.log1p(np.exp(v))  # noqa: E731 - log(1 - sigmoid(v)) = log(1 - D)
    bce_d = -log_d(r).mean() - log_1md(f).mean()
    expected = {
        "nonsaturating": (bce_d, -log_d(f).mean()),
        "minimax": (bce_d, log_1md(f).mean()),
        "hinge": (np.maximum(0, 1 - r).mean() + np.maximum(0, 1 + f).mean(), -f.mean()),
        "wgan_gp": (f.mean() - r.mean(), -f.mean()),
        # Mao et al. 2017, eq. 9 (a = 0, b = c = 1): hand-expanded sums of squares.
        "lsgan": (
            0.5 * np.mean((r - 1) ** 2) + 0.5 * np.mean(f**2),
            0.5 * np.mean((f - 1) ** 2),
        ),
    }
    for name, (d_loss, g_loss) in objectives.ADVERSARIAL_LOSSES.items():
        got = (float(d_loss(r, f)), float(g_loss(f)))
        np.testing.assert_allclose(got, expected[name], rtol=1e-6, err_msg=name)


def test_losses_are_float32_for_bfloat16_logits():
    logits = jnp.array([1.5, -0.5], jnp.bfloat16)
    for d_loss, g_loss in objectives.ADVERSARIAL_LOSSES.values():
        assert d_loss(logits, logits).dtype == jnp.float32
        assert g_loss(logits).dtype == jnp.float32


# --- Gradient penalty ----------------------------------------------------------------------


def penalty(critic, real, fake, eps, weight=10.0):
    """gradient_penalty, compiled once rather than dispatched op by op (faster on XLA:CPU)."""
    compiled = jax.jit(lambda *args: objectives.gradient_penalty(critic, *args))
    return compiled(real, fake, eps, weight)


def test_gradient_penalty_closed_form_quadratic_critic():
    # f(x) = sum(w * x^2) per example: grad = 2 w x. With real == fake, x_hat = real for any eps.
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 4, 2)).astype(np.float32)
    x = rng.normal(size=(3, 4, 4, 2)).astype(np.float32)
    critic = lambda v: jnp.sum(w * v**2, axis=(1, 2, 3))  # noqa: E731
    norms = np.sqrt(np.sum((2 * w * x).astype(np.float64) ** 2, axis=(1, 2, 3)))
    got = penalty(critic, x, x, np.full(3, 0.3, np.float32), weight=3.0)
    close(got, 3.0 * np.mean((norms - 1) ** 2), 1e-5)


def test_gradient_penalty_linear_critic_any_interpolate():
    # A linear critic's gradient is w everywhere: penalty = weight * (||w|| - 1)^2.
    w = np.full((4, 4, 2), 0.5, np.float32)  # ||w|| = sqrt(32 * 0.25) = 2*sqrt(2)
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(2, 5, 4, 4, 2)).astype(np.float32)
    critic = lambda v: jnp.sum(w * v, axis=(1, 2, 3))  # noqa: E731
    got = penalty(critic, real, fake, jax.random.uniform(jax.random.key(1), (5,)))
    close(got, 10.0 * (2 * math.sqrt(2) - 1) ** 2, 1e-5)


def test_gradient_penalty_differentiates_through_the_critic_parameters():
    # For f(x) = <w, x>: d/dw 10 (||w|| - 1)^2 = 20 (||w|| - 1) w / ||w|| (the train step's grad).
    w = np.arange(1.0, 7.0, dtype=np.float32).reshape(2, 3) / 10
    real, fake = np.ones((4, 2, 3), np.float32), np.zeros((4, 2, 3), np.float32)
    got = jax.jit(
        jax.grad(
            lambda w: objectives.gradient_penalty(
                lambda v: jnp.sum(w * v, axis=(1, 2)), real, fake, jnp.full((4,), 0.5)
            )
        )
    )(w)
    norm = np.linalg.norm(w)
    close(got, 20 * (norm - 1) * w / norm, 1e-5)


def test_gradient_penalty_interpolates_with_the_given_weights():
    # real = 1, fake = 0 (scalar examples) gives x_hat = eps; f(x) = x^2 / 2 has |grad| = eps,
    # so the penalty is exactly 10 * mean((eps - 1)^2).
    eps = np.array([0.0, 0.25, 0.5, 1.0], np.float32)
    critic = lambda v: 0.5 * v[:, 0] ** 2  # noqa: E731
    got = penalty(critic, np.ones((4, 1), np.float32), np.zeros((4, 1), np.float32), eps)
    close(got, 10.0 * np.mean((eps - 1.0) ** 2), 1e-6)


def test_gradient_penalty_matches_finite_differences():
    # Small nonlinear critic f(x) = tanh(x W) v, gradients by float64 central differences.
    rng = np.random.default_rng(3)
    w, v = rng.normal(size=(3, 4)), rng.normal(size=(4,))
    x = rng.normal(size=(6, 3))
    critic = lambda t: jnp.tanh(t @ w.astype(np.float32)) @ v.astype(np.float32)  # noqa: E731
    h, fd = 1e-6, np.zeros_like(x)
    for i in range(3):
        step = np.zeros(3)
        step[i] = h
        fd[:, i] = (np.tanh((x + step) @ w) @ v - np.tanh((x - step) @ w) @ v) / (2 * h)
    expected = 10.0 * np.mean((np.linalg.norm(fd, axis=1) - 1) ** 2)
    got = penalty(critic, x, x, np.full(6, 0.7, np.float32))
    close(got, expected, 1e-4)


# --- R1 penalty ----------------------------------------------------------------------------

R1_W = np.random.default_rng(12).normal(size=(4, 5))
R1_X = np.random.default_rng(13).normal(size=(3, 4))


def r1_critic(x, w):
    """D(x) = sum_j tanh(x W)_j per example: (B, 4) -> (B,)."""
    return jnp.sum(jnp.tanh(x @ w), axis=1)


def numpy_r1(x, w, weight, grad_fn):
    """weight / 2 * mean_b ||grad_x D(x_b)||^2 in float64, with the gradient from grad_fn."""
    return 0.5 * weight * np.mean(np.sum(grad_fn(x, w) ** 2, axis=1))


def finite_difference_grad(x, w, h=1e-6):
    """grad_x sum_j tanh(x W)_j per example by float64 central differences."""
    f = lambda v: np.sum(np.tanh(v @ w), axis=1)  # noqa: E731
    grad = np.zeros_like(x)
    for i in range(x.shape[1]):
        step = np.zeros(x.shape[1])
        step[i] = h
        grad[:, i] = (f(x + step) - f(x - step)) / (2 * h)
    return grad


def test_r1_penalty_matches_finite_differences():
    got = jax.jit(lambda x, w: objectives.r1_penalty(lambda v: r1_critic(v, w), x, weight=3.0))(
        R1_X.astype(np.float32), R1_W.astype(np.float32)
    )
    expected = numpy_r1(R1_X, R1_W, 3.0, finite_difference_grad)
    assert expected > 0.1  # a gradient of zero would not test the sum
    close(got, expected, 1e-4)


def test_r1_penalty_differentiates_through_the_critic_parameters():
    # d/dW of the penalty by float64 central differences on W[1, 2], with the input gradient
    # of D taken by hand: grad_x sum tanh(x W) = (1 - tanh(x W)^2) W^T.
    hand_grad = lambda x, w: (1 - np.tanh(x @ w) ** 2) @ w.T  # noqa: E731
    got = jax.jit(
        jax.grad(lambda w: objectives.r1_penalty(lambda v: r1_critic(v, w), R1_X, weight=3.0))
    )(R1_W.astype(np.float32))
    assert got.shape == R1_W.shape and np.all(np.isfinite(got))
    h, step = 1e-6, np.zeros_like(R1_W)
    step[1, 2] = h
    fd = (
        numpy_r1(R1_X, R1_W + step, 3.0, hand_grad) - numpy_r1(R1_X, R1_W - step, 3.0, hand_grad)
    ) / (2 * h)
    assert abs(fd) > 1e-2
    close(got[1, 2], fd, 1e-4)


# --- VAE -----------------------------------------------------------------------------------

MEAN = np.array([[0.5, -1.0, 0.2], [0.0, 0.3, -0.4]], np.float32)
LOGVAR = np.array([[0.3, -0.5, 1.0], [0.0, -1.2, 0.4]], np.float32)


def test_gaussian_kl_matches_monte_carlo():
    # KL = E_q[log q(z) - log p(z)]; 200k draws, tolerance 5 standard errors of the estimate.
    rng = np.random.default_rng(4)
    kl = np.asarray(objectives.gaussian_kl(MEAN, LOGVAR))
    assert kl.shape == (2,)
    std = np.exp(0.5 * LOGVAR.astype(np.float64))
    for b in range(2):
        z = MEAN[b] + std[b] * rng.normal(size=(200_000, 3))
        log_ratio = np.sum(
            stats.norm.logpdf(z, MEAN[b], std[b]) - stats.norm.logpdf(z, 0.0, 1.0), axis=1
        )
        standard_error = log_ratio.std() / math.sqrt(len(log_ratio))
        assert abs(kl[b] - log_ratio.mean()) < 5 * standard_error
    close(objectives.gaussian_kl(np.zeros((1, 3)), np.zeros((1, 3))), [0.0])


def test_bernoulli_log_likelihood_matches_scipy():
    rng = np.random.default_rng(5)
    logits = rng.normal(scale=3.0, size=(3, 4, 4, 1)).astype(np.float32)
    x = (rng.uniform(size=logits.shape) < 0.5).astype(np.float32)
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    expected = stats.bernoulli.logpmf(x, p).sum(axis=(1, 2, 3))
    close(objectives.bernoulli_log_likelihood(logits, x), expected, 1e-5)
    # Stable at logits +-100: the right pixel costs ~0, the wrong one costs 100.
    got = objectives.bernoulli_log_likelihood(np.array([[100.0, -100.0]]), np.array([[1.0, 1.0]]))
    close(got, [-100.0], 1e-6)


def test_gaussian_log_likelihood_matches_scipy():
    rng = np.random.default_rng(6)
    x = rng.uniform(size=(3, 4, 4, 2)).astype(np.float32)
    out = rng.normal(scale=0.5, size=(3, 4, 4, 4)).astype(np.float32)
    mean, log_std = out[..., :2], out[..., 2:]
    expected = stats.norm.logpdf(x, mean, np.exp(log_std)).sum(axis=(1, 2, 3))
    close(objectives.gaussian_log_likelihood(out, x), expected, 1e-5)
    close(objectives.log_likelihood(out, x, "gaussian"), expected, 1e-5)
    with pytest.raises(ValueError, match="channels"):
        objectives.gaussian_log_likelihood(out[..., :3], x)
    with pytest.raises(ValueError, match="bernoulli, gaussian"):
        objectives.log_likelihood(out, x, "poisson")


def test_negative_elbo_composition():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(2, 4, 4, 1)).astype(np.float32)
    x = (rng.uniform(size=logits.shape) < 0.5).astype(np.float32)
    nelbo, reconstruction, kl = objectives.negative_elbo(logits, x, MEAN, LOGVAR, beta=0.5)
    expected_reconstruction = -stats.bernoulli.logpmf(x, 1 / (1 + np.exp(-logits))).sum((1, 2, 3))
    expected_kl = 0.5 * np.sum(np.exp(LOGVAR) + MEAN**2 - 1 - LOGVAR, axis=1)
    close(reconstruction, expected_reconstruction, 1e-5)
    close(kl, expected_kl, 1e-5)
    close(nelbo, expected_reconstruction + 0.5 * expected_kl, 1e-5)
    assert nelbo.shape == reconstruction.shape == kl.shape == (2,)


# A linear-Gaussian decoder, mean = z A + c, log-std s: E_q[log p(x|z)] has a closed form.
Z_DIM, DATA = 3, (2, 2, 1)
A = np.random.default_rng(8).normal(size=(Z_DIM, 4)).astype(np.float32)
C = np.float32(0.1)
LOG_STD = np.float32(-0.5)


def linear_gaussian_decoder(z):
    mean = (z @ A + C).reshape(z.shape[:-1] + DATA)
    return jnp.concatenate([mean, jnp.full_like(mean, LOG_STD)], axis=-1)


def analytic_elbo(x, mean, logvar):
    """E_q[log N(x; zA + c, sigma^2)] - KL, exactly, in float64."""
    a, var, sigma2 = A.astype(np.float64), np.exp(logvar.astype(np.float64)), np.exp(2 * LOG_STD)
    residual = x.reshape(len(x), -1) - (mean @ a + C)
    expected_sq = residual**2 + var @ (a**2)  # E_q[(x_d - z a_d - c)^2]
    log_lik = np.sum(-0.5 * np.log(2 * np.pi * sigma2) - expected_sq / (2 * sigma2), axis=1)
    return log_lik - 0.5 * np.sum(var + mean**2 - 1 - np.log(var), axis=1)


@jax.jit
def draw_log_weights(key, x, mean, logvar, eps_shape_like):
    """z ~ q(z|x) with one leading draw axis per row of `eps_shape_like`, and their log weights."""
    eps = jax.random.normal(key, (eps_shape_like.shape[0], *mean.shape))
    z = mean + jnp.exp(0.5 * logvar) * eps
    weights = jax.vmap(
        lambda zi: objectives.log_importance_weights(
            linear_gaussian_decoder(zi), x, zi, mean, logvar, likelihood="gaussian"
        )
    )
    return z, weights(z)


def test_iwae_with_one_sample_is_the_monte_carlo_elbo():
    x = np.random.default_rng(9).uniform(size=(2, *DATA)).astype(np.float32)
    z, log_weights = draw_log_weights(jax.random.key(0), x, MEAN, LOGVAR, np.zeros(1))
    z, out = np.asarray(z[0], np.float64), np.asarray(linear_gaussian_decoder(z[0]), np.float64)
    std = np.exp(0.5 * LOGVAR.astype(np.float64))
    expected = (
        stats.norm.logpdf(x, out[..., :1], np.exp(out[..., 1:])).sum((1, 2, 3))
        + stats.norm.logpdf(z, 0, 1).sum(1)
        - stats.norm.logpdf(z, MEAN, std).sum(1)
    )
    close(objectives.iwae_bound(log_weights), expected, 1e-4)


def test_log_weights_average_to_the_analytic_elbo():
    # 100k draws; tolerance 5 standard errors of the mean log weight.
    x = np.random.default_rng(10).uniform(size=(2, *DATA)).astype(np.float32)
    _, log_weights = draw_log_weights(jax.random.key(1), x, MEAN, LOGVAR, np.zeros(100_000))
    log_weights = np.asarray(log_weights, np.float64)
    standard_error = log_weights.std(axis=0) / math.sqrt(len(log_weights))
    error = np.abs(log_weights.mean(axis=0) - analytic_elbo(x, MEAN, LOGVAR))
    assert np.all(error < 5 * standard_error), (error, standard_error)


def test_iwae_bound_grows_with_k():
    # Burda et al. 2016, thm. 1: E[L_k] is non-decreasing in k. A deliberately poor q makes
    # the gaps large (here ~46 and ~8 nats) against their standard errors (~1.3 and ~0.2).
    rng = np.random.default_rng(11)
    x = rng.uniform(size=(16, *DATA)).astype(np.float32)
    mean = rng.normal(size=(16, Z_DIM)).astype(np.float32)
    logvar = np.full((16, Z_DIM), 0.5, np.float32)
    _, log_weights = draw_log_weights(jax.random.key(12), x, mean, logvar, np.zeros(56 * 200))
    groups = np.split(np.asarray(log_weights), [200, 1200])  # 200 x 1, 200 x 5, 200 x 50 draws
    bounds = {
        k: np.asarray(objectives.iwae_bound(g.reshape(k, 200, 16)))  # (200 repetitions, 16)
        for k, g in zip((1, 5, 50), groups, strict=True)
    }
    for small, large in ((1, 5), (5, 50)):
        gap = bounds[large].mean() - bounds[small].mean()
        standard_error = math.hypot(bounds[large].std(), bounds[small].std()) / math.sqrt(3200)
        assert gap > 5 * standard_error, (small, large, gap, standard_error)


def test_iwae_bound_log_mean_exp():
    log_weights = np.log(np.array([[1.0, 2.0], [3.0, 8.0]]))
    close(objectives.iwae_bound(log_weights), np.log([2.0, 5.0]))
    close(objectives.iwae_bound(np.array([[1000.0], [1000.0]])), [1000.0])
