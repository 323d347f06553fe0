"""Quality metrics against independent computations: scipy, brute-force loops, closed forms."""

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.special
from scipy.stats import multivariate_normal

from genjax.config import ConfigError, base_config
from genjax.data import MIXTURES
from genjax.families.vae import importance_functions
from genjax.metrics import classes, classifier, features, inception, nll, toy


def gaussian_features(seed, n, d=4, shift=0.0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d))
    return rng.normal(size=(n, d)) @ mixing + shift


# --- Fréchet distance -----------------------------------------------------------------------


def frechet_with_sqrtm(x, y):
    """Heusel et al. (2017), eq. 6, as pytorch-fid computes it (scipy.linalg.sqrtm)."""
    mu_x, mu_y = x.mean(0), y.mean(0)
    s_x, s_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(s_x @ s_y).real
    return np.sum((mu_x - mu_y) ** 2) + np.trace(s_x + s_y - 2 * root)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frechet_distance_matches_the_sqrtm_formula(seed):
    x = gaussian_features(seed, 60)
    y = gaussian_features(seed + 10, 50, shift=0.5)
    assert features.frechet_distance(x, y) == pytest.approx(frechet_with_sqrtm(x, y), rel=1e-7)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    x = gaussian_features(3, 40)
    assert abs(features.frechet_distance(x, x)) < 1e-9


# --- KID ------------------------------------------------------------------------------------


