"""Class-conditional GANs: conditional BatchNorm, the projection discriminator, labels through
the step, sample.py's --class and the errors around them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import experiment, sampling
from genjax.config import ConfigError, base_config
from genjax.models import gan
from genjax.models.layers import ConditionalBatchNorm
from genjax.parallel import DataParallel
from genjax.train import make_chunk

SHAPE = (8, 8, 1)


def _conditional_config(**model):
    c = base_config()
    c.model.name, c.model.z_dim, c.model.features = "cdcgan", 4, 4
    for key, value in model.items():
        c.model[key] = value
    c.batch_size = 8
    return c


def test_conditional_batch_norm_is_batch_norm_then_a_scale_and_shift_per_class():
    """Against numpy: (h - batch mean) / sqrt(batch var + 1e-5) * gamma[y] + beta[y]."""
    rng = np.random.default_rng(0)
    h = rng.normal(size=(6, 2, 2, 4)).astype(np.float32)
    y = np.array([0, 2, 1, 2, 0, 1], np.int32)
    module = ConditionalBatchNorm(num_classes=3, train=True)
    variables = module.init(jax.random.PRNGKey(0), h, y)
    gamma, beta = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    params = {"Embed_0": {"embedding": gamma}, "Embed_1": {"embedding": beta}}
    out, _ = module.apply(
        {"params": params, "batch_stats": variables["batch_stats"]},
        h,
        y,
        mutable=["batch_stats"],
    )
    mean, var = h.mean((0, 1, 2)), h.var((0, 1, 2))
    expected = (h - mean) / np.sqrt(var + 1e-5) * gamma[y][:, None, None] + beta[y][:, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    # initialised as plain BatchNorm: every class scales by 1 and shifts by 0
    np.testing.assert_array_equal(variables["params"]["Embed_0"]["embedding"], np.ones((3, 4)))
    np.testing.assert_array_equal(variables["params"]["Embed_1"]["embedding"], np.zeros((3, 4)))


def test_projection_discriminator_adds_the_class_embedding_dot_the_features():
    """Miyato & Koyama 2018, eq. 3: D(x, y) = psi(phi(x)) + <V[y], phi(x)>. psi(phi(x)) is the
    unconditional discriminator with the same weights; phi(x) is its logit's gradient with
    respect to the final dense kernel."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.uniform(-1, 1, (5, *SHAPE)), jnp.float32)
    y = jnp.array([0, 1, 2, 1, 0], jnp.int32)
    conditional = gan.DCGANDiscriminator(features=4, d_norm="none", num_classes=3)
    params = conditional.init(jax.random.PRNGKey(0), x, labels=y, train=False)["params"]
    plain = gan.DCGANDiscriminator(features=4, d_norm="none")
    shared = {k: v for k, v in params.items() if k != "Embed_0"}

    def psi(kernel):
        p = shared | {"Dense_0": shared["Dense_0"] | {"kernel": kernel}}
        return plain.apply({"params": p}, x, train=False)

    kernel = shared["Dense_0"]["kernel"]
    phi = np.asarray(jax.jacrev(psi)(kernel))[:, :, 0]  # (B, F): d logit_b / d kernel
    v = np.asarray(params["Embed_0"]["embedding"])
    expected = np.asarray(psi(kernel)) + np.sum(v[np.asarray(y)] * phi, axis=1)
    out = conditional.apply({"params": params}, x, labels=y, train=False)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    other = conditional.apply({"params": params}, x, labels=(y + 1) % 3, train=False)
    assert np.all(np.abs(np.asarray(other) - np.asarray(out)) > 1e-6)  # the class matters


@pytest.fixture(scope="module")
def conditional_step():
    """One compiled host-batch GAN step of a small projection cDCGAN (no normalisation in D)."""
    exp = experiment.build(_conditional_config(d_norm="none"), "image", SHAPE, num_classes=3)
    par = DataParallel("shard_map")
    chunk = par.compile(make_chunk(exp.step(), 1, False, 1, 8), data_sharded=True, batch_axis=2)
    state = exp.init_state(jax.random.PRNGKey(0))

    def run(image, labels):
        batch = {"image": image[None, None], "label": labels[None, None]}
        _, metrics = chunk(par.replicate(state), par.shard_batch(batch, 2), jax.random.PRNGKey(1))
        return jax.device_get(metrics)

    return exp, jax.device_get(state), run


