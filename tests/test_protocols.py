"""A family, a data kind, a data source and a model defined here, in test code only, and
registered: train.py's loop trains them, checkpoints, resumes bitwise, samples and
evaluates, and the config refuses keys they do not read. docs/design.md walks through the
same example.

The family is a generative moment-matching network (Li et al. 2015; Dziugaite et al. 2015):
one generator trained to minimise the squared MMD, with a Gaussian kernel, between a
generated and a real batch. The data kind is a float32 signal of 16 samples.
"""

import json
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from PIL import Image, ImageDraw

from genjax import data, families
from genjax.config import ConfigError, base_config
from genjax.data import kinds, sources
from genjax.data.arrays import ArraySplits
from genjax.families import Family
from genjax.models import registry
from genjax.parallel import device_mean, per_example_noise
from genjax.steps import SKIPPED, apply_if_finite, init_variables, optimizer

LENGTH = 16


def mmd2(x, y, bandwidth):
    """Biased squared MMD (Gretton et al. 2012, eq. 5) with k(a, b) = exp(-|a-b|^2 / 2h^2)."""

    def k(a, b):
        d = jnp.sum(jnp.square(a[:, None] - b[None]), -1)
        return jnp.exp(-d / (2 * bandwidth**2))

    return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


@struct.dataclass
class MMDState:
    step: jax.Array
    params: Any
    opt_state: Any


class MomentMatching(Family):
    name = "mmd"
    defaults = {"bandwidth": 1.0}
    metrics = ("mmd",)
    modes = frozenset({"interpolate"})

    def check(self, config):
        if config.mmd.bandwidth <= 0:
            raise ConfigError(f"config.mmd.bandwidth must be > 0, got {config.mmd.bandwidth}")

    def latent_dim(self, config):
        return config.model.noise_dim

    def init_state(self, config, models, kind, data_shape, key):
        (generator,) = models
        params, _ = init_variables(generator, key, jnp.zeros((1, config.model.noise_dim)))
        tx = optimizer(config, config.optim.lr)
        return MMDState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    def network_params(self, state):
        return (state.params,)

    def make_step(self, config, models, kind):
        (generator,) = models
        tx = optimizer(config, config.optim.lr)

        def step(state, batch, key):
            real = kind.model_input({k: v[0] for k, v in batch.items()}, self.value_range)
            z = per_example_noise(jax.random.normal, key, (real.shape[0], config.model.noise_dim))

            def loss_fn(params):
                fake = generator.apply({"params": params}, z, train=True)
                return mmd2(real, fake, config.mmd.bandwidth)

            loss, grads = jax.value_and_grad(loss_fn)(state.params)
            loss = device_mean(loss)
            params, opt_state, _, ok = apply_if_finite(
                tx, device_mean(grads), loss, state.params, state.opt_state, {}, {}
            )
            state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
            return state, {"mmd": loss, SKIPPED: (~ok).astype(jnp.int32)}

        return step

    def decode(self, config, models, state, z, key, labels=None):
        return models[0].apply({"params": state.params}, z, train=False)

    def test_metrics(self, config, models, state, test, kind, *, k, seed):
        real = kind.model_input(test, self.value_range)
        fake = self.sample(config, models, state, jax.random.PRNGKey(seed), len(real))
        return {"test_mmd": float(mmd2(real, fake, config.mmd.bandwidth))}


class SignalKind(kinds.DataKind):
    name = "signal"
    keys = ("signal",)
    modes = frozenset({"interpolate"})

    def model_input(self, batch, value_range):
        return batch["signal"].astype(jnp.float32)

    def from_model(self, x, value_range):
        return x

    def stored(self, samples):
        return np.asarray(samples, np.float32)

    def picture(self, samples, reference, columns=None):
        image = Image.new("RGB", (160, 100), "white")
        draw = ImageDraw.Draw(image)
        for signal in np.asarray(samples)[:16]:
            draw.line([(10 * i, 50 - 20 * v) for i, v in enumerate(signal)], fill=(31, 119, 180))
        return image

    def sample_metrics(self, experiment, generate, train_source, test, *, num_samples, **_):
        fake = generate(num_samples)
        return {"mean_error": float(np.abs(fake.mean(0) - test["signal"].mean(0)).mean())}


class Generator(nn.Module):
    width: int
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, z, train: bool):
        h = nn.tanh(nn.Dense(self.width, dtype=self.dtype)(z))
        return nn.Dense(LENGTH, dtype=self.dtype)(h).astype(jnp.float32)