def mmd2_loops(x, y):
    """The unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, by explicit double loops."""
    m, d = x.shape
    k = lambda a, b: (float(np.dot(a, b)) / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return (xx + yy) / (m * (m - 1)) - 2 * xy / (m * m)


def test_mmd2_matches_a_double_loop():
    x, y = gaussian_features(0, 9, 3), gaussian_features(1, 9, 3, shift=0.3)
    assert features.mmd2_unbiased(x, y) == pytest.approx(mmd2_loops(x, y), rel=1e-10)


def test_kid_with_subsets_as_large_as_the_sets_is_the_full_estimate():
    # Every subset is then a permutation of a whole set, and MMD^2 does not see order.
    x, y = gaussian_features(2, 8, 3), gaussian_features(3, 8, 3, shift=1.0)
    mean, std = features.kernel_distance(x, y, num_subsets=4, subset_size=1000)
    assert mean == pytest.approx(mmd2_loops(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_kid_subsets_are_drawn_from_each_set_without_replacement():
    x, y = gaussian_features(4, 30, 3), gaussian_features(5, 12, 3)
    rng = np.random.default_rng(7)
    expected = []
    for _ in range(5):
        xs = x[rng.choice(30, 12, replace=False)]
        ys = y[rng.choice(12, 12, replace=False)]
        expected.append(mmd2_loops(xs, ys))
    mean, std = features.kernel_distance(x, y, num_subsets=5, subset_size=1000, seed=7)
    assert mean == pytest.approx(np.mean(expected), rel=1e-10)
    assert std == pytest.approx(np.std(expected), rel=1e-8)  # the subsets' spread, not an SE
    assert std > 0


# --- precision, recall, density, coverage ---------------------------------------------------


def kth_neighbour_radius(points, i, k):
    distances = sorted(np.linalg.norm(points[i] - points[j]) for j in range(len(points)) if j != i)
    return distances[k - 1]


def in_manifold(point, centres, k):
    return any(
        np.linalg.norm(point - centres[i]) <= kth_neighbour_radius(centres, i, k)
        for i in range(len(centres))
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_precision_recall_match_brute_force(seed):
    real = gaussian_features(seed, 25, 3)
    fake = gaussian_features(seed + 5, 20, 3, shift=0.7)
    precision = np.mean([in_manifold(f, real, 3) for f in fake])
    recall = np.mean([in_manifold(r, fake, 3) for r in real])
    assert features.precision_recall(real, fake, k=3) == pytest.approx((precision, recall))
    assert 0 < precision < 1 and 0 < recall < 1  # the case is not trivial


@pytest.mark.parametrize("seed", [0, 1])
def test_density_coverage_match_brute_force(seed):
    real = gaussian_features(seed, 25, 3)
    fake = gaussian_features(seed + 5, 20, 3, shift=0.7)
    k = 5
    radii = [kth_neighbour_radius(real, i, k) for i in range(len(real))]
    inside = [
        [np.linalg.norm(f - r) <= rad for r, rad in zip(real, radii, strict=True)] for f in fake
    ]
    density = sum(map(sum, inside)) / (k * len(fake))
    coverage = np.mean([any(row[i] for row in inside) for i in range(len(real))])
    assert features.density_coverage(real, fake, k=k) == pytest.approx((density, coverage))


def test_balls_include_their_boundary():
    """Kynkaanniemi et al. (2019, eq. 1) and Naeem et al. (2020, eqs. 3-4) count a point at
    exactly the k-NN radius as inside (<=): integer lattices make the ties exact."""
    real = np.array([[0.0], [1.0], [2.0], [3.0]])  # 1-NN radius 1 for every real
    fake = np.array([[4.0], [6.0]])  # 1-NN radius 2 for both fakes
    # 4 is at distance 1 from the ball around 3; 6 is at distance 3 from every real.
    # Reals 2 and 3 are at distances 2 and 1 from the ball around 4, of radius 2.
    assert features.precision_recall(real, fake, k=1) == (0.5, 0.5)
    # One (fake, real ball) pair: 4 in B(3, 1); density 1 / (k M) = 1 / 2; 1 of 4 balls hit.
    assert features.density_coverage(real, fake, k=1) == (0.5, 0.25)


def test_radii_blocks_agree_with_one_block(monkeypatch):
    x = gaussian_features(9, 23, 3)
    whole = features.knn_radii(x, 3)
    monkeypatch.setattr(features, "BLOCK", 5)
    np.testing.assert_allclose(features.knn_radii(x, 3), whole, rtol=1e-12)


def test_feature_metrics_names_and_small_sets():
    real, fake = gaussian_features(0, 30), gaussian_features(1, 30)
    names = set(features.feature_metrics(real, fake, "s"))
    assert names == {f"{m}_s" for m in ("fd", "kid", "precision", "recall", "density", "coverage")}
    assert set(features.feature_metrics(real[:5], fake, "s")) == {
        "fd_s",
        "kid_s",
        "precision_s",
        "recall_s",
    }


def test_feature_metrics_are_the_direct_calls_with_real_first():
    real = gaussian_features(0, 30)
    fake = gaussian_features(1, 22, shift=0.8)  # another size and place: nothing symmetric
    got = features.feature_metrics(real, fake, "s", seed=4)
    kid_mean, kid_std = features.kernel_distance(real, fake, seed=4)
    precision, recall = features.precision_recall(real, fake, 3)
    density, coverage = features.density_coverage(real, fake, 5)
    assert got == {
        "fd_s": features.frechet_distance(real, fake),
        "kid_s": kid_mean,
        "precision_s": precision,
        "recall_s": recall,
        "density_s": density,
        "coverage_s": coverage,
    }
    # The case tells the arguments, the defaults and the KID statistic apart.
    assert kid_mean != kid_std
    assert (precision, recall) != features.precision_recall(fake, real, 3)
    assert (precision, recall) != features.precision_recall(real, fake, 4)
    assert (density, coverage) != features.density_coverage(fake, real, 5)


def test_feature_metrics_leave_out_precision_when_a_set_has_only_pr_k_rows():
    real, fake = gaussian_features(2, 3), gaussian_features(3, 10)  # 3 rows: no 3rd neighbour
    got = features.feature_metrics(real, fake, "s")
    assert got == {
        "fd_s": features.frechet_distance(real, fake),
        "kid_s": features.kernel_distance(real, fake)[0],
    }


# --- 2-D mixtures ---------------------------------------------------------------------------


def test_mode_metrics_on_hand_built_samples():
    means, std = MIXTURES["ring8"]
    one_mode = means[3] + std * np.random.default_rng(0).normal(size=(100, 2)) * 0.5
    assert toy.mode_metrics(one_mode, means, std)["modes"] == 1
    assert toy.mode_metrics(one_mode, means, std)["reverse_kl"] == pytest.approx(math.log(8))

    every = toy.mode_metrics(np.repeat(means, 5, axis=0), means, std)
    assert every == {"modes": 8, "hq_fraction": 1.0, "reverse_kl": pytest.approx(0.0, abs=1e-12)}

    far = toy.mode_metrics(np.full((50, 2), 10.0), means, std)
    assert far["hq_fraction"] == 0 and far["modes"] == 0 and math.isnan(far["reverse_kl"])


def test_mode_metrics_threshold_and_mixed_samples():
    means, std = MIXTURES["grid25"]
    offset = np.array([[std * 2.9, 0.0], [0.0, std * 3.1]])
    points = np.concatenate([means[:2] + offset, means[[5, 5]]])  # hq: 1 of 2, then 2
    got = toy.mode_metrics(points, means, std)
    assert got["hq_fraction"] == 0.75 and got["modes"] == 2
    p = np.array([1 / 3, 2 / 3])  # high-quality points: one at mode 0, two at mode 5
    assert got["reverse_kl"] == pytest.approx(np.sum(p * np.log(p * 25)))


def test_nearest_modes_scale_each_mode_by_its_own_sigma():
    means = np.array([[0.0, 0.0], [1.0, 0.0]])
    point = np.array([[0.45, 0.0]])  # 0.45 from mode 0, 0.55 from mode 1
    nearest, distance = toy.nearest_modes(point, means, np.array([0.01, 1.0]))
    assert nearest.tolist() == [1] and distance[0] == pytest.approx(0.55)  # 45 sigmas vs 0.55
    nearest, distance = toy.nearest_modes(point, means, 1.0)  # one sigma for both
    assert nearest.tolist() == [0] and distance[0] == pytest.approx(0.45)


def test_class_kl_against_a_data_histogram_that_misses_a_class():
    predicted = np.array([3, 0, 2, 2, 0, 2])  # counts 2, 0, 3, 1
    data = np.array([0, 1, 0, 3, 1, 0])  # counts 3, 2, 0, 1: class 2 gets half an example
    got = classes.class_metrics(predicted, data, 4)
    p = np.array([2, 0, 3, 1]) / 6
    q = np.array([3, 2, 0.5, 1]) / 6.5
    used = p > 0
    expected = np.sum(p[used] * np.log(p[used] / q[used]))
    assert got == {"classes_covered": 3.0, "class_kl": pytest.approx(expected, rel=1e-12)}


def test_class_metrics_hand_values():
    got = classes.class_metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 2, 3]), 4)
    assert got["classes_covered"] == 2
    assert got["class_kl"] == pytest.approx(math.log(2))  # 0.5 log(0.5 / 0.25), twice
    assert classes.class_metrics(np.arange(4), np.arange(4), 4)["class_kl"] == pytest.approx(0)


# --- importance-sampled log-likelihood ------------------------------------------------------


def linear_gaussian(seed=0, d=5, z=2, sigma=0.5):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, sigma^2 I): p(x) = N(b, W W^T + sigma^2 I)."""
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=(d, z)), rng.normal(size=d)
    cov = w @ w.T + sigma**2 * np.eye(d)
    x = rng.multivariate_normal(b, cov, size=6).astype(np.float32)
    exact = multivariate_normal(b, cov).logpdf(x)
    posterior_cov = np.linalg.inv(np.eye(z) + w.T @ w / sigma**2)
    params = {k: jnp.asarray(v, jnp.float32) for k, v in (("w", w), ("b", b))}
    params["var"] = jnp.asarray(np.diag(posterior_cov) * 1.5, jnp.float32)  # q: diagonal, wider
    params["gain"] = jnp.asarray(w / sigma**2 @ posterior_cov, jnp.float32)

    def encode(p, x):
        mean = (x - p["b"]) @ p["gain"]
        return mean, jnp.broadcast_to(jnp.log(p["var"]), mean.shape)

    def log_weight(p, x, z, mean, logvar):
        def normal(v, m, lv):
            return -0.5 * jnp.sum((v - m) ** 2 / jnp.exp(lv) + lv + jnp.log(2 * jnp.pi), -1)

        log_sigma2 = jnp.full_like(x, 2 * math.log(sigma))
        decoded = normal(x, z @ p["w"].T + p["b"], log_sigma2)
        return decoded + normal(z, 0.0, jnp.zeros_like(z)) - normal(z, mean, logvar)

    return encode, log_weight, params, x, exact


def test_importance_sampled_nll_matches_the_closed_form():
    encode, log_weight, params, x, exact = linear_gaussian()
    log_px, elbo = nll.estimate_log_likelihood(encode, log_weight, params, x, k=2000, seed=0)
    np.testing.assert_allclose(log_px, exact, atol=0.05)  # measured error about 0.02 nats
    assert np.all(elbo < exact)  # a diagonal q under a correlated posterior: a gap remains
    assert np.all(elbo < log_px)


def test_chunked_samples_with_a_ragged_last_chunk_agree():
    encode, log_weight, params, x, exact = linear_gaussian(seed=1)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(3), i))(jnp.arange(len(x)))
    estimate = jax.jit(
        lambda: nll.importance_sampled_estimates(encode, log_weight, params, x, keys, 1000, 300)
    )
    log_px, _ = estimate()  # 4 chunks of 300, the last one masked down to 100 samples
    np.testing.assert_allclose(np.asarray(log_px), exact, atol=0.1)


def test_binarize_is_fixed_by_the_seed():
    x = np.random.default_rng(0).uniform(size=(4, 6, 6, 1))
    a, b = nll.binarize(x, 5), nll.binarize(x, 5)
    assert set(np.unique(a)) <= {0.0, 1.0} and np.array_equal(a, b)
    assert not np.array_equal(a, nll.binarize(x, 6))


def test_binarize_keeps_binary_images_and_pixel_means():
    x = (np.random.default_rng(1).uniform(size=(3, 5, 5, 1)) < 0.5).astype(np.float32)
    np.testing.assert_array_equal(nll.binarize(x, 0), x)  # P(1) = 1 and P(0) = 0 exactly
    assert nll.binarize(np.full(10_000, 0.2), 0).mean() == pytest.approx(0.2, abs=0.02)


def shifted_encode(params, x):
    """q(z|x) = N(x[:, :2], diag(exp(x[:, 2:4]))), whatever the params."""
    return x[:, :2], x[:, 2:4]


def first_latent_weight(params, x, z, mean, logvar):
    """log w = z_0: every estimate is then a function of q and of the noise alone."""
    return z[..., 0]


def numpy_estimates(x, keys, k, chunk):
    """(log (1/k) sum_i w_i, (1/k) sum_i log w_i) per example, in float64, for the two
    functions above: sample i of example b is chunk i // chunk of the noise drawn from
    fold_in(keys[b], that chunk), row i % chunk, the first k samples kept."""
    x = np.asarray(x, np.float64)
    chunks = -(-k // chunk)
    log_px, elbo = [], []
    for b, key in enumerate(keys):
        eps = [jax.random.normal(jax.random.fold_in(key, c), (chunk, 2)) for c in range(chunks)]
        eps = np.concatenate(eps)[:k].astype(np.float64)
        log_w = x[b, 0] + np.exp(0.5 * x[b, 2]) * eps[:, 0]
        log_px.append(scipy.special.logsumexp(log_w) - math.log(k))
        elbo.append(log_w.mean())
    return np.array(log_px), np.array(elbo)


def test_importance_sampled_estimates_match_a_numpy_reimplementation():
    x = jnp.asarray(np.random.default_rng(0).normal(0.0, 0.5, (4, 4)), jnp.float32)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(3), i))(jnp.arange(4))
    log_px, elbo = jax.jit(
        lambda x, keys: nll.importance_sampled_estimates(
            shifted_encode, first_latent_weight, None, x, keys, 1000, 300
        )
    )(x, keys)  # 4 chunks of 300, the last one masked down to 100 samples
    expected_log_px, expected_elbo = numpy_estimates(x, keys, 1000, 300)
    np.testing.assert_allclose(np.asarray(log_px), expected_log_px, rtol=0, atol=2e-5)
    np.testing.assert_allclose(np.asarray(elbo), expected_elbo, rtol=0, atol=2e-5)


def test_estimate_log_likelihood_keys_each_example_by_its_index(monkeypatch):
    """Example i draws from fold_in(key(seed), i) wherever its batch starts, so the estimates
    do not depend on the batch size (70 examples: batches of 64 by default)."""
    x = np.random.default_rng(1).normal(0.0, 0.5, (70, 4)).astype(np.float32)
    keys = [jax.random.fold_in(jax.random.PRNGKey(5), i) for i in range(70)]

    def estimate():
        return nll.estimate_log_likelihood(
            shifted_encode, first_latent_weight, None, x, k=10, seed=5
        )

    assert nll.batch_sizes(70, 4, 10) == (64, 10)
    default = estimate()
    for got, want in zip(default, numpy_estimates(x, keys, 10, 10), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
    monkeypatch.setattr(nll, "batch_sizes", lambda n, size, k: (7, 10))
    for got, want in zip(estimate(), default, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    monkeypatch.setattr(nll, "batch_sizes", lambda n, size, k: (16, 4))  # chunks 4, 4, 2
    for got, want in zip(estimate(), numpy_estimates(x, keys, 10, 4), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)


def test_a_gaussian_vae_is_scored_on_unbinarised_images(monkeypatch):
    from genjax import experiment

    c = base_config()
    c.model.name, c.model.hidden, c.model.depth, c.model.z_dim = "vae_mlp", 16, 1, 2
    c.vae.likelihood, c.vae.binarize = "gaussian", True  # binarize is for Bernoulli VAEs only
    exp = experiment.build(c, "image", (4, 4, 1))
    state = exp.init_state(jax.random.PRNGKey(0))
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 1), dtype=np.uint8)

    def refuse(*args, **kwargs):
        raise AssertionError("a Gaussian VAE's test images were binarised")

    monkeypatch.setattr(nll, "binarize", refuse)
    got = exp.test_metrics(state, {"image": images}, k=8, seed=2)
    encode, log_weight = importance_functions(exp.models, "gaussian")
    log_px, elbo = nll.estimate_log_likelihood(
        encode, log_weight, state, images / 255.0, k=8, seed=3
    )
    assert got == pytest.approx(
        {"test_nll": -np.mean(log_px), "test_neg_elbo": -np.mean(elbo)}, rel=1e-6
    )


# --- FID Inception --------------------------------------------------------------------------


def random_torch_state_dict(seed=0):
    """Arrays under pytorch-fid's names and layouts (conv weights OIHW), random values."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for collection, tree in inception.variables_template().items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            names = tuple(k.key for k in path)
            name = inception.torch_name(collection, names)
            shape = leaf.shape
            if names[-1] == "kernel":
                h, w, i, o = shape
                arrays[name] = rng.normal(0, math.sqrt(2 / (h * w * i)), (o, i, h, w))
            elif names[-1] == "var":
                arrays[name] = rng.uniform(0.5, 1.5, shape)
            else:
                arrays[name] = rng.normal(0, 0.1, shape) + (names[-1] == "scale")
    arrays["fc.weight"] = np.zeros((1008, 2048))  # present in the real file, unused
    return {k: v.astype(np.float32) for k, v in arrays.items()}


