"""The VQ-VAE families (genjax/families/vqvae.py) and the discretised logistic likelihood,
against independent computations: numpy nearest codes, straight-through gradients, the EMA
update and restarts by hand, perplexity from counts, the prior's causality and code NLL, the
likelihood as differences of logistic CDFs (scipy); the two stages trained in-process on
8x8 images, sampled and evaluated from the prior's workdir alone; bad first-stage workdirs
refused before anything is written; the 64x64x3 VAE config built by shape only."""

import importlib
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import expit, log_softmax

from genjax import objectives
from genjax.config import ConfigError, base_config, resolve
from genjax.families import vqvae as vq
from genjax.models import vqvae as models
from genjax.parallel import AXIS


def softplus(a):
    return np.logaddexp(0.0, a)


# one compiled call each (eager ops compile one by one)
discretized_logistic = jax.jit(objectives.discretized_logistic_log_likelihood)


# ------------------------------------------------------------------- discretised logistic


def test_discretized_logistic_is_the_mass_of_each_8bit_bin():
    rng = np.random.default_rng(0)
    shape = (3, 4, 4, 2)
    x = rng.integers(0, 256, shape)
    x[0, 0, 0], x[0, 0, 1] = 0, 255  # both edge bins
    mean = x / 255.0 + rng.normal(0.0, 0.05, shape)  # masses well above float rounding
    log_s = rng.uniform(-4.0, -1.0, shape)
    out = np.concatenate([mean, log_s], -1).astype(np.float32)
    got = discretized_logistic(out, x / 255.0)

    s = np.exp(log_s.astype(np.float32).astype(np.float64))
    mu = mean.astype(np.float32).astype(np.float64)
    upper = np.where(x == 255, 1.0, expit((x / 255.0 + 0.5 / 255 - mu) / s))
    lower = np.where(x == 0, 0.0, expit((x / 255.0 - 0.5 / 255 - mu) / s))
    want = np.log(upper - lower).reshape(3, -1).sum(1)
    np.testing.assert_allclose(got, want, rtol=2e-4)
    far = np.array([[[[0.0, -6.0]]]], np.float32)  # 128 levels from a narrow bump: < 1e-5
    tail = discretized_logistic(far, np.full((1, 1, 1, 1), 128 / 255, np.float32))
    a, b = (128.5 / 255 - 0.0) / math.exp(-6.0), (127.5 / 255 - 0.0) / math.exp(-6.0)
    exact = -softplus(b) + np.log(-np.expm1(-(a - b)))  # log(sig(-b) - sig(-a)), stable
    assert float(tail[0]) == pytest.approx(exact, rel=1e-3)  # the density * width branch

    # the 256 bins of one pixel hold all the mass; the mean is the location, clipped
    levels = np.arange(256, dtype=np.float32)[:, None, None, None] / 255.0
    one = np.broadcast_to(np.array([0.3, -2.0], np.float32), (256, 1, 1, 2))
    mass = np.exp(discretized_logistic(one, levels))
    assert float(mass.sum()) == pytest.approx(1.0, rel=1e-4)
    assert objectives.LOG_LIKELIHOODS["discretized_logistic"] is (
        objectives.discretized_logistic_log_likelihood
    )
    np.testing.assert_allclose(
        objectives.likelihood_mean(out, "discretized_logistic"), np.clip(mean, 0, 1), rtol=1e-6
    )


def test_vae_celeba64_builds_at_64x64x3_with_two_channels_per_colour():
    from genjax import experiment

    config = importlib.import_module("configs.vae_celeba64").get_config()
    assert (config.data.train, config.data.center_crop, config.data.image_size) == (
        "tfds:celeb_a",
        108,
        64,
    )
    assert config.vae.likelihood == "discretized_logistic"
    exp = experiment.build(config, "image", (64, 64, 3))
    state = jax.eval_shape(exp.init_state, jax.random.PRNGKey(0))
    z = jnp.zeros((2, exp.config.model.z_dim))
    out = jax.eval_shape(
        lambda s: exp.models[1].apply({"params": s.params["decoder"]}, z, train=False), state
    )
    assert out.shape == (2, 64, 64, 6)  # mu and log s per colour


