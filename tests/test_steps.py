"""Data parallelism and chunking do not change the maths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import experiment
from genjax.config import ConfigError, base_config, resolve
from genjax.parallel import DataParallel
from genjax.train import make_chunk

CASES = [
    (family, mode, data)
    for family in ("gan", "vae", "text_vae")
    for mode in ("shard_map", "pmap")
    for data in ("on_device", "host")
    if (family, data) != ("text_vae", "host")  # tests/multidevice_check.py: not run
]


@pytest.mark.parametrize("family,mode,data", CASES)
def test_eight_devices_equal_one_device_on_the_whole_batch(multidevice_report, family, mode, data):
    r = multidevice_report[f"{family}/{mode}/{data}"]
    assert r["steps"] == 6
    assert r["moved"] > 100, "training did not change the parameters; the test would be vacuous"
    assert r["violation"] <= 1.0, f"params differ: allclose(rtol=1e-5, atol=1e-6) x{r['violation']}"
    assert r["metrics_violation"] <= 1.0


def _ring_experiment():
    c = base_config()
    c.model.name, c.model.hidden = "toy_mlp", 32
    c.batch_size = 32
    return experiment.build(c, "point", (2,))


def _train_ring(steps_per_call: int, num_steps: int = 20):
    exp = _ring_experiment()
    c = exp.config
    par = DataParallel("shard_map")
    state = par.replicate(exp.init_state(jax.random.PRNGKey(0)))
    dataset = par.replicate(
        {"point": np.random.default_rng(0).normal(size=(500, 2)).astype(np.float32)}
    )
    chunk = par.compile(make_chunk(exp.step(), steps_per_call, True, 1, c.batch_size), False)
    for _ in range(num_steps // steps_per_call):
        state, _ = chunk(state, dataset, jax.random.PRNGKey(3))
    return jax.device_get(state)


def test_steps_per_call_does_not_change_the_result():
    one, ten = _train_ring(1), _train_ring(10)
    assert int(one.step) == int(ten.step) == 20
    _assert_close(one, ten, rtol=1e-6, atol=1e-7)
    start = jax.device_get(_ring_experiment().init_state(jax.random.PRNGKey(0)))
    assert not np.allclose(jax.tree.leaves(start.g_params)[0], jax.tree.leaves(one.g_params)[0])


def _poisoned_step(c, data_shape, dataset, poison):
    """One compiled step from a state whose `poison(state)` put a NaN in a weight."""
    exp = experiment.build(c, "point" if len(data_shape) == 1 else "image", data_shape)
    par = DataParallel("shard_map")
    state = poison(exp.init_state(jax.random.PRNGKey(0)))
    chunk = par.compile(
        make_chunk(exp.step(), 1, True, exp.data_per_step, c.batch_size), data_sharded=False
    )
    before = jax.device_get(state)
    after, metrics = chunk(par.replicate(state), par.replicate(dataset), jax.random.PRNGKey(1))
    return before, jax.device_get(after), jax.device_get(metrics)


def _nan_in_first_kernel(params):
    leaves, treedef = jax.tree.flatten(params)
    leaves[0] = leaves[0].at[(0,) * leaves[0].ndim].set(np.nan)
    return jax.tree.unflatten(treedef, leaves)


def _assert_unchanged(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)  # NaN equals NaN here


def _assert_close(a, b, rtol, atol, what=""):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=what)


def test_a_vae_update_with_a_nonfinite_loss_is_not_applied():
    c = base_config()
    c.model.name, c.model.hidden, c.model.z_dim = "vae_mlp", 16, 2
    c.batch_size = 8
    images = np.random.default_rng(0).integers(0, 256, (32, 4, 4, 1), dtype=np.uint8)
    poison = lambda s: s.replace(params=_nan_in_first_kernel(s.params))  # noqa: E731
    before, after, metrics = _poisoned_step(c, (4, 4, 1), {"image": images}, poison)
    assert int(metrics["skipped"]) == 1 and not np.isfinite(metrics["loss"])
    assert int(after.step) == 1
    _assert_unchanged(before.params, after.params)
    _assert_unchanged(before.opt_state, after.opt_state)

    clean = lambda s: s  # noqa: E731
    before, after, metrics = _poisoned_step(c, (4, 4, 1), {"image": images}, clean)
    assert int(metrics["skipped"]) == 0
    assert not np.array_equal(jax.tree.leaves(before.params)[0], jax.tree.leaves(after.params)[0])


def test_gan_updates_with_nonfinite_losses_are_not_applied_and_are_counted():
    c = base_config()
    c.model.name, c.model.hidden = "toy_mlp", 16
    c.batch_size, c.gan.n_critic = 8, 3
    points = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    poison = lambda s: s.replace(d_params=_nan_in_first_kernel(s.d_params))  # noqa: E731
    before, after, metrics = _poisoned_step(c, (2,), {"point": points}, poison)
    # Every critic update sees a NaN critic, and so does the generator's.
    assert int(metrics["skipped"]) == c.gan.n_critic + 1
    for field in ("g_params", "d_params", "g_opt_state", "d_opt_state"):
        _assert_unchanged(getattr(before, field), getattr(after, field))


def test_pack_concatenates_consecutive_examples_along_the_last_axis():
    from genjax.families.gan import pack

    points = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.testing.assert_array_equal(pack(points, 3), [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]])
    images = np.random.default_rng(0).normal(size=(4, 3, 3, 2)).astype(np.float32)
    packed = np.asarray(pack(images, 2))
    assert packed.shape == (2, 3, 3, 4)
    np.testing.assert_array_equal(packed[1, ..., :2], images[2])
    np.testing.assert_array_equal(packed[1, ..., 2:], images[3])
    assert pack(images, 1) is images


@pytest.mark.parametrize("name", ["toy_mlp", "dcgan"])
def test_a_packed_gan_trains(name):
    c = base_config()
    c.model.name = name
    c.model[("hidden" if name == "toy_mlp" else "features")] = 16 if name == "toy_mlp" else 8
    c.batch_size, c.gan.pack = 8, 4
    shape = (2,) if name == "toy_mlp" else (16, 16, 1)
    data = (
        {"point": np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)}
        if name == "toy_mlp"
        else {"image": np.random.default_rng(0).integers(0, 256, (64, *shape), dtype=np.uint8)}
    )
    before, after, metrics = _poisoned_step(c, shape, data, lambda s: s)
    kernels = [x.shape for x in jax.tree.leaves(after.d_params) if x.ndim >= 2]
    assert any(k[-2] == 4 * shape[-1] for k in kernels), kernels  # D sees packs of 4
    assert int(metrics["skipped"]) == 0 and np.isfinite(metrics["g_loss"])


# ------------------------------------------------ the step maths against plain recomputations


def test_data_kinds_scale_images_to_each_familys_range_and_back():
    # uint8 -> [-1, 1] for GANs and [0, 1] for VAEs (hand values); points pass through.
    from genjax.data.kinds import KINDS
    from genjax.families import GAN, VAE

    image, point = KINDS["image"], KINDS["point"]
    images = {"image": np.array([0, 51, 255], np.uint8), "label": np.array([1, 2, 3])}
    gan_in = image.model_input(images, GAN.value_range)
    np.testing.assert_allclose(gan_in, [-1.0, -0.6, 1.0], atol=1e-6)
    np.testing.assert_allclose(image.model_input(images, VAE.value_range), [0, 0.2, 1], atol=1e-6)
    np.testing.assert_allclose(image.from_model(gan_in, GAN.value_range), [0, 0.2, 1], atol=1e-6)
    points = {"point": np.array([[-3.5, 2.0]])}
    np.testing.assert_array_equal(point.model_input(points, GAN.value_range), [[-3.5, 2.0]])
    assert image.batch_keys(["image", "label", "filename"]) == ("image", "label")


def _learning_rates(tx, n, grad=3.0):
    """The learning rates of n SGD updates of `tx` (update / -grad, grad != 1 so Adam differs)."""
    params = {"w": jnp.zeros(())}
    opt_state, rates = tx.init(params), []
    for _ in range(n):
        updates, opt_state = tx.update({"w": jnp.float32(grad)}, opt_state, params)
        rates.append(float(-updates["w"] / grad))
    return rates


def test_gan_learning_rate_schedules_decay_over_each_networks_own_updates():
    # Hand values: lr constant for the first half of the run, then linearly to 0; D makes
    # n_critic updates per step, at d_lr, so its schedule spans n_critic x num_steps updates.
    from genjax.families.gan import gan_optimizers

    c = base_config()
    c.optim.name, c.optim.lr, c.gan.d_lr, c.optim.decay_from = "sgd", 1.0, 0.5, 0.5
    c.num_steps, c.gan.n_critic = 4, 2
    c = resolve(c)
    g_tx, d_tx = gan_optimizers(c)
    np.testing.assert_allclose(_learning_rates(g_tx, 4), [1, 1, 1, 0.5], rtol=1e-6)
    d_rates = _learning_rates(d_tx, 8)
    np.testing.assert_allclose(d_rates, [0.5] * 5 + [0.375, 0.25, 0.125], rtol=1e-6)
    c.gan.d_lr = 0.0  # 0: D at lr
    np.testing.assert_allclose(_learning_rates(gan_optimizers(c)[1], 1), [1.0], rtol=1e-6)


def test_adam_updates_equal_a_hand_written_adam_with_b1_and_b2():
    # Adam (Kingma & Ba 2015, algorithm 1; eps 1e-8) in numpy, with distinct b1 and b2.
    from genjax.families.vae import vae_optimizer

    c = base_config()
    c.optim.lr, c.optim.b1, c.optim.b2 = 0.1, 0.5, 0.9
    tx = vae_optimizer(c)
    params = {"w": jnp.zeros(())}
    opt_state, m, v, w = tx.init(params), 0.0, 0.0, 0.0
    for t, g in enumerate([1.0, -2.0, 0.5, 3.0], start=1):
        updates, opt_state = tx.update({"w": jnp.float32(g)}, opt_state, params)
        params = {"w": params["w"] + updates["w"]}
        m, v = 0.5 * m + 0.5 * g, 0.9 * v + 0.1 * g * g
        w -= 0.1 * (m / (1 - 0.5**t)) / (np.sqrt(v / (1 - 0.9**t)) + 1e-8)
        np.testing.assert_allclose(float(params["w"]), w, rtol=1e-5)


def test_apply_if_finite_applies_or_keeps_params_opt_state_and_stats():
    # SGD at lr 1 by hand; a non-finite loss alone (finite gradients) or gradient also skips.
    import optax

    from genjax.steps import apply_if_finite

    tx = optax.sgd(1.0)
    params, new_stats, old_stats = {"w": jnp.array([1.0, 2.0])}, {"m": 5.0}, {"m": 7.0}
    grads = {"w": jnp.array([0.5, -0.5])}
    opt_state = tx.init(params)
    p, _, stats, ok = apply_if_finite(
        tx, grads, jnp.float32(1.0), params, opt_state, new_stats, old_stats
    )
    assert bool(ok) and float(stats["m"]) == 5.0
    np.testing.assert_allclose(p["w"], [0.5, 2.5])
    bad_grads = {"w": jnp.array([0.5, np.nan])}
    for g, loss in [(grads, jnp.float32(np.inf)), (bad_grads, jnp.float32(1.0))]:
        p, _, stats, ok = apply_if_finite(tx, g, loss, params, opt_state, new_stats, old_stats)
        assert not bool(ok) and float(stats["m"]) == 7.0
        np.testing.assert_array_equal(p["w"], [1.0, 2.0])


def test_guard_records_the_first_nonfinite_step_with_its_metrics():
    # A fake step that skips its update at model steps 2 and 4 (0-based, before the step).
    from flax import struct

    from genjax.steps import guard_nonfinite, new_train_state

    @struct.dataclass
    class Model:
        step: jax.Array

    def fake_step(model, batch, key):
        s = model.step.astype(jnp.float32)
        skipped = ((model.step == 2) | (model.step == 4)).astype(jnp.int32)
        metrics = {"kl": s, "loss": 10 * s, "recon": 100 * s, "skipped": skipped}
        return model.replace(step=model.step + 1), metrics

    names = ("kl", "loss", "recon")
    guarded = guard_nonfinite(fake_step, names)
    ts = new_train_state(Model(step=jnp.zeros((), jnp.int32)), names)
    for _ in range(6):
        ts, metrics = guarded(ts, None, None)
    assert int(ts.skipped) == 2 and int(metrics["skipped_updates"]) == 2
    assert int(ts.nonfinite_step) == 2  # train.py reports it as step 3 (1-based)
    np.testing.assert_array_equal(ts.nonfinite_values, [2.0, 20.0, 200.0])  # kl, loss, recon


def test_data_per_step_is_n_critic_for_gans_and_one_for_vaes():
    from genjax.families import GAN, VAE

    c = base_config()
    c.gan.n_critic = 3
    assert GAN.data_per_step(resolve(c)) == 3
    c.model.name, c.gan.n_critic = "vae_mlp", None
    assert VAE.data_per_step(resolve(c)) == 1


def test_pack_must_divide_the_per_device_batch():
    from genjax.families import GAN

    c = base_config()
    c.gan.pack = 3
    c = resolve(c)
    GAN.check_batch(c, 6)
    with pytest.raises(ConfigError, match="gan.pack=3"):
        GAN.check_batch(c, 8)


def test_device_mean_and_per_example_noise_over_a_vmapped_data_axis():
    # 4 vmapped "devices": the mean over them, and each one's rows of one global draw.
    from genjax.parallel import device_mean, per_example_noise

    x = jnp.arange(8.0).reshape(4, 2)
    means = jax.vmap(device_mean, axis_name="data")(x)
    np.testing.assert_allclose(means, np.broadcast_to([3.0, 4.0], (4, 2)))
    key = jax.random.PRNGKey(5)
    draw = lambda _: per_example_noise(jax.random.normal, key, (3, 2))  # noqa: E731
    noise = jax.vmap(draw, axis_name="data")(jnp.zeros(4))
    assert noise.shape == (4, 3, 2)
    np.testing.assert_array_equal(noise.reshape(12, 2), jax.random.normal(key, (12, 2)))


def _one_device_step(exp, state, batch, key):
    """exp's step on one device: the 'data' axis of size 1 is a vmap."""
    step = jax.jit(jax.vmap(exp.step(), in_axes=(None, 0, None), axis_name="data"))
    new, metrics = step(state, jax.tree.map(lambda a: a[None], batch), key)
    return jax.tree.map(lambda a: a[0], new), jax.tree.map(lambda a: a[0], metrics)


