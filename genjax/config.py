"""The base experiment config, its resolution against the chosen model, and its validation.

Every experiment file in configs/ starts from `base_config()` and only says what differs.
Shared fields sit at the top level with their defaults. `model.*` holds the fields of every
registered model and each family has its own namespace (`gan.*`, `vae.*`, ...); those fields
are None in `base_config()`, meaning "the model's (or family's) default". `resolve` fills in
the defaults of the chosen model and its family and refuses a field that either does not
read, so a setting that would do nothing is an error, in config files and on the command
line alike. Each field is checked once: shared fields here, model fields by the model's
builder (genjax.models.registry), family fields by the family (genjax.families).
"""

from __future__ import annotations

import copy

import ml_collections
from ml_collections import config_dict


class ConfigError(ValueError):
    """A mistake a user can make (config, paths, data); CLIs print it as one line, exit 2."""


PARALLEL_MODES = ("shard_map", "pmap")
# No float16: it needs loss scaling, which the steps do not do; bfloat16 has float32's range.
DTYPES = ("float32", "bfloat16")


def base_config() -> ml_collections.ConfigDict:
    """All fields with defaults; experiment files override a few."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_steps = 10_000
    c.batch_size = 64
    c.steps_per_call = 1  # training steps per compiled call (lax.scan)
    c.parallel = "shard_map"  # or 'pmap'
    c.dtype = "float32"  # compute dtype; params stay float32

    c.log_every = 100
    c.sample_every = 1000
    c.checkpoint_every = 1000
    c.keep_checkpoints = 3
    c.num_samples = 64  # pictures written every sample_every steps
    c.eval_every = 0  # run genjax.metrics.evaluate every N steps (0 = off)
    c.nonfinite = "stop"  # non-finite loss or gradient: 'stop' (exit 3) or 'skip' the update

    c.eval = ml_collections.ConfigDict()
    c.eval.num_samples = 2500  # generated samples for the sample-based metrics
    c.eval.nll_k = 5000  # importance samples per test example for test_nll
    c.eval.max_test = 0  # evaluate on the first M test examples (0 = all)
    c.eval.inception_weights = ""  # local FID Inception weights file; '' = no Inception metrics
    c.eval.classifier_dir = ""  # cache of the feature classifiers; '' = ~/.cache/genjax
    c.eval.temperature = 1.0  # token sampling temperature (text models); 0 = greedy

    c.model = ml_collections.ConfigDict()
    c.model.name = "toy_mlp"  # see genjax.models.registry.MODELS
    for key, default in _model_fields().items():  # None = the chosen model's default
        c.model[key] = config_dict.placeholder(type(default))
    for name, fields in _namespaces().items():  # gan.*, vae.*, ...: None = the family's default
        c[name] = _placeholders(fields)

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adam"  # or 'sgd'
    c.optim.lr = 2e-4  # learning rate (a GAN's generator's; gan.d_lr its discriminator's)
    c.optim.b1 = 0.5
    c.optim.b2 = 0.999
    c.optim.decay_from = 1.0  # fraction of num_steps after which lr falls linearly to 0

    c.data = ml_collections.ConfigDict()
    c.data.train = "ring8"  # ring8 | grid25 | mnist5k | tfds:NAME | idx:DIR | npz:FILE | folder:DIR
    c.data.test = ""  # '' = the training source's test split
    c.data.on_device = True  # keep the whole data set on the device; batches drawn in the step
    c.data.image_size = 0  # 0 = native size; else resize (and centre-crop) to this square size
    c.data.center_crop = 0  # 0 = none; else first centre-crop to this square size (CelebA: 108)
    c.data.data_dir = ""  # TFDS data_dir; '' = TFDS's default
    c.data.num_workers = 0  # grain worker processes for the host pipeline
    c.data.max_on_device_mb = 2048  # refuse on_device above this size
    c.data.max_len = 32  # token data: ids per sentence, <eos> included (longer: truncated)
    c.data.vocab_size = 10_000  # token data: the special tokens + the most frequent words
    c.data.vocab = ""  # token data: a vocabulary file; '' = the workdir's, else built
    return c


def _placeholders(defaults: dict) -> ml_collections.ConfigDict:
    """A namespace of typed None fields, one per default (None = the default)."""
    return ml_collections.ConfigDict(
        {key: config_dict.placeholder(type(value)) for key, value in defaults.items()}
    )


def _families() -> dict:
    from genjax.families import FAMILIES

    return FAMILIES


def namespace_of(family) -> str:
    """A family's config namespace: its `namespace` attribute, else its name. Families may
    share one (the image and text VAEs read vae.*); each reads only its own `defaults`."""
    return getattr(family, "namespace", None) or family.name


def _namespaces() -> dict[str, dict]:
    """Every family namespace with the union of its families' fields (the first default of a
    field types it)."""
    out: dict[str, dict] = {}
    for family in _families().values():
        fields = out.setdefault(namespace_of(family), {})
        for key, default in family.defaults.items():
            fields.setdefault(key, default)
    return out


def _model_fields() -> dict:
    """Every registered model's model.* fields with a default (the first model's wins)."""
    from genjax.models.registry import MODELS

    fields = {}
    for entry in MODELS.values():
        for key, default in entry.defaults.items():
            fields.setdefault(key, default)
    return fields


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _unknown_keys(config, reference, prefix: str = "") -> list[str]:
    """Dotted keys of `config` that `reference` (the base config) does not have."""
    unknown = []
    for key in config.keys():
        if key not in reference.keys():
            unknown.append(prefix + key)
        elif isinstance(config[key], ml_collections.ConfigDict):
            if isinstance(reference[key], ml_collections.ConfigDict):
                unknown += _unknown_keys(config[key], reference[key], f"{prefix}{key}.")
            else:
                unknown.append(prefix + key)
    return unknown


def _dotted(namespace: str, keys) -> str:
    return ", ".join(f"config.{namespace}.{key}" for key in keys)


def _fill(namespace, defaults: dict) -> None:
    """Sets each field of `defaults` that `namespace` leaves None (or lacks) to its default."""
    for key, default in defaults.items():
        if namespace.get(key) is None:
            namespace[key] = default


def _unread(namespace, allowed) -> list[str]:
    """The fields of a namespace that are set (not None) but not in `allowed`."""
    return sorted(k for k in namespace.keys() if namespace[k] is not None and k not in allowed)


def resolve(config) -> ml_collections.ConfigDict:
    """A validated copy of `config` with the chosen model's and family's defaults filled in.

    ConfigError for an unknown key, a bad shared value, a model.* field the model does not
    read, or a field set in another family's namespace; the model's builder and the family
    check their own values. Resolving a resolved config returns an equal one.
    """
    from genjax.models.registry import entry

    unknown = _unknown_keys(config, base_config())
    _check(not unknown, f"unknown config key(s): {', '.join(unknown)}; see genjax/config.py")
    validate(config)
    model = entry(config.model.name)
    out = copy.deepcopy(config)
    reads = ", ".join(sorted(model.defaults)) or "nothing"
    stray = _unread(config.model, {"name", *model.defaults})
    _check(
        not stray,
        f"{_dotted('model', stray)}: model {config.model.name!r} does not read it; it reads "
        f"model.name and model.{{{reads}}} (set unused fields to None)",
    )
    _fill(out.model, model.defaults)
    own = namespace_of(model.family)
    reads = f"{own}.{{{', '.join(sorted(model.family.defaults))}}}"
    for name, fields in _namespaces().items():
        if name not in out:  # a family registered after this config was made
            out[name] = _placeholders(fields)
        allowed = model.family.defaults if name == own else ()
        stray = _unread(config[name], allowed) if name in config else []
        _check(
            not stray,
            f"{_dotted(name, stray)}: model {config.model.name!r} is a "
            f"{model.family.name}, which reads {reads}"
            + ("" if name == own else f", not {name}.*"),
        )
        if name == own:
            _fill(out[name], model.family.defaults)
    model.family.check(out)
    return out


def validate(config) -> None:
    """Checks every shared field a user sets, once, before anything runs."""
    from genjax.models.registry import MODELS

    _check(
        config.model.name in MODELS,
        f"unknown model {config.model.name!r}; valid: {', '.join(sorted(MODELS))}",
    )
    for key in ("num_steps", "batch_size", "steps_per_call", "keep_checkpoints", "num_samples"):
        _check(config[key] >= 1, f"config.{key} must be >= 1, got {config[key]}")
    for key in ("log_every", "sample_every", "checkpoint_every", "eval_every"):
        _check(config[key] >= 0, f"config.{key} must be >= 0 (0 = never), got {config[key]}")
    _check(config.seed >= 0, f"config.seed must be >= 0, got {config.seed}")
    for key in ("num_samples", "nll_k"):
        value = config.eval[key]
        _check(value >= 1, f"config.eval.{key} must be >= 1, got {value}")
    _check(
        config.eval.max_test >= 0,
        f"config.eval.max_test must be >= 0 (0 = all), got {config.eval.max_test}",
    )
    _check(
        config.data.num_workers >= 0,
        f"config.data.num_workers must be >= 0 (0 = threads only), got {config.data.num_workers}",
    )
    _check(
        config.nonfinite in ("stop", "skip"),
        f"config.nonfinite={config.nonfinite!r}; valid: stop, skip",
    )
    _check(
        config.parallel in PARALLEL_MODES,
        f"config.parallel={config.parallel!r}; valid: {', '.join(PARALLEL_MODES)}",
    )
    _check(config.dtype in DTYPES, f"config.dtype={config.dtype!r}; valid: {', '.join(DTYPES)}")
    _check(
        config.optim.name in ("adam", "sgd"),
        f"config.optim.name={config.optim.name!r}; valid: adam, sgd",
    )
    _check(config.optim.lr > 0, f"config.optim.lr must be > 0, got {config.optim.lr}")
    _check(
        0.0 <= config.optim.decay_from <= 1.0,
        f"config.optim.decay_from must be in [0, 1] (1 = constant), got {config.optim.decay_from}",
    )
    _check(config.data.image_size >= 0, "config.data.image_size must be >= 0 (0 = native)")
    _check(
        config.data.center_crop >= 0,
        f"config.data.center_crop must be >= 0 (0 = no crop), got {config.data.center_crop}",
    )
    _check(bool(config.data.train), "config.data.train is empty; name a data source, e.g. mnist5k")
    _check(
        config.eval.get("temperature", 1.0) >= 0,
        f"config.eval.temperature must be >= 0 (0 = greedy), got {config.eval.get('temperature')}",
    )