def test_inception_has_the_94_convolutions_of_inception_v3_and_pool3_output():
    template = inception.variables_template()
    leaves = jax.tree_util.tree_flatten_with_path(template["params"])[0]
    kernels = {tuple(k.key for k in p): leaf.shape for p, leaf in leaves if p[-1].key == "kernel"}
    assert len(kernels) == 94
    assert kernels[("Conv2d_1a_3x3", "conv", "kernel")] == (3, 3, 3, 32)
    assert kernels[("Mixed_6b", "branch7x7_2", "conv", "kernel")] == (1, 7, 128, 128)
    assert kernels[("Mixed_7c", "branch_pool", "conv", "kernel")] == (1, 1, 2048, 192)
    images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    out = jax.eval_shape(inception.FIDInceptionV3().apply, template, images)
    assert out.shape == (2, inception.FEATURES)


def test_inception_pools_match_tensorflow_semantics():
    x = np.random.default_rng(0).normal(size=(1, 4, 5, 2)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=np.nan)
    avg = np.zeros_like(x)
    top = np.zeros_like(x)
    for i in range(4):
        for j in range(5):
            window = padded[0, i : i + 3, j : j + 3]
            avg[0, i, j] = np.nanmean(window, axis=(0, 1))  # padding not counted
            top[0, i, j] = np.nanmax(window, axis=(0, 1))
    np.testing.assert_allclose(inception.avg_pool_3x3(jnp.asarray(x)), avg, rtol=1e-6)
    np.testing.assert_allclose(inception.max_pool_3x3(jnp.asarray(x), 1, 1), top, rtol=1e-6)


