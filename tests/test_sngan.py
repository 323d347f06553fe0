"""The ResNet SNGAN for 32 x 32 (genjax.models.resnet) and configs/sngan_cifar10.py.

Parameter counts are checked against benchmarks/torch_reference.py's PyTorch SNGAN-32, written
from Mimicry's (Lee & Town 2020, torch_mimicry/nets/sngan/sngan_32.py, modules/resblocks.py),
which benchmarks/throughput.py times beside genjax's.
"""

import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import sngan_cifar10
from genjax import experiment
from genjax.config import ConfigError, resolve
from genjax.models import build
from genjax.models.resnet import upsample_bilinear2x
from genjax.train import Trainer

KEY = jax.random.key(0, impl="rbg")  # compiles faster than threefry on XLA:CPU


def small_config(**model):
    """The experiment's config with narrow networks (features, d_features = 8)."""
    c = sngan_cifar10.get_config()
    c.model.features, c.model.d_features = 8, 8
    c.model.update(model)
    return resolve(c)


def sizes(tree):
    return sorted(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("width", [(256, 128), (8, 16)])
def test_parameter_counts_equal_mimicrys(width):
    features, d_features = width
    config = small_config(features=features, d_features=d_features)
    g, d = build(config, (32, 32, 3))
    g_vars = jax.eval_shape(functools.partial(g.init, train=False), KEY, jnp.zeros((1, 128)))
    d_vars = jax.eval_shape(functools.partial(d.init, train=False), KEY, jnp.zeros((1, 32, 32, 3)))
    pytest.importorskip("torch")
    from benchmarks.torch_reference import sngan32

    tg, td = sngan32(128, features, d_features, channels=3)
    for ours, theirs in ((g_vars["params"], tg), (d_vars["params"], td)):
        assert sizes(ours) == sorted(p.numel() for p in theirs.parameters())
    if width == (256, 128):  # the published network
        assert sum(sizes(g_vars["params"])) == 4_276_739
        assert sum(sizes(d_vars["params"])) == 1_053_825


def test_bilinear_upsampling_is_torchs():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 4)).astype(np.float32)  # NHWC
    ours = upsample_bilinear2x(jnp.asarray(x))
    nchw = torch.from_numpy(x).permute(0, 3, 1, 2)
    up = torch.nn.functional.interpolate(nchw, scale_factor=2, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(ours, up.permute(0, 2, 3, 1).numpy(), rtol=1e-6, atol=1e-6)


def test_shapes_and_spectral_norm_statistics():
    # Traced, not compiled (the compiled networks train in the last test).
    g, d = build(small_config(), (32, 32, 3))
    z = jax.ShapeDtypeStruct((4, 128), jnp.float32)
    g_vars = jax.eval_shape(lambda k, z: g.init(k, z, False), KEY, z)
    x = jax.eval_shape(lambda v, z: g.apply(v, z, False), g_vars, z)
    assert x.shape == (4, 32, 32, 3) and x.dtype == jnp.float32
    d_vars = jax.eval_shape(lambda k, x: d.init(k, x, False), KEY, x)
    kernels = [p for p in jax.tree_util.tree_leaves_with_path(d_vars["params"]) if p[1].ndim > 1]
    stats = jax.tree_util.tree_leaves_with_path(d_vars["batch_stats"])
    us = [p for p in stats if p[0][-1].key.endswith("kernel/u")]
    assert len(kernels) == len(us) == 11  # 4 blocks x 2 convs, 2 shortcuts, the dense layer
    logits, updated = jax.eval_shape(
        lambda v, x: d.apply(v, x, True, update_stats=True, mutable=["batch_stats"]), d_vars, x
    )
    assert logits.shape == (4,) and logits.dtype == jnp.float32
    assert jax.tree.structure(updated["batch_stats"]) == jax.tree.structure(d_vars["batch_stats"])


def test_the_config_resolves_builds_and_refuses_other_shapes():
    config = resolve(sngan_cifar10.get_config())
    assert (config.model.z_dim, config.model.features, config.model.d_features) == (128, 256, 128)
    assert (config.gan.loss, config.gan.n_critic, config.optim.b1, config.optim.b2) == (
        "hinge",
        5,
        0.0,
        0.9,
    )
    exp = experiment.build(config, "image", (32, 32, 3))
    assert type(exp.models[0]).__name__ == "SNGANGenerator32"
    with pytest.raises(ConfigError, match="sngan_resnet.*28, 28, 1"):
        experiment.build(config, "image", (28, 28, 1))


def test_the_config_trains_two_steps_on_mock_cifar10(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    c = sngan_cifar10.get_config()
    c.model.features, c.model.d_features = 8, 8
    c.batch_size, c.gan.n_critic, c.steps_per_call = 8, 2, 1
    c.num_steps, c.log_every, c.sample_every, c.checkpoint_every = 2, 2, 2, 2
    c.num_samples = 8
    with tfds.testing.mock_data(num_examples=16):
        Trainer(c, tmp_path / "run").run()
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert rows[-1]["step"] == 2
    assert all(np.isfinite(rows[-1][k]) for k in ("d_loss", "g_loss"))
    assert (tmp_path / "run" / "checkpoints" / "2").exists()
