"""The IWAE objective (Burda et al. 2016): its bound and gradient against closed forms on a
linear-Gaussian model, the VAE step that trains on it (with a class-conditional model), and
its config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from genjax import experiment, objectives
from genjax.config import ConfigError, base_config
from genjax.parallel import AXIS

D, Z, K, B = 3, 2, 4, 2


@jax.jit
def linear_model(params, x, eps):
    """-L_k per example of the linear-Gaussian model p(z) = N(0, I), p(x|z) = N(z Wt + b,
    sigma^2 I), q(z|x) = N(x A + c, diag(exp(x E + f))), through objectives.iwae_objective."""
    xf = x.reshape(len(x), -1)
    mean, logvar = xf @ params["A"] + params["c"], xf @ params["E"] + params["f"]

    def decode(z, x_k):
        mu = (z @ params["Wt"] + params["b"])[:, :, None]  # (B k, D, 1)
        log_std = jnp.broadcast_to(params["log_sigma"], mu.shape)
        return jnp.concatenate([mu, log_std], axis=-1)

    return objectives.iwae_objective(decode, x, mean, logvar, eps, likelihood="gaussian")


def random_params(rng):
    return {
        "A": rng.normal(size=(D, Z)) * 0.3,
        "c": rng.normal(size=Z) * 0.3,
        "E": rng.normal(size=(D, Z)) * 0.2,
        "f": rng.normal(size=Z) * 0.3 - 0.5,
        "Wt": rng.normal(size=(Z, D)),
        "b": rng.normal(size=D) * 0.3,
        "log_sigma": np.array(-0.3),
    }


def closed_form_gradient(p, x, eps):
    """d(-sum_b L_k)/d params by hand: -sum_b sum_i w~_bi d log w_bi, where (reparameterised
    z = mu + s eps) d log w / d mu = g, d log w / d logvar_j = g_j s_j eps_j / 2 + 1/2, and
    g = Wt r / sigma^2 - z, r = x - z Wt - b (log q(z|x) at z depends on logvar alone).
    Also returns the same average with uniform weights 1/k, the ELBO's gradient, which a
    detached or mis-normalised weight gives instead."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    sigma2 = np.exp(2 * p["log_sigma"])
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    uniform = {k: np.zeros_like(v) for k, v in p.items()}
    for n in range(len(x)):
        xn = x[n].reshape(-1).astype(np.float64)
        mu, lv = xn @ p["A"] + p["c"], xn @ p["E"] + p["f"]
        s = np.exp(0.5 * lv)
        log_w, terms = [], []
        for i in range(eps.shape[1]):
            z = mu + s * eps[n, i]
            r = xn - z @ p["Wt"] - p["b"]
            log_w.append(
                multivariate_normal.logpdf(xn, z @ p["Wt"] + p["b"], sigma2 * np.eye(D))
                + multivariate_normal.logpdf(z, np.zeros(Z), np.eye(Z))
                - multivariate_normal.logpdf(z, mu, np.diag(s**2))
            )
            g = p["Wt"] @ r / sigma2 - z
            g_lv = 0.5 * g * s * eps[n, i] + 0.5
            terms.append(
                {
                    "Wt": np.outer(z, r) / sigma2,
                    "b": r / sigma2,
                    "log_sigma": np.sum(r**2) / sigma2 - D,
                    "A": np.outer(xn, g),
                    "c": g,
                    "E": np.outer(xn, g_lv),
                    "f": g_lv,
                }
            )
        w = np.exp(np.array(log_w) - logsumexp(log_w))
        for i, term in enumerate(terms):
            for key, value in term.items():
                grads[key] -= w[i] * value
                uniform[key] -= value / len(terms)
    return grads, uniform


def test_the_gradient_is_the_normalised_weight_average_of_the_log_weight_gradients():
    rng = np.random.default_rng(0)
    params = random_params(rng)
    x = rng.normal(size=(B, D, 1))
    eps = rng.normal(size=(B, K, Z))
    loss = lambda p: jnp.sum(linear_model(p, x, eps)[0])  # noqa: E731
    got = jax.jit(jax.grad(loss))(jax.tree.map(jnp.float32, params))
    expected, uniform = closed_form_gradient(params, x, eps)
    for key in params:
        np.testing.assert_allclose(got[key], expected[key], rtol=2e-4, atol=2e-5, err_msg=key)
    # the test tells the bound's gradient from the ELBO's (uniform weights)
    gap = max(np.max(np.abs(expected[k] - uniform[k])) for k in params)
    assert gap > 0.05