def test_inception_loads_torch_named_weights_and_is_deterministic(tmp_path):
    state = random_torch_state_dict()
    path = tmp_path / "fid_inception.npz"
    np.savez(path, **state)
    variables = inception.load_variables(path)
    kernel = variables["params"]["Conv2d_1a_3x3"]["conv"]["kernel"]
    np.testing.assert_array_equal(kernel[1, 2, 0], state["Conv2d_1a_3x3.conv.weight"][:, 0, 1, 2])
    np.testing.assert_array_equal(
        variables["batch_stats"]["Mixed_7c"]["branch_pool"]["bn"]["var"],
        state["Mixed_7c.branch_pool.bn.running_var"],
    )
    images = np.random.default_rng(1).integers(0, 256, (1, 28, 28, 1), dtype=np.uint8)
    first = inception.inception_features(variables, images, batch_size=1)
    second = inception.inception_features(variables, images, batch_size=1)
    assert first.shape == (1, 2048) and np.all(np.isfinite(first)) and np.any(first > 0)
    np.testing.assert_array_equal(first, second)


def test_inception_refuses_a_file_that_is_not_the_fid_net(tmp_path):
    state = random_torch_state_dict()
    del state["Mixed_5b.branch1x1.conv.weight"]
    np.savez(tmp_path / "bad.npz", **state)
    with pytest.raises(ConfigError, match="Mixed_5b.branch1x1.conv.weight"):
        inception.load_variables(tmp_path / "bad.npz")
    with pytest.raises(ConfigError, match="no such file"):
        inception.load_variables(tmp_path / "missing.npz")


