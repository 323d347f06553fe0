"""The base experiment config, and its validation.

Every experiment file in configs/ starts from `base_config()` and only says what
differs; every field a user can set exists here with a default, so an unknown
`--config.KEY` is an error rather than a silent no-op.
"""

from __future__ import annotations

import ml_collections


class ConfigError(ValueError):
    """A mistake a user can make (config, paths, data); CLIs print it as one line, exit 2."""


GAN_LOSSES = ("nonsaturating", "minimax", "hinge", "wgan_gp")
LIKELIHOODS = ("bernoulli", "gaussian")
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

    c.model = ml_collections.ConfigDict()
    c.model.name = "toy_mlp"  # see genjax.models.registry.MODELS
    c.model.z_dim = 2
    c.model.hidden = 128  # MLP width
    c.model.depth = 2  # MLP hidden layers (toy_mlp, vae_mlp; gan_mlp keeps the 2014 net's 1)
    c.model.features = 64  # base channel count of conv models
    c.model.d_norm = "batch"  # DCGAN discriminator normalisation: batch | layer | none
    # VAE decoders: 0, or an odd K >= 3 for an autoregressive decoder that also sees each
    # pixel's earlier neighbours in a K x K window (genjax.models.vae.AutoregressiveDecoder)
    c.model.ar_kernel = 0
    c.model.ar_hidden = 32  # that neighbourhood network's hidden units

    c.gan = ml_collections.ConfigDict()
    c.gan.loss = "nonsaturating"
    c.gan.n_critic = 1  # discriminator updates per generator update
    c.gan.gp_weight = 10.0  # WGAN-GP lambda
    c.gan.pack = 1  # PacGAN (Lin et al. 2018): D judges `pack` samples at once; 1 = plain GAN

    c.vae = ml_collections.ConfigDict()
    c.vae.likelihood = "bernoulli"
    c.vae.beta = 1.0
    c.vae.binarize = True  # dynamic binarisation of grey images (Bernoulli likelihood)

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adam"  # or 'sgd'
    c.optim.lr = 2e-4  # VAE learning rate; GAN generator learning rate
    c.optim.d_lr = 0.0  # GAN discriminator learning rate; 0 = same as lr
    c.optim.b1 = 0.5
    c.optim.b2 = 0.999
    c.optim.decay_from = 1.0  # fraction of num_steps after which lr falls linearly to 0

    c.data = ml_collections.ConfigDict()
    c.data.train = "ring8"  # ring8 | grid25 | mnist5k | tfds:NAME | idx:DIR | npz:FILE | folder:DIR
    c.data.test = ""  # '' = the training source's test split
    c.data.on_device = True  # keep the whole data set on the device; batches drawn in the step
    c.data.image_size = 0  # 0 = native size; else resize (and centre-crop) to this square size
    c.data.data_dir = ""  # TFDS data_dir; '' = TFDS's default
    c.data.num_workers = 0  # grain worker processes for the host pipeline
    c.data.max_on_device_mb = 2048  # refuse on_device above this size
    return c


def family(config) -> str:
    """'gan' or 'vae', from the model name."""
    from genjax.models.registry import family_of

    return family_of(config.model.name)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(config) -> None:
    """Checks every field a user sets, once, before anything runs."""
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
        config.gan.loss in GAN_LOSSES,
        f"config.gan.loss={config.gan.loss!r}; valid: {', '.join(GAN_LOSSES)}",
    )
    _check(config.gan.n_critic >= 1, f"config.gan.n_critic must be >= 1, got {config.gan.n_critic}")
    _check(config.gan.pack >= 1, f"config.gan.pack must be >= 1, got {config.gan.pack}")
    _check(
        config.batch_size % config.gan.pack == 0,
        f"config.batch_size={config.batch_size} must be a multiple of "
        f"config.gan.pack={config.gan.pack}",
    )
    _check(
        config.vae.likelihood in LIKELIHOODS,
        f"config.vae.likelihood={config.vae.likelihood!r}; valid: {', '.join(LIKELIHOODS)}",
    )
    _check(config.vae.beta >= 0, f"config.vae.beta must be >= 0, got {config.vae.beta}")
    _check(
        config.optim.name in ("adam", "sgd"),
        f"config.optim.name={config.optim.name!r}; valid: adam, sgd",
    )
    _check(config.optim.lr > 0, f"config.optim.lr must be > 0, got {config.optim.lr}")
    _check(
        0.0 <= config.optim.decay_from <= 1.0,
        f"config.optim.decay_from must be in [0, 1] (1 = constant), got {config.optim.decay_from}",
    )
    _check(config.optim.d_lr >= 0, f"config.optim.d_lr must be >= 0, got {config.optim.d_lr}")
    _check(
        config.model.d_norm in ("batch", "layer", "none"),
        f"config.model.d_norm={config.model.d_norm!r}; valid: batch, layer, none",
    )
    ar = config.model.ar_kernel
    _check(
        ar == 0 or (ar >= 3 and ar % 2 == 1),
        f"config.model.ar_kernel={ar}; valid: 0 (off) or an odd kernel size >= 3",
    )
    _check(config.model.ar_hidden >= 1, "config.model.ar_hidden must be >= 1")
    _check(config.model.z_dim >= 1, f"config.model.z_dim must be >= 1, got {config.model.z_dim}")
    _check(config.data.image_size >= 0, "config.data.image_size must be >= 0 (0 = native)")
    _check(bool(config.data.train), "config.data.train is empty; name a data source, e.g. mnist5k")