def sines(image_size):
    """Sine waves of random phase, labelled by their frequency (1 or 2 cycles)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 600)
    phase = rng.uniform(0, 2 * np.pi, (600, 1))
    t = np.linspace(0, 2 * np.pi, LENGTH)[None]
    signal = np.sin((labels[:, None] + 1) * t + phase).astype(np.float32)
    arrays = {"signal": signal, "label": labels.astype(np.int32)}
    return ArraySplits("sines", "signal", arrays, None, num_classes=2)


MMD = MomentMatching()


@pytest.fixture
def registered(monkeypatch):
    """The family, kind, source and model registered for one test (and taken out after)."""
    monkeypatch.setitem(families.FAMILIES, MMD.name, MMD)
    monkeypatch.setitem(kinds.KINDS, "signal", SignalKind())
    monkeypatch.setitem(sources.NAMED_SOURCES, "sines", sines)
    build = lambda config, shape, **common: (Generator(config.model.width, **common),)  # noqa: E731
    defaults = {"noise_dim": 4, "width": 32}
    monkeypatch.setitem(registry.MODELS, "mmd_mlp", registry.Entry(MMD, build, defaults))


def sines_config(num_steps):
    c = base_config()
    c.model.name, c.model.noise_dim = "mmd_mlp", 3
    c.data.train = "sines"
    c.mmd.bandwidth = 2.0
    c.optim.lr, c.optim.b1 = 1e-2, 0.9
    c.batch_size, c.num_steps, c.steps_per_call = 32, num_steps, 5
    c.log_every = c.sample_every = c.checkpoint_every = 10
    c.num_samples = 8
    return c


def test_a_family_and_kind_defined_in_test_code_train_resume_sample_and_evaluate(
    registered, tmp_path
):
    from genjax.experiment import restore
    from genjax.metrics.evaluate import evaluate_workdir
    from genjax.sampling import write_samples
    from genjax.train import Trainer

    whole = Trainer(sines_config(40), tmp_path / "whole").run()
    Trainer(sines_config(20), tmp_path / "halves").run()  # stops, then the same run resumes
    resumed = Trainer(sines_config(40), tmp_path / "halves").run()
    assert int(whole.step) == int(resumed.step) == 40
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)

    rows = [json.loads(line) for line in open(tmp_path / "whole" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [10, 20, 30, 40] and rows[-1]["skipped_updates"] == 0
    with Image.open(tmp_path / "whole" / "samples" / "step_00000040.png") as picture:
        assert picture.size == (160, 100)
    saved = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert saved["model"]["width"] == 32 and saved["mmd"] == {"bandwidth": 2.0}
    assert saved["gan"]["loss"] is None and saved["model"]["hidden"] is None

    out = write_samples(tmp_path / "whole", tmp_path / "s.npz", num=12, mode="interpolate")
    assert np.load(out)["samples"].shape == (2 * 8, LENGTH)  # 2 rows of 8
    with pytest.raises(ConfigError, match="valid: interpolate, samples"):
        write_samples(tmp_path / "whole", tmp_path / "r.npz", mode="reconstruct")

    run = restore(tmp_path / "whole")
    test = run.test_source.to_arrays()
    assert set(test) == {"signal", "label"}  # labels travel beside the kind's keys
    untrained = run.experiment.init_state(jax.random.PRNGKey(1))
    before = run.experiment.test_metrics(untrained, test, k=1, seed=0)["test_mmd"]
    row = evaluate_workdir(
        tmp_path / "whole",
        run.experiment.config,
        num_samples=200,
        nll_k=1,
        max_test=0,
        seed=0,
        inception_weights="",
    )
    assert set(row) == {"step", "test_mmd", "mean_error"} and row["step"] == 40
    assert row["test_mmd"] < 0.5 * before  # it learned something
    expected = mmd2(
        jnp.asarray(test["signal"]),
        run.experiment.sample(run.state, jax.random.PRNGKey(0), len(test["signal"])),
        2.0,
    )
    assert row["test_mmd"] == pytest.approx(float(expected), rel=1e-6)


def test_keys_the_new_model_or_family_does_not_read_are_refused(registered):
    from genjax.config import resolve

    c = sines_config(10)
    c.model.hidden = 8  # a field of other models
    with pytest.raises(ConfigError, match=r"config.model.hidden: .*reads .*noise_dim, width"):
        resolve(c)
    c = sines_config(10)
    c.gan.loss = "hinge"  # another family's namespace
    with pytest.raises(ConfigError, match=r"config.gan.loss: model 'mmd_mlp' is a mmd"):
        resolve(c)
    c = sines_config(10)
    c.mmd.bandwidth = -1.0  # the family checks its own fields
    with pytest.raises(ConfigError, match="bandwidth"):
        resolve(c)
    resolved = resolve(sines_config(10))
    assert resolve(resolved).to_dict() == resolved.to_dict()
    assert data.load_source("sines", "test").kind == "signal"