def test_inception_preprocess_resizes_and_scales_like_pytorch_fid():
    x = jnp.full((1, 28, 28, 1), 0.25)
    out = inception.preprocess(x)
    assert out.shape == (1, 299, 299, 3)
    np.testing.assert_allclose(out, -0.5, atol=1e-6)


def torch_fid_inception(state, images):
    """pytorch-fid's FID Inception forward (torchvision's blocks with the FID patches), written
    with torch.nn.functional on a state dict: the reference the Flax network must match."""
    import torch
    import torch.nn.functional as F

    t = {k: torch.from_numpy(v) for k, v in state.items()}

    def conv(x, n, stride=1, padding=0):
        x = F.conv2d(x, t[f"{n}.conv.weight"], stride=stride, padding=padding)
        stats = (t[f"{n}.bn.running_mean"], t[f"{n}.bn.running_var"])
        x = F.batch_norm(x, *stats, t[f"{n}.bn.weight"], t[f"{n}.bn.bias"], False, 0.0, 1e-3)
        return F.relu(x)

    def avg(x):
        return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)

    def block_a(x, n):
        b5 = conv(conv(x, f"{n}.branch5x5_1"), f"{n}.branch5x5_2", padding=2)
        bd = conv(conv(x, f"{n}.branch3x3dbl_1"), f"{n}.branch3x3dbl_2", padding=1)
        bd = conv(bd, f"{n}.branch3x3dbl_3", padding=1)
        return torch.cat([conv(x, f"{n}.branch1x1"), b5, bd, conv(avg(x), f"{n}.branch_pool")], 1)

    def block_b(x, n):
        bd = conv(conv(x, f"{n}.branch3x3dbl_1"), f"{n}.branch3x3dbl_2", padding=1)
        bd = conv(bd, f"{n}.branch3x3dbl_3", stride=2)
        return torch.cat([conv(x, f"{n}.branch3x3", stride=2), bd, F.max_pool2d(x, 3, 2)], 1)

    def block_c(x, n):
        b7 = conv(conv(x, f"{n}.branch7x7_1"), f"{n}.branch7x7_2", padding=(0, 3))
        b7 = conv(b7, f"{n}.branch7x7_3", padding=(3, 0))
        bd = conv(x, f"{n}.branch7x7dbl_1")
        for i, pad in zip((2, 3, 4, 5), ((3, 0), (0, 3), (3, 0), (0, 3)), strict=True):
            bd = conv(bd, f"{n}.branch7x7dbl_{i}", padding=pad)
        return torch.cat([conv(x, f"{n}.branch1x1"), b7, bd, conv(avg(x), f"{n}.branch_pool")], 1)

    def block_d(x, n):
        b3 = conv(conv(x, f"{n}.branch3x3_1"), f"{n}.branch3x3_2", stride=2)
        b7 = conv(conv(x, f"{n}.branch7x7x3_1"), f"{n}.branch7x7x3_2", padding=(0, 3))
        b7 = conv(conv(b7, f"{n}.branch7x7x3_3", padding=(3, 0)), f"{n}.branch7x7x3_4", stride=2)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, 2)], 1)

    def block_e(x, n, pool):
        b3 = conv(x, f"{n}.branch3x3_1")
        b3 = [
            conv(b3, f"{n}.branch3x3_2a", padding=(0, 1)),
            conv(b3, f"{n}.branch3x3_2b", padding=(1, 0)),
        ]
        bd = conv(conv(x, f"{n}.branch3x3dbl_1"), f"{n}.branch3x3dbl_2", padding=1)
        bd = [
            conv(bd, f"{n}.branch3x3dbl_3a", padding=(0, 1)),
            conv(bd, f"{n}.branch3x3dbl_3b", padding=(1, 0)),
        ]
        pooled = avg(x) if pool == "avg" else F.max_pool2d(x, 3, 1, 1)
        parts = [conv(x, f"{n}.branch1x1"), *b3, *bd, conv(pooled, f"{n}.branch_pool")]
        return torch.cat(parts, 1)

    with torch.no_grad():
        x = torch.from_numpy(np.asarray(images, np.float32)).permute(0, 3, 1, 2)
        x = 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
        x = conv(
            conv(conv(x, "Conv2d_1a_3x3", stride=2), "Conv2d_2a_3x3"), "Conv2d_2b_3x3", padding=1
        )
        x = conv(conv(F.max_pool2d(x, 3, 2), "Conv2d_3b_1x1"), "Conv2d_4a_3x3")
        x = F.max_pool2d(x, 3, 2)
        for n in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
            x = block_a(x, n)
        x = block_b(x, "Mixed_6a")
        for n in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
            x = block_c(x, n)
        x = block_e(block_e(block_d(x, "Mixed_7a"), "Mixed_7b", "avg"), "Mixed_7c", "max")
        return F.adaptive_avg_pool2d(x, 1).flatten(1).numpy()