def _one_step_on_random_images(c, shape, seed):
    """(experiment, initial state, the uint8 batch (1, B, *shape), key, new state, metrics)
    of one step of config `c` on random images."""
    exp = experiment.build(c, "image", shape)
    state = exp.init_state(jax.random.PRNGKey(0))
    images = np.random.default_rng(0).integers(0, 256, (1, c.batch_size, *shape), np.uint8)
    key = jax.random.PRNGKey(seed)
    new, metrics = _one_device_step(exp, state, {"image": images}, key)
    return exp, state, images, key, new, metrics


def _sgd(params, grads, lr):
    return jax.tree.map(lambda p, g: p - lr * g, params, grads)


def test_a_wgan_gp_pacgan_step_equals_a_plain_recomputation():
    # n_critic critic updates (Wasserstein loss + gp_weight x penalty on interpolated packs),
    # then one generator update, by hand with SGD, from the same keys as the step.
    c = base_config()
    c.model.name, c.model.hidden, c.model.z_dim = "toy_mlp", 8, 2
    c.batch_size, c.gan.n_critic, c.gan.pack = 4, 2, 2
    c.gan.loss, c.gan.gp_weight = "wgan_gp", 3.0
    c.optim.name, c.optim.lr, c.gan.d_lr = "sgd", 0.1, 0.05
    exp = experiment.build(c, "point", (2,))
    state = exp.init_state(jax.random.PRNGKey(0))
    reals = np.random.default_rng(0).normal(size=(2, 4, 2)).astype(np.float32)
    key = jax.random.PRNGKey(7)
    new, metrics = _one_device_step(exp, state, {"point": reals}, key)

    gen, disc = exp.models
    g_params, d_params = state.g_params, state.d_params
    fakes = lambda g, z: gen.apply({"params": g}, z, train=False).reshape(2, 4)  # noqa: E731
    for real, k in zip(reals, jax.random.split(jax.random.fold_in(key, 0), 2), strict=True):
        z_key, gp_key = jax.random.split(k)
        fake, real = fakes(g_params, jax.random.normal(z_key, (4, 2))), real.reshape(2, 4)
        eps = jax.random.uniform(gp_key, (2,))[:, None]

        def critic_loss(d):
            f = lambda x: disc.apply({"params": d}, x, train=False)  # noqa: E731, B023
            loss = jnp.mean(f(fake)) - jnp.mean(f(real))  # noqa: B023
            g = jax.grad(lambda x: jnp.sum(f(x)))(eps * real + (1 - eps) * fake)  # noqa: B023
            penalty = 3.0 * jnp.mean((jnp.sqrt(jnp.sum(g**2, -1) + 1e-12) - 1) ** 2)
            return loss + penalty, (loss, penalty)

        grads, (d_loss, penalty) = jax.grad(critic_loss, has_aux=True)(d_params)
        d_params = _sgd(d_params, grads, 0.05)
    z = jax.random.normal(jax.random.fold_in(key, 1), (4, 2))

    def g_loss_fn(g):
        return -jnp.mean(disc.apply({"params": d_params}, fakes(g, z), train=False))

    g_loss, grads = jax.value_and_grad(g_loss_fn)(g_params)
    g_params = _sgd(g_params, grads, 0.1)

    expected = {"d_loss": d_loss, "gradient_penalty": penalty, "g_loss": g_loss}
    for name, value in expected.items():  # the metrics of the last critic update
        np.testing.assert_allclose(metrics[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    assert float(penalty) > 1e-3  # the penalty is not vacuous
    _assert_close(new.d_params, d_params, rtol=1e-5, atol=1e-6)
    _assert_close(new.g_params, g_params, rtol=1e-5, atol=1e-6)
    assert int(new.step) == 1


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_a_vae_step_equals_a_plain_recomputation(likelihood):
    # Binarise (Bernoulli only), reparameterise z = mean + exp(logvar / 2) eps, minimise
    # mean(recon + beta KL) with the KL written out (Kingma & Welling 2013, appendix B); SGD.
    from genjax.objectives import log_likelihood

    c = base_config()
    c.model.name, c.model.hidden, c.model.depth, c.model.z_dim = "vae_mlp", 8, 1, 2
    c.batch_size, c.vae.likelihood, c.vae.beta, c.vae.binarize = 4, likelihood, 0.5, True
    c.optim.name, c.optim.lr = "sgd", 0.01
    exp, state, images, key, new, metrics = _one_step_on_random_images(c, (3, 3, 1), 3)

    encoder, decoder = exp.models
    bin_key, z_key = jax.random.split(key)
    x = images[0] / np.float32(255.0)
    if likelihood == "bernoulli":
        x = (jax.random.uniform(bin_key, x.shape) < x).astype(np.float32)

    def loss_fn(params):
        mean, logvar = encoder.apply({"params": params["encoder"]}, x, train=False)
        z = mean + jnp.exp(logvar / 2) * jax.random.normal(z_key, mean.shape)
        out = decoder.apply({"params": params["decoder"]}, z, train=False)
        recon = -log_likelihood(out, x, likelihood)
        kl = 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1 - logvar, axis=-1)
        loss = jnp.mean(recon + 0.5 * kl)
        return loss, {"loss": loss, "recon": jnp.mean(recon), "kl": jnp.mean(kl)}

    grads, expected = jax.grad(loss_fn, has_aux=True)(state.params)
    for name, value in expected.items():
        np.testing.assert_allclose(metrics[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    params = _sgd(state.params, grads, 0.01)
    _assert_close(new.params, params, rtol=1e-5, atol=1e-6)
    assert int(metrics["skipped"]) == 0


def test_a_dcgan_step_threads_batch_norm_statistics_like_a_plain_recomputation():
    # BatchNorm running statistics of both networks after one step: D sees the real then the
    # fake batch in its update and the generator's fakes in G's; G's are those of both of its
    # forward passes. Recomputed with the modules themselves, nonsaturating loss by hand, SGD.
    c = base_config()
    c.model.name, c.model.features, c.model.z_dim = "dcgan", 4, 4
    c.batch_size, c.optim.name, c.optim.lr = 4, "sgd", 0.01
    exp, state, images, key, new, metrics = _one_step_on_random_images(c, (16, 16, 1), 2)

    gen, disc = exp.models

    def run(module, params, stats, x):
        variables = {"params": params, "batch_stats": stats}
        out, updates = module.apply(variables, x, train=True, mutable=["batch_stats"])
        return out, updates["batch_stats"]

    def recompute(_):  # under a vmap of one, as the models average over axis 'data'
        real = images[0] / np.float32(127.5) - 1
        z_key = jax.random.split(jax.random.split(jax.random.fold_in(key, 0), 1)[0])[0]
        fake, g_stats = run(gen, state.g_params, state.g_stats, jax.random.normal(z_key, (4, 4)))

        def d_loss_fn(d):
            real_logits, stats = run(disc, d, state.d_stats, real)
            fake_logits, stats = run(disc, d, stats, fake)
            loss = jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))
            return loss, stats

        grads, d_stats = jax.grad(d_loss_fn, has_aux=True)(state.d_params)
        d_params = _sgd(state.d_params, grads, 0.01)
        z = jax.random.normal(jax.random.fold_in(key, 1), (4, 4))

        def g_loss_fn(g):
            fake, new_g_stats = run(gen, g, g_stats, z)
            logits, new_d_stats = run(disc, d_params, d_stats, fake)
            return jnp.mean(jax.nn.softplus(-logits)), (new_g_stats, new_d_stats)

        grads, (g_stats, d_stats) = jax.grad(g_loss_fn, has_aux=True)(state.g_params)
        g_params = _sgd(state.g_params, grads, 0.01)
        return {"g_params": g_params, "d_params": d_params, "g_stats": g_stats, "d_stats": d_stats}

    expected = jax.tree.map(
        lambda a: a[0], jax.jit(jax.vmap(recompute, axis_name="data"))(jnp.zeros(1))
    )
    for field, tree in expected.items():
        _assert_close(getattr(new, field), tree, rtol=1e-4, atol=1e-6, what=field)
    assert not np.allclose(jax.tree.leaves(new.d_stats)[0], jax.tree.leaves(state.d_stats)[0])
    assert int(metrics["skipped"]) == 0


# ------------------------------------------- GAN options: LSGAN, lazy R1, EMA, spectral norm


def test_an_lsgan_step_with_lazy_r1_and_ema_equals_a_plain_recomputation():
    # One step by hand with SGD: LSGAN losses, R1 (weight gamma x r1_every) on the steps that
    # are multiples of r1_every and none on the others, and the EMA of G's new params.
    c = base_config()
    c.model.name, c.model.hidden, c.model.z_dim = "toy_mlp", 8, 2
    c.batch_size, c.gan.loss, c.gan.r1_weight, c.gan.r1_every = 4, "lsgan", 0.5, 3
    c.gan.ema_decay = 0.9
    c.optim.name, c.optim.lr, c.gan.d_lr = "sgd", 0.1, 0.05
    exp = experiment.build(c, "point", (2,))
    start = exp.init_state(jax.random.PRNGKey(0))
    start = start.replace(g_ema=jax.tree.map(lambda p: p + 0.3, start.g_params))
    reals = np.random.default_rng(0).normal(size=(1, 4, 2)).astype(np.float32)
    key = jax.random.PRNGKey(7)
    gen, disc = exp.models
    d = lambda params, x: disc.apply({"params": params}, x, train=False)  # noqa: E731
    for step, r1_weight in [(0, 1.5), (1, 0.0), (3, 1.5)]:
        state = start.replace(step=jnp.int32(step))
        new, metrics = _one_device_step(exp, state, {"point": reals}, key)
        z_key, _ = jax.random.split(jax.random.split(jax.random.fold_in(key, 0), 1)[0])
        fake = gen.apply({"params": state.g_params}, jax.random.normal(z_key, (4, 2)), False)

        def d_loss_fn(params):
            loss = 0.5 * jnp.mean((d(params, reals[0]) - 1) ** 2)
            loss += 0.5 * jnp.mean(d(params, fake) ** 2)  # noqa: B023
            grad_x = jax.grad(lambda x: jnp.sum(d(params, x)))(reals[0])
            return loss + r1_weight / 2 * jnp.mean(jnp.sum(grad_x**2, -1)), loss  # noqa: B023

        (total, d_loss), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.d_params)
        d_params = _sgd(state.d_params, grads, 0.05)
        z = jax.random.normal(jax.random.fold_in(key, 1), (4, 2))

        def g_loss_fn(g):
            return 0.5 * jnp.mean((d(d_params, gen.apply({"params": g}, z, False)) - 1) ** 2)  # noqa: B023

        g_params = _sgd(state.g_params, jax.grad(g_loss_fn)(state.g_params), 0.1)
        np.testing.assert_allclose(metrics["d_loss"], d_loss, rtol=1e-5)
        np.testing.assert_allclose(metrics["gradient_penalty"], total - d_loss, atol=1e-6)
        assert (float(metrics["gradient_penalty"]) > 1e-4) == (r1_weight > 0)
        _assert_close(new.d_params, d_params, rtol=1e-5, atol=1e-6)
        _assert_close(new.g_params, g_params, rtol=1e-5, atol=1e-6)
        ema = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, state.g_ema, g_params)
        _assert_close(new.g_ema, ema, rtol=1e-5, atol=1e-6)