def test_a_discretized_logistic_vae_reports_bits_per_dim():
    """evaluate's VAE test metrics add test_bits_per_dim = test_nll / (H W C ln 2)."""
    from genjax import experiment

    c = base_config()
    c.model.name, c.model.z_dim, c.model.hidden, c.model.depth = "vae_mlp", 2, 8, 1
    c.vae.likelihood = "discretized_logistic"
    exp = experiment.build(c, "image", (4, 4, 3))
    state = exp.init_state(jax.random.PRNGKey(0))
    test = {"image": np.random.default_rng(0).integers(0, 256, (6, 4, 4, 3), np.uint8)}
    out = exp.test_metrics(state, test, k=2, seed=0)
    assert out["test_bits_per_dim"] == pytest.approx(out["test_nll"] / (48 * math.log(2)))
    assert out["test_bits_per_dim"] > 0


# ------------------------------------------------------------------ codebook mechanics


def test_quantize_picks_the_nearest_code_and_passes_gradients_straight_through():
    rng = np.random.default_rng(1)
    z_e = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    codebook = rng.normal(size=(5, 4)).astype(np.float32)
    d = ((z_e[..., None, :] - codebook) ** 2).sum(-1)
    z_q, codes, e = jax.jit(models.quantize)(jnp.asarray(z_e), jnp.asarray(codebook))
    np.testing.assert_array_equal(codes, d.argmin(-1))
    np.testing.assert_allclose(z_q, codebook[d.argmin(-1)], rtol=1e-6, atol=1e-6)
    w = rng.normal(size=z_e.shape).astype(np.float32)

    def f(z, c):
        return jnp.sum(w * models.quantize(z, c)[0])

    dz, dc = jax.jit(jax.grad(f, argnums=(0, 1)))(jnp.asarray(z_e), jnp.asarray(codebook))
    np.testing.assert_allclose(dz, w, rtol=1e-6)  # d z_q / d z_e = identity
    np.testing.assert_array_equal(dc, 0.0)  # no gradient reaches the codes through z_q


