"""Data parallelism and chunking do not change the maths."""

import jax
import numpy as np
import pytest

from genjax import experiment
from genjax.config import base_config
from genjax.parallel import DataParallel
from genjax.train import make_chunk


@pytest.mark.parametrize("family", ["gan", "vae"])
@pytest.mark.parametrize("mode", ["shard_map", "pmap"])
@pytest.mark.parametrize("data", ["on_device", "host"])
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
    return experiment.build(c, (2,))


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
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(ten), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    start = jax.device_get(_ring_experiment().init_state(jax.random.PRNGKey(0)))
    assert not np.allclose(jax.tree.leaves(start.g_params)[0], jax.tree.leaves(one.g_params)[0])


def _poisoned_step(c, data_shape, dataset, poison):
    """One compiled step from a state whose `poison(state)` put a NaN in a weight."""
    exp = experiment.build(c, data_shape)
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
    from genjax.steps import pack

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
    c.model.name, c.model.hidden, c.model.features = name, 16, 8
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
