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
from genjax.data.kinds import KINDS, LABEL, DataKind
from genjax.families import Family
from genjax.models import registry
from genjax.parallel import AXIS
from genjax.steps import new_train_state

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


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: caches key on it
class Experiment:
    """A resolved config's family, models and data kind, for data of one example shape.

    What train, sample.py, evaluate and the benchmarks use: they ask the family (through
    these methods) and the kind, never which family or kind it is.
    """

    config: Any  # resolved (genjax.config.resolve)
    family: Family
    kind: DataKind
    data_shape: tuple
    models: tuple  # the family's modules, e.g. (generator, discriminator), (encoder, decoder)

    def init_state(self, key):
        """The family's model state initialised from `key`."""
        return self._compiled_init(key)

    @functools.cached_property
    def _compiled_init(self) -> Callable:
        # One compiled function: run eagerly, flax's init compiles each of its ops on its own,
        # which takes much longer on XLA:CPU at every process start. Values agree with eager
        # init up to the rounding of the last bit.
        init = functools.partial(
            self.family.init_state, self.config, self.models, self.kind, self.data_shape
        )
        return jax.jit(init)

    def new_train_state(self, model_state):
        """A TrainState (the loop's non-finite guard) around a model state."""
        return new_train_state(model_state, self.family.metrics)

    def state_template(self):
        """The TrainState's shapes and dtypes, placed on this process's first device: what a
        checkpoint restores into. Init is traced, not run."""
        shapes = jax.eval_shape(
            lambda key: self.new_train_state(self.init_state(key)), jax.random.PRNGKey(0)
        )
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        return jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), shapes
        )

    def step(self) -> Callable:
        """The per-device train step `(state, batch, key) -> (state, metrics)`."""
        return self.family.make_step(self.config, self.models, self.kind)

    @property
    def data_per_step(self) -> int:
        return self.family.data_per_step(self.config)

    @property
    def modes(self) -> frozenset[str]:
        """sample.py's modes for this model and data: 'samples', the kind's views of them, and
        the modes both the family and the kind support ('reconstruct' needs an encoder and
        images)."""
        return frozenset({"samples"}) | self.kind.views | (self.family.modes & self.kind.modes)

    @property
    def num_classes(self) -> int:
        """The classes of a class-conditional model; 0 for an unconditional one."""
        return self.family.num_classes(self.models)

    def sample_labels(self, num: int, label: int | None = None):
        """The classes of `num` samples of a class-conditional model (None for the others):
        all `label`, or, by default, every class in turn in equal blocks (sample i has class
        i * num_classes // num), so that a grid of them shows the classes in order."""
        if not self.num_classes:
            return None
        if label is not None:
            return jnp.full((num,), label, jnp.int32)
        return (jnp.arange(num) * self.num_classes // num).astype(jnp.int32)

    # Generation, in data space (images in [0, 1]):

    def sample(self, state, key, num: int, labels=None):
        """`num` samples from the model; a class-conditional model's of classes `labels`
        (default: sample_labels(num))."""
        if labels is None:
            labels = self.sample_labels(num)
        x = self.family.sample(self.config, self.models, state, key, num, labels)
        return self.kind.from_model(x, self.family.value_range)

    def interpolate(self, state, key, rows: int, steps: int = 8, labels=None):
        """`rows` straight lines in latent space, `steps` points each, row-major; a
        class-conditional model's row r of class labels[r] (default: sample_labels(rows))."""
        if labels is None:
            labels = self.sample_labels(rows)
        x = self.family.interpolate(self.config, self.models, state, key, rows, steps, labels)
        return self.kind.from_model(x, self.family.value_range)

    def reconstruct(self, state, batch: dict, key=None):
        """Reconstructions of a batch of examples (as a source gives them)."""
        x = self.kind.model_input(batch, self.family.value_range)
        classes = {"labels": batch[LABEL]} if self.num_classes else {}
        out = self.family.reconstruct(self.config, self.models, state, x, key, **classes)
        return self.kind.from_model(out, self.family.value_range)

    def inpaint(self, state, batch: dict, mask, key, num_fills: int = 1, labels=None):
        """`num_fills` fills (B, num_fills, ...) in data space of the missing pixels of a
        batch's examples, mask (B, H, W, 1) 1 = known, the known pixels kept; a
        class-conditional model's of classes `labels` (default: the batch's labels)."""
        x = self.kind.model_input(batch, self.family.value_range)
        if labels is None and self.num_classes:
            labels = batch[LABEL]
        out = self._compiled_inpaint(state, x, mask, key, num_fills=num_fills, labels=labels)
        return self.kind.from_model(out, self.family.value_range)

    @functools.cached_property
    def _compiled_inpaint(self) -> Callable:
        inpaint = functools.partial(self.family.inpaint, self.config, self.models)
        return jax.jit(inpaint, static_argnames=("num_fills",))

    def test_metrics(self, state, test: dict, *, k: int, seed: int) -> dict:
        """The family's own test metrics (e.g. a VAE's NLL) on a test split's arrays."""
        return self.family.test_metrics(
            self.config, self.models, state, test, self.kind, k=k, seed=seed
        )


def build(
    config, kind: str | DataKind, data_shape: tuple, num_classes: int | None = 0
) -> Experiment:
    """The experiment of `config` on examples of `kind` and `data_shape`, with `num_classes`
    classes of labels (0 or None: unlabelled); ConfigError if they don't fit. The config is
    resolved here (genjax.config.resolve)."""
    config = config_lib.resolve(config)
    kind = KINDS[kind] if isinstance(kind, str) else kind
    kind.check_family(config, registry.family_of(config.model.name))
    shape = tuple(int(d) for d in data_shape)
    models = registry.build(
        config,
        shape,
        num_classes=num_classes or 0,
        dtype=jnp.dtype(config.dtype),
        axis_name=AXIS,
    )
    family = registry.family_of(config.model.name)
    family.check_data(config, kind, shape)
    return Experiment(config, family, kind, shape, models)


def for_source(config, source) -> Experiment:
    """The experiment of `config` on a data source's examples (kind, shape and classes)."""
    from genjax.data.kinds import kind_of

    return build(config, kind_of(source), source.shape, source.num_classes)


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
    for kind in KINDS.values():  # what training wrote beside config.json (a vocabulary)
        config = kind.read_workdir(config, workdir)
    train_source, test_source = resolve_sources(config.data)
    experiment = for_source(config, train_source)
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
