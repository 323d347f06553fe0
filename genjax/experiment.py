"""An experiment: the models, state and step a config describes, for a given data shape.

Shared by training, sampling and evaluation so that all three build the same thing
from the same config.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from genjax import config as config_lib
from genjax import steps
from genjax.models import registry
from genjax.parallel import AXIS

# Config fields that fix the shapes of a checkpoint: a workdir's checkpoints can only be
# resumed by a config that agrees on all of them.
CHECKPOINT_KEYS = (
    "model",
    "vae.likelihood",
    "data.train",
    "data.image_size",
    "gan.pack",  # the discriminator's input channels
    "optim.name",  # the optimiser state's structure
)


@dataclasses.dataclass(frozen=True)
class Experiment:
    config: Any
    family: str  # 'gan' | 'vae'
    data_shape: tuple
    models: tuple  # (generator, discriminator) or (encoder, decoder)

    def init_state(self, key):
        """The model state (GANState | VAEState) initialised from `key`."""
        return self._compiled_init(key)

    @functools.cached_property
    def _compiled_init(self) -> Callable:
        # One compiled function: run eagerly, flax's init compiles each of its ops on its own,
        # which took much longer on XLA:CPU at every process start (jax 0.10.2). Values agree
        # with eager init up to the rounding of the last bit.
        init = steps.INIT_STATE[self.family]
        return jax.jit(functools.partial(init, self.config, self.models, self.data_shape))

    def state_template(self):
        """The TrainState's shapes and dtypes, placed on this process's first device: what a
        checkpoint restores into. Init is traced, not run."""
        shapes = jax.eval_shape(
            lambda key: steps.new_train_state(self.init_state(key), self.family),
            jax.random.PRNGKey(0),
        )
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        return jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), shapes
        )

    def step(self) -> Callable:
        """The per-device train step `(state, batch, key) -> (state, metrics)`."""
        return steps.MAKE_STEP[self.family](self.config, self.models)

    @property
    def data_per_step(self) -> int:
        return steps.data_per_step(self.config, self.family)


def build(config, data_shape: tuple) -> Experiment:
    """The experiment of `config` on data of `data_shape`; ConfigError if they don't fit."""
    family = config_lib.family(config)
    if family == "gan" and config.gan.loss == "wgan_gp" and config.model.name == "dcgan":
        if config.model.d_norm == "batch":
            raise config_lib.ConfigError(
                "gan.loss=wgan_gp needs a discriminator without batch norm (the penalty is "
                "per example): set --config.model.d_norm=layer or none"
            )
    models = registry.build(
        config.model,
        tuple(data_shape),
        likelihood=config.vae.likelihood,
        dtype=jnp.dtype(config.dtype),
        axis_name=AXIS,
    )
    return Experiment(config, family, tuple(data_shape), models)


def checkpoint_fields(config_dict: dict) -> dict:
    """The values of CHECKPOINT_KEYS in a (JSON) config dict."""
    out = {}
    for key in CHECKPOINT_KEYS:
        value = config_dict
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        out[key] = value
    return out


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A workdir's experiment and its newest restorable state."""

    experiment: Experiment
    state: Any
    step: int
    train_source: Any
    test_source: Any


def load_config(workdir) -> Any:
    """The config a workdir was trained with (its config.json), as a ConfigDict."""
    import json
    from pathlib import Path

    import ml_collections

    path = Path(workdir) / "config.json"
    if not path.is_file():
        raise config_lib.ConfigError(
            f"workdir {workdir} has no config.json; give a directory train.py has written"
        )
    try:
        values = json.loads(path.read_text())
    except ValueError as e:
        raise config_lib.ConfigError(f"{path}: not valid JSON ({e})") from None

    def not_a_config(reason) -> config_lib.ConfigError:  # JSON, but not a config
        return config_lib.ConfigError(
            f"{path}: not a config train.py wrote ({reason}); give a workdir train.py has written"
        )

    if not isinstance(values, dict):
        raise not_a_config("not a JSON object")
    config = config_lib.base_config()
    try:
        config.update(ml_collections.ConfigDict(values))
    except (AttributeError, TypeError, KeyError) as e:
        raise not_a_config(e) from None
    return config


def restore(workdir, config=None) -> TrainedRun:
    """The newest checkpoint of `workdir` that restores, with the experiment around it."""
    from pathlib import Path

    from genjax.checkpoint import Checkpoints
    from genjax.data import resolve_sources

    config = config if config is not None else load_config(workdir)
    config_lib.validate(config)
    train_source, test_source = resolve_sources(config.data)
    experiment = build(config, train_source.shape)
    directory = Path(workdir) / "checkpoints"
    if not directory.is_dir():
        raise config_lib.ConfigError(f"workdir {workdir} has no checkpoints; run train.py first")
    checkpoints = Checkpoints(directory, read_only=True)
    try:
        restored = checkpoints.restore_latest(experiment.state_template())
    except Exception as e:  # noqa: BLE001
        raise config_lib.ConfigError(
            f"workdir {workdir}: no checkpoint restores ({type(e).__name__})"
        ) from None
    finally:
        checkpoints.close()
    if restored is None:
        raise config_lib.ConfigError(f"workdir {workdir} has no checkpoints; run train.py first")
    step, state, _ = restored
    return TrainedRun(experiment, state.model, step, train_source, test_source)