# pytorch-fid's outputs for the random weights and inputs below, computed with torch by
# `PYTHONPATH=. python tests/test_metrics.py`. torch is not a test dependency, so CI compares
# with this file; test_the_stored_torch_reference_is_what_torch_computes checks the file
# wherever torch is installed.
TORCH_REFERENCE = Path(__file__).parent / "data" / "inception_torch_reference.npz"
RESIZED_EVERY = 7  # the stored resize reference keeps every 7th row and column


def reference_inputs():
    """(state dict, uint8 images for the forward, float images for the downsampling)."""
    images = np.random.default_rng(2).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    large = np.random.default_rng(3).uniform(size=(1, 320, 310, 3)).astype(np.float32)
    return random_torch_state_dict(1), images, large


def torch_reference() -> dict:
    import torch

    state, images, large = reference_inputs()
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(large).permute(0, 3, 1, 2), size=(299, 299), mode="bilinear"
    )
    resized = 2 * resized.permute(0, 2, 3, 1).numpy() - 1
    return {
        "features": torch_fid_inception(state, images / 255.0),
        "resized": resized[:, ::RESIZED_EVERY, ::RESIZED_EVERY],
    }


def test_inception_matches_pytorch_fid_on_the_same_weights(tmp_path):
    state, images, _ = reference_inputs()
    np.savez(tmp_path / "w.npz", **state)
    variables = inception.load_variables(tmp_path / "w.npz")
    ours = inception.inception_features(variables, images, batch_size=2)
    theirs = np.load(TORCH_REFERENCE)["features"]
    assert theirs.shape == (2, 2048) and np.std(theirs) > 0.01 * np.abs(theirs).max() > 0
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4 * np.abs(theirs).max())