def test_samples_come_from_the_ema_params_when_ema_is_on():
    c = base_config()
    c.model.name, c.model.hidden, c.gan.ema_decay = "toy_mlp", 8, 0.5
    exp = experiment.build(c, "point", (2,))
    state = exp.init_state(jax.random.PRNGKey(0))
    state = state.replace(g_ema=jax.tree.map(lambda p: p + 0.5, state.g_params))
    key = jax.random.PRNGKey(3)
    z = jax.random.normal(jax.random.split(key)[0], (5, 2))
    expected = exp.models[0].apply({"params": state.g_ema}, z, train=False)
    np.testing.assert_allclose(exp.sample(state, key, 5), expected, rtol=1e-6)
    c.gan.ema_decay = 0.0  # off: no copy kept, samples from the params
    off = experiment.build(c, "point", (2,))
    assert off.init_state(jax.random.PRNGKey(0)).g_ema == {}


def test_spectral_norm_statistics_change_in_the_discriminators_real_pass_only():
    # u and sigma after a whole step (one critic update, then the generator's update) are those
    # of one power iteration in the critic's pass over the real batch, from the old ones.
    c = base_config()
    c.model.name, c.model.features, c.model.z_dim, c.model.d_norm = "dcgan", 4, 8, "spectral"
    c.batch_size = 4
    exp = experiment.build(c, "image", (8, 8, 1))
    state = exp.init_state(jax.random.PRNGKey(0))
    images = np.random.default_rng(0).integers(0, 256, (1, 4, 8, 8, 1), np.uint8)
    new, _ = _one_device_step(exp, state, {"image": images}, jax.random.PRNGKey(1))
    real = images[0] / 127.5 - 1.0
    variables = {"params": state.d_params, "batch_stats": state.d_stats}
    _, expected = exp.models[1].apply(
        variables, real, train=True, update_stats=True, mutable=["batch_stats"]
    )
    _assert_close(new.d_stats, expected["batch_stats"], rtol=1e-5, atol=1e-6)
    pairs = zip(jax.tree.leaves(new.d_stats), jax.tree.leaves(state.d_stats), strict=True)
    moved = [np.abs(a - b).max() for a, b in pairs]
    assert max(moved) > 1e-4  # the real pass did update them


def test_augment_is_for_images_and_r1_for_discriminators_without_batch_norm():
    c = base_config()
    c.gan.augment = "translation"
    with pytest.raises(ConfigError, match="gan.augment='translation' is for images"):
        experiment.build(c, "point", (2,))
    c.gan.augment = "flip"
    with pytest.raises(ConfigError, match="flip"):
        resolve(c)
    c = base_config()
    c.model.name, c.gan.r1_weight = "dcgan", 1.0
    with pytest.raises(ConfigError, match="r1_weight > 0 needs a discriminator without batch"):
        experiment.build(c, "image", (16, 16, 1))
