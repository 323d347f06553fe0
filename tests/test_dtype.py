"""config.dtype='bfloat16' trains: params float32, compute bfloat16, losses float32 and close.

A few compiled train steps (the loop's own make_chunk + DataParallel) from the same init in
float32 and in bfloat16 must give finite losses that agree to bfloat16's precision.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import experiment
from genjax.config import base_config
from genjax.parallel import DataParallel
from genjax.train import make_chunk

BATCH, LENGTH, CALLS = 16, 3, 2
# |loss_bf16 - loss_f32| <= RTOL * |loss_f32| + ATOL. bfloat16 keeps 8 significant bits
# (rounding 2**-9 = 0.2% per operation); measured after 3 and 6 updates: <= 0.5% (the VAE's
# KL, ~1.3), <= 0.25% (GAN losses), so the bound leaves a margin of about 5x.
RTOL, ATOL = 0.02, 0.01


def small_config(name: str, dtype: str):
    c = base_config()
    if name == "dcgan":  # BatchNorm in both networks, conv up- and down-sampling
        c.model.name, c.model.features, c.model.z_dim = "dcgan", 8, 16
    else:
        c.model.name, c.model.hidden, c.model.z_dim = "vae_mlp", 32, 4
        c.optim.lr, c.optim.b1 = 1e-3, 0.9
    c.batch_size, c.dtype = BATCH, dtype
    return c


def train(name: str, dtype: str):
    """(initial state, final state, per-call metrics) of CALLS x LENGTH steps from seed 0."""
    images = np.random.default_rng(0).integers(0, 256, (256, 28, 28, 1), dtype=np.uint8)
    exp = experiment.build(small_config(name, dtype), "image", images.shape[1:])
    par = DataParallel("shard_map")
    fn = make_chunk(exp.step(), LENGTH, True, exp.data_per_step, BATCH)
    chunk = par.compile(fn, data_sharded=False, batch_axis=2)
    init = jax.device_get(exp.init_state(jax.random.PRNGKey(0)))
    state, data, metrics = par.replicate(init), par.replicate({"image": images}), []
    for _ in range(CALLS):
        state, m = chunk(state, data, jax.random.PRNGKey(1))
        metrics.append(jax.device_get(par.unreplicate(m)))
    return init, jax.device_get(par.unreplicate(state)), metrics


@pytest.fixture(scope="module", params=["dcgan", "vae_mlp"])
def runs(request):
    return request.param, train(request.param, "float32"), train(request.param, "bfloat16")


def test_same_float32_init_and_float32_params_after_training(runs):
    _, (init32, _, _), (init16, final16, _) = runs
    for a, b in zip(jax.tree.leaves(init32), jax.tree.leaves(init16), strict=True):
        np.testing.assert_array_equal(a, b)
    float_leaves = [x for x in jax.tree.leaves(final16) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert {x.dtype for x in float_leaves} == {jnp.dtype(jnp.float32)}


def test_bfloat16_losses_are_finite_float32_and_close_to_float32(runs):
    name, (_, _, metrics32), (_, _, metrics16) = runs
    keys = ["d_loss", "g_loss"] if name == "dcgan" else ["loss", "recon", "kl"]
    for m32, m16 in zip(metrics32, metrics16, strict=True):
        for key in keys:
            assert m16[key].dtype == np.float32 and np.isfinite(m16[key]), (key, m16[key])
            np.testing.assert_allclose(m16[key], m32[key], rtol=RTOL, atol=ATOL, err_msg=key)
    pairs = zip(metrics32, metrics16, strict=True)
    differs = any(m16[k] != m32[k] for m32, m16 in pairs for k in keys)
    assert differs, "bfloat16 gave float32's losses exactly: it did not compute in bfloat16"