def test_ema_update_and_restarts_by_hand():
    rng = np.random.default_rng(2)
    k, dim, decay = 4, 3, 0.9
    count = rng.uniform(0.5, 2.0, k).astype(np.float32)
    total = rng.normal(size=(k, dim)).astype(np.float32)
    z = rng.normal(size=(10, dim)).astype(np.float32)
    codes = np.array([0, 0, 1, 3, 3, 3, 1, 0, 0, 3])
    counts = np.bincount(codes, minlength=k).astype(np.float32)
    sums = np.stack([z[codes == i].sum(0) for i in range(k)])
    got = jax.jit(vq.ema_update, static_argnums=4)(count, total, counts, sums, decay)
    n_i = decay * count + (1 - decay) * counts
    m_i = decay * total + (1 - decay) * sums
    smoothed = (n_i + 1e-5) / (n_i.sum() + k * 1e-5) * n_i.sum()
    for a, b in zip(got, (n_i, m_i, m_i / smoothed[:, None]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(vq.code_counts(jnp.asarray(codes), k), counts)

    # code 2 unused for its third step restarts on a candidate; 0, 1 and 3 were used
    unused = np.array([5, 0, 2, 9], np.int32)
    key = jax.random.PRNGKey(3)
    restart = jax.jit(vq.restart_dead_codes, static_argnums=7)
    codebook, c2, t2, u2, restarted = restart(total, count, total, unused, counts, z, key, 3)
    picks = z[np.asarray(jax.random.randint(key, (k,), 0, len(z)))]
    np.testing.assert_array_equal(u2, [0, 0, 0, 0])
    np.testing.assert_array_equal(np.asarray(codebook)[[0, 1, 3]], total[[0, 1, 3]])
    np.testing.assert_array_equal(codebook[2], picks[2])
    np.testing.assert_array_equal(t2[2], picks[2])
    assert float(c2[2]) == 1.0 and float(restarted) == 1.0
    _, _, _, u3, none = restart(total, count, total, unused, counts, z, key, 0)
    np.testing.assert_array_equal(u3, [0, 0, 3, 0])  # 0 = never restart; idle steps count
    assert float(none) == 0.0


def test_perplexity_and_usage_from_counts():
    counts = np.array([5.0, 0.0, 3.0, 2.0, 0.0])
    p = counts / counts.sum()
    nz = p[p > 0]
    perplexity, usage = jax.jit(vq.perplexity_and_usage)(jnp.asarray(counts))
    assert float(perplexity) == pytest.approx(math.exp(-(nz * np.log(nz)).sum()), rel=1e-6)
    assert float(usage) == pytest.approx(0.6)
    assert float(jax.jit(vq.perplexity_and_usage)(jnp.ones(8))[0]) == pytest.approx(8.0)


# --------------------------------------------------------------------------- one step


def small_vqvae_config(data: str, **vqvae_fields):
    c = base_config()
    c.model.name = "vqvae_conv"
    c.model.z_dim, c.model.features = 3, 4
    c.data.train = data
    c.vqvae.codebook_size = 6
    for key, value in vqvae_fields.items():
        c.vqvae[key] = value
    c.batch_size, c.steps_per_call, c.num_steps = 16, 3, 6
    c.optim.lr, c.optim.b1 = 3e-3, 0.9
    c.log_every = c.sample_every = c.checkpoint_every = 6
    c.num_samples = 4
    return c


@pytest.mark.parametrize("ema", [False, True])
def test_one_step_is_the_papers_loss_and_codebook_update(ema):
    """The step's loss is recon + beta * commitment (+ the codebook term) computed here with
    numpy's nearest codes; SGD moves each gradient-trained code by lr * d/de of the codebook
    term, or the EMA update by hand replaces it."""
    from genjax import experiment

    config = small_vqvae_config("mnist5k", binarize=False, ema_decay=0.8 if ema else 0.0)
    config.optim.name, config.optim.lr = "sgd", 0.1
    exp = experiment.build(config, "image", (8, 8, 1))
    state = exp.init_state(jax.random.PRNGKey(0))
    images = np.random.default_rng(4).integers(0, 256, (1, 5, 8, 8, 1), np.uint8)
    step = jax.jit(jax.vmap(exp.step(), axis_name=AXIS))
    lift = lambda tree: jax.tree.map(lambda a: a[None], tree)  # noqa: E731
    new, metrics = step(lift(state), {"image": images[None]}, lift(jax.random.PRNGKey(1)))
    new = jax.tree.map(lambda a: a[0], new)

    x = images[0] / 255.0
    p = state.params
    encode = jax.jit(lambda params, x: exp.models[0].apply({"params": params}, x, train=False))
    decode = jax.jit(lambda params, e: exp.models[1].apply({"params": params}, e, train=False))
    z_e = np.asarray(encode(p["encoder"], x))
    codebook = np.asarray(p["codebook"])
    codes = ((z_e[..., None, :] - codebook) ** 2).sum(-1).argmin(-1)
    e = codebook[codes]
    logits = np.asarray(decode(p["decoder"], e), np.float64)
    recon = -(x * logits - softplus(logits)).reshape(5, -1).sum(1)
    distance = ((z_e - e) ** 2).reshape(5, -1).sum(1)
    loss = recon + 0.25 * distance + (0.0 if ema else distance)
    assert float(metrics["loss"][0]) == pytest.approx(loss.mean(), rel=1e-4)
    assert float(metrics["commitment"][0]) == pytest.approx(distance.mean(), rel=1e-4)
    counts = np.bincount(codes.reshape(-1), minlength=6)
    assert float(metrics["usage"][0]) == pytest.approx((counts > 0).mean())

    flat, z_flat = codes.reshape(-1), z_e.reshape(-1, 3)
    sums = np.stack([z_flat[flat == i].sum(0) for i in range(6)])
    if ema:
        count = 0.8 * 1.0 + 0.2 * counts
        total = 0.8 * codebook + 0.2 * sums
        smoothed = (count + 1e-5) / (count.sum() + 6e-5) * count.sum()
        want = total / smoothed[:, None]
    else:  # d/de_k of mean_b sum_j |sg z_j - e|^2 = 2 / B (n_k e_k - sum of its z_j)
        want = codebook - 0.1 * 2.0 / 5 * (counts[:, None] * codebook - sums)
    np.testing.assert_allclose(new.params["codebook"], want, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- two stages, trained


def blobs(n, seed):
    """8x8 grey images: one bright 3x3 square at a random place each."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 8, 8, 1), np.uint8)
    for image, (i, j) in zip(x, rng.integers(0, 6, (n, 2)), strict=True):
        image[i : i + 3, j : j + 3] = 255
    return x


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """A VQ-VAE (EMA codebook, restarts) and its prior, each trained 6 steps on 8x8 blobs."""
    from genjax.train import Trainer

    root = tmp_path_factory.mktemp("vqvae")
    np.savez(root / "blobs.npz", images=blobs(64, 0), test_images=blobs(20, 1))
    data = f"npz:{root / 'blobs.npz'}"
    first = small_vqvae_config(data, ema_decay=0.9, restart_dead=2)
    Trainer(first, root / "first").run()
    prior = base_config()
    prior.model.name = "vq_prior"
    prior.model.hidden, prior.model.depth = 8, 1
    prior.data.train = data
    prior.prior.vqvae_workdir = str(root / "first")
    prior.batch_size, prior.steps_per_call, prior.num_steps = 16, 3, 6
    prior.optim.lr, prior.optim.b1 = 1e-2, 0.9
    prior.log_every = prior.sample_every = prior.checkpoint_every = 6
    prior.num_samples = 4
    Trainer(prior, root / "prior").run()
    return root, prior


def test_the_first_stage_logs_its_codebook(stages):
    root, _ = stages
    rows = [json.loads(line) for line in open(root / "first" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [6]
    row = rows[-1]
    assert 1.0 <= row["perplexity"] <= 6.0 and 0.0 < row["usage"] <= 1.0
    assert row["restarted"] >= 0 and row["skipped_updates"] == 0
    assert (root / "first" / "samples" / "step_00000006.png").is_file()


def test_the_prior_samples_and_evaluates_from_its_workdir(stages, tmp_path):
    from genjax.experiment import restore
    from genjax.sampling import write_samples

    root, _ = stages
    run = restore(root / "prior")
    first = restore(root / "first")
    for part in ("encoder", "decoder", "codebook"):  # the checkpoint holds the frozen stage
        for a, b in zip(
            jax.tree.leaves(run.state.frozen[part]),
            jax.tree.leaves(first.state.params[part]),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
    out = write_samples(root / "prior", tmp_path / "s.npz", num=5)
    samples = np.load(out)["samples"]
    assert samples.shape == (5, 8, 8, 1) and samples.dtype == np.uint8
    with pytest.raises(ConfigError, match="interpolate does not apply"):
        write_samples(root / "prior", tmp_path / "i.png", mode="interpolate")

    test = run.test_source.to_arrays()
    metrics = run.experiment.test_metrics(run.state, test, k=1, seed=3)
    stage1 = first.experiment.test_metrics(first.state, test, k=1, seed=3)
    assert metrics["test_recon"] == pytest.approx(stage1["test_recon"], rel=1e-6)
    assert metrics["test_neg_elbo"] == pytest.approx(
        metrics["test_recon"] + metrics["test_code_nll"], rel=1e-6
    )
    assert metrics["test_bits_per_dim"] == pytest.approx(
        metrics["test_neg_elbo"] / (64 * math.log(2)), rel=1e-6
    )
    assert stage1["test_neg_elbo"] == pytest.approx(
        stage1["test_recon"] + 4 * math.log(6), rel=1e-6
    )  # the uniform prior over 2x2 codes of 6

    # the code NLL, position by position: logits at i see only the codes before i
    encoder, _, prior = run.experiment.models
    x = vq.test_inputs(test, run.experiment.kind, first.experiment.config.vqvae, 3)
    _, codes = vq.encode_codes(encoder, run.state.frozen, jnp.asarray(x))
    codes = np.asarray(codes).reshape(len(x), -1)
    variables = {"params": run.state.params}
    apply = jax.jit(prior.apply)
    total = np.zeros(len(x))
    for i in range(codes.shape[1]):
        scrambled = codes.copy()
        scrambled[:, i:] = np.random.default_rng(i).integers(0, 6, scrambled[:, i:].shape)
        logits = np.asarray(apply(variables, jnp.asarray(scrambled)))[:, i]
        total += log_softmax(logits.astype(np.float64), -1)[np.arange(len(x)), codes[:, i]]
    assert metrics["test_code_nll"] == pytest.approx(-total.mean(), rel=1e-4)


def bad_prior(workdir):
    c = base_config()
    c.model.name = "vq_prior"
    c.data.train = "mnist5k"
    c.prior.vqvae_workdir = str(workdir)
    return c


def test_a_bad_first_stage_workdir_is_one_line_naming_what_is_valid(stages, tmp_path):
    from genjax.train import Trainer

    root, _ = stages
    vae = tmp_path / "vae"
    vae.mkdir()
    other = base_config()
    other.model.name, other.data.train = "vae_mlp", "mnist5k"
    (vae / "config.json").write_text(resolve(other).to_json_best_effort())
    cases = [
        (tmp_path / "missing", "no such directory; valid: the workdir of a trained VQ-VAE"),
        (vae, r"holds a 'vae_mlp' model \(a vae\), not a VQ-VAE; valid: .*vqvae_conv"),
        ("", "vqvae_workdir is empty; valid"),
        (root / "first", r"holds a VQ-VAE of data \(8, 8, 1\).*\(28, 28, 1\)"),  # mnist5k
    ]
    for workdir, message in cases:
        with pytest.raises(ConfigError, match=message):
            Trainer(bad_prior(workdir), tmp_path / "run")
        assert not (tmp_path / "run").exists()