def test_inception_downsampling_matches_torch_bilinear():
    _, _, large = reference_inputs()
    ours = np.asarray(inception.preprocess(jnp.asarray(large)))[:, ::RESIZED_EVERY, ::RESIZED_EVERY]
    np.testing.assert_allclose(ours, np.load(TORCH_REFERENCE)["resized"], atol=1e-5)


def test_the_stored_torch_reference_is_what_torch_computes():
    pytest.importorskip("torch")
    stored, live = np.load(TORCH_REFERENCE), torch_reference()
    for name, value in live.items():
        np.testing.assert_allclose(stored[name], value, rtol=1e-5, atol=1e-5, err_msg=name)


def test_convert_writes_the_state_dict_as_named_arrays(tmp_path):
    torch = pytest.importorskip("torch")
    state = random_torch_state_dict(4)
    tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    tensors["Conv2d_1a_3x3.bn.num_batches_tracked"] = torch.tensor(5)
    torch.save(tensors, tmp_path / "fid.pth")
    out = inception.convert(tmp_path / "fid.pth", tmp_path / "fid.npz")
    with np.load(out) as converted:
        assert set(converted.files) == set(state)
        np.testing.assert_array_equal(converted["Mixed_6e.branch7x7_2.conv.weight"],
                                      state["Mixed_6e.branch7x7_2.conv.weight"])  # fmt: skip
    with pytest.raises(ConfigError, match="must end in .npz"):
        inception.convert(tmp_path / "fid.pth", tmp_path / "fid.bin")


# --- the feature classifier -----------------------------------------------------------------