def test_the_step_shows_the_discriminator_each_real_example_with_its_label(conditional_step):
    """d_real of a step equals mean sigmoid(D(x, y)) of the batch's own labels, recomputed with
    the initial weights, and changes when the labels do."""
    exp, state, run = conditional_step
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (8, *SHAPE), np.uint8)
    for labels in (np.array([0, 1, 2, 0, 1, 2, 0, 1]), np.full(8, 2)):
        labels = labels.astype(np.int32)
        metrics = run(image, labels)
        x = image.astype(np.float32) / 127.5 - 1.0
        logits = exp.models[1].apply({"params": state.d_params}, x, labels=labels, train=False)
        expected = np.mean(jax.nn.sigmoid(logits))
        np.testing.assert_allclose(metrics["d_real"], expected, rtol=1e-5)
    assert abs(run(image, np.zeros(8, np.int32))["d_real"] - expected) > 1e-4


def test_samples_are_drawn_for_every_class_in_turn_or_for_one(conditional_step):
    """Experiment.sample_labels: blocks of i * C // num by default, else all the given class;
    the same z gives the same sample for the same class and another for another class."""
    exp, state, _ = conditional_step
    np.testing.assert_array_equal(exp.sample_labels(6), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(exp.sample_labels(4, 2), [2, 2, 2, 2])
    key = jax.random.PRNGKey(0)
    one = exp.sample(state, key, 3, labels=jnp.array([0, 0, 0]))
    mixed = exp.sample(state, key, 3, labels=jnp.array([0, 1, 2]))
    np.testing.assert_array_equal(one[0], mixed[0])  # same z, same class
    assert not np.allclose(one[1:], mixed[1:])


def test_a_conditional_model_needs_labels_and_one_example_per_judgement():
    with pytest.raises(ConfigError, match="class-conditional.*no class labels.*dcgan"):
        experiment.build(_conditional_config(), "image", SHAPE, num_classes=0)
    c = _conditional_config()
    c.gan.pack = 2
    with pytest.raises(ConfigError, match="gan.pack=2.*set gan.pack=1"):
        experiment.build(c, "image", SHAPE, num_classes=3)


@pytest.fixture(scope="module")
def cdcgan_workdir(tmp_path_factory):
    """configs/cdcgan_mnist.py, small, trained for 2 steps on 3-class 8x8 npz data."""
    from configs.cdcgan_mnist import get_config
    from genjax.train import train_and_evaluate

    root = tmp_path_factory.mktemp("cdcgan")
    rng = np.random.default_rng(0)
    np.savez(
        root / "digits.npz",
        images=rng.integers(0, 256, (48, *SHAPE), np.uint8),
        labels=np.arange(48) % 3,
    )
    c = get_config()
    c.data.train = f"npz:{root / 'digits.npz'}"
    c.model.z_dim, c.model.features, c.batch_size = 4, 4, 8
    c.num_steps = c.steps_per_call = c.log_every = c.checkpoint_every = 2
    c.sample_every = 0
    train_and_evaluate(c, root / "run")
    return root / "run"


def test_sample_class_writes_labels_beside_the_samples(cdcgan_workdir, tmp_path):
    out = sampling.write_samples(cdcgan_workdir, tmp_path / "s.npz", 6, label=2)
    saved = np.load(out)
    assert saved["samples"].shape == (6, *SHAPE)
    np.testing.assert_array_equal(saved["labels"], [2] * 6)
    out = sampling.write_samples(cdcgan_workdir, tmp_path / "all.npz", 6)
    np.testing.assert_array_equal(np.load(out)["labels"], [0, 0, 1, 1, 2, 2])
    out = sampling.write_samples(cdcgan_workdir, tmp_path / "i.npz", 9, mode="interpolate")
    np.testing.assert_array_equal(np.load(out)["labels"], [0] * 8 + [1] * 8)  # a class a row


@pytest.mark.parametrize(
    "label, words",
    [(3, "not a class of this model; valid: 0 to 2"), (-1, "valid: 0 to 2")],
)
def test_sample_refuses_a_class_the_model_does_not_have(cdcgan_workdir, tmp_path, label, words):
    with pytest.raises(ConfigError, match=words):
        sampling.write_samples(cdcgan_workdir, tmp_path / "s.npz", 4, label=label)
    assert not (tmp_path / "s.npz").exists()
