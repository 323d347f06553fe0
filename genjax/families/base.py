"""The family protocol: what the loop, sample.py, evaluate and the benchmarks ask of a model.

A family (GAN, VAE, ...) is one object, held by each registry entry of its models
(genjax.models.registry). It owns its config namespace (`config.<name>.*`), its state and
init, the per-device train step, the names of the metrics that step returns, how a batch
becomes model input (through the data kind, at the family's value range), how it samples
and which further sample.py modes it supports, and the test metrics that only it can
compute. Nothing outside a family branches on which family it is.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from genjax.config import ConfigError


class Family(abc.ABC):
    """The protocol a family implements. Subclasses set the class attributes below."""

    name: str  # the config namespace `config.<name>`, e.g. 'gan'
    defaults: dict[str, Any] = {}  # the namespace's fields and their defaults
    metrics: tuple[str, ...]  # the metric names its step returns, sorted
    value_range: tuple[float, float] = (0.0, 1.0)  # images are scaled to this on device
    modes: frozenset[str] = frozenset({"interpolate"})  # sample.py modes besides 'samples'

    # ------------------------------------------------------------------ config
    def check(self, config) -> None:
        """ConfigError for a bad value in the family's namespace (called once, resolved)."""
        return None

    def check_data(self, config, kind, data_shape: tuple) -> None:
        """ConfigError if the family's settings do not suit this kind and shape of data."""
        return None

    def check_batch(self, config, local_batch: int) -> None:
        """ConfigError if the per-device batch does not suit the family's step."""
        return None

    def data_per_step(self, config) -> int:
        """Real batches one train step consumes (stacked on the batch's leading axis)."""
        return 1

    # ------------------------------------------------------------------- state
    @abc.abstractmethod
    def init_state(self, config, models, kind, data_shape: tuple, key) -> Any:
        """The model state (a flax.struct dataclass with an int32 `step`) from `key`."""

    @abc.abstractmethod
    def network_params(self, state) -> tuple:
        """The params of each of its networks, in the order of its models (e.g. to count)."""

    @abc.abstractmethod
    def make_step(self, config, models, kind) -> Callable:
        """The per-device step `(state, batch, key) -> (state, metrics)`.

        `batch` holds data_per_step batches on a leading axis, shape (R, b, ...); metrics are
        `self.metrics` plus genjax.steps.SKIPPED (updates not applied, int32)."""

    # ------------------------------------------------------------ generation
    @abc.abstractmethod
    def latent_dim(self, config) -> int:
        """The size of the latent z that `decode` maps to data."""

    def num_classes(self, models) -> int:
        """The classes a class-conditional model's modules were built for (their
        `num_classes`); 0 for an unconditional model, which takes no labels."""
        return max((getattr(m, "num_classes", 0) for m in models), default=0)

    @abc.abstractmethod
    def decode(self, config, models, state, z, key, labels=None) -> jax.Array:
        """Latents (N, latent_dim) -> the model's output in eval mode, at `value_range` for
        images (genjax.experiment.Experiment turns it into data space through the data kind).
        `key` serves decoders that sample; `labels` (N,) int32 are the classes of a
        class-conditional model (None for the others)."""

    def sample(self, config, models, state, key, num: int, labels=None) -> jax.Array:
        """`num` draws from the model: z ~ N(0, I) pushed through `decode` (of class `labels`
        for a class-conditional model)."""
        z_key, decode_key = jax.random.split(key)
        z = jax.random.normal(z_key, (num, self.latent_dim(config)))
        return self.decode(config, models, state, z, decode_key, labels)

    def interpolate(
        self, config, models, state, key, rows: int, steps: int = 8, labels=None
    ) -> jax.Array:
        """`rows` straight lines in latent space, `steps` points each, row-major; `labels`
        (rows,) the class of each row for a class-conditional model."""
        dim = self.latent_dim(config)
        a_key, b_key = jax.random.split(key)
        a = jax.random.normal(a_key, (rows, 1, dim))
        b = jax.random.normal(b_key, (rows, 1, dim))
        t = jnp.linspace(0.0, 1.0, steps)[None, :, None]
        z = ((1 - t) * a + t * b).reshape(rows * steps, dim)
        if labels is not None:
            labels = jnp.repeat(labels, steps)
        return self.decode(config, models, state, z, jax.random.fold_in(key, 1), labels)

    def reconstruct(self, config, models, state, x, key) -> jax.Array:
        """Reconstructions (at `value_range`) of model inputs x, for families with an encoder."""
        raise ConfigError(
            f"--mode reconstruct needs a model with an encoder; a {self.name} has none"
        )

    def inpaint(
        self, config, models, state, x, mask, key, num_fills: int = 1, labels=None
    ) -> jax.Array:
        """`num_fills` fills (B, num_fills, ...) of the missing pixels of model inputs x
        (B, H, W, C) at `value_range`, mask (B, H, W, 1) 1 = known, the known pixels kept;
        `labels` (B,) the classes of a class-conditional model. For families whose `modes`
        hold 'inpaint' (genjax.inpaint has the algorithms)."""
        raise ConfigError(
            f"--mode inpaint needs a model that can fill images; a {self.name} cannot"
        )

    # ---------------------------------------------------------------- metrics
    def test_metrics(self, config, models, state, test: dict, kind, *, k: int, seed: int) -> dict:
        """Metrics only this family can compute on the test split (e.g. a likelihood)."""
        return {}