def test_classifier_cache_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 12, 12, 1), dtype=np.uint8)
    module = classifier.Classifier(3)
    params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 12, 12, 1)))["params"]
    meta = {"version": classifier.VERSION, "spec": "npz:/d/x.npz", "image_size": 0}
    meta |= {"shape": [12, 12, 1], "num_classes": 3, "test_accuracy": 0.5}
    trained = classifier.TrainedClassifier(module, params, meta)
    classifier.save(trained, tmp_path)
    assert (tmp_path / "npz_d_x.npz.json").is_file()
    loaded = classifier.load("npz:/d/x.npz", 0, tmp_path)
    a, b = classifier.outputs(trained, images, 16), classifier.outputs(loaded, images, 16)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape == (40, 128)
    assert classifier.load("npz:/d/x.npz", 32, tmp_path) is None  # another image size
    assert classifier.load("npz:/d/x.npz", 0, tmp_path, (12, 12, 1), 3) is not None
    assert classifier.load("npz:/d/x.npz", 0, tmp_path, (16, 16, 1), 3) is None  # data changed
    assert classifier.load("npz:/d/x.npz", 0, tmp_path, (12, 12, 1), 5) is None
    assert classifier.load("mnist5k", 0, tmp_path) is None


def test_classifier_outputs_of_a_ragged_last_batch_are_the_module_on_scaled_images():
    module = classifier.Classifier(4, embed=16)
    params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 12, 12, 1)))["params"]
    params = jax.tree.map(lambda p: p + 0.05, params)  # biases too: not scale-invariant
    trained = classifier.TrainedClassifier(module, params, {})
    images = np.random.default_rng(2).integers(0, 256, (7, 12, 12, 1), dtype=np.uint8)
    got_features, got_classes = classifier.outputs(trained, images, batch_size=3)  # 3, 3, 1
    h, logits = module.apply({"params": params}, jnp.asarray(images, jnp.float32) / 255.0)
    assert got_features.shape == (7, 16) and got_features.dtype == np.float64
    np.testing.assert_allclose(got_features, np.asarray(h), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got_classes, np.argmax(np.asarray(logits), axis=-1))


def test_safe_names():
    assert classifier.safe_name("idx:/data/mnist") == "idx_data_mnist"
    assert classifier.safe_name("tfds:cifar10", 32) == "tfds_cifar10_32px"


def test_shift_augmentation_moves_the_batch_by_at_most_two_pixels():
    x = np.zeros((3, 12, 12, 1), np.float32)
    x[:, 6, 5] = 1.0
    for seed in range(5):
        y = np.asarray(classifier.shifted(jnp.asarray(x), jax.random.PRNGKey(seed)))
        assert y.sum() == 3
        rows, cols = np.nonzero(y[..., 0].sum(0))
        assert abs(rows[0] - 6) <= 2 and abs(cols[0] - 5) <= 2
        np.testing.assert_array_equal(y[0], y[2])  # one offset for the whole batch


def test_autoregressive_log_weights_computed_once_per_example_equal_the_direct_ones():
    from genjax import experiment, objectives

    c = base_config()
    c.model.name, c.model.hidden, c.model.z_dim, c.model.ar_kernel = "vae_mlp", 16, 3, 3
    exp = experiment.build(c, "image", (6, 5, 1))
    state = exp.init_state(jax.random.PRNGKey(0))
    state = state.replace(params=jax.tree.map(lambda p: p + 0.2, state.params))
    encode, log_weight = importance_functions(exp.models, "bernoulli")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(3, 6, 5, 1)) < 0.5, jnp.float32)
    mean, logvar = encode(state, x)
    z = jnp.asarray(rng.normal(size=(3, 4, 3)), jnp.float32)
    lw = log_weight(state, x[:, None], z, mean[:, None], logvar[:, None])
    assert lw.shape == (3, 4)
    variables = {"params": state.params["decoder"], "batch_stats": {}}
    for b in range(3):
        for s in range(4):
            out = exp.models[1].apply(variables, z[b, s][None], x[b][None], False)
            direct = objectives.log_importance_weights(
                out,
                x[b][None],
                z[b, s][None],
                mean[b][None],
                logvar[b][None],
                likelihood="bernoulli",
            )
            np.testing.assert_allclose(lw[b, s], direct[0], rtol=1e-5)


if __name__ == "__main__":  # writes TORCH_REFERENCE (needs torch: the [bench] extra)
    TORCH_REFERENCE.parent.mkdir(exist_ok=True)
    np.savez(TORCH_REFERENCE, **torch_reference())
    print(f"wrote {TORCH_REFERENCE}")
