"""Data kinds: what one example is, how it reaches a model, and how samples are shown.

A kind is one small object: the keys, shapes and dtypes of its examples, how a batch is
scaled on device for a family's value range, how generated samples are stored and drawn,
which sample.py modes make sense for it, and which sample-based metrics apply to it.
Sources name their kind (`Source.kind`, a key of `KINDS`); labels travel beside the example
keys as `batch['label']` on every path, for the families that read them.

A new kind is a subclass of `DataKind` registered with `register_kind`.
"""

from __future__ import annotations

import abc
from typing import Any

import jax.numpy as jnp
import numpy as np

from genjax.config import ConfigError

LABEL = "label"  # the class label's key, on every data path, when a data set has labels


class DataKind(abc.ABC):
    """The protocol a data kind implements."""

    name: str  # Source.kind of the sources that serve it; also KINDS' key
    keys: tuple[str, ...]  # the example keys a model consumes (labels travel separately)
    modes: frozenset[str] = frozenset()  # sample.py modes a family makes that this kind can show
    views: frozenset[str] = frozenset()  # further sample.py modes that only draw the samples

    @abc.abstractmethod
    def model_input(self, batch: dict, value_range: tuple[float, float]) -> Any:
        """A batch's examples as the float32 array a model reads, scaled on device to the
        family's `value_range` where the kind has a natural scale (images)."""

    @abc.abstractmethod
    def from_model(self, x, value_range: tuple[float, float]) -> Any:
        """A model's output at the family's `value_range` -> data space (images in [0, 1])."""

    @abc.abstractmethod
    def stored(self, samples) -> np.ndarray:
        """Generated samples (as a family's decode returns them) as written to an .npz file."""

    @abc.abstractmethod
    def picture(self, samples, reference, columns: int | None = None):
        """A PIL picture of generated samples; `reference` is a Source of real data (or None)."""

    def batch_keys(self, example_keys) -> tuple[str, ...]:
        """The keys of a source's examples that travel to the compiled step."""
        return tuple(k for k in example_keys if k in self.keys or k == LABEL)

    def skipped_metrics(self, config, train_source, inception_weights: str) -> dict[str, str]:
        """{metric group: why it does not apply} for this kind's sample metrics."""
        return {}

    def write_workdir(self, workdir, train_source) -> None:
        """Writes what sample.py and evaluate need beside config.json (a vocabulary)."""
        return None

    def read_workdir(self, config, workdir):
        """`config` reading back what write_workdir wrote (for sample.py and evaluate, before
        the data sources are opened); the same config when there is nothing of this kind's."""
        return config

    def check_family(self, config, family) -> None:
        """ConfigError if models of this family cannot take this kind of data (token data
        takes only the families that declare it)."""
        return None

    def sample_metrics(self, experiment, generate, train_source, test: dict, **options) -> dict:
        """Metrics of generated samples against real data: {name: float}. `generate(num)`
        draws num samples; `test` holds the test split's arrays."""
        return {}


class ImageKind(DataKind):
    """uint8 images (H, W, C), C = 1 or 3, NHWC; scaled on device."""

    name = "image"
    keys = ("image",)
    modes = frozenset({"interpolate", "reconstruct", "inpaint"})
    views = frozenset({"dataset"})  # samples as an npz: data set (images, labels)

    def model_input(self, batch, value_range):
        low, high = value_range
        x = batch["image"].astype(jnp.float32)
        if (low, high) == (0.0, 1.0):
            return x / 255.0
        if (low, high) == (-1.0, 1.0):
            return x / 127.5 - 1.0
        return x * ((high - low) / 255.0) + low

    def from_model(self, x, value_range):
        low, high = value_range
        return x if (low, high) == (0.0, 1.0) else (x - low) / (high - low)

    def stored(self, samples):
        from genjax.sampling import to_uint8

        return to_uint8(samples)

    def picture(self, samples, reference, columns=None):
        from genjax.sampling import image_grid, to_uint8

        return image_grid(to_uint8(samples), columns)

    def skipped_metrics(self, config, train_source, inception_weights):
        reasons = {}
        if not train_source.num_classes:
            reasons["classifier"] = (
                f"data {config.data.train!r} has no labels to train a feature classifier on"
            )
        if not inception_weights:
            reasons["inception"] = (
                "no Inception weights given (--inception_weights PATH or "
                "config.eval.inception_weights; see genjax/metrics/inception.py)"
            )
        return reasons

    def sample_metrics(
        self,
        experiment,
        generate,
        train_source,
        test,
        *,
        class_reference,
        num_samples,
        seed,
        inception_weights,
        classifier_dir,
    ):
        from genjax.metrics.evaluate import image_metrics
        from genjax.sampling import to_uint8

        fake = to_uint8(generate(num_samples))
        rng = np.random.default_rng(seed)
        size = min(num_samples, len(train_source))
        floor = train_source.take(np.sort(rng.choice(len(train_source), size, replace=False)))
        if class_reference is None:
            class_reference = floor.get(LABEL)
        conditional = experiment.num_classes and LABEL in test
        return image_metrics(
            experiment.config,
            fake,
            test["image"],
            floor["image"],
            class_reference if train_source.num_classes else None,
            seed=seed,
            inception_weights=inception_weights,
            cdir=classifier_dir,
            num_classes=train_source.num_classes,
            fake_labels=np.asarray(experiment.sample_labels(num_samples)) if conditional else None,
            real_labels=test[LABEL] if conditional else None,
        )


class PointKind(DataKind):
    """float32 points (D,), used as they are."""

    name = "point"
    keys = ("point",)
    views = frozenset({"scatter"})  # the samples over the real points

    def model_input(self, batch, value_range):
        return batch["point"].astype(jnp.float32)

    def from_model(self, x, value_range):
        return x

    def stored(self, samples):
        return np.asarray(samples)

    def picture(self, samples, reference, columns=None):
        from genjax.sampling import scatter_plot

        real = None if reference is None else reference.to_arrays()["point"][:2000]
        return scatter_plot(np.asarray(samples), real)

    def skipped_metrics(self, config, train_source, inception_weights):
        from genjax.data.embedded import MIXTURES

        if config.data.train not in MIXTURES:
            return {"modes": f"mode metrics need a known mixture ({', '.join(MIXTURES)})"}
        return {}

    def sample_metrics(self, experiment, generate, train_source, test, *, num_samples, **_):
        from genjax.data.embedded import MIXTURES
        from genjax.metrics import toy

        spec = experiment.config.data.train
        if spec not in MIXTURES:
            return {}
        means, std = MIXTURES[spec]
        return toy.mode_metrics(generate(num_samples), means, std)


KINDS: dict[str, DataKind] = {}


def register_kind(kind: DataKind) -> DataKind:
    """Adds a data kind under its name (sources name it in `Source.kind`)."""
    KINDS[kind.name] = kind
    return kind


register_kind(ImageKind())
register_kind(PointKind())


def kind_of(source) -> DataKind:
    """The DataKind of a Source; ConfigError for a kind nothing registered."""
    if source.kind not in KINDS:
        raise ConfigError(
            f"data of kind {source.kind!r} has no registered data kind; valid: "
            f"{', '.join(sorted(KINDS))}"
        )
    return KINDS[source.kind]