def test_the_bound_is_log_p_x_under_the_exact_posterior_and_below_it_otherwise():
    """With q(z|x) the exact posterior every weight is p(x) (orthogonal columns of W keep
    the posterior diagonal), so L_k = log p(x) = log N(x; b, W W^T + sigma^2 I) for any noise;
    with another q, E[L_k] rises with k and stays below log p(x)."""
    rng = np.random.default_rng(1)
    wt = np.array([[1.0, 0.5, 0.0], [0.0, 0.0, 2.0]])  # rows orthogonal: W^T W diagonal
    b, log_sigma = np.array([0.1, -0.2, 0.3]), -0.5
    sigma2 = np.exp(2 * log_sigma)
    x = rng.normal(size=(B, D, 1))
    cov = np.linalg.inv(np.eye(Z) + wt @ wt.T / sigma2)  # diagonal
    params = {
        "A": (cov @ wt / sigma2).T,
        "c": -(cov @ wt / sigma2) @ b,
        "E": np.zeros((D, Z)),
        "f": np.log(np.diag(cov)),
        "Wt": wt,
        "b": b,
        "log_sigma": np.array(log_sigma),
    }
    log_px = [
        multivariate_normal.logpdf(x[n, :, 0], b, wt.T @ wt + sigma2 * np.eye(D)) for n in range(B)
    ]
    bound, _ = linear_model(params, x, rng.normal(size=(B, K, Z)))
    np.testing.assert_allclose(-np.asarray(bound), log_px, rtol=1e-5)

    params["f"] = params["f"] + 1.0  # q too wide and shifted: no longer the posterior
    params["c"] = params["c"] + 1.0
    means = []
    for k in (1, 4, 16):
        eps = rng.normal(size=(B * 200, k, Z))
        bound, _ = linear_model(params, np.repeat(x, 200, axis=0), eps)
        means.append(-np.asarray(bound).reshape(B, 200).mean(axis=1))
    assert np.all(means[0] < means[1]) and np.all(means[1] < means[2])
    assert np.all(means[2] < np.array(log_px))


def _config(**vae):
    c = base_config()
    c.model.name, c.model.z_dim, c.model.hidden, c.model.depth = "cvae_mlp", Z, 16, 1
    c.vae.binarize = False
    for key, value in vae.items():
        c.vae[key] = value
    return c


def test_the_step_trains_a_conditional_vae_on_the_k_sample_bound():
    """The step's loss is -mean_b log mean_i w_bi, recomputed in numpy from the step's noise
    (the family draws eps (B, k, Z) from the second half of its key), with the one-hot labels
    of each example in its encoder and decoder; other labels give another loss."""
    k = 3
    exp = experiment.build(_config(objective="iwae", num_samples=k), "image", (4, 4, 1), 3)
    state = exp.init_state(jax.random.PRNGKey(0))
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (5, 4, 4, 1), np.uint8)
    labels = np.array([0, 1, 2, 1, 0], np.int32)
    key = jax.random.PRNGKey(3)
    step = jax.jit(jax.vmap(exp.step(), in_axes=(None, 0, None), axis_name=AXIS))

    def loss(y):
        batch = {"image": images[None, None], "label": y[None, None]}
        return float(step(state, batch, key)[1]["loss"][0])

    x = images.reshape(5, -1) / np.float32(255)
    enc = {"params": state.params["encoder"]}
    dec = {"params": state.params["decoder"]}
    mean, logvar = (
        np.asarray(a, np.float64)
        for a in exp.models[0].apply(
            enc, images / np.float32(255), jnp.asarray(labels), train=False
        )
    )
    eps = np.asarray(jax.random.normal(jax.random.split(key)[1], (5, k, Z)), np.float64)
    z = mean[:, None] + np.exp(0.5 * logvar)[:, None] * eps
    logits = np.asarray(
        exp.models[1].apply(
            dec, jnp.asarray(z.reshape(-1, Z), jnp.float32), jnp.repeat(labels, k), train=False
        ),
        np.float64,
    ).reshape(5, k, -1)
    log_px_z = np.sum(x[:, None] * logits - np.logaddexp(0, logits), axis=-1)
    log_pz = -0.5 * np.sum(z**2 + np.log(2 * np.pi), axis=-1)
    log_qz = -0.5 * np.sum(eps**2 + logvar[:, None] + np.log(2 * np.pi), axis=-1)
    expected = -np.mean(logsumexp(log_px_z + log_pz - log_qz, axis=1) - np.log(k))
    np.testing.assert_allclose(loss(labels), expected, rtol=1e-4)
    assert abs(loss((labels + 1) % 3) - expected) > 1e-3


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"objective": "iwae", "num_samples": 0}, "num_samples must be >= 1"),
        ({"objective": "vimco"}, "valid: elbo, iwae"),
        ({"num_samples": 5}, "k of vae.objective=iwae"),
        ({"objective": "iwae", "num_samples": 5, "beta": 4.0}, "takes vae.beta=1"),
        ({"objective": "iwae", "num_samples": 5, "free_bits": 0.5}, "free_bits=0"),
    ],
)
def test_iwae_settings_that_do_not_fit_are_refused(fields, words):
    with pytest.raises(ConfigError, match=words):
        experiment.build(_config(**fields), "image", (4, 4, 1), 3)
